"""The throttles of tenants/throttle.py through the portal and /oauth/token: parallel wrong
passwords, the growing delay after failed logins (and the correct password after it),
the limits on forms that send email, failed OAuth client authentications, and the client
address behind trusted proxies.

Each test speaks from client addresses of its own (the in-process transport's `client`),
so the per-address limits count only its requests."""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from datetime import timedelta

import httpx
import pytest

from coalition import clock
from tenants import throttle
from tenants.service import create_partner, create_server_client
from tests.portal import csrf_of, submit
from tests.test_portal_accounts import address, register

PASSWORD = "correct horse battery"
_hosts = itertools.count(1)


def fresh_address() -> str:
    """A documentation address (RFC 5737) no other test has spoken from in this run."""
    n = next(_hosts) + uuid.uuid4().int % 200 * 250
    return f"198.18.{n // 250 % 250}.{n % 250 + 1}"


def browser_at(app, host: str | None = None) -> httpx.AsyncClient:
    """A browser whose connection comes from `host` (a fresh address by default)."""
    transport = httpx.ASGITransport(app=app, client=(host or fresh_address(), 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver.local")


async def verified_account(app, smtp) -> str:
    """A confirmed member account, signed up from an address of its own."""
    email = address()
    async with browser_at(app) as browser:
        await register(browser, email)
        await browser.get(smtp.link_to(email, "/verify-email"))
    return email


async def login(browser, email: str, password: str) -> httpx.Response:
    return await submit(browser, "/login", "/login", email=email, password=password)


def mails_to(smtp, email: str) -> int:
    return sum(1 for message in smtp.messages if message["To"] == email)


async def test_parallel_wrong_passwords_get_at_most_the_limit_of_guesses(app, smtp, db):
    email = await verified_account(app, smtp)
    async with browser_at(app) as attacker:
        token = csrf_of(await attacker.get("/login"))
        answers = await asyncio.gather(*(
            attacker.post("/login", data={"_csrf_token": token, "email": email,
                                          "password": f"wrong password {n}"})
            for n in range(16)))
    statuses = sorted(answer.status_code for answer in answers)
    # Counting and recording were separate statements: all 16 were judged (401).
    assert statuses.count(401) == throttle.MAX_FAILURES_PER_EMAIL, statuses
    assert statuses.count(429) == 16 - throttle.MAX_FAILURES_PER_EMAIL, statuses
    assert all(0 < int(a.headers["retry-after"]) <= 30 for a in answers if a.status_code == 429)
    judged = await db.fetchval("SELECT count(*) FROM login_attempts WHERE kind = 'login'"
                               " AND lower(email) = lower($1)", email)
    assert judged == throttle.MAX_FAILURES_PER_EMAIL


async def test_the_delay_doubles_and_the_right_password_after_it_logs_in(app, smtp):
    email = await verified_account(app, smtp)
    async with browser_at(app) as someone, browser_at(app) as owner:
        with clock.freeze() as start:
            for _ in range(throttle.MAX_FAILURES_PER_EMAIL):
                assert (await login(someone, email, "a wrong guess")).status_code == 401
            # Not a lock: the owner is refused only until the delay is over, and told so.
            refused = await login(owner, email, PASSWORD)
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "30"
            assert "Wait 30 seconds and try again" in refused.text
        with clock.freeze(start + timedelta(seconds=31)):
            assert (await login(someone, email, "a wrong guess")).status_code == 401
            doubled = await login(owner, email, PASSWORD)
            assert doubled.status_code == 429 and doubled.headers["retry-after"] == "60"
            assert "Wait 1 minute and try again" in doubled.text
        with clock.freeze(start + timedelta(seconds=31 + 59)):
            assert (await login(owner, email, PASSWORD)).status_code == 429
        with clock.freeze(start + timedelta(seconds=31 + 61)):
            # Refused attempts did not lengthen it; the right password now gets in.
            welcome = await login(owner, email, PASSWORD)
            assert welcome.status_code == 302 and welcome.headers["location"] == "/member"
            # ... and starts the count afresh.
            assert (await login(someone, email, "a wrong guess")).status_code == 401


def test_the_delay_is_capped():
    limit = throttle.MAX_FAILURES_PER_EMAIL
    assert throttle.failure_delay(limit - 1, limit) is None
    assert throttle.failure_delay(limit, limit) == timedelta(seconds=30)
    assert throttle.failure_delay(limit + 3, limit) == timedelta(minutes=4)
    assert throttle.failure_delay(limit + 10_000, limit) == throttle.FAILURE_DELAY_CAP


async def test_failures_from_one_address_delay_its_logins_for_any_account(app, smtp):
    emails = [await verified_account(app, smtp) for _ in range(2)]
    async with browser_at(app) as guesser:
        with clock.freeze() as start:
            for n in range(throttle.MAX_FAILURES_PER_IP):
                # Unknown accounts: no email gets near its own limit.
                answer = await login(guesser, f"nobody-{n}-{emails[0]}", "a wrong guess")
                assert answer.status_code == 401
            assert (await login(guesser, emails[1], PASSWORD)).status_code == 429
        with clock.freeze(start + timedelta(seconds=31)):
            assert (await login(guesser, emails[1], PASSWORD)).status_code == 302


async def login_recorded_from(db, email: str) -> str:
    return await db.fetchval("SELECT ip FROM login_attempts WHERE kind = 'login'"
                             " AND email = $1", email)


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(app, db):
    email = address()
    # The peer is loopback, as a process on the server host would be: still not trusted.
    async with browser_at(app, "127.0.0.1") as local:
        page = await local.get("/login")
        await local.post("/login", headers={"X-Forwarded-For": "203.0.113.77"},
                         data={"_csrf_token": csrf_of(page), "email": email,
                               "password": "a wrong guess"})
    assert await login_recorded_from(db, email) == "127.0.0.1"


async def test_forwarded_for_is_honoured_from_a_trusted_proxy(app, db, monkeypatch):
    monkeypatch.setattr(app.state.settings, "trusted_proxies", "10.9.0.0/16, 10.8.0.1")
    email = address()
    async with browser_at(app, "10.9.3.4") as proxy:
        page = await proxy.get("/login")
        # A client-written entry (left) is not believed; the right-most untrusted one is.
        await proxy.post("/login", headers={"X-Forwarded-For":
                                            "192.0.2.1, 203.0.113.78, 10.8.0.1"},
                         data={"_csrf_token": csrf_of(page), "email": email,
                               "password": "a wrong guess"})
    assert await login_recorded_from(db, email) == "203.0.113.78"


@pytest.mark.parametrize(("peer", "forwarded", "trusted", "client"), [
    ("198.51.100.1", ["203.0.113.1"], "", "198.51.100.1"),
    ("127.0.0.1", ["203.0.113.1"], "", "127.0.0.1"),
    ("127.0.0.1", ["203.0.113.1"], "127.0.0.1", "203.0.113.1"),
    ("10.0.0.2", ["1.1.1.1, 203.0.113.1", "10.0.0.3"], "10.0.0.0/8", "203.0.113.1"),
    ("10.0.0.2", ["10.0.0.5, 10.0.0.3"], "10.0.0.0/8", "10.0.0.5"),
    ("10.0.0.2", ["not-an-address"], "10.0.0.0/8", "10.0.0.2"),
    ("10.0.0.2", [], "10.0.0.0/8", "10.0.0.2"),
    ("::1", ["2001:db8::7"], "::1", "2001:db8::7"),
    ("10.0.0.2", ["[2001:db8::8]:443"], "10.0.0.0/8", "2001:db8::8"),
    (None, ["203.0.113.1"], "", "unknown"),
])
def test_client_address(peer, forwarded, trusted, client):
    assert throttle.client_address(peer, forwarded, trusted) == client


@pytest.fixture
def per_address_limit(app, monkeypatch) -> int:
    """The production limit on emailing forms per address (the suite raises it)."""
    monkeypatch.setattr(app.state.settings, "email_requests_per_address",
                        throttle.REQUESTS_PER_ADDRESS)
    return throttle.REQUESTS_PER_ADDRESS


async def test_sign_ups_from_one_address_are_limited(app, smtp, per_address_limit, db):
    async with browser_at(app) as bot:
        for _ in range(per_address_limit):
            await register(bot, address())
        victim = address()
        refused = await submit(bot, "/register", "/register", email=victim, name="X",
                               password=PASSWORD)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] in {"599", "600"}
    assert "Wait 10 minutes and try again" in refused.text
    assert mails_to(smtp, victim) == 0
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1", victim) == 0
    # Another address is not held back.
    async with browser_at(app) as person:
        await register(person, victim)


async def test_password_reset_emails_are_limited_per_address_and_per_target(
        app, smtp, per_address_limit):
    email = await verified_account(app, smtp)
    before = mails_to(smtp, email)
    for _ in range(throttle.REQUESTS_PER_TARGET):
        async with browser_at(app) as somewhere:
            sent = await submit(somewhere, "/forgot-password", "/forgot-password", email=email)
            assert sent.status_code == 200
    async with browser_at(app) as elsewhere:
        refused = await submit(elsewhere, "/forgot-password", "/forgot-password", email=email)
    assert refused.status_code == 429 and "Wait 60 minutes" in refused.text
    assert 3590 <= int(refused.headers["retry-after"]) <= 3600
    assert mails_to(smtp, email) == before + throttle.REQUESTS_PER_TARGET
    # Addresses without an account count the same, so a 429 tells nothing about accounts.
    async with browser_at(app) as bot:
        for _ in range(per_address_limit):
            answer = await submit(bot, "/forgot-password", "/forgot-password", email=address())
            assert answer.status_code == 200
        refused = await submit(bot, "/forgot-password", "/forgot-password", email=address())
    assert refused.status_code == 429 and "retry-after" in refused.headers


async def test_verification_resends_are_limited_per_target(app, smtp, db, per_address_limit):
    email = address()
    async with browser_at(app) as browser:
        await register(browser, email)
    for n in range(throttle.REQUESTS_PER_TARGET):
        # Past the per-account minute each time, so only the new limit can refuse.
        await db.execute("UPDATE user_tokens SET expires_at = expires_at - interval '2 min'"
                         " FROM users WHERE users.id = user_tokens.user_id"
                         " AND users.email = $1", email)
        async with browser_at(app) as somewhere:
            sent = await submit(somewhere, "/resend-verification", "/resend-verification",
                                email=email)
            assert sent.status_code == 200
        assert mails_to(smtp, email) == 2 + n
    async with browser_at(app) as elsewhere:
        refused = await submit(elsewhere, "/resend-verification", "/resend-verification",
                               email=email)
    assert refused.status_code == 429 and "retry-after" in refused.headers
    assert re.search(r"Wait \d+ minutes and try again", refused.text)
    assert mails_to(smtp, email) == 1 + throttle.REQUESTS_PER_TARGET


async def test_maintenance_purges_old_rows_of_every_kind(db):
    from tenants.sessions import LOGIN_ATTEMPT_RETENTION, purge

    old = clock.now() - LOGIN_ATTEMPT_RETENTION - timedelta(minutes=1)
    marker = address()
    await db.execute("INSERT INTO login_attempts (kind, email, ip, succeeded, created_at)"
                     " VALUES ('register', $1, 'x', true, $2),"
                     " ('oauth-client', $1, 'x', false, $2)", marker, old)
    async with db.acquire() as conn:
        await purge(conn)
    assert await db.fetchval("SELECT count(*) FROM login_attempts WHERE email = $1",
                             marker) == 0


async def test_failed_client_authentications_are_limited_per_client_id(client):
    async with client.app.state.sessionmaker() as session:
        partner = await create_partner(session, "Throttle Brand",
                                       slug=f"t-{uuid.uuid4().hex[:10]}")
        oauth_client, secret = await create_server_client(session, partner.id, "srv")
        await session.commit()
    grant = {"grant_type": "client_credentials"}
    # Successful authentications do not count.
    for _ in range(3):
        ok = await client.post("/oauth/token", data=grant, auth=(oauth_client.client_id, secret))
        assert ok.status_code == 200
    wrong = await asyncio.gather(*(
        client.post("/oauth/token", data=grant, auth=(oauth_client.client_id, f"guess-{n}"))
        for n in range(throttle.OAUTH_CLIENT_FAILURES + 4)))
    statuses = sorted(answer.status_code for answer in wrong)
    assert statuses.count(401) == throttle.OAUTH_CLIENT_FAILURES, statuses
    assert statuses.count(429) == 4, statuses
    slowed = await client.post("/oauth/token", data={
        **grant, "client_id": oauth_client.client_id, "client_secret": secret})
    assert slowed.status_code == 429
    body = slowed.json()
    assert body["error"] == "slow_down" and "Wait 10 minutes" in body["error_description"]
    assert 590 <= int(slowed.headers["retry-after"]) <= 600
    assert slowed.headers["cache-control"] == "no-store"
    with clock.travel(clock.now() + throttle.OAUTH_CLIENT_WINDOW + timedelta(seconds=1)):
        again = await client.post("/oauth/token", data=grant,
                                  auth=(oauth_client.client_id, secret))
        assert again.status_code == 200


@pytest.mark.parametrize(("trusted", "proxy_headers", "allowed"), [
    ("", False, None),
    ("10.0.0.0/8, 192.0.2.1", True, ["10.0.0.0/8", "192.0.2.1"]),
])
def test_uvicorn_believes_forwarded_headers_only_from_trusted_proxies(
        monkeypatch, trusted, proxy_headers, allowed):
    """uvicorn's own default takes X-Forwarded-For from any loopback connection, before the
    app sees the request: `serve` passes the app's trusted set on instead."""
    import uvicorn

    from coalition.config import Settings
    from web import cli

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(cli, "get_settings", lambda: Settings(trusted_proxies=trusted))
    cli._serve("127.0.0.1", 8000)
    assert calls[0]["proxy_headers"] is proxy_headers
    assert calls[0]["forwarded_allow_ips"] == allowed
