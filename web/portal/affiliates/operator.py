"""The operator's affiliate pages: every partner's commissions under review
(/operator/affiliates/commissions), and the payouts (/operator/affiliate-payouts):
every payout with its payment, the SEPA file of ready affiliate credits, and marking
exported credits paid or failed from the bank statement (which moves the payout and
its commissions through the affiliate_payout payment hook,
settlement/affiliate_payouts.py)."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from coalition.affiliates import queries
from coalition.errors import DomainError
from coalition.uow import Database
from settlement import affiliate_payouts
from tenants.models import User
from web.portal.affiliates.review import decide, listing, parse_uuid
from web.portal.common import acting, operator, page, row_id
from web.portal.settlement.payments import money, sepa_download


class OperatorCommissionPages(Controller):
    path = "/operator/affiliates/commissions"
    include_in_schema = False

    @get("/")
    async def list_commissions(self, request: Request, db: Database,
                               status: FromQuery[str | None] = None,
                               affiliate: FromQuery[str | None] = None,
                               partner: FromQuery[str | None] = None) -> Template:
        user = await operator(request, db)
        runner = acting(db, user)
        partners = await runner.run(queries.partner_names)
        return await listing(runner, user, self.path, parse_uuid(partner), status,
                             affiliate, partners)

    @post("/{commission_id:int}/release")
    async def release(self, request: Request, db: Database,
                      commission_id: FromPath[int]) -> Response:
        await decide(acting(db, await operator(request, db)), commission_id, True, None)
        return Redirect(f"{self.path}?status=hold", status_code=303)

    @post("/{commission_id:int}/reject")
    async def reject(self, request: Request, db: Database,
                     commission_id: FromPath[int]) -> Response:
        await decide(acting(db, await operator(request, db)), commission_id, False, None)
        return Redirect(f"{self.path}?status=hold", status_code=303)


class OperatorAffiliatePayoutPages(Controller):
    path = "/operator/affiliate-payouts"
    include_in_schema = False

    async def _page(self, db: Database, user: User, status_code: int = 200, **extra
                    ) -> Template:
        rows, ready = await acting(db, user).run(affiliate_payouts.payouts_overview)
        return page("affiliates/operator_payouts.html", status_code=status_code, user=user,
                    rows=rows, ready=ready, money=money, **extra)

    @get("/")
    async def show(self, request: Request, db: Database) -> Template:
        return await self._page(db, await operator(request, db))

    @post("/sepa")
    async def export_sepa(self, request: Request, db: Database, state: State) -> Response:
        """The ready affiliate SEPA credits of one currency in a pain.001 file."""
        user = await operator(request, db)
        currency = str((await request.form()).get("currency", ""))
        try:
            batch = await acting(db, user).run(affiliate_payouts.export_sepa, state.settings,
                                               currency)
        except DomainError as exc:
            return await self._page(db, user, status_code=min(exc.status, 499),
                                    error=f"{exc.field}: {exc.detail}")
        return sepa_download(batch)

    @post("/mark")
    async def mark(self, request: Request, db: Database) -> Response:
        """The bank statement shows an exported affiliate SEPA credit paid or bounced."""
        user = await operator(request, db)
        form = await request.form()
        reason = str(form.get("reason", "")).strip() or None
        try:
            await acting(db, user).run(affiliate_payouts.mark_sepa_payout,
                                       row_id(form.get("payout_id")),
                                       str(form.get("status", "")), reason)
        except DomainError as exc:
            return await self._page(db, user, status_code=min(exc.status, 499),
                                    error=f"{exc.field}: {exc.detail}")
        return Redirect("/operator/affiliate-payouts")
