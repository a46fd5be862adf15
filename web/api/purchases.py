"""Purchases, returns and non-purchase events: the partner reports what happened, the
rules decide the points (coalition/rules), the ledger posts them (coalition/purchases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.affiliates import commissions
from coalition.affiliates.attribution import Touch
from coalition.errors import DomainError, NotFound
from coalition.ledger import Ledger
from coalition.purchases import MemberRef, Order
from tenants.auth import PartnerPrincipal
from web import earning
from web.api.schemas import (
    IdempotencyHeader,
    MemberReference,
    OptionalBodyOperation,
    OrderPath,
    PostEvent,
    PostPurchase,
    PostReturn,
    SimulatePurchase,
    strict_body,
)
from web.conversions import click_flush
from web.idempotency import request_hash, stored_response
from web.security import requires_scope

LedgerDep = NamedDependency[Ledger]
SessionDep = AsyncSession

_PURCHASE = """
SELECT jsonb_build_object(
    'id', p.id, 'order_id', p.order_id, 'member_id', p.member_id,
    'occurred_at', p.occurred_at, 'total', p.total, 'currency', p.currency,
    'channel', p.channel, 'store_id', p.store_id, 'lines', p.lines, 'points', p.points,
    'entry_id', p.entry_id, 'rules', p.breakdown, 'referral_bonus', p.referral,
    'returned_total', p.returned_total,
    'returned_points', p.returned_points,
    'returns', coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'id', r.id, 'amount', r.amount, 'lines', r.lines, 'points', r.points,
                    'shortfall', r.shortfall, 'negative_balance', r.debt, 'policy', r.policy,
                    'created_at', r.created_at) ORDER BY r.id)
                  FROM purchase_returns r WHERE r.purchase_id = p.id), '[]'),
    'created_at', p.created_at)::text
  FROM purchases p WHERE p.order_id = :order_id
"""


# A purchase may be reported a little ahead of our clock, never from the future.
CLOCK_SKEW = timedelta(minutes=5)
# Nor from before the Unix epoch: no loyalty activity predates it, and every later moment
# has a day, month and year start in any time zone (year 1 has none before it).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def _member(reference: MemberReference, field: str = "member") -> MemberRef:
    given = [v for v in (reference.id, reference.card_number, reference.customer_id)
             if v is not None]
    if len(given) != 1:
        raise DomainError("validation-error", "Invalid request",
                          "Name the member by exactly one of id, card_number, customer_id.",
                          status=400, field=field)
    return MemberRef(reference.id, reference.card_number, reference.customer_id)


def _moment(value: datetime, field: str) -> datetime:
    if value.tzinfo is None:
        raise DomainError("validation-error", "Invalid request",
                          f"{field} needs a time zone offset (e.g. 2026-11-26T10:00:00+01:00).",
                          status=400, field=field)
    if value > clock.now() + CLOCK_SKEW:
        raise DomainError("validation-error", "Invalid request", f"{field} is in the future.",
                          status=422, field=field)
    if value < EARLIEST:
        raise DomainError("validation-error", "Invalid request",
                          f"{field} is before {EARLIEST.date().isoformat()}.", status=422,
                          field=field)
    return value


async def _order(data: PostPurchase | SimulatePurchase, conn: asyncpg.Connection) -> Order:
    settings = await earning.program(conn)
    if data.currency != settings.currency:
        raise DomainError("currency-not-supported", "Currency not supported",
                          f"Purchases are accepted in {settings.currency} only.",
                          field="currency")
    return Order(order_id=data.order_id or "simulation", currency=data.currency,
                 occurred_at=_moment(data.occurred_at, "occurred_at"), total=data.total,
                 channel=data.channel, store_id=data.store_id,
                 lines=[{"sku": line.sku, "category": line.category,
                         "quantity": line.quantity, "unit_price": line.unit_price,
                         "amount": line.amount} for line in data.lines])


class PurchaseController(Controller):
    path = "/purchases"
    tags = ["Purchases"]
    guards = [requires_scope]

    @post("/", opt={"scopes": ["points:earn"]}, status_code=201,
          summary="Report a purchase; your and the coalition's rules decide the points",
          description="The response lists each rule that fired with its points (`rules`), "
          "the rules that did not and why (`skipped`), the funding split, and the member's "
          "balances. Points stay pending for your return window (`pending_days`). Money "
          "is in minor units of the coalition currency. Evaluation order: "
          "(priority, partner rules before coalition rules, rule id); see the README.")
    async def create(self, request: Request, data: JSONBody[PostPurchase], state: State,
                     idempotency_key: IdempotencyHeader) -> Response:
        data = await strict_body(request, PostPurchase)
        member = _member(data.member)
        principal: PartnerPrincipal = request.user
        async with state.pool.acquire() as conn:
            order = await _order(data, conn)
            result = await earning.purchase(
                conn, partner_id=principal.partner_id, actor=principal.actor, member=member,
                order=order, idempotency_key=idempotency_key,
                request_hash=request_hash(request, data),
                touch=Touch(data.click_id, data.affiliate_code), flush=click_flush(state))
        return stored_response(result.status, result.body)

    @post("/simulate", opt={"scopes": ["points:earn"]}, status_code=200,
          summary="Evaluate a purchase against the rules without posting anything")
    async def simulate(self, request: Request, data: JSONBody[SimulatePurchase],
                       state: State) -> Response:
        data = await strict_body(request, SimulatePurchase)
        member = _member(data.member) if data.member is not None else None
        principal: PartnerPrincipal = request.user
        async with state.pool.acquire() as conn:
            order = await _order(data, conn)
            body = await earning.simulate(conn, partner_id=principal.partner_id,
                                          member=member, order=order)
        return Response(body)

    @get("/{order_id:str}", opt={"scopes": ["members:read"]},
         summary="One of your purchases with its rule breakdown and returns")
    async def show(self, order_id: OrderPath, db_session: SessionDep) -> Response:
        # Row-level security limits the query to the caller's own purchases.
        body = await db_session.scalar(text(_PURCHASE), {"order_id": order_id})
        if body is None:
            raise NotFound("order-not-found", "Order not found",
                           "No purchase with this order_id was posted by your partner account.",
                           field="order_id")
        return stored_response(200, body)

    @post("/{order_id:str}/returns", opt={"scopes": ["points:earn"]}, status_code=201,
          operation_class=OptionalBodyOperation,
          summary="Return all or part of a purchase; its points are taken back in proportion",
          description="By `amount` (minor units) or by `lines` ({sku, quantity}); omit both "
          "for the whole remaining order. After returns totalling R of an order total T, "
          "floor(points x R / T) of its points have been taken back: pending points "
          "first, then available ones. Points the member already spent fall to the "
          "coalition's return policy (clawback to zero with the shortfall recorded, or a "
          "negative balance down to a floor).")
    async def create_return(self, request: Request, order_id: OrderPath, ledger: LedgerDep,
                            idempotency_key: IdempotencyHeader,
                            data: JSONBody[PostReturn | None] = None) -> Response:
        data = await strict_body(request, PostReturn, PostReturn())
        if data.amount is not None and data.lines is not None:
            raise DomainError("validation-error", "Invalid request",
                              "Give either amount or lines, not both.", status=400,
                              field="lines")
        principal: PartnerPrincipal = request.user
        lines = ([{"sku": line.sku, "quantity": line.quantity} for line in data.lines]
                 if data.lines is not None else None)
        # The order's affiliate commission follows the return in its transaction.
        async with ledger.pool.acquire() as conn, conn.transaction():
            result = await Ledger.purchase_return_on(
                conn, partner_id=principal.partner_id, order_id=order_id, amount=data.amount,
                lines=lines, actor=principal.actor, idempotency_key=idempotency_key,
                request_hash=request_hash(request, data))
            if result.status == 201:
                now = clock.now()
                await commissions.apply_return(conn, principal.partner_id, order_id, now)
                result = await earning.tier_after_return(
                    conn, partner_id=principal.partner_id, idempotency_key=idempotency_key,
                    returned=result, now=now)
        return stored_response(result.status, result.body)


class EventController(Controller):
    path = "/events"
    tags = ["Purchases"]
    guards = [requires_scope]

    @post("/", opt={"scopes": ["points:earn"]}, status_code=201,
          summary="Report a non-purchase activity (webinar, survey, sign-up, birthday)",
          description="The `event` rules for `event_type` decide the points, with their "
          "frequency limits (once ever, per day, month or year). A reference counts once "
          "per member and event type: a repeat is 409 event-already-recorded.")
    async def create(self, request: Request, data: JSONBody[PostEvent], state: State,
                     idempotency_key: IdempotencyHeader) -> Response:
        data = await strict_body(request, PostEvent)
        member = _member(data.member)
        occurred_at = _moment(data.occurred_at or clock.now(), "occurred_at")
        principal: PartnerPrincipal = request.user
        async with state.pool.acquire() as conn:
            result = await earning.event(
                conn, partner_id=principal.partner_id, actor=principal.actor, member=member,
                event_type=data.event_type, reference=data.reference, occurred_at=occurred_at,
                idempotency_key=idempotency_key, request_hash=request_hash(request, data))
        return stored_response(result.status, result.body)
