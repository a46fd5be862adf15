# PLACEHOLDER: replaced at merge by the tiers helper's module
"""Who a member is to the program's targeting: tier and segments (contract of issue 4).
This stand-in knows no tiers and no segments; the tiers helper's module replaces it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg


@dataclass(frozen=True)
class MemberContext:
    member_id: uuid.UUID
    tier: str | None = None
    segments: frozenset[uuid.UUID] = field(default_factory=frozenset)
    birth_month: int | None = None


async def member_context(conn: asyncpg.Connection, member_id: uuid.UUID) -> MemberContext:
    return MemberContext(member_id=member_id, tier=None, segments=frozenset())


async def member_contexts(conn: asyncpg.Connection, member_ids: list[uuid.UUID]
                          ) -> dict[uuid.UUID, MemberContext]:
    return {m: MemberContext(member_id=m, tier=None, segments=frozenset()) for m in member_ids}
