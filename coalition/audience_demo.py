"""Demo data for tiers, segments and company accounts (web/demo.py calls these after the
six months of history are posted). The demo posts earnings through the ledger without
purchase rows; `backfill_purchases` gives each demo earning its purchase (1 point per
PLN, one line in the brand's category, returns from the reversals), so tiers and
segments have something to measure. It touches no ledger row and skips orders that
already have a purchase, so it is harmless once the demo posts real purchases."""

from __future__ import annotations

import json
import random
import uuid
from datetime import date, datetime, timedelta

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.companies import company_profile, invite
from coalition.ledger import Ledger, PostingRequest
from coalition.members import enroll
from coalition.segments import service as segments
from tenants.accounts import set_password

CATEGORIES = {"hurtownia": "tools", "moda": "clothing", "akcesoria": "accessories",
              "salon": "hair care", "b2b": "electronics"}

_BACKFILL = """
INSERT INTO purchases (partner_id, member_id, order_id, occurred_at, currency, total, channel,
                       lines, points, entry_id, returned_total, returned_points)
SELECT e.partner_id, e.member_id, e.order_id, e.occurred_at, 'PLN', l.points * 100, 'store',
       jsonb_build_array(jsonb_build_object(
           'sku', upper(p.slug) || '-' || (l.points % 7 + 1), 'category',
           coalesce(($1::jsonb)->>p.slug, 'other'), 'quantity', 1,
           'unit_price', l.points * 100, 'amount', l.points * 100)),
       l.points, e.id, coalesce(r.points, 0) * 100, coalesce(r.points, 0)
  FROM journal_entries e
  JOIN lots l ON l.entry_id = e.id
  JOIN partners p ON p.id = e.partner_id
  LEFT JOIN LATERAL (SELECT sum(m.points) AS points FROM lot_movements m
                      WHERE m.lot_id = l.id AND m.kind = 'cancel') r ON true
 WHERE e.kind = 'earn' AND e.actor = 'demo' AND e.order_id IS NOT NULL
ON CONFLICT (partner_id, order_id) DO NOTHING
"""


async def backfill_purchases(conn: asyncpg.Connection, now: datetime, seed: int = 2026
                             ) -> int:
    """Purchases for the demo's earnings, and birth dates for the demo members (Jan
    Kowalski's birthday falls in the current month, so "Birthday this month" has him)."""
    inserted = int((await conn.execute(_BACKFILL, json.dumps(CATEGORIES))).split()[-1])
    rng = random.Random(seed)
    people = await conn.fetch("SELECT id, email FROM members WHERE kind = 'person'"
                              " AND birth_date IS NULL ORDER BY email")
    for person in people:
        if person["email"] == "jan.kowalski@example.com":
            born = date(1984, now.month, min(now.day, 28))
        else:
            born = date(rng.randint(1950, 2004), rng.randint(1, 12), rng.randint(1, 28))
        await conn.execute("UPDATE members SET birth_date = $2 WHERE id = $1", person["id"],
                           born)
    return inserted


# (email, password, who): the company admin is also in web/demo.py DEMO_LOGINS.
COMPANY_ADMIN = ("anna.kowalczyk@kowalczyk-instalacje.example", "demo-company-pass",
                 "Company admin at Kowalczyk Instalacje (TechnoB2B customer)")
COMPANY_BUYER = ("piotr.nowicki@kowalczyk-instalacje.example", "demo-company-pass",
                 "Company buyer at Kowalczyk Instalacje")


async def seed_company(session: AsyncSession, ledger: Ledger, partner_id: uuid.UUID,
                       now: datetime) -> uuid.UUID:
    """A B2B company account at TechnoB2B Sklep Hurtowy: the company member, its admin
    and buyer logins sharing one wallet, and three wholesale orders (VIP by spend)."""
    profile = company_profile("Kowalczyk Instalacje Sp. z o.o.", "PL 777-123-45-67")
    linked, _ = await enroll(session, partner_id, "zakupy@kowalczyk-instalacje.example",
                             profile.company_name, "B2B-K-001", profile)
    company = linked.member.id
    for (email, password, _), role, name in ((COMPANY_ADMIN, "admin", "Anna Kowalczyk"),
                                             (COMPANY_BUYER, "buyer", "Piotr Nowicki")):
        user, _ = await invite(session, company, email, name, role)
        await set_password(session, user, password)
    await session.commit()
    for n, (points, days_ago) in enumerate([(1850, 150), (2400, 75), (1320, 12)]):
        await ledger.earn(PostingRequest(
            partner_id=partner_id, member_id=company, points=points, actor="demo",
            order_id=f"TB-K-{n + 1:03d}", description="Demo wholesale order",
            posted_at=now - timedelta(days=days_ago)))
    return company


def _definition(*conditions: dict, match: str = "all") -> dict:
    return {"match": match, "conditions": list(conditions)}


COALITION_SEGMENTS = [
    ("Bought in the last 30 days", "Active shoppers at any brand.",
     _definition({"type": "last_purchase", "within_days": 30})),
    ("Spent over 500 PLN in 90 days", "Net of returns, at every brand.",
     _definition({"type": "spend", "days": 90, "min": 50_000})),
    ("Birthday this month", "For birthday bonuses and greetings.",
     _definition({"type": "birthday_month", "current": True})),
    ("RFM champions", "Recent, frequent and high spenders (scores 4-5 of 5).",
     _definition({"type": "rfm", "recency_min": 4, "frequency_min": 4, "monetary_min": 4})),
    ("VIP members", None, _definition({"type": "tier", "tiers": ["vip"]})),
]
PARTNER_SEGMENTS = {
    "hurtownia": [("Tool buyers this year", None,
                   _definition({"type": "category", "categories": ["tools"], "days": 365})),
                  ("Lapsed customers", "Bought before, nothing in 60 days.",
                   _definition({"type": "last_purchase", "more_than_days": 60}))],
}


async def seed_segments(conn: asyncpg.Connection, partners: dict[str, uuid.UUID],
                        now: datetime) -> int:
    """RFM scores, the coalition's demo segments and a few partner segments, refreshed."""
    await segments.refresh_rfm(conn, now)
    for name, description, definition in COALITION_SEGMENTS:
        await segments.save(conn, None, None, name, description, definition, "demo", now)
    for slug, rows in PARTNER_SEGMENTS.items():
        for name, description, definition in rows:
            await segments.save(conn, partners[slug], None, name, description, definition,
                                "demo", now)
    return await conn.fetchval("SELECT count(*) FROM segments")
