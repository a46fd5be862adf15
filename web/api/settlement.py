"""The partner's own commercial terms over the API: its rate cards (the one in force and
the history) and, when it is billed prepaid, its prepaid points balance and blocks, and
requesting a block. Reads run in a tenant-scoped Tx: row-level security shows the
partner its own rows only.

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
from coalition.idempotency import Once, idempotent
from coalition.uow import Database
from settlement import actions, prepaid, queries
from settlement.terms import Terms
from tenants.auth import PartnerPrincipal
from web.api.schemas import IdempotencyHeader, RowId, strict_body
from web.idempotency import request_hash, stored_response
from web.security import as_client, requires_scope


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
    async def terms(self, request: Request, db: Database) -> TermsOut:
        principal: PartnerPrincipal = request.user
        found = await as_client(db, principal, scoped=True).run(queries.own_terms)
        return TermsOut(
            partner_id=principal.partner_id,
            current=_card(found.current) if found.current else None,
            history=[_card(t) for t in found.history],
            prepaid=_prepaid_out(found.balance, found.blocks) if found.balance else None)

    @get("/prepaid-blocks", opt={"scopes": ["settlement:read"]},
         summary="Your prepaid point blocks and balance",
         description="Every block your brand requested, newest first, and, if you are "
         "billed prepaid, the balance (points left of paid blocks, credit limit, what you "
         "may still issue). Prices are integers in minor units of the block's currency.")
    async def blocks(self, request: Request, db: Database) -> BlockList:
        balance, rows = await as_client(db, request.user, scoped=True).run(
            queries.own_prepaid)
        return BlockList(balance=_prepaid_out(balance, []) if balance else None,
                         items=[_block_out(b) for b in rows])

    @get("/prepaid-blocks/{block_id:int}", opt={"scopes": ["settlement:read"]},
         summary="One of your prepaid point blocks")
    async def block(self, request: Request, db: Database, block_id: RowId) -> BlockOut:
        row = await as_client(db, request.user, scoped=True).run(queries.own_block, block_id)
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
    async def request_block(self, request: Request, state: State, db: Database,
                            data: JSONBody[BlockRequest], idempotency_key: IdempotencyHeader
                            ) -> Response:
        principal: PartnerPrincipal = request.user
        data = await strict_body(request, BlockRequest)
        payment = "stripe_invoice" if state.stripe.configured else "bank_transfer"

        def present(block: prepaid.Block) -> tuple[int, object]:
            return 201, msgspec.to_builtins(RequestedBlockOut(
                block.id, block.points, block.price, block.currency, block.issue_price,
                block.fx_rate, block.fx_date, block.status, block.created_at,
                block.paid_at, block.amount_paid, payment=payment))

        client = as_client(db, principal)
        result = await client.run(idempotent, Once(idempotency_key, request_hash(request, data)),
                                  actions.request_block, data.points, present=present)
        if result.status != 201:
            return stored_response(result.status, result.body)
        block = await client.run(queries.block_to_invoice,
                                 msgspec.json.decode(result.body)["id"])
        if block is not None and block.status == "awaiting_payment":
            await prepaid.invoice_block(state.stripe, block)
        return stored_response(result.status, result.body)
