"""Which segments an earning rule or a reward may target: its owner's own. A partner's
rule or reward targets the partner's segments (which look only at the partner's own
members and purchases: a coalition segment would let a brand learn what members do at
other brands, and row-level security hides those from it); a coalition-wide rule or
reward targets the coalition's segments. An id naming no such segment would silently
make the rule or reward reach nobody, so it is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.segments.models import Segment


async def unknown_segments(session: AsyncSession, partner_id: uuid.UUID | None,
                           ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """The ids, in the order given, that are not segments of `partner_id` (None: of the
    coalition)."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    owner = (Segment.partner_id.is_(None) if partner_id is None
             else Segment.partner_id == partner_id)
    found = set(await session.scalars(select(Segment.id).where(Segment.id.in_(wanted), owner)))
    return [segment for segment in wanted if segment not in found]
