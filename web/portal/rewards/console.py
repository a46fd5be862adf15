"""Partner console: the brand's rewards (create, edit, stock, validity, gating,
deactivate) and the till's voucher check. Rewards are read and written in the
console's tenant-scoped Tx (row-level security); a voucher is consumed by the same use
case as the API's, filtered to this partner."""

from __future__ import annotations

import uuid
from typing import Any
from zoneinfo import ZoneInfo

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template

from coalition.errors import DomainError, NotFound
from coalition.rewards import catalogue, queries, service
from coalition.rewards.models import KIND_LABELS, Reward, describe
from coalition.settings import current_settings
from coalition.uow import Database, Runner
from tenants.models import User
from web.portal.common import acting, page
from web.portal.partners.console import staff
from web.portal.rewards.forms import FormErrors, as_major, read_reward


async def _zone(runner: Runner) -> ZoneInfo:
    return (await runner.run(current_settings)).zone


def _form_values(reward: Reward | None, zone: ZoneInfo) -> dict:
    """What the edit form shows: the stored reward in the units a person types."""
    if reward is None:
        return {"kind": "percent_discount", "listed": True, "active": True}
    until = reward.valid_until.astimezone(zone) if reward.valid_until else None
    if until is not None:      # stored as the start of the day after the last valid day
        until = until.fromordinal(until.toordinal() - 1)
    return {
        "name": reward.name, "description": reward.description or "", "kind": reward.kind,
        "category": reward.category or "", "price_points": reward.price_points,
        "stock": "" if reward.stock is None else reward.stock,
        "percent": reward.value if reward.kind == "percent_discount" else "",
        "amount": as_major(reward.value) if reward.kind in ("fixed_discount", "gift_card")
        else "",
        "valid_from": reward.valid_from.astimezone(zone).date().isoformat()
        if reward.valid_from else "",
        "valid_until": until.date().isoformat() if until else "",
        "voucher_days": reward.voucher_days or "",
        "per_member_limit": reward.per_member_limit or "",
        "tiers": ", ".join(reward.tiers or []),
        "segments": ", ".join(str(s) for s in reward.segments or []),
        "listed": reward.listed, "active": reward.active,
    }


async def _own_reward(runner: Runner, reward_id: uuid.UUID) -> Reward:
    reward = await runner.run(queries.partner_reward, reward_id)
    if reward is None:
        raise NotFoundException("No such reward.")
    return reward


async def _saved(runner: Runner, form: Any, use_case: Any, *args: Any) -> None:
    """Read the form and run the change; FormErrors names every bad field (target
    segments must be the partner's own, which the use case checks)."""
    fields = read_reward(form, await _zone(runner))
    try:
        await runner.run(use_case, *args, fields)
    except DomainError as exc:
        if exc.field != "segments":
            raise
        raise FormErrors({"segments": exc.detail}) from exc


class RewardConsolePages(Controller):
    path = "/partner"
    include_in_schema = False

    async def _list(self, runner: Runner, user: User, *, form: dict | None = None,
                    errors: dict | None = None, status_code: int = 200) -> Template:
        rewards = await runner.run(queries.partner_rewards, active_first=True)
        zone = await _zone(runner)
        return page("rewards/console_list.html", status_code=status_code, user=user,
                    rewards=[(r, describe(r.kind, r.value, r.currency)) for r in rewards],
                    kinds=KIND_LABELS, form=form or _form_values(None, zone),
                    errors=errors or {})

    @get("/rewards")
    async def rewards(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "rewards.manage")
        return await self._list(acting(db, user, scoped=True), user)

    @post("/rewards")
    async def create(self, request: Request, db: Database) -> Response:
        user = await staff(request, db, "rewards.manage")
        runner = acting(db, user, scoped=True)
        form = await request.form()
        try:
            await _saved(runner, form, catalogue.create_reward)
        except FormErrors as exc:
            return await self._list(runner, user, form=dict(form), errors=exc.errors,
                                    status_code=400)
        return Redirect("/partner/rewards", status_code=303)

    @get("/rewards/{reward_id:uuid}")
    async def edit(self, request: Request, db: Database,
                   reward_id: FromPath[uuid.UUID]) -> Template:
        user = await staff(request, db, "rewards.manage")
        runner = acting(db, user, scoped=True)
        reward = await _own_reward(runner, reward_id)
        return page("rewards/console_edit.html", user=user, reward=reward, kinds=KIND_LABELS,
                    form=_form_values(reward, await _zone(runner)), errors={})

    @post("/rewards/{reward_id:uuid}")
    async def save(self, request: Request, db: Database,
                   reward_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db, "rewards.manage")
        runner = acting(db, user, scoped=True)
        reward = await _own_reward(runner, reward_id)
        form = await request.form()
        try:
            await _saved(runner, form, catalogue.update_reward, reward_id)
        except FormErrors as exc:
            return page("rewards/console_edit.html", status_code=400, user=user,
                        reward=reward, kinds=KIND_LABELS, form=dict(form), errors=exc.errors)
        except NotFound:
            raise NotFoundException("No such reward.") from None
        return Redirect("/partner/rewards", status_code=303)

    @post("/rewards/{reward_id:uuid}/active")
    async def toggle(self, request: Request, db: Database,
                     reward_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db, "rewards.manage")
        active = (await request.form()).get("active") == "on"
        try:
            await acting(db, user, scoped=True).run(catalogue.set_reward_active, reward_id,
                                                    active)
        except NotFound:
            raise NotFoundException("No such reward.") from None
        return Redirect("/partner/rewards", status_code=303)

    async def _till(self, db: Database, user: User, *, voucher: dict | None = None,
                    message: str | None = None, error: str | None = None,
                    status_code: int = 200) -> Template:
        recent = await acting(db, user, scoped=True).run(queries.recently_used_vouchers)
        if voucher is not None:
            r = voucher["reward"]
            voucher = {**voucher, "worth": describe(r["kind"], r["value"], r["currency"])}
        return page("rewards/console_vouchers.html", status_code=status_code, user=user,
                    voucher=voucher, message=message, error=error, recent=recent)

    @get("/vouchers")
    async def vouchers(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "vouchers.validate")
        return await self._till(db, user)

    @post("/vouchers")
    async def check(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "vouchers.validate")
        code = ((await request.form()).get("code") or "").strip()
        if not code:
            return await self._till(db, user, error="Enter a voucher code.",
                                    status_code=400)
        try:
            # A voucher names the brand that issued it: read outside the tenant scope,
            # with this partner in the filter.
            found = await acting(db, user).run(queries.voucher, code)
        except DomainError as exc:
            return await self._till(db, user, error=exc.detail, status_code=exc.status)
        return await self._till(db, user, voucher=found)

    @post("/vouchers/consume")
    async def consume(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "vouchers.validate")
        form = await request.form()
        code = (form.get("code") or "").strip()
        order_id = (form.get("order_id") or "").strip()[:200] or None
        if not code:
            return await self._till(db, user, error="Enter a voucher code.",
                                    status_code=400)
        try:
            used = await acting(db, user).run(service.use_voucher, code,
                                              f"staff:{user.email}", order_id)
        except DomainError as exc:
            return await self._till(db, user, error=exc.detail, status_code=exc.status)
        return await self._till(db, user, voucher=used,
                                message="Voucher used: apply the reward to the order.")
