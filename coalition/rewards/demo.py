"""The demo coalition's rewards (seed-features R1 to R7, R14): a catalogue across the five
brands, the Moda Centrum → Akcesoria Nova cross-brand coupon, and vouchers issued and
used by members other than the three named ones, whose balances stay as promised."""

from __future__ import annotations

import random
import uuid
from datetime import datetime

import asyncpg

from coalition.errors import DomainError
from coalition.rewards.coupons import grant_purchase_coupons
from coalition.rewards.offers import OfferInput, create_coupon_offer
from coalition.rewards.service import consume, redeem
from coalition.uow import Actor, Database

NAMED = {"jan.kowalski@example.com", "maria.nowak@example.com",
         "krzysztof.wisniewski@example.com"}

# (partner slug, name, kind, value, category, price, extra columns)
CATALOGUE = [
    ("hurtownia", "Zniżka 10% na kolejne zakupy", "percent_discount", 10, "Finansowa", 100,
     {"voucher_days": 60}),
    ("hurtownia", "Darmowa dostawa", "free_delivery", None, "Finansowa", 150,
     {"voucher_days": 30}),
    ("moda", "50% rabatu", "percent_discount", 50, "Finansowa", 800,
     {"stock": 25, "per_member_limit": 1, "voucher_days": 30}),
    ("akcesoria", "Bon podarunkowy 50 zł", "gift_card", 5000, "Finansowa", 500,
     {"voucher_days": 365}),
    ("akcesoria", "15% na akcesoria", "percent_discount", 15, "Finansowa", 150,
     {"voucher_days": 30, "listed": False,
      "description": "Kupon dla klientów Moda Centrum (zakupy od 200 zł)."}),
    ("salon", "Dostęp do webinaru: pielęgnacja włosów", "event_seat", None, "Wiedza", 200,
     {"stock": 50, "per_member_limit": 1}),
    ("b2b", "Ekskluzywny produkt", "product", None, "Produkt", 500,
     {"stock": 10, "tiers": ["vip"], "description": "Limitowany zestaw dla członków VIP."}),
    ("b2b", "Zniżka 10% na zamówienie hurtowe", "percent_discount", 10, "Finansowa", 100,
     {"voucher_days": 90, "per_member_limit": 3}),
]


async def seed_rewards(pool: asyncpg.Pool, partners: dict[str, uuid.UUID],
                       members: dict[str, tuple[uuid.UUID, list[str]]], now: datetime,
                       seed: int = 2026) -> None:
    """Create the catalogue and the cross-brand offer, then let a few other members
    redeem (some vouchers used at the till) and collect coupons for big Moda orders."""
    rng = random.Random(seed)
    rewards: dict[str, uuid.UUID] = {}
    async with pool.acquire() as conn:
        for slug, name, kind, value, category, price, extra in CATALOGUE:
            columns = {"partner_id": partners[slug], "name": name, "kind": kind,
                       "value": value, "category": category, "price_points": price, **extra}
            marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
            rewards[name] = await conn.fetchval(   # column names come from CATALOGUE above
                f"INSERT INTO rewards ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
                " RETURNING id", *columns.values())
        await Database(pool).acting(Actor.system("demo")).run(create_coupon_offer, OfferInput(
            "Moda Centrum → Akcesoria Nova: 15% za zakupy od 200 zł", partners["moda"],
            rewards["15% na akcesoria"], 20000))

        others = sorted(email for email in members if email not in NAMED)
        prices = {name: price for _, name, _, _, _, price, extra in CATALOGUE
                  if extra.get("listed", True) and not extra.get("tiers")}
        redeemed = 0
        for email in rng.sample(others, min(8, len(others))):
            member_id = members[email][0]
            balance = await conn.fetchval("SELECT balance FROM accounts WHERE member_id = $1",
                                          member_id)
            affordable = sorted(name for name, price in prices.items() if price <= balance)
            if not affordable:
                continue
            name = rng.choice(affordable)
            try:
                done = await redeem(conn, reward_id=rewards[name], member_id=member_id,
                                    actor="demo")
            except DomainError:     # a per-member limit or the stock: that member skips it
                continue
            redeemed += 1
            if redeemed % 2:        # every other voucher already used at the till
                slug = next(c[0] for c in CATALOGUE if c[1] == name)
                await consume(conn, partner_id=partners[slug], actor="demo",
                              code=done["voucher"]["code"], order_id=f"DEMO-TILL-{email[:6]}")

        # Moda orders of 200 PLN or more earned their coupon.
        orders = await conn.fetch(
            "SELECT member_id, order_id, total FROM purchases WHERE partner_id = $1"
            " AND total >= 20000 AND order_id LIKE 'D-%' ORDER BY id LIMIT 6",
            partners["moda"])
        for order in orders:
            await grant_purchase_coupons(
                conn, partner_id=partners["moda"], member_id=order["member_id"],
                order_id=order["order_id"], total=order["total"], occurred_at=now)
