"""The loyalty program in a real browser (Debian's Chromium through Playwright) against
the app served over real HTTP (issue 4):

the partner's owner writes an earning rule in the console and watches the live preview
(the page's script asks the server as the fields change) price the sample basket → adds
a reward to the catalogue → a shopper signs up on the coalition site → the partner's
server (real HTTP) links the member and reports a purchase, which the rule prices →
the member sees the points, redeems the reward from the catalogue and gets a voucher
code → the cashier checks the code at the till and uses it → the member sees it used.

Screenshots of every step go to tests/output/browser_loyalty/."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from coalition import clock
from tenants.accounts import create_user
from tenants.service import create_partner, create_server_client
from tests.browser import Journey, Screenshots, fill_form, link_existing_member, log_in, submit

pytestmark = pytest.mark.slow

OWNER_PASSWORD = "owner secret 123"
MEMBER_PASSWORD = "member secret 123"


@dataclass
class Story:
    partner_id: uuid.UUID
    owner_email: str
    client_id: str
    client_secret: str
    rule_name: str = ""
    reward_name: str = ""
    member_email: str = ""
    points: int = 0
    code: str = ""


async def test_rule_purchase_reward_and_voucher(chromium, live_server, smtp, app):
    journey = Journey(chromium, live_server.url, smtp, Screenshots("browser_loyalty"))
    story = await _partner(app)
    try:
        await _owner_writes_a_rule_with_the_live_preview(journey, story)
        await _owner_adds_a_reward(journey, story)
        await _shopper_signs_up(journey, story)
        await _partner_server_reports_a_purchase(live_server.url, story)
        await _member_redeems_the_reward(journey, story)
        await _cashier_uses_the_voucher(journey, story)
    finally:
        await journey.close()
    assert not journey.problems, journey.problems       # no CSP violation, no script error
    assert len(journey.shots.taken) >= 9


async def _partner(app) -> Story:
    suffix = uuid.uuid4().hex[:8]
    owner = f"owner-{suffix}@kawiarnia.example"
    async with app.state.sessionmaker() as session:
        partner = await create_partner(session, f"Kawiarnia {suffix}", slug=f"kaw-{suffix}")
        await create_user(session, owner, "partner_staff", partner_id=partner.id,
                          role="owner", password=OWNER_PASSWORD, verified=True)
        client, secret = await create_server_client(session, partner.id, "Till server")
        await session.commit()
    return Story(partner.id, owner, client.client_id, secret)


async def _preview_row(page, rule_name: str) -> str:
    return await page.locator("#preview-result tr.hit", has_text=rule_name).inner_text()


async def _owner_writes_a_rule_with_the_live_preview(journey: Journey, story: Story) -> None:
    page = await journey.person()
    await log_in(page, story.owner_email, OWNER_PASSWORD, "/partner")
    await page.goto("/partner/rules/new")
    story.rule_name = f"1 pt per 1 PLN {uuid.uuid4().hex[:4]}"
    await page.select_option("#rule-type", "per_amount")
    await fill_form(page, {"name": story.rule_name, "priority": "10", "points": "1",
                           "per": "1.00"})
    # No Preview click: the script posts the form after each change and swaps the
    # result in. The sample basket starts with one line of 120.00 PLN.
    draft = page.locator("#preview-result tr.hit", has_text=story.rule_name)
    await draft.wait_for()
    assert "+120" in await draft.inner_text()
    await page.locator('[name="line_unit_price"]').first.fill("250.00")
    await page.wait_for_function(
        "name => [...document.querySelectorAll('#preview-result tr.hit')]"
        ".some(row => row.textContent.includes(name) && row.textContent.includes('+250'))",
        arg=story.rule_name)
    await journey.shot(page, "rule-live-preview")
    await submit(page, "Create rule")
    await page.goto("/partner/rules")
    assert story.rule_name in await page.content()
    await journey.shot(page, "rules-list")
    journey.pages["owner"] = page


async def _owner_adds_a_reward(journey: Journey, story: Story) -> None:
    page = journey.pages["owner"]
    await page.goto("/partner/rewards")
    story.reward_name = f"Darmowa kawa {uuid.uuid4().hex[:4]}"
    await fill_form(page, {"name": story.reward_name, "kind": "product",
                           "description": "Cappuccino of your choice",
                           "price_points": "100", "stock": "20", "voucher_days": "30"},
                    within="#new-reward")
    await page.locator('#new-reward [name="listed"]').check()
    await page.locator('#new-reward [name="active"]').check()
    await journey.shot(page, "reward-form")
    await submit(page, "Create reward")
    assert story.reward_name in await page.locator("#rewards").inner_text()
    await journey.shot(page, "reward-in-the-catalogue")


async def _shopper_signs_up(journey: Journey, story: Story) -> None:
    story.member_email = f"klientka-{uuid.uuid4().hex[:8]}@example.com"
    page = await journey.person()
    await page.goto("/register")
    await fill_form(page, {"name": "Ewa Klientka", "email": story.member_email,
                           "password": MEMBER_PASSWORD})
    await submit(page, "Create account")
    await page.goto(journey.mail_link(story.member_email, "/verify-email"))
    await log_in(page, story.member_email, MEMBER_PASSWORD, "/member")
    assert await page.locator("#available").inner_text() == "0"
    journey.pages["member"] = page


async def _partner_server_reports_a_purchase(base_url: str, story: Story) -> None:
    async with httpx.AsyncClient(base_url=base_url) as server:
        bearer, member_id = await link_existing_member(
            server, story.client_id, story.client_secret, story.member_email)
        bought = await server.post("/api/v1/purchases", headers={
            **bearer, "Idempotency-Key": uuid.uuid4().hex}, json={
            "member": {"id": member_id}, "order_id": f"TILL-{uuid.uuid4().hex[:6]}",
            "occurred_at": (clock.now() - timedelta(minutes=1)).isoformat(),
            "total": 25000, "currency": "PLN", "channel": "store",
            "lines": [{"sku": "BEANS-1KG", "category": "coffee", "quantity": 2,
                       "unit_price": 12500, "amount": 25000}]})
        assert bought.status_code == 201, bought.text
        body = bought.json()
        hit = next(h for h in body["rules"] if h["name"] == story.rule_name)
        assert hit["points"] == 250 and body["status"] == "active"
        story.points = body["balance"]["available"]


async def _member_redeems_the_reward(journey: Journey, story: Story) -> None:
    page = journey.pages["member"]
    await page.goto("/member")
    assert await page.locator("#available").inner_text() == str(story.points)
    bought = await page.locator("#purchases tr.purchase").first.inner_text()
    assert "+250" in bought and f"{story.rule_name} +250" in bought   # how it was earned
    await journey.shot(page, "member-sees-the-points")
    await page.goto("/member/rewards")
    offer = page.locator("#catalogue tr", has_text=story.reward_name)
    async with page.expect_navigation():
        await offer.get_by_role("link", name="Redeem").click()
    await journey.shot(page, "member-confirms-the-reward")
    async with page.expect_navigation(url="**/member/vouchers"):
        await page.get_by_role("button", name="Redeem for 100 points").click()
    row = page.locator("#vouchers tr.voucher", has_text=story.reward_name)
    assert "ready to use" in await row.inner_text()
    story.code = await row.locator("code").inner_text()
    assert len(story.code) == 19
    await journey.shot(page, "member-has-the-voucher")
    await page.goto("/member")
    assert await page.locator("#available").inner_text() == str(story.points - 100)


async def _cashier_uses_the_voucher(journey: Journey, story: Story) -> None:
    page = journey.pages["owner"]
    await page.goto("/partner/vouchers")
    await fill_form(page, {"code": story.code.lower().replace("-", " ")},
                    within="#check-voucher")
    await submit(page, "Check")
    assert await page.locator("#voucher .status").inner_text() == "valid, not used"
    assert story.reward_name in await page.locator("#voucher").inner_text()
    await journey.shot(page, "till-checks-the-code")
    await fill_form(page, {"order_id": "PARAGON-17"}, within="#consume-voucher")
    await submit(page, "Use the voucher")
    assert "Voucher used" in await page.content()
    await journey.shot(page, "till-used-the-voucher")
    member = journey.pages["member"]
    await member.goto("/member/vouchers")
    row = member.locator("#vouchers tr.voucher", has_text=story.reward_name)
    assert "used" in await row.inner_text() and "ready to use" not in await row.inner_text()
    await journey.shot(member, "member-sees-it-used")
