"""The rewards partner API: catalogue, redemption, voucher check and consume, isolation."""

from __future__ import annotations

import asyncio
import uuid

from authlib.common.security import generate_token

from coalition import clock
from coalition.verify import verify_ledger
from tests.helpers import new_key
from tests.rewards_helpers import footprint, make_reward, wallet
from tests.test_oauth_apps import BASE, authorize, log_in, new_app, new_member_login


async def _voucher(partner, db, points: int = 300, **reward_fields) -> tuple[str, str, dict]:
    member = await partner.enroll()
    await partner.earn(member, points)
    reward = await make_reward(db, partner.partner_id, **reward_fields)
    response = await partner.post(f"/api/v1/rewards/{reward}/redemptions",
                                  {"member_id": member})
    assert response.status_code == 201, response.text
    return member, str(reward), response.json()


async def test_catalogue_lists_only_the_partners_own_rewards(partner, other_partner, db):
    mine = await make_reward(db, partner.partner_id, name="Mine", stock=4,
                             tiers=["vip"], valid_from=None)
    await make_reward(db, other_partner.partner_id, name="THEIRS-SECRET")
    listed = await partner.get("/api/v1/rewards")
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [i["id"] for i in items] == [str(mine)]
    assert items[0] | {"id": None} == items[0] | {
        "id": None, "name": "Mine", "kind": "percent_discount", "value": 10,
        "price_points": 100, "stock": 4, "tiers": ["vip"], "active": True}
    assert "THEIRS-SECRET" not in listed.text


async def test_redeem_then_check_then_consume_once(partner, db, app):
    member, reward, redeemed = await _voucher(partner, db, stock=10, voucher_days=14)
    voucher = redeemed["voucher"]
    assert redeemed["balance"] == {"available": 200} and redeemed["member_id"] == member
    assert voucher["status"] == "issued" and voucher["reward"]["id"] == reward
    code = voucher["code"]
    checked = await partner.get(f"/api/v1/vouchers/{code.replace('-', '').lower()}")
    assert checked.status_code == 200 and checked.json()["usable"] is True
    key = new_key()
    used = await partner.post(f"/api/v1/vouchers/{code}/consume", {"order_id": "TILL-1"}, key=key)
    assert used.status_code == 200, used.text
    assert used.json()["status"] == "used" and used.json()["used_order_id"] == "TILL-1"
    replay = await partner.post(f"/api/v1/vouchers/{code}/consume", {"order_id": "TILL-1"},
                                key=key)
    assert replay.status_code == 200 and replay.json() == used.json()
    again = await partner.post(f"/api/v1/vouchers/{code}/consume")
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/voucher-already-used"
    assert again.json()["field"] == "code"
    assert (await partner.get(f"/api/v1/vouchers/{code}")).json()["status"] == "used"
    async with app.state.pool.acquire() as conn:
        assert await verify_ledger(conn) == []


async def test_redemption_is_idempotent(partner, db):
    member = await partner.enroll()
    await partner.earn(member, 300)
    reward = await make_reward(db, partner.partner_id)
    key = new_key()
    first = await partner.post(f"/api/v1/rewards/{reward}/redemptions", {"member_id": member},
                               key=key)
    second = await partner.post(f"/api/v1/rewards/{reward}/redemptions", {"member_id": member},
                                key=key)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert await wallet(db, member) == 200
    other = await partner.post(f"/api/v1/rewards/{reward}/redemptions",
                               {"member_id": str(uuid.uuid4())}, key=key)
    assert other.status_code == 409
    assert other.json()["type"] == "/problems/idempotency-key-mismatch"


async def test_refusals_are_problems_and_write_nothing(partner, other_partner, db):
    member = await partner.enroll()
    await partner.earn(member, 50)
    reward = await make_reward(db, partner.partner_id, stock=1)
    before = await footprint(db, member)
    key = new_key()
    poor = await partner.post(f"/api/v1/rewards/{reward}/redemptions", {"member_id": member},
                              key=key)
    assert poor.status_code == 422
    assert poor.json()["type"] == "/problems/insufficient-points"
    assert poor.json()["available"] == 50
    assert await footprint(db, member) == before
    # The failed request stored nothing: the same key is evaluated afresh once it can pay.
    await partner.earn(member, 50)
    retry = await partner.post(f"/api/v1/rewards/{reward}/redemptions", {"member_id": member},
                               key=key)
    assert retry.status_code == 201
    sold_out = await partner.post(f"/api/v1/rewards/{reward}/redemptions",
                                  {"member_id": member})
    assert sold_out.status_code == 422
    assert sold_out.json()["type"] == "/problems/reward-out-of-stock"
    # Another partner's member, or this reward from another partner: 404, nothing written.
    stranger = await other_partner.enroll()
    await other_partner.earn(stranger, 500)
    free = await make_reward(db, partner.partner_id)
    before = await footprint(db, stranger)
    for who, path in ((partner, f"/api/v1/rewards/{free}/redemptions"),
                      (other_partner, f"/api/v1/rewards/{free}/redemptions")):
        response = await who.post(path, {"member_id": stranger})
        assert response.status_code == 404, response.text
    assert await footprint(db, stranger) == before
    bad = await partner.post(f"/api/v1/rewards/{free}/redemptions",
                             {"member_id": member, "points": 5})
    assert bad.status_code == 400 and bad.json()["field"] == "points"


async def test_vouchers_are_invisible_to_other_partners(partner, other_partner, db):
    _, _, redeemed = await _voucher(partner, db)
    code = redeemed["voucher"]["code"]
    assert (await other_partner.get(f"/api/v1/vouchers/{code}")).status_code == 404
    stolen = await other_partner.post(f"/api/v1/vouchers/{code}/consume")
    assert stolen.status_code == 404 and code not in stolen.text
    assert (await partner.get(f"/api/v1/vouchers/{code}")).json()["status"] == "issued"
    assert (await partner.get("/api/v1/vouchers/NOT-A-CODE")).status_code == 404


async def test_concurrent_consumes_over_http_one_wins(partner, db):
    _, _, redeemed = await _voucher(partner, db)
    code = redeemed["voucher"]["code"]
    answers = await asyncio.gather(*(partner.post(f"/api/v1/vouchers/{code}/consume",
                                                  {"order_id": f"T-{i}"}) for i in range(4)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]


async def test_expired_voucher_is_422(partner, db):
    _, _, redeemed = await _voucher(partner, db, voucher_days=1)
    code = redeemed["voucher"]["code"]
    await db.execute("UPDATE vouchers SET expires_at = $2::timestamptz - interval '1 second'"
                     " WHERE code = $1", code, clock.now())
    assert (await partner.get(f"/api/v1/vouchers/{code}")).json()["status"] == "expired"
    expired = await partner.post(f"/api/v1/vouchers/{code}/consume")
    assert expired.status_code == 422 and expired.json()["type"] == "/problems/voucher-expired"


async def test_a_member_app_redeems_for_its_own_member_only(client, browser, partner, db):
    login = await new_member_login(client)
    other = await partner.enroll()
    app = await new_app(client, partner, scopes="openid points:redeem")
    await log_in(browser, login)
    verifier = generate_token(48)
    back = await authorize(browser, app, verifier)
    token = await app.fetch_token(f"{BASE}/oauth/token", authorization_response=back,
                                  code_verifier=verifier)
    await partner.earn(login.member_id, 250)
    await partner.earn(other, 250)
    reward = await make_reward(db, partner.partner_id)
    headers = {"Authorization": f"Bearer {token['access_token']}"}

    async def redeem_for(member: str):
        return await client.post(f"/api/v1/rewards/{reward}/redemptions",
                                 json={"member_id": member},
                                 headers={**headers, "Idempotency-Key": new_key()})

    own = await redeem_for(login.member_id)
    assert own.status_code == 201, own.text
    assert (await redeem_for(other)).status_code == 404
    assert await wallet(db, other) == 250
    listed = await client.get("/api/v1/rewards", headers=headers)
    assert listed.status_code == 200 and listed.json()["items"][0]["id"] == str(reward)
    code = own.json()["voucher"]["code"]
    till = await client.post(f"/api/v1/vouchers/{code}/consume",
                             headers={**headers, "Idempotency-Key": new_key()})
    assert till.status_code == 403          # the till is the partner's server, not the app
