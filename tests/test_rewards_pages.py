"""Rewards pages: the member's catalogue, redeem and vouchers; the partner console's
rewards management and till; the operator's cross-brand coupon offers."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

from coalition import clock
from coalition.rewards.service import insert_voucher, reward_of
from tenants.accounts import create_user
from tests.portal import Browser, csrf_of, owner_browser, submit
from tests.rewards_helpers import make_reward, wallet
from tests.test_oauth_apps import log_in, new_member_login

WARSAW = ZoneInfo("Europe/Warsaw")


async def test_member_browses_redeems_once_and_sees_the_voucher(app, client, partner,
                                                                other_partner, db):
    login = await new_member_login(client)
    await partner.enroll(login.email)
    await partner.earn(login.member_id, 150)
    mark = uuid.uuid4().hex[:6]
    cheap = await make_reward(db, other_partner.partner_id, name=f"Webinar {mark}",
                              kind="event_seat", price_points=120, stock=3, voucher_days=30)
    await make_reward(db, partner.partner_id, name=f"Exclusive {mark}", kind="product",
                      price_points=100, tiers=["vip"])
    await make_reward(db, partner.partner_id, name=f"Dear {mark}", price_points=400)
    await make_reward(db, partner.partner_id, name=f"Hidden {mark}", active=False)
    browser = Browser(app)
    async with browser:
        await log_in(browser, login)
        catalogue = await browser.get("/member/rewards")
        assert catalogue.status_code == 200
        text = catalogue.text
        assert f"Webinar {mark}" in text and "Other Brand" in text and "3 left" in text
        assert "For VIP members only." in text and "250 more points needed" in text
        assert f"Hidden {mark}" not in text
        confirm = await browser.get(f"/member/rewards/{cheap}")
        assert "After redeeming" in confirm.text and "30 points" in confirm.text
        token = re.search(r'name="token" value="([^"]+)"', confirm.text).group(1)
        form = {"_csrf_token": csrf_of(confirm), "token": token}
        done = await browser.post(f"/member/rewards/{cheap}/redeem", data=form)
        assert done.status_code == 303 and done.headers["location"] == "/member/vouchers"
        again = await browser.post(f"/member/rewards/{cheap}/redeem", data=form)
        assert again.status_code == 303                          # the same voucher, replayed
        assert await wallet(db, login.member_id) == 30
        vouchers = await browser.get("/member/vouchers")
        codes = re.findall(r"<code>([0-9A-Z-]{19})</code>", vouchers.text)
        assert len(codes) == 1 and "ready to use" in vouchers.text
        assert f"Webinar {mark}" in vouchers.text and "Other Brand" in vouchers.text
        # Now too poor: the page says why, and nothing is written.
        poor = await submit(browser, f"/member/rewards/{cheap}",
                            f"/member/rewards/{cheap}/redeem", token="t2")
        assert poor.status_code == 422 and "more points" in poor.text
        forged = await browser.post(f"/member/rewards/{cheap}/redeem", data={"token": "t3"})
        assert forged.status_code == 403                          # no CSRF token
        assert await wallet(db, login.member_id) == 30
        assert (await browser.get(f"/member/rewards/{uuid.uuid4()}")).status_code == 404


async def test_member_sees_each_purchase_with_the_rules_that_priced_it(app, client, partner,
                                                                         db):
    from tests.test_purchases_api import BASE, order, rules
    await rules(app, partner, BASE)
    await db.execute("UPDATE partners SET pending_days = 14 WHERE id = $1", partner.partner_id)
    login = await new_member_login(client)
    await partner.enroll(login.email)
    posted = await partner.post("/api/v1/purchases", order(login.member_id))
    assert posted.status_code == 201 and posted.json()["status"] == "pending"
    half = await partner.post(f"/api/v1/purchases/{posted.json()['order_id']}/returns",
                              {"amount": 12500})
    assert half.status_code == 201
    browser = Browser(app)
    async with browser:
        await log_in(browser, login)
        home = await browser.get("/member")
    row = re.search(r'<tr class="purchase">(.*?)</tr>', home.text, re.S).group(1)
    text = " ".join(re.sub(r"<[^>]+>", " ", row).split())
    until = posted.json()["available_at"][:10]
    assert posted.json()["order_id"] in text and "250.00 PLN" in text
    assert "+250 (-125 returned)" in text and f"pending until {until}" in text
    assert "1 pt per 1 PLN +250" in text
    await db.execute("UPDATE partners SET pending_days = 0 WHERE id = $1", partner.partner_id)


async def test_owner_manages_the_catalogue(app, client, db):
    browser, partner_id = await owner_browser(app, client)
    async with browser:
        bad = await submit(browser, "/partner/rewards", "/partner/rewards", name="",
                           kind="percent_discount", price_points="-3", percent="120")
        assert bad.status_code == 400
        assert "Required." in bad.text and "A whole number from 1 to 100." in bad.text
        created = await submit(
            browser, "/partner/rewards", "/partner/rewards", name="10% rabatu",
            kind="percent_discount", percent="10", category="Finansowa", price_points="100",
            stock="5", valid_from="2026-05-01", valid_until="2026-05-31", voucher_days="30",
            per_member_limit="2", tiers="VIP, standard", listed="on", active="on")
        assert created.status_code == 303
        row = await db.fetchrow("SELECT * FROM rewards WHERE partner_id = $1", partner_id)
        assert (row["value"], row["price_points"], row["stock"], row["tiers"]) == \
            (10, 100, 5, ["vip", "standard"])
        assert row["valid_from"] == datetime(2026, 5, 1, tzinfo=WARSAW)
        assert row["valid_until"] == datetime(2026, 6, 1, tzinfo=WARSAW)  # 31 May inclusive
        listing = await browser.get("/partner/rewards")
        assert "10% rabatu" in listing.text and "10% off" in listing.text
        edit = await browser.get(f"/partner/rewards/{row['id']}")
        assert 'value="2026-05-31"' in edit.text and 'value="vip, standard"' in edit.text
        saved = await submit(browser, f"/partner/rewards/{row['id']}",
                             f"/partner/rewards/{row['id']}", name="Bon 50 zł",
                             kind="gift_card", amount="50,00", price_points="400", stock="",
                             listed="on", active="on")
        assert saved.status_code == 303
        row = await db.fetchrow("SELECT * FROM rewards WHERE id = $1", row["id"])
        assert (row["kind"], row["value"], row["stock"], row["tiers"]) == \
            ("gift_card", 5000, None, [])
        off = await submit(browser, "/partner/rewards",
                           f"/partner/rewards/{row['id']}/active")
        assert off.status_code == 303
        assert await db.fetchval("SELECT active FROM rewards WHERE id = $1", row["id"]) is False


async def test_a_reward_targets_only_the_partners_own_segments(app, client, db):
    from coalition.segments import service as segments
    browser, partner_id = await owner_browser(app, client)
    _, stranger = await owner_browser(app, client, name="Another Brand")
    recent = {"conditions": [{"type": "last_purchase", "within_days": 30}]}
    async with db.acquire() as conn:
        mine, theirs = [await segments.save(conn, owner, None, f"Recent {uuid.uuid4().hex[:6]}",
                                            None, recent, "test", clock.now().astimezone(WARSAW))
                        for owner in (partner_id, stranger)]
    reward = {"name": "Tylko dla stałych", "kind": "free_delivery", "price_points": "50",
              "listed": "on", "active": "on"}
    async with browser:
        for foreign in (theirs, uuid.UUID(int=9)):
            refused = await submit(browser, "/partner/rewards", "/partner/rewards",
                                   **reward, segments=f"{mine}, {foreign}")
            assert refused.status_code == 400 and "is not one of your segments" in refused.text
        assert await db.fetchval("SELECT count(*) FROM rewards WHERE partner_id = $1",
                                 partner_id) == 0
        created = await submit(browser, "/partner/rewards", "/partner/rewards", **reward,
                               segments=str(mine))
        assert created.status_code == 303
    assert await db.fetchval("SELECT segments FROM rewards WHERE partner_id = $1",
                             partner_id) == [mine]


async def test_cashier_checks_and_uses_a_voucher_once(app, client, db):
    browser, partner_id = await owner_browser(app, client, role="cashier")
    reward = await make_reward(db, partner_id, name="Darmowa dostawa", kind="free_delivery")
    member = await db.fetchval("SELECT member_id FROM accounts WHERE kind = 'member_wallet'"
                               " LIMIT 1")
    async with app.state.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM rewards WHERE id = $1", reward)
        voucher_id = await insert_voucher(conn, reward_of(row), member, issuer=partner_id,
                                          source="coupon")
        code = await conn.fetchval("SELECT code FROM vouchers WHERE id = $1", voucher_id)
    other_browser, _ = await owner_browser(app, client, role="cashier")
    async with browser, other_browser:
        assert (await browser.get("/partner/rewards")).status_code == 403
        checked = await submit(browser, "/partner/vouchers", "/partner/vouchers",
                               code=code.lower().replace("-", " "))
        assert checked.status_code == 200 and "valid, not used" in checked.text
        assert "Free delivery" in checked.text
        used = await submit(browser, "/partner/vouchers", "/partner/vouchers/consume",
                            code=code, order_id="TILL-7")
        assert used.status_code == 200 and "Voucher used" in used.text
        twice = await submit(browser, "/partner/vouchers", "/partner/vouchers/consume",
                             code=code)
        assert twice.status_code == 409 and "already" in twice.text
        history = await browser.get("/partner/vouchers")
        assert "TILL-7" in history.text and code not in history.text   # masked
        foreign = await submit(other_browser, "/partner/vouchers", "/partner/vouchers",
                               code=code)
        assert foreign.status_code == 404 and "Darmowa" not in foreign.text
    assert await db.fetchval("SELECT used_order_id FROM vouchers WHERE code = $1", code) == \
        "TILL-7"


async def test_operator_sets_up_cross_brand_coupon_offers(app, client, partner, other_partner,
                                                          db):
    email = f"op-{uuid.uuid4().hex[:8]}@coalition.example"
    async with app.state.sessionmaker() as session:
        await create_user(session, email, "operator", password="operator secret 1",
                          verified=True)
        await session.commit()
    target = await make_reward(db, other_partner.partner_id, name="15% na akcesoria",
                               value=15, listed=False)
    browser = Browser(app)
    async with browser:
        await submit(browser, "/login", "/login", email=email, password="operator secret 1")
        same = await submit(browser, "/operator/coupons", "/operator/coupons", name="Self",
                            source_partner_id=str(other_partner.partner_id),
                            reward_id=str(target), min_total="200")
        assert same.status_code == 400 and "another brand" in same.text
        made = await submit(browser, "/operator/coupons", "/operator/coupons",
                            name="Moda → Akcesoria", source_partner_id=str(partner.partner_id),
                            reward_id=str(target), min_total="200.00")
        assert made.status_code == 303
        offer = await db.fetchrow("SELECT * FROM coupon_offers WHERE reward_id = $1", target)
        assert (offer["min_total"], offer["source_partner_id"], offer["active"]) == \
            (20000, partner.partner_id, True)
        listing = await browser.get("/operator/coupons")
        assert "Moda → Akcesoria" in listing.text and "200.00 PLN" in listing.text
        await submit(browser, "/operator/coupons", f"/operator/coupons/{offer['id']}/active")
        assert await db.fetchval("SELECT active FROM coupon_offers WHERE id = $1",
                                 offer["id"]) is False
