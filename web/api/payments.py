"""The partner's own payments: invoices it pays, transfers and SEPA credits it receives,
prepaid blocks it buys. Read under row-level security (a Tx scoped to the
token's partner), and filtered by partner as the first wall."""

from __future__ import annotations

from datetime import datetime

from litestar import Controller, Request, get
from msgspec import Struct

from coalition.uow import Database
from settlement import queries
from web.security import as_client, requires_scope


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
    async def payments(self, request: Request, db: Database) -> PaymentList:
        rows = await as_client(db, request.user, scoped=True).run(queries.own_payments)
        return PaymentList([PaymentOut(**row) for row in rows])
