"""The points lifecycle's periodic work and queries: pending points becoming available,
expiry into breakage, lapsed checkout holds, and points about to expire (reminders).

Each job is one SQL function working in batches; running it twice changes nothing the
second time, so a job retried after a crash or run by two workers at once is safe."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

BATCH = 1000


async def _drain(conn: asyncpg.Connection, function: str, now: datetime) -> int:
    """Call a batch function until a batch comes back short; each batch commits alone so
    a long backlog never holds locks for long."""
    total = 0
    while True:
        done = await conn.fetchval(f"SELECT {function}($1, $2)", now, BATCH)
        total += done
        if done < BATCH:
            return total


async def activate_pending(conn: asyncpg.Connection, now: datetime) -> int:
    """Pending lots whose return window has ended become available; returns how many."""
    return await _drain(conn, "ledger_activate_due", now)


async def expire_points(conn: asyncpg.Connection, now: datetime) -> int:
    """Moves expired remainders to breakage; returns how many members lost points."""
    return await _drain(conn, "ledger_expire_due", now)


async def expire_holds(conn: asyncpg.Connection, now: datetime) -> int:
    """Gives the points of lapsed checkout holds back; returns how many holds."""
    return await _drain(conn, "ledger_expire_holds", now)


async def expiring_points(conn: asyncpg.Connection, now: datetime, *, within_days: int = 30,
                          member_id: uuid.UUID | None = None) -> list[dict]:
    """Per member, the points that expire within `within_days` and the first date, for
    reminder emails (all members, or one)."""
    rows = await conn.fetch(
        """SELECT l.member_id, m.email, m.name, sum(l.remaining)::bigint AS points,
                  min(l.expires_at) AS first_expiry
             FROM lots l JOIN members m ON m.id = l.member_id
            WHERE l.status = 'active' AND l.remaining > 0
              AND l.expires_at > $1 AND l.expires_at <= $2
              AND ($3::uuid IS NULL OR l.member_id = $3)
            GROUP BY l.member_id, m.email, m.name
            ORDER BY min(l.expires_at), l.member_id""",
        now, now + timedelta(days=within_days), member_id)
    return [dict(row) for row in rows]
