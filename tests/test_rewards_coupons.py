"""Cross-brand coupons: a qualifying purchase at brand A grants a free voucher usable at
brand B, once per offer and order, within the reward's stock, window, gates and limit."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from coalition import clock
from coalition.rewards import grant_purchase_coupons
from coalition.rewards.service import consume
from coalition.verify import verify_ledger
from tests.rewards_helpers import make_reward, wallet


async def _offer(db, source, reward, min_total=20000, **fields) -> uuid.UUID:
    columns = {"name": "Moda → Akcesoria", "source_partner_id": source, "reward_id": reward,
               "min_total": min_total, **fields}
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return await db.fetchval(f"INSERT INTO coupon_offers ({', '.join(columns)})"
                             f" VALUES ({marks}) RETURNING id", *columns.values())


async def _grant(app, partner_id, member, order_id, total, at=None):
    async with app.state.pool.acquire() as conn:
        return await grant_purchase_coupons(
            conn, partner_id=partner_id, member_id=uuid.UUID(member), order_id=order_id,
            total=total, occurred_at=at or clock.now())


async def test_a_qualifying_purchase_grants_one_coupon_usable_at_the_other_brand(
        app, partner, other_partner, db):
    member = await partner.enroll()
    await partner.earn(member, 40)
    reward = await make_reward(db, other_partner.partner_id, name="15% na akcesoria",
                               value=15, listed=False, voucher_days=30, stock=10)
    offer = await _offer(db, partner.partner_id, reward)
    assert await _grant(app, partner.partner_id, member, "MC-1", 19999) == []
    # Concurrent calls for one order (a retried purchase) grant one coupon between them.
    answers = await asyncio.gather(*(_grant(app, partner.partner_id, member, "MC-2", 20000)
                                     for _ in range(3)))
    assert all(len(a) == 1 for a in answers)
    coupon = answers[0][0]
    assert coupon["offer_id"] == offer and coupon["source"] == "coupon"
    assert coupon["partner"]["id"] == other_partner.partner_id
    assert coupon["issuer"]["id"] == partner.partner_id and coupon["points"] == 0
    assert coupon["expires_at"] - coupon["issued_at"] == timedelta(days=30)
    assert {a[0]["code"] for a in answers} == {coupon["code"]}
    # Idempotent: the same order later grants nothing new and answers the same coupon.
    assert [c["code"] for c in await _grant(app, partner.partner_id, member, "MC-2",
                                             20000)] == [coupon["code"]]
    assert await db.fetchval("SELECT count(*) FROM vouchers WHERE offer_id = $1", offer) == 1
    assert tuple(await db.fetchrow("SELECT stock, issued FROM rewards WHERE id = $1",
                                   reward)) == (9, 1)
    # Free: no points moved; usable at B, not at A.
    assert await wallet(db, member) == 40
    async with app.state.pool.acquire() as conn:
        used = await consume(conn, partner_id=other_partner.partner_id, code=coupon["code"],
                             actor="till")
        assert used["status"] == "used"
        assert await verify_ledger(conn) == []
    # A purchase at B itself, or another brand's order with the same id, grants nothing.
    assert await _grant(app, other_partner.partner_id, member, "MC-2", 50000) == []


async def test_coupons_respect_window_stock_limit_gates_and_active_flags(
        app, partner, other_partner, db):
    member = await partner.enroll()
    now = clock.now()
    limited = await make_reward(db, other_partner.partner_id, stock=1, listed=False)
    await _offer(db, partner.partner_id, limited, min_total=100)
    capped = await make_reward(db, other_partner.partner_id, per_member_limit=1, listed=False)
    await _offer(db, partner.partner_id, capped, min_total=100)
    vip = await make_reward(db, other_partner.partner_id, tiers=["vip"], listed=False)
    await _offer(db, partner.partner_id, vip, min_total=100)
    retired = await make_reward(db, other_partner.partner_id, active=False)
    await _offer(db, partner.partner_id, retired, min_total=100)
    later = await make_reward(db, other_partner.partner_id)
    await _offer(db, partner.partner_id, later, min_total=100, starts_at=now + timedelta(days=1))
    off = await make_reward(db, other_partner.partner_id)
    await _offer(db, partner.partner_id, off, min_total=100, active=False)

    first = await _grant(app, partner.partner_id, member, "O-1", 500)
    assert sorted(c["reward"]["id"] for c in first) == sorted([limited, capped])
    # Stock gone and the per-member limit reached: the next order gets nothing.
    assert await _grant(app, partner.partner_id, member, "O-2", 500) == []
    # The offer's window is judged at the purchase time.
    assert [c["reward"]["id"] for c in await _grant(
        app, partner.partner_id, member, "O-3", 500, at=now + timedelta(days=2))] == [later]
