"""Becoming a partner through the portal: application with validated NIP/VAT and IBAN,
operator review with audit, owner invitation, and suspension blocking API access."""

import uuid

from tests.helpers import new_partner
from tests.portal import csrf_of, submit

VALID = {
    "company_name": "Apteka Pod Lipami", "legal_form": "sp. z o.o.",
    "tax_id": "PL 526-000-12-46", "address": "ul. Lipowa 1, 00-001 Warszawa",
    "website": "https://apteka.example", "industry": "pharmacy", "contact_name": "Ewa Lipa",
    "settlement_currency": "PLN", "iban": "PL61 1090 1014 0000 0712 1981 2874",
    "terms_version": "2026-1", "accept_terms": "yes",
}


def random_nip() -> str:
    """A valid Polish NIP no other application uses: a tax id that is active or applied
    for cannot apply again, so fixed test values would collide across tests."""
    while True:
        digits = [int(d) for d in f"{uuid.uuid4().int % 10**9:09d}"]
        check = sum(w * d for w, d in zip((6, 5, 7, 2, 3, 4, 5, 6, 7), digits, strict=True)) % 11
        if check < 10 and digits[0] != 0:
            return "".join(map(str, digits)) + str(check)


def application(**changes: str) -> dict:
    email = f"owner-{uuid.uuid4().hex[:8]}@apteka.example"
    return {**VALID, "contact_email": email,
            "company_name": f"Apteka {uuid.uuid4().hex[:6]}", "tax_id": random_nip(), **changes}


async def operator_login(browser, database_url) -> None:
    from tests.test_cli import coalition

    email = f"op-{uuid.uuid4().hex[:8]}@coalition.example"
    assert coalition(database_url, "operators", "create", "--email", email, "--password",
                     "operator secret 1").returncode == 0
    response = await submit(browser, "/login", "/login", email=email,
                            password="operator secret 1")
    assert response.status_code == 302


async def test_invalid_application_shows_errors_and_saves_nothing(browser, db):
    before = await db.fetchval("SELECT count(*) FROM partners")
    bad = application(tax_id="1234567890", iban="PL00 1234", accept_terms="",
                      contact_email="nope", legal_form="")
    response = await submit(browser, "/partners/apply", "/partners/apply", **bad)
    assert response.status_code == 400
    for field in ("tax_id", "iban", "accept_terms", "contact_email", "legal_form"):
        assert f'id="{field}-error"' in response.text, field
    assert 'value="Apteka' in response.text          # what was typed is kept
    assert await db.fetchval("SELECT count(*) FROM partners") == before


async def test_eu_vat_ids_are_accepted(browser, db):
    form = application(tax_id="DE 136 695 976", settlement_currency="EUR",
                       iban="DE89 3704 0044 0532 0130 00")
    response = await submit(browser, "/partners/apply", "/partners/apply", **form)
    assert response.status_code == 200, response.text
    assert await db.fetchval("SELECT tax_id FROM partners WHERE contact_email = $1",
                             form["contact_email"]) == "DE136695976"


async def test_apply_review_approve_invite_and_log_in(browser, client, db, smtp, database_url):
    form = application()
    applied = await submit(browser, "/partners/apply", "/partners/apply", **form)
    assert applied.status_code == 200 and "Application received" in applied.text
    row = await db.fetchrow("SELECT id, status, tax_id, iban FROM partners"
                            " WHERE contact_email = $1", form["contact_email"])
    assert row["status"] == "applied" and row["iban"] == "PL61109010140000071219812874"
    assert smtp.last_to(form["contact_email"])["Subject"].startswith("We received")

    operator = client.__class__(transport=client._transport, base_url=str(client.base_url))
    async with operator:
        await operator_login(operator, database_url)
        queue = await operator.get("/operator/partners")
        assert form["company_name"] in queue.text
        detail = await operator.get(f"/operator/partners/{row['id']}")
        info = await operator.post(f"/operator/partners/{row['id']}/decision", data={
            "_csrf_token": csrf_of(detail), "decision": "request_info",
            "note": "Please send the KRS extract"})
        assert info.status_code == 302
        assert "KRS extract" in smtp.last_to(form["contact_email"]).get_payload()
        detail = await operator.get(f"/operator/partners/{row['id']}")
        assert 'id="status">under_review' in detail.text
        approve = await operator.post(f"/operator/partners/{row['id']}/decision", data={
            "_csrf_token": csrf_of(detail), "decision": "approve"})
        assert approve.status_code == 302
    assert await db.fetchval("SELECT status FROM partners WHERE id = $1", row["id"]) == "active"
    actions = [r["action"] for r in await db.fetch(
        "SELECT action, actor FROM audit_log WHERE partner_id = $1 ORDER BY id", row["id"])]
    assert actions == ["partner.applied", "partner.request_info", "partner.approve"]

    link = smtp.link_to(form["contact_email"], "/set-password")
    page = await browser.get(link)
    done = await browser.post("/set-password", data={
        "_csrf_token": csrf_of(page), "token": link.split("token=")[1],
        "password": "owner secret 12"})
    assert done.status_code == 302
    login = await submit(browser, "/login", "/login", email=form["contact_email"],
                         password="owner secret 12")
    assert login.headers["location"] == "/partner"
    home = await browser.get("/partner")
    assert form["company_name"] in home.text and "owner" in home.text


async def test_rejection_needs_a_reason_and_is_emailed(client, db, smtp, database_url, browser):
    form = application()
    await submit(browser, "/partners/apply", "/partners/apply", **form)
    partner_id = await db.fetchval("SELECT id FROM partners WHERE contact_email = $1",
                                   form["contact_email"])
    await operator_login(browser, database_url)
    detail = await browser.get(f"/operator/partners/{partner_id}")
    no_reason = await browser.post(f"/operator/partners/{partner_id}/decision", data={
        "_csrf_token": csrf_of(detail), "decision": "reject", "note": ""})
    assert no_reason.status_code == 400 and 'data-field="note"' in no_reason.text
    assert await db.fetchval("SELECT status FROM partners WHERE id = $1", partner_id) == "applied"
    await browser.post(f"/operator/partners/{partner_id}/decision", data={
        "_csrf_token": csrf_of(detail), "decision": "reject", "note": "Outside our region"})
    assert await db.fetchval("SELECT status FROM partners WHERE id = $1",
                             partner_id) == "rejected"
    assert "Outside our region" in smtp.last_to(form["contact_email"]).get_payload()
    again = await browser.post(f"/operator/partners/{partner_id}/decision", data={
        "_csrf_token": csrf_of(detail), "decision": "approve"})
    assert again.status_code == 409 and "not possible" in again.text


async def test_suspension_from_console_blocks_api_at_once(client, browser, database_url, db):
    partner = await new_partner(client)
    assert (await partner.get("/api/v1/members")).status_code == 200
    await operator_login(browser, database_url)
    detail = await browser.get(f"/operator/partners/{partner.partner_id}")
    await browser.post(f"/operator/partners/{partner.partner_id}/decision", data={
        "_csrf_token": csrf_of(detail), "decision": "suspend", "note": "Unpaid statements"})
    blocked = await partner.get("/api/v1/members")
    assert blocked.status_code == 403
    assert blocked.json()["type"] == "/problems/partner-not-active"
    token = await client.post("/oauth/token", data={"grant_type": "client_credentials"},
                              auth=(partner.client_id, partner.client_secret))
    assert token.status_code == 401                        # no new tokens either
    detail = await browser.get(f"/operator/partners/{partner.partner_id}")
    await browser.post(f"/operator/partners/{partner.partner_id}/decision", data={
        "_csrf_token": csrf_of(detail), "decision": "reactivate"})
    assert (await partner.get("/api/v1/members")).status_code == 200


async def test_operator_pages_need_an_operator(browser, client):
    anonymous = await browser.get("/operator/partners")
    assert anonymous.status_code == 302 and anonymous.headers["location"].startswith("/login")
