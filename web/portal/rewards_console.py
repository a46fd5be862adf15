"""Partner console: the brand's rewards (create, edit, stock, validity, gating,
deactivate) and the till's voucher check. Rewards are read and written in the
console's tenant-scoped session (row-level security); a voucher is consumed by the
same service call as the API's, filtered to this partner."""

from __future__ import annotations

import uuid
from typing import Any
from zoneinfo import ZoneInfo

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.errors import DomainError
from coalition.rewards import service
from coalition.rewards.models import KIND_LABELS, Reward, describe
from coalition.segments.targets import unknown_segments
from tenants import accounts
from tenants.models import User
from web.portal.common import page
from web.portal.console import provide_console_session, staff
from web.portal.reward_forms import FormErrors, as_major, read_reward

Session = NamedDependency[AsyncSession]


async def _zone(db_session: AsyncSession) -> ZoneInfo:
    return ZoneInfo(await db_session.scalar(text("SELECT timezone FROM coalition_settings")))


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


async def _checked(db_session: AsyncSession, user: User, form: Any) -> dict[str, Any]:
    """The form's fields; target segments must be the partner's own."""
    fields = read_reward(form, await _zone(db_session))
    unknown = await unknown_segments(db_session, user.partner_id, fields["segments"])
    if unknown:
        raise FormErrors({"segments": f"{unknown[0]} is not one of your segments."})
    return fields


async def _own_reward(db_session: AsyncSession, user: User, reward_id: uuid.UUID) -> Reward:
    reward = await db_session.scalar(select(Reward).where(
        Reward.id == reward_id, Reward.partner_id == user.partner_id))
    if reward is None:
        raise NotFoundException("No such reward.")
    return reward


class RewardConsolePages(Controller):
    path = "/partner"
    include_in_schema = False
    dependencies = {"db_session": Provide(provide_console_session)}

    async def _list(self, db_session: AsyncSession, user: User, *, form: dict | None = None,
                    errors: dict | None = None, status_code: int = 200) -> Template:
        rewards = (await db_session.scalars(select(Reward).where(
            Reward.partner_id == user.partner_id).order_by(
            Reward.active.desc(), Reward.price_points, Reward.name))).all()
        zone = await _zone(db_session)
        return page("rewards/console_list.html", status_code=status_code, user=user,
                    rewards=[(r, describe(r.kind, r.value, r.currency)) for r in rewards],
                    kinds=KIND_LABELS, form=form or _form_values(None, zone),
                    errors=errors or {})

    @get("/rewards")
    async def rewards(self, request: Request, db_session: Session) -> Template:
        user = await staff(request, db_session, "rewards.manage")
        return await self._list(db_session, user)

    @post("/rewards")
    async def create(self, request: Request, db_session: Session) -> Response:
        user = await staff(request, db_session, "rewards.manage")
        form = await request.form()
        try:
            fields = await _checked(db_session, user, form)
        except FormErrors as exc:
            return await self._list(db_session, user, form=dict(form), errors=exc.errors,
                                    status_code=400)
        reward = Reward(partner_id=user.partner_id, **fields)
        db_session.add(reward)
        await db_session.flush()
        await accounts.audit(db_session, user, "reward.create", target=str(reward.id),
                             partner_id=user.partner_id, name=reward.name)
        await db_session.commit()
        return Redirect("/partner/rewards", status_code=303)

    @get("/rewards/{reward_id:uuid}")
    async def edit(self, request: Request, db_session: Session,
                   reward_id: FromPath[uuid.UUID]) -> Template:
        user = await staff(request, db_session, "rewards.manage")
        reward = await _own_reward(db_session, user, reward_id)
        return page("rewards/console_edit.html", user=user, reward=reward, kinds=KIND_LABELS,
                    form=_form_values(reward, await _zone(db_session)), errors={})

    @post("/rewards/{reward_id:uuid}")
    async def save(self, request: Request, db_session: Session,
                   reward_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db_session, "rewards.manage")
        reward = await _own_reward(db_session, user, reward_id)
        form = await request.form()
        try:
            fields = await _checked(db_session, user, form)
        except FormErrors as exc:
            return page("rewards/console_edit.html", status_code=400, user=user,
                        reward=reward, kinds=KIND_LABELS, form=dict(form), errors=exc.errors)
        for name, value in fields.items():
            setattr(reward, name, value)
        reward.updated_at = clock.now()
        await accounts.audit(db_session, user, "reward.update", target=str(reward.id),
                             partner_id=user.partner_id)
        await db_session.commit()
        return Redirect("/partner/rewards", status_code=303)

    @post("/rewards/{reward_id:uuid}/active")
    async def toggle(self, request: Request, db_session: Session,
                     reward_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db_session, "rewards.manage")
        reward = await _own_reward(db_session, user, reward_id)
        reward.active = (await request.form()).get("active") == "on"
        reward.updated_at = clock.now()
        await accounts.audit(db_session, user, "reward.activate" if reward.active
                             else "reward.deactivate", target=str(reward.id),
                             partner_id=user.partner_id)
        await db_session.commit()
        return Redirect("/partner/rewards", status_code=303)

    async def _till(self, db_session: AsyncSession, user: User, *, voucher: dict | None = None,
                    message: str | None = None, error: str | None = None,
                    status_code: int = 200) -> Template:
        # Recently used vouchers, codes masked: the till needs the history, not the codes.
        recent = (await db_session.execute(text(
            "SELECT '…' || right(v.code, 4) AS code, r.name, v.used_at, v.used_order_id"
            " FROM vouchers v JOIN rewards r ON r.id = v.reward_id"
            " WHERE v.partner_id = :p AND v.status = 'used'"
            " ORDER BY v.used_at DESC LIMIT 20"), {"p": user.partner_id})).mappings().all()
        if voucher is not None:
            r = voucher["reward"]
            voucher = {**voucher, "worth": describe(r["kind"], r["value"], r["currency"])}
        return page("rewards/console_vouchers.html", status_code=status_code, user=user,
                    voucher=voucher, message=message, error=error, recent=recent)

    @get("/vouchers")
    async def vouchers(self, request: Request, db_session: Session) -> Template:
        user = await staff(request, db_session, "vouchers.validate")
        return await self._till(db_session, user)

    @post("/vouchers")
    async def check(self, request: Request, db_session: Session, state: State) -> Template:
        user = await staff(request, db_session, "vouchers.validate")
        code = ((await request.form()).get("code") or "").strip()
        if not code:
            return await self._till(db_session, user, error="Enter a voucher code.",
                                    status_code=400)
        try:
            async with state.pool.acquire() as conn:
                found = await service.find_voucher(conn, user.partner_id, code)
        except DomainError as exc:
            return await self._till(db_session, user, error=exc.detail,
                                    status_code=exc.status)
        return await self._till(db_session, user, voucher=found)

    @post("/vouchers/consume")
    async def consume(self, request: Request, db_session: Session, state: State) -> Template:
        user = await staff(request, db_session, "vouchers.validate")
        form = await request.form()
        code = (form.get("code") or "").strip()
        order_id = (form.get("order_id") or "").strip()[:200] or None
        if not code:
            return await self._till(db_session, user, error="Enter a voucher code.",
                                    status_code=400)
        try:
            async with state.pool.acquire() as conn:
                used = await service.consume(conn, partner_id=user.partner_id, code=code,
                                             actor=f"staff:{user.email}", order_id=order_id)
        except DomainError as exc:
            return await self._till(db_session, user, error=exc.detail,
                                    status_code=exc.status)
        return await self._till(db_session, user, voucher=used,
                                message="Voucher used: apply the reward to the order.")
