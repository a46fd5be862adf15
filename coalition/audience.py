"""Who a member is for targeting: tier code, segment ids and birth month, read in one
indexed query (used on the purchase hot path by earning rules and by reward gating).

The tier is the stored effective tier (member_tiers, kept current by
coalition.tiers.reevaluate_member and the periodic job); a manual assignment whose end
date has passed already counts as lapsed here, before the job records it. A member
without a tier row holds the lowest tier of the ladder; with no ladder, tier is None.
Segments are the materialised segment_members rows (refreshed on save and by the job),
never recomputed here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from coalition import clock


@dataclass(frozen=True)
class MemberContext:
    member_id: uuid.UUID
    tier: str | None                 # tier code, e.g. "standard", "vip"; None = no tier
    segments: frozenset[uuid.UUID]   # ids of segments the member currently belongs to
    birth_month: int | None = None


# The context's columns for the member `m` (joined with its member_tiers row `t`). Whether
# a manual tier has lapsed is decided in Python (`_tier`), by the platform's clock.
_COLUMNS = """
t.tier_code AS ctx_tier_code, t.manual_until AS ctx_manual_until,
t.earned_code AS ctx_earned_code,
(SELECT code FROM tiers ORDER BY rank LIMIT 1) AS ctx_lowest_tier,
array(SELECT s.segment_id FROM segment_members s WHERE s.member_id = m.id) AS segments,
extract(month FROM m.birth_date)::int AS birth_month
"""
_QUERY = f"""
SELECT m.id, {_COLUMNS}
  FROM members m LEFT JOIN member_tiers t ON t.member_id = m.id
 WHERE m.id = ANY($1::uuid[])
"""  # noqa: S608 (constant text)


def context_join(member_column: str) -> str:
    """A LEFT JOIN LATERAL giving the context of the member in `member_column` as
    columns tier, segments and birth_month, for a caller to fold into a query it runs
    anyway (the purchase path reads it with the posting's first step, saving a round
    trip). `member_column` must be a column reference, never input."""
    return (f" LEFT JOIN LATERAL (SELECT {_COLUMNS} FROM members m"  # noqa: S608
            f" LEFT JOIN member_tiers t ON t.member_id = m.id WHERE m.id = {member_column})"
            " ctx ON true")


def _tier(row: asyncpg.Record) -> str | None:
    """The member's tier now: the earned one once a manual tier has lapsed, else the
    stored one, else the ladder's lowest."""
    if row["ctx_manual_until"] is not None and row["ctx_manual_until"] <= clock.now():
        return row["ctx_earned_code"]
    return row["ctx_tier_code"] or row["ctx_lowest_tier"]


def context_of(row: asyncpg.Record, member_id: uuid.UUID) -> MemberContext:
    """The context from a row produced with `context_join`."""
    return MemberContext(member_id, _tier(row), frozenset(row["segments"] or ()),
                         row["birth_month"])


async def member_contexts(conn: asyncpg.Connection, member_ids: list[uuid.UUID]
                          ) -> dict[uuid.UUID, MemberContext]:
    """Contexts for these members, one query. An id with no member gets an empty
    context (no tier, no segments), so callers can index the result by any id given."""
    found = {row["id"]: MemberContext(row["id"], _tier(row), frozenset(row["segments"]),
                                      row["birth_month"])
             for row in await conn.fetch(_QUERY, list(member_ids))}
    return {m: found.get(m) or MemberContext(m, None, frozenset()) for m in member_ids}


async def member_context(conn: asyncpg.Connection, member_id: uuid.UUID) -> MemberContext:
    return (await member_contexts(conn, [member_id]))[member_id]
