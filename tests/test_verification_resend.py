"""A new email-verification link on request: from the login page, by email for people
who cannot log in, and from a button for a logged-in account whose address is not
confirmed. Each new link replaces the unused earlier ones; asking is limited to once a
minute per account."""

import re

from tests.portal import csrf_of, submit
from tests.test_portal_accounts import address, register

PASSWORD = "correct horse battery"


def mails_to(smtp, email: str) -> int:
    return sum(1 for message in smtp.messages if message["To"] == email)


async def a_minute_passes(db, email: str) -> None:
    """Age the account's verification links by two minutes, as if time had passed."""
    await db.execute("UPDATE user_tokens SET expires_at = expires_at - interval '2 minutes'"
                     " WHERE user_id = (SELECT id FROM users WHERE email = $1)", email)


async def test_resend_by_email_replaces_the_earlier_link(browser, smtp, db):
    email = address()
    await register(browser, email)
    first = smtp.link_to(email, "/verify-email")
    form = await browser.get("/resend-verification")
    assert form.status_code == 200 and 'action="/resend-verification"' in form.text

    too_soon = await submit(browser, "/resend-verification", "/resend-verification",
                            email=email)
    assert too_soon.status_code == 200 and "If an account" in too_soon.text
    assert mails_to(smtp, email) == 1                  # within the minute: nothing sent

    await a_minute_passes(db, email)
    sent = await submit(browser, "/resend-verification", "/resend-verification", email=email)
    assert sent.text == too_soon.text                  # the same answer either way
    assert mails_to(smtp, email) == 2
    second = smtp.link_to(email, "/verify-email")
    assert second != first
    assert (await browser.get(first)).status_code == 400          # replaced
    assert (await browser.get(second)).status_code == 200
    login = await submit(browser, "/login", "/login", email=email, password=PASSWORD)
    assert login.status_code == 302


async def test_resend_reveals_nothing_about_accounts(browser, smtp, db):
    unknown = address()
    answer = await submit(browser, "/resend-verification", "/resend-verification",
                          email=unknown)
    assert answer.status_code == 200
    assert mails_to(smtp, unknown) == 0
    verified = address()
    await register(browser, verified)
    await browser.get(smtp.link_to(verified, "/verify-email"))
    await a_minute_passes(db, verified)
    again = await submit(browser, "/resend-verification", "/resend-verification",
                         email=verified)
    assert again.text == answer.text
    assert mails_to(smtp, verified) == 1               # already confirmed: nothing sent


async def test_resend_needs_the_csrf_token(browser):
    await browser.get("/resend-verification")
    refused = await browser.post("/resend-verification", data={"email": address()})
    assert refused.status_code == 403


async def test_login_page_offers_a_new_link_after_the_right_password(browser, smtp, db):
    email = address()
    await register(browser, email)
    wrong = await submit(browser, "/login", "/login", email=email, password="not the password")
    assert 'id="resend"' not in wrong.text
    early = await submit(browser, "/login", "/login", email=email, password=PASSWORD)
    assert early.status_code == 401 and 'id="resend"' in early.text
    assert "Resend verification email" in early.text
    await a_minute_passes(db, email)
    sent = await browser.post("/resend-verification", data={
        "_csrf_token": csrf_of(early), "email": email})
    assert sent.status_code == 200 and mails_to(smtp, email) == 2


async def test_logged_in_unconfirmed_account_gets_a_throttled_resend_button(browser, smtp, db):
    email = address()
    await register(browser, email)
    await browser.get(smtp.link_to(email, "/verify-email"))
    await submit(browser, "/login", "/login", email=email, password=PASSWORD)
    home = await browser.get("/member")
    assert 'id="unverified"' not in home.text             # confirmed: no button
    # The address becomes unconfirmed again (as after an email change).
    await db.execute("UPDATE users SET email_verified_at = NULL WHERE email = $1", email)
    await a_minute_passes(db, email)
    home = await browser.get("/member")
    assert 'id="unverified"' in home.text and "Resend verification email" in home.text
    assert 'action="/account/resend-verification"' in home.text

    no_csrf = await browser.post("/account/resend-verification")
    assert no_csrf.status_code == 403
    sent = await browser.post("/account/resend-verification",
                              data={"_csrf_token": csrf_of(home)})
    assert sent.status_code == 200 and f"new confirmation link to {email}" in sent.text
    assert mails_to(smtp, email) == 2
    link = smtp.link_to(email, "/verify-email")

    again = await browser.post("/account/resend-verification",
                               data={"_csrf_token": csrf_of(home)})
    assert again.status_code == 429
    assert re.search(r"Wait \d+ seconds", again.text)
    assert 0 < int(again.headers["retry-after"]) <= 60
    assert mails_to(smtp, email) == 2

    assert (await browser.get(link)).status_code == 200
    assert 'id="unverified"' not in (await browser.get("/member")).text
    done = await browser.post("/account/resend-verification",
                              data={"_csrf_token": csrf_of(home)})
    assert done.status_code == 200 and "already confirmed" in done.text


async def test_resend_button_needs_a_login(browser):
    page = await browser.get("/login")
    response = await browser.post("/account/resend-verification",
                                  data={"_csrf_token": csrf_of(page)})
    assert response.status_code == 302 and response.headers["location"].startswith("/login")
