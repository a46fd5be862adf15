"""Which affiliate, if any, a conversion (a purchase or a member's sign-up) belongs to.

A conversion names its affiliate by a click id (the UUID `/r/{code}` put on the landing
URL and in the `coalition_click` cookie) or an affiliate code (an enrollment's tracking
code); without either, the member's stored attribution (affiliate_attributions, one per
member and program) decides. Only an approved enrollment in an active program of the
partner where the conversion happens attributes, and only inside the program's
attribution window: click time -> conversion time, `attribution_window_days` of the
terms in force at the conversion. A code counts as a click at the conversion itself.

Click models, per program:
* last_click (the default): the newest click within the window replaces the stored
  attribution;
* first_click: the stored attribution wins while it is within its window; a new click
  takes over only once it has lapsed (or its enrollment is no longer approved).

Recurring commissions: once a member's first attributed purchase happened
(`first_conversion_at`), terms with `recurring_months` keep the stored attribution
valid for purchases until that many months after it, whatever the click window says.

Without a click id or code, a member attributed in several programs of the partner is
attributed to the one with the newest click: one commission per purchase.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

# A click reported up to this long after the conversion's clock is the same moment
# (client and server clocks differ a little).
CLOCK_SKEW = timedelta(minutes=5)

Flush = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Touch:
    """What the conversion itself says about the affiliate (both may be None)."""

    click_id: uuid.UUID | None = None
    code: str | None = None

    def __bool__(self) -> bool:
        return self.click_id is not None or self.code is not None


@dataclass
class Attributed:
    """The enrollment a conversion is attributed to, the terms in force, and why."""

    program_id: uuid.UUID
    partner_id: uuid.UUID
    enrollment_id: uuid.UUID
    affiliate_id: uuid.UUID
    currency: str
    terms: dict[str, Any]
    source: str                      # 'click' or 'code'
    click_id: uuid.UUID | None
    clicked_at: datetime
    sub_id: str | None
    first_conversion_at: datetime | None
    explanation: dict[str, Any] = field(default_factory=dict)


_TERMS = """
SELECT * FROM affiliate_program_terms
 WHERE program_id = $1 AND effective_from <= $2 ORDER BY version DESC LIMIT 1
"""

# Each query reads the enrollment and whether it can attribute: approved, in an
# active program.
_CLICK = """
SELECT c.click_id, c.clicked_at, c.sub_id,
       e.id AS enrollment_id, e.program_id, e.partner_id, e.affiliate_id, e.code,
       e.status = 'approved' AND p.status = 'active' AS eligible, p.currency
  FROM affiliate_clicks c JOIN affiliate_enrollments e ON e.id = c.enrollment_id
  JOIN affiliate_programs p ON p.id = e.program_id
 WHERE c.click_id = $1
"""

_CODE = """
SELECT e.id AS enrollment_id, e.program_id, e.partner_id, e.affiliate_id, e.code,
       e.status = 'approved' AND p.status = 'active' AS eligible, p.currency
  FROM affiliate_enrollments e JOIN affiliate_programs p ON p.id = e.program_id
 WHERE e.code = $1
"""

# The member's stored attributions at the partner, with the click's sub-id.
_STORED = """
SELECT a.click_id, a.clicked_at, a.source, a.first_conversion_at,
       (SELECT c.sub_id FROM affiliate_clicks c WHERE c.click_id = a.click_id) AS sub_id,
       e.id AS enrollment_id, e.program_id, e.partner_id, e.affiliate_id, e.code,
       e.status = 'approved' AND p.status = 'active' AS eligible, p.currency
  FROM affiliate_attributions a JOIN affiliate_enrollments e ON e.id = a.enrollment_id
  JOIN affiliate_programs p ON p.id = a.program_id
 WHERE a.member_id = $1 AND a.partner_id = $2
 ORDER BY a.clicked_at DESC
"""

_STORE = """
INSERT INTO affiliate_attributions AS a (member_id, program_id, partner_id, enrollment_id,
                                         click_id, source, clicked_at, attributed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (member_id, program_id) DO UPDATE SET
    enrollment_id = excluded.enrollment_id, click_id = excluded.click_id,
    source = excluded.source, clicked_at = excluded.clicked_at,
    attributed_at = excluded.attributed_at,
    -- a new affiliate starts its own "first purchase"
    first_conversion_at = CASE WHEN a.enrollment_id = excluded.enrollment_id
                               THEN a.first_conversion_at END
RETURNING first_conversion_at
"""


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` later (the month's last day when it is shorter)."""
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    days = [31, 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28,
            31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    return moment.replace(year=year, month=month, day=min(moment.day, days))


def from_json(value: Any) -> Any:
    """A jsonb value as Python: plain asyncpg gives text, a SQLAlchemy session's
    connection (which registers a codec) gives it decoded."""
    return json.loads(value) if isinstance(value, str) else value


async def terms_in_force(conn: asyncpg.Connection, program_id: uuid.UUID,
                         at: datetime) -> dict[str, Any] | None:
    row = await conn.fetchrow(_TERMS, program_id, at)
    if row is None:
        return None
    return {**dict(row), "tiers": from_json(row["tiers"]),
            "category_rates": from_json(row["category_rates"]) or {}}


def _window(terms: dict[str, Any]) -> timedelta:
    return timedelta(days=terms["attribution_window_days"])


def _in_window(terms: dict[str, Any], clicked_at: datetime, at: datetime) -> bool:
    return clicked_at - CLOCK_SKEW <= at and at - clicked_at <= _window(terms)


def _recurring_until(terms: dict[str, Any], first: datetime | None) -> datetime | None:
    if first is None or terms["recurring_months"] is None:
        return None
    return add_months(first, terms["recurring_months"])


async def _touched(conn: asyncpg.Connection, touch: Touch, at: datetime,
                   flush: Flush | None) -> tuple[dict[str, Any] | None, str]:
    """The enrollment row the click id or code names (with click time and sub-id), or
    None and why not."""
    if touch.click_id is not None:
        row = await conn.fetchrow(_CLICK, touch.click_id)
        if row is None and flush is not None:
            await flush()   # the recorder may still hold the click in its buffer
            row = await conn.fetchrow(_CLICK, touch.click_id)
        if row is not None:
            return {**dict(row), "source": "click"}, ""
        if touch.code is None:
            return None, f"click {touch.click_id} is unknown"
    row = await conn.fetchrow(_CODE, touch.code)
    if row is None:
        return None, f"affiliate code {touch.code!r} is unknown"
    return {**dict(row), "source": "code", "click_id": None, "clicked_at": at,
            "sub_id": None}, ""


def _result(row: dict[str, Any], terms: dict[str, Any], first: datetime | None,
            why: str, at: datetime) -> Attributed:
    model = terms["click_model"]
    explanation = {
        "source": row["source"],
        "click": {"id": str(row["click_id"]) if row["click_id"] else None,
                  "at": row["clicked_at"].isoformat(), "sub_id": row["sub_id"]},
        "code": row["code"], "click_model": model,
        "window_days": terms["attribution_window_days"],
        "seconds_after_click": int((at - row["clicked_at"]).total_seconds()),
        "why": why, "terms_version": terms["version"], "terms_id": terms["id"],
    }
    return Attributed(row["program_id"], row["partner_id"], row["enrollment_id"],
                      row["affiliate_id"], row["currency"], terms, row["source"],
                      row["click_id"], row["clicked_at"], row["sub_id"], first,
                      explanation)


async def attribute(conn: asyncpg.Connection, *, partner_id: uuid.UUID,
                    member_id: uuid.UUID, at: datetime, touch: Touch | None,
                    flush: Flush | None = None, store: bool = True
                    ) -> tuple[Attributed | None, str]:
    """The attribution of a conversion at `at` by `member_id` at `partner_id`, or None
    and the reason. A click or code that wins is stored as the member's attribution
    (`store`), so later purchases without one are attributed too."""
    stored = [dict(r) for r in await conn.fetch(_STORED, member_id, partner_id)]
    why_not = "the member has no attribution at this partner"
    if touch:
        new, why_not = await _touched(conn, touch, at, flush)
        if new is not None:
            chosen, why_not = await _with_touch(conn, new, stored, partner_id, member_id,
                                                at, store)
            if chosen is not None:
                return chosen, ""
    for row in stored:   # newest click first
        if not row["eligible"]:
            why_not = "the stored attribution's enrollment or program is not active"
            continue
        terms = await terms_in_force(conn, row["program_id"], at)
        if terms is None:
            continue
        until = _recurring_until(terms, row["first_conversion_at"])
        if _in_window(terms, row["clicked_at"], at):
            why = "stored attribution (no click id or code given), within the window"
        elif until is not None and at < until:
            why = (f"stored attribution: recurring for {terms['recurring_months']} months"
                   f" after the first attributed purchase ({row['first_conversion_at']:%Y-%m-%d})")
        else:
            why_not = "the stored attribution's window has passed"
            continue
        return _result(row, terms, row["first_conversion_at"], why, at), ""
    return None, why_not


async def _with_touch(conn: asyncpg.Connection, new: dict[str, Any],
                      stored: list[dict[str, Any]], partner_id: uuid.UUID,
                      member_id: uuid.UUID, at: datetime, store: bool
                      ) -> tuple[Attributed | None, str]:
    if new["partner_id"] != partner_id:
        return None, "the click or code belongs to another partner's program"
    if not new["eligible"]:
        return None, "the enrollment is not approved or the program is not active"
    terms = await terms_in_force(conn, new["program_id"], at)
    if terms is None:
        return None, "the program has no terms in force"
    if not _in_window(terms, new["clicked_at"], at):
        return None, (f"the click is outside the {terms['attribution_window_days']}-day"
                      " attribution window")
    current = next((r for r in stored if r["program_id"] == new["program_id"]), None)
    if current is not None and current["eligible"]:
        keeps = _in_window(terms, current["clicked_at"], at) or (
            (until := _recurring_until(terms, current["first_conversion_at"])) is not None
            and at < until)
        same = current["click_id"] == new["click_id"] and new["click_id"] is not None
        if same or (keeps and (terms["click_model"] == "first_click"
                               or current["clicked_at"] >= new["clicked_at"])):
            why = ("the click given is the stored attribution" if same else
                   "first click: the stored attribution is within its window and wins"
                   if terms["click_model"] == "first_click" else
                   "last click: the stored click is newer than the one given")
            return _result(current, terms, current["first_conversion_at"], why, at), ""
        why = ("last click: the newest click within the window replaces the stored"
               " attribution" if keeps else
               "the stored attribution had lapsed; the new click replaces it")
    else:
        why = f"{new['source']} given with the conversion, within the window"
    first = None
    if store:
        first = await conn.fetchval(_STORE, member_id, new["program_id"], partner_id,
                                    new["enrollment_id"], new["click_id"], new["source"],
                                    new["clicked_at"], at)
    return _result(new, terms, first, why, at), ""


async def mark_first_conversion(conn: asyncpg.Connection, member_id: uuid.UUID,
                                program_id: uuid.UUID, at: datetime) -> None:
    await conn.execute("UPDATE affiliate_attributions SET first_conversion_at = $3"
                       " WHERE member_id = $1 AND program_id = $2"
                       " AND first_conversion_at IS NULL", member_id, program_id, at)
