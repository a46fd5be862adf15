"""The demo coalition loaded by `coalition run` on first start (PRODUCT.md, "Demo
coalition"): five Polish partners, named members with known balances, and six months of
purchases, returns and redemptions posted through the same ledger functions as the API.

Demo client secrets are fixed so the run command can print them; they are for a local
demo only."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import asyncpg

from coalition.affiliates.demo import AFFILIATE_LOGIN, seed_affiliates
from coalition.audience_demo import (
    COMPANY_ADMIN,
    backfill_purchases,
    seed_company,
    seed_segments,
)
from coalition.config import Settings
from coalition.db import DatabaseUrl, create_engine, create_sessionmaker
from coalition.ledger import Ledger, PostingRequest
from coalition.members import enroll
from coalition.rewards.demo import seed_rewards
from coalition.rules.demo import seed_rules
from coalition.tiers.admin import seed_tiers
from settlement.demo import pay_demo, seed_terms, settle_demo
from tenants.accounts import create_user
from tenants.service import create_partner, create_server_client

PARTNERS = [
    ("hurtownia", "Hurtownia Budowlana"),
    ("moda", "Moda Centrum"),
    ("akcesoria", "Akcesoria Nova"),
    ("salon", "Salon Fryzjerski Anna"),
    ("b2b", "TechnoB2B Sklep Hurtowy"),
]
FIRST = ["Anna", "Piotr", "Katarzyna", "Tomasz", "Agnieszka", "Paweł", "Magdalena", "Michał",
         "Ewa", "Marcin", "Joanna", "Łukasz", "Zofia", "Adam", "Barbara", "Grzegorz"]
LAST = ["Lewandowska", "Wójcik", "Kamińska", "Zieliński", "Szymańska", "Woźniak", "Dąbrowski",
        "Kozłowska", "Jankowski", "Mazur", "Kwiatkowska", "Krawczyk"]


# Portal logins the demo creates: (email, password, who).
DEMO_LOGINS = [
    ("operator@coalition.example", "demo-operator-pass", "Coalition operator"),
    ("owner@hurtownia.example", "demo-partner-pass", "Hurtownia Budowlana owner"),
    ("jan.kowalski@example.com", "demo-member-pass", "Member Jan Kowalski"),
    COMPANY_ADMIN,
    AFFILIATE_LOGIN,
]


def demo_credentials() -> list[dict]:
    return [{"slug": slug, "name": name, "client_id": f"demo-{slug}",
             "client_secret": f"demo-secret-{slug}"} for slug, name in PARTNERS]


async def load_demo(url: DatabaseUrl, *, now: datetime | None = None, seed: int = 2026,
                    extra_members: int = 40, stripe: Settings | None = None) -> list[dict]:
    """Load the demo coalition unless partners already exist; return the demo credentials.
    `stripe`: settings pointing at a Stripe sandbox, through which the finalized months
    are collected, paid out and closed (settlement/demo.py `pay_demo`)."""
    now = now or datetime.now(UTC)
    engine = create_engine(url, server_settings={"timezone": "UTC"})
    pool = await asyncpg.create_pool(url.asyncpg_dsn, min_size=1, max_size=2,
                                     server_settings={"timezone": "UTC"})
    try:
        if await pool.fetchval("SELECT count(*) FROM partners") > 0:
            return demo_credentials()
        async with create_sessionmaker(engine)() as session:
            partners = {}
            for item in demo_credentials():
                partner = await create_partner(session, item["name"], slug=item["slug"])
                await create_server_client(session, partner.id, "Demo server",
                                           client_id=item["client_id"],
                                           client_secret=item["client_secret"])
                partners[item["slug"]] = partner.id
            people = [("jan.kowalski@example.com", "Jan Kowalski"),
                      ("maria.nowak@example.com", "Maria Nowak"),
                      ("krzysztof.wisniewski@example.com", "Krzysztof Wiśniewski")]
            rng = random.Random(seed)
            for i in range(extra_members):
                first, last = rng.choice(FIRST), rng.choice(LAST)
                people.append((f"{first.lower()}.{last.lower()}.{i}@example.com".replace(
                    "ł", "l").replace("ń", "n").replace("ś", "s").replace("ó", "o").replace(
                    "ą", "a").replace("ę", "e").replace("ż", "z").replace("ź", "z").replace(
                    "ć", "c"), f"{first} {last}"))
            members = {}
            for index, (email, name) in enumerate(people):
                # Every member shops at two or three brands; the named ones at all five.
                slugs = list(partners) if index < 3 else rng.sample(list(partners), 3)
                for number, slug in enumerate(slugs):
                    linked, _ = await enroll(session, partners[slug], email, name,
                                             f"{slug.upper()}-{1000 + index}-{number}")
                members[email] = (linked.member.id, slugs)
            operator, owner, member = DEMO_LOGINS[:3]
            await create_user(session, operator[0], "operator", name="Operator",
                              password=operator[1], verified=True)
            await create_user(session, owner[0], "partner_staff", name="Owner",
                              password=owner[1], partner_id=partners["hurtownia"],
                              role="owner", verified=True)
            await create_user(session, member[0], "member", name="Jan Kowalski",
                              password=member[1], member_id=members[member[0]][0],
                              verified=True)
            await seed_rules(session, partners, now)
            await session.commit()
        await _history(Ledger(pool), partners, members, now, rng)
        # Tiers, segments and a B2B company account (coalition/audience_demo.py).
        async with create_sessionmaker(engine)() as session:
            await seed_company(session, Ledger(pool), partners["b2b"], now)
        async with pool.acquire() as conn:
            await backfill_purchases(conn, now)
            await seed_tiers(conn, now)
            await seed_segments(conn, partners, now)
        await seed_rewards(pool, partners, members, now)
        # Affiliate programs at 5 %, 6 % and tiered, with clicks and commissions.
        async with create_sessionmaker(engine)() as session:
            await seed_affiliates(session, pool, partners, now, rng)
        # Rate cards, the EUR rate and the prepaid hair salon (settlement/demo.py).
        async with pool.acquire() as conn:
            await seed_terms(conn, partners, now)
            # The history settled: past months finalized, the last one a draft.
            periods = await settle_demo(conn, now)
        if stripe is not None:
            await pay_demo(pool, stripe, periods, now)
    finally:
        await pool.close()
        await engine.dispose()
    return demo_credentials()


async def _history(ledger: Ledger, partners: dict, members: dict, now: datetime,
                   rng: random.Random) -> None:
    def at(days_ago: float) -> datetime:
        return now - timedelta(days=days_ago)

    async def post(kind: str, slug: str, email: str, points: int, days_ago: float,
                   order: str) -> int:
        request = PostingRequest(partner_id=partners[slug], member_id=members[email][0],
                                 points=points, actor="demo", order_id=order,
                                 description="Demo purchase" if kind == "earn" else "Demo reward",
                                 posted_at=at(days_ago))
        result = await (ledger.earn if kind == "earn" else ledger.redeem)(request)
        return result.json()["id"] if result.ok else 0

    async def reverse(slug: str, entry: int, points: int, days_ago: float) -> None:
        await ledger.reverse(partner_id=partners[slug], entry_id=entry, points=points,
                             actor="demo", allowed_kinds=["earn", "redeem"],
                             description="Demo return", posted_at=at(days_ago))

    # The named members end at the balances the product brief promises.
    jan, maria, krzysztof = ("jan.kowalski@example.com", "maria.nowak@example.com",
                             "krzysztof.wisniewski@example.com")
    await post("earn", "hurtownia", jan, 120, 110, "HB-5001")
    await post("earn", "moda", jan, 80, 70, "MC-7001")
    await post("redeem", "salon", jan, 50, 30, "SA-R-101")                  # Jan: 150
    await post("earn", "moda", maria, 250, 140, "MC-7002")
    returned = await post("earn", "akcesoria", maria, 60, 100, "AN-3001")
    await reverse("akcesoria", returned, 30, 95)                             # half returned
    await post("redeem", "akcesoria", maria, 80, 45, "AN-R-201")            # Maria: 200
    await post("earn", "b2b", krzysztof, 95, 120, "TB-9001")
    await post("earn", "salon", krzysztof, 40, 60, "SA-1001")
    await post("redeem", "salon", krzysztof, 40, 20, "SA-R-102")            # Krzysztof: 95

    # Everyone else: purchases over six months (1 point per PLN), some returns, rewards.
    others = [email for email in members if email not in (jan, maria, krzysztof)]
    for n in range(len(others) * 6):
        email = rng.choice(others)
        slug = rng.choice(members[email][1])
        days_ago = rng.uniform(1, 180)
        entry = await post("earn", slug, email, rng.randint(20, 400), days_ago, f"D-{n:05d}")
        if rng.random() < 0.08:
            await reverse(slug, entry, None, max(days_ago - rng.uniform(1, 10), 0.5))
    for n in range(len(others) * 2):
        email = rng.choice(others)
        slug = rng.choice(members[email][1])
        await post("redeem", slug, email, rng.choice([50, 100, 200]), rng.uniform(1, 60),
                   f"R-{n:05d}")
    # Reward weekends at the salon and the accessories brand in the last two complete
    # months: members spend more there than those brands issue, so in those months the
    # operator owes them (paid by SEPA credit and by Connect transfer, settlement/demo.py).
    month_start = now.replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    for months_back in (1, 2):
        days_ago = (now - (month_start - timedelta(days=30 * months_back - 15))
                    ).total_seconds() / 86400
        for slug, target in (("salon", 3600), ("akcesoria", 6000)):
            spent = 0
            for n, email in enumerate(e for e in others if slug in members[e][1]):
                if spent >= target:
                    break
                for points in (600, 300):     # what the member can afford
                    if await post("redeem", slug, email, points, days_ago + n / 100,
                                  f"W-{slug}-{months_back}-{n}"):
                        spent += points
                        break
