"""Portal sessions (issue 16): a new id at login and after privilege changes, a password
reset ends the account's other sessions and its apps' tokens, anonymous visits store
nothing, the store keeps hashes, maintenance purges what expired, and the cookie's
flags."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta

import httpx
from asgi_lifespan import LifespanManager
from authlib.common.security import generate_token

from coalition import clock, members
from tenants import accounts
from tenants.maintenance import maintenance_pass
from tests.portal import Browser, csrf_of, submit
from tests.test_oauth_apps import BASE, MemberLogin, authorize, log_in, new_app
from web.app import create_app
from web.sessions import PostgresSessionStore

PASSWORD = "quartz lantern meadow 91"
NEW_PASSWORD = "violet harbour kettle 57"
HOST = "testserver.local"


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def new_member(client: httpx.AsyncClient) -> MemberLogin:
    email = f"s-{uuid.uuid4().hex[:10]}@example.com"
    async with client.app.state.sessionmaker() as session:
        member, _ = await members.find_or_create(session, email, "Jan Sesja")
        await accounts.create_user(session, email, "member", name="Jan Sesja",
                                   password=PASSWORD, member_id=member.id, verified=True)
        await session.commit()
    return MemberLogin(email, PASSWORD, str(member.id))


def plant(browser: httpx.AsyncClient, session_id: str) -> None:
    """Put a session cookie in the browser, as an attacker who can set one would."""
    browser.cookies.set("session", session_id, domain=HOST, path="/")


def session_cookies(response: httpx.Response) -> list[str]:
    return [h for h in response.headers.get_list("set-cookie") if h.startswith("session=")]


async def logged_in(browser: httpx.AsyncClient) -> bool:
    return (await browser.get("/member")).status_code == 200


async def test_login_issues_a_new_id_and_the_planted_one_is_dead(client, db):
    attacker, victim = await new_member(client), await new_member(client)
    async with Browser(client.app) as theirs, Browser(client.app) as mine:
        # The attacker's own live session id, planted in the victim's browser.
        await log_in(theirs, attacker)
        planted = theirs.cookies["session"]
        plant(mine, planted)
        await log_in(mine, victim)
        assert mine.cookies["session"] != planted
        home = await mine.get("/member")
        assert home.status_code == 200
        # The planted id is gone: it is neither the victim's session nor the attacker's.
        assert not await logged_in(theirs)
        assert await db.fetchval("SELECT count(*) FROM web_sessions WHERE key_hash = $1",
                                 digest(planted)) == 0


async def test_a_made_up_session_id_is_never_adopted(client, db):
    person = await new_member(client)
    made_up = secrets.token_hex(32)
    async with Browser(client.app) as browser:
        plant(browser, made_up)
        await log_in(browser, person)
        assert browser.cookies["session"] != made_up
        assert await logged_in(browser)
    async with Browser(client.app) as attacker:
        plant(attacker, made_up)
        assert not await logged_in(attacker)
    assert await db.fetchval("SELECT count(*) FROM web_sessions WHERE key_hash = $1",
                             digest(made_up)) == 0


async def test_logging_in_again_renews_the_id(client):
    person = await new_member(client)
    async with Browser(client.app) as browser, Browser(client.app) as copy:
        await log_in(browser, person)
        first = browser.cookies["session"]
        await log_in(browser, person)
        assert browser.cookies["session"] != first and await logged_in(browser)
        plant(copy, first)
        assert not await logged_in(copy)


async def test_confirming_an_email_renews_the_id_of_a_logged_in_session(client, smtp):
    person = await new_member(client)
    email = f"v-{uuid.uuid4().hex[:10]}@example.com"
    async with Browser(client.app) as browser:
        await log_in(browser, person)
        registered = await submit(browser, "/register", "/register", email=email,
                                  password=PASSWORD)
        assert registered.status_code == 200
        before = browser.cookies["session"]
        assert (await browser.get(smtp.link_to(email, "/verify-email"))).status_code == 200
        assert browser.cookies["session"] != before and await logged_in(browser)


async def reset_password(browser: httpx.AsyncClient, smtp, email: str) -> httpx.Response:
    await submit(browser, "/forgot-password", "/forgot-password", email=email)
    link = smtp.link_to(email, "/reset-password")
    form = await browser.get(link)
    return await browser.post("/reset-password", data={
        "_csrf_token": csrf_of(form), "token": link.split("token=")[1],
        "password": NEW_PASSWORD})


async def test_password_reset_ends_other_sessions_and_revokes_app_tokens(client, partner,
                                                                         smtp, db):
    person = await new_member(client)
    app = await new_app(client, partner)
    async with Browser(client.app) as here, Browser(client.app) as elsewhere:
        await log_in(here, person)
        await log_in(elsewhere, person)
        verifier = generate_token(48)
        token = await app.fetch_token(
            f"{BASE}/oauth/token", code_verifier=verifier,
            authorization_response=await authorize(elsewhere, app, verifier))
        balance = f"/api/v1/members/{person.member_id}/balance"
        assert (await app.get(balance)).status_code == 200
        before = here.cookies["session"]

        done = await reset_password(here, smtp, person.email)
        assert done.status_code == 302
        # The browser that reset stays logged in, under a new id.
        assert here.cookies["session"] != before and await logged_in(here)
        # The other session has ended, for good.
        assert not await logged_in(elsewhere)
        user_id = await db.fetchval("SELECT id FROM users WHERE email = $1", person.email)
        assert await db.fetchval("SELECT count(*) FROM web_sessions WHERE user_id = $1",
                                 user_id) == 1
        # The app's tokens are revoked: no API call, no refresh.
        assert (await app.get(balance)).status_code == 401
        refresh = await client.post("/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
            auth=(app.client_id, app.client_secret))
        assert refresh.json()["error"] == "invalid_grant"
        assert await db.fetchval("SELECT count(*) FROM oauth_tokens WHERE user_id = $1"
                                 " AND revoked_at IS NULL", user_id) == 0


async def test_a_reset_from_another_browser_ends_every_session(client, smtp, db):
    person = await new_member(client)
    async with Browser(client.app) as logged, Browser(client.app) as anonymous:
        await log_in(logged, person)
        assert (await reset_password(anonymous, smtp, person.email)).status_code == 302
        assert not await logged_in(logged)
        assert "session" not in anonymous.cookies
        assert await db.fetchval(
            "SELECT count(*) FROM web_sessions s JOIN users u ON u.id = s.user_id"
            " WHERE u.email = $1", person.email) == 0


async def test_anonymous_page_views_store_no_session(browser, db):
    before = await db.fetchval("SELECT count(*) FROM web_sessions")
    for path in ("/", "/login", "/register", "/forgot-password", "/resend-verification",
                 "/portal", "/member"):
        response = await browser.get(path)
        assert session_cookies(response) == [], path
    failed = await submit(browser, "/login", "/login", email="nobody@example.com",
                          password="wrong password 1")
    assert failed.status_code == 401 and session_cookies(failed) == []
    assert await db.fetchval("SELECT count(*) FROM web_sessions") == before
    # A stale cookie on an anonymous page: nothing stored, and the browser drops it.
    plant(browser, secrets.token_hex(32))
    response = await browser.get("/login")
    assert [c.split(";")[0] for c in session_cookies(response)] == ["session=null"]
    assert "session" not in browser.cookies
    assert await db.fetchval("SELECT count(*) FROM web_sessions") == before


async def test_the_store_keeps_hashes_and_the_owner(client, db):
    person = await new_member(client)
    async with Browser(client.app) as browser:
        await log_in(browser, person)
        session_id = browser.cookies["session"]
    row = await db.fetchrow("SELECT s.key_hash, u.email FROM web_sessions s"
                            " JOIN users u ON u.id = s.user_id WHERE s.key_hash = $1",
                            digest(session_id))
    assert row is not None and row["email"] == person.email
    assert await db.fetchval("SELECT count(*) FROM web_sessions WHERE key_hash = $1"
                             " OR position($2 IN value) > 0",
                             session_id, session_id.encode()) == 0


async def test_an_ended_session_is_not_brought_back(client, db):
    """A request still in flight when its session ended (a logout elsewhere, a reset)
    saves its session only if the row is still there."""
    store = PostgresSessionStore(lambda: client.app.state.db)
    session_id = secrets.token_hex(32)
    await store.set(session_id, b'{"user_id": null}', expires_in=60)
    assert await store.replace(session_id, b'{"a": 1}', expires_in=60)
    await store.delete(session_id)
    assert not await store.replace(session_id, b'{"a": 2}', expires_in=60)
    assert await store.get(session_id) is None
    assert await db.fetchval("SELECT count(*) FROM web_sessions WHERE key_hash = $1",
                             digest(session_id)) == 0


async def test_maintenance_purges_expired_sessions_and_old_login_attempts(db, settings):
    expired, live = secrets.token_hex(32), secrets.token_hex(32)
    await db.execute("INSERT INTO web_sessions (key_hash, value, expires_at) VALUES"
                     " ($1, '{}', now() - interval '1 minute'),"
                     " ($2, '{}', now() + interval '1 hour')", digest(expired), digest(live))
    marker = uuid.uuid4().hex[:10]
    now = clock.now()
    await db.execute("INSERT INTO login_attempts (email, ip, succeeded, created_at) VALUES"
                     " ($1, '203.0.113.9', false, $2), ($3, '203.0.113.9', false, $4)",
                     f"old-{marker}@example.com", now - timedelta(days=2),
                     f"new-{marker}@example.com", now - timedelta(minutes=10))
    async with db.acquire() as conn:
        purged = await maintenance_pass(conn, settings)
    assert purged["web_sessions"] >= 1 and purged["login_attempts"] >= 1
    left = await db.fetch("SELECT key_hash FROM web_sessions WHERE key_hash = ANY($1)",
                          [digest(expired), digest(live)])
    assert [r["key_hash"] for r in left] == [digest(live)]
    emails = await db.fetch("SELECT email FROM login_attempts WHERE email LIKE $1",
                            f"%-{marker}@example.com")
    assert [r["email"] for r in emails] == [f"new-{marker}@example.com"]


async def test_session_cookie_flags(client, settings, database_url):
    person = await new_member(client)
    async with Browser(client.app) as browser:
        login = await submit(browser, "/login", "/login", email=person.email, password=PASSWORD)
    [cookie] = session_cookies(login)
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=lax", "path=/"} <= flags
    assert "secure" not in flags                     # tests run over plain http
    production = create_app(settings.model_copy(update={"env": "production"}), database_url)
    async with LifespanManager(production), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=production), base_url=f"https://{HOST}") as https:
        login = await submit(https, "/login", "/login", email=person.email, password=PASSWORD)
        assert login.status_code == 302
        [cookie] = session_cookies(login)
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=lax", "secure", "path=/"} <= flags
        assert await logged_in(https)
