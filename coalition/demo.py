"""The demo coalition's shared facts and its coalition-wide steps (the loader is
web/demo.py; each package seeds its own part: tenants/demo.py, coalition/rules/demo.py,
coalition/audience_demo.py, coalition/rewards/demo.py, coalition/affiliates/demo.py,
settlement/demo.py). The history's reads are here too (web/demo_history.py)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from coalition import ledger
from coalition.ledger import PostingRequest
from coalition.uow import Tx, one_statement

# The named members whose balances the product brief promises (web/demo_history.py).
JAN, MARIA, KRZYSZTOF = ("jan.kowalski@example.com", "maria.nowak@example.com",
                         "krzysztof.wisniewski@example.com")
# Moda Centrum's return window: its purchases of the last two weeks are still pending.
PENDING_SLUG, PENDING_DAYS = "moda", 14

_CAMPAIGNS = """
SELECT v.partner_id, v.params::text AS params, v.starts_at, v.ends_at
  FROM earning_rules r
  JOIN earning_rule_versions v ON v.rule_id = r.id AND v.version = r.current_version
 WHERE r.archived_at IS NULL AND v.starts_at IS NOT NULL
   AND v.type NOT IN ('event', 'referral')
 ORDER BY v.starts_at, v.rule_id
"""
_ISSUED = ("SELECT coalesce(sum(points), 0) FROM lots WHERE partner_id = $1"
           " AND funding = 'partner' AND earned_at >= $2 AND earned_at < $3")
_CHECKOUT_MEMBER = (
    "SELECT a.member_id FROM accounts a JOIN member_links l ON l.member_id = a.member_id"
    " JOIN members m ON m.id = a.member_id WHERE l.partner_id = $1 AND m.kind = 'person'"
    " AND m.email <> ALL($2::text[]) ORDER BY a.balance DESC, m.email LIMIT 1")


@one_statement
async def loaded(tx: Tx) -> bool:
    """Whether the database has partners already (the demo loads only into an empty one)."""
    return await tx.conn.fetchval("SELECT count(*) FROM partners") > 0


async def campaigns(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every live earning rule with a start (a campaign): partner_id (None: the
    coalition's), params (JSON text), starts_at, ends_at; in order of start."""
    return await conn.fetch(_CAMPAIGNS)


async def birth_dates(conn: asyncpg.Connection, member_ids: list[uuid.UUID]
                      ) -> dict[uuid.UUID, object]:
    return dict(await conn.fetch(
        "SELECT id, birth_date FROM members WHERE id = ANY($1::uuid[])", member_ids))


async def issued(conn: asyncpg.Connection, partner_id: uuid.UUID, first: datetime,
                 after: datetime) -> int:
    """Points the partner issued (it funded) in [first, after)."""
    return await conn.fetchval(_ISSUED, partner_id, first, after)


async def open_checkout(tx: Tx, partners: dict[str, uuid.UUID], now: datetime) -> None:
    """A click-and-collect order at Akcesoria Nova whose points are held until pickup
    (the two-phase checkout of web/api/checkout.py, still open), by whichever of its
    customers has the most points, leaving out the three named members' promised
    balances."""
    member_id = await tx.conn.fetchval(_CHECKOUT_MEMBER, partners["akcesoria"],
                                       [JAN, MARIA, KRZYSZTOF])
    result = await ledger.hold(tx, PostingRequest(
        partner_id=partners["akcesoria"], member_id=member_id, points=300, actor="demo",
        order_id="AN-CC-0001", description="Click and collect: points held until pickup"),
        expires_at=now + timedelta(days=2))
    if not result.ok:
        raise RuntimeError(f"demo checkout hold: {result.body}")
