"""Points-lifecycle policy pages. Operator: the coalition's expiry, return and checkout-
hold policies. Partner console: the coalition's policies (read-only) and the partner's
own return window, which only its owner changes. Every field is checked, all errors are
shown at once and nothing is written until the whole form is valid; each change is
recorded in the audit log with its before and after values."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.response import Redirect, Template
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock, policies
from coalition.errors import DomainError
from tenants import accounts
from tenants.models import AuditEntry, Partner, User
from tenants.roles import can
from web.portal.common import PageForbidden, operator, page
from web.portal.console import provide_console_session, staff

Session = NamedDependency[AsyncSession]
EXPIRY_LABELS = {
    "rolling": "rolling: the months after the day the points were earned",
    "end_of_month": "end of the month in which those months end",
    "end_of_year": "end of the year in which those months end",
    "fixed_date": "a fixed date each year, the first one once those months have passed",
    "never": "never",
}
RETURN_LABELS = {
    "clawback": "clawback: take what the member still has, down to zero; record the rest"
                " as a shortfall",
    "negative_floor": "negative floor: also let the balance go below zero, down to the floor;"
                      " the next points repay it",
}
OPERATOR_ACTION = "policies.save"
PARTNER_ACTION = "policies.return_window"


async def _history(session: AsyncSession, action: str, partner_id=None) -> list[AuditEntry]:
    return list((await session.scalars(
        select(AuditEntry).where(AuditEntry.action == action,
                                 AuditEntry.partner_id == partner_id)
        .order_by(AuditEntry.id.desc()).limit(20))).all())


async def _context(session: AsyncSession) -> dict[str, Any]:
    """What both pages show of the coalition's policies; dates in the coalition's zone,
    where month ends and fixed dates are taken."""
    zone = ZoneInfo((await session.execute(text(
        "SELECT timezone FROM coalition_settings WHERE id = 1"))).scalar_one())
    expires_now = await policies.expiry_of_points_earned_at(session, clock.now())
    return {"policies": await policies.load(session), "expiry_labels": EXPIRY_LABELS,
            "return_labels": RETURN_LABELS, "zone": zone.key,
            "expires_now": expires_now.astimezone(zone) if expires_now else None,
            "bounds": {"months": policies.VALIDITY_MONTHS,
                       "hold": policies.HOLD_TIMEOUT_SECONDS,
                       "floor": policies.MAX_NEGATIVE_FLOOR,
                       "window": policies.RETURN_WINDOW_DAYS}}


class OperatorPolicyPages(Controller):
    path = "/operator/policies"
    include_in_schema = False

    async def _page(self, db_session: AsyncSession, user: User, status_code: int = 200,
                    **extra) -> Template:
        return page("operator_policies.html", status_code=status_code, user=user,
                    history=await _history(db_session, OPERATOR_ACTION),
                    **await _context(db_session), **extra)

    @get("/")
    async def show(self, request: Request, db_session: Session) -> Template:
        return await self._page(db_session, await operator(request, db_session))

    @post("/")
    async def save(self, request: Request, db_session: Session) -> Template:
        user = await operator(request, db_session)
        form = dict(await request.form())
        chosen, errors = policies.validate(form, await policies.load(db_session))
        if chosen is None:   # nothing is written
            return await self._page(db_session, user, status_code=400, errors=errors,
                                    form=form)
        changes = await policies.save(db_session, chosen)
        if changes:
            await accounts.audit(db_session, user, OPERATOR_ACTION, changes=changes)
        await db_session.commit()
        saved = ("Saved. The new policies apply to points earned, holds opened and returns"
                 " posted from now on." if changes else "Nothing changed.")
        return await self._page(db_session, user, saved=saved)


class PartnerPolicyPages(Controller):
    path = "/partner/policies"
    include_in_schema = False
    dependencies = {"db_session": Provide(provide_console_session)}

    async def _page(self, db_session: AsyncSession, user: User, status_code: int = 200,
                    **extra) -> Template:
        partner = await db_session.get_one(Partner, user.partner_id)
        return page("partner_policies.html", status_code=status_code, user=user,
                    partner=partner, may_change=can(user, "policies.manage"),
                    history=await _history(db_session, PARTNER_ACTION, user.partner_id),
                    **await _context(db_session), **extra)

    @get("/")
    async def show(self, request: Request, db_session: Session) -> Template:
        return await self._page(db_session, await staff(request, db_session, "policies.view"))

    @post("/")
    async def save(self, request: Request, db_session: Session) -> Response:
        user = await staff(request, db_session, "policies.view")
        if not can(user, "policies.manage"):
            raise PageForbidden("Only an owner can change the return window.")
        form = await request.form()
        try:
            days = policies.parse_return_window(form.get("pending_days", ""))
        except DomainError as exc:
            return await self._page(db_session, user, status_code=exc.status,
                                    errors={exc.field: exc.detail}, form=dict(form))
        before = await policies.set_return_window(db_session, user.partner_id, days)
        if before != days:
            await accounts.audit(db_session, user, PARTNER_ACTION, partner_id=user.partner_id,
                                 changes={"pending_days": [before, days]})
        await db_session.commit()
        return Redirect("/partner/policies")
