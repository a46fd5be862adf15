"""The whole partner-and-member journey in a real browser (Debian's Chromium through
Playwright) against the app served over real HTTP:

a company applies to become a partner → an operator approves it → the owner follows the
emailed invitation, sets a password and logs in → creates a server OAuth client and
reads its one-time secret from the page → the partner's server (httpx, real HTTP) gets a
token, enrols a member by email and issues points → the member signs up with the same
email, confirms it from the inbox, logs in and sees the points and the partner's name →
the owner registers the shop's app → the member connects it through the authorization-code
flow (PKCE) with consent, and the app reads the balance → the member disconnects the
brand under Connected brands → the app's token no longer works.

Every step saves a screenshot, numbered in step order, under
tests/output/browser_journey/. The steps share a `Story`."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client

from tests.browser import Journey, Screenshots, fill_form, log_in, submit
from tests.test_cli import coalition
from tests.test_onboarding import application

pytestmark = pytest.mark.slow


@dataclass
class Story:
    """What the steps learn and pass on."""

    base_url: str
    database_url: object
    application: dict
    operator_email: str = ""
    operator_password: str = "operator secret 1"
    owner_password: str = "owner secret 123"
    client_id: str = ""
    client_secret: str = ""
    access_token: str = ""
    member_email: str = ""
    member_password: str = "member secret 123"
    member_id: str = ""
    points: int = 250
    shop: ShopSite | None = None
    app_client_id: str = ""
    app_client_secret: str = ""
    app_token: str = ""

    @property
    def partner_name(self) -> str:
        return self.application["company_name"]

    @property
    def owner_email(self) -> str:
        return self.application["contact_email"]


async def step_apply(journey: Journey, story: Story) -> None:
    page = await journey.person()
    await page.goto("/partners/apply")
    form = dict(story.application)
    form.pop("accept_terms"), form.pop("terms_version")
    await fill_form(page, form)
    await page.get_by_role("checkbox").check()
    await journey.shot(page, "apply")
    await submit(page, "Apply")
    assert await page.get_by_role("heading").inner_text() == "Application received"
    await journey.shot(page, "application-received")


async def step_operator_approves(journey: Journey, story: Story) -> None:
    story.operator_email = f"op-{uuid.uuid4().hex[:8]}@coalition.example"
    created = coalition(story.database_url, "operators", "create", "--email",
                        story.operator_email, "--password", story.operator_password)
    assert created.returncode == 0, created.stderr
    page = await journey.person()
    await log_in(page, story.operator_email, story.operator_password, "/operator")
    await page.goto("/operator/partners")
    await journey.shot(page, "operator-queue")
    async with page.expect_navigation():
        await page.get_by_role("link", name=story.partner_name).first.click()
    assert await page.locator("#status").inner_text() == "applied"
    await submit(page, "Approve")
    assert await page.locator("#status").inner_text() == "active"
    await journey.shot(page, "operator-approved")


async def step_owner_accepts_invitation(journey: Journey, story: Story) -> None:
    page = await journey.person()
    await page.goto(journey.mail_link(story.owner_email, "/set-password"))
    await fill_form(page, {"password": story.owner_password})
    await journey.shot(page, "owner-sets-password")
    await submit(page, "Save password")
    await log_in(page, story.owner_email, story.owner_password, "/partner")
    assert await page.get_by_role("heading", level=1).inner_text() == story.partner_name
    await journey.shot(page, "partner-console")
    journey.pages["owner"] = page


async def step_owner_creates_server_client(journey: Journey, story: Story) -> None:
    page = journey.pages["owner"]
    await page.get_by_role("link", name="API clients").click()
    await page.wait_for_url("**/partner/clients")
    await fill_form(page, {"name": "Shop server"}, within="#new-server-client")
    await submit(page, "Create client")
    story.client_id = await page.locator("#client-id").inner_text()
    story.client_secret = await page.locator("#client-secret").inner_text()
    assert story.client_id and len(story.client_secret) >= 32
    await journey.shot(page, "client-secret-shown-once")
    await page.goto("/partner/clients")
    assert story.client_secret not in await page.content()


async def step_partner_server_enrols_and_earns(journey: Journey, story: Story) -> None:
    """The partner's own server, over real HTTP: no browser."""
    story.member_email = f"klient-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(base_url=story.base_url) as server:
        token = await server.post("/oauth/token", data={"grant_type": "client_credentials"},
                                  auth=(story.client_id, story.client_secret))
        assert token.status_code == 200, token.text
        story.access_token = token.json()["access_token"]
        bearer = {"Authorization": f"Bearer {story.access_token}"}
        enrolled = await server.post(
            "/api/v1/members", json={"email": story.member_email, "name": "Anna Klient"},
            headers={**bearer, "Idempotency-Key": uuid.uuid4().hex})
        assert enrolled.status_code == 201, enrolled.text
        story.member_id = enrolled.json()["id"]
        earned = await server.post(
            "/api/v1/earn", json={"member_id": story.member_id, "points": story.points,
                                  "order_id": "ORDER-1", "description": "First purchase"},
            headers={**bearer, "Idempotency-Key": uuid.uuid4().hex})
        assert earned.status_code == 201, earned.text
        balance = await server.get(f"/api/v1/members/{story.member_id}/balance",
                                   headers=bearer)
        assert balance.json()["available"] == story.points


async def step_member_signs_up_and_sees_points(journey: Journey, story: Story) -> None:
    page = await journey.person()
    await page.goto("/register")
    await fill_form(page, {"name": "Anna Klient", "email": story.member_email,
                           "password": story.member_password})
    await journey.shot(page, "member-registers")
    await submit(page, "Create account")
    assert await page.get_by_role("heading").inner_text() == "Check your email"
    await journey.shot(page, "member-check-email")
    await page.goto(journey.mail_link(story.member_email, "/verify-email"))
    assert await page.get_by_role("heading").inner_text() == "Email confirmed"
    await journey.shot(page, "member-email-confirmed")
    await log_in(page, story.member_email, story.member_password, "/member")
    assert await page.locator("#available").inner_text() == str(story.points)
    brands = await page.locator("ul").first.inner_text()
    assert story.partner_name in brands
    assert story.partner_name in await page.locator("#history").inner_text()
    await journey.shot(page, "member-sees-points")
    journey.pages["member"] = page


class ShopSite:
    """The partner's own website, a real HTTP server on loopback: it records where the
    browser was sent back to (Playwright does not intercept redirected requests)."""

    def __init__(self) -> None:
        arrived = self.arrived = []

        class Callback(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                arrived.append(self.path)
                body = b"<!doctype html><title>Shop</title><h1>Connected to the shop</h1>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Callback)
        self.callback = f"http://127.0.0.1:{self.server.server_port}/oauth/callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def shop_site() -> Iterator[ShopSite]:
    site = ShopSite()
    yield site
    site.close()


async def step_owner_creates_app_client(journey: Journey, story: Story) -> None:
    page = journey.pages["owner"]
    await page.goto("/partner/clients")
    await fill_form(page, {"name": "Shop app", "redirect_uris": story.shop.callback},
                    within="#new-app-client")
    await submit(page, "Create app")
    story.app_client_id = await page.locator("#client-id").inner_text()
    story.app_client_secret = await page.locator("#client-secret").inner_text()
    assert story.app_client_id.startswith("app_")
    await journey.shot(page, "app-client-created")


def shop_app(story: Story) -> AsyncOAuth2Client:
    """The partner's app, as an independent OAuth client library sees it."""
    return AsyncOAuth2Client(
        client_id=story.app_client_id, client_secret=story.app_client_secret,
        scope="openid profile points:read points:redeem", redirect_uri=story.shop.callback,
        code_challenge_method="S256", base_url=story.base_url)


async def step_member_connects_the_app(journey: Journey, story: Story) -> None:
    """The member follows the shop's "Connect your coalition account" link, sees the
    consent screen, allows it; the shop's server exchanges the code (PKCE) for tokens."""
    page = journey.pages["member"]
    async with shop_app(story) as app:
        verifier = generate_token(48)
        url, state = app.create_authorization_url(f"{story.base_url}/oauth/authorize",
                                                  code_verifier=verifier)
        await page.goto(url)
        assert await page.get_by_role("heading").inner_text() == f"Connect {story.partner_name}"
        scopes = await page.locator("ul.scopes").inner_text()
        assert f"Spend your points at {story.partner_name}" in scopes
        await journey.shot(page, "member-consent")
        await submit(page, "Allow")
        assert page.url.startswith(story.shop.callback) and story.shop.arrived
        await journey.shot(page, "shop-connected")
        token = await app.fetch_token(f"{story.base_url}/oauth/token",
                                      authorization_response=page.url, code_verifier=verifier)
        assert token["id_token"] and f"state={state}" in page.url
        story.app_token = token["access_token"]
        balance = await app.get(f"/api/v1/members/{story.member_id}/balance")
        assert balance.status_code == 200 and balance.json()["available"] == story.points


async def step_member_disconnects_the_app(journey: Journey, story: Story) -> None:
    page = journey.pages["member"]
    await page.goto("/member")
    async with page.expect_navigation():
        await page.get_by_role("link", name="Connected brands").click()
    assert story.partner_name in await page.locator("section.connection").inner_text()
    await journey.shot(page, "connected-brands")
    await submit(page, f"Disconnect {story.partner_name}")
    assert "No brand's app is connected" in await page.content()
    await journey.shot(page, "brand-disconnected")
    async with httpx.AsyncClient(base_url=story.base_url) as shop_server:
        refused = await shop_server.get(
            f"/api/v1/members/{story.member_id}/balance",
            headers={"Authorization": f"Bearer {story.app_token}"})
    assert refused.status_code == 401


Step = Callable[[Journey, Story], Awaitable[None]]
STEPS: list[Step] = [
    step_apply,
    step_operator_approves,
    step_owner_accepts_invitation,
    step_owner_creates_server_client,
    step_partner_server_enrols_and_earns,
    step_member_signs_up_and_sees_points,
    step_owner_creates_app_client,
    step_member_connects_the_app,
    step_member_disconnects_the_app,
]


async def test_partner_and_member_journey(chromium, live_server, smtp, database_url,
                                          shop_site):
    journey = Journey(chromium, live_server.url, smtp, Screenshots("browser_journey"))
    story = Story(live_server.url, database_url, application(), shop=shop_site)
    started = time.monotonic()
    try:
        for step in STEPS:
            await step(journey, story)
    finally:
        await journey.close()
    assert not journey.problems, journey.problems       # no CSP violation, no script error
    names = [path.name for path in journey.shots.taken]
    assert names[0] == "01-apply.png" and len(names) == 16, names
    assert all(path.stat().st_size > 1000 for path in journey.shots.taken)
    print(f"browser journey: {len(STEPS)} steps in {time.monotonic() - started:.1f} s")


async def test_error_pages_in_a_real_browser(chromium, live_server, smtp):
    """Chromium gets the site's HTML error page (with its stylesheet, under the strict
    CSP) for an unknown address and for a page its account may not see."""
    journey = Journey(chromium, live_server.url, smtp, Screenshots("browser_errors"))
    try:
        page = await journey.person()
        response = await page.goto("/nope")
        assert response.status == 404
        assert await page.locator("#error-title").inner_text() == "Page not found"
        assert await page.evaluate("getComputedStyle(document.body).maxWidth") != "none"
        await journey.shot(page, "not-found")
        email = f"m-{uuid.uuid4().hex[:8]}@example.com"
        await page.goto("/register")
        await fill_form(page, {"email": email, "password": "member secret 123"})
        await submit(page, "Create account")
        await page.goto(journey.mail_link(email, "/verify-email"))
        await log_in(page, email, "member secret 123", "/member")
        response = await page.goto("/operator")
        assert response.status == 403
        assert await page.locator("#error-title").inner_text() == "Not allowed"
        await journey.shot(page, "forbidden")
    finally:
        await journey.close()
    # Chromium reports the error status of the page itself; nothing else may go wrong.
    expected = {f"console error at {live_server.url}{path}: Failed to load resource: the "
                f"server responded with a status of {status}"
                for path, status in (("/nope", "404 (Not Found)"),
                                     ("/operator", "403 (Forbidden)"))}
    assert set(journey.problems) <= expected, journey.problems
