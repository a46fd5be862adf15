"""The member's rewards: every brand's catalogue, the redeem confirmation, my vouchers.

Members browse all partners' rewards, so these pages read through the plain pool (not
tenant data); the redemption itself is the same all-or-nothing service call the API
makes. The confirm form carries a one-time token: a double click or a resubmitted form
replays the first voucher instead of spending twice."""

from __future__ import annotations

import secrets
import uuid

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template

from coalition.errors import DomainError
from coalition.rewards import queries, service
from coalition.rewards.models import describe
from coalition.uow import Database
from tenants.models import User
from web.portal.common import acting, current_user, page, require


async def _confirm_page(db: Database, user: User, reward_id: uuid.UUID, *,
                        error: str | None = None, status_code: int = 200) -> Template:
    shown = await acting(db, user).run(queries.confirmation, reward_id, user.member_id)
    if shown is None:
        raise NotFoundException("No such reward.")
    reward = shown.reward
    return page("rewards/confirm.html", status_code=status_code, user=user, reward=reward,
                partner_name=shown.partner_name, balance=shown.balance, locked=shown.locked,
                error=error, worth=describe(reward.kind, reward.value, reward.currency),
                token=secrets.token_urlsafe(18))


class MemberRewardPages(Controller):
    path = "/member"
    include_in_schema = False

    @get("/rewards")
    async def catalogue(self, request: Request, db: Database) -> Template:
        user = require(request, await current_user(request, db), "member")
        items, balance = await acting(db, user).run(queries.member_catalogue, user.member_id)
        for item in items:
            r = item["reward"]
            item["worth"] = describe(r.kind, r.value, r.currency)
        return page("rewards/catalogue.html", user=user, items=items, balance=balance)

    @get("/rewards/{reward_id:uuid}")
    async def confirm(self, request: Request, db: Database,
                      reward_id: FromPath[uuid.UUID]) -> Template:
        user = require(request, await current_user(request, db), "member")
        return await _confirm_page(db, user, reward_id)

    @post("/rewards/{reward_id:uuid}/redeem")
    async def redeem(self, request: Request, db: Database,
                     reward_id: FromPath[uuid.UUID]) -> Response:
        user = require(request, await current_user(request, db), "member")
        token = ((await request.form()).get("token") or "").strip()
        if not token or len(token) > 64:
            return await _confirm_page(db, user, reward_id, status_code=400,
                                       error="The form expired; confirm again.")
        try:
            await acting(db, user).run(service.redeem_reward, reward_id, user.member_id,
                                       f"member:{user.id}", request_key=token)
        except DomainError as exc:
            if exc.status == 404:
                raise NotFoundException("No such reward.") from exc
            return await _confirm_page(db, user, reward_id, error=exc.detail,
                                       status_code=exc.status)
        return Redirect("/member/vouchers", status_code=303)

    @get("/vouchers")
    async def vouchers(self, request: Request, db: Database) -> Template:
        user = require(request, await current_user(request, db), "member")
        vouchers = await acting(db, user).run(queries.member_vouchers, user.member_id)
        for v in vouchers:
            r = v["reward"]
            v["worth"] = describe(r["kind"], r["value"], r["currency"])
        return page("rewards/vouchers.html", user=user, vouchers=vouchers)
