"""No secret or token appears in the logs.

Every logger of the process is turned up to DEBUG and captured (the app served over real
HTTP by uvicorn, its access log, Authlib, SQLAlchemy, asyncpg, Litestar, the mail
server…) while people and a partner's server do everything that handles a secret:
password logins, the console's client creation and secret rotation, client-credentials
tokens, API calls with the bearer token, introspection and revocation, a staff
invitation, email verification and a password reset. None of the passwords, client
secrets, access tokens, emailed tokens, session ids or CSRF tokens may appear in any
record."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

import httpx

from coalition.referrals import ensure_code
from tenants.accounts import create_user
from tenants.service import create_partner
from tests.portal import csrf_of
from tests.rewards_helpers import make_reward
from web.logs import REDACTED, redact, scrub


@contextmanager
def every_log_record() -> Iterator[list[logging.LogRecord]]:
    """Like caplog at DEBUG, but for every logger: also those that do not propagate to
    the root logger (Litestar's own) and those with a level of their own."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(logging.DEBUG)
    loggers = [logging.getLogger(), *(item for item in logging.root.manager.loggerDict.values()
                                      if isinstance(item, logging.Logger))]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if logger is logging.getLogger() or not logger.propagate:
            logger.addHandler(keep)
    try:
        yield records
    finally:
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled
            logger.removeHandler(keep)


def everything_logged(record: logging.LogRecord) -> str:
    text = logging.Formatter("%(name)s %(levelname)s %(message)s").format(record)
    return f"{text} {record.args!r}"


def shown(pattern: str, response: httpx.Response) -> str:
    match = re.search(pattern, response.text)
    assert match, response.text[:1000]
    return match.group(1)


async def post_form(web: httpx.AsyncClient, page_path: str, action: str,
                    fields: list[tuple[str, str]]) -> httpx.Response:
    page = await web.get(page_path)
    return await web.post(action, content=urlencode([("_csrf_token", csrf_of(page)), *fields]),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})


async def log_in(web: httpx.AsyncClient, email: str, password: str, secrets: dict) -> None:
    response = await post_form(web, "/login", "/login",
                               [("email", email), ("password", password)])
    assert response.status_code == 302, response.text
    secrets[f"session id of {email}"] = web.cookies["session"]
    secrets[f"csrf cookie of {email}"] = web.cookies["csrftoken"]


async def test_no_secret_or_token_appears_in_logs(live_server, client, smtp):
    secrets: dict[str, str] = {}
    owner = f"owner-{uuid.uuid4().hex[:8]}@logs.example"
    secrets["owner password"] = f"owner pw {uuid.uuid4().hex}"
    async with client.app.state.sessionmaker() as session:
        partner = await create_partner(session, "Log Brand", slug=f"l-{uuid.uuid4().hex[:10]}")
        await create_user(session, owner, "partner_staff", partner_id=partner.id, role="owner",
                          password=secrets["owner password"], verified=True)
        await session.commit()

    with every_log_record() as records:
        async with httpx.AsyncClient(base_url=live_server.url) as web:  # the owner's browser
            await log_in(web, owner, secrets["owner password"], secrets)
            created = await post_form(web, "/partner/clients", "/partner/clients", [
                ("name", "POS"), ("scope", "members:read"), ("scope", "members:write"),
                ("scope", "points:earn")])
            client_id = shown(r'id="client-id">([^<]+)<', created)
            secrets["client secret"] = shown(r'id="client-secret">([^<]+)<', created)
            listing = await web.get("/partner/clients")
            pk = shown(r"/partner/clients/([0-9a-f-]{36})/rotate", listing)
            rotated = await web.post(f"/partner/clients/{pk}/rotate",
                                     data={"_csrf_token": csrf_of(listing)})
            secrets["rotated client secret"] = shown(r'id="client-secret">([^<]+)<', rotated)

            staff = f"staff-{uuid.uuid4().hex[:8]}@logs.example"
            invited = await post_form(web, "/partner/staff", "/partner/staff",
                                      [("email", staff), ("role", "analyst")])
            assert invited.status_code == 302
            invitation = smtp.link_to(staff, "/set-password")
            secrets["invitation token"] = invitation.split("token=")[1]

        async with httpx.AsyncClient(base_url=live_server.url) as server:  # partner's server
            issued = await server.post("/oauth/token", data={"grant_type": "client_credentials"},
                                       auth=(client_id, secrets["rotated client secret"]))
            assert issued.status_code == 200, issued.text
            secrets["access token"] = issued.json()["access_token"]
            second = await server.post("/oauth/token", data={
                "grant_type": "client_credentials", "client_id": client_id,
                "client_secret": secrets["client secret"]})           # old secret, in grace
            assert second.status_code == 200, second.text
            secrets["second access token"] = second.json()["access_token"]
            bearer = {"Authorization": f"Bearer {secrets['access token']}"}
            member_email = f"member-{uuid.uuid4().hex[:8]}@logs.example"
            enrolled = await server.post("/api/v1/members", json={"email": member_email},
                                         headers={**bearer, "Idempotency-Key": "k1"})
            assert enrolled.status_code == 201, enrolled.text
            member_id = enrolled.json()["id"]
            earned = await server.post("/api/v1/earn", json={"member_id": member_id,
                                                             "points": 40},
                                       headers={**bearer, "Idempotency-Key": "k2"})
            assert earned.status_code == 201, earned.text
            assert (await server.get(f"/api/v1/members/{member_id}/balance",
                                     headers=bearer)).status_code == 200
            introspected = await server.post(
                "/oauth/introspect", data={"token": secrets["second access token"]},
                auth=(client_id, secrets["rotated client secret"]))
            assert introspected.json()["active"] is True
            revoked = await server.post("/oauth/revoke", data={
                "token": secrets["second access token"], "client_id": client_id,
                "client_secret": secrets["rotated client secret"]})
            assert revoked.status_code == 200
            refused = await server.get(
                "/api/v1/members",
                headers={"Authorization": f"Bearer {secrets['second access token']}"})
            assert refused.status_code == 401
            wrong = await server.post("/oauth/token", data={"grant_type": "client_credentials"},
                                      auth=(client_id, "not-the-secret-" + uuid.uuid4().hex))
            assert wrong.status_code == 401

        async with httpx.AsyncClient(base_url=live_server.url) as web:  # the staff member
            secrets["staff password"] = f"staff pw {uuid.uuid4().hex}"
            form = await web.get(invitation)
            accepted = await web.post("/set-password", data={
                "_csrf_token": csrf_of(form), "token": secrets["invitation token"],
                "password": secrets["staff password"]})
            assert accepted.status_code == 302
            await log_in(web, staff, secrets["staff password"], secrets)

        async with httpx.AsyncClient(base_url=live_server.url) as web:  # the member
            secrets["member password"] = f"member pw {uuid.uuid4().hex}"
            registered = await post_form(web, "/register", "/register", [
                ("email", member_email), ("password", secrets["member password"])])
            assert registered.status_code == 200
            verification = smtp.link_to(member_email, "/verify-email")
            secrets["verification token"] = verification.split("token=")[1]
            assert (await web.get(verification)).status_code == 200
            await log_in(web, member_email, secrets["member password"], secrets)
            assert "40</strong>" in (await web.get("/member")).text
            failed = await post_form(web, "/login", "/login", [
                ("email", member_email), ("password", "wrong " + secrets["member password"])])
            assert failed.status_code == 401

            asked = await post_form(web, "/forgot-password", "/forgot-password",
                                    [("email", member_email)])
            assert asked.status_code == 200
            reset = smtp.link_to(member_email, "/reset-password")
            secrets["reset token"] = reset.split("token=")[1]
            secrets["new member password"] = f"new member pw {uuid.uuid4().hex}"
            form = await web.get(reset)
            done = await web.post("/reset-password", data={
                "_csrf_token": csrf_of(form), "token": secrets["reset token"],
                "password": secrets["new member password"]})
            assert done.status_code == 302
            await log_in(web, member_email, secrets["new member password"], secrets)
            home = await web.get("/member")
            assert (await web.post("/logout", data={"_csrf_token": csrf_of(home)})
                    ).status_code == 302

    logged = [(record.name, everything_logged(record)) for record in records]
    for label, value in secrets.items():
        assert len(value) >= 16, label
        leaks = [text for _, text in logged if value in text]
        assert not leaks, f"the {label} appears in the logs: {leaks[:3]}"

    # The capture did see the places where secrets would have shown up.
    access = [text for name, text in logged if name == "uvicorn.access"]
    for path in ("/set-password", "/verify-email", "/reset-password"):
        assert any(f"GET {path}?token={REDACTED}" in text for text in access), path
    assert any("POST /oauth/token" in text for text in access)
    assert any(name.startswith("authlib") and f"'access_token': '{REDACTED}'" in text
               for name, text in logged)
    assert any(name.startswith("sqlalchemy.engine") for name, _ in logged)


async def test_codes_card_numbers_and_customer_ids_stay_out_of_the_access_log(
        live_server, partner, db):
    """A voucher code spends the voucher; a card number, a customer id or a referral code
    singles out a member. None reaches a log line, while each line still shows which route
    was called. The SQL engine's DEBUG echo of query parameters is the one record allowed
    to hold them: it is what that logger is for, and it is off at INFO."""
    customer_id = f"CRM-{uuid.uuid4().hex[:12]}"
    member = await partner.enroll(partner_customer_id=customer_id)
    card_number = (await partner.get(f"/api/v1/members/{member}")).json()["card_number"]
    await partner.earn(member, 300)
    reward = await make_reward(db, partner.partner_id)
    redeemed = await partner.post(f"/api/v1/rewards/{reward}/redemptions",
                                  {"member_id": member})
    assert redeemed.status_code == 201, redeemed.text
    voucher = redeemed.json()["voucher"]["code"]
    referral = await ensure_code(db, uuid.UUID(member))
    affiliate = f"AFF{uuid.uuid4().hex[:10].upper()}"
    identifiers = {"voucher code": voucher, "card number": card_number,
                   "customer id": customer_id, "referral code": referral,
                   "affiliate code": affiliate}

    with every_log_record() as records:
        async with httpx.AsyncClient(base_url=live_server.url, headers=partner.auth) as server:
            checked = await server.get(f"/api/v1/vouchers/{voucher}")
            assert checked.status_code == 200, checked.text
            used = await server.post(f"/api/v1/vouchers/{voucher}/consume",
                                     json={"order_id": "TILL-9"},
                                     headers={"Idempotency-Key": uuid.uuid4().hex})
            assert used.status_code == 200, used.text
            found = await server.get("/api/v1/members", params={
                "card_number": card_number, "partner_customer_id": customer_id})
            assert [item["id"] for item in found.json()["items"]] == [member]
            assert (await server.get("/api/v1/members",
                                     params={"card_number": card_number})).status_code == 200
        async with httpx.AsyncClient(base_url=live_server.url) as browser:
            assert (await browser.get(f"/join/{referral}")).status_code == 200
            assert (await browser.get(f"/r/{affiliate}/newsletter")).status_code == 302

    logged = [(record.name, everything_logged(record)) for record in records]
    for label, value in identifiers.items():
        leaks = [text for name, text in logged
                 if value in text and not name.startswith("sqlalchemy.engine")]
        assert not leaks, f"the {label} appears in the logs: {leaks[:3]}"
    access = " ".join(text for name, text in logged if name == "uvicorn.access")
    for line in (f"GET /api/v1/vouchers/{REDACTED} HTTP/1.1",
                 f"POST /api/v1/vouchers/{REDACTED}/consume HTTP/1.1",
                 f"GET /api/v1/members?card_number={REDACTED}"
                 f"&partner_customer_id={REDACTED} HTTP/1.1",
                 f"GET /join/{REDACTED} HTTP/1.1", f"GET /r/{REDACTED}/newsletter HTTP/1.1"):
        assert line in access, (line, access)


def test_redaction_patterns():
    assert redact("GET /reset-password?token=abc-DEF_1 HTTP/1.1") == (
        f"GET /reset-password?token={REDACTED} HTTP/1.1")
    assert redact("/oauth/authorize?client_id=c1&code=XYZ&state=s") == (
        f"/oauth/authorize?client_id=c1&code={REDACTED}&state=s")
    assert redact("client_secret=s3cr3t&grant_type=client_credentials") == (
        f"client_secret={REDACTED}&grant_type=client_credentials")
    assert redact("Cookie: session=abc123; csrftoken=zz") == (
        f"Cookie: session={REDACTED}; csrftoken={REDACTED}")
    assert redact("{'token_type': 'Bearer', 'access_token': 'A1', 'expires_in': 3600}") == (
        f"{{'token_type': 'Bearer', 'access_token': '{REDACTED}', 'expires_in': 3600}}")
    assert redact('{"password": "correct horse"}') == f'{{"password": "{REDACTED}"}}'
    assert redact("Authorization: Bearer abcdefghijklmnop") == f"Authorization: Bearer {REDACTED}"
    assert redact("postgresql://app:hunter2@db:5432/x") == f"postgresql://app:{REDACTED}@db:5432/x"
    assert redact('"GET /api/v1/vouchers/ABCD-EFGH-JKMN-PQRS/consume HTTP/1.1" 200') == (
        f'"GET /api/v1/vouchers/{REDACTED}/consume HTTP/1.1" 200')
    assert redact("/api/v1/members?card_number=4006&partner_customer_id=C-1&limit=5") == (
        f"/api/v1/members?card_number={REDACTED}&partner_customer_id={REDACTED}&limit=5")
    assert redact("https://coalition.example/join/K7QW2MXP?x=1 path=/r/AFF1") == (
        f"https://coalition.example/join/{REDACTED}?x=1 path=/r/{REDACTED}")
    # Nothing secret: unchanged.
    for text in ('Bearer realm="coalition"', "status_code=200", "postgresql://app@db/x",
                 "GET /api/v1/members?cursor=abc&limit=5 HTTP/1.1",
                 "GET /partner/vouchers HTTP/1.1", "POST /api/v1/rewards/5/redemptions",
                 "/usr/share/r/x"):
        assert redact(text) == text


def test_scrubbed_access_log_records_still_format():
    """uvicorn's access formatter unpacks record.args: redaction keeps their shape."""
    from uvicorn.logging import AccessFormatter

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/verify-email?token=abc", "1.1", 200),
                               None)
    scrub(record)
    assert record.args[2] == f"/verify-email?token={REDACTED}" and record.args[4] == 200
    line = AccessFormatter('%(client_addr)s "%(request_line)s" %(status_code)s',
                           use_colors=False).format(record)
    assert line == f'127.0.0.1:5000 "GET /verify-email?token={REDACTED} HTTP/1.1" 200 OK'

    # A secret spliced into the format string itself: the whole message is replaced.
    spliced = logging.LogRecord("x", logging.INFO, __file__, 1, "link /reset?token=%s", ("t1",),
                                None)
    scrub(spliced)
    assert spliced.getMessage() == f"link /reset?token={REDACTED}"
