"""Affiliate programs and terms (validation, versions, append-only), enrollment's state
machine, affiliate sign-up with email verification and payout methods, the affiliate's
program pages, and the partner console (programs, terms, approvals, bans, creatives,
roles, another partner's 404s)."""

import re
import uuid

import asyncpg
import pytest

from coalition.affiliates import programs
from coalition.affiliates.programs import ProgramSpec, TermsSpec, terms_from_form
from coalition.affiliates.signup import AGREEMENT_VERSION, PayoutSpec
from coalition.errors import DomainError
from coalition.members import enroll
from tests.affiliate_helpers import (
    affiliate_browser,
    make_affiliate,
    make_enrollment,
    make_partner,
    make_program,
    setup_enrollment,
    staff_browser,
)
from tests.portal import Browser, csrf_of, owner_browser, submit

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
       b"\x00\x00\x00\x00IEND\xaeB`\x82")


def refused(spec, field: str) -> DomainError:
    with pytest.raises(DomainError) as caught:
        spec.checked()
    assert caught.value.field == field, caught.value.detail
    assert caught.value.status == 422
    return caught.value


# ---- programs and terms ----

def test_program_validation_names_the_field():
    ok = ProgramSpec(" Blog ", "https://shop.example/x", "pln").checked()
    assert (ok.name, ok.currency) == ("Blog", "PLN")
    assert ProgramSpec("Dev", "http://localhost:8080/x", "PLN").checked()
    refused(ProgramSpec("", "https://a.example", "PLN"), "name")
    refused(ProgramSpec("P", "http://shop.example/x", "PLN"), "landing_url")
    refused(ProgramSpec("P", "ftp://shop.example/x", "PLN"), "landing_url")
    refused(ProgramSpec("P", "https://user:pw@shop.example/", "PLN"), "landing_url")
    refused(ProgramSpec("P", "shop.example", "PLN"), "landing_url")
    refused(ProgramSpec("P", "https://a.example", "ZŁ"), "currency")
    refused(ProgramSpec("P", "https://a.example", "PLN", enrollment="open"), "enrollment")
    refused(ProgramSpec("P", "https://a.example", "PLN", status="gone"), "status")


def test_terms_validation_and_defaults():
    terms = TermsSpec(model="percent", rate_bp=500).checked()
    assert (terms.attribution_window_days, terms.click_model, terms.hold_days,
            terms.min_payout_minor, terms.recurring_months) == (30, "last_click", 30, 5000, None)
    assert TermsSpec(model="percent", rate_bp=10_000).checked()      # 100 % is allowed
    refused(TermsSpec(model="percent", rate_bp=10_001), "rate")
    refused(TermsSpec(model="percent"), "rate")
    refused(TermsSpec(model="bounty"), "model")
    assert TermsSpec(model="tiered_percent",
                     tiers=((0, 200), (1_000_000, 500), (5_000_000, 1000))).checked()
    refused(TermsSpec(model="tiered_percent", tiers=((0, 200), (0, 500))), "tiers")
    refused(TermsSpec(model="tiered_percent", tiers=((100, 200),)), "tiers")
    refused(TermsSpec(model="tiered_percent"), "tiers")
    refused(TermsSpec(model="percent", rate_bp=500, tiers=((0, 200),)), "tiers")
    assert TermsSpec(model="per_lead", flat_minor=2000).checked()
    refused(TermsSpec(model="per_transaction"), "flat")
    refused(TermsSpec(model="per_lead", flat_minor=2000, category_rates={"x": 100}),
            "category_rates")
    refused(TermsSpec(model="percent", rate_bp=500, category_rates={"bad cat!": 100}),
            "category_rates")
    refused(TermsSpec(model="percent", rate_bp=500, recurring_months=0), "recurring_months")
    refused(TermsSpec(model="percent", rate_bp=500, attribution_window_days=0),
            "attribution_window_days")
    refused(TermsSpec(model="percent", rate_bp=500, click_model="linear"), "click_model")
    refused(TermsSpec(model="percent", rate_bp=500, hold_days=400), "hold_days")


def test_terms_form_reads_major_units_and_percentages():
    terms = terms_from_form({"model": "tiered_percent", "rate": "99",
                             "tiers": "0 = 2\n10 000 = 5,5\n50000 = 10%",
                             "category_rates": "electronics = 1.25", "recurring": "recurring",
                             "recurring_months": "12", "attribution_window_days": "",
                             "click_model": "first_click", "min_payout": "100.50"})
    assert terms.tiers == ((0, 200), (1_000_000, 550), (5_000_000, 1000))
    assert terms.rate_bp is None                  # the percent field is not this model's
    assert terms.category_rates == {"electronics": 125}
    assert (terms.recurring_months, terms.attribution_window_days, terms.click_model,
            terms.min_payout_minor) == (12, 30, "first_click", 10_050)
    for form, field in (({"model": "percent", "rate": "2.555"}, "rate"),
                        ({"model": "percent", "rate": "abc"}, "rate"),
                        ({"model": "percent", "rate": "101"}, "rate"),
                        ({"model": "per_lead", "flat": "-1"}, "flat"),
                        ({"model": "per_lead", "flat": "1e400"}, "flat"),
                        ({"model": "tiered_percent", "tiers": "0 2"}, "tiers"),
                        ({"model": "percent", "rate": "5", "recurring": "recurring"},
                         "recurring_months"),
                        ({"model": "percent", "rate": "5", "hold_days": "-3"}, "hold_days")):
        with pytest.raises(DomainError) as caught:
            terms_from_form(form)
        assert caught.value.field == field, (form, caught.value.detail)


async def test_terms_versions_append_and_never_change(app, db):
    partner_id = await make_partner(app)
    program = await make_program(app, partner_id)
    async with app.state.sessionmaker() as session:
        second = await programs.add_terms(session, partner_id, program.id,
                                          TermsSpec(model="per_transaction", flat_minor=1500,
                                                    hold_days=14), "tester")
        await session.commit()
        history = await programs.terms_history(session, program.id)
        in_force = await programs.terms_in_force(session, program.id)
    assert [t.version for t in history] == [2, 1] and second.version == 2
    assert in_force.id == second.id and in_force.flat_minor == 1500
    with pytest.raises(asyncpg.PostgresError):
        await db.execute("UPDATE affiliate_program_terms SET rate_bp = 9000 WHERE id = $1",
                         program.terms_id)
    with pytest.raises(asyncpg.PostgresError):
        await db.execute("DELETE FROM affiliate_program_terms WHERE id = $1", program.terms_id)
    assert await db.fetchval("SELECT rate_bp FROM affiliate_program_terms WHERE id = $1",
                             program.terms_id) == 500


# ---- enrollment ----

async def test_enrollment_state_machine(app):
    partner_id = await make_partner(app)
    auto = await make_program(app, partner_id)
    gated = await make_program(app, partner_id, enrollment="application")
    bare = await make_program(app, partner_id, terms=None)
    affiliate = await make_affiliate(app)
    async with app.state.sessionmaker() as session:
        joined = await programs.join_program(session, affiliate.id, auto.id)
        applied = await programs.join_program(session, affiliate.id, gated.id, " My blog ")
        assert (joined.status, joined.decided_by) == ("approved", "auto")
        assert (applied.status, applied.application_note) == ("pending", "My blog")
        assert re.fullmatch(r"anna-blogerka-[a-z2-9]{8}", joined.code)
        with pytest.raises(DomainError) as again:
            await programs.join_program(session, affiliate.id, auto.id)
        assert again.value.slug == "already-enrolled" and again.value.status == 409
        with pytest.raises(DomainError) as not_ready:
            await programs.join_program(session, affiliate.id, bare.id)
        assert not_ready.value.slug == "affiliate-program-not-ready"
        with pytest.raises(DomainError) as no_reason:
            await programs.decide_enrollment(session, partner_id, joined.id, "ban", "t", " ")
        assert no_reason.value.field == "reason"
        with pytest.raises(DomainError) as wrong:
            await programs.decide_enrollment(session, partner_id, applied.id, "ban", "t", "x")
        assert wrong.value.slug == "enrollment-wrong-state"
        approved = await programs.decide_enrollment(session, partner_id, applied.id,
                                                    "approve", "staff:a")
        assert approved.status == "approved" and approved.decided_by == "staff:a"
        banned = await programs.decide_enrollment(session, partner_id, applied.id, "ban",
                                                  "staff:a", "Brand bidding")
        assert (banned.status, banned.status_reason) == ("banned", "Brand bidding")
        for action in ("approve", "reject", "ban"):
            with pytest.raises(DomainError) as final:
                await programs.decide_enrollment(session, partner_id, applied.id, action,
                                                 "t", "x")
            assert final.value.status == 409
        with pytest.raises(DomainError) as foreign:
            await programs.decide_enrollment(session, await make_partner(app), joined.id,
                                             "ban", "t", "x")
        assert foreign.value.status == 404
        await session.commit()
    rejected = await make_enrollment(app, (await make_affiliate(app)).id, gated,
                                     status="rejected")
    assert rejected.status == "rejected"


# ---- sign-up ----

def signup_fields(**overrides: str) -> dict:
    fields = {"kind": "person", "name": "Ola Recenzentka",
              "email": f"ola-{uuid.uuid4().hex[:8]}@example.com",
              "password": "affiliate secret 12", "accept_terms": "on"}
    return {**fields, **overrides}


async def test_signup_verify_login_and_recorded_agreement(app, db, smtp):
    browser = Browser(app)
    fields = signup_fields(kind="company", company_name="Recenzje Sp. z o.o.",
                           nip="123-456-32-18", website="https://recenzje.example",
                           payout_method="sepa", account_holder="Recenzje Sp. z o.o.",
                           iban="PL61 1090 1014 0000 0712 1981 2874", bic="WBKPPLPP")
    response = await submit(browser, "/affiliate/signup", "/affiliate/signup", **fields)
    assert response.status_code == 200 and "Check your email" in response.text
    row = await db.fetchrow("SELECT * FROM affiliates WHERE email = $1", fields["email"])
    assert (row["kind"], row["company_name"], row["nip"]) == ("company", "Recenzje Sp. z o.o.",
                                                              "1234563218")
    assert row["terms_version"] == AGREEMENT_VERSION and row["terms_accepted_at"] is not None
    assert (row["payout_method"], row["iban"], row["bic"]) == ("sepa",
                                                               "PL61109010140000071219812874",
                                                               "WBKPPLPP")
    early = await submit(browser, "/login", "/login", email=fields["email"],
                         password=fields["password"])
    assert early.status_code == 401
    verified = await browser.get(smtp.link_to(fields["email"], "/verify-email"))
    assert verified.status_code == 200
    login = await submit(browser, "/login", "/login", email=fields["email"],
                         password=fields["password"])
    assert login.status_code == 302 and login.headers["location"] == "/affiliate"
    await browser.aclose()


@pytest.mark.parametrize(("overrides", "field"), [
    ({"nip": "123-456-32-19"}, "nip"),
    ({"accept_terms": ""}, "accept_terms"),
    ({"kind": "company"}, "company_name"),
    ({"email": "not-an-email"}, "email"),
    ({"password": "short"}, "password"),
    ({"payout_method": "sepa", "account_holder": "Ola", "iban": "PL00 1234"}, "iban"),
    ({"payout_method": "sepa", "account_holder": "Ola",
      "iban": "PL61109010140000071219812874", "bic": "DEUTDEFF"}, "bic"),
    ({"payout_method": "stripe_connect", "stripe_account_id": "acc_123"}, "stripe_account_id"),
    ({"payout_method": "points", "card_number": "7000000000000000"}, "card_number"),
    ({"payout_method": "cheque"}, "payout_method"),
])
async def test_signup_refusals_name_the_field_and_save_nothing(app, db, overrides, field):
    browser = Browser(app)
    fields = signup_fields(**overrides)
    response = await submit(browser, "/affiliate/signup", "/affiliate/signup", **fields)
    assert response.status_code in (400, 422), response.text[:300]
    assert f'id="{field}-error"' in response.text, response.text
    assert await db.fetchval("SELECT count(*) FROM affiliates WHERE email = $1",
                             fields["email"]) == 0
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1",
                             fields["email"]) == 0
    await browser.aclose()


async def test_points_payout_only_to_the_affiliates_own_card(app, db):
    partner_id = await make_partner(app)
    email = f"member-aff-{uuid.uuid4().hex[:8]}@example.com"
    async with app.state.sessionmaker() as session:
        own, _ = await enroll(session, partner_id, email, "Own Card", None)
        other, _ = await enroll(session, partner_id, f"x-{email}", "Someone Else", None)
        await session.commit()
    browser = Browser(app)
    stolen = await submit(browser, "/affiliate/signup", "/affiliate/signup",
                          **signup_fields(email=email, payout_method="points",
                                          card_number=other.member.card_number))
    assert stolen.status_code == 422 and "another email" in stolen.text
    mine = await submit(browser, "/affiliate/signup", "/affiliate/signup",
                        **signup_fields(email=email.upper(), payout_method="points",
                                        card_number=own.member.card_number))
    assert mine.status_code == 200, mine.text
    row = await db.fetchrow("SELECT payout_member_id, member_id FROM affiliates"
                            " WHERE lower(email) = $1", email)
    assert row["payout_member_id"] == own.member.id == row["member_id"]
    duplicate = await submit(browser, "/affiliate/signup", "/affiliate/signup",
                             **signup_fields(email=email))
    assert duplicate.status_code == 409 and 'id="email-error"' in duplicate.text
    await browser.aclose()


async def test_profile_edits_the_payout_method(app, db):
    affiliate = await make_affiliate(app)
    browser = await affiliate_browser(app, affiliate)
    page = await browser.get("/affiliate/profile")
    assert page.status_code == 200 and AGREEMENT_VERSION in page.text
    bad = await browser.post("/affiliate/profile", data={
        "_csrf_token": csrf_of(page), "payout_method": "stripe_connect",
        "stripe_account_id": "nope"})
    assert bad.status_code == 422 and 'id="stripe_account_id-error"' in bad.text
    good = await browser.post("/affiliate/profile", data={
        "_csrf_token": csrf_of(page), "payout_method": "stripe_connect",
        "stripe_account_id": "acct_1A2b3C4d5E6f"})
    assert good.status_code == 200 and 'id="saved"' in good.text
    assert tuple(await db.fetchrow("SELECT payout_method, stripe_account_id FROM affiliates"
                                   " WHERE id = $1", affiliate.id)) == ("stripe_connect",
                                                                         "acct_1A2b3C4d5E6f")
    await browser.aclose()


# ---- the affiliate's program pages ----

async def test_affiliate_browses_joins_and_applies(app, db):
    partner_id = await make_partner(app, "Sklep Ogrodowy")
    auto = await make_program(app, partner_id, name=f"Garden {uuid.uuid4().hex[:6]}")
    gated = await make_program(app, partner_id, name=f"Premium {uuid.uuid4().hex[:6]}",
                               enrollment="application",
                               terms=TermsSpec(model="per_lead", flat_minor=2500))
    paused = await make_program(app, partner_id, name=f"Paused {uuid.uuid4().hex[:6]}",
                                status="paused")
    affiliate = await make_affiliate(app)
    browser = await affiliate_browser(app, affiliate)
    page = await browser.get("/affiliate/programs")
    assert page.status_code == 200
    assert auto.name in page.text and gated.name in page.text and paused.name not in page.text
    assert "25.00 PLN per lead" in page.text and "5.00 % of the sale" in page.text
    csrf = csrf_of(page)
    joined = await browser.post(f"/affiliate/programs/{auto.id}/join",
                                data={"_csrf_token": csrf})
    assert joined.status_code == 303
    applied = await browser.post(f"/affiliate/programs/{gated.id}/join",
                                 data={"_csrf_token": csrf, "note": "Garden blog, 10k/mo"})
    assert applied.status_code == 303
    twice = await browser.post(f"/affiliate/programs/{auto.id}/join",
                               data={"_csrf_token": csrf})
    assert twice.status_code == 409 and 'id="join-error"' in twice.text
    closed = await browser.post(f"/affiliate/programs/{paused.id}/join",
                                data={"_csrf_token": csrf})
    assert closed.status_code == 404
    page = await browser.get("/affiliate/programs")
    code = await db.fetchval("SELECT code FROM affiliate_enrollments WHERE affiliate_id = $1"
                             " AND program_id = $2", affiliate.id, auto.id)
    assert f"http://testserver.local/r/{code}" in page.text
    assert await db.fetchval("SELECT application_note FROM affiliate_enrollments WHERE"
                             " program_id = $1", gated.id) == "Garden blog, 10k/mo"
    # Partner staff are not affiliates.
    staff, _ = await owner_browser(app, None)
    assert (await staff.get("/affiliate/programs")).status_code == 403
    await staff.aclose()
    await browser.aclose()


# ---- the partner console ----

async def test_partner_runs_a_program_end_to_end(app, db):
    browser, partner_id = await owner_browser(app, None)
    page = await browser.get("/partner/affiliates")
    assert page.status_code == 200
    csrf = csrf_of(page)
    bad = await browser.post("/partner/affiliates", data={
        "_csrf_token": csrf, "name": "Blogs", "landing_url": "http://shop.example/",
        "currency": "PLN", "enrollment": "application", "status": "active"})
    assert bad.status_code == 422 and 'id="landing_url-error"' in bad.text
    created = await browser.post("/partner/affiliates", data={
        "_csrf_token": csrf, "name": "Blogs", "landing_url": "https://shop.example/",
        "currency": "PLN", "enrollment": "application", "status": "active"})
    assert created.status_code == 303
    program_url = created.headers["location"]
    program_id = uuid.UUID(program_url.rsplit("/", 1)[1])
    taken = await browser.post("/partner/affiliates", data={
        "_csrf_token": csrf, "name": "Blogs", "landing_url": "https://shop.example/",
        "currency": "PLN"})
    assert taken.status_code == 409
    terms = await browser.post(f"{program_url}/terms", data={
        "_csrf_token": csrf, "model": "tiered_percent", "tiers": "0 = 2\n10000 = 10"})
    assert terms.status_code == 303
    bad_terms = await browser.post(f"{program_url}/terms", data={
        "_csrf_token": csrf, "model": "tiered_percent", "tiers": "0 = 2\n0 = 10"})
    assert bad_terms.status_code == 422 and 'id="terms-tiers-error"' in bad_terms.text
    saved = await browser.post(program_url, data={
        "_csrf_token": csrf, "name": "Blogs and vlogs", "landing_url": "https://shop.example/a",
        "currency": "PLN", "enrollment": "application", "status": "active",
        "description": "For reviewers"})
    assert saved.status_code == 303
    row = await db.fetchrow("SELECT * FROM affiliate_programs WHERE id = $1", program_id)
    assert (row["name"], row["landing_url"], row["partner_id"]) == (
        "Blogs and vlogs", "https://shop.example/a", partner_id)
    assert await db.fetchval("SELECT tiers FROM affiliate_program_terms WHERE program_id = $1",
                             program_id) == ('[{"rate_bp": 200, "from_minor": 0},'
                                             ' {"rate_bp": 1000, "from_minor": 1000000}]')
    # An affiliate applies; the partner approves, then bans with a reason.
    affiliate = await make_affiliate(app, name="Vlogger Vera")
    async with app.state.sessionmaker() as session:
        enrollment = await programs.join_program(session, affiliate.id, program_id, "hi")
        await session.commit()
    page = await browser.get(program_url)
    assert "Vlogger Vera" in page.text and "pending" in page.text and "Version" in page.text
    decide = f"/partner/affiliates/enrollments/{enrollment.id}"
    assert (await browser.post(decide, data={"_csrf_token": csrf, "action": "approve"})
            ).status_code == 303
    no_reason = await browser.post(decide, data={"_csrf_token": csrf, "action": "ban"})
    assert no_reason.status_code == 422
    banned = await browser.post(decide, data={"_csrf_token": csrf, "action": "ban",
                                              "reason": "Fake reviews"})
    assert banned.status_code == 303
    assert tuple(await db.fetchrow("SELECT status, status_reason FROM affiliate_enrollments"
                                   " WHERE id = $1", enrollment.id)) == ("banned",
                                                                          "Fake reviews")
    # Creatives: an image, a text, and refusals.
    uploads = f"{program_url}/creatives"
    image = await browser.post(uploads, data={"_csrf_token": csrf, "title": "Banner"},
                               files={"file": ("banner.png", PNG, "image/png")})
    assert image.status_code == 303
    text = await browser.post(uploads, data={"_csrf_token": csrf, "title": "Tagline",
                                             "text": "Best garden tools in Poland"})
    assert text.status_code == 303
    for files, field in (({"file": ("x.svg", b"<svg onload=alert(1)>", "image/svg+xml")},
                          "creative-file"),
                         ({"file": ("fake.png", b"GIF89a....", "image/png")}, "creative-file"),
                         ({"file": ("big.png", PNG + b"\0" * 600_000, "image/png")},
                          "creative-file")):
        refused_upload = await browser.post(uploads, data={"_csrf_token": csrf,
                                                           "title": "Bad"}, files=files)
        assert refused_upload.status_code == 422, refused_upload.text[:200]
        assert f'id="{field}-error"' in refused_upload.text
    creatives = await db.fetch("SELECT id, content_type FROM affiliate_creatives WHERE"
                               " program_id = $1 ORDER BY id", program_id)
    assert [c["content_type"] for c in creatives] == ["image/png", "text/plain"]
    served = await browser.get(f"/partner/affiliates/creatives/{creatives[0]['id']}")
    assert served.status_code == 200 and served.content == PNG
    assert served.headers["content-type"] == "image/png"
    off = await browser.post(f"/partner/affiliates/creatives/{creatives[1]['id']}/active",
                             data={"_csrf_token": csrf})
    assert off.status_code == 303
    assert await db.fetchval("SELECT active FROM affiliate_creatives WHERE id = $1",
                             creatives[1]["id"]) is False
    await browser.aclose()


async def test_roles_analyst_reads_cashier_sees_nothing(app, db):
    partner_id = await make_partner(app)
    program = await make_program(app, partner_id)
    enrollment = await make_enrollment(app, (await make_affiliate(app)).id, program)
    analyst = await staff_browser(app, partner_id, "analyst")
    page = await analyst.get("/partner/affiliates")
    assert page.status_code == 200 and "New program" not in page.text
    detail = await analyst.get(f"/partner/affiliates/programs/{program.id}")
    assert detail.status_code == 200 and "Publish new version" not in detail.text
    csrf = csrf_of(page)
    for path, data in (("/partner/affiliates", {"name": "X"}),
                       (f"/partner/affiliates/programs/{program.id}", {"name": "X"}),
                       (f"/partner/affiliates/programs/{program.id}/terms", {"model": "percent",
                                                                             "rate": "5"}),
                       (f"/partner/affiliates/enrollments/{enrollment.id}", {"action": "ban",
                                                                             "reason": "x"})):
        response = await analyst.post(path, data={"_csrf_token": csrf, **data})
        assert response.status_code == 403, path
    cashier = await staff_browser(app, partner_id, "cashier")
    assert (await cashier.get("/partner/affiliates")).status_code == 403
    await analyst.aclose()
    await cashier.aclose()


async def test_another_partner_gets_404_for_every_object(app, db):
    affiliate, program, enrollment = await setup_enrollment(app)
    async with app.state.sessionmaker() as session:
        creative = await programs.add_creative(session, program.partner_id, program.id,
                                               "A-SECRET-CREATIVE", text="A-SECRET-TEXT")
        await session.commit()
    intruder, _ = await owner_browser(app, None)
    page = await intruder.get("/partner/affiliates")
    assert page.status_code == 200 and program.name not in page.text
    assert affiliate.name not in page.text
    csrf = csrf_of(page)
    gets = [f"/partner/affiliates/programs/{program.id}",
            f"/partner/affiliates/creatives/{creative.id}"]
    posts = {f"/partner/affiliates/programs/{program.id}": {
                 "name": "Stolen", "landing_url": "https://evil.example", "currency": "PLN"},
             f"/partner/affiliates/programs/{program.id}/terms": {"model": "percent",
                                                                  "rate": "100"},
             f"/partner/affiliates/programs/{program.id}/creatives": {"title": "Evil",
                                                                      "text": "evil"},
             f"/partner/affiliates/creatives/{creative.id}/active": {},
             f"/partner/affiliates/enrollments/{enrollment.id}": {"action": "ban",
                                                                  "reason": "x"}}
    for path in gets:
        response = await intruder.get(path)
        assert response.status_code == 404 and "A-SECRET" not in response.text, path
    for path, data in posts.items():
        response = await intruder.post(path, data={"_csrf_token": csrf, **data})
        assert response.status_code == 404, (path, response.status_code)
        assert program.name not in response.text
    assert tuple(await db.fetchrow("SELECT name, landing_url FROM affiliate_programs WHERE"
                                   " id = $1", program.id)) == (program.name,
                                                                program.landing_url)
    assert await db.fetchval("SELECT count(*) FROM affiliate_program_terms WHERE"
                             " program_id = $1", program.id) == 1
    assert await db.fetchval("SELECT status FROM affiliate_enrollments WHERE id = $1",
                             enrollment.id) == "approved"
    assert await db.fetchval("SELECT active FROM affiliate_creatives WHERE id = $1",
                             creative.id) is True
    assert await db.fetchval("SELECT count(*) FROM affiliate_creatives WHERE program_id = $1",
                             program.id) == 1
    await intruder.aclose()


async def test_signup_accepts_an_optional_nip_and_pays_later():
    """Domain-level: no NIP and no payout method yet is a valid person sign-up."""
    from coalition.affiliates.signup import SignupSpec

    spec = SignupSpec(kind="person", name="  Jan   Nowak ", email="jan@example.com",
                      password="long enough pw", accepts_agreement=True,
                      payout=PayoutSpec()).checked()
    assert (spec.name, spec.nip) == ("Jan Nowak", "")


async def test_console_changes_write_their_audit_rows_and_refusals_none(app, db):
    """Each console change writes its audit row in its own transaction (issue 17): who
    did it, for which partner; a refused change leaves no row."""
    browser, partner_id = await owner_browser(app, None)
    owner = await db.fetchval("SELECT email FROM users WHERE partner_id = $1", partner_id)
    csrf = csrf_of(await browser.get("/partner/affiliates"))
    form = {"_csrf_token": csrf, "name": "Audited", "landing_url": "https://shop.example/",
            "currency": "PLN", "enrollment": "application", "status": "active"}
    assert (await browser.post("/partner/affiliates", data={
        **form, "landing_url": "http://shop.example/"})).status_code == 422
    created = await browser.post("/partner/affiliates", data=form)
    program_url = created.headers["location"]
    program_id = program_url.rsplit("/", 1)[1]
    assert (await browser.post(f"{program_url}/terms", data={
        "_csrf_token": csrf, "model": "percent", "rate": "5"})).status_code == 303
    assert (await browser.post(f"{program_url}/creatives", data={
        "_csrf_token": csrf, "title": "Tagline", "text": "Hi"})).status_code == 303
    affiliate = await make_affiliate(app)
    async with app.state.sessionmaker() as session:
        enrollment = await programs.join_program(session, affiliate.id, uuid.UUID(program_id))
        await session.commit()
    decide = f"/partner/affiliates/enrollments/{enrollment.id}"
    assert (await browser.post(decide, data={"_csrf_token": csrf, "action": "ban",
                                             "reason": "x"})
            ).status_code == 409   # a pending application cannot be banned
    assert (await browser.post(decide, data={"_csrf_token": csrf, "action": "approve"})
            ).status_code == 303
    rows = await db.fetch("SELECT action, target, actor, actor_user_id IS NOT NULL AS user"
                          " FROM audit_log WHERE partner_id = $1 AND action LIKE 'affiliate%'"
                          " ORDER BY id", partner_id)
    assert [(r["action"], r["actor"], r["user"]) for r in rows] == [
        (action, owner, True) for action in (
            "affiliate_program.create", "affiliate_terms.create",
            "affiliate_creative.create", "affiliate_enrollment.approve")]
    assert rows[0]["target"] == rows[1]["target"] == program_id
    assert rows[3]["target"] == str(enrollment.id)
    await browser.aclose()
