"""The operator's tier pages: the ladder and its policy (edited with validation), manual
assignment of a member's tier by card number or email with an end date, and a
re-evaluation of everyone. Spend thresholds are typed in the coalition currency (e.g.
1000 or 1000.50 PLN) and stored exactly in minor units."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.errors import DomainError
from coalition.tiers import assign_manual, end_manual, load_program, reevaluate_all
from coalition.tiers.admin import TierInput, save_program
from coalition.tiers.ladder import Policy
from tenants import accounts
from tenants.models import User
from web.portal.common import operator, page

Session = NamedDependency[AsyncSession]


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


async def _member_by(conn, who: str):
    who = (who or "").strip()
    return await conn.fetchrow("SELECT id, name, email, card_number FROM members"
                               " WHERE card_number = $1 OR lower(email) = lower($1)", who)


# What each tier code actually unlocks: the earning rules (current versions, not archived)
# that target it, such as the VIP multiplier, and the active rewards gated to it. The
# ladder's benefits are words for members; these are the mechanics behind them.
_UNLOCKS = """
SELECT t AS tier, 'rule' AS kind, v.name, coalesce(p.name, 'Coalition') AS owner
  FROM earning_rules r
  JOIN earning_rule_versions v ON v.rule_id = r.id AND v.version = r.current_version
  LEFT JOIN partners p ON p.id = r.partner_id, unnest(v.tiers) AS t
 WHERE r.archived_at IS NULL
UNION ALL
SELECT t, 'reward', w.name, p.name
  FROM rewards w JOIN partners p ON p.id = w.partner_id, unnest(w.tiers) AS t
 WHERE w.active
 ORDER BY 1, 2, 4, 3
"""


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


    async def _page(self, state: State, user: User, status_code: int = 200, **extra
                    ) -> Template:
        async with state.pool.acquire() as conn:
            program = await load_program(conn)
            counts = dict(await conn.fetch(
                "SELECT tier_code, count(*) FROM member_tiers GROUP BY tier_code"))
            members = await conn.fetchval("SELECT count(*) FROM members")
            unlocks = await conn.fetch(_UNLOCKS)
            manual = await conn.fetch(
                "SELECT m.name, m.email, m.card_number, t.manual_code, t.manual_until,"
                " t.manual_reason, t.manual_by FROM member_tiers t JOIN members m"
                " ON m.id = t.member_id WHERE t.manual_until > now() ORDER BY t.manual_until")
        spend = program.policy.qualification == "spend"
        base = program.ladder[0].code if program.ladder else None
        held = {t.code: counts.get(t.code, 0) for t in program.ladder}
        if base:
            held[base] = members - sum(v for k, v in counts.items() if k != base)
        by_tier: dict[str, list[Any]] = {}
        for row in unlocks:
            by_tier.setdefault(row["tier"], []).append(row)
        return page("operator_tiers.html", status_code=status_code, user=user,
                    program=program, spend=spend, held=held, manual=manual, unlocks=by_tier,
                    threshold=lambda t: money(t) if spend else str(t), **extra)

    @get("/")
    async def index(self, request: Request, db_session: Session, state: State) -> Template:
        return await self._page(state, await operator(request, db_session))

    @post("/")
    async def save(self, request: Request, db_session: Session, state: State) -> Response:
        user = await operator(request, db_session)
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
            async with state.pool.acquire() as conn:
                changed = await save_program(conn, tiers, policy, user.email,
                                             clock.now())
        except DomainError as exc:
            return await self._page(state, user, exc.status, error=exc.detail,
                                    error_field=_row_field(exc.field, rows))
        await accounts.audit(db_session, user, "tiers.save", changed=changed,
                             tiers=[t.code for t in tiers])
        await db_session.commit()
        return await self._page(state, user, saved=f"Saved; {changed} members changed tier.")

    @post("/assign")
    async def assign(self, request: Request, db_session: Session, state: State) -> Response:
        user = await operator(request, db_session)
        form = await request.form()
        now = clock.now()
        try:
            async with state.pool.acquire() as conn:
                member = await _member_by(conn, form.get("member", ""))
                if member is None:
                    raise DomainError("not-found", "No such member", "No member has this card"
                                      " number or email.", status=404, field="member")
                until = await self._end_of(conn, form.get("until", ""))
                await assign_manual(conn, member["id"], form.get("tier", ""), until,
                                    form.get("reason", ""), user.email, now)
        except DomainError as exc:
            return await self._page(state, user, exc.status, error=exc.detail,
                                    error_field=exc.field)
        await accounts.audit(db_session, user, "tiers.assign", target=member["card_number"],
                             tier=form.get("tier"), until=until.isoformat())
        await db_session.commit()
        return Redirect("/operator/tiers")

    @staticmethod
    async def _end_of(conn, text: str) -> datetime:
        """The end of the given day (inclusive) in the coalition's time zone."""
        try:
            day = datetime.strptime(text.strip(), "%Y-%m-%d").date()
        except ValueError:
            raise DomainError("validation-error", "Invalid date", "Give the last day as"
                              " YYYY-MM-DD.", status=400, field="until") from None
        zone = await conn.fetchval("SELECT timezone FROM coalition_settings WHERE id = 1")
        return datetime.combine(day + timedelta(days=1), time(), ZoneInfo(zone))

    @post("/end")
    async def end(self, request: Request, db_session: Session, state: State) -> Response:
        user = await operator(request, db_session)
        form = await request.form()
        async with state.pool.acquire() as conn:
            member = await _member_by(conn, form.get("member", ""))
            if member is not None:
                await end_manual(conn, member["id"], user.email, clock.now())
        if member is None:
            return await self._page(state, user, 404, error="No member has this card number"
                                    " or email.", error_field="member")
        await accounts.audit(db_session, user, "tiers.end_manual", target=member["card_number"])
        await db_session.commit()
        return Redirect("/operator/tiers")

    @post("/reevaluate")
    async def reevaluate(self, request: Request, db_session: Session, state: State
                         ) -> Template:
        user = await operator(request, db_session)
        async with state.pool.acquire() as conn:
            changed = await reevaluate_all(conn, clock.now())
        return await self._page(state, user, saved=f"Re-evaluated; {changed} members changed"
                                " tier.")
