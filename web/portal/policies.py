"""Points-lifecycle policy pages. Operator: the coalition's expiry, return and checkout-
hold policies. Partner console: the coalition's policies (read-only) and the partner's
own return window, which only its owner changes. Every field is checked, all errors are
shown at once and nothing is written until the whole form is valid; each change is
recorded in the audit log with its before and after values."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.response import Redirect, Template

from coalition import policies
from coalition.errors import DomainError
from coalition.uow import Database
from tenants.models import User
from tenants.roles import can
from web.portal.common import PageForbidden, acting, operator, page
from web.portal.partners.console import staff

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


def _context(shown: policies.PolicyPage) -> dict[str, Any]:
    """What both pages show of the coalition's policies."""
    return {"policies": shown.policies, "expiry_labels": EXPIRY_LABELS,
            "return_labels": RETURN_LABELS, "zone": shown.zone,
            "expires_now": shown.expires_now, "history": shown.history,
            "bounds": {"months": policies.VALIDITY_MONTHS,
                       "hold": policies.HOLD_TIMEOUT_SECONDS,
                       "floor": policies.MAX_NEGATIVE_FLOOR,
                       "window": policies.RETURN_WINDOW_DAYS}}


class OperatorPolicyPages(Controller):
    path = "/operator/policies"
    include_in_schema = False

    async def _page(self, db: Database, user: User, status_code: int = 200,
                    **extra: Any) -> Template:
        shown = await acting(db, user).run(policies.policy_page)
        return page("policies/operator_policies.html", status_code=status_code, user=user,
                    **_context(shown), **extra)

    @get("/")
    async def show(self, request: Request, db: Database) -> Template:
        return await self._page(db, await operator(request, db))

    @post("/")
    async def save(self, request: Request, db: Database) -> Template:
        user = await operator(request, db)
        form = dict(await request.form())
        changes, errors = await acting(db, user).run(policies.change_policies, form)
        if changes is None:   # nothing is written
            return await self._page(db, user, status_code=400, errors=errors, form=form)
        saved = ("Saved. The new policies apply to points earned, holds opened and returns"
                 " posted from now on." if changes else "Nothing changed.")
        return await self._page(db, user, saved=saved)


class PartnerPolicyPages(Controller):
    path = "/partner/policies"
    include_in_schema = False

    async def _page(self, db: Database, user: User, status_code: int = 200,
                    **extra: Any) -> Template:
        shown = await acting(db, user, scoped=True).run(policies.policy_page)
        return page("policies/partner_policies.html", status_code=status_code, user=user,
                    partner=shown.partner, may_change=can(user, "policies.manage"),
                    **_context(shown), **extra)

    @get("/")
    async def show(self, request: Request, db: Database) -> Template:
        return await self._page(db, await staff(request, db, "policies.view"))

    @post("/")
    async def save(self, request: Request, db: Database) -> Response:
        user = await staff(request, db, "policies.view")
        if not can(user, "policies.manage"):
            raise PageForbidden("Only an owner can change the return window.")
        form = await request.form()
        try:
            await acting(db, user, scoped=True).run(policies.change_return_window,
                                                    form.get("pending_days", ""))
        except DomainError as exc:
            return await self._page(db, user, status_code=exc.status,
                                    errors={exc.field: exc.detail}, form=dict(form))
        return Redirect("/partner/policies")


ROUTES = [OperatorPolicyPages, PartnerPolicyPages]
