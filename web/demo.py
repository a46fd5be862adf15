"""The demo coalition loaded by `coalition run` on first start (PRODUCT.md, "Demo
coalition"): five Polish partners, named members with known balances, and six months of
purchases, returns, events and redemptions posted through the same functions as the API
(web/demo_history.py), ending with a checkout whose points are still held.

Demo client secrets are fixed so the run command can print them; they are for a local
demo only."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import asyncpg

from coalition import clock
from coalition.affiliates.demo import AFFILIATE_LOGIN, seed_affiliates
from coalition.audience_demo import (
    COMPANY_ADMIN,
    seed_birth_dates,
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
from web.demo_history import (
    JAN,
    KRZYSZTOF,
    MARIA,
    PENDING_DAYS,
    PENDING_SLUG,
    post_history,
)

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


# Portal logins the demo creates: (email, password, who). Each passes the password rules
# (tenants/passwords.py), which refuse one containing its email's local part ("operator").
DEMO_LOGINS = [
    ("operator@coalition.example", "demo-platform-pass", "Coalition operator"),
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
    The history ends at the platform clock's reading, or at `now`: then the clock itself
    is moved there while the demo loads (and runs on from there), so what the loader
    back-dates and what the platform stamps along the way agree.
    `stripe`: settings pointing at a Stripe sandbox, through which the finalized months
    are collected, paid out and closed (settlement/demo.py `pay_demo`)."""
    if now is None:
        return await _load_demo(url, clock.now(), seed, extra_members, stripe)
    with clock.travel(now):
        return await _load_demo(url, now, seed, extra_members, stripe)


async def _load_demo(url: DatabaseUrl, now: datetime, seed: int, extra_members: int,
                     stripe: Settings | None) -> list[dict]:
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
                if item["slug"] == PENDING_SLUG:
                    partner.pending_days = PENDING_DAYS
            people = [(JAN, "Jan Kowalski"), (MARIA, "Maria Nowak"),
                      (KRZYSZTOF, "Krzysztof Wiśniewski")]
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
            # A B2B company account (coalition/audience_demo.py); its orders are history.
            company = await seed_company(session, partners["b2b"])
        # One transaction: each posting's own is a savepoint in it, so the history
        # commits (and waits for its WAL flush) once, not once a posting.
        async with pool.acquire() as conn, conn.transaction():
            await seed_birth_dates(conn, now)
            await post_history(conn, partners, members, company, now, rng)
            # Tiers and segments over that history (coalition/audience_demo.py).
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
        await _open_checkout(Ledger(pool), partners, now)
    finally:
        await pool.close()
        await engine.dispose()
    return demo_credentials()


async def _open_checkout(ledger: Ledger, partners: dict, now: datetime) -> None:
    """A click-and-collect order at Akcesoria Nova whose points are held until pickup
    (the two-phase checkout of web/api/checkout.py, still open), by whichever of its
    customers has the most points, leaving out the three named members' promised
    balances."""
    member_id = await ledger.pool.fetchval(
        "SELECT a.member_id FROM accounts a JOIN member_links l ON l.member_id = a.member_id"
        " JOIN members m ON m.id = a.member_id WHERE l.partner_id = $1 AND m.kind = 'person'"
        " AND m.email <> ALL($2::text[]) ORDER BY a.balance DESC, m.email LIMIT 1",
        partners["akcesoria"], [JAN, MARIA, KRZYSZTOF])
    result = await ledger.hold(PostingRequest(
        partner_id=partners["akcesoria"], member_id=member_id, points=300, actor="demo",
        order_id="AN-CC-0001", description="Click and collect: points held until pickup"),
        expires_at=now + timedelta(days=2))
    if not result.ok:
        raise RuntimeError(f"demo checkout hold: {result.body}")
