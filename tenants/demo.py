"""The demo coalition's accounts (web/demo.py loads the rest): five Polish partners with
their API clients, the members, the portal logins and a B2B company account; the
partners' earning rules (coalition/rules/demo.py) go with them.

Demo client secrets are fixed so the run command can print them; they are for a local
demo only."""

from __future__ import annotations

import random
import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from coalition.affiliates.demo import AFFILIATE_LOGIN
from coalition.audience_demo import COMPANY_ADMIN, COMPANY_BUYER
from coalition.companies import company_profile
from coalition.demo import JAN, KRZYSZTOF, MARIA, PENDING_DAYS, PENDING_SLUG
from coalition.members import enroll
from coalition.rules.demo import seed_rules
from coalition.uow import Tx
from tenants.accounts import create_user, set_password
from tenants.companies import invite
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


# Portal logins the demo creates: (email, password, who). Each passes the password rules
# (tenants/passwords.py), which refuse one containing its email's local part ("operator").
DEMO_LOGINS = [
    ("operator@coalition.example", "demo-platform-pass", "Coalition operator"),
    ("owner@hurtownia.example", "demo-partner-pass", "Hurtownia Budowlana owner"),
    ("jan.kowalski@example.com", "demo-member-pass", "Member Jan Kowalski"),
    COMPANY_ADMIN,
    AFFILIATE_LOGIN,
]
Members = dict[str, tuple[uuid.UUID, list[str]]]


def demo_credentials() -> list[dict]:
    return [{"slug": slug, "name": name, "client_id": f"demo-{slug}",
             "client_secret": f"demo-secret-{slug}"} for slug, name in PARTNERS]


async def seed_accounts(tx: Tx, now: datetime, rng: random.Random, extra_members: int
                        ) -> tuple[dict[str, uuid.UUID], Members, uuid.UUID]:
    """Partners (with their rules), members, logins and the company account; returns
    the partners by slug, the members by email (id, the brands they shop at) and the
    company's member id."""
    session = await tx.session()
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
    # A B2B company account; its orders are history (web/demo_history.py).
    company = await seed_company(session, partners["b2b"])
    await session.flush()
    return partners, members, company


async def seed_company(session: AsyncSession, partner_id: uuid.UUID) -> uuid.UUID:
    """A B2B company account at TechnoB2B Sklep Hurtowy: the company member, and its
    admin and buyer logins sharing one wallet (its wholesale orders, VIP by spend, are
    in the history)."""
    profile = company_profile("Kowalczyk Instalacje Sp. z o.o.", "PL 777-123-45-67")
    linked, _ = await enroll(session, partner_id, "zakupy@kowalczyk-instalacje.example",
                             profile.company_name, "B2B-K-001", profile)
    company = linked.member.id
    for (email, password, _), role, name in ((COMPANY_ADMIN, "admin", "Anna Kowalczyk"),
                                             (COMPANY_BUYER, "buyer", "Piotr Nowicki")):
        user, _ = await invite(session, company, email, name, role)
        await set_password(session, user, password)
    await session.flush()
    return company
