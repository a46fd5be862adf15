"""Managing earning rules (create, edit = new version, archive) and serving the active
ones to the posting path from an in-process cache.

Cache. ``active_rules`` is on the hot path of every purchase, so each process keeps the
current versions of the partner's and the coalition's unarchived rules in memory and
filters them by the purchase time. A saved change drops the cache of the saving process
when its transaction commits, and reaches every other process through PostgreSQL
LISTEN/NOTIFY: a trigger on earning_rules (migration 0010) sends ``coalition_rules`` on
a new rule, a new version, an archive or a budget change; ``RulesCache.listen`` clears
the cache on it. LISTEN rather than a short TTL because a partner who saves a rule
and posts a test purchase a second later must see the new rule, and edits are rare
while reads are constant. While no listener is connected (a CLI, a worker that never
called ``listen``, or a lost connection), entries live only ``POLL_SECONDS``, so a
change is seen within that time; with the listener they still expire after
``SAFETY_SECONDS`` in case a notification was ever missed. A lost listener (a database
restart) reconnects by itself with backoff (``coalition.db.Listener``), and the cache is
cleared when it does, since notifications sent meanwhile were lost.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.db import Listener
from coalition.errors import NotFound
from coalition.rules.engine import EventHistory, RuleUsage, RuleVersion, capped_rule_ids
from coalition.rules.models import EarningRule, EarningRuleVersion
from coalition.rules.validation import RuleSpec, bad
from coalition.segments.targets import unknown_segments

log = logging.getLogger(__name__)
RULES_CHANNEL = "coalition_rules"
POLL_SECONDS = 5.0
SAFETY_SECONDS = 300.0

_CURRENT = """
SELECT v.rule_id, v.version, v.partner_id, v.name, v.type, v.params::text AS params,
       v.starts_at, v.ends_at, v.channels, v.tiers, v.segments, v.per_order_cap,
       v.per_member_day_cap, v.per_member_month_cap, v.budget, v.funding, v.priority,
       v.stops_later_rules
  FROM earning_rules r
  JOIN earning_rule_versions v ON v.rule_id = r.id AND v.version = r.current_version
 WHERE r.archived_at IS NULL AND (r.partner_id = $1 OR r.partner_id IS NULL)
"""


def from_record(row: Any, params: dict | None = None) -> RuleVersion:
    """An engine RuleVersion from an earning_rule_versions row (ORM object or record)."""
    get = row.__getitem__ if isinstance(row, asyncpg.Record) else lambda k: getattr(row, k)
    raw = get("params")
    return RuleVersion(
        rule_id=get("rule_id"), version=get("version"), partner_id=get("partner_id"),
        name=get("name"), type=get("type"),
        params=params if params is not None else (json.loads(raw) if isinstance(raw, str)
                                                  else dict(raw)),
        starts_at=get("starts_at"), ends_at=get("ends_at"),
        channels=frozenset(get("channels") or ()), tiers=frozenset(get("tiers") or ()),
        segments=frozenset(get("segments") or ()), per_order_cap=get("per_order_cap"),
        per_member_day_cap=get("per_member_day_cap"),
        per_member_month_cap=get("per_member_month_cap"), budget=get("budget"),
        funding=get("funding"), priority=get("priority"),
        stops_later_rules=get("stops_later_rules"))


@dataclass
class RulesCache:
    _entries: dict[uuid.UUID, tuple[float, tuple[RuleVersion, ...]]] = field(
        default_factory=dict)
    _generation: int = 0
    listener: Listener = field(init=False)

    def __post_init__(self) -> None:
        self.listener = Listener(RULES_CHANNEL, self.forget_all)

    @property
    def listening(self) -> bool:
        return self.listener.connected

    async def listen(self, dsn: str) -> None:
        await self.listener.start(dsn)

    async def close(self) -> None:
        await self.listener.close()

    def forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()

    async def rules(self, conn: asyncpg.Connection, partner_id: uuid.UUID
                    ) -> tuple[RuleVersion, ...]:
        now = time.monotonic()
        entry = self._entries.get(partner_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        generation = self._generation
        loaded = tuple(from_record(r) for r in await conn.fetch(_CURRENT, partner_id))
        # A change that landed while we were reading must not be shadowed by stale rows.
        if generation == self._generation:
            ttl = SAFETY_SECONDS if self.listening else POLL_SECONDS
            self._entries[partner_id] = (now + ttl, loaded)
        return loaded


CACHE = RulesCache()


async def active_rules(conn: asyncpg.Connection, partner_id: uuid.UUID, at: datetime
                       ) -> list[RuleVersion]:
    """The current versions of the partner's and the coalition's unarchived rules whose
    active window contains ``at``. Cached (see the module docstring): one dict look-up
    and a filter over the handful of rules on the hot path."""
    return [r for r in await CACHE.rules(conn, partner_id)
            if (r.starts_at is None or r.starts_at <= at) and (r.ends_at is None
                                                                or at < r.ends_at)]


def _forget_on_commit(session: AsyncSession) -> None:
    event.listen(session.sync_session, "after_commit", lambda _s: CACHE.forget_all(),
                 once=True)


def _version(rule: EarningRule, number: int, spec: RuleSpec, user_id: uuid.UUID | None
             ) -> EarningRuleVersion:
    return EarningRuleVersion(
        rule_id=rule.id, version=number, partner_id=rule.partner_id, name=spec.name,
        type=spec.type, params=spec.params, starts_at=spec.starts_at, ends_at=spec.ends_at,
        channels=list(spec.channels), tiers=list(spec.tiers), segments=list(spec.segments),
        per_order_cap=spec.per_order_cap, per_member_day_cap=spec.per_member_day_cap,
        per_member_month_cap=spec.per_member_month_cap, budget=spec.budget,
        funding=spec.funding, priority=spec.priority,
        stops_later_rules=spec.stops_later_rules, created_by=user_id)


async def create_rule(session: AsyncSession, partner_id: uuid.UUID | None, spec: RuleSpec,
                      user_id: uuid.UUID | None) -> EarningRule:
    """A new rule at version 1. ``partner_id`` None: a coalition-wide rule (operator)."""
    if partner_id is not None and spec.funding == "coalition":
        raise bad("funding", "Only the coalition operator can fund a rule by the coalition.")
    await _check_segments(session, partner_id, spec)
    rule = EarningRule(id=uuid.uuid4(), partner_id=partner_id, name=spec.name,
                       current_version=1, budget=spec.budget)
    session.add(rule)
    await session.flush()
    session.add(_version(rule, 1, spec, user_id))
    await session.flush()
    _forget_on_commit(session)
    return rule


async def _check_segments(session: AsyncSession, partner_id: uuid.UUID | None,
                          spec: RuleSpec) -> None:
    unknown = await unknown_segments(session, partner_id, spec.segments)
    if unknown:
        raise bad("segments", f"{unknown[0]} is not one of your segments.")



async def edit_rule(session: AsyncSession, rule: EarningRule, spec: RuleSpec,
                    user_id: uuid.UUID | None) -> EarningRuleVersion:
    """Saves the spec as version n + 1 and makes it current; older versions stay, so
    postings keep pointing at the version that produced them."""
    if rule.archived_at is not None:
        raise bad("rule", "An archived rule cannot be edited.", status=409)
    if rule.partner_id is not None and spec.funding == "coalition":
        raise bad("funding", "Only the coalition operator can fund a rule by the coalition.")
    current = await session.get_one(EarningRuleVersion, (rule.id, rule.current_version))
    if spec.type != current.type:
        raise bad("type", "A rule keeps its type; create a new rule for another type.")
    if spec.budget is not None and spec.budget < rule.budget_used:
        raise bad("budget", f"The campaign has already awarded {rule.budget_used} points;"
                            " the budget cannot be lower.")
    await _check_segments(session, rule.partner_id, spec)
    version = _version(rule, rule.current_version + 1, spec, user_id)
    session.add(version)
    await session.flush()
    rule.current_version, rule.name, rule.budget = version.version, spec.name, spec.budget
    await session.flush()
    _forget_on_commit(session)
    return version


async def archive_rule(session: AsyncSession, rule: EarningRule, at: datetime) -> None:
    if rule.archived_at is None:
        rule.archived_at = at
        await session.flush()
        _forget_on_commit(session)


async def get_rule(session: AsyncSession, rule_id: uuid.UUID, partner_id: uuid.UUID | None
                   ) -> EarningRule:
    """The rule if ``partner_id`` owns it (None: the operator and a coalition rule)."""
    owner = (EarningRule.partner_id.is_(None) if partner_id is None
             else EarningRule.partner_id == partner_id)
    rule = await session.scalar(select(EarningRule).where(EarningRule.id == rule_id, owner))
    if rule is None:
        raise NotFound("rule-not-found", "No such rule", "No such earning rule.")
    return rule


async def versions(session: AsyncSession, rule: EarningRule) -> list[EarningRuleVersion]:
    return list((await session.scalars(select(EarningRuleVersion).where(
        EarningRuleVersion.rule_id == rule.id).order_by(EarningRuleVersion.version.desc()))
    ).all())


async def listing(session: AsyncSession, partner_id: uuid.UUID | None, *,
                  with_coalition: bool) -> list[tuple[EarningRule, EarningRuleVersion]]:
    """Rules with their current version: the partner's own (and, for the partner console,
    the coalition's, read-only); for the operator (None) the coalition's."""
    owner = (EarningRule.partner_id.is_(None) if partner_id is None
             else EarningRule.partner_id == partner_id)
    if partner_id is not None and with_coalition:
        owner = owner | EarningRule.partner_id.is_(None)
    rows = await session.execute(
        select(EarningRule, EarningRuleVersion).join(EarningRuleVersion, (
            EarningRuleVersion.rule_id == EarningRule.id) & (
            EarningRuleVersion.version == EarningRule.current_version)).where(owner)
        .order_by(EarningRule.archived_at.is_not(None), EarningRuleVersion.priority,
                  EarningRule.partner_id.is_(None), EarningRule.id))
    return [(r, v) for r, v in rows.all()]


@dataclass(frozen=True)
class Performance:
    """What a rule awarded over a period: points net of returns, and how many postings
    and members it awarded them to."""

    points: int = 0
    postings: int = 0
    members: int = 0


_PERFORMANCE = text("""
SELECT rule_id, sum(points) AS points,
       count(DISTINCT entry_id) FILTER (WHERE points > 0) AS postings,
       count(DISTINCT member_id) FILTER (WHERE points > 0) AS members
  FROM rule_hits
 WHERE rule_id = ANY(:rules) AND occurred_at >= :since
   AND (CAST(:partner AS uuid) IS NULL OR partner_id = :partner)
 GROUP BY rule_id
""")


async def performance(session: AsyncSession, rule_ids: list[uuid.UUID], since: datetime,
                      partner_id: uuid.UUID | None) -> dict[uuid.UUID, Performance]:
    """Each rule's awards since `since`, from its hits; a partner (`partner_id`) sees
    only those at its own brand, coalition rules included."""
    rows = await session.execute(_PERFORMANCE, {"rules": rule_ids, "since": since,
                                                "partner": partner_id})
    return {row.rule_id: Performance(int(row.points), row.postings, row.members)
            for row in rows}


# --- what the posting path reads besides the rules -----------------------------------------

async def budget_left(conn: asyncpg.Connection, rules: list[RuleVersion]
                      ) -> dict[uuid.UUID, int]:
    """Points left in each budgeted rule's campaign budget (only those are queried)."""
    ids = [r.rule_id for r in rules if r.budget is not None]
    if not ids:
        return {}
    rows = await conn.fetch("SELECT id, budget - budget_used AS left FROM earning_rules"
                            " WHERE id = ANY($1::uuid[]) AND budget IS NOT NULL", ids)
    return {r["id"]: r["left"] for r in rows}


def _periods(at: datetime, tz: str) -> tuple[datetime, datetime, datetime]:
    local = at.astimezone(ZoneInfo(tz))
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1), day.replace(month=1, day=1)


async def member_usage(conn: asyncpg.Connection, member_id: uuid.UUID,
                       rules: list[RuleVersion], at: datetime, tz: str
                       ) -> dict[uuid.UUID, RuleUsage]:
    """Points each per-member-capped rule already awarded the member today and this
    month (days and months in the coalition timezone ``tz``), from rule_hits."""
    ids = capped_rule_ids(rules)
    if not ids:
        return {}
    day, month, _ = _periods(at, tz)
    rows = await conn.fetch(
        "SELECT rule_id, coalesce(sum(points) FILTER (WHERE occurred_at >= $3), 0) AS day,"
        " sum(points) AS month FROM rule_hits WHERE member_id = $1"
        " AND rule_id = ANY($2::uuid[]) AND occurred_at >= $4 AND occurred_at <= $5"
        " GROUP BY rule_id", member_id, ids, day, month, at)
    return {r["rule_id"]: RuleUsage(day=int(r["day"]), month=int(r["month"])) for r in rows}


async def event_history(conn: asyncpg.Connection, member_id: uuid.UUID, event_type: str,
                        at: datetime, tz: str) -> EventHistory:
    """The member's earlier events of this type that earned points (any partner: event
    frequency limits are per member), counted per period in the coalition timezone."""
    day, month, year = _periods(at, tz)
    row = await conn.fetchrow(
        "SELECT count(*) AS ever, count(*) FILTER (WHERE occurred_at >= $3) AS year,"
        " count(*) FILTER (WHERE occurred_at >= $4) AS month,"
        " count(*) FILTER (WHERE occurred_at >= $5) AS day FROM member_events"
        " WHERE member_id = $1 AND event_type = $2 AND points > 0", member_id, event_type,
        year, month, day)
    return EventHistory(ever=row["ever"], year=row["year"], month=row["month"], day=row["day"])
