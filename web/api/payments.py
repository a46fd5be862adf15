"""The partner's own payments: invoices it pays, transfers and SEPA credits it receives,
prepaid blocks it buys. Read under row-level security (the API session is scoped to the
token's partner), and filtered by partner as the first wall."""

from __future__ import annotations

from datetime import datetime

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from msgspec import Struct
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from web.security import requires_scope

Session = NamedDependency[AsyncSession]


class PaymentOut(Struct):
    id: int
    kind: str                 # invoice | transfer | sepa_credit | prepaid_block
    reference_type: str       # statement, prepaid_block, …
    reference_id: str
    amount: int               # minor units of currency
    currency: str
    status: str
    amount_paid: int
    stripe_object_id: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


class PaymentList(Struct):
    items: list[PaymentOut]


class PaymentController(Controller):
    path = "/settlement/payments"
    tags = ["Settlement"]
    guards = [requires_scope]

    @get("/", summary="Your payments",
         description="Invoices your brand pays, Stripe transfers and SEPA credits it "
         "receives and prepaid point blocks it buys, newest first (at most 500), with their "
         "state as Stripe reported it. Amounts are integers in minor units of `currency`.")
    async def payments(self, request: Request, db_session: Session) -> PaymentList:
        rows = (await db_session.execute(text(
            "SELECT id, kind, reference_type, reference_id, amount, currency, status,"
            " amount_paid, stripe_object_id, failure_reason, created_at, updated_at"
            " FROM settlement_payments WHERE partner_id = :p ORDER BY id DESC LIMIT 500"),
            {"p": request.user.partner_id})).mappings().all()
        return PaymentList([PaymentOut(**row) for row in rows])
