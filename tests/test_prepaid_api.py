"""Prepaid point blocks over the partner API: requested with an Idempotency-Key and the
`settlement:write` scope, invoiced through Stripe (localstripe) when it is configured and
credited when the invoice is paid (a signed webhook), listed with the balance; bad input
is a problem naming the field and writes nothing; another partner sees none of it."""
# ruff: noqa: F811  (the fixtures imported below are test parameters by design)

from __future__ import annotations

from settlement.terms import add_rate_card
from tests.helpers import new_key, new_partner
from tests.stripe_fixtures import (  # noqa: F401  (fixtures)
    connect_double,
    event,
    localstripe,
    post_event,
    stripe_api,
    stripe_app,
    stripe_client,
)
from tests.test_stripe_payments import partner_with_card

URL = "/api/v1/settlement/prepaid-blocks"


async def _prepaid(app, partner_id, credit_limit: int = 1000) -> None:
    async with app.state.pool.acquire() as conn:
        await add_rate_card(conn, partner_id, {
            "issue_price": "1.2", "reimbursement": "1.0", "billing": "prepaid",
            "credit_limit": credit_limit}, "test")


async def _blocks(db, partner_id) -> int:
    return await db.fetchval("SELECT count(*) FROM prepaid_blocks WHERE partner_id = $1",
                             partner_id)


async def test_a_block_requested_over_the_api_is_invoiced_paid_and_listed(
        stripe_client, stripe_api, db):
    a, _ = await partner_with_card(stripe_client, stripe_api)
    b = await new_partner(stripe_client, "Prepaid API Other")
    await _prepaid(stripe_client.app, a.partner_id)

    key = new_key()
    first = await a.post(URL, {"points": 5000}, key=key)
    assert first.status_code == 201, first.text
    block = first.json()
    assert (block["points"], block["price"], block["currency"], block["status"],
            block["payment"]) == (5000, 6000, "PLN", "awaiting_payment", "stripe_invoice")
    replay = await a.post(URL, {"points": 5000}, key=key)
    assert replay.status_code == 201 and replay.json() == block
    assert (await a.post(URL, {"points": 6000}, key=key)).status_code == 409
    assert await _blocks(db, a.partner_id) == 1
    payment = await db.fetchrow("SELECT * FROM settlement_payments WHERE kind = 'prepaid_block'"
                                " AND reference_id = $1", str(block["id"]))
    assert (payment["amount"], payment["status"]) == (6000, "open")   # sent once
    invoice = await stripe_api.v1.invoices.retrieve_async(payment["stripe_object_id"])
    assert invoice.amount_due == 6000 and invoice.collection_method == "send_invoice"

    listed = (await a.get(URL)).json()
    assert [x["id"] for x in listed["items"]] == [block["id"]]
    assert (listed["balance"]["available"], listed["balance"]["credit_limit"],
            listed["balance"]["can_issue"]) == (0, 1000, 1000)
    assert (await a.get(f"{URL}/{block['id']}")).json()["status"] == "awaiting_payment"

    paid = {**invoice.to_dict(), "status": "paid", "amount_paid": 6000}
    assert (await post_event(stripe_client, event("invoice.paid", paid))).json()[
        "outcome"] == "applied"
    listed = (await a.get(URL)).json()
    assert listed["items"][0]["status"] == "paid" and listed["items"][0]["amount_paid"] == 6000
    assert (listed["balance"]["available"], listed["balance"]["can_issue"]) == (5000, 6000)

    # Another partner: its own (empty) list, A's block not found, and its own request
    # refused (no prepaid rate card) without touching A's.
    other = await b.get(URL)
    assert other.status_code == 200 and other.json() == {"balance": None, "items": []}
    hidden = await b.get(f"{URL}/{block['id']}")
    assert hidden.status_code == 404 and "6000" not in hidden.text
    refused = await b.post(URL, {"points": 10})
    assert refused.status_code == 422 and refused.json()["type"].endswith("/not-prepaid")
    assert await _blocks(db, b.partner_id) == 0 and await _blocks(db, a.partner_id) == 1


async def test_bad_requests_are_problems_naming_the_field_and_write_nothing(client, db):
    partner = await new_partner(client, "Prepaid API Bad Input")
    await _prepaid(client.app, partner.partner_id)
    for body, status in (({"points": 0}, 422), ({"points": -5}, 422),
                         ({"points": 10**12 + 1}, 422), ({"points": "10"}, 400),
                         ({"points": 1.5}, 400), ({}, 400), ({"points": 5, "price": 1}, 400),
                         (None, 400)):
        response = await partner.post(URL, body)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        if status == 422:
            assert response.json()["field"] == "points"
    missing_key = await partner.client.post(URL, json={"points": 5}, headers=partner.auth)
    assert missing_key.status_code == 400
    assert await _blocks(db, partner.partner_id) == 0

    # Without Stripe (this app), the block waits for a bank transfer: no invoice.
    made = await partner.post(URL, {"points": 250})
    assert made.status_code == 201
    assert (made.json()["payment"], made.json()["price"]) == ("bank_transfer", 300)
    assert await db.fetchval("SELECT count(*) FROM settlement_payments WHERE partner_id = $1",
                             partner.partner_id) == 0


async def test_a_block_id_beyond_bigint_is_a_problem_naming_it(client):
    # 2**63 was a 500 (asyncpg cannot send it as a bigint; found by tests/test_api_fuzz.py).
    partner = await new_partner(client, "Prepaid API Block Ids")
    for block_id in (2**63, 10**30, 0, -1):
        response = await partner.get(f"{URL}/{block_id}")
        assert response.status_code == 400, (block_id, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["field"] == "block_id"
    assert (await partner.get(f"{URL}/{2**63 - 1}")).status_code == 404


async def test_requesting_a_block_needs_the_write_scope(client, db):
    reader = await new_partner(client, "Prepaid API Reader", scopes=["settlement:read"])
    await _prepaid(client.app, reader.partner_id)
    assert (await reader.get(URL)).status_code == 200
    assert (await reader.post(URL, {"points": 5})).status_code == 403
    assert await _blocks(db, reader.partner_id) == 0
