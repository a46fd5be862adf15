"""The partner's own commercial terms over the API: its rate cards (the one in force and
the history) and, when it is billed prepaid, its prepaid points balance and blocks. Read
in a tenant-scoped connection: row-level security shows the partner its own rows only."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from litestar import Controller, Request, get
from litestar.datastructures import State
from msgspec import Struct

from settlement import prepaid
from settlement.terms import Terms, terms_at, terms_history
from tenants.auth import PartnerPrincipal
from tenants.scope import tenant_connection
from web.security import requires_scope


class RateCardOut(Struct):
    id: int
    effective_from: datetime
    issue_price: Decimal        # minor units of the coalition currency per point, exact
    reimbursement: Decimal      # the same unit
    fee_percent: Decimal        # of the issuance value
    fee_fixed: int              # minor units of `currency` per cycle
    billing: str                # postpaid | prepaid
    cycle: str                  # monthly | weekly
    currency: str               # settlement currency
    credit_limit: int           # points (prepaid)
    low_balance_alert: int | None
    created_at: datetime


class BlockOut(Struct):
    id: int
    points: int
    price: int                  # minor units of `currency`
    currency: str
    issue_price: Decimal
    fx_rate: Decimal | None
    fx_date: date | None
    status: str                 # awaiting_payment | paid | cancelled
    created_at: datetime
    paid_at: datetime | None
    amount_paid: int | None


class PrepaidOut(Struct):
    available: int              # points left of paid blocks (negative: using credit)
    credit_limit: int
    can_issue: int              # available + credit_limit
    paid: int
    drawn: int
    credited: int
    low_balance: bool
    low_balance_alert: int | None
    blocks: list[BlockOut]


class TermsOut(Struct):
    partner_id: uuid.UUID
    current: RateCardOut | None
    history: list[RateCardOut]  # every rate card, latest effective_from first
    prepaid: PrepaidOut | None


def _card(terms: Terms) -> RateCardOut:
    return RateCardOut(terms.id, terms.effective_from, terms.issue_price, terms.reimbursement,
                       terms.fee_percent, terms.fee_fixed, terms.billing, terms.cycle,
                       terms.currency, terms.credit_limit, terms.low_balance_alert,
                       terms.created_at)


class SettlementController(Controller):
    path = "/settlement"
    tags = ["Settlement"]
    guards = [requires_scope]

    @get("/terms", opt={"scopes": ["settlement:read"]},
         summary="Your rate cards and prepaid points balance",
         description="The rate card in force now and every rate card (future ones "
         "included), latest first. Prices are exact decimals (strings) in minor units of "
         "the coalition currency per point. For a prepaid brand, the balance of paid point "
         "blocks, what it may still issue (balance plus credit limit) and its blocks.")
    async def terms(self, request: Request, state: State) -> TermsOut:
        principal: PartnerPrincipal = request.user
        partner_id = principal.partner_id
        async with tenant_connection(state.pool, partner_id) as conn:
            current = await terms_at(conn, partner_id)
            history = await terms_history(conn, partner_id)
            balance = await prepaid.balance(conn, partner_id)
            blocks = await conn.fetch("SELECT * FROM prepaid_blocks WHERE partner_id = $1"
                                      " ORDER BY id DESC", partner_id) if balance else []
        return TermsOut(
            partner_id=partner_id, current=_card(current) if current else None,
            history=[_card(t) for t in history],
            prepaid=PrepaidOut(
                balance.available, balance.credit_limit, balance.can_issue, balance.paid,
                balance.drawn, balance.credited, balance.low_since is not None,
                balance.low_balance_alert,
                [BlockOut(b["id"], b["points"], b["price"], b["currency"], b["issue_price"],
                          b["fx_rate"], b["fx_date"], b["status"], b["created_at"],
                          b["paid_at"], b["amount_paid"]) for b in blocks])
            if balance else None)
