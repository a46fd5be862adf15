"""Demo data for tiers, segments and company accounts (web/demo.py calls these around
the six months of history, which web/demo_history.py posts as real purchases): the
members' birth dates, the B2B company's logins (made by tenants/demo.py), and the
coalition's and partners' segments."""

from __future__ import annotations

import random
import uuid
from datetime import date, datetime

import asyncpg

from coalition.segments import service as segments
from coalition.settings import coalition_settings


async def seed_birth_dates(conn: asyncpg.Connection, now: datetime, seed: int = 2026) -> None:
    """Birth dates for the demo members (Jan Kowalski's birthday falls in the current
    month, so "Birthday this month" has him)."""
    rng = random.Random(seed)
    # The month as the coalition's time zone has it, as the segment judges it.
    zone = (await coalition_settings(conn)).zone
    today = now.astimezone(zone)
    people = await conn.fetch("SELECT id, email FROM members WHERE kind = 'person'"
                              " AND birth_date IS NULL ORDER BY email")
    for person in people:
        if person["email"] == "jan.kowalski@example.com":
            born = date(1984, today.month, min(today.day, 28))
        else:
            born = date(rng.randint(1950, 2004), rng.randint(1, 12), rng.randint(1, 28))
        await conn.execute("UPDATE members SET birth_date = $2 WHERE id = $1", person["id"],
                           born)


# (email, password, who): the company admin is also in tenants/demo.py DEMO_LOGINS.
COMPANY_ADMIN = ("anna.kowalczyk@kowalczyk-instalacje.example", "demo-company-pass",
                 "Company admin at Kowalczyk Instalacje (TechnoB2B customer)")
COMPANY_BUYER = ("piotr.nowicki@kowalczyk-instalacje.example", "demo-company-pass",
                 "Company buyer at Kowalczyk Instalacje")


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
                   _definition({"type": "category", "categories": ["narzedzia"],
                                "days": 365})),
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
