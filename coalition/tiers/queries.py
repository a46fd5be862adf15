"""What the tier pages and the tier endpoint read."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from coalition import clock
from coalition.errors import NotFound
from coalition.tiers.service import TierProgram, TierStatus, load_program, member_status
from coalition.uow import Tx

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


@dataclass(frozen=True)
class TierPage:
    """The operator's tier page: the program, how many members hold each tier (the base
    tier: everyone without another), what each tier unlocks, and the manual assignments
    still running."""

    program: TierProgram
    held: dict[str, int]
    unlocks: dict[str, list[asyncpg.Record]]
    manual: list[asyncpg.Record]


async def tier_page(tx: Tx) -> TierPage:
    program = await load_program(tx.conn)
    counts = dict(await tx.conn.fetch(
        "SELECT tier_code, count(*) FROM member_tiers GROUP BY tier_code"))
    members = await tx.conn.fetchval("SELECT count(*) FROM members")
    unlocks = await tx.conn.fetch(_UNLOCKS)
    manual = await tx.conn.fetch(
        "SELECT m.name, m.email, m.card_number, t.manual_code, t.manual_until,"
        " t.manual_reason, t.manual_by FROM member_tiers t JOIN members m"
        " ON m.id = t.member_id WHERE t.manual_until > now() ORDER BY t.manual_until")
    base = program.ladder[0].code if program.ladder else None
    held = {t.code: counts.get(t.code, 0) for t in program.ladder}
    if base:
        held[base] = members - sum(v for k, v in counts.items() if k != base)
    by_tier: dict[str, list[Any]] = {}
    for row in unlocks:
        by_tier.setdefault(row["tier"], []).append(row)
    return TierPage(program, held, by_tier, list(manual))


async def visible_member_tier(tx: Tx, member_id: uuid.UUID) -> TierStatus | None:
    """The member's tier and progress (None: the coalition has no ladder), for the Tx's
    partner, which sees only its own members. Qualification counts purchases at every
    brand: the Tx is not tenant-scoped, and the partner filter is explicit."""
    if not await tx.conn.fetchval(
            "SELECT 1 FROM member_links WHERE partner_id = $1 AND member_id = $2",
            tx.partner_id, member_id):
        raise NotFound("member-not-found", "Member not found",
                       "No member with this id is linked to your partner account.",
                       field="member_id")
    return await member_status(tx.conn, member_id, clock.now())
