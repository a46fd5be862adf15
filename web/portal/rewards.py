"""The member's rewards: every brand's catalogue, the redeem confirmation, my vouchers.

Members browse all partners' rewards, so these pages read through the plain pool (not
tenant data); the redemption itself is the same all-or-nothing service call the API
makes. The confirm form carries a one-time token: a double click or a resubmitted form
replays the first voucher instead of spending twice."""

from __future__ import annotations

import secrets
import uuid

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.audience import member_context
from coalition.errors import DomainError
from coalition.rewards import service
from coalition.rewards.models import describe
from web.portal.common import current_user, page, require

Session = NamedDependency[AsyncSession]


async def _confirm_page(state: State, user, reward_id: uuid.UUID, *, error: str | None = None,
                        status_code: int = 200) -> Template:
    async with state.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT r.*, p.name AS partner_name FROM rewards r JOIN partners p"
            " ON p.id = r.partner_id WHERE r.id = $1 AND r.listed", reward_id)
        if row is None:
            raise NotFoundException("No such reward.")
        reward = service.reward_of(row)
        locked = service.eligible(reward, await member_context(conn, user.member_id))
        taken = await service.used_count(conn, reward.id, user.member_id)
        balance = await conn.fetchval("SELECT balance FROM accounts WHERE member_id = $1"
                                      " AND kind = 'member_wallet'", user.member_id)
    if locked is None and reward.per_member_limit is not None \
            and taken >= reward.per_member_limit:
        locked = "You have reached the limit for this reward."
    if locked is None and balance < reward.price_points:
        locked = f"You need {reward.price_points - balance} more points."
    return page("rewards/confirm.html", status_code=status_code, user=user, reward=reward,
                partner_name=row["partner_name"], balance=balance, locked=locked,
                error=error, worth=describe(reward.kind, reward.value, reward.currency),
                token=secrets.token_urlsafe(18))


class MemberRewardPages(Controller):
    path = "/member"
    include_in_schema = False

    @get("/rewards")
    async def catalogue(self, request: Request, db_session: Session, state: State
                        ) -> Template:
        user = require(request, await current_user(request, db_session), "member")
        async with state.pool.acquire() as conn:
            items = await service.member_catalogue(conn, user.member_id)
            balance = await conn.fetchval("SELECT balance FROM accounts WHERE member_id = $1"
                                          " AND kind = 'member_wallet'", user.member_id)
        for item in items:
            r = item["reward"]
            item["worth"] = describe(r.kind, r.value, r.currency)
        return page("rewards/catalogue.html", user=user, items=items, balance=balance)

    @get("/rewards/{reward_id:uuid}")
    async def confirm(self, request: Request, db_session: Session, state: State,
                      reward_id: FromPath[uuid.UUID]) -> Template:
        user = require(request, await current_user(request, db_session), "member")
        return await _confirm_page(state, user, reward_id)

    @post("/rewards/{reward_id:uuid}/redeem")
    async def redeem(self, request: Request, db_session: Session, state: State,
                     reward_id: FromPath[uuid.UUID]) -> Response:
        user = require(request, await current_user(request, db_session), "member")
        token = ((await request.form()).get("token") or "").strip()
        if not token or len(token) > 64:
            return await _confirm_page(state, user, reward_id, status_code=400,
                                       error="The form expired; confirm again.")
        try:
            async with state.pool.acquire() as conn:
                await service.redeem(conn, reward_id=reward_id, member_id=user.member_id,
                                     actor=f"member:{user.id}", request_key=token)
        except DomainError as exc:
            if exc.status == 404:
                raise NotFoundException("No such reward.") from exc
            return await _confirm_page(state, user, reward_id, error=exc.detail,
                                       status_code=exc.status)
        return Redirect("/member/vouchers", status_code=303)

    @get("/vouchers")
    async def vouchers(self, request: Request, db_session: Session, state: State
                       ) -> Template:
        user = require(request, await current_user(request, db_session), "member")
        async with state.pool.acquire() as conn:
            vouchers = await service.member_vouchers(conn, user.member_id)
        for v in vouchers:
            r = v["reward"]
            v["worth"] = describe(r["kind"], r["value"], r["currency"])
        return page("rewards/vouchers.html", user=user, vouchers=vouchers)
