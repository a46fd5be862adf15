"""Purchases, returns and non-purchase events: the partner reports what happened, the
rules decide the points (coalition/rules), the ledger posts them (coalition/earning)."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import JSONBody

from coalition import earning
from coalition.affiliates.attribution import Touch
from coalition.earning import MemberRef, Order
from coalition.errors import DomainError, NotFound
from coalition.uow import Database
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
from web.security import as_client, requires_scope


def _member(reference: MemberReference, field: str = "member") -> MemberRef:
    given = [v for v in (reference.id, reference.card_number, reference.customer_id)
             if v is not None]
    if len(given) != 1:
        raise DomainError("validation-error", "Invalid request",
                          "Name the member by exactly one of id, card_number, customer_id.",
                          status=400, field=field)
    return MemberRef(reference.id, reference.card_number, reference.customer_id)


def _order(data: PostPurchase | SimulatePurchase) -> Order:
    """The order as reported (its currency and time are checked by the use case)."""
    return Order(order_id=data.order_id or "simulation", currency=data.currency,
                 occurred_at=data.occurred_at, total=data.total, channel=data.channel,
                 store_id=data.store_id,
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
                     db: Database, idempotency_key: IdempotencyHeader) -> Response:
        data = await strict_body(request, PostPurchase)
        member = _member(data.member)
        result = await as_client(db, request.user).run(
            earning.purchase, member=member, order=_order(data),
            idempotency_key=idempotency_key, request_hash=request_hash(request, data),
            touch=Touch(data.click_id, data.affiliate_code), flush=click_flush(state))
        return stored_response(result.status, result.body)

    @post("/simulate", opt={"scopes": ["points:earn"]}, status_code=200,
          summary="Evaluate a purchase against the rules without posting anything")
    async def simulate(self, request: Request, data: JSONBody[SimulatePurchase],
                       db: Database) -> Response:
        data = await strict_body(request, SimulatePurchase)
        member = _member(data.member) if data.member is not None else None
        body = await as_client(db, request.user).run(earning.simulate, member=member,
                                                      order=_order(data))
        return Response(body)

    @get("/{order_id:str}", opt={"scopes": ["members:read"]},
         summary="One of your purchases with its rule breakdown and returns")
    async def show(self, request: Request, order_id: OrderPath, db: Database) -> Response:
        # Row-level security limits the query to the caller's own purchases.
        body = await as_client(db, request.user, scoped=True).run(earning.purchase_detail,
                                                                  order_id)
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
    async def create_return(self, request: Request, order_id: OrderPath, db: Database,
                            idempotency_key: IdempotencyHeader,
                            data: JSONBody[PostReturn | None] = None) -> Response:
        data = await strict_body(request, PostReturn, PostReturn())
        if data.amount is not None and data.lines is not None:
            raise DomainError("validation-error", "Invalid request",
                              "Give either amount or lines, not both.", status=400,
                              field="lines")
        lines = ([{"sku": line.sku, "quantity": line.quantity} for line in data.lines]
                 if data.lines is not None else None)
        result = await as_client(db, request.user).run(
            earning.purchase_return, order_id=order_id, amount=data.amount, lines=lines,
            idempotency_key=idempotency_key, request_hash=request_hash(request, data))
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
    async def create(self, request: Request, data: JSONBody[PostEvent], db: Database,
                     idempotency_key: IdempotencyHeader) -> Response:
        data = await strict_body(request, PostEvent)
        member = _member(data.member)
        result = await as_client(db, request.user).run(
            earning.event, member=member, event_type=data.event_type,
            reference=data.reference, occurred_at=data.occurred_at,
            idempotency_key=idempotency_key, request_hash=request_hash(request, data))
        return stored_response(result.status, result.body)
