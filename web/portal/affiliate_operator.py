"""The operator's affiliate payouts (/operator/affiliate-payouts): every payout with its
payment, the SEPA file of ready affiliate credits, and marking exported credits paid or
failed from the bank statement (which moves the payout and its commissions through the
affiliate_payout payment hook)."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.affiliates.payouts import REFERENCE
from coalition.errors import DomainError
from settlement import sepa
from tenants.models import User
from web.portal.common import operator, page, row_id
from web.portal.payments import money, sepa_download

Session = NamedDependency[AsyncSession]


class OperatorAffiliatePayoutPages(Controller):
    path = "/operator/affiliate-payouts"
    include_in_schema = False

    async def _page(self, state: State, user: User, status_code: int = 200, **extra
                    ) -> Template:
        rows = await state.pool.fetch(
            "SELECT o.*, a.name AS affiliate, p.name AS program, pa.name AS partner,"
            " s.status AS payment_status, s.sepa_message_id FROM affiliate_payouts o"
            " JOIN affiliates a ON a.id = o.affiliate_id"
            " JOIN affiliate_programs p ON p.id = o.program_id"
            " JOIN partners pa ON pa.id = o.partner_id"
            " LEFT JOIN settlement_payments s ON s.id = o.payment_id"
            " ORDER BY o.id DESC LIMIT 300")
        ready = await state.pool.fetch(
            "SELECT currency, count(*) AS n FROM settlement_payments WHERE kind = 'sepa_credit'"
            " AND status = 'ready' AND reference_type = $1 GROUP BY currency ORDER BY 1",
            REFERENCE)
        return page("operator_affiliate_payouts.html", status_code=status_code, user=user,
                    rows=rows, ready=ready, money=money, **extra)

    @get("/")
    async def show(self, request: Request, db_session: Session, state: State) -> Template:
        return await self._page(state, await operator(request, db_session))

    @post("/sepa")
    async def export_sepa(self, request: Request, db_session: Session, state: State
                          ) -> Response:
        """The ready affiliate SEPA credits of one currency in a pain.001 file."""
        user = await operator(request, db_session)
        currency = str((await request.form()).get("currency", ""))
        try:
            batch = await sepa.export_ready(state.pool, state.settings, currency, user.email,
                                            reference_type=REFERENCE)
        except DomainError as exc:
            return await self._page(state, user, status_code=min(exc.status, 499),
                                    error=f"{exc.field}: {exc.detail}")
        return sepa_download(batch)

    @post("/mark")
    async def mark(self, request: Request, db_session: Session, state: State) -> Response:
        """The bank statement shows an exported affiliate SEPA credit paid or bounced."""
        user = await operator(request, db_session)
        form = await request.form()
        key, status = row_id(form.get("payout_id")), str(form.get("status", ""))
        reason = str(form.get("reason", "")).strip() or None
        payment = await state.pool.fetchval(
            "SELECT payment_id FROM affiliate_payouts WHERE id = $1 AND method = 'sepa'",
            key) if key is not None else None
        if payment is None:
            return await self._page(state, user, status_code=400,
                                    error="payout_id: choose a SEPA payout.")
        try:
            await sepa.mark(state.pool, payment, status, reason)
        except DomainError as exc:
            return await self._page(state, user, status_code=min(exc.status, 499),
                                    error=f"{exc.field}: {exc.detail}")
        return Redirect("/operator/affiliate-payouts")
