"""Purchases, returns and non-purchase events: the partner reports what happened, the
rules decide the points (coalition/rules), the ledger posts them (coalition/purchases)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody, PathParameter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.errors import DomainError, NotFound
from coalition.ledger import Ledger
from tenants.auth import PartnerPrincipal
from web.api.schemas import IdempotencyKey, OrderId, PostReturn, strict_body
from web.idempotency import request_hash, stored_response
from web.security import requires_scope

IdempotencyHeader = Annotated[IdempotencyKey, HeaderParameter(name="Idempotency-Key")]
OrderPath = Annotated[OrderId, PathParameter(description="Your order id")]
LedgerDep = NamedDependency[Ledger]
SessionDep = AsyncSession

_PURCHASE = """
SELECT jsonb_build_object(
    'id', p.id, 'order_id', p.order_id, 'member_id', p.member_id,
    'occurred_at', p.occurred_at, 'total', p.total, 'currency', p.currency,
    'channel', p.channel, 'store_id', p.store_id, 'lines', p.lines, 'points', p.points,
    'entry_id', p.entry_id, 'rules', p.breakdown, 'returned_total', p.returned_total,
    'returned_points', p.returned_points,
    'returns', coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'id', r.id, 'amount', r.amount, 'lines', r.lines, 'points', r.points,
                    'shortfall', r.shortfall, 'negative_balance', r.debt, 'policy', r.policy,
                    'created_at', r.created_at) ORDER BY r.id)
                  FROM purchase_returns r WHERE r.purchase_id = p.id), '[]'),
    'created_at', p.created_at)::text
  FROM purchases p WHERE p.order_id = :order_id
"""


class PurchaseController(Controller):
    path = "/purchases"
    tags = ["Purchases"]
    guards = [requires_scope]

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
        result = await ledger.purchase_return(
            partner_id=principal.partner_id, order_id=order_id, amount=data.amount,
            lines=lines, actor=principal.actor, idempotency_key=idempotency_key,
            request_hash=request_hash(request, data))
        return stored_response(result.status, result.body)
