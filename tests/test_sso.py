"""Staff single sign-on against a real OpenID Connect provider over HTTP: a second
running instance of this platform (its own database), whose authorization server acts as
the partner's company identity provider."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from coalition import members
from coalition.config import Settings
from coalition.db import (
    DatabaseUrl,
    create_engine,
    create_sessionmaker,
    drop_database,
    ensure_database,
)
from coalition.migrate import upgrade
from tenants import accounts
from tenants.service import create_app_client, create_partner
from tests.live import free_port, serve
from tests.portal import csrf_of, submit
from web.app import create_app

CALLBACK = "http://testserver.local/sso/callback"


@dataclass
class Provider:
    issuer: str
    client_id: str
    client_secret: str
    url: DatabaseUrl

    async def add_person(self, email: str) -> str:
        """A person with a company account at the provider."""
        password = "company password 1"
        engine = create_engine(self.url)
        try:
            async with create_sessionmaker(engine)() as session:
                member, _ = await members.find_or_create(session, email, "Anna Firmowa")
                await accounts.create_user(session, email, "member", name="Anna Firmowa",
                                           password=password, member_id=member.id,
                                           verified=True)
                await session.commit()
        finally:
            await engine.dispose()
        return password

    async def unverify(self, email: str) -> None:
        """From now on the provider asserts email_verified: false for this person."""
        conn = await asyncpg.connect(self.url.asyncpg_dsn)
        try:
            await conn.execute("UPDATE users SET email_verified_at = NULL"
                               " WHERE lower(email) = lower($1)", email)
        finally:
            await conn.close()


async def _register_client(url: DatabaseUrl) -> tuple[str, str]:
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            company = await create_partner(session, "Firma IdP",
                                           slug=f"idp-{uuid.uuid4().hex[:8]}")
            client, secret = await create_app_client(
                session, company.id, "Coalition staff login", ["openid", "email", "profile"],
                ["https://testserver.local/sso/callback"])
            # The platform under test answers on plain http://testserver.local, which this
            # provider's own rules refuse (https only outside loopback); a development
            # identity provider would be configured to allow it, so set it directly.
            client.redirect_uris = [CALLBACK]
            await session.commit()
    finally:
        await engine.dispose()
    assert secret is not None
    return client.client_id, secret


@pytest.fixture(scope="module")
def provider(server_url: DatabaseUrl, tmp_path_factory) -> Iterator[Provider]:
    url = server_url.with_database(f"coalition_idp_{uuid.uuid4().hex[:10]}")
    asyncio.run(ensure_database(url))
    upgrade(url)
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    app = create_app(Settings(database_url=url.raw, env="test", public_url=issuer,
                              data_dir=tmp_path_factory.mktemp("idp")), url)
    client_id, secret = asyncio.run(_register_client(url))
    with serve(app, port):
        yield Provider(issuer, client_id, secret, url)
    asyncio.run(drop_database(url))


def _location(response: httpx.Response) -> str:
    assert response.status_code in (302, 303), (response.status_code, response.text[:400])
    return response.headers["location"]


async def sign_in_at_provider(authorize_url: str, email: str, password: str) -> str:
    """A real browser session at the provider, over HTTP: log in, consent, and return the
    URL the provider sends the browser back to."""
    parts = urlsplit(authorize_url)
    async with httpx.AsyncClient(base_url=f"{parts.scheme}://{parts.netloc}") as idp:
        to_login = _location(await idp.get(authorize_url))
        login_page = await idp.get(to_login)
        back = _location(await idp.post("/login", data={
            "_csrf_token": csrf_of(login_page), "email": email, "password": password,
            "next": parse_qs(urlsplit(to_login).query)["next"][0]}))
        consent = await idp.get(back)
        assert consent.status_code == 200, consent.text[:400]
        return _location(await idp.post("/oauth/authorize", data={
            **parse_qs(urlsplit(back).query), "_csrf_token": csrf_of(consent),
            "decision": "allow"}))


async def staff_user(client, partner_id: uuid.UUID, email: str, role: str = "cashier",
                     password: str | None = None) -> None:
    async with client.app.state.sessionmaker() as session:
        await accounts.create_user(session, email, "partner_staff", partner_id=partner_id,
                                   role=role, password=password, verified=password is not None)
        await session.commit()


async def configure_sso(client, browser, partner, provider: Provider, **changes: str
                        ) -> httpx.Response:
    owner = f"owner-{uuid.uuid4().hex[:8]}@brand.example"
    await staff_user(client, partner.partner_id, owner, "owner", "owner password 1")
    await submit(browser, "/login", "/login", email=owner, password="owner password 1")
    return await submit(browser, "/partner/sso", "/partner/sso", **{
        "issuer": provider.issuer, "client_id": provider.client_id,
        "client_secret": provider.client_secret, "enabled": "on", **changes})


def new_browser(client) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app),
                             base_url="http://testserver.local")


async def slug_of(db, partner) -> str:
    return await db.fetchval("SELECT slug FROM partners WHERE id = $1", partner.partner_id)


async def test_staff_sign_in_with_company_provider(client, browser, partner, provider, db):
    assert (await configure_sso(client, browser, partner, provider)).status_code == 302
    settings_page = await browser.get("/partner/sso")
    assert "enabled" in settings_page.text and provider.client_secret not in settings_page.text
    email = f"anna-{uuid.uuid4().hex[:8]}@firma.example"
    await staff_user(client, partner.partner_id, email)          # invited, no password
    password = await provider.add_person(email)
    async with new_browser(client) as anna:
        to_provider = _location(await anna.get("/sso/start",
                                               params={"company": await slug_of(db, partner)}))
        assert to_provider.startswith(f"{provider.issuer}/oauth/authorize?")
        assert "code_challenge_method=S256" in to_provider
        back = await sign_in_at_provider(to_provider, email, password)
        assert back.startswith(CALLBACK)
        landed = _location(await anna.get(back.removeprefix("http://testserver.local")))
        assert landed == "/partner"
        console = await anna.get("/partner")
        assert console.status_code == 200 and "Test Brand" in console.text
    logged = await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'staff.sso_login'"
                               " AND target = $1", email)
    assert logged == 1


async def test_only_verified_staff_of_that_partner_get_in(client, browser, partner,
                                                          other_partner, provider, db):
    await configure_sso(client, browser, partner, provider)
    async with new_browser(client) as other_owner:
        await configure_sso(client, other_owner, other_partner, provider)
    outsider = f"out-{uuid.uuid4().hex[:8]}@firma.example"
    unverified = f"unv-{uuid.uuid4().hex[:8]}@firma.example"
    staff_of_a = f"a-{uuid.uuid4().hex[:8]}@firma.example"
    await staff_user(client, partner.partner_id, unverified)
    await staff_user(client, partner.partner_id, staff_of_a)
    cases = [(outsider, True, partner, "has no staff account"),
             (unverified, False, partner, "verified email"),
             # Staff of partner A cannot get in through partner B's provider settings.
             (staff_of_a, True, other_partner, "has no staff account")]
    for email, verified, target, message in cases:
        password = await provider.add_person(email)
        async with new_browser(client) as person:
            to_provider = _location(await person.get(
                "/sso/start", params={"company": await slug_of(db, target)}))
            back = await sign_in_at_provider(to_provider, email, password)
            if not verified:
                await provider.unverify(email)   # the ID token is minted at the exchange
            refused = await person.get(back.removeprefix("http://testserver.local"))
            assert refused.status_code == 403, (email, refused.status_code)
            assert message in refused.text
            assert (await person.get("/partner")).status_code in (302, 303)


async def test_forged_callback_and_unknown_company_are_refused(client):
    async with new_browser(client) as person:
        forged = await person.get("/sso/callback", params={"code": "x", "state": "y"})
        assert forged.status_code == 400
        unknown = await person.get("/sso/start", params={"company": "no-such-company"})
        assert unknown.status_code == 404


async def test_unreachable_provider_is_refused_and_nothing_saved(client, browser, partner,
                                                                 provider, db):
    answer = await configure_sso(client, browser, partner, provider,
                                 issuer=f"http://127.0.0.1:{free_port()}")
    assert answer.status_code == 400 and "Could not read" in answer.text
    assert await db.fetchval("SELECT count(*) FROM partner_identity_providers"
                             " WHERE partner_id = $1", partner.partner_id) == 0


async def test_company_sign_in_issues_a_new_session_id(client, browser, partner, provider, db):
    """The sign-in under way is a session (its state and PKCE verifier); the signed-in
    session gets another id, and the first one is gone (session fixation)."""
    await configure_sso(client, browser, partner, provider)
    email = f"fix-{uuid.uuid4().hex[:8]}@firma.example"
    await staff_user(client, partner.partner_id, email)
    password = await provider.add_person(email)
    async with new_browser(client) as anna, new_browser(client) as planted:
        # An id someone planted, which the store does not know, is never adopted.
        made_up = "f" * 64
        anna.cookies.set("session", made_up, domain="testserver.local", path="/")
        to_provider = _location(await anna.get("/sso/start",
                                               params={"company": await slug_of(db, partner)}))
        pending = anna.cookies["session"]
        assert pending != made_up
        back = await sign_in_at_provider(to_provider, email, password)
        assert _location(await anna.get(back.removeprefix("http://testserver.local"))) \
            == "/partner"
        assert anna.cookies["session"] != pending
        assert (await anna.get("/partner")).status_code == 200
        planted.cookies.set("session", pending, domain="testserver.local", path="/")
        assert (await planted.get("/partner")).status_code in (302, 303)
        assert await db.fetchval("SELECT count(*) FROM web_sessions WHERE key_hash ="
                                 " encode(sha256($1::text::bytea), 'hex')", pending) == 0
