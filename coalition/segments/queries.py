"""What the segment pages read: the Tx's partner's segments (None: the coalition's)."""

from __future__ import annotations

import uuid

import asyncpg

from coalition import clock
from coalition.segments import service
from coalition.uow import Tx


async def segments_of_owner(tx: Tx) -> list[asyncpg.Record]:
    return await service.list_segments(tx.conn, tx.partner_id)


async def segment_of_owner(tx: Tx, segment_id: uuid.UUID) -> asyncpg.Record:
    """The segment, or a 404 when the Tx's partner does not own it."""
    return await service.owned(tx.conn, tx.partner_id, segment_id)


async def preview_count(tx: Tx, raw) -> int:
    """How many members the definition selects now (nothing is saved)."""
    return await service.preview(tx.conn, tx.partner_id, raw, clock.now())
