"""Pay with points at checkout, in two phases: authorize (hold the points), then capture
all or part of them, or void. A hold nobody closes lapses by itself (web/jobs.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.params import JSONBody, PathParameter

from coalition import clock, ledger
from coalition.errors import NotFound
from coalition.ledger import PostingRequest
from coalition.uow import Database
from tenants.auth import PartnerPrincipal
from web.api.schemas import (
    Authorize,
    Capture,
    IdempotencyHeader,
    OptionalBodyOperation,
    strict_body,
)
from web.idempotency import request_hash, stored_response
from web.security import as_client, ensure_acting_for, requires_scope

HoldId = Annotated[uuid.UUID, PathParameter(description="The authorization's id")]
OPT = {"scopes": ["points:redeem"], "member_scopes": ["points:redeem"]}


class CheckoutController(Controller):
    path = "/redemptions/authorizations"
    tags = ["Checkout"]
    guards = [requires_scope]

    @post("/", opt=OPT, status_code=201, summary="Hold a member's points for a checkout",
          description="The points leave `available` at once but are spent only by capture. "
          "A hold that is neither captured nor voided lapses after `expires_in_seconds` "
          "(the coalition's default otherwise) and its points go back.")
    async def authorize(self, request: Request, data: JSONBody[Authorize], db: Database,
                        idempotency_key: IdempotencyHeader) -> Response:
        data = await strict_body(request, Authorize)
        principal: PartnerPrincipal = request.user
        ensure_acting_for(principal, data.member_id)
        expires_at = (clock.now() + timedelta(seconds=data.expires_in_seconds)
                      if data.expires_in_seconds else None)
        result = await as_client(db, principal).run(ledger.hold, PostingRequest(
            partner_id=principal.partner_id, member_id=data.member_id, points=data.points,
            actor=principal.actor, order_id=data.order_id, description=data.description,
            idempotency_key=idempotency_key, request_hash=request_hash(request, data)),
            expires_at)
        return stored_response(result.status, result.body)

    @get("/{authorization_id:uuid}", opt=OPT, summary="One of your checkout authorizations")
    async def show(self, request: Request, authorization_id: HoldId,
                   db: Database) -> Response:
        principal: PartnerPrincipal = request.user
        # Read under row-level security: another partner's hold is absent.
        row = await as_client(db, principal, scoped=True).run(ledger.hold_detail,
                                                              authorization_id)
        if row is None or (principal.member_id and principal.member_id != row["member_id"]):
            raise _not_found()
        return stored_response(200, row["body"])

    @post("/{authorization_id:uuid}/capture", opt=OPT, status_code=200,
          operation_class=OptionalBodyOperation,
          summary="Spend all or part of the held points",
          description="Omit `points` to capture everything held; the rest of a partial "
          "capture goes back to the member. A hold closes once.")
    async def capture(self, request: Request, authorization_id: HoldId, db: Database,
                      idempotency_key: IdempotencyHeader,
                      data: JSONBody[Capture | None] = None) -> Response:
        data = await strict_body(request, Capture, Capture())
        principal: PartnerPrincipal = request.user
        held = await _own_points(db, principal, authorization_id)
        result = await as_client(db, principal).run(
            ledger.close_hold, partner_id=principal.partner_id, hold_id=authorization_id,
            capture=data.points if data.points is not None else held, actor=principal.actor,
            idempotency_key=idempotency_key, request_hash=request_hash(request, data))
        return stored_response(result.status, result.body)

    @post("/{authorization_id:uuid}/void", opt=OPT, status_code=200,
          summary="Give all held points back")
    async def void(self, request: Request, authorization_id: HoldId, db: Database,
                   idempotency_key: IdempotencyHeader) -> Response:
        principal: PartnerPrincipal = request.user
        await _own_points(db, principal, authorization_id)
        result = await as_client(db, principal).run(
            ledger.close_hold, partner_id=principal.partner_id, hold_id=authorization_id,
            capture=None, actor=principal.actor, idempotency_key=idempotency_key,
            request_hash=request_hash(request, {"void": str(authorization_id)}))
        return stored_response(result.status, result.body)


def _not_found() -> NotFound:
    return NotFound("authorization-not-found", "Authorization not found",
                    "No authorization with this id was made by your partner account.")


async def _own_points(db: Database, principal: PartnerPrincipal, hold_id: uuid.UUID) -> int:
    """The held points of a hold this token may close (row-level security hides other
    partners')."""
    row = await as_client(db, principal, scoped=True).run(ledger.held, hold_id)
    if row is None or (principal.member_id and principal.member_id != row["member_id"]):
        raise _not_found()
    return row["points"]
