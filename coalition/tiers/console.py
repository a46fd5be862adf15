"""The operator's tier changes: the ladder and its policy, manual assignments and a
re-evaluation of everyone; each change with its audit entry, in one Tx."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import asyncpg

from coalition import clock
from coalition.errors import DomainError
from coalition.settings import coalition_settings
from coalition.tiers.admin import TierInput, save_program
from coalition.tiers.ladder import Policy
from coalition.tiers.service import assign_manual, end_manual, reevaluate_all
from coalition.uow import Tx


async def save_ladder(tx: Tx, tiers: list[TierInput], policy: Policy) -> int:
    """Replace the ladder and policy; returns how many members changed tier."""
    changed = await save_program(tx.conn, tiers, policy, tx.actor.label, clock.now())
    await tx.audit("tiers.save", changed=changed, tiers=[t.code for t in tiers])
    return changed


async def _member_by(conn: asyncpg.Connection, who: str) -> asyncpg.Record:
    """The member with this card number or email, or a 404 naming the field."""
    who = (who or "").strip()
    member = await conn.fetchrow("SELECT id, name, email, card_number FROM members"
                                 " WHERE card_number = $1 OR lower(email) = lower($1)", who)
    if member is None:
        raise DomainError("not-found", "No such member", "No member has this card"
                          " number or email.", status=404, field="member")
    return member


async def _end_of(conn: asyncpg.Connection, text: str) -> datetime:
    """The end of the given day (inclusive) in the coalition's time zone."""
    try:
        day = datetime.strptime(text.strip(), "%Y-%m-%d").date()
    except ValueError:
        raise DomainError("validation-error", "Invalid date", "Give the last day as"
                          " YYYY-MM-DD.", status=400, field="until") from None
    zone = (await coalition_settings(conn)).zone
    return datetime.combine(day + timedelta(days=1), time(), zone)


async def assign_tier(tx: Tx, who: str, tier: str, until_day: str, reason: str) -> None:
    """Guarantee `tier` to the member (card number or email) through `until_day`."""
    member = await _member_by(tx.conn, who)
    until = await _end_of(tx.conn, until_day)
    await assign_manual(tx.conn, member["id"], tier, until, reason, tx.actor.label,
                        clock.now())
    await tx.audit("tiers.assign", target=member["card_number"], tier=tier,
                   until=until.isoformat())


async def end_tier(tx: Tx, who: str) -> None:
    """End the member's manual assignment now."""
    member = await _member_by(tx.conn, who)
    await end_manual(tx.conn, member["id"], tx.actor.label, clock.now())
    await tx.audit("tiers.end_manual", target=member["card_number"])


async def reevaluate_everyone(tx: Tx) -> int:
    """Every member's tier decided again now; how many changed."""
    return await reevaluate_all(tx.conn, clock.now())
