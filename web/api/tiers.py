"""A member's tier and progress to the next one, as a partner (or a member's app) sees it."""

from __future__ import annotations

import uuid
from datetime import datetime

from litestar import Controller, Request, get
from litestar.params import FromPath
from msgspec import Struct

from coalition.errors import NotFound
from coalition.tiers.queries import visible_member_tier
from coalition.uow import Database
from web.security import as_client, ensure_acting_for, requires_scope


class TierRef(Struct):
    code: str
    name: str
    threshold: int
    benefits: list[str]


class Qualification(Struct):
    basis: str                 # spend (minor units of `currency`) or points
    window: str                # rolling or calendar_year
    window_months: int | None  # rolling windows only
    window_start: datetime
    window_end: datetime
    value: int
    currency: str | None


class NextTier(Struct):
    code: str
    name: str
    threshold: int
    remaining: int             # in the basis' unit: what is left to reach it


class TierOut(Struct):
    member_id: uuid.UUID
    tier: TierRef
    since: datetime | None
    until: datetime | None     # end of a manual assignment that gives this tier
    manual: bool
    review_at: datetime | None  # tier anniversary (anniversary downgrade policy)
    qualification: Qualification
    next_tier: NextTier | None


class TierController(Controller):
    path = "/members"
    tags = ["Members"]
    guards = [requires_scope]

    @get("/{member_id:uuid}/tier",
         opt={"scopes": ["members:read"], "member_scopes": ["points:read"]},
         summary="A member's tier and progress to the next",
         description="The coalition-wide tier, since when it is held, the end of a manual "
         "assignment, the qualifying value over the window (spend in minor units of the "
         "coalition currency, or points) and what remains to reach the next tier.")
    async def tier(self, request: Request, db: Database,
                   member_id: FromPath[uuid.UUID]) -> TierOut:
        ensure_acting_for(request.user, member_id)
        status = await as_client(db, request.user).run(visible_member_tier, member_id)
        if status is None:
            raise NotFound("no-tier-ladder", "No tiers", "The coalition has no tier ladder.")
        t, nxt = status.tier, status.next_tier
        return TierOut(
            member_id=member_id,
            tier=TierRef(t.code, t.name, t.threshold, list(t.benefits)),
            since=status.since, until=status.manual_until,
            manual=status.manual_until is not None, review_at=status.review_at,
            qualification=Qualification(
                basis=status.basis, window=status.window_kind,
                window_months=status.window_months if status.window_kind == "rolling" else None,
                window_start=status.window_start, window_end=status.window_end,
                value=status.value, currency=status.currency),
            next_tier=NextTier(nxt.code, nxt.name, nxt.threshold, status.remaining)
            if nxt else None)
