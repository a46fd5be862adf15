"""Tier, segment and company pages: who may open them and what they do."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from zoneinfo import ZoneInfo

from coalition import clock
from coalition.ledger import Ledger, PostingRequest
from tenants.accounts import create_user
from tests.portal import Browser, csrf_of, owner_browser, submit
from tests.tiering import buy, set_program

PASSWORD = "portal secret 12"


async def login(app, email: str) -> Browser:
    browser = Browser(app)
    response = await submit(browser, "/login", "/login", email=email, password=PASSWORD)
    assert response.status_code == 302, response.text
    return browser


async def new_login(app, kind: str, **extra) -> tuple[Browser, str]:
    email = f"{kind}-{uuid.uuid4().hex[:8]}@example.com"
    async with app.state.sessionmaker() as session:
        await create_user(session, email, kind, password=PASSWORD, verified=True, **extra)
        await session.commit()
    return await login(app, email), email


async def test_member_home_shows_tier_progress_and_history(app, client, db, partner):
    now = clock.now()
    await set_program(db, now, downgrade="rolling")
    member = await partner.enroll()
    await buy(db, partner.partner_id, member, 62_550, now - timedelta(days=2))
    browser, _ = await new_login(app, "member", member_id=uuid.UUID(member))
    async with browser:
        page = await browser.get("/member")
        assert page.status_code == 200
        assert "Your tier: Standard" in page.text
        assert "625.50 PLN" in page.text and "374.50 PLN more to reach VIP" in page.text
        await buy(db, partner.partner_id, member, 40_000, now - timedelta(days=1))
        async with db.acquire() as conn:
            from coalition.tiers import reevaluate_member
            await reevaluate_member(conn, uuid.UUID(member), now)
        page = await browser.get("/member")
        assert "Your tier: VIP" in page.text and "highest tier" in page.text
        assert "Standard → VIP" in page.text


async def test_operator_edits_the_ladder_and_assigns_a_tier(app, client, db, partner):
    await set_program(db, clock.now(), downgrade="rolling")
    member = await partner.enroll()
    card = await db.fetchval("SELECT card_number FROM members WHERE id = $1", uuid.UUID(member))
    operator, _ = await new_login(app, "operator")
    async with operator:
        page = await operator.get("/operator/tiers")
        assert page.status_code == 200 and "1000.00 PLN" in page.text
        csrf = csrf_of(page)
        form = {"_csrf_token": csrf, "qualification": "spend", "window_kind": "rolling",
                "window_months": "12", "downgrade": "anniversary",
                "code_0": "standard", "name_0": "Standard", "threshold_0": "0",
                "code_1": "vip", "name_1": "VIP", "threshold_1": "1 000,50",
                "benefits_1": "Double points\nEarly access"}
        saved = await operator.post("/operator/tiers", data=form)
        assert saved.status_code == 200 and "Saved" in saved.text
        assert await db.fetchval("SELECT threshold FROM tiers WHERE code = 'vip'") == 100_050
        assert await db.fetchval("SELECT benefits FROM tiers WHERE code = 'vip'") == \
            '["Double points", "Early access"]'
        bad = await operator.post("/operator/tiers", data={**form, "threshold_1": "10.001"})
        # The error names the input the operator typed in, not the API's path to it.
        assert bad.status_code == 400 and "(threshold_1)" in bad.text
        bad = await operator.post("/operator/tiers", data={**form, "threshold_0": "5"})
        assert bad.status_code == 400 and "every member holds it" in bad.text
        last_day = (clock.today(ZoneInfo("Europe/Warsaw")) + timedelta(days=30)).isoformat()
        assigned = await operator.post("/operator/tiers/assign", data={
            "_csrf_token": csrf, "member": card, "tier": "vip", "until": last_day,
            "reason": "Key account"})
        assert assigned.status_code == 302
        page = await operator.get("/operator/tiers")
        assert "Key account" in page.text and card in page.text
        missing = await operator.post("/operator/tiers/assign", data={
            "_csrf_token": csrf, "member": "nobody@nowhere.example", "tier": "vip",
            "until": last_day, "reason": "x"})
        assert missing.status_code == 404
        ended = await operator.post("/operator/tiers/end", data={"_csrf_token": csrf,
                                                                "member": card})
        assert ended.status_code == 302
    reasons = [r[0] for r in await db.fetch("SELECT reason FROM tier_history WHERE member_id"
                                             " = $1 ORDER BY id", uuid.UUID(member))]
    assert reasons == ["manual", "manual_expired"]
    await set_program(db, clock.now(), downgrade="rolling")


async def test_the_ladder_shows_what_each_tier_unlocks(app, client, db, partner):
    from coalition.rules.validation import RuleSpec
    from tests.rewards_helpers import make_reward
    from tests.test_purchases_api import rules

    await set_program(db, clock.now())
    mark = uuid.uuid4().hex[:6]
    await rules(app, partner, RuleSpec(f"VIP treat {mark}", "multiplier",
                                       {"multiplier": "2"}, tiers=("vip",), priority=950))
    await make_reward(db, partner.partner_id, name=f"VIP lounge {mark}", tiers=["vip"])
    await make_reward(db, partner.partner_id, name=f"Retired {mark}", tiers=["vip"],
                      active=False)
    operator, _ = await new_login(app, "operator")
    async with operator:
        page = await operator.get("/operator/tiers")
    vip = re.search(r'<tr id="tier-vip">.*?</tr>', page.text, re.S).group(0)
    brand = await db.fetchval("SELECT name FROM partners WHERE id = $1", partner.partner_id)
    assert f"Rule: VIP treat {mark} <span class=\"muted\">({brand})</span>" in vip
    assert f"Reward: VIP lounge {mark}" in vip and f"Retired {mark}" not in vip
    standard = re.search(r'<tr id="tier-standard">.*?</tr>', page.text, re.S).group(0)
    assert mark not in standard


async def test_only_operators_open_operator_tier_segment_and_company_pages(app, client):
    staff, _ = await owner_browser(app, client)
    member, _ = await new_login(app, "member", member_id=await _member(app))
    for browser in (staff, member):
        async with browser:
            for path in ("/operator/tiers", "/operator/segments", "/operator/companies"):
                assert (await browser.get(path)).status_code == 403, path


async def _member(app) -> uuid.UUID:
    from coalition.members import find_or_create_id

    async with app.state.sessionmaker() as session:
        member_id, _ = await find_or_create_id(session, f"m-{uuid.uuid4().hex[:8]}@x.example",
                                               None)
        await session.commit()
    return member_id


async def test_partner_segment_editor_previews_saves_and_respects_roles(app, client, db):
    browser, partner_id = await owner_browser(app, client)
    definition = '{"conditions": [{"type": "birthday_month", "months": [3]}]}'
    async with browser:
        listing = await browser.get("/partner/segments")
        assert listing.status_code == 200 and "No segments yet" in listing.text
        csrf = csrf_of(listing)
        preview = await browser.post("/partner/segments", data={
            "_csrf_token": csrf, "action": "preview", "name": "March", "definition": definition})
        assert preview.status_code == 200
        assert re.search(r"<strong>0</strong> members match", preview.text)
        assert await db.fetchval("SELECT count(*) FROM segments WHERE partner_id = $1",
                                 partner_id) == 0
        bad = await browser.post("/partner/segments", data={
            "_csrf_token": csrf, "action": "save", "name": "Bad",
            "definition": '{"conditions": [{"type": "spend", "days": -1, "min": 5}]}'})
        assert bad.status_code == 400 and "definition.conditions[0].days" in bad.text
        saved = await browser.post("/partner/segments", data={
            "_csrf_token": csrf, "action": "save", "name": "March", "definition": definition})
        assert saved.status_code == 302
        segment = await db.fetchval("SELECT id FROM segments WHERE partner_id = $1", partner_id)
        edit = await browser.get(f"/partner/segments/{segment}")
        assert edit.status_code == 200 and "March" in edit.text
        renamed = await browser.post(f"/partner/segments/{segment}", data={
            "_csrf_token": csrf, "action": "save", "name": "Spring", "definition": definition})
        assert renamed.status_code == 302
        assert await db.fetchval("SELECT name FROM segments WHERE id = $1", segment) == "Spring"
        cashier_email = f"cashier-{uuid.uuid4().hex[:8]}@brand.example"
        async with app.state.sessionmaker() as session:
            await create_user(session, cashier_email, "partner_staff", partner_id=partner_id,
                              role="cashier", password=PASSWORD, verified=True)
            await session.commit()
        deleted = await browser.post(f"/partner/segments/{segment}/delete",
                                     data={"_csrf_token": csrf})
        assert deleted.status_code == 302
    assert await db.fetchval("SELECT count(*) FROM segments WHERE id = $1", segment) == 0
    cashier = await login(app, cashier_email)
    async with cashier:
        assert (await cashier.get("/partner/segments")).status_code == 403


async def test_operator_coalition_segments(app, client, db):
    operator, _ = await new_login(app, "operator")
    async with operator:
        page = await operator.get("/operator/segments")
        assert page.status_code == 200 and "Coalition segments" in page.text
        saved = await operator.post("/operator/segments", data={
            "_csrf_token": csrf_of(page), "action": "save", "name": f"Coalition {uuid.uuid4()}",
            "definition": '{"conditions": [{"type": "transactions", "days": 30, "min": 1}]}'})
        assert saved.status_code == 302
    assert await db.fetchval("SELECT count(*) FROM segments WHERE partner_id IS NULL") >= 1


async def test_company_accounts_share_a_wallet_and_protect_the_last_admin(
        app, client, db, smtp, partner):
    enrolled = await partner.post("/api/v1/members", {
        "email": f"firma-{uuid.uuid4().hex[:6]}@b2b.example", "kind": "company",
        "company_name": "Firma Testowa", "tax_id": "PL 526-000-12-46"})
    assert enrolled.status_code == 201, enrolled.text
    company = enrolled.json()
    assert (company["kind"], company["tax_id"]) == ("company", "5260001246")
    await Ledger(app.state.pool).earn(PostingRequest(
        partner_id=partner.partner_id, member_id=uuid.UUID(company["id"]), points=300,
        actor="test"))

    operator, _ = await new_login(app, "operator")
    admin_email = f"admin-{uuid.uuid4().hex[:6]}@b2b.example"
    async with operator:
        page = await operator.get("/operator/companies")
        created = await operator.post("/operator/companies", data={
            "_csrf_token": csrf_of(page), "company_name": "Firma Testowa", "tax_id": "5260001246",
            "email": company["email"], "admin_email": admin_email, "admin_name": "Ada"})
        assert created.status_code == 302
        assert "Firma Testowa" in (await operator.get("/operator/companies")).text
    link = smtp.link_to(admin_email, "/set-password")
    anonymous = Browser(app)
    async with anonymous:
        form = await anonymous.get(link)
        await anonymous.post("/set-password", data={"_csrf_token": csrf_of(form),
                                                    "token": link.split("token=")[1],
                                                    "password": PASSWORD})
    admin = await login(app, admin_email)
    buyer_email = f"buyer-{uuid.uuid4().hex[:6]}@b2b.example"
    async with admin:
        home = await admin.get("/member")
        assert "300" in home.text and "Firma Testowa" in home.text
        people = await admin.get("/member/company")
        assert people.status_code == 200 and admin_email in people.text
        csrf = csrf_of(people)
        invited = await admin.post("/member/company/people", data={
            "_csrf_token": csrf, "email": buyer_email, "name": "Bartek", "role": "buyer"})
        assert invited.status_code == 302
        admin_id = await db.fetchval("SELECT id FROM users WHERE email = $1", admin_email)
        demoted = await admin.post(f"/member/company/people/{admin_id}/role",
                                   data={"_csrf_token": csrf, "role": "buyer"})
        assert demoted.status_code == 409 and "at least one admin" in demoted.text
        removed = await admin.post(f"/member/company/people/{admin_id}/remove",
                                   data={"_csrf_token": csrf})
        assert removed.status_code == 409
        stranger = await db.fetchval("SELECT id FROM users WHERE kind = 'operator' LIMIT 1")
        assert (await admin.post(f"/member/company/people/{stranger}/role", data={
            "_csrf_token": csrf, "role": "admin"})).status_code == 404
    assert smtp.link_to(buyer_email, "/set-password")
    buyer_id = await db.fetchval("SELECT id FROM users WHERE email = $1", buyer_email)
    await db.execute("UPDATE users SET password_hash = (SELECT password_hash FROM users"
                     " WHERE email = $1), email_verified_at = now() WHERE id = $2",
                     admin_email, buyer_id)
    buyer = await login(app, buyer_email)
    async with buyer:
        home = await buyer.get("/member")
        assert "300" in home.text and "as buyer" in home.text       # the shared wallet
        people = await buyer.get("/member/company")
        assert people.status_code == 200 and "Send invitation" not in people.text
        assert (await buyer.post("/member/company/people", data={
            "_csrf_token": csrf_of(people), "email": "x@b2b.example",
            "role": "admin"})).status_code == 403
    # With a second admin, the first may step down.
    admin = await login(app, admin_email)
    async with admin:
        csrf = csrf_of(await admin.get("/member/company"))
        assert (await admin.post(f"/member/company/people/{buyer_id}/role", data={
            "_csrf_token": csrf, "role": "admin"})).status_code == 302
        assert (await admin.post(f"/member/company/people/{admin_id}/role", data={
            "_csrf_token": csrf, "role": "buyer"})).status_code == 302
    # A person's page is not a company page.
    person, _ = await new_login(app, "member", member_id=await _member(app))
    async with person:
        assert (await person.get("/member/company")).status_code == 403


async def test_enrolment_validates_company_and_birth_date(partner):
    email = f"v-{uuid.uuid4().hex[:6]}@example.com"
    cases = [
        ({"email": email, "kind": "company", "tax_id": "5260001246"}, "company_name"),
        ({"email": email, "kind": "company", "company_name": "X", "tax_id": "123"}, "tax_id"),
        ({"email": email, "company_name": "X"}, "kind"),
        ({"email": email, "birth_date": "2999-01-01"}, "birth_date"),
        ({"email": email, "kind": "company", "company_name": "X", "tax_id": "5260001246",
          "birth_date": "1990-01-01"}, "birth_date"),
    ]
    for body, field in cases:
        response = await partner.post("/api/v1/members", body)
        assert response.status_code == 400, (body, response.text)
        assert field in response.text, (body, response.text)
    person = await partner.post("/api/v1/members", {"email": email, "birth_date": "1990-05-17"})
    assert person.json()["birth_date"] == "1990-05-17" and person.json()["kind"] == "person"
    clash = await partner.post("/api/v1/members", {"email": email, "kind": "company",
                                                   "company_name": "X",
                                                   "tax_id": "5260001246"})
    assert clash.status_code == 409 and clash.json()["type"].endswith("member-kind-mismatch")
