"""Shared set-up for the rewards tests: rewards written straight into the catalogue."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

DEFAULTS: dict[str, Any] = {"name": "10% off your next order", "kind": "percent_discount",
                            "value": 10, "category": "Finansowa", "price_points": 100}


async def make_reward(db: asyncpg.Pool, partner_id: uuid.UUID, **fields: Any) -> uuid.UUID:
    values = {**DEFAULTS, **fields, "partner_id": partner_id}
    if values["kind"] not in ("percent_discount", "fixed_discount", "gift_card"):
        values["value"] = fields.get("value")
    columns = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return await db.fetchval(
        f"INSERT INTO rewards ({', '.join(columns)}) VALUES ({placeholders}) RETURNING id",
        *values.values())


async def wallet(db: asyncpg.Pool, member_id: str | uuid.UUID) -> int:
    return await db.fetchval("SELECT balance FROM accounts WHERE member_id = $1"
                             " AND kind = 'member_wallet'", uuid.UUID(str(member_id)))


async def footprint(db: asyncpg.Pool, member_id: str | uuid.UUID) -> tuple:
    """Everything a redemption writes for this member, to show a refusal wrote nothing."""
    member = uuid.UUID(str(member_id))
    return tuple(await db.fetchrow(
        "SELECT (SELECT balance FROM accounts WHERE member_id = $1) AS balance,"
        " (SELECT count(*) FROM vouchers WHERE member_id = $1) AS vouchers,"
        " (SELECT count(*) FROM journal_entries WHERE member_id = $1) AS entries,"
        " (SELECT count(*) FROM member_links WHERE member_id = $1) AS links,"
        " (SELECT coalesce(sum(stock), 0) + coalesce(sum(issued), 0) FROM rewards) AS stock",
        member))
