"""Commercial terms in the consoles (settlement/terms.py, settlement/prepaid.py).

Operator: rate cards per partner (history and a form that appends a new card), the FX
table, and every partner's prepaid blocks and balances, where a bank transfer is marked
paid through the same `credit_paid_block` a Stripe payment uses. Partner: its own rate
card history (read-only) and its prepaid balance, blocks and a form to request one. The
partner's pages read in a tenant-scoped Tx (row-level security); its one write, a block
request, runs on the login role with the logged-in staff member's partner."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from coalition import clock
from coalition.errors import DomainError, NotFound
from coalition.uow import Database
from settlement import actions, prepaid, queries
from settlement.models import BILLING_TYPES, CYCLES
from settlement.terms import Invalid
from tenants.models import User
from web.portal.common import acting, operator, page
from web.portal.partners.console import staff


def _errors(exc: DomainError) -> dict[str, str]:
    if isinstance(exc, Invalid):
        return exc.errors
    return {exc.field or "form": exc.detail}


class OperatorTermsPages(Controller):
    path = "/operator"
    include_in_schema = False

    @get("/rate-cards")
    async def partners(self, request: Request, db: Database) -> Template:
        user = await operator(request, db)
        rows = await acting(db, user).run(queries.rate_card_partners)
        return page("settlement/operator_rate_cards.html", user=user, partners=rows)

    async def _card_page(self, db: Database, user: User, partner_id: uuid.UUID, *,
                         form: dict | None = None, errors: dict | None = None,
                         status_code: int = 200) -> Template:
        try:
            cards = await acting(db, user).run(queries.rate_cards, partner_id)
        except NotFound:
            raise NotFoundException("No such partner.") from None
        now = clock.now()
        current = next((t for t in cards.history if t.effective_from <= now), None)
        return page("settlement/operator_rate_card.html", status_code=status_code, user=user,
                    partner=cards.partner, history=cards.history, current=current, now=now,
                    billing_types=BILLING_TYPES, cycles=CYCLES, currency=cards.currency,
                    form=form or {}, errors=errors or {})

    @get("/rate-cards/{partner_id:uuid}")
    async def rate_card(self, request: Request, db: Database,
                        partner_id: FromPath[uuid.UUID]) -> Template:
        return await self._card_page(db, await operator(request, db), partner_id)

    @post("/rate-cards/{partner_id:uuid}")
    async def add_card(self, request: Request, db: Database,
                       partner_id: FromPath[uuid.UUID]) -> Response:
        user = await operator(request, db)
        form = dict(await request.form())
        try:
            await acting(db, user).run(actions.add_rate_card, partner_id, form)
        except DomainError as exc:
            return await self._card_page(db, user, partner_id, form=form,
                                         errors=_errors(exc), status_code=exc.status)
        return Redirect(f"/operator/rate-cards/{partner_id}", status_code=303)

    async def _fx_page(self, db: Database, user: User, *, form: dict | None = None,
                       errors: dict | None = None, status_code: int = 200) -> Template:
        rates, currency = await acting(db, user).run(queries.fx_table)
        return page("settlement/operator_fx.html", status_code=status_code, user=user,
                    rates=rates, currency=currency, form=form or {}, errors=errors or {})

    @get("/fx-rates")
    async def fx(self, request: Request, db: Database) -> Template:
        return await self._fx_page(db, await operator(request, db))

    @post("/fx-rates")
    async def add_fx(self, request: Request, db: Database) -> Response:
        user = await operator(request, db)
        form = dict(await request.form())
        try:
            await acting(db, user).run(actions.add_fx_rate, form)
        except DomainError as exc:
            return await self._fx_page(db, user, form=form, errors=_errors(exc),
                                       status_code=exc.status)
        return Redirect("/operator/fx-rates", status_code=303)

    async def _prepaid_page(self, db: Database, user: User, *, errors: dict | None = None,
                            status_code: int = 200, recorded: int | None = None) -> Template:
        balances, rows = await acting(db, user).run(queries.prepaid_overview)
        # The block a payment was just recorded on without crediting it (mark_paid).
        mismatch = next((b for b in rows if b["id"] == recorded
                         and b["mismatch_amount"] is not None), None)
        return page("settlement/operator_prepaid.html", status_code=status_code, user=user,
                    balances=balances, blocks=rows, errors=errors or {}, mismatch=mismatch)

    @get("/prepaid")
    async def prepaid_blocks(self, request: Request, db: Database,
                             recorded: FromQuery[int | None] = None) -> Template:
        return await self._prepaid_page(db, await operator(request, db), recorded=recorded)

    @post("/prepaid/{block_id:int}/paid")
    async def mark_paid(self, request: Request, db: Database,
                        block_id: FromPath[int]) -> Response:
        """A bank transfer arrived: the same idempotent credit a Stripe payment uses."""
        user = await operator(request, db)
        raw = str((await request.form()).get("amount_paid") or "").strip()
        if not raw.isdigit():
            return await self._prepaid_page(db, user, status_code=422, errors={
                block_id: "amount_paid: the amount received, in minor units (whole number)"})
        try:
            result = await acting(db, user).run(actions.mark_block_paid, block_id, int(raw))
        except DomainError as exc:
            return await self._prepaid_page(db, user, status_code=exc.status,
                                            errors={block_id: exc.detail})
        if result.outcome in ("mismatch", "cancelled"):
            # Not a refusal: the amount is what the bank statement shows arrived, so it is
            # kept on the block (and in the audit log) for the operator to refund it or
            # settle the difference. Refusing it (a 4xx) would drop the trace of money
            # received, or, as a 4xx that writes, break the rule that a refusal changes
            # nothing. The page it leads to says the amount did not match and that no
            # points were credited.
            return Redirect(f"/operator/prepaid?recorded={block_id}#block-{block_id}",
                            status_code=303)
        return Redirect("/operator/prepaid", status_code=303)

    @post("/prepaid/{block_id:int}/cancel")
    async def cancel(self, request: Request, db: Database, block_id: FromPath[int]
                     ) -> Response:
        user = await operator(request, db)
        try:
            await acting(db, user).run(actions.cancel_block, block_id)
        except DomainError as exc:
            return await self._prepaid_page(db, user, status_code=exc.status,
                                            errors={block_id: exc.detail})
        return Redirect("/operator/prepaid", status_code=303)


class PartnerTermsPages(Controller):
    path = "/partner"
    include_in_schema = False

    @get("/terms")
    async def terms(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "settlement.view")
        history, currency = await acting(db, user, scoped=True).run(queries.own_rate_cards)
        now = clock.now()
        return page("settlement/partner_terms.html", user=user, history=history, now=now,
                    current=next((t for t in history if t.effective_from <= now), None),
                    currency=currency)

    async def _prepaid_page(self, db: Database, user: User, *, errors: dict | None = None,
                            form: dict | None = None, status_code: int = 200) -> Template:
        balance, rows = await acting(db, user, scoped=True).run(queries.own_prepaid)
        return page("settlement/partner_prepaid.html", status_code=status_code, user=user,
                    balance=balance, blocks=rows, errors=errors or {}, form=form or {})

    @get("/prepaid")
    async def prepaid_balance(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "settlement.view")
        return await self._prepaid_page(db, user)

    @post("/prepaid")
    async def request_block(self, request: Request, db: Database, state: State) -> Response:
        user = await staff(request, db, "settlement.manage")
        form = dict(await request.form())
        try:
            block = await acting(db, user).run(actions.request_block, form.get("points"))
            await prepaid.invoice_block(state.stripe, block)
        except DomainError as exc:
            return await self._prepaid_page(db, user, errors=_errors(exc), form=form,
                                            status_code=exc.status)
        return Redirect("/partner/prepaid", status_code=303)


ROUTES = [OperatorTermsPages, PartnerTermsPages]
