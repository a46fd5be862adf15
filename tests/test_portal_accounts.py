"""People's accounts through the portal: sign-up, email verification over real SMTP,
login with sessions, CSRF, throttling, password reset, operators from the CLI."""

import hashlib
import uuid

from tests.portal import csrf_of, submit


def address() -> str:
    return f"person-{uuid.uuid4().hex[:10]}@example.com"


async def register(browser, email: str, password: str = "correct horse battery") -> None:
    response = await submit(browser, "/register", "/register", email=email, name="Ola Nowak",
                            password=password)
    assert response.status_code == 200, response.text
    assert "Check your email" in response.text


async def test_member_signs_up_verifies_and_sees_balance_from_partner(browser, partner, smtp):
    email = address()
    member_id = await partner.enroll(email=email)
    await partner.earn(member_id, 120)
    await register(browser, email)
    # Not verified yet: no login.
    early = await submit(browser, "/login", "/login", email=email,
                         password="correct horse battery")
    assert early.status_code == 401 and "Confirm your email" in early.text
    verify = await browser.get(smtp.link_to(email, "/verify-email"))
    assert verify.status_code == 200 and "confirmed" in verify.text
    again = await browser.get(smtp.link_to(email, "/verify-email"))
    assert again.status_code == 400                      # single use
    login = await submit(browser, "/login", "/login", email=email,
                         password="correct horse battery")
    assert login.status_code == 302 and login.headers["location"] == "/member"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    home = await browser.get("/member")
    assert home.status_code == 200
    assert '<strong id="available">120</strong>' in home.text
    assert "Test Brand" in home.text
    # Logged-in pages of other kinds are refused.
    assert (await browser.get("/operator")).status_code == 403
    logout = await browser.post("/logout", data={"_csrf_token": csrf_of(home)})
    assert logout.status_code == 302
    assert (await browser.get("/member")).headers["location"].startswith("/login")


async def test_registration_validates_fields_and_saves_nothing(browser, db):
    response = await submit(browser, "/register", "/register", email="nope", password="short")
    assert response.status_code == 400
    assert 'id="email-error"' in response.text and 'id="password-error"' in response.text
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = 'nope'") == 0


async def test_forms_require_csrf_token(browser):
    await browser.get("/login")
    response = await browser.post("/login", data={"email": "a@b.cd", "password": "x" * 12})
    assert response.status_code == 403


async def test_repeated_failures_are_throttled(browser, smtp):
    email = address()
    await register(browser, email)
    await browser.get(smtp.link_to(email, "/verify-email"))
    for _ in range(5):
        failed = await submit(browser, "/login", "/login", email=email, password="wrong-password")
        assert failed.status_code == 401 and "Wrong email address or password" in failed.text
    blocked = await submit(browser, "/login", "/login", email=email,
                           password="correct horse battery")
    assert blocked.status_code == 429
    assert "Too many failed attempts" in blocked.text


async def test_password_reset_by_single_use_emailed_link(browser, smtp, db):
    email = address()
    await register(browser, email)
    await browser.get(smtp.link_to(email, "/verify-email"))
    sent = await submit(browser, "/forgot-password", "/forgot-password", email=email)
    assert "If an account exists" in sent.text
    unknown = await submit(browser, "/forgot-password", "/forgot-password",
                           email=address())
    assert unknown.text == sent.text.replace(email, email)   # no account enumeration
    link = smtp.link_to(email, "/reset-password")
    token = link.split("token=")[1]
    form = await browser.get(link)
    short = await browser.post("/reset-password", data={
        "_csrf_token": csrf_of(form), "token": token, "password": "short"})
    assert short.status_code == 400
    done = await browser.post("/reset-password", data={
        "_csrf_token": csrf_of(form), "token": token, "password": "a brand new secret"})
    assert done.status_code == 302
    reuse = await browser.post("/reset-password", data={
        "_csrf_token": csrf_of(form), "token": token, "password": "another new secret"})
    assert reuse.status_code == 400
    login = await submit(browser, "/login", "/login", email=email, password="a brand new secret")
    assert login.status_code == 302
    stored = await db.fetchval("SELECT password_hash FROM users WHERE email = $1", email)
    assert stored.startswith("$argon2id$")
    assert await db.fetchval("SELECT count(*) FROM user_tokens WHERE token_hash = $1",
                             token) == 0     # tokens are stored hashed


async def test_login_redirects_only_to_local_paths(browser, smtp):
    email = address()
    await register(browser, email)
    await browser.get(smtp.link_to(email, "/verify-email"))
    page = await browser.get("/login?next=//evil.example/")
    response = await browser.post("/login", data={
        "_csrf_token": csrf_of(page), "email": email, "password": "correct horse battery",
        "next": "//evil.example/"})
    assert response.headers["location"] == "/member"


async def test_operator_created_by_cli_can_log_in(browser, database_url):
    from tests.test_cli import coalition

    email = address()
    result = coalition(database_url, "operators", "create", "--email", email,
                       "--password", "operator secret 1")
    assert result.returncode == 0, result.stderr
    login = await submit(browser, "/login", "/login", email=email, password="operator secret 1")
    assert login.headers["location"] == "/operator"
    home = await browser.get("/operator")
    assert home.status_code == 200 and "Coalition operator" in home.text
    duplicate = coalition(database_url, "operators", "create", "--email", email,
                          "--password", "operator secret 1")
    assert duplicate.returncode == 1


async def test_sessions_live_in_postgres(browser, smtp, db):
    email = address()
    await register(browser, email)
    await browser.get(smtp.link_to(email, "/verify-email"))
    await submit(browser, "/login", "/login", email=email, password="correct horse battery")
    session_id = browser.cookies.get("session")
    assert session_id
    # Stored under the id's SHA-256 only (tests/test_sessions.py).
    assert await db.fetchval("SELECT count(*) FROM web_sessions WHERE key_hash = $1",
                             hashlib.sha256(session_id.encode()).hexdigest()) == 1
