"""The operator's tier pages: the ladder and its policy (edited with validation), manual
assignment of a member's tier by card number or email with an end date, and a
re-evaluation of everyone. Spend thresholds are typed in the coalition currency (e.g.
1000 or 1000.50 PLN) and stored exactly in minor units."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from litestar import Controller, Request, Response, get, post
from litestar.response import Redirect, Template

from coalition.errors import DomainError
from coalition.tiers import console, queries
from coalition.tiers.admin import TierInput
from coalition.tiers.ladder import Policy
from coalition.uow import Database
from tenants.models import User
from web.portal.common import acting, operator, page


def parse_threshold(text: str, spend: bool, field: str) -> int:
    """A threshold as typed: money with at most two decimals (to minor units) or whole
    points. Exact: no float ever touches it."""
    cleaned = re.sub(r"[\s_]", "", text or "").replace(",", ".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        value = Decimal(-1)
    scaled = value * 100 if spend else value
    if value < 0 or scaled != scaled.to_integral_value():
        unit = "an amount with at most two decimals" if spend else "whole points"
        raise DomainError("validation-error", "Invalid threshold", f"Enter {unit}.",
                          status=400, field=field)
    return int(scaled)


def money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def _row_field(field: str | None, rows: list[int]) -> str | None:
    """The form's field for a ladder error: tiers[k].code is the k-th filled row's code
    input (code_i; rows left without a code are dropped)."""
    match = re.fullmatch(r"tiers\[(\d+)\]\.(\w+)", field or "")
    if match is None or int(match.group(1)) >= len(rows):
        return field
    return f"{match.group(2)}_{rows[int(match.group(1))]}"


class OperatorTierPages(Controller):
    path = "/operator/tiers"
    include_in_schema = False

    async def _page(self, db: Database, user: User, status_code: int = 200, **extra
                    ) -> Template:
        shown = await acting(db, user).run(queries.tier_page)
        spend = shown.program.policy.qualification == "spend"
        return page("tiers/operator_tiers.html", status_code=status_code, user=user,
                    program=shown.program, spend=spend, held=shown.held, manual=shown.manual,
                    unlocks=shown.unlocks, threshold=lambda t: money(t) if spend else str(t),
                    **extra)

    @get("/")
    async def index(self, request: Request, db: Database) -> Template:
        return await self._page(db, await operator(request, db))

    @post("/")
    async def save(self, request: Request, db: Database) -> Response:
        user = await operator(request, db)
        form = await request.form()
        spend = form.get("qualification") == "spend"
        rows = [i for i in range(12) if form.get(f"code_{i}", "").strip()]
        try:
            tiers = [TierInput(code=form.get(f"code_{i}", "").strip(),
                               name=form.get(f"name_{i}", "").strip(),
                               threshold=parse_threshold(form.get(f"threshold_{i}", ""), spend,
                                                         f"threshold_{i}"),
                               benefits=(form.get(f"benefits_{i}") or "").splitlines())
                     for i in rows]
            months = form.get("window_months", "")
            policy = Policy(qualification=form.get("qualification", ""),
                            window_kind=form.get("window_kind", ""),
                            window_months=int(months) if months.isdigit() else 0,
                            downgrade=form.get("downgrade", ""))
            changed = await acting(db, user).run(console.save_ladder, tiers, policy)
        except DomainError as exc:
            return await self._page(db, user, exc.status, error=exc.detail,
                                    error_field=_row_field(exc.field, rows))
        return await self._page(db, user, saved=f"Saved; {changed} members changed tier.")

    @post("/assign")
    async def assign(self, request: Request, db: Database) -> Response:
        user = await operator(request, db)
        form = await request.form()
        try:
            await acting(db, user).run(console.assign_tier, form.get("member", ""),
                                       form.get("tier", ""), form.get("until", ""),
                                       form.get("reason", ""))
        except DomainError as exc:
            return await self._page(db, user, exc.status, error=exc.detail,
                                    error_field=exc.field)
        return Redirect("/operator/tiers")

    @post("/end")
    async def end(self, request: Request, db: Database) -> Response:
        user = await operator(request, db)
        form = await request.form()
        try:
            await acting(db, user).run(console.end_tier, form.get("member", ""))
        except DomainError as exc:
            return await self._page(db, user, exc.status, error=exc.detail,
                                    error_field=exc.field)
        return Redirect("/operator/tiers")

    @post("/reevaluate")
    async def reevaluate(self, request: Request, db: Database) -> Template:
        user = await operator(request, db)
        changed = await acting(db, user).run(console.reevaluate_everyone)
        return await self._page(db, user, saved=f"Re-evaluated; {changed} members changed"
                                " tier.")


ROUTES = [OperatorTierPages]
