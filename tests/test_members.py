"""Member enrolment, linking, lookup and visibility between partners."""

import uuid

from stdnum import luhn


def email() -> str:
    return f"m-{uuid.uuid4().hex[:10]}@example.com"


async def test_enrol_creates_member_with_valid_card(partner):
    address = email()
    response = await partner.post("/api/v1/members", {"email": address, "name": "Jan Kowalski",
                                                      "partner_customer_id": "C-1"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["email"] == address
    assert body["partner_customer_id"] == "C-1"
    assert len(body["card_number"]) == 16 and luhn.is_valid(body["card_number"])
    assert body["status"] == "active"


async def test_existing_email_links_instead_of_duplicating(partner, other_partner, db):
    address = email()
    first = await partner.post("/api/v1/members", {"email": address})
    assert first.status_code == 201
    again = await other_partner.post("/api/v1/members",
                                     {"email": address.upper(), "partner_customer_id": "X9"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["partner_customer_id"] == "X9"
    count = await db.fetchval("SELECT count(*) FROM members WHERE lower(email) = $1", address)
    assert count == 1


async def test_concurrent_enrolment_of_one_email_creates_one_member(partner, db):
    import asyncio

    address = email()
    responses = await asyncio.gather(
        *[partner.post("/api/v1/members", {"email": address}) for _ in range(10)])
    assert {r.status_code for r in responses} <= {200, 201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert await db.fetchval("SELECT count(*) FROM members WHERE email = $1", address) == 1


async def test_customer_id_is_unique_per_partner(partner, other_partner):
    await partner.enroll(partner_customer_id="SAME")
    clash = await partner.post("/api/v1/members",
                               {"email": email(), "partner_customer_id": "SAME"})
    assert clash.status_code == 409
    assert clash.json()["field"] == "partner_customer_id"
    # Another partner may use the same customer id for its own customer.
    await other_partner.enroll(partner_customer_id="SAME")


async def test_lookup_by_id_customer_id_and_card(partner):
    member_id = await partner.enroll(partner_customer_id="LOOK-1")
    got = await partner.get(f"/api/v1/members/{member_id}")
    assert got.status_code == 200
    by_customer = await partner.get("/api/v1/members", params={"partner_customer_id": "LOOK-1"})
    assert [m["id"] for m in by_customer.json()["items"]] == [member_id]
    card = got.json()["card_number"]
    by_card = await partner.get("/api/v1/members", params={"card_number": card})
    assert [m["id"] for m in by_card.json()["items"]] == [member_id]


async def test_member_list_is_paginated(partner):
    ids = sorted([await partner.enroll() for _ in range(5)])
    first = (await partner.get("/api/v1/members", params={"limit": 2})).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    seen = [m["id"] for m in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = (await partner.get("/api/v1/members",
                                  params={"limit": 2, "cursor": cursor})).json()
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
    assert seen == ids
    bad = await partner.get("/api/v1/members", params={"cursor": "!!"})
    assert bad.status_code == 400 and bad.json()["field"] == "cursor"


async def test_partner_sees_only_linked_members(partner, other_partner):
    member_id = await partner.enroll(partner_customer_id="HIDDEN")
    for path in (f"/api/v1/members/{member_id}", f"/api/v1/members/{member_id}/balance",
                 f"/api/v1/members/{member_id}/transactions"):
        response = await other_partner.get(path)
        assert response.status_code == 404, path
        assert member_id not in response.text
    listing = await other_partner.get("/api/v1/members",
                                      params={"partner_customer_id": "HIDDEN"})
    assert listing.json()["items"] == []


async def test_enrolment_validation_names_fields(partner):
    cases = [
        ({"email": "not-an-email"}, "email"),
        ({}, "email"),
        ({"email": email(), "nickname": "x"}, "nickname"),
        ({"email": email(), "name": ""}, "name"),
    ]
    for body, field in cases:
        response = await partner.post("/api/v1/members", body)
        assert response.status_code == 400, (body, response.text)
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert problem["type"] == "/problems/validation-error"
        assert problem["field"] == field, problem


async def test_a_nul_character_in_a_lookup_or_enrolment_is_a_problem_naming_it(partner, db):
    # PostgreSQL text cannot hold U+0000: a lookup with one was a 500 (found by
    # tests/test_api_fuzz.py).
    for query, field in (({"partner_customer_id": "a\x00"}, "partner_customer_id"),
                         ({"card_number": "\x00"}, "card_number")):
        response = await partner.get("/api/v1/members", params=query)
        assert response.status_code == 400, (query, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["field"] == field
    members = await db.fetchval("SELECT count(*) FROM members")
    enrol = await partner.post("/api/v1/members", {"email": email(), "name": "Jan\x00"})
    assert enrol.status_code == 400 and enrol.json()["field"] == "name", enrol.text
    assert await db.fetchval("SELECT count(*) FROM members") == members


async def test_enrolment_is_idempotent(partner, db):
    address = email()
    first = await partner.post("/api/v1/members", {"email": address}, key="enrol-1")
    replay = await partner.post("/api/v1/members", {"email": address}, key="enrol-1")
    assert first.status_code == replay.status_code == 201
    assert first.json() == replay.json()
    other = await partner.post("/api/v1/members", {"email": email()}, key="enrol-1")
    assert other.status_code == 409
    assert other.json()["type"] == "/problems/idempotency-key-mismatch"
