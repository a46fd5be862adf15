"""The partner's own commercial terms over the API: its rate cards (the one in force and
the history) and, when it is billed prepaid, its prepaid points balance and blocks, and
requesting a block. Reads go through a tenant-scoped connection: row-level security
shows the partner its own rows only.

A requested block is priced and stored in the Idempotency-Key's transaction; its Stripe
invoice (when Stripe is configured) is sent after that commits, keyed by the block, so a
retry with the same key replays the block and sends the invoice if the first attempt
could not."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from msgspec import Struct

from coalition.errors import NotFound
from settlement import prepaid
from settlement.terms import Terms, terms_at, terms_history
from tenants.auth import PartnerPrincipal
from tenants.scope import tenant_connection
from web.api.schemas import IdempotencyHeader, RowId, strict_body
from web.idempotency import request_hash, run_idempotent_on
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


class BlockRequest(Struct, forbid_unknown_fields=True):
    points: int                 # whole points, 1 to 10^12


class RequestedBlockOut(BlockOut, kw_only=True):
    payment: str                # stripe_invoice (sent by Stripe) | bank_transfer


class BlockList(Struct):
    balance: PrepaidOut | None  # None: not billed prepaid (blocks listed all the same)
    items: list[BlockOut]       # newest first


def _block_out(b) -> BlockOut:
    return BlockOut(b["id"], b["points"], b["price"], b["currency"], b["issue_price"],
                    b["fx_rate"], b["fx_date"], b["status"], b["created_at"], b["paid_at"],
                    b["amount_paid"])


def _prepaid_out(balance: prepaid.Balance, blocks: list) -> PrepaidOut:
    return PrepaidOut(balance.available, balance.credit_limit, balance.can_issue,
                      balance.paid, balance.drawn, balance.credited,
                      balance.low_since is not None, balance.low_balance_alert,
                      [_block_out(b) for b in blocks])


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
            prepaid=_prepaid_out(balance, blocks) if balance else None)

    @get("/prepaid-blocks", opt={"scopes": ["settlement:read"]},
         summary="Your prepaid point blocks and balance",
         description="Every block your brand requested, newest first, and, if you are "
         "billed prepaid, the balance (points left of paid blocks, credit limit, what you "
         "may still issue). Prices are integers in minor units of the block's currency.")
    async def blocks(self, request: Request, state: State) -> BlockList:
        partner_id = request.user.partner_id
        async with tenant_connection(state.pool, partner_id) as conn:
            balance = await prepaid.balance(conn, partner_id)
            rows = await conn.fetch("SELECT * FROM prepaid_blocks WHERE partner_id = $1"
                                    " ORDER BY id DESC", partner_id)
        return BlockList(balance=_prepaid_out(balance, []) if balance else None,
                         items=[_block_out(b) for b in rows])

    @get("/prepaid-blocks/{block_id:int}", opt={"scopes": ["settlement:read"]},
         summary="One of your prepaid point blocks")
    async def block(self, request: Request, state: State, block_id: RowId) -> BlockOut:
        partner_id = request.user.partner_id
        async with tenant_connection(state.pool, partner_id) as conn:
            row = await conn.fetchrow("SELECT * FROM prepaid_blocks WHERE id = $1"
                                      " AND partner_id = $2", block_id, partner_id)
        if row is None:
            raise NotFound("block-not-found", "No such block", f"No prepaid block {block_id}.")
        return _block_out(row)

    @post("/prepaid-blocks", opt={"scopes": ["settlement:write"]}, status_code=201,
          responses={201: ResponseSpec(data_container=RequestedBlockOut,
                                       description="Requested, awaiting payment")},
          summary="Request a prepaid point block",
          description="A block of `points` priced at the issue price of your rate card in "
          "force now (converted at today's FX rate if you settle in another currency, "
          "rounded once to the minor unit). With Stripe configured its invoice is emailed "
          "(`payment: stripe_invoice`) and the block is credited when the invoice is paid; "
          "otherwise the operator records your bank transfer (`payment: bank_transfer`). "
          "Refusals: 422 validation-error (points), 422 not-prepaid.")
    async def request_block(self, request: Request, state: State,
                            data: JSONBody[BlockRequest], idempotency_key: IdempotencyHeader
                            ) -> Response:
        principal: PartnerPrincipal = request.user
        data = await strict_body(request, BlockRequest)
        payment = "stripe_invoice" if state.stripe.configured else "bank_transfer"
        async with state.pool.acquire() as conn:
            async def action() -> tuple[int, object]:
                block = await prepaid.request_block(conn, principal.partner_id, data.points,
                                                    principal.actor)
                return 201, msgspec.to_builtins(RequestedBlockOut(
                    block.id, block.points, block.price, block.currency, block.issue_price,
                    block.fx_rate, block.fx_date, block.status, block.created_at,
                    block.paid_at, block.amount_paid, payment=payment))
            response = await run_idempotent_on(conn, principal, idempotency_key,
                                               request_hash(request, data), action)
            if response.status_code != 201:
                return response
            block = await prepaid.get_block(conn, msgspec.json.decode(response.content)["id"],
                                            principal.partner_id)
        if block is not None and block.status == "awaiting_payment":
            await prepaid.invoice_block(state.stripe, block)
        return response
