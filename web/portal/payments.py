"""Payment pages. Partner console: payout and billing details (bank account or Stripe
connected account), validated field by field, and the partner's own payments. Operator
console: every payment, the failed-payment notifications to acknowledge, the SEPA
export of ready bank payouts, and marking an exported payout paid or failed once the
bank statement shows it (a confirmation page first: the mark moves the partner's
statement and cannot be taken back)."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.response import Redirect, Template
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.errors import DomainError
from settlement import payout_details, sepa
from settlement.payment_state import email_operators
from tenants import accounts
from tenants.models import Partner, User
from web.portal.common import operator, page, row_id
from web.portal.console import provide_console_session, staff

Session = NamedDependency[AsyncSession]
METHODS = {"sepa": "Bank transfer (SEPA credit transfer to your IBAN)",
           "stripe_connect": "Stripe Connect (transfer to your connected account)"}


def sepa_download(batch: sepa.Batch) -> Response:
    """A pain.001 file as a download named by its message id."""
    return Response(batch.xml, media_type="application/xml", headers={
        "Content-Disposition": f'attachment; filename="{batch.message_id}.xml"'})


def money(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100}.{abs(minor) % 100:02d}"


class PartnerPayoutPages(Controller):
    path = "/partner/payouts"
    include_in_schema = False
    dependencies = {"db_session": Provide(provide_console_session)}

    async def _page(self, db_session: AsyncSession, user: User, status_code: int = 200,
                    **extra) -> Template:
        partner = await db_session.get_one(Partner, user.partner_id)
        details = await payout_details.load(db_session, user.partner_id)
        payments = (await db_session.execute(text(
            "SELECT * FROM settlement_payments WHERE partner_id = :p ORDER BY id DESC"
            " LIMIT 100"), {"p": user.partner_id})).mappings().all()
        return page("payouts.html", status_code=status_code, user=user, partner=partner,
                    details=details, payments=payments, methods=METHODS, money=money,
                    **extra)

    @get("/")
    async def show(self, request: Request, db_session: Session) -> Template:
        user = await staff(request, db_session, "payouts.manage")
        return await self._page(db_session, user)

    @post("/")
    async def save(self, request: Request, db_session: Session) -> Response:
        user = await staff(request, db_session, "payouts.manage")
        form = dict(await request.form())
        values, errors = payout_details.validate(form)
        if errors:   # nothing is written
            return await self._page(db_session, user, status_code=400, errors=errors,
                                    form=form)
        await payout_details.save(db_session, user.partner_id, values, user.email)
        await accounts.audit(db_session, user, "payouts.details", partner_id=user.partner_id,
                             method=values["method"])
        await db_session.commit()
        return Redirect("/partner/payouts")


MARKS = {"paid": "paid (the bank statement shows the credit)",
         "failed": "failed (the credit bounced or was rejected)"}


class OperatorPaymentPages(Controller):
    path = "/operator/payments"
    include_in_schema = False

    async def _page(self, state: State, user: User, status_code: int = 200, **extra
                    ) -> Template:
        async with state.pool.acquire() as conn:
            payments = await conn.fetch(
                "SELECT p.*, pr.name AS partner_name FROM settlement_payments p"
                " JOIN partners pr ON pr.id = p.partner_id ORDER BY p.id DESC LIMIT 200")
            notes = await conn.fetch(
                "SELECT n.*, pr.name AS partner_name FROM operator_notifications n"
                " LEFT JOIN partners pr ON pr.id = n.partner_id WHERE acknowledged_at IS NULL"
                " ORDER BY n.id DESC")
            ready = await conn.fetchval("SELECT count(*) FROM settlement_payments"
                                        " WHERE kind = 'sepa_credit' AND status = 'ready'")
        return page("operator_payments.html", status_code=status_code, user=user,
                    payments=payments, notifications=notes, ready=ready, money=money,
                    stripe_ready=state.stripe.configured, **extra)

    @get("/")
    async def show(self, request: Request, db_session: Session, state: State) -> Template:
        return await self._page(state, await operator(request, db_session))

    @post("/acknowledge")
    async def acknowledge(self, request: Request, db_session: Session, state: State
                          ) -> Response:
        user = await operator(request, db_session)
        key = row_id((await request.form()).get("id"))
        if key is None:
            return await self._page(state, user, status_code=400,
                                    error="Choose a notification to acknowledge.")
        await state.pool.execute(
            "UPDATE operator_notifications SET acknowledged_at = now(), acknowledged_by = $2"
            " WHERE id = $1 AND acknowledged_at IS NULL", key, user.email)
        return Redirect("/operator/payments")

    @post("/sepa")
    async def export_sepa(self, request: Request, db_session: Session, state: State
                          ) -> Response:
        """Every ready SEPA payout of one currency in a pain.001 file, downloaded."""
        user = await operator(request, db_session)
        currency = str((await request.form()).get("currency", ""))
        try:
            batch = await sepa.export_ready(state.pool, state.settings, currency, user.email)
        except DomainError as exc:
            return await self._page(state, user, status_code=exc.status if exc.status < 500
                                    else 400, error=f"{exc.field}: {exc.detail}")
        return sepa_download(batch)

    @get("/{payment_id:int}/mark")
    async def confirm_mark(self, request: Request, db_session: Session, state: State,
                           payment_id: int, status: str = "") -> Template:
        """The confirmation page for marking an exported SEPA payout."""
        user = await operator(request, db_session)
        payment = await state.pool.fetchrow(
            "SELECT p.*, pr.name AS partner_name FROM settlement_payments p"
            " JOIN partners pr ON pr.id = p.partner_id WHERE p.id = $1"
            " AND p.kind = 'sepa_credit'", payment_id)
        error = None
        if status not in MARKS:
            error = "Choose paid or failed."
        elif payment is None or payment["status"] != "exported":
            error = "Only an exported SEPA payout can be marked."
        return page("operator_payment_mark.html", status_code=409 if error else 200,
                    user=user, payment=payment, status=status, marks=MARKS, money=money,
                    error=error)

    @post("/{payment_id:int}/mark")
    async def mark(self, request: Request, db_session: Session, state: State,
                   payment_id: int) -> Response:
        user = await operator(request, db_session)
        form = await request.form()
        status, reason = str(form.get("status", "")), str(form.get("reason", "")).strip()
        if form.get("confirm") != "yes":
            return Redirect(f"/operator/payments/{payment_id}/mark?status={status}")
        try:
            outcome, notification = await sepa.mark(state.pool, payment_id, status,
                                                    reason[:500] or None)
        except DomainError as exc:
            return await self._page(state, user, status_code=exc.status,
                                    error=f"Payout {payment_id}: {exc.detail}")
        await accounts.audit(db_session, user, f"sepa_payout.{status}",
                             target=str(payment_id), outcome=outcome, reason=reason or None)
        await db_session.commit()
        await email_operators(state.pool, state.mailer,
                              [notification] if notification else [])
        return Redirect("/operator/payments", status_code=303)
