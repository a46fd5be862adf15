"""Tiers against the database: re-evaluation (one member after a purchase or return,
everyone in the periodic job), manual assignment, a member's status and history.
All functions take an asyncpg connection and join the caller's transaction."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from coalition.errors import DomainError, NotFound
from coalition.settings import coalition_settings
from coalition.tiers.ladder import (
    Change,
    Policy,
    TierDef,
    TierState,
    decide,
    initial_state,
    progress,
    windows,
)

SYSTEM = "system"


@dataclass(frozen=True)
class TierProgram:
    """The ladder, its policy and the coalition settings a decision needs."""

    ladder: list[TierDef]
    policy: Policy
    timezone: str
    currency: str

    def tier(self, code: str) -> TierDef:
        return next(t for t in self.ladder if t.code == code)


# The ladder and its policy as two JSON columns, for load_program and for callers that
# fold them into a query they run anyway (the purchase path).
PROGRAM_COLUMNS = ("(SELECT row_to_json(s) FROM tier_settings s WHERE id = 1) AS tier_policy,"
                   " (SELECT json_agg(t ORDER BY t.rank) FROM tiers t) AS tier_ladder")
_PROGRAM = f"SELECT {PROGRAM_COLUMNS}"


def program_of(row: asyncpg.Record, timezone: str | None, currency: str | None) -> TierProgram:
    """The program from a row with the PROGRAM_COLUMNS."""
    policy = json.loads(row["tier_policy"]) if row["tier_policy"] else {}
    ladder = [TierDef(t["code"], t["name"], t["rank"], t["threshold"], tuple(t["benefits"]))
              for t in json.loads(row["tier_ladder"] or "[]")]
    return TierProgram(
        ladder=ladder,
        policy=Policy(**{k: policy[k] for k in Policy.__dataclass_fields__ if k in policy}),
        timezone=timezone or "Europe/Warsaw", currency=currency or "PLN")


async def load_program(conn: asyncpg.Connection) -> TierProgram:
    row = await conn.fetchrow(_PROGRAM)
    settings = await coalition_settings(conn)
    return program_of(row, settings.timezone, settings.currency)


# Qualifying value in the window [$2, $5] and in the earlier window [$3, $2) (calendar
# years only). Spend: net of returns, coalition currency only. Points: earned lots minus
# what reversals and returns cancelled from them.
_SPEND = """
SELECT {key} coalesce(sum(total - returned_total) FILTER (WHERE occurred_at >= $2), 0) AS value,
       coalesce(sum(total - returned_total) FILTER (WHERE occurred_at < $2), 0) AS previous
  FROM purchases
 WHERE {member} currency = $4 AND occurred_at >= $3 AND occurred_at <= $5 {group}
"""
_POINTS = """
SELECT {key} coalesce(sum(net) FILTER (WHERE at >= $2), 0) AS value,
       coalesce(sum(net) FILTER (WHERE at < $2), 0) AS previous
  FROM (SELECT e.member_id, e.occurred_at AS at,
               l.points - coalesce((SELECT sum(m.points) FROM lot_movements m
                                     WHERE m.lot_id = l.id AND m.kind = 'cancel'), 0) AS net
          FROM journal_entries e JOIN lots l ON l.entry_id = e.id
         WHERE {member} e.kind = 'earn' AND e.occurred_at >= $3 AND e.occurred_at <= $5
           AND $4::text IS NOT NULL) x
 {group}
"""


def _value_query(program: TierProgram, one: bool) -> str:
    template = _SPEND if program.policy.qualification == "spend" else _POINTS
    prefix = "" if template is _SPEND else "e."
    if one:
        return template.format(key="", member=f"{prefix}member_id = $1 AND", group="")
    query = template.format(key="member_id,", member="", group="GROUP BY member_id")
    return query.replace("$2", "$1").replace("$3", "$2").replace("$4", "$3").replace("$5", "$4")


def _window_args(program: TierProgram, now: datetime) -> tuple[datetime, datetime]:
    start, previous = windows(program.policy, now, program.timezone)
    return start, previous or start


async def qualifying_value(conn: asyncpg.Connection, program: TierProgram,
                           member_id: uuid.UUID, now: datetime) -> tuple[int, int]:
    """(value in the current window, value that keeps a tier from the previous year)."""
    start, earlier = _window_args(program, now)
    row = await conn.fetchrow(_value_query(program, True), member_id, start, earlier,
                              program.currency, now)
    return int(row["value"]), int(row["previous"])


_STATE_COLUMNS = ("tier_code", "since", "earned_code", "earned_since", "review_at",
                  "manual_code", "manual_until", "manual_reason", "manual_by")
# Built once from the constant column names above (no input reaches them).
_COLUMNS = ", ".join(_STATE_COLUMNS)
_SELECT_STATES = f"SELECT member_id, {_COLUMNS} FROM member_tiers"  # noqa: S608
_UPSERT_STATE = (
    f"INSERT INTO member_tiers (member_id, {_COLUMNS})"  # noqa: S608
    f" VALUES ($1, {', '.join(f'${i + 2}' for i in range(len(_STATE_COLUMNS)))})"
    " ON CONFLICT (member_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _STATE_COLUMNS))


async def _state(conn: asyncpg.Connection, member_id: uuid.UUID) -> TierState | None:
    row = await conn.fetchrow(_SELECT_STATES + " WHERE member_id = $1", member_id)
    return TierState(**{c: row[c] for c in _STATE_COLUMNS}) if row else None


async def _store(conn: asyncpg.Connection, member_id: uuid.UUID, state: TierState) -> None:
    await conn.execute(_UPSERT_STATE, member_id, *(getattr(state, c) for c in _STATE_COLUMNS))


async def _record(conn: asyncpg.Connection, member_id: uuid.UUID, change: Change, actor: str,
                  now: datetime, note: str | None = None) -> None:
    await conn.execute(
        "INSERT INTO tier_history (member_id, from_code, to_code, reason, value, note, actor,"
        " occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", member_id, change.from_code,
        change.to_code, change.reason, change.value, note, actor, now)


def lock_sql(member_column: str) -> str:
    """The expression that takes the member's tier lock, for a caller that folds it into
    a query it runs anyway; `member_column` must be a column reference, never input."""
    return f"pg_advisory_xact_lock(hashtextextended({member_column}::text, {_LOCK_SPACE}))"


# One decision per member at a time (a purchase and the job, two purchases): the lock
# lasts until the caller's transaction ends.
_LOCK_SPACE = 7401


async def _lock(conn: asyncpg.Connection, member_id: uuid.UUID) -> None:
    await conn.execute(f"SELECT {lock_sql('$1')}", str(member_id))


async def _reevaluate(conn: asyncpg.Connection, program: TierProgram, member_id: uuid.UUID,
                      now: datetime, actor: str = SYSTEM) -> Change | None:
    await _lock(conn, member_id)
    return await reevaluate_locked(conn, program, member_id, now, actor)


async def reevaluate_locked(conn: asyncpg.Connection, program: TierProgram,
                            member_id: uuid.UUID, now: datetime, actor: str = SYSTEM
                            ) -> Change | None:
    """Re-evaluate under the member's tier lock, which the caller already holds (see
    `lock_sql`) inside its transaction: the state and the qualifying value come in one
    query, and only a change is written."""
    start, earlier = _window_args(program, now)
    row = await conn.fetchrow(
        f"SELECT v.value, v.previous, {', '.join('t.' + c for c in _STATE_COLUMNS)},"  # noqa: S608
        f" t.member_id IS NOT NULL AS stored FROM ({_value_query(program, True)}) v"
        " LEFT JOIN member_tiers t ON t.member_id = $1",
        member_id, start, earlier, program.currency, now)
    state = TierState(**{c: row[c] for c in _STATE_COLUMNS}) if row["stored"] else None
    new, change = decide(program.ladder, program.policy, state, int(row["value"]),
                         int(row["previous"]), now)
    if new is not None:
        await _store(conn, member_id, new)
    if change is not None:
        await _record(conn, member_id, change, actor, now)
    return change


def facts_join(member_column: str, window: str) -> str:
    """LEFT JOINs giving, for the member in `member_column`, the program (tier_policy,
    tier_ladder), the stored state (state_* columns, state_stored) and the qualifying
    value (value, previous), for the purchase fast path to read along with the member's
    other facts. `window` is the rest of tier_qualifying_value's arguments (a
    `QualifyingWindow`), as the caller's statement passes them
    (coalition/earning/statements.py). Constant text."""
    state = ", ".join(f"t.{c} AS state_{c}" for c in _STATE_COLUMNS)
    return (f" LEFT JOIN LATERAL (SELECT {PROGRAM_COLUMNS}) tp ON true"  # noqa: S608
            f" LEFT JOIN LATERAL (SELECT {state}, true AS state_stored FROM member_tiers t"
            f" WHERE t.member_id = {member_column}) ts ON true"
            f" LEFT JOIN LATERAL tier_qualifying_value({member_column}, {window}) tv ON true")


@dataclass(frozen=True)
class QualifyingWindow:
    """What SQL tier_qualifying_value needs besides the member: the basis (spend or
    points), the current window's start, the earlier window's start, the currency spend
    counts in, and now."""

    basis: str
    start: datetime
    earlier: datetime
    currency: str
    now: datetime


def qualifying_window(program: TierProgram, now: datetime) -> QualifyingWindow:
    start, earlier = _window_args(program, now)
    return QualifyingWindow(program.policy.qualification, start, earlier, program.currency,
                            now)


def predict(program: TierProgram, row: asyncpg.Record, gained: int, now: datetime
            ) -> dict[str, Any]:
    """The tier decision after a purchase that adds `gained` to the qualifying value,
    from a row read with `facts_join`, as purchase_commit checks and applies it: the
    facts assumed (state, value, previous) and what to write (new_state, change)."""
    state = (TierState(**{c: row[f"state_{c}"] for c in _STATE_COLUMNS})
             if row["state_stored"] else None)
    value, previous = int(row["value"]) + gained, int(row["previous"])
    new, change = decide(program.ladder, program.policy, state, value, previous, now)
    window = qualifying_window(program, now)
    return {"basis": window.basis, "start": window.start, "earlier": window.earlier,
            "currency": window.currency, "now": now, "value": value, "previous": previous,
            "state": _row(state),
            "new_state": _row(new), "change": _row(change)}


def _row(value: TierState | Change | None) -> dict[str, Any] | None:
    # dataclasses.asdict deep-copies every field: too slow for the purchase hot path.
    return None if value is None else dict(vars(value))


async def reevaluate_member(conn: asyncpg.Connection, member_id: uuid.UUID, now: datetime
                            ) -> Change | None:
    """Re-evaluate one member's tier (call right after a purchase or return posts, in
    the same transaction). Returns the change of the effective tier, or None.
    Idempotent: a second call with the same `now` changes nothing."""
    program = await load_program(conn)
    if not program.ladder:
        return None
    async with conn.transaction():
        return await _reevaluate(conn, program, member_id, now)


async def reevaluate_all(conn: asyncpg.Connection, now: datetime) -> int:
    """The periodic job: re-evaluate every member who has a tier row or a qualifying
    value; returns how many effective tiers changed. One grouped query finds who needs
    a write; those members are then decided again under their lock. Idempotent."""
    program = await load_program(conn)
    if not program.ladder:
        return 0
    start, earlier = _window_args(program, now)
    values = {r["member_id"]: (int(r["value"]), int(r["previous"])) for r in await conn.fetch(
        _value_query(program, False), start, earlier, program.currency, now)}
    states = {r["member_id"]: TierState(**{c: r[c] for c in _STATE_COLUMNS})
              for r in await conn.fetch(_SELECT_STATES)}
    changed = 0
    for member_id in values.keys() | states.keys():
        value, keep = values.get(member_id, (0, 0))
        new, _ = decide(program.ladder, program.policy, states.get(member_id), value, keep, now)
        if new is None:
            continue
        async with conn.transaction():
            if await _reevaluate(conn, program, member_id, now) is not None:
                changed += 1
    return changed


async def assign_manual(conn: asyncpg.Connection, member_id: uuid.UUID, tier_code: str,
                        until: datetime, reason: str, actor: str, now: datetime
                        ) -> Change | None:
    """Guarantee `tier_code` to the member until `until` (the effective tier is the higher
    of this and the earned tier). Recorded in the history with the reason and actor."""
    program = await load_program(conn)
    if tier_code not in {t.code for t in program.ladder}:
        raise DomainError("validation-error", "Unknown tier", f"There is no tier {tier_code!r}.",
                          status=400, field="tier")
    if until <= now:
        raise DomainError("validation-error", "End date in the past",
                          "The manual assignment must end in the future.", status=400,
                          field="until")
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise DomainError("validation-error", "Reason needed",
                          "Say why the tier is assigned (at least 3 characters).", status=400,
                          field="reason")
    async with conn.transaction():
        await _reevaluate(conn, program, member_id, now)   # settle the earned tier first
        state = await _state(conn, member_id) or initial_state(program.ladder)
        if program.tier(tier_code).rank <= program.tier(state.earned_code).rank:
            raise DomainError("tier-already-held", "Tier already held",
                              f"The member has earned {program.tier(state.earned_code).name};"
                              " a manual assignment can only lift a member above it.",
                              status=409, field="tier")
        effective = tier_code
        new = TierState(tier_code=effective,
                        since=state.since if effective == state.tier_code else now,
                        earned_code=state.earned_code, earned_since=state.earned_since,
                        review_at=state.review_at, manual_code=tier_code, manual_until=until,
                        manual_reason=reason[:500], manual_by=actor)
        await _store(conn, member_id, new)
        change = Change(state.tier_code, effective, "manual", None)
        await _record(conn, member_id, change, actor, now,
                      f"until {until.isoformat()}: {reason[:500]}")
        return change if effective != state.tier_code else None


async def end_manual(conn: asyncpg.Connection, member_id: uuid.UUID, actor: str,
                     now: datetime) -> Change | None:
    """End a manual assignment now; the earned tier applies again."""
    async with conn.transaction():
        await _lock(conn, member_id)
        if await conn.execute("UPDATE member_tiers SET manual_until = $2 WHERE member_id = $1"
                              " AND manual_until > $2", member_id, now) == "UPDATE 0":
            return None
        return await _reevaluate(conn, await load_program(conn), member_id, now, actor)


@dataclass(frozen=True)
class TierStatus:
    member_id: uuid.UUID
    tier: TierDef
    since: datetime | None
    manual_until: datetime | None      # set while a manual assignment gives the tier
    manual_reason: str | None
    review_at: datetime | None         # the anniversary, under the anniversary policy
    basis: str
    window_kind: str
    window_months: int
    window_start: datetime
    window_end: datetime
    value: int
    currency: str | None               # for spend: minor units of this currency
    next_tier: TierDef | None
    remaining: int


async def member_status(conn: asyncpg.Connection, member_id: uuid.UUID, now: datetime
                        ) -> TierStatus | None:
    """What the member's tier is and how far the next one is (None: no ladder)."""
    program = await load_program(conn)
    if not program.ladder:
        return None
    joined = await conn.fetchval("SELECT created_at FROM members WHERE id = $1", member_id)
    if joined is None:
        raise NotFound("member-not-found", "Member not found", "No such member.",
                       field="member_id")
    state = await _state(conn, member_id) or initial_state(program.ladder)
    value, _ = await qualifying_value(conn, program, member_id, now)
    manual = state.manual_code is not None and state.manual_until is not None \
        and state.manual_until > now and state.tier_code == state.manual_code
    code = state.tier_code
    if state.manual_until is not None and state.manual_until <= now:
        code = state.earned_code      # lapsed; the job will record it
    nxt, remaining = progress(program.ladder, code, value)
    start, _ = windows(program.policy, now, program.timezone)
    review = state.review_at if (program.policy.downgrade == "anniversary"
                                 and program.tier(state.earned_code).rank > 0) else None
    return TierStatus(
        member_id=member_id, tier=program.tier(code), since=state.since or joined,
        manual_until=state.manual_until if manual else None,
        manual_reason=state.manual_reason if manual else None, review_at=review,
        basis=program.policy.qualification, window_kind=program.policy.window_kind,
        window_months=program.policy.window_months, window_start=start, window_end=now,
        value=value,
        currency=program.currency if program.policy.qualification == "spend" else None,
        next_tier=nxt, remaining=remaining)


async def history(conn: asyncpg.Connection, member_id: uuid.UUID, limit: int = 50
                  ) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT h.occurred_at, h.from_code, h.to_code, f.name AS from_name, t.name AS to_name,"
        " h.reason, h.value, h.note, h.actor FROM tier_history h"
        " LEFT JOIN tiers f ON f.code = h.from_code LEFT JOIN tiers t ON t.code = h.to_code"
        " WHERE h.member_id = $1 ORDER BY h.id DESC LIMIT $2", member_id, limit)
