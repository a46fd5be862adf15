"""The demo coalition's affiliates (PRODUCT.md: "Affiliates at 5 %, 6 % and 2-10 %
tiered"): three partner programs, three affiliates (a blogger, an influencer, an e-shop)
signed up through the same function as the portal's form, their clicks over the last
five months, and commissions made by the real attribution and commission code for some
of the demo's purchases: one click an hour before each, so the click window, the
commission model and the hold apply as they would live. Commissions past their 30-day
hold are approved by the job's function; payouts are left to the daily job (or the
operator) so the demo shows approved money waiting. The blogger logs in with
AFFILIATE_LOGIN."""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.affiliates import programs
from coalition.affiliates.attribution import Touch, add_months
from coalition.affiliates.commissions import approve_due, for_purchase
from coalition.affiliates.models import Affiliate
from coalition.affiliates.programs import ProgramSpec, TermsSpec
from coalition.affiliates.signup import PayoutSpec, SignupSpec
from coalition.settings import coalition_settings
from coalition.uow import Tx

AFFILIATE_LOGIN = ("ola@testuje.example", "demo-affiliate-pass", "Affiliate Ola (blogger)")
# (partner slug, program, terms): 5 %, 6 %, and 2 % rising to 10 % from 5,000 PLN a month.
PROGRAMS = [
    ("moda", "Polecaj modę", {"model": "percent", "rate_bp": 500}),
    ("hurtownia", "Polecaj fachowcom",
     {"model": "percent", "rate_bp": 600}),
    ("b2b", "Partnerzy e-commerce",
     {"model": "tiered_percent", "tiers": ((0, 200), (500_000, 1000)),
      "recurring_months": 12}),
]
AFFILIATES = [
    (SignupSpec("person", "Ola Testuje", AFFILIATE_LOGIN[0], AFFILIATE_LOGIN[1], True,
                website="https://testuje.example",
                payout=PayoutSpec("sepa", account_holder="Aleksandra Testuje",
                                  iban="PL61109010140000071219812874", bic="WBKPPLPP"))),
    (SignupSpec("person", "Kamil Style", "kamil@style.example", "demo-affiliate-pass-2", True,
                website="https://instagram.example/kamilstyle",
                payout=PayoutSpec("stripe_connect", stripe_account_id="acct_demokamilstyle"))),
    (SignupSpec("company", "Marek Nowicki", "biuro@narzedzia24.example",
                "demo-affiliate-pass-3", True, company_name="Narzędzia24 Sp. z o.o.",
                nip="123-456-32-18", website="https://narzedzia24.example",
                payout=PayoutSpec("sepa", account_holder="Narzędzia24 Sp. z o.o.",
                                  iban="PL27114020040000300201355387", bic="BREXPLPW"))),
]
# Commission past its hold that the demo gives each affiliate in each program: the
# minimum payout and a fifth, so the payout job has money to pay out on any day.
TARGET_APPROVED = TermsSpec.min_payout_minor * 6 // 5
# Which affiliates promote which programs (indexes into the lists above).
JOINS = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2)]
# The portal's sign-up (tenants/affiliate_signup.sign_up): the affiliate and its login,
# which is the accounts' business, so the caller passes it in.
SignUp = Callable[[AsyncSession, SignupSpec], Awaitable[tuple[Affiliate, Any]]]


async def seed_affiliates(tx: Tx, partners: dict[str, uuid.UUID], now: datetime,
                          rng: random.Random, sign_up: SignUp) -> None:
    """The programs, affiliates and enrollments (ORM), then their clicks and sales and
    the approval job's days, all in the caller's Tx."""
    session = await tx.session()
    start = now - timedelta(days=200)
    program_ids = []
    for slug, name, terms in PROGRAMS:
        program = await programs.create_program(session, partners[slug], ProgramSpec(
            name=name, landing_url=f"https://{slug}.example/polecane", currency="PLN",
            description="Prowizja od sprzedaży za klientów z Twoich linków."))
        await programs.add_terms(session, partners[slug], program.id,
                                 TermsSpec(effective_from=start, **terms), "demo")
        program_ids.append(program.id)
    affiliate_ids = []
    for spec in AFFILIATES:
        affiliate, user = await sign_up(session, spec)
        user.email_verified_at = start
        affiliate_ids.append(affiliate.id)
    enrollments = []
    for who, which in JOINS:
        enrollment = await programs.join_program(session, affiliate_ids[who],
                                                 program_ids[which], None)
        enrollments.append((enrollment.id, program_ids[which], PROGRAMS[which][0],
                            _base_rate_bp(PROGRAMS[which][2])))
    await session.flush()   # the raw SQL below reads these rows on the same connection
    taken: set[tuple[uuid.UUID, uuid.UUID]] = set()
    conn = tx.conn
    for enrollment_id, program_id, slug, rate_bp in enrollments:
        await _clicks_and_sales(conn, enrollment_id, program_id, partners[slug], now, rng,
                                rate_bp, taken)
    # The approval job, day by day: each commission is approved when its hold ends,
    # so it lands on the statement of the month it became payable.
    for days_ago in range(150, -1, -1):
        await approve_due(conn, now - timedelta(days=days_ago))


def _base_rate_bp(terms: dict) -> int:
    return terms["rate_bp"] if "rate_bp" in terms else terms["tiers"][0][1]


async def _clicks_and_sales(conn: asyncpg.Connection, enrollment_id: uuid.UUID,
                            program_id: uuid.UUID, partner_id: uuid.UUID, now: datetime,
                            rng: random.Random, rate_bp: int,
                            taken: set[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """Browsing clicks over 150 days, and a click an hour before some of the partner's
    purchases, which the commission code then attributes.

    Whatever the day the demo is loaded, each affiliate has approved money waiting above
    its program's minimum payout: sales past the hold period are picked until their
    commission (at the program's base rate) reaches TARGET_APPROVED, then one to three
    recent ones, still on hold. Each member converts once per program (the programs pay
    a member's first attributed purchase)."""
    clicks = [(now - timedelta(days=rng.uniform(0, 150)), None)
              for _ in range(rng.randint(40, 90))]
    sales = [sale for sale in await conn.fetch(
        "SELECT order_id, member_id, occurred_at, total, currency FROM purchases"
        " WHERE partner_id = $1 AND occurred_at > $2 AND returned_total = 0"
        " ORDER BY occurred_at", partner_id, now - timedelta(days=150))
        if (program_id, sale["member_id"]) not in taken]
    matured = now - timedelta(days=TermsSpec.hold_days + 2)
    older = [sale for sale in sales if sale["occurred_at"] < matured]
    recent = [sale for sale in sales if sale["occurred_at"] >= matured]
    rng.shuffle(older)
    sold, expected = [], 0
    for sale in older:
        if expected >= TARGET_APPROVED and len(sold) >= 2:
            break
        if (program_id, sale["member_id"]) in taken:
            continue
        taken.add((program_id, sale["member_id"]))
        sold.append(sale)
        expected += sale["total"] * rate_bp // 10_000
    wanted = rng.randint(1, 3)
    for sale in rng.sample(recent, len(recent)):
        if wanted == 0:
            break
        if (program_id, sale["member_id"]) in taken:
            continue
        taken.add((program_id, sale["member_id"]))
        sold.append(sale)
        wanted -= 1
    clicks += [(sale["occurred_at"] - timedelta(hours=1), sale) for sale in sold]
    tz = (await coalition_settings(conn)).zone
    for clicked_at, sale in sorted(clicks, key=lambda c: c[0]):
        click_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO affiliate_clicks (click_id, enrollment_id, program_id, partner_id,"
            " clicked_at, ip_hash, user_agent, referrer, sub_id) VALUES ($1, $2, $3, $4, $5,"
            " md5(random()::text), 'Mozilla/5.0 (demo)', 'https://social.example/', $6)",
            click_id, enrollment_id, program_id, partner_id, clicked_at,
            rng.choice([None, "instagram", "newsletter"]))
        if sale is None:
            continue
        at = sale["occurred_at"]
        month = at.astimezone(tz).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        await for_purchase(
            conn, partner_id=partner_id, member_id=sale["member_id"],
            order_id=sale["order_id"], total=sale["total"], lines=[], at=at,
            currency=sale["currency"], month=(month, add_months(month, 1)),
            touch=Touch(click_id=click_id))
