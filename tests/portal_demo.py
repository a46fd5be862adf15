"""The demo coalition as the portal tests use it (tests/test_portal_crawl.py, tests/
test_portal_forms.py): its kinds of users, the extra staff and creatives the demo leaves
to its users, a signed-in browser per user, and a fingerprint of the whole database.

The demo is loaded once per test session into a template database (conftest.py
`portal_demo_template`); each module gets a fresh copy of it (`portal_demo`), so what one
module writes is never seen by another, whatever order they run in."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import httpx
from litestar import Litestar
from sqlalchemy import text

from coalition.affiliates import programs
from coalition.affiliates.demo import AFFILIATE_LOGIN
from coalition.audience_demo import COMPANY_ADMIN
from coalition.db import DatabaseUrl
from settlement.affiliate_payouts import run_payouts
from tenants.accounts import create_user
from tests.portal import submit
from web.demo import DEMO_LOGINS, load_demo

ORIGIN = "http://testserver.local"
STAFF_PASSWORD = "crawl staff secret 12"


@dataclass(frozen=True)
class Role:
    name: str
    kind: str | None            # users.kind; None for a visitor who is not logged in
    email: str | None
    password: str | None
    start: tuple[str, ...]


ROLES = [
    Role("anonymous", None, None, None, ("/",)),
    Role("operator", "operator", *DEMO_LOGINS[0][:2], ("/operator", "/")),
    Role("owner", "partner_staff", *DEMO_LOGINS[1][:2], ("/partner", "/")),
    Role("admin", "partner_staff", "admin@hurtownia.example", STAFF_PASSWORD, ("/partner",)),
    Role("analyst", "partner_staff", "analyst@hurtownia.example", STAFF_PASSWORD,
         ("/partner",)),
    Role("cashier", "partner_staff", "cashier@hurtownia.example", STAFF_PASSWORD,
         ("/partner",)),
    # Another brand's owner: the same pages over Moda Centrum's data (its return window
    # keeps points pending), and a stranger to every Hurtownia page the others find.
    Role("moda-owner", "partner_staff", "owner@moda.example", STAFF_PASSWORD, ("/partner",)),
    Role("member", "member", *DEMO_LOGINS[2][:2], ("/member", "/")),
    Role("company", "member", *COMPANY_ADMIN[:2], ("/member", "/member/company")),
    Role("affiliate", "affiliate", *AFFILIATE_LOGIN[:2], ("/affiliate", "/")),
]


@dataclass
class Demo:
    app: Litestar
    url: DatabaseUrl


async def prepare_demo(url: DatabaseUrl, app: Litestar) -> None:
    """Load the demo into the empty, migrated database `url` that `app` serves, with what
    the demo leaves to its users."""
    await load_demo(url, extra_members=12)
    async with app.state.sessionmaker() as session:
        partners = dict((await session.execute(text("SELECT slug, id FROM partners"))).all())
        for role in ROLES:
            if role.password == STAFF_PASSWORD and role.email:
                name, _, domain = role.email.partition("@")
                await create_user(session, role.email, "partner_staff",
                                  partner_id=partners[domain.split(".")[0]], role=name,
                                  password=STAFF_PASSWORD, verified=True)
        # Creatives to promote (an image and a text) in the program the demo affiliate
        # promotes for Hurtownia...
        program = await session.scalar(text(
            "SELECT id FROM affiliate_programs WHERE partner_id = :p"),
            {"p": partners["hurtownia"]})
        await programs.add_creative(session, partners["hurtownia"], program, "Banner",
                                    filename="banner.png", content_type="image/png",
                                    content=b"\x89PNG\r\n\x1a\n" + bytes(32))
        await programs.add_creative(session, partners["hurtownia"], program, "Post",
                                    text="Polecam Hurtownię Budowlaną!")
        await session.commit()
    # ...and the daily payout job run once: the approved commissions paid out (SEPA
    # credits waiting for the bank file; Stripe, not configured here, carries over).
    paid = await run_payouts(app.state.stripe)
    assert paid.by_status("pending"), paid.outcomes


async def signed_in(app: Litestar, role: Role) -> httpx.AsyncClient:
    browser = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN)
    if role.email is not None:
        login = await submit(browser, "/login", "/login", email=role.email,
                             password=role.password or "")
        assert login.status_code == 302, (role.name, login.status_code, login.text[:300])
    return browser


async def database_fingerprint(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    """Rows and the newest writing transaction of every table: any INSERT, UPDATE or
    DELETE changes one of them. Sessions are written by every page view by design (the
    server-side session store renews them)."""
    tables = [r["relname"] for r in await conn.fetch(
        "SELECT relname FROM pg_stat_user_tables WHERE schemaname = 'public'"
        " AND relname NOT IN ('web_sessions', 'alembic_version') ORDER BY relname")]
    rows = await conn.fetch(" UNION ALL ".join(
        f"SELECT '{t}' AS t, count(*) AS n, coalesce(max(xmin::text::bigint), 0) AS x"
        f" FROM \"{t}\"" for t in tables))
    return {r["t"]: (r["n"], r["x"]) for r in rows}
