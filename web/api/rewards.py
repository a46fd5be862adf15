"""The partner's rewards catalogue, redemptions into vouchers, and voucher use at the till.

Writes run in one Tx each with their Idempotency-Key's claim (coalition/rewards/
service.py), with the partner's id in every filter, like the ledger's posting functions;
reads of the catalogue run in the tenant-scoped Tx."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter
from msgspec import Struct

from coalition.idempotency import Once, idempotent
from coalition.rewards import queries, service
from coalition.uow import Database
from tenants.auth import PartnerPrincipal
from web.api.schemas import IdempotencyHeader, OptionalBodyOperation, OrderId, strict_body
from web.api.schemas import Request as Body
from web.idempotency import request_hash, stored_response
from web.security import as_client, ensure_acting_for, requires_scope

Code = Annotated[str, PathParameter(min_length=1, max_length=40,
                                    description="Voucher code, as printed (dashes optional)")]


class RedeemReward(Body):
    member_id: uuid.UUID


class ConsumeVoucher(Body):
    order_id: OrderId | None = None


class RewardOut(Struct):
    id: uuid.UUID
    name: str
    description: str | None
    kind: str
    value: int | None
    currency: str
    category: str | None
    price_points: int
    stock: int | None
    issued: int
    valid_from: datetime | None
    valid_until: datetime | None
    voucher_days: int | None
    per_member_limit: int | None
    tiers: list[str]
    segments: list[uuid.UUID]
    listed: bool
    active: bool


class RewardPage(Struct):
    items: list[RewardOut]


class Named(Struct):
    id: uuid.UUID
    name: str


class RewardRef(Struct):
    id: uuid.UUID
    name: str
    kind: str
    value: int | None
    currency: str
    category: str | None


class VoucherOut(Struct):
    code: str
    status: str
    usable: bool
    source: str
    reward: RewardRef
    partner: Named
    issuer: Named
    points: int
    issued_at: datetime
    expires_at: datetime | None
    used_at: datetime | None
    used_order_id: str | None


class Balance(Struct):
    available: int


class RedemptionOut(Struct):
    voucher: VoucherOut
    member_id: uuid.UUID
    transaction_id: int
    balance: Balance


class RewardController(Controller):
    path = "/"
    tags = ["Rewards"]
    guards = [requires_scope]

    @get("/rewards", opt={"scopes": [], "member_scopes": []},
         summary="Your brand's rewards catalogue")
    async def catalogue(self, request: Request, db: Database) -> RewardPage:
        rows = await as_client(db, request.user, scoped=True).run(queries.partner_rewards)
        return RewardPage(items=[RewardOut(**service.reward_json(r)) for r in rows])

    @post(
        "/rewards/{reward_id:uuid}/redemptions",
        opt={"scopes": ["points:redeem"], "member_scopes": ["points:redeem"]},
        status_code=201,
        responses={201: ResponseSpec(data_container=RedemptionOut, description="Issued")},
        summary="Redeem a member's points for one of your rewards",
        description="Burns the reward's price and issues a voucher with a unique code, all "
        "or nothing. Refusals are 422 problems: reward-not-available, reward-out-of-stock, "
        "reward-not-eligible (tier or segment), reward-limit-reached, insufficient-points. "
        "A member token redeems for its own member only.",
    )
    async def redeem(self, request: Request, reward_id: uuid.UUID, db: Database,
                     data: JSONBody[RedeemReward], idempotency_key: IdempotencyHeader
                     ) -> Response:
        principal: PartnerPrincipal = request.user
        data = await strict_body(request, RedeemReward)
        ensure_acting_for(principal, data.member_id)

        def present(result: dict) -> tuple[int, object]:
            result.pop("replayed")      # only the portal's one-time form tokens replay
            return 201, result

        done = await as_client(db, principal).run(
            idempotent, Once(idempotency_key, request_hash(request, data)),
            service.redeem_reward, reward_id, data.member_id, principal.actor,
            present=present)
        return stored_response(done.status, done.body)

    @get("/vouchers/{code:str}", opt={"scopes": ["vouchers:consume"]},
         summary="Check a voucher without using it")
    async def voucher(self, request: Request, code: Code, db: Database) -> VoucherOut:
        return VoucherOut(**await as_client(db, request.user).run(queries.voucher, code))

    @post(
        "/vouchers/{code:str}/consume",
        opt={"scopes": ["vouchers:consume"]},
        operation_class=OptionalBodyOperation,
        status_code=200,
        responses={200: ResponseSpec(data_container=VoucherOut, description="Used")},
        summary="Use a voucher, once",
        description="Only vouchers usable at your brand exist for you (others are 404). "
        "A voucher already used is a 409 voucher-already-used, also when two tills try at "
        "the same moment; an expired one is a 422 voucher-expired.",
    )
    async def consume(self, request: Request, code: Code, db: Database,
                      idempotency_key: IdempotencyHeader,
                      data: JSONBody[ConsumeVoucher | None] = None) -> Response:
        principal: PartnerPrincipal = request.user
        data = await strict_body(request, ConsumeVoucher, ConsumeVoucher())
        done = await as_client(db, principal).run(
            idempotent, Once(idempotency_key, request_hash(request, data)),
            service.use_voucher, code, principal.actor, data.order_id,
            present=lambda used: (200, used))
        return stored_response(done.status, done.body)
