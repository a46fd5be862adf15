"""Payment pages. Partner console: payout and billing details (bank account or Stripe
connected account), validated field by field, and the partner's own payments. Operator
console: every payment, the failed-payment notifications to acknowledge, the SEPA
export of ready bank payouts, and marking an exported payout paid or failed once the
bank statement shows it (a confirmation page first: the mark moves the partner's
statement and cannot be taken back)."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.response import Redirect, Template

from coalition.errors import DomainError
from coalition.uow import Database
from settlement import actions, payout_details, queries, sepa
from tenants.models import User
from web.portal.common import acting, operator, page, row_id
from web.portal.partners.console import staff

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

    async def _page(self, db: Database, user: User, status_code: int = 200,
                    **extra) -> Template:
        found = await acting(db, user, scoped=True).run(queries.own_payouts)
        return page("settlement/payouts.html", status_code=status_code, user=user,
                    partner=found.partner, details=found.details, payments=found.payments,
                    methods=METHODS, money=money, **extra)

    @get("/")
    async def show(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "payouts.manage")
        return await self._page(db, user)

    @post("/")
    async def save(self, request: Request, db: Database) -> Response:
        user = await staff(request, db, "payouts.manage")
        form = dict(await request.form())
        values, errors = payout_details.validate(form)
        if errors:   # nothing is written
            return await self._page(db, user, status_code=400, errors=errors, form=form)
        await acting(db, user, scoped=True).run(actions.save_payout_details, values)
        return Redirect("/partner/payouts")


MARKS = {"paid": "paid (the bank statement shows the credit)",
         "failed": "failed (the credit bounced or was rejected)"}


class OperatorPaymentPages(Controller):
    path = "/operator/payments"
    include_in_schema = False

    async def _page(self, db: Database, state: State, user: User, status_code: int = 200,
                    **extra) -> Template:
        found = await acting(db, user).run(queries.operator_payments)
        return page("settlement/operator_payments.html", status_code=status_code, user=user,
                    payments=found.payments, notifications=found.notifications,
                    ready=found.ready, money=money, stripe_ready=state.stripe.configured,
                    **extra)

    @get("/")
    async def show(self, request: Request, db: Database, state: State) -> Template:
        return await self._page(db, state, await operator(request, db))

    @post("/acknowledge")
    async def acknowledge(self, request: Request, db: Database, state: State) -> Response:
        user = await operator(request, db)
        key = row_id((await request.form()).get("id"))
        if key is None:
            return await self._page(db, state, user, status_code=400,
                                    error="Choose a notification to acknowledge.")
        await acting(db, user).run(actions.acknowledge_notification, key)
        return Redirect("/operator/payments")

    @post("/sepa")
    async def export_sepa(self, request: Request, db: Database, state: State) -> Response:
        """Every ready SEPA payout of one currency in a pain.001 file, downloaded."""
        user = await operator(request, db)
        currency = str((await request.form()).get("currency", ""))
        try:
            batch = await acting(db, user).run(actions.export_sepa, state.settings, currency)
        except DomainError as exc:
            return await self._page(db, state, user, status_code=exc.status
                                    if exc.status < 500 else 400,
                                    error=f"{exc.field}: {exc.detail}")
        return sepa_download(batch)

    @get("/{payment_id:int}/mark")
    async def confirm_mark(self, request: Request, db: Database, payment_id: int,
                           status: str = "") -> Template:
        """The confirmation page for marking an exported SEPA payout."""
        user = await operator(request, db)
        payment = await acting(db, user).run(queries.sepa_payout, payment_id)
        error = None
        if status not in MARKS:
            error = "Choose paid or failed."
        elif payment is None or payment["status"] != "exported":
            error = "Only an exported SEPA payout can be marked."
        return page("settlement/operator_payment_mark.html",
                    status_code=409 if error else 200, user=user, payment=payment,
                    status=status, marks=MARKS, money=money, error=error)

    @post("/{payment_id:int}/mark")
    async def mark(self, request: Request, db: Database, state: State,
                   payment_id: int) -> Response:
        user = await operator(request, db)
        form = await request.form()
        status, reason = str(form.get("status", "")), str(form.get("reason", "")).strip()
        if form.get("confirm") != "yes":
            return Redirect(f"/operator/payments/{payment_id}/mark?status={status}")
        try:
            await acting(db, user).run(actions.mark_payout, payment_id, status,
                                       reason[:500] or None, state.mailer)
        except DomainError as exc:
            return await self._page(db, state, user, status_code=exc.status,
                                    error=f"Payout {payment_id}: {exc.detail}")
        return Redirect("/operator/payments", status_code=303)


ROUTES = [OperatorPaymentPages, PartnerPayoutPages]
