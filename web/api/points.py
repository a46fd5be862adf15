"""Earning, redemption and reversal: each one call to the ledger's SQL functions."""

from __future__ import annotations

from litestar import Controller, Request, Response, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody

from coalition import ledger
from coalition.errors import DomainError
from coalition.ledger import PostingRequest, PostingResult
from coalition.uow import Database
from tenants.auth import PartnerPrincipal
from web.api.schemas import (
    AdjustPoints,
    EarnPoints,
    IdempotencyHeader,
    OptionalBodyOperation,
    PostingOut,
    RedeemPoints,
    ReverseTransaction,
    RowId,
    strict_body,
)
from web.idempotency import request_hash, stored_response
from web.security import as_client, ensure_acting_for, requires_scope

CREATED = {201: ResponseSpec(data_container=PostingOut, description="Posted")}


def _respond(result: PostingResult) -> Response:
    return stored_response(result.status, result.body)


def _posting(request: Request, data: EarnPoints, key: str) -> PostingRequest:
    principal: PartnerPrincipal = request.user
    return PostingRequest(
        partner_id=principal.partner_id,
        member_id=data.member_id,
        points=data.points,
        actor=principal.actor,
        order_id=data.order_id,
        description=data.description,
        metadata=data.metadata,
        idempotency_key=key,
        request_hash=request_hash(request, data),
    )


class PointsController(Controller):
    path = "/"
    tags = ["Points"]
    guards = [requires_scope]

    @post(
        "/earn",
        opt={"scopes": ["points:earn"]},
        status_code=201,
        responses=CREATED,
        summary="Issue points to a member at your brand",
    )
    async def earn(
        self, request: Request, data: JSONBody[EarnPoints], db: Database,
        idempotency_key: IdempotencyHeader,
    ) -> Response:
        data = await strict_body(request, EarnPoints)
        return _respond(await as_client(db, request.user).run(
            ledger.earn, _posting(request, data, idempotency_key)))

    @post(
        "/redemptions",
        opt={"scopes": ["points:redeem"], "member_scopes": ["points:redeem"]},
        status_code=201,
        responses=CREATED,
        summary="Redeem a member's points at your brand",
        description="Consumes the member's lots first-expiring first. An insufficient "
        "balance is a 422 problem of type /problems/insufficient-points. A partner app "
        "holding a member token with points:redeem may redeem for that member only.",
    )
    async def redeem(
        self, request: Request, data: JSONBody[RedeemPoints], db: Database,
        idempotency_key: IdempotencyHeader,
    ) -> Response:
        data = await strict_body(request, RedeemPoints)
        ensure_acting_for(request.user, data.member_id)
        return _respond(await as_client(db, request.user).run(
            ledger.redeem, _posting(request, data, idempotency_key)))

    @post(
        "/adjustments",
        opt={"scopes": ["points:adjust"]},
        status_code=201,
        responses=CREATED,
        summary="Correct a member's balance with a stated reason",
        description="Positive points credit the member (funded by your brand, like an earn); "
        "negative points take back points your brand issued and the member still holds.",
    )
    async def adjust(
        self, request: Request, data: JSONBody[AdjustPoints], db: Database,
        idempotency_key: IdempotencyHeader,
    ) -> Response:
        data = await strict_body(request, AdjustPoints)
        if data.points == 0:
            raise DomainError("validation-error", "Invalid request",
                              "points must not be zero.", status=400, field="points")
        principal: PartnerPrincipal = request.user
        posting = PostingRequest(
            partner_id=principal.partner_id, member_id=data.member_id,
            points=abs(data.points), actor=principal.actor, order_id=data.order_id,
            description=data.reason, metadata=data.metadata,
            idempotency_key=idempotency_key, request_hash=request_hash(request, data),
        )
        return _respond(await as_client(db, principal).run(ledger.adjust, posting,
                                                           data.points > 0))

    @post(
        "/transactions/{transaction_id:int}/reversal",
        status_code=201,
        operation_class=OptionalBodyOperation,
        responses=CREATED,
        summary="Reverse your own earn or redemption, fully or partly",
        description="Omit `points` to reverse what remains of the transaction. Reversing an "
        "earn needs points:earn; reversing a redemption needs points:redeem.",
    )
    async def reverse(
        self,
        request: Request,
        transaction_id: RowId,
        db: Database,
        idempotency_key: IdempotencyHeader,
        data: JSONBody[ReverseTransaction | None] = None,
    ) -> Response:
        principal: PartnerPrincipal = request.user
        data = await strict_body(request, ReverseTransaction, ReverseTransaction())
        allowed = [k for k in ("earn", "redeem") if f"points:{k}" in principal.scopes]
        result = await as_client(db, principal).run(
            ledger.reverse,
            partner_id=principal.partner_id,
            entry_id=transaction_id,
            points=data.points,
            description=data.description,
            actor=principal.actor,
            allowed_kinds=allowed,
            idempotency_key=idempotency_key,
            request_hash=request_hash(request, data),
        )
        return _respond(result)
