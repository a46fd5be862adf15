"""Pay with points at checkout over the API: authorize, capture (full or partial), void,
expiry; isolation between partners; races; and purchase returns over the API."""

from __future__ import annotations

import asyncio
import uuid

from tests.helpers import new_key
from tests.test_lifecycle import assert_verified, buy

AUTH = "/api/v1/redemptions/authorizations"


async def _funded(partner, db, points: int = 100) -> str:
    member = await partner.enroll()
    await buy(db, partner, member, points)
    return member


async def test_authorize_capture_part_and_the_rest_comes_back(partner, db):
    member = await _funded(partner, db)
    held = await partner.post(AUTH, {"member_id": member, "points": 80, "order_id": "CART-1"})
    assert held.status_code == 201, held.text
    hold = held.json()
    assert (hold["status"], hold["points"], hold["balance"]) == ("held", 80, {"available": 20})
    shown = await partner.get(f"{AUTH}/{hold['id']}")
    assert shown.status_code == 200 and shown.json()["status"] == "held"
    captured = await partner.post(f"{AUTH}/{hold['id']}/capture", {"points": 65})
    assert captured.status_code == 200, captured.text
    assert (captured.json()["captured"], captured.json()["released"]) == (65, 15)
    balance = await partner.balance(member)
    assert (balance["available"], balance["held"], balance["lifetime_redeemed"]) == (35, 0, 65)
    again = await partner.post(f"{AUTH}/{hold['id']}/void")
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    await assert_verified(db)


async def test_capture_without_points_takes_everything_and_void_gives_all_back(partner, db):
    member = await _funded(partner, db)
    first = (await partner.post(AUTH, {"member_id": member, "points": 30})).json()
    assert (await partner.post(f"{AUTH}/{first['id']}/capture")).json()["captured"] == 30
    second = (await partner.post(AUTH, {"member_id": member, "points": 50})).json()
    voided = await partner.post(f"{AUTH}/{second['id']}/void")
    assert voided.json()["status"] == "voided" and voided.json()["balance"] == {"available": 70}


async def test_an_optional_body_may_be_json_null_as_the_schema_says(partner, db):
    # The published schema allows null where the body is optional; it was a 400.
    member = await _funded(partner, db)
    hold = (await partner.post(AUTH, {"member_id": member, "points": 30})).json()
    captured = await partner.client.post(
        f"{AUTH}/{hold['id']}/capture", content=b"null",
        headers={**partner.auth, "Idempotency-Key": new_key(),
                 "Content-Type": "application/json"})
    assert captured.status_code == 200, captured.text
    assert captured.json()["captured"] == 30
    await assert_verified(db)


async def test_bad_requests_change_nothing(partner, db):
    member = await _funded(partner, db, 40)
    cases = [
        ({"member_id": member, "points": 0}, 400),
        ({"member_id": member, "points": "10"}, 400),
        ({"member_id": member, "points": 10, "tip": 1}, 400),
        ({"member_id": member, "points": 10, "expires_in_seconds": 1}, 400),
        ({"member_id": member, "points": 41}, 422),
        ({"member_id": str(uuid.uuid4()), "points": 1}, 404),
    ]
    for body, status in cases:
        response = await partner.post(AUTH, body)
        assert response.status_code == status, (body, response.text)
    hold = (await partner.post(AUTH, {"member_id": member, "points": 40})).json()
    over = await partner.post(f"{AUTH}/{hold['id']}/capture", {"points": 41})
    assert over.status_code == 422 and over.json()["field"] == "points"
    assert (await partner.balance(member))["held"] == 40
    assert await db.fetchval("SELECT count(*) FROM point_holds WHERE member_id = $1",
                             uuid.UUID(member)) == 1


async def test_another_partner_cannot_see_capture_or_void(partner, other_partner, db):
    member = await _funded(partner, db)
    hold = (await partner.post(AUTH, {"member_id": member, "points": 10})).json()
    for response in (await other_partner.get(f"{AUTH}/{hold['id']}"),
                     await other_partner.post(f"{AUTH}/{hold['id']}/capture"),
                     await other_partner.post(f"{AUTH}/{hold['id']}/void")):
        assert response.status_code == 404, response.text
    assert (await partner.get(f"{AUTH}/{hold['id']}")).json()["status"] == "held"


async def test_racing_captures_and_voids_close_once(partner, db):
    member = await _funded(partner, db)
    hold = (await partner.post(AUTH, {"member_id": member, "points": 60})).json()
    responses = await asyncio.gather(*(
        partner.post(f"{AUTH}/{hold['id']}/{'capture' if n % 2 else 'void'}")
        for n in range(8)))
    assert sorted(r.status_code for r in responses) == [200] + [409] * 7
    await assert_verified(db)


async def test_a_retry_with_the_same_key_replays_the_hold(partner, db):
    member = await _funded(partner, db)
    key = new_key()
    first = await partner.post(AUTH, {"member_id": member, "points": 25}, key=key)
    second = await partner.post(AUTH, {"member_id": member, "points": 25}, key=key)
    assert first.json() == second.json()
    assert (await partner.balance(member))["available"] == 75


async def test_returns_over_the_api(partner, other_partner, db):
    member = await partner.enroll()
    lines = [{"sku": "BOOT-42", "category": "shoes", "quantity": 2, "unit_price": 20000,
              "amount": 40000}]
    order = await buy(db, partner, member, 400, total=40000, lines=lines)
    url = f"/api/v1/purchases/{order['order_id']}/returns"
    assert (await other_partner.post(url, {"amount": 100})).status_code == 404
    both = await partner.post(url, {"amount": 100, "lines": [{"sku": "BOOT-42", "quantity": 1}]})
    assert both.status_code == 400
    by_line = await partner.post(url, {"lines": [{"sku": "BOOT-42", "quantity": 1}]})
    assert by_line.status_code == 201 and by_line.json()["points"] == 200
    rest = await partner.post(url)
    assert rest.status_code == 201 and rest.json()["points"] == 200
    shown = (await partner.get(f"/api/v1/purchases/{order['order_id']}")).json()
    assert [r["points"] for r in shown["returns"]] == [200, 200]
    assert (await other_partner.get(f"/api/v1/purchases/{order['order_id']}")).status_code == 404
    # The purchase's earn entry is not reversible through the generic reversal.
    reversal = await partner.post(f"/api/v1/transactions/{order['entry_id']}/reversal")
    assert reversal.status_code == 422 and reversal.json()["type"] == "/problems/use-returns"
    await assert_verified(db)
