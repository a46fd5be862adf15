"""Commercial terms in the consoles (settlement/terms.py, settlement/prepaid.py).

Operator: rate cards per partner (history and a form that appends a new card), the FX
table, and every partner's prepaid blocks and balances, where a bank transfer is marked
paid through the same `credit_paid_block` a Stripe payment uses. Partner: its own rate
card history (read-only) and its prepaid balance, blocks and a form to request one. The
partner's pages read in a tenant-scoped connection (row-level security); its one write,
a block request, runs on the login role with the logged-in staff member's partner."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.errors import DomainError
from settlement import prepaid
from settlement.models import BILLING_TYPES, CYCLES
from settlement.terms import Invalid, add_fx_rate, add_rate_card, fx_rates, terms_history
from tenants import accounts
from tenants.models import User
from tenants.scope import tenant_connection
from web.portal.common import operator, page
from web.portal.console import provide_console_session, staff

Session = NamedDependency[AsyncSession]


def _errors(exc: DomainError) -> dict[str, str]:
    if isinstance(exc, Invalid):
        return exc.errors
    return {exc.field or "form": exc.detail}


class OperatorTermsPages(Controller):
    path = "/operator"
    include_in_schema = False

    @get("/rate-cards")
    async def partners(self, request: Request, db_session: Session, state: State) -> Template:
        user = await operator(request, db_session)
        rows = await state.pool.fetch(
            "SELECT p.id, p.name, p.status, t.issue_price, t.reimbursement, t.fee_percent,"
            " t.billing, t.currency, t.effective_from,"
            " (SELECT count(*) FROM settlement_terms s WHERE s.partner_id = p.id) AS cards"
            " FROM partners p LEFT JOIN LATERAL (SELECT * FROM settlement_terms s"
            "  WHERE s.partner_id = p.id AND s.effective_from <= now()"
            "  ORDER BY s.effective_from DESC LIMIT 1) t ON true ORDER BY p.name")
        return page("settlement/operator_rate_cards.html", user=user, partners=rows)

    async def _card_page(self, state: State, user: User, partner_id: uuid.UUID, *,
                         form: dict | None = None, errors: dict | None = None,
                         status_code: int = 200) -> Template:
        async with state.pool.acquire() as conn:
            partner = await conn.fetchrow("SELECT id, name FROM partners WHERE id = $1",
                                          partner_id)
            if partner is None:
                raise NotFoundException("No such partner.")
            history = await terms_history(conn, partner_id)
            currency = await conn.fetchval("SELECT currency FROM coalition_settings")
        now = clock.now()
        current = next((t for t in history if t.effective_from <= now), None)
        return page("settlement/operator_rate_card.html", status_code=status_code, user=user,
                    partner=partner, history=history, current=current, now=now,
                    billing_types=BILLING_TYPES, cycles=CYCLES, currency=currency,
                    form=form or {}, errors=errors or {})

    @get("/rate-cards/{partner_id:uuid}")
    async def rate_card(self, request: Request, db_session: Session, state: State,
                        partner_id: FromPath[uuid.UUID]) -> Template:
        return await self._card_page(state, await operator(request, db_session), partner_id)

    @post("/rate-cards/{partner_id:uuid}")
    async def add_card(self, request: Request, db_session: Session, state: State,
                       partner_id: FromPath[uuid.UUID]) -> Response:
        user = await operator(request, db_session)
        form = dict(await request.form())
        try:
            async with state.pool.acquire() as conn:
                card = await add_rate_card(conn, partner_id, form, user.email)
        except DomainError as exc:
            return await self._card_page(state, user, partner_id, form=form,
                                         errors=_errors(exc), status_code=exc.status)
        await accounts.audit(db_session, user, "rate_card.add", target=str(card.id),
                             partner_id=partner_id, effective_from=card.effective_from
                             .isoformat(), issue_price=str(card.issue_price),
                             billing=card.billing)
        await db_session.commit()
        return Redirect(f"/operator/rate-cards/{partner_id}", status_code=303)

    async def _fx_page(self, state: State, user: User, *, form: dict | None = None,
                       errors: dict | None = None, status_code: int = 200) -> Template:
        async with state.pool.acquire() as conn:
            rates = await fx_rates(conn)
            currency = await conn.fetchval("SELECT currency FROM coalition_settings")
        return page("settlement/operator_fx.html", status_code=status_code, user=user,
                    rates=rates, currency=currency, form=form or {}, errors=errors or {})

    @get("/fx-rates")
    async def fx(self, request: Request, db_session: Session, state: State) -> Template:
        return await self._fx_page(state, await operator(request, db_session))

    @post("/fx-rates")
    async def add_fx(self, request: Request, db_session: Session, state: State) -> Response:
        user = await operator(request, db_session)
        form = dict(await request.form())
        form.setdefault("source", f"manual:{user.email}")
        try:
            async with state.pool.acquire() as conn:
                rate = await add_fx_rate(conn, form)
        except DomainError as exc:
            return await self._fx_page(state, user, form=form, errors=_errors(exc),
                                       status_code=exc.status)
        await accounts.audit(db_session, user, "fx_rate.add", target=f"{rate.base}/{rate.quote}",
                             effective_from=rate.effective_from.isoformat(), rate=str(rate.rate))
        await db_session.commit()
        return Redirect("/operator/fx-rates", status_code=303)

    async def _prepaid_page(self, state: State, user: User, *, errors: dict | None = None,
                            status_code: int = 200, recorded: int | None = None) -> Template:
        async with state.pool.acquire() as conn:
            balances = await conn.fetch(
                "SELECT b.*, p.name, t.credit_limit, t.low_balance_alert, t.billing"
                " FROM prepaid_balances b JOIN partners p ON p.id = b.partner_id"
                " LEFT JOIN LATERAL settlement_terms_at(b.partner_id, now()) t ON true"
                " ORDER BY p.name")
            rows = await prepaid.blocks(conn)
        # The block a payment was just recorded on without crediting it (mark_paid).
        mismatch = next((b for b in rows if b["id"] == recorded
                         and b["mismatch_amount"] is not None), None)
        return page("settlement/operator_prepaid.html", status_code=status_code, user=user,
                    balances=balances, blocks=rows, errors=errors or {}, mismatch=mismatch)

    @get("/prepaid")
    async def prepaid_blocks(self, request: Request, db_session: Session, state: State,
                             recorded: FromQuery[int | None] = None) -> Template:
        return await self._prepaid_page(state, await operator(request, db_session),
                                        recorded=recorded)

    @post("/prepaid/{block_id:int}/paid")
    async def mark_paid(self, request: Request, db_session: Session, state: State,
                        block_id: FromPath[int]) -> Response:
        """A bank transfer arrived: the same idempotent credit a Stripe payment uses."""
        user = await operator(request, db_session)
        raw = str((await request.form()).get("amount_paid") or "").strip()
        if not raw.isdigit():
            return await self._prepaid_page(state, user, status_code=422, errors={
                block_id: "amount_paid: the amount received, in minor units (whole number)"})
        try:
            async with state.pool.acquire() as conn:
                result = await prepaid.credit_paid_block(conn, block_id, int(raw),
                                                         f"manual:{user.email}")
        except DomainError as exc:
            return await self._prepaid_page(state, user, status_code=exc.status,
                                            errors={block_id: exc.detail})
        await accounts.audit(db_session, user, "prepaid_block.paid", target=str(block_id),
                             partner_id=result.block.partner_id, amount_paid=int(raw),
                             outcome=result.outcome)
        await db_session.commit()
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
    async def cancel(self, request: Request, db_session: Session, state: State,
                     block_id: FromPath[int]) -> Response:
        user = await operator(request, db_session)
        try:
            async with state.pool.acquire() as conn:
                block = await prepaid.cancel_block(conn, block_id)
        except DomainError as exc:
            return await self._prepaid_page(state, user, status_code=exc.status,
                                            errors={block_id: exc.detail})
        await accounts.audit(db_session, user, "prepaid_block.cancel", target=str(block_id),
                             partner_id=block.partner_id)
        await db_session.commit()
        return Redirect("/operator/prepaid", status_code=303)


class PartnerTermsPages(Controller):
    path = "/partner"
    include_in_schema = False
    dependencies = {"db_session": Provide(provide_console_session)}

    @get("/terms")
    async def terms(self, request: Request, db_session: Session, state: State) -> Template:
        user = await staff(request, db_session, "settlement.view")
        async with tenant_connection(state.pool, user.partner_id) as conn:
            history = await terms_history(conn, user.partner_id)
            currency = await conn.fetchval("SELECT currency FROM coalition_settings")
        now = clock.now()
        return page("settlement/partner_terms.html", user=user, history=history, now=now,
                    current=next((t for t in history if t.effective_from <= now), None),
                    currency=currency)

    async def _prepaid_page(self, state: State, user: User, *, errors: dict | None = None,
                            form: dict | None = None, status_code: int = 200) -> Template:
        async with tenant_connection(state.pool, user.partner_id) as conn:
            balance = await prepaid.balance(conn, user.partner_id)
            rows = await conn.fetch("SELECT * FROM prepaid_blocks WHERE partner_id = $1"
                                    " ORDER BY id DESC", user.partner_id)
        return page("settlement/partner_prepaid.html", status_code=status_code, user=user,
                    balance=balance, blocks=rows, errors=errors or {}, form=form or {})

    @get("/prepaid")
    async def prepaid_balance(self, request: Request, db_session: Session,
                              state: State) -> Template:
        user = await staff(request, db_session, "settlement.view")
        return await self._prepaid_page(state, user)

    @post("/prepaid")
    async def request_block(self, request: Request, db_session: Session,
                            state: State) -> Response:
        user = await staff(request, db_session, "settlement.manage")
        form = dict(await request.form())
        try:
            async with state.pool.acquire() as conn:
                block = await prepaid.request_block(conn, user.partner_id, form.get("points"),
                                                    user.email)
            await prepaid.invoice_block(state.stripe, block)
        except DomainError as exc:
            return await self._prepaid_page(state, user, errors=_errors(exc), form=form,
                                            status_code=exc.status)
        await accounts.audit(db_session, user, "prepaid_block.request", target=str(block.id),
                             partner_id=user.partner_id, points=block.points,
                             price=block.price, currency=block.currency)
        await db_session.commit()
        return Redirect("/partner/prepaid", status_code=303)
