"""Earn, redeem and reverse through the API; balances, history and problem bodies."""

import asyncio
import uuid

from coalition import clock
from tests.helpers import new_key
from tests.test_lifecycle import assert_verified
from web.api.schemas import MAX_METADATA_BYTES


async def test_earn_response_and_balance(partner):
    member = await partner.enroll()
    response = await partner.earn(member, 120, order_id="ORD-1", description="Purchase",
                                  metadata={"store": "Kraków"})
    assert response.status_code == 201
    body = response.json()
    assert body["kind"] == "earn" and body["points"] == 120 and body["order_id"] == "ORD-1"
    assert isinstance(body["id"], int)
    assert body["balance"] == {"available": 120}
    assert body["expires_at"] is not None
    balance = await partner.balance(member)
    assert balance == {"member_id": member, "available": 120, "pending": 0, "held": 0,
                       "expiring_within_30_days": 0,
                       "lifetime_earned": 120, "lifetime_redeemed": 0}


async def test_insufficient_points_is_a_422_problem_and_changes_nothing(partner, db):
    member = await partner.enroll()
    await partner.earn(member, 50)
    before = await db.fetchval("SELECT count(*) FROM journal_entries")
    response = await partner.redeem(member, 51)
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["type"].endswith("insufficient-points")
    assert problem["available"] == 50 and problem["requested"] == 51
    assert problem["field"] == "points"
    assert await db.fetchval("SELECT count(*) FROM journal_entries") == before
    assert (await partner.balance(member))["available"] == 50


async def test_redemption_consumes_lots_first_expiring_first(partner, other_partner, db):
    member = await partner.enroll(email="fefo@example.com")
    await other_partner.enroll(email="fefo@example.com")
    first = (await partner.earn(member, 40)).json()["id"]
    second = (await other_partner.earn(member, 60)).json()["id"]
    # Make the second lot expire sooner: it must be consumed first.
    await db.execute("UPDATE lots SET expires_at = $2::timestamptz + interval '1 day'"
                     " WHERE entry_id = $1", second, clock.now())
    redemption = await partner.redeem(member, 70)
    assert redemption.status_code == 201
    rows = await db.fetch(
        "SELECT l.entry_id, m.points FROM lot_movements m JOIN lots l ON l.id = m.lot_id"
        " WHERE m.entry_id = $1 ORDER BY m.id", redemption.json()["id"])
    assert [(r["entry_id"], r["points"]) for r in rows] == [(second, 60), (first, 10)]


async def test_full_and_partial_reversal_of_earn(partner):
    member = await partner.enroll()
    earn = (await partner.earn(member, 70, order_id="R-1")).json()
    half = await partner.post(f"/api/v1/transactions/{earn['id']}/reversal", {"points": 35})
    assert half.status_code == 201, half.text
    assert half.json()["points"] == 35 and half.json()["reverses"] == earn["id"]
    assert half.json()["balance"] == {"available": 35}
    too_much = await partner.post(f"/api/v1/transactions/{earn['id']}/reversal", {"points": 36})
    assert too_much.status_code == 422
    assert too_much.json()["type"] == "/problems/reversal-exceeds-original"
    rest = await partner.post(f"/api/v1/transactions/{earn['id']}/reversal")
    assert rest.json()["points"] == 35
    again = await partner.post(f"/api/v1/transactions/{earn['id']}/reversal")
    assert again.json()["type"] == "/problems/already-reversed"
    balance = await partner.balance(member)
    assert balance["available"] == 0 and balance["lifetime_earned"] == 0


async def test_spent_points_cannot_be_reversed_from_earn(partner):
    member = await partner.enroll()
    earn = (await partner.earn(member, 100)).json()
    await partner.redeem(member, 80)
    response = await partner.post(f"/api/v1/transactions/{earn['id']}/reversal")
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/points-already-spent"
    assert response.json()["reversible"] == 20
    ok = await partner.post(f"/api/v1/transactions/{earn['id']}/reversal", {"points": 20})
    assert ok.status_code == 201


async def test_reversal_of_redemption_restores_points(partner, db):
    member = await partner.enroll()
    await partner.earn(member, 100)
    redemption = (await partner.redeem(member, 60)).json()
    back = await partner.post(f"/api/v1/transactions/{redemption['id']}/reversal", {"points": 25})
    assert back.status_code == 201
    assert back.json()["balance"] == {"available": 65}
    balance = await partner.balance(member)
    assert balance["lifetime_redeemed"] == 35
    remaining = await db.fetchval("SELECT sum(remaining) FROM lots WHERE member_id = $1", member)
    assert remaining == 65


async def test_points_given_back_to_a_lot_the_issuer_emptied_stay_spendable(partner, db):
    # Found by tests/test_api_fuzz.py ("lot status: cancelled with 299 remaining"): an
    # earn reversed down to what the member had spent or held left its lot cancelled, and
    # undoing the redemption (or voiding the hold) put points back into that cancelled
    # lot, where no redemption could reach them.
    member = await partner.enroll()
    earn = (await partner.earn(member, 1000)).json()
    redemption = (await partner.redeem(member, 300)).json()
    hold = (await partner.post("/api/v1/redemptions/authorizations",
                               {"member_id": member, "points": 200})).json()
    cancel = await partner.post(f"/api/v1/transactions/{earn['id']}/reversal", {"points": 500})
    assert cancel.status_code == 201, cancel.text
    assert await db.fetchval("SELECT status FROM lots WHERE entry_id = $1", earn["id"]) == \
        "cancelled"
    back = await partner.post(f"/api/v1/transactions/{redemption['id']}/reversal")
    assert back.status_code == 201, back.text
    voided = await partner.post(f"/api/v1/redemptions/authorizations/{hold['id']}/void")
    assert voided.status_code == 200, voided.text
    lot = await db.fetchrow("SELECT status, remaining FROM lots WHERE entry_id = $1", earn["id"])
    assert (lot["status"], lot["remaining"]) == ("active", 500)
    assert (await partner.balance(member))["available"] == 500
    await assert_verified(db)
    spent = await partner.redeem(member, 500)
    assert spent.status_code == 201, spent.text
    await assert_verified(db)


async def test_reversal_of_another_partners_transaction_is_not_found(partner, other_partner):
    member = await partner.enroll()
    earn = (await partner.earn(member, 10)).json()
    response = await other_partner.post(f"/api/v1/transactions/{earn['id']}/reversal")
    assert response.status_code == 404
    assert response.json()["type"] == "/problems/transaction-not-found"
    assert (await partner.balance(member))["available"] == 10


async def test_earning_for_unlinked_member_is_not_found(partner, other_partner):
    member = await partner.enroll()
    response = await other_partner.earn(member, 10)
    assert response.status_code == 404
    assert response.json()["field"] == "member_id"


async def test_history_redacts_other_brands(partner, other_partner):
    member = await partner.enroll(email="history@example.com")
    await other_partner.enroll(email="history@example.com")
    await partner.earn(member, 30, order_id="MINE", metadata={"a": 1})
    await other_partner.earn(member, 20, order_id="THEIRS", metadata={"secret": True})
    page = (await partner.get(f"/api/v1/members/{member}/transactions")).json()
    theirs, mine = page["items"]
    assert mine["own"] and mine["order_id"] == "MINE" and mine["metadata"] == {"a": 1}
    assert theirs == {"own": False, "kind": "earn", "points": 20,
                      "partner": {"name": "Other Brand", "id": None},
                      "created_at": theirs["created_at"], "id": None, "order_id": None,
                      "description": None, "metadata": None, "reverses": None,
                      "occurred_at": None}
    raw = (await partner.get(f"/api/v1/members/{member}/transactions")).text
    assert "THEIRS" not in raw and "secret" not in raw
    assert (await partner.balance(member))["available"] == 50


async def test_history_cursor_pagination(partner):
    member = await partner.enroll()
    for points in range(1, 8):
        await partner.earn(member, points)
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await partner.get(f"/api/v1/members/{member}/transactions", params=params)).json()
        seen += [item["points"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [7, 6, 5, 4, 3, 2, 1]


async def test_points_validation(partner, db):
    member = await partner.enroll()
    before = await db.fetchval("SELECT count(*) FROM journal_entries")
    for bad in (0, -5, 10**12 + 1, 1.5, "10", True, None):
        response = await partner.earn(member, bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["field"] == "points", response.json()
    unknown = await partner.post("/api/v1/earn", {"member_id": member, "points": 1, "bonus": 1})
    assert unknown.status_code == 400 and unknown.json()["field"] == "bonus"
    bad_member = await partner.post("/api/v1/earn", {"member_id": "nope", "points": 1})
    assert bad_member.status_code == 400 and bad_member.json()["field"] == "member_id"
    malformed = await partner.client.post(
        "/api/v1/earn", content=b"{not json", headers={**partner.auth, "Idempotency-Key": "m",
                                                       "Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.headers["content-type"].startswith("application/problem+json")
    assert await db.fetchval("SELECT count(*) FROM journal_entries") == before
    assert (await partner.earn(member, 10**12)).status_code == 201


async def test_a_nul_character_anywhere_in_a_body_is_a_problem_naming_the_field(partner, db):
    # PostgreSQL text and jsonb cannot hold U+0000: it was a 500 (found by
    # tests/test_api_fuzz.py in a query parameter; bodies and paths had the same hole).
    member = await partner.enroll()
    before = await db.fetchval("SELECT count(*) FROM journal_entries")
    for extra, field in (({"description": "a\x00b"}, "description"),
                         ({"order_id": "\x00"}, "order_id"),
                         ({"metadata": {"note": ["ok", {"x": "\x00"}]}}, "metadata.note[1].x"),
                         ({"metadata": {"bad\x00key": 1}}, "metadata.bad\x00key")):
        response = await partner.earn(member, 5, **extra)
        assert response.status_code == 400, (extra, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["field"] == field, response.json()
    assert await db.fetchval("SELECT count(*) FROM journal_entries") == before
    path = await partner.get("/api/v1/purchases/A%00B")
    assert path.status_code == 400 and path.json()["field"] == "order_id", path.text
    reverse = await partner.post("/api/v1/transactions/1/reversal", {"description": "\x00"})
    assert reverse.status_code == 400 and reverse.json()["field"] == "description"


async def test_a_body_nested_too_deep_is_a_problem_not_a_recursion_error(partner, db):
    # 5000 levels was a RecursionError in Litestar's JSON decoding: a 500.
    member = await partner.enroll()
    before = await db.fetchval("SELECT count(*) FROM journal_entries")

    async def earn_with(metadata: str):
        body = f'{{"member_id": "{member}", "points": 1, "metadata": {metadata}}}'
        return await partner.client.post(
            "/api/v1/earn", content=body.encode(),
            headers={**partner.auth, "Idempotency-Key": new_key(),
                     "Content-Type": "application/json"})

    for depth, field in ((5000, "data"), (40, "metadata.a" + "[0]" * 30)):
        response = await earn_with('{"a": ' + "[" * depth + "]" * depth + "}")
        assert response.status_code == 400, (depth, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["field"] == field
    malformed = await earn_with('{"a": "\\ud800"}')
    assert malformed.status_code == 400
    assert malformed.json()["type"] == "/problems/malformed-json"
    assert await db.fetchval("SELECT count(*) FROM journal_entries") == before
    deepest = await earn_with('{"a": ' + "[" * 30 + "]" * 30 + "}")     # 32 levels in all
    assert deepest.status_code == 201, deepest.text


async def test_metadata_over_16_kb_is_refused_on_every_route_and_writes_nothing(partner, db):
    # A 9 MB earn was stored and echoed back. The cap is 16,384 bytes of compact JSON,
    # counted in UTF-8 bytes, not characters; the refusal posts nothing and leaves the
    # Idempotency-Key free for a corrected retry.
    member = await partner.enroll()
    assert (await partner.earn(member, 100)).status_code == 201
    frame = len('{"note":""}')
    at_limit = {"note": "x" * (MAX_METADATA_BYTES - frame)}
    over = {"note": "x" * (MAX_METADATA_BYTES - frame + 1)}
    over_in_bytes = {"note": "ż" * ((MAX_METADATA_BYTES - frame) // 2 + 1)}  # 2 bytes each
    assert len(str(over_in_bytes)) < MAX_METADATA_BYTES
    written = "SELECT count(*) FROM journal_entries WHERE member_id = $1"
    before = await db.fetchval(written, uuid.UUID(member))
    routes = (("/api/v1/earn", {"member_id": member, "points": 5}),
              ("/api/v1/redemptions", {"member_id": member, "points": 5}),
              ("/api/v1/adjustments", {"member_id": member, "points": 5, "reason": "Goodwill"}))
    keys = {path: new_key() for path, _ in routes}
    for path, body in routes:
        for metadata in (over, over_in_bytes):
            refused = await partner.post(path, {**body, "metadata": metadata}, key=keys[path])
            assert refused.status_code == 400, (path, refused.text[:300])
            assert refused.headers["content-type"].startswith("application/problem+json")
            problem = refused.json()
            assert problem["type"] == "/problems/validation-error"
            assert problem["field"] == "metadata", problem
            assert str(MAX_METADATA_BYTES) in problem["detail"]
            assert len(refused.content) < 1000   # nothing of the metadata echoed back
    assert await db.fetchval(written, uuid.UUID(member)) == before
    assert (await partner.balance(member))["available"] == 100
    for path, body in routes:
        accepted = await partner.post(path, {**body, "metadata": at_limit}, key=keys[path])
        assert accepted.status_code == 201, (path, accepted.text[:300])
        assert accepted.json()["metadata"] == at_limit


async def test_idempotency_key_is_required(partner):
    member = await partner.enroll()
    response = await partner.client.post("/api/v1/earn", json={"member_id": member, "points": 1},
                                         headers=partner.auth)
    assert response.status_code == 400
    assert response.json()["field"] == "Idempotency-Key"


async def test_an_idempotency_key_out_of_its_documented_form_is_refused(partner, db):
    # The key's length and characters were documented but not enforced: a 256-character
    # key was a 500 (the column is varchar(255)) and an empty one was a shared key.
    member = await partner.enroll()
    before = await db.fetchval("SELECT count(*) FROM journal_entries")
    for key in ("", "x" * 256, "two words", "tab\there"):
        response = await partner.client.post(
            "/api/v1/earn", json={"member_id": member, "points": 1},
            headers={**partner.auth, "Idempotency-Key": key})
        assert response.status_code == 400, (key, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["field"] == "Idempotency-Key"
    assert await db.fetchval("SELECT count(*) FROM journal_entries") == before
    longest = await partner.post("/api/v1/earn", {"member_id": member, "points": 1}, key="x" * 255)
    assert longest.status_code == 201, longest.text
    long_order = await partner.get("/api/v1/purchases/" + "o" * 201)
    assert long_order.status_code == 400 and long_order.json()["field"] == "order_id"


async def test_idempotent_replay_and_mismatch(partner, other_partner, db):
    member = await partner.enroll()
    key = new_key()
    first = await partner.post("/api/v1/earn", {"member_id": member, "points": 10}, key=key)
    replay = await partner.post("/api/v1/earn", {"member_id": member, "points": 10}, key=key)
    assert first.status_code == replay.status_code == 201
    assert first.content == replay.content
    mismatch = await partner.post("/api/v1/earn", {"member_id": member, "points": 11}, key=key)
    assert mismatch.status_code == 409
    assert mismatch.json()["type"] == "/problems/idempotency-key-mismatch"
    # Keys are per partner: another partner's identical key is a different request.
    other_member = await other_partner.enroll()
    own = await other_partner.post("/api/v1/earn", {"member_id": other_member, "points": 10},
                                   key=key)
    assert own.status_code == 201
    assert (await partner.balance(member))["available"] == 10


async def test_failed_request_does_not_burn_the_key(partner):
    member = await partner.enroll()
    key = new_key()
    body = {"member_id": member, "points": 10}
    failed = await partner.post("/api/v1/redemptions", body, key=key)
    assert failed.status_code == 422
    await partner.earn(member, 10)
    retried = await partner.post("/api/v1/redemptions", body, key=key)
    assert retried.status_code == 201


async def test_concurrent_requests_with_one_key_post_once(partner, db):
    member = await partner.enroll()
    key = new_key()
    body = {"member_id": member, "points": 7, "order_id": "SAME"}
    responses = await asyncio.gather(
        *[partner.post("/api/v1/earn", body, key=key) for _ in range(50)])
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    entries = await db.fetchval(
        "SELECT count(*) FROM journal_entries WHERE member_id = $1", member)
    assert entries == 1
    assert (await partner.balance(member))["available"] == 7


async def test_adjustments_credit_and_take_back_only_own_points(partner, other_partner, db):
    member = await partner.enroll(email="adjust@example.com")
    await other_partner.enroll(email="adjust@example.com")
    await other_partner.earn(member, 50)
    credit = await partner.post("/api/v1/adjustments",
                                {"member_id": member, "points": 30, "reason": "Goodwill"})
    assert credit.status_code == 201, credit.text
    assert credit.json()["kind"] == "adjust" and credit.json()["balance"] == {"available": 80}
    too_much = await partner.post("/api/v1/adjustments",
                                  {"member_id": member, "points": -31, "reason": "Mistake"})
    assert too_much.status_code == 422
    assert too_much.json()["available"] == 30
    debit = await partner.post("/api/v1/adjustments",
                               {"member_id": member, "points": -30, "reason": "Mistake"})
    assert debit.status_code == 201
    assert debit.json()["points"] == -30 and debit.json()["balance"] == {"available": 50}
    missing_reason = await partner.post("/api/v1/adjustments", {"member_id": member, "points": 5})
    assert missing_reason.status_code == 400 and missing_reason.json()["field"] == "reason"
    zero = await partner.post("/api/v1/adjustments",
                              {"member_id": member, "points": 0, "reason": "Nothing"})
    assert zero.status_code == 400 and zero.json()["field"] == "points"
    history = (await partner.get(f"/api/v1/members/{member}/transactions")).json()["items"]
    assert [(t["kind"], t["points"]) for t in history] == [
        ("adjust", -30), ("adjust", 30), ("earn", 50)]
    assert history[0]["description"] == "Mistake"
