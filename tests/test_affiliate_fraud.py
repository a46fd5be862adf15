"""Fraud rules, one by one: each puts the commission on hold with its reason. Then the
review: the partner's console lists held commissions with the reasons, releases or
rejects them; another partner sees and touches nothing; the operator decides too."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

from coalition.affiliates import fraud
from tests import affiliate_b_helpers as aff
from tests.affiliate_b_helpers import NOW, purchase
from tests.portal import owner_browser
from tests.test_rules_console import operator_browser, post_form


async def _held(db, program) -> list[str]:
    rows = await aff.commissions_of(db, program)
    assert rows, "no commission"
    assert rows[-1]["status"] == "hold", rows[-1]
    return list(rows[-1]["fraud_reasons"])


async def test_self_referral_by_member_account_payout_card_or_email(partner, db):
    for link in ("member_id", "payout_member_id", "email"):
        email = f"{uuid.uuid4().hex[:10]}@example.com"
        member = await partner.enroll(email)
        program = await aff.program(db, partner.partner_id)
        args = ({"email": email.upper()} if link == "email"
                else {link: uuid.UUID(member)})
        _, code = await aff.enrollment(db, program, await aff.affiliate(db, **args))
        await partner.post("/api/v1/purchases", purchase(member, 10000, affiliate_code=code))
        [reason] = await _held(db, program)
        assert reason.startswith("self_referral:"), reason


async def test_click_flooding_from_one_address(partner, db):
    program, _, enrollment, _ = await aff.setup(db, partner.partner_id)
    clicked = NOW - timedelta(hours=1)
    for second in range(fraud.CLICK_FLOOD_MAX):
        await aff.click(db, enrollment, clicked - timedelta(seconds=second + 1), ip_hash="ip-f")
    last = await aff.click(db, enrollment, clicked, ip_hash="ip-f")   # one more than allowed
    member = await partner.enroll()
    await partner.post("/api/v1/purchases", purchase(member, 10000, click_id=str(last)))
    [reason] = await _held(db, program)
    assert reason.startswith(f"click_flooding: {fraud.CLICK_FLOOD_MAX + 1} clicks"), reason
    # Exactly the limit, or spread over more than the minutes, is not flooding.
    calm, _, enrollment, _ = await aff.setup(db, partner.partner_id)
    for minute in range(fraud.CLICK_FLOOD_MAX + 5):
        await aff.click(db, enrollment, clicked - timedelta(minutes=minute), ip_hash="ip-c")
    first = await aff.click(db, enrollment, clicked + timedelta(seconds=1), ip_hash="ip-c")
    await partner.post("/api/v1/purchases",
                       purchase(await partner.enroll(), 10000, click_id=str(first)))
    assert (await aff.commissions_of(db, calm))[-1]["status"] == "pending"


async def test_a_conversion_seconds_after_the_click(partner, db):
    program, _, enrollment, _ = await aff.setup(db, partner.partner_id)
    click = await aff.click(db, enrollment, NOW - timedelta(seconds=3))
    member = await partner.enroll()
    await partner.post("/api/v1/purchases", purchase(member, 10000, click_id=str(click)))
    [reason] = await _held(db, program)
    assert reason.startswith("too_soon: converted 3 s after the click"), reason


async def test_duplicate_orders_of_the_same_member_and_amount(partner, db):
    program, _, _, code = await aff.setup(db, partner.partner_id, recurring_months=12)
    member = await partner.enroll()
    first = await partner.post("/api/v1/purchases",
                               purchase(member, 4321, affiliate_code=code))
    await partner.post("/api/v1/purchases",
                       purchase(member, 4321, at=NOW + timedelta(seconds=30)))
    [reason] = await _held(db, program)
    assert reason == (f"duplicate_order: order {first.json()['order_id']} has the same member"
                      f" and amount within {fraud.DUPLICATE_ORDER_MINUTES} minutes")
    # A different amount is not a duplicate.
    await partner.post("/api/v1/purchases",
                       purchase(member, 4322, at=NOW + timedelta(seconds=40)))
    assert (await aff.commissions_of(db, program))[-1]["status"] == "pending"


async def test_an_affiliate_whose_sales_are_mostly_refunded(partner, db):
    program, _, enrollment, code = await aff.setup(db, partner.partner_id)
    for _ in range(fraud.REFUND_RATE_MIN_SALES):
        await aff.commission_row(db, enrollment, sale=10000, refunded=5000,
                                 occurred_at=NOW - timedelta(days=10))
    await partner.post("/api/v1/purchases",
                       purchase(await partner.enroll(), 10000, affiliate_code=code))
    [reason] = await _held(db, program)
    assert reason.startswith("refund_rate: 50 %"), reason
    # Refunds older than the rule's window do not count.
    old, _, enrollment, code = await aff.setup(db, partner.partner_id)
    for _ in range(fraud.REFUND_RATE_MIN_SALES):
        await aff.commission_row(db, enrollment, sale=10000, refunded=10000,
                                 occurred_at=NOW - timedelta(days=fraud.REFUND_RATE_DAYS + 1))
    await partner.post("/api/v1/purchases",
                       purchase(await partner.enroll(), 10000, affiliate_code=code))
    assert (await aff.commissions_of(db, old))[-1]["status"] == "pending"


PAGE = "/partner/affiliates/commissions"


async def test_the_partner_reviews_held_commissions_and_nobody_else_sees_them(
        app, client, db):
    browser, partner_id = await owner_browser(app, client, name="Affiliate Review Brand")
    other, _ = await owner_browser(app, client, name="Other Review Brand")
    _, affiliate, enrollment, _ = await aff.setup(db, partner_id)
    reason = "too_soon: converted 2 s after the click (under 10 s)"
    release = await aff.commission_row(db, enrollment, status="hold", fraud_reasons=[reason],
                                       hold_until=NOW + timedelta(days=5))
    reject = await aff.commission_row(db, enrollment, status="hold", fraud_reasons=[reason],
                                      hold_until=NOW + timedelta(days=5))
    passed = await aff.commission_row(db, enrollment, status="hold", fraud_reasons=[reason],
                                      hold_until=NOW - timedelta(days=1))
    approved = await aff.commission_row(db, enrollment, status="approved")
    async with browser, other:
        listed = await browser.get(PAGE, params={"status": "hold"})
        assert listed.status_code == 200
        ids = set(map(int, re.findall(r'data-id="(\d+)"', listed.text)))
        assert {release, reject, passed} <= ids and approved not in ids
        assert reason in listed.text
        mine = await browser.get(PAGE, params={"affiliate": str(affiliate)})
        assert set(map(int, re.findall(r'data-id="(\d+)"', mine.text))) == {
            release, reject, passed, approved}
        # Another partner: nothing listed, and no decision on these.
        theirs = await other.get(PAGE)
        assert theirs.status_code == 200 and not re.findall(r'data-id="(\d+)"', theirs.text)
        refused = await post_form(other, PAGE, f"{PAGE}/{release}/release", {})
        assert refused.status_code == 404
        assert (await post_form(browser, PAGE, f"{PAGE}/{release}/release", {})
                ).status_code == 303
        assert (await post_form(browser, PAGE, f"{PAGE}/{reject}/reject", {})
                ).status_code == 303
        assert (await post_form(browser, PAGE, f"{PAGE}/{passed}/release", {})
                ).status_code == 303
        # Only a held commission can be decided.
        assert (await post_form(browser, PAGE, f"{PAGE}/{approved}/reject", {})
                ).status_code == 404
    status = {r["id"]: (r["status"], r["decided_by"] is not None)
              for r in await db.fetch("SELECT * FROM affiliate_commissions WHERE"
                                      " enrollment_id = $1", enrollment)}
    assert status[release] == ("pending", True)
    assert status[reject] == ("rejected", True)
    assert status[passed] == ("approved", True)
    assert status[approved][0] == "approved"


async def test_the_operator_decides_held_commissions_of_any_partner(app, client, db, partner):
    _, _, enrollment, _ = await aff.setup(db, partner.partner_id)
    held = await aff.commission_row(db, enrollment, status="hold",
                                    fraud_reasons=["duplicate_order: order x"],
                                    hold_until=NOW - timedelta(days=1))
    operator = await operator_browser(app)
    page = "/operator/affiliates/commissions"
    async with operator:
        listed = await operator.get(page, params={"status": "hold",
                                                  "partner": str(partner.partner_id)})
        assert f'data-id="{held}"' in listed.text and "duplicate_order" in listed.text
        assert (await post_form(operator, page, f"{page}/{held}/reject", {})
                ).status_code == 303
    assert await db.fetchval("SELECT status FROM affiliate_commissions WHERE id = $1",
                             held) == "rejected"
    staff, _ = await owner_browser(app, client)
    async with staff:
        assert (await staff.get(page)).status_code == 403
