"""The purchase fast path (coalition/earning/posting.py): two statements per purchase, the
same result as the locked path, and nothing written when a fact it read has changed
before it posts; the locked path then decides."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import asyncpg

from coalition import clock, earning
from coalition.earning.evaluation import periods
from coalition.earning.posting import (
    Decision,
    MemberRef,
    Order,
    commit_purchase,
    read_facts,
)
from coalition.rules.validation import RuleSpec
from coalition.settings import coalition_settings
from coalition.tiers import service as tiers
from coalition.uow import Actor, Tx
from tests.helpers import new_key
from tests.test_lifecycle import assert_verified
from tests.test_purchases_api import BASE, LINES, order, rules
from tests.tiering import set_program

NOW = clock.now() - timedelta(minutes=1)
WELCOME = RuleSpec("Welcome", "first_purchase", {"points": 50}, priority=40)


def an_order(total: int = 25000) -> Order:
    return Order(order_id=new_key(), occurred_at=NOW, currency="PLN", total=total,
                 channel="store", store_id=None, lines=LINES)


async def post(db: asyncpg.Pool, partner, member: str, purchase: Order, key: str):
    async with db.acquire() as conn:
        return await earning.purchase(as_test(conn, partner),
                                      member=MemberRef(id=uuid.UUID(member)),
                                      order=purchase, idempotency_key=key,
                                      request_hash=key)


def as_test(conn: asyncpg.Connection, partner) -> Tx:
    return Tx(conn, partner.partner_id, Actor("test"), in_transaction=False)


async def test_a_purchase_costs_two_statements(app, partner, db):
    await rules(app, partner, BASE, WELCOME)
    member = await partner.enroll()
    await post(db, partner, member, an_order(), new_key())   # warms this process's caches
    statements: list[str] = []
    async with db.acquire() as conn:
        def log(record) -> None:
            statements.append(record.query)
        conn.add_query_logger(log)
        result = await earning.purchase(
            as_test(conn, partner),
            member=MemberRef(id=uuid.UUID(member)), order=an_order(),
            idempotency_key=new_key(), request_hash="h")
        conn.remove_query_logger(log)
    assert result.status == 201, result.body
    assert [s.split("(")[0] for s in statements] == [
        "SELECT * FROM purchase_facts", "SELECT status, body FROM purchase_commit"]
    hits = {hit["name"]: hit["points"] for hit in json.loads(result.body)["rules"]}
    assert hits["1 pt per 1 PLN"] == 250 and "Welcome" not in hits


async def test_a_fact_that_changed_writes_nothing_and_the_locked_path_decides(
        app, partner, db):
    await rules(app, partner, BASE, WELCOME)
    member = await partner.enroll()
    capped: list[uuid.UUID] = []
    async with db.acquire() as conn:
        settings = await coalition_settings(conn)
        day, month, _ = periods(NOW, settings.timezone)
        facts = await read_facts(conn, partner_id=partner.partner_id,
                                 member=MemberRef(id=uuid.UUID(member)), capped_rules=capped,
                                 day_start=day, month_start=month,
                                 tiers=await tiers.load_program(conn), at=NOW)
    assert facts is not None and facts.first_purchase
    # Another purchase posts between the read and the commit: not the first any more.
    assert (await partner.post("/api/v1/purchases", order(member))).status_code == 201
    stale = an_order()
    key = new_key()
    async with db.acquire() as conn:
        hit = {"rule_id": str(uuid.uuid4()), "version": 1, "name": "Welcome",
               "type": "first_purchase", "points": 50, "funding": "partner",
               "explanation": "first purchase", "capped_by": None, "budget": False}
        result = await commit_purchase(
            conn, partner_id=partner.partner_id, actor="test",
            member=MemberRef(id=uuid.UUID(member)), order=stale, situation=facts,
            decision=Decision([hit]), capped_rules=capped, day_start=day, month_start=month,
            idempotency_key=key, request_hash=key, tier=None)
    assert result is None
    assert await db.fetchval("SELECT count(*) FROM purchases WHERE order_id = $1",
                             stale.order_id) == 0
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = $1", key) == 0
    # The same request through the whole path: decided afresh, no welcome bonus.
    posted = await post(db, partner, member, stale, key)
    body = json.loads(posted.body)
    assert posted.status == 201
    assert {hit["name"]: hit["points"] for hit in body["rules"]}["1 pt per 1 PLN"] == 250
    assert any(skip["name"] == "Welcome" for skip in body["skipped"])
    await assert_verified(db)


async def test_a_purchase_that_lifts_the_tier_stores_it_with_its_history(app, partner, db):
    await set_program(db, NOW - timedelta(days=1))   # Standard, VIP from 1,000 PLN
    await rules(app, partner, BASE)
    member = await partner.enroll()
    first = (await partner.post("/api/v1/purchases", order(member, total=60_000))).json()
    assert "tier_change" not in first
    lifted = await partner.post("/api/v1/purchases", order(member, total=50_000))
    assert lifted.status_code == 201, lifted.text
    change = lifted.json()["tier_change"]
    assert (change["from_code"], change["to_code"], change["reason"], change["value"]) == \
        ("standard", "vip", "upgrade", 110_000)
    assert await db.fetchval("SELECT tier_code FROM member_tiers WHERE member_id = $1",
                             uuid.UUID(member)) == "vip"
    assert [tuple(r) for r in await db.fetch(
        "SELECT from_code, to_code, reason FROM tier_history WHERE member_id = $1",
        uuid.UUID(member))] == [("standard", "vip", "upgrade")]
    # A replay returns the stored response, tier change included, and changes nothing.
    again = await partner.post("/api/v1/purchases", json.loads(lifted.request.content),
                               key=lifted.request.headers["Idempotency-Key"])
    assert again.json() == lifted.json()
    third = (await partner.post("/api/v1/purchases", order(member, total=1_000))).json()
    assert "tier_change" not in third


async def test_a_return_re_evaluates_the_tier_at_once(app, partner, db):
    await set_program(db, NOW - timedelta(days=1), downgrade="rolling")
    await rules(app, partner, BASE)
    member = await partner.enroll()
    bought = (await partner.post("/api/v1/purchases", order(member, total=110_000))).json()
    assert bought["tier_change"]["to_code"] == "vip"
    returned = await partner.post(f"/api/v1/purchases/{bought['order_id']}/returns",
                                  {"amount": 20_000})
    assert returned.status_code == 201, returned.text
    change = returned.json()["tier_change"]
    assert (change["from_code"], change["to_code"], change["reason"], change["value"]) == \
        ("vip", "standard", "downgrade", 90_000)
    assert await db.fetchval("SELECT tier_code FROM member_tiers WHERE member_id = $1",
                             uuid.UUID(member)) == "standard"
    again = await partner.post(f"/api/v1/purchases/{bought['order_id']}/returns",
                               {"amount": 20_000},
                               key=returned.request.headers["Idempotency-Key"])
    assert again.json() == returned.json()
    assert await db.fetchval("SELECT count(*) FROM tier_history WHERE member_id = $1",
                             uuid.UUID(member)) == 2
    await set_program(db, NOW - timedelta(days=1))
    await assert_verified(db)


async def test_a_tier_state_changed_by_someone_else_sends_the_purchase_the_locked_way(
        app, partner, db):
    await set_program(db, NOW - timedelta(days=1))
    await rules(app, partner, BASE)
    member = await partner.enroll()
    member_id = uuid.UUID(member)
    async with db.acquire() as conn:
        settings = await coalition_settings(conn)
        program = await tiers.load_program(conn)
        day, month, _ = periods(NOW, settings.timezone)
        facts = await read_facts(conn, partner_id=partner.partner_id,
                                 member=MemberRef(id=member_id), capped_rules=[],
                                 day_start=day, month_start=month, tiers=program, at=NOW)
        tier = tiers.predict(program, facts.begun, 110_000, NOW)
        assert tier["change"]["to_code"] == "vip"
        # The operator assigns VIP by hand before the purchase posts.
        await tiers.assign_manual(conn, member_id, "vip", NOW + timedelta(days=30),
                                  "key account", "operator", NOW)
        result = await commit_purchase(
            conn, partner_id=partner.partner_id, actor="test", member=MemberRef(id=member_id),
            order=an_order(110_000), situation=facts, decision=Decision(), capped_rules=[],
            day_start=day, month_start=month, idempotency_key=new_key(),
            request_hash="h", tier=tier)
    assert result is None
    assert await db.fetchval("SELECT count(*) FROM purchases WHERE member_id = $1",
                             member_id) == 0


async def test_an_order_posted_twice_at_once_is_a_409_not_a_500(app, partner, db):
    """Both copies pass purchase_begin's order check while the first is uncommitted: the
    same member's copy waits for the wallet, the other member's for the unique index."""
    await rules(app, partner, BASE)
    first, second = await partner.enroll(), await partner.enroll()
    purchase = an_order()
    keys = [new_key(), new_key()]
    async with db.acquire() as holder:
        held = holder.transaction()
        await held.start()
        posted = await earning.purchase(as_test(holder, partner),
                                        member=MemberRef(id=uuid.UUID(first)),
                                        order=purchase, idempotency_key=new_key(),
                                        request_hash="h")
        assert posted.status == 201, posted.body
        racers = [asyncio.create_task(post(db, partner, member, purchase, key))
                  for member, key in zip((first, second), keys, strict=True)]
        await asyncio.sleep(0.5)
        assert not any(racer.done() for racer in racers)
        await held.commit()
        answers = await asyncio.gather(*racers)
    assert [answer.status for answer in answers] == [409, 409]
    assert {json.loads(answer.body)["type"] for answer in answers} == {
        "/problems/order-already-posted"}
    assert await db.fetchval("SELECT count(*) FROM purchases WHERE order_id = $1",
                             purchase.order_id) == 1
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = ANY($1)",
                             keys) == 0
    await assert_verified(db)
