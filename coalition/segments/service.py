"""Segments against the database: count preview, save (which refreshes), the
materialised membership (segment_members) and RFM scores. Every function takes an
asyncpg connection: the partner console passes a tenant-scoped one (row-level security
as a second wall), the periodic job a plain one."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime

import asyncpg

from coalition import clock
from coalition.errors import DomainError, NotFound
from coalition.segments.definitions import Definition, compile_members, parse, to_json
from coalition.settings import coalition_settings
from coalition.uow import Tx

log = logging.getLogger(__name__)
MAX_SEGMENTS_PER_OWNER = 100


async def _context(conn: asyncpg.Connection) -> tuple[set[str], str, str]:
    tiers = await conn.fetchval("SELECT array(SELECT code FROM tiers)")
    settings = await coalition_settings(conn)
    return set(tiers), settings.currency, settings.timezone


async def validate(conn: asyncpg.Connection, partner_id: uuid.UUID | None, raw
                   ) -> Definition:
    tiers, _, _ = await _context(conn)
    return parse(raw, coalition=partner_id is None, tiers=tiers)


async def preview(conn: asyncpg.Connection, partner_id: uuid.UUID | None, raw, now: datetime
                  ) -> int:
    """How many members the definition selects now (nothing is saved)."""
    definition = await validate(conn, partner_id, raw)
    _, currency, timezone = await _context(conn)
    query, args = compile_members(definition, partner_id, now, currency, timezone)
    return await conn.fetchval(f"SELECT count(*) FROM ({query}) s", *args)  # noqa: S608


_MATERIALISE = """
WITH target AS ({query}),
gone AS (DELETE FROM segment_members sm WHERE sm.segment_id = {segment}
          AND NOT EXISTS (SELECT 1 FROM target t WHERE t.id = sm.member_id) RETURNING 1),
added AS (INSERT INTO segment_members (segment_id, member_id, added_at)
          SELECT {segment}, id, {now} FROM target ON CONFLICT DO NOTHING RETURNING 1)
SELECT (SELECT count(*) FROM added) AS added, (SELECT count(*) FROM gone) AS removed,
       (SELECT count(*) FROM target) AS total
"""


async def refresh(conn: asyncpg.Connection, segment_id: uuid.UUID, now: datetime
                  ) -> tuple[int, int]:
    """Bring the segment's materialised members up to date; (added, removed).
    Idempotent: a second run at the same `now` adds and removes nothing."""
    row = await conn.fetchrow("SELECT partner_id, definition FROM segments WHERE id = $1",
                              segment_id)
    if row is None:
        raise NotFound("not-found", "No such segment", "There is no such segment.")
    tiers, currency, timezone = await _context(conn)
    definition = parse(json.loads(row["definition"]), coalition=row["partner_id"] is None,
                       tiers=tiers)
    query, args = compile_members(definition, row["partner_id"], now, currency, timezone)
    n = len(args)
    sql = _MATERIALISE.format(query=query, segment=f"${n + 1}::uuid",
                              now=f"${n + 2}::timestamptz")
    async with conn.transaction():
        result = await conn.fetchrow(sql, *args, segment_id, now)
        await conn.execute("UPDATE segments SET member_count = $2, refreshed_at = $3"
                           " WHERE id = $1", segment_id, result["total"], now)
    return result["added"], result["removed"]


async def save(conn: asyncpg.Connection, partner_id: uuid.UUID | None,
               segment_id: uuid.UUID | None, name: str, description: str | None, raw,
               actor: str, now: datetime) -> uuid.UUID:
    """Create or update a segment of this owner (None: the coalition) and refresh its
    members. Raises a 400 naming the field for a bad name or definition."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise DomainError("validation-error", "Invalid segment", "A segment needs a name of"
                          " at most 200 characters.", status=400, field="name")
    definition = await validate(conn, partner_id, raw)
    async with conn.transaction():
        if segment_id is None:
            count = await conn.fetchval("SELECT count(*) FROM segments WHERE partner_id"
                                        " IS NOT DISTINCT FROM $1", partner_id)
            if count >= MAX_SEGMENTS_PER_OWNER:
                raise DomainError("validation-error", "Too many segments",
                                  f"At most {MAX_SEGMENTS_PER_OWNER} segments.", status=400,
                                  field="name")
            segment_id = await conn.fetchval(
                "INSERT INTO segments (partner_id, name, description, definition, created_by,"
                " created_at, updated_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $6)"
                " RETURNING id", partner_id, name, description, to_json(definition), actor, now)
        elif await conn.execute(
                "UPDATE segments SET name = $3, description = $4, definition = $5::jsonb,"
                " updated_at = $6 WHERE id = $1 AND partner_id IS NOT DISTINCT FROM $2",
                segment_id, partner_id, name, description, to_json(definition),
                now) == "UPDATE 0":
            raise NotFound("not-found", "No such segment", "There is no such segment.")
        await refresh(conn, segment_id, now)
    return segment_id


async def delete(conn: asyncpg.Connection, partner_id: uuid.UUID | None,
                 segment_id: uuid.UUID) -> None:
    if await conn.execute("DELETE FROM segments WHERE id = $1 AND partner_id IS NOT DISTINCT"
                          " FROM $2", segment_id, partner_id) == "DELETE 0":
        raise NotFound("not-found", "No such segment", "There is no such segment.")


async def owned(conn: asyncpg.Connection, partner_id: uuid.UUID | None,
                segment_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM segments WHERE id = $1 AND partner_id IS NOT"
                              " DISTINCT FROM $2", segment_id, partner_id)
    if row is None:
        raise NotFound("not-found", "No such segment", "There is no such segment.")
    return row


async def list_segments(conn: asyncpg.Connection, partner_id: uuid.UUID | None
                        ) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM segments WHERE partner_id IS NOT DISTINCT FROM $1"
                            " ORDER BY name", partner_id)


# RFM over the last 12 months, coalition-wide (partner_id NULL) and per partner in one
# pass. A score is the quintile of the member's cumulative distribution: ties share a
# score, so the result does not depend on row order (and a rerun changes nothing).
_RFM = """
WITH stats AS (
    SELECT q.partner_id, q.member_id, max(q.occurred_at) AS last_at, count(*) AS n,
           sum(q.total - q.returned_total) AS spend
      FROM purchases q
     WHERE q.occurred_at > $1::timestamptz - interval '12 months' AND q.occurred_at <= $1
       AND q.currency = $2
     GROUP BY GROUPING SETS ((q.partner_id, q.member_id), (q.member_id))),
scored AS (
    SELECT partner_id, member_id, last_at, n, spend,
           greatest(1, ceil(5 * cume_dist() OVER (PARTITION BY partner_id ORDER BY last_at)))
               ::smallint AS r,
           greatest(1, ceil(5 * cume_dist() OVER (PARTITION BY partner_id ORDER BY n)))
               ::smallint AS f,
           greatest(1, ceil(5 * cume_dist() OVER (PARTITION BY partner_id ORDER BY spend)))
               ::smallint AS m
      FROM stats),
gone AS (
    DELETE FROM rfm_scores x WHERE NOT EXISTS (
        SELECT 1 FROM scored s WHERE s.partner_id IS NOT DISTINCT FROM x.partner_id
           AND s.member_id = x.member_id) RETURNING 1),
written AS (
    INSERT INTO rfm_scores (partner_id, member_id, recency, frequency, monetary,
                            last_purchase_at, purchases, spend, computed_at)
    SELECT partner_id, member_id, r, f, m, last_at, n, spend, $1 FROM scored
    ON CONFLICT ((coalesce(partner_id, '00000000-0000-0000-0000-000000000000'::uuid)),
                 member_id)
    DO UPDATE SET recency = excluded.recency, frequency = excluded.frequency,
                  monetary = excluded.monetary, last_purchase_at = excluded.last_purchase_at,
                  purchases = excluded.purchases, spend = excluded.spend,
                  computed_at = excluded.computed_at
     WHERE (rfm_scores.recency, rfm_scores.frequency, rfm_scores.monetary,
            rfm_scores.last_purchase_at, rfm_scores.purchases, rfm_scores.spend)
           IS DISTINCT FROM (excluded.recency, excluded.frequency, excluded.monetary,
                             excluded.last_purchase_at, excluded.purchases, excluded.spend)
    RETURNING 1)
SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM written)
"""


async def refresh_rfm(conn: asyncpg.Connection, now: datetime) -> int:
    """Recompute RFM scores (coalition-wide and per partner); returns rows changed."""
    _, currency, _ = await _context(conn)
    return await conn.fetchval(_RFM, now, currency)


async def refresh_all(conn: asyncpg.Connection, now: datetime) -> int:
    """The periodic job: RFM scores first (segments may use them), then every segment's
    membership. Returns how many memberships were added or removed; idempotent."""
    await refresh_rfm(conn, now)
    changes = 0
    for row in await conn.fetch("SELECT id FROM segments ORDER BY created_at"):
        try:
            added, removed = await refresh(conn, row["id"], now)
        except DomainError as exc:
            # A definition that no longer validates (a tier it names was removed): keep
            # its last members and go on with the others.
            log.warning("segment %s not refreshed: %s", row["id"], exc.detail)
            continue
        changes += added + removed
    return changes


# --- the consoles' changes (the partner's segments in its tenant-scoped Tx, the
# coalition's in the operator's): the Tx's partner owns the segment ---------------------

async def save_segment(tx: Tx, segment_id: uuid.UUID | None, name: str,
                       description: str | None, raw) -> uuid.UUID:
    """Create (`segment_id` None) or update a segment of the Tx's partner (None: the
    coalition) and refresh its members, with the audit entry."""
    saved = await save(tx.conn, tx.partner_id, segment_id, name, description, raw,
                       tx.actor.label, clock.now())
    await tx.audit("segment.create" if segment_id is None else "segment.update",
                   target=str(saved))
    return saved


async def delete_segment(tx: Tx, segment_id: uuid.UUID) -> None:
    await delete(tx.conn, tx.partner_id, segment_id)
    await tx.audit("segment.delete", target=str(segment_id))
