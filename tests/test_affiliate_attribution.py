"""Attribution of conversions to affiliates: a click id or code in the purchase, the
member's stored attribution, leads at enrolment and at the member portal's sign-up;
the window, the click models, the partner and enrollment checks, and the explanation
each commission carries. Purchases without affiliate data keep the fast path."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from coalition import earning
from coalition.affiliates.attribution import Touch, attribute
from coalition.earning import MemberRef, Order
from coalition.uow import Actor, Tx
from tests import affiliate_b_helpers as aff
from tests.affiliate_b_helpers import NOW, purchase
from tests.helpers import new_key, new_partner
from tests.portal import Browser, submit
from web.conversions import CLICK_COOKIE


async def test_a_click_id_attributes_the_purchase_and_the_commission_explains_why(
        partner, db):
    program, affiliate, enrollment, _ = await aff.setup(db, partner.partner_id)
    clicked = NOW - timedelta(hours=3)
    click = await aff.click(db, enrollment, clicked, sub_id="newsletter-7")
    member = await partner.enroll()
    response = await partner.post("/api/v1/purchases",
                                  purchase(member, 25000, click_id=str(click)))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["affiliate_commission"]["amount"] == 2500       # 10 % of 250.00
    assert body["affiliate_commission"]["status"] == "pending"
    [row] = await aff.commissions_of(db, program)
    assert (row["affiliate_id"], row["click_id"], row["order_id"], row["sale_minor"]) == (
        affiliate, click, body["order_id"], 25000)
    assert row["hold_until"] == NOW + timedelta(days=30)
    explained = await db.fetchval("SELECT explanation FROM affiliate_commissions"
                                  " WHERE id = $1", row["id"])
    e = json.loads(explained)
    assert e["click"] == {"id": str(click), "at": clicked.isoformat(),
                          "sub_id": "newsletter-7"}
    assert (e["click_model"], e["window_days"], e["terms_version"], e["rate_bp"],
            e["model"]) == ("last_click", 30, 1, 1000, "percent")
    assert "within the window" in e["why"]
    assert e["purchase"] == "first attributed purchase"
    stored = await db.fetchrow("SELECT * FROM affiliate_attributions WHERE member_id = $1",
                               uuid.UUID(member))
    assert (stored["enrollment_id"], stored["click_id"], stored["source"]) == (
        enrollment, click, "click")
    assert stored["first_conversion_at"] is not None


async def test_an_affiliate_code_attributes_and_the_stored_attribution_follows(partner, db):
    program, _, enrollment, code = await aff.setup(db, partner.partner_id,
                                                   recurring_months=6)
    member = await partner.enroll()
    first = await partner.post("/api/v1/purchases",
                               purchase(member, 10000, affiliate_code=code))
    assert first.json()["affiliate_commission"]["amount"] == 1000
    # No click id or code: the member's stored attribution decides (recurring terms).
    second = await partner.post("/api/v1/purchases", purchase(member, 20000))
    assert second.json()["affiliate_commission"]["amount"] == 2000
    rows = await aff.commissions_of(db, program)
    assert [r["sale_minor"] for r in rows] == [10000, 20000]
    assert all(r["enrollment_id"] == enrollment and r["click_id"] is None for r in rows)


async def test_outside_the_window_or_the_partner_nothing_is_attributed(partner, db, client):
    program, _, enrollment, _ = await aff.setup(db, partner.partner_id, window_days=30)
    late = await aff.click(db, enrollment, NOW - timedelta(days=31))
    member = await partner.enroll()
    response = await partner.post("/api/v1/purchases",
                                  purchase(member, 10000, click_id=str(late)))
    assert response.status_code == 201 and "affiliate_commission" not in response.json()
    # Another partner's program's click does not attribute here.
    other = await new_partner(client, "Other Affiliate Brand")
    _, _, other_enrollment, other_code = await aff.setup(db, other.partner_id)
    theirs = await aff.click(db, other_enrollment, NOW - timedelta(hours=1))
    for extra in ({"click_id": str(theirs)}, {"affiliate_code": other_code},
                  {"click_id": str(uuid.uuid4())}):
        response = await partner.post("/api/v1/purchases", purchase(member, 10000, **extra))
        assert response.status_code == 201 and "affiliate_commission" not in response.json()
    # A pending enrollment or a paused program does not attribute either.
    affiliate = await aff.affiliate(db)
    pending, _ = await aff.enrollment(db, program, affiliate, status="pending")
    waiting = await aff.click(db, pending, NOW - timedelta(hours=1))
    paused = await aff.program(db, partner.partner_id, status="paused")
    _, paused_code = await aff.enrollment(db, paused, affiliate)
    for extra in ({"click_id": str(waiting)}, {"affiliate_code": paused_code}):
        response = await partner.post("/api/v1/purchases", purchase(member, 10000, **extra))
        assert response.status_code == 201 and "affiliate_commission" not in response.json()
    assert await db.fetchval("SELECT count(*) FROM affiliate_commissions WHERE member_id = $1",
                             uuid.UUID(member)) == 0
    bad = await partner.post("/api/v1/purchases", purchase(member, 10000, click_id="nope"))
    assert bad.status_code == 400 and bad.json()["field"] == "click_id"


async def test_last_click_replaces_and_first_click_keeps_the_stored_attribution(
        partner, db):
    for model, winner in (("last_click", "second"), ("first_click", "first")):
        program = await aff.program(db, partner.partner_id, click_model=model)
        enrollments = {}
        for name in ("first", "second"):
            enrollments[name], _ = await aff.enrollment(db, program, await aff.affiliate(db))
        member = await partner.enroll(click_id=str(
            await aff.click(db, enrollments["first"], NOW - timedelta(days=2))))
        newer = await aff.click(db, enrollments["second"], NOW - timedelta(hours=2))
        response = await partner.post("/api/v1/purchases",
                                      purchase(member, 10000, click_id=str(newer)))
        assert response.status_code == 201, response.text
        [row] = await aff.commissions_of(db, program)
        assert row["enrollment_id"] == enrollments[winner], model
        why = json.loads(row["explanation"])["why"]
        assert ("replaces" in why) if model == "last_click" else ("first click" in why)
        stored = await db.fetchval("SELECT enrollment_id FROM affiliate_attributions"
                                   " WHERE member_id = $1 AND program_id = $2",
                                   uuid.UUID(member), program)
        assert stored == enrollments[winner]


async def test_a_click_still_in_the_recorders_buffer_is_flushed_first(partner, db):
    _, _, enrollment, _ = await aff.setup(db, partner.partner_id)
    member = uuid.UUID(await partner.enroll())
    click_id = uuid.uuid4()
    flushed = []

    async def flush() -> None:     # what the click recorder's flush does: write the batch
        flushed.append(True)
        await db.execute(
            "INSERT INTO affiliate_clicks (click_id, enrollment_id, program_id, partner_id,"
            " clicked_at, ip_hash) SELECT $1, id, program_id, partner_id, $2, 'x'"
            " FROM affiliate_enrollments WHERE id = $3", click_id, NOW - timedelta(minutes=5),
            enrollment)

    async with db.acquire() as conn:
        found, why = await attribute(conn, partner_id=partner.partner_id, member_id=member,
                                     at=NOW, touch=Touch(click_id=click_id), flush=flush)
    assert flushed and found is not None and found.enrollment_id == enrollment, why


async def test_purchases_without_affiliate_data_keep_the_two_statement_fast_path(
        partner, db):
    await aff.setup(db, partner.partner_id)     # the partner runs a program
    member = await partner.enroll()
    async def post(log=None):
        async with db.acquire() as conn:
            if log:
                conn.add_query_logger(log)
            result = await earning.purchase(
                Tx(conn, partner.partner_id, Actor("test"), in_transaction=False),
                member=MemberRef(id=uuid.UUID(member)),
                order=Order(new_key(), NOW, "PLN", 1000, "store", None, []),
                idempotency_key=new_key(), request_hash="h")
            if log:
                conn.remove_query_logger(log)
        return result

    await post()      # warms this process's caches
    statements: list[str] = []
    result = await post(lambda record: statements.append(record.query))
    assert result.status == 201
    assert [s.split("(")[0] for s in statements] == [
        "SELECT * FROM purchase_facts", "SELECT status, body FROM purchase_commit"]


async def test_a_sign_up_through_an_affiliate_link_is_a_lead(partner, db, app):
    program, _, enrollment, code = await aff.setup(db, partner.partner_id,
                                                   model="per_lead", rate_bp=None,
                                                   flat_minor=800)
    # Enrolment over the API with the code: a lead, once per member.
    email = f"{new_key()[:10]}@example.com"
    member = await partner.enroll(email, affiliate_code=code)
    await partner.enroll(email, affiliate_code=code)
    [lead] = await aff.commissions_of(db, program)
    assert (lead["kind"], lead["amount_minor"], lead["member_id"]) == (
        "lead", 800, uuid.UUID(member))
    # The member portal's sign-up reads the tracking cookie /r/{code} set.
    click = await aff.click(db, enrollment, NOW - timedelta(minutes=10))
    browser = Browser(app)
    async with browser:
        browser.cookies.set(CLICK_COOKIE, str(click))
        email = f"{new_key()[:10]}@example.com"
        response = await submit(browser, "/register", "/register", email=email,
                                name="Lead", password="a good long password")
        assert response.status_code == 200, response.text[:500]
    joined = await db.fetchval("SELECT id FROM members WHERE email = $1", email)
    leads = await aff.commissions_of(db, program)
    assert [(r["kind"], r["member_id"], r["click_id"]) for r in leads][1:] == [
        ("lead", joined, click)]
    assert await db.fetchval("SELECT source FROM affiliate_attributions WHERE member_id = $1",
                             joined) == "click"
