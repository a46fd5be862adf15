"""Helpers for tier and segment tests: a ladder under a given policy, purchases written
directly (the purchase API is not what these tests are about), members."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from coalition.tiers.admin import TierInput, save_program
from coalition.tiers.ladder import Policy

LADDER = [TierInput("standard", "Standard", 0, ["Points everywhere"]),
          TierInput("vip", "VIP", 100_000, ["Double points"])]


async def set_program(db, now: datetime, ladder=None, **policy) -> None:
    async with db.acquire() as conn:
        await save_program(conn, list(ladder or LADDER), Policy(**policy), "test", now,
                           reevaluate=False)


async def buy(db, partner_id, member_id, total: int, at: datetime, *, returned: int = 0,
              currency: str = "PLN", lines: list | None = None, order: str | None = None
              ) -> int:
    return await db.fetchval(
        "INSERT INTO purchases (partner_id, member_id, order_id, occurred_at, currency, total,"
        " channel, lines, returned_total) VALUES ($1, $2, $3, $4, $5, $6, 'store', $7::jsonb,"
        " $8) RETURNING id", partner_id, uuid.UUID(str(member_id)),
        order or uuid.uuid4().hex, at, currency, total, json.dumps(lines or []), returned)
