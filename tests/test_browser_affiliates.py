"""The affiliate journey in a real browser (Debian's Chromium through Playwright) against
the app served over real HTTP (issue 6):

an affiliate signs up, confirms the email and logs in → joins a partner's program and
reads the tracking link → a visitor clicks it, lands on the shop with a click id, then
signs up as a member on the coalition site (the first-party cookie carries the click) →
the partner's server links the member and reports a purchase → the affiliate sees the
commission pending → the hold period passes (the approval job, run with the clock moved)
→ approved → the payout job pays it by SEPA → the operator downloads the bank file and
marks the payout paid → the affiliate sees the payout paid, with its statement.

Screenshots of every step go to tests/output/browser_affiliates/."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from coalition import clock
from coalition.affiliates.commissions import approve_due
from coalition.affiliates.fraud import MIN_SECONDS_AFTER_CLICK
from settlement import affiliate_payouts as payouts
from settlement.stripe_gateway import StripeConfig, StripeGateway
from tenants.service import create_server_client
from tests.affiliate_helpers import make_partner, make_program
from tests.browser import (
    Journey,
    LiveServer,
    Screenshots,
    fill_form,
    link_existing_member,
    log_in,
    submit,
)
from tests.test_browser_journey import ShopSite
from tests.test_cli import coalition
from web.app import create_app

pytestmark = pytest.mark.slow

PASSWORD = "affiliate secret 12"
SEPA = {"sepa_debtor_name": "Coalition Operator Sp. z o.o.",
        "sepa_debtor_iban": "PL61109010140000071219812874", "sepa_debtor_bic": "WBKPPLPP"}


@dataclass
class Story:
    partner_id: uuid.UUID
    program_name: str
    client_id: str
    client_secret: str
    affiliate_email: str = ""
    link: str = ""
    clicked_at: float = 0.0
    member_email: str = ""
    commission_id: int = 0


async def test_affiliate_earns_and_is_paid(chromium, smtp, settings, database_url, app, db):
    shop = ShopSite()
    server = LiveServer(create_app(settings.model_copy(update=SEPA), database_url)).start()
    journey = Journey(chromium, server.url, smtp, Screenshots("browser_affiliates"))
    try:
        story = await _partner_with_program(app, shop)
        await _affiliate_signs_up_and_joins(journey, story)
        await _visitor_clicks_and_becomes_a_member(journey, story, shop)
        await _partner_server_reports_the_purchase(server.url, story)
        await _hold_passes_and_payout_is_made(journey, story, db, database_url)
    finally:
        await journey.close()
        server.stop()
        shop.close()
    assert not journey.problems, journey.problems
    assert len(journey.shots.taken) >= 9


async def _partner_with_program(app, shop: ShopSite) -> Story:
    partner_id = await make_partner(app, f"Sklep Afiliacyjny {uuid.uuid4().hex[:6]}")
    name = f"Polecaj i zarabiaj {uuid.uuid4().hex[:6]}"
    await make_program(app, partner_id, name=name, landing_url=shop.callback.replace(
        "/oauth/callback", "/landing"))
    async with app.state.sessionmaker() as session:
        client, secret = await create_server_client(session, partner_id, "Shop server")
        await session.commit()
    return Story(partner_id, name, client.client_id, secret)


async def _affiliate_signs_up_and_joins(journey: Journey, story: Story) -> None:
    story.affiliate_email = f"blog-{uuid.uuid4().hex[:8]}@example.com"
    page = await journey.person()
    await page.goto("/affiliate/signup")
    await fill_form(page, {"name": "Anna Blogerka", "email": story.affiliate_email,
                           "password": PASSWORD, "account_holder": "Anna Blogerka",
                           "iban": "PL27114020040000300201355387", "bic": "BREXPLPW"})
    await page.select_option("select[name=payout_method]", "sepa")
    await page.get_by_role("checkbox").check()
    await journey.shot(page, "affiliate-signs-up")
    await submit(page, "Sign up")
    assert await page.get_by_role("heading").inner_text() == "Check your email"
    await page.goto(journey.mail_link(story.affiliate_email, "/verify-email"))
    assert await page.get_by_role("heading").inner_text() == "Email confirmed"
    await log_in(page, story.affiliate_email, PASSWORD, "/affiliate")
    await journey.shot(page, "affiliate-dashboard-empty")
    await page.goto("/affiliate/programs")
    row = page.locator("#available tr", has_text=story.program_name)
    async with page.expect_navigation():
        await row.get_by_role("button", name="Join").click()
    joined = page.locator("#enrollments tr", has_text=story.program_name)
    assert "approved" in await joined.inner_text()
    story.link = await joined.locator("code").inner_text()
    assert "/r/" in story.link
    await journey.shot(page, "affiliate-joined-with-link")
    journey.pages["affiliate"] = page


async def _visitor_clicks_and_becomes_a_member(journey: Journey, story: Story,
                                               shop: ShopSite) -> None:
    page = await journey.person()
    story.clicked_at = time.monotonic()
    await page.goto(story.link)
    # (Chromium may also ask the shop for /favicon.ico.)
    assert any(p.startswith("/landing?click_id=") for p in shop.arrived), shop.arrived
    await journey.shot(page, "visitor-lands-on-the-shop")
    story.member_email = f"polecony-{uuid.uuid4().hex[:8]}@example.com"
    await page.goto("/register")
    await fill_form(page, {"name": "Piotr Polecony", "email": story.member_email,
                           "password": "member secret 123"})
    await submit(page, "Create account")
    await page.goto(journey.mail_link(story.member_email, "/verify-email"))
    await log_in(page, story.member_email, "member secret 123", "/member")
    await journey.shot(page, "referred-visitor-is-a-member")


async def _partner_server_reports_the_purchase(base_url: str, story: Story) -> None:
    """The partner's own server, over real HTTP. The shopper browsed before buying: a
    conversion within MIN_SECONDS_AFTER_CLICK of the click would be held as suspicious."""
    async with httpx.AsyncClient(base_url=base_url) as server:
        bearer, member_id = await link_existing_member(
            server, story.client_id, story.client_secret, story.member_email)
        await asyncio.sleep(max(0.0, MIN_SECONDS_AFTER_CLICK + 1
                                - (time.monotonic() - story.clicked_at)))
        bought = await server.post("/api/v1/purchases", headers={
            **bearer, "Idempotency-Key": uuid.uuid4().hex}, json={
            "member": {"id": member_id}, "order_id": f"AFF-{uuid.uuid4().hex[:8]}",
            "occurred_at": clock.now().isoformat(), "total": 120_000,
            "currency": "PLN", "channel": "online",
            "lines": [{"sku": "BIKE-1", "category": "bikes", "quantity": 1,
                       "unit_price": 120_000, "amount": 120_000}]})
        assert bought.status_code == 201, bought.text
        commission = bought.json()["affiliate_commission"]
        assert (commission["amount"], commission["status"]) == (6000, "pending"), commission
        story.commission_id = commission["id"]


async def _hold_passes_and_payout_is_made(journey: Journey, story: Story, db,
                                          database_url) -> None:
    page = journey.pages["affiliate"]
    await page.goto("/affiliate/commissions")
    row = page.locator("tr", has_text="pending").first
    assert "60.00" in await row.inner_text()
    await journey.shot(page, "affiliate-sees-commission-pending")

    later = clock.now() + timedelta(days=31)        # the 30-day hold has passed
    async with db.acquire() as conn:
        assert await approve_due(conn, later) >= 1
    assert await db.fetchval("SELECT status FROM affiliate_commissions WHERE id = $1",
                             story.commission_id) == "approved"
    await page.reload()
    assert "approved" in await page.locator("body").inner_text()
    await journey.shot(page, "affiliate-sees-commission-approved")
    run = await payouts.run_payouts(StripeGateway(StripeConfig(), db), now=later)
    mine = [o for o in run.outcomes if o.payout_id and o.affiliate == "Anna Blogerka"
            and o.program == story.program_name]
    assert [(o.method, o.status, o.net) for o in mine] == [("sepa", "pending", 6000)], mine

    operator_email = f"op-{uuid.uuid4().hex[:8]}@coalition.example"
    created = coalition(database_url, "operators", "create", "--email", operator_email,
                        "--password", "operator secret 1")
    assert created.returncode == 0, created.stderr
    operator = await journey.person()
    await log_in(operator, operator_email, "operator secret 1", "/operator")
    await operator.goto("/operator/affiliate-payouts")
    async with operator.expect_download() as download:
        await operator.get_by_role("button", name="ready PLN credit").click()
    assert "pain.001" in (await (await download.value).path()).read_text()
    await operator.goto("/operator/affiliate-payouts")
    payout_row = operator.locator(f"#payout-{mine[0].payout_id}")
    await journey.shot(operator, "operator-exported-the-bank-file")
    async with operator.expect_navigation():
        await payout_row.get_by_role("button", name="Mark paid").click()
    assert "paid" in await operator.locator(f"#payout-{mine[0].payout_id}").inner_text()

    await page.goto("/affiliate/payouts")
    assert "paid" in await page.locator("#payouts").inner_text()
    await journey.shot(page, "affiliate-sees-payout-paid")
    await page.goto(f"/affiliate/payouts/{mine[0].payout_id}")
    assert "60.00" in await page.locator("body").inner_text()
    await journey.shot(page, "affiliate-payout-statement")
