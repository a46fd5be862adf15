"""Rewards: eligibility, redemption into vouchers (all or nothing), voucher consumption,
and the races: stock, per-member limit, double consume. Against real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta

import pytest

from coalition import clock
from coalition.audience import MemberContext
from coalition.errors import DomainError
from coalition.rewards import eligible
from coalition.rewards.service import (
    consume,
    find_voucher,
    new_code,
    normalize_code,
    redeem,
    reward_of,
)
from coalition.verify import verify_ledger
from tests.rewards_helpers import footprint, make_reward, wallet

CODE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$")


async def _redeem(pool, reward_id, member, **kw):
    async with pool.acquire() as conn:
        return await redeem(conn, reward_id=reward_id, member_id=uuid.UUID(str(member)),
                            actor="test", **kw)


async def _consume(pool, partner_id, code, **kw):
    async with pool.acquire() as conn:
        return await consume(conn, partner_id=partner_id, code=code, actor="test", **kw)


async def _member_with(partner, points: int) -> str:
    member = await partner.enroll()
    assert (await partner.earn(member, points)).status_code == 201
    return member


def test_codes_are_80_bit_grouped_and_typing_tolerant():
    codes = {new_code() for _ in range(2000)}
    assert len(codes) == 2000 and all(CODE.match(c) for c in codes)
    code = next(iter(codes))
    typed = code.replace("-", " ").lower().replace("0", "o").replace("1", "l")
    assert normalize_code(typed) == code
    assert normalize_code("not a code") is None and normalize_code(code + "X") is None


def test_eligible_checks_window_stock_tier_and_segments():
    vip_only = reward_of({"id": uuid.uuid4(), "partner_id": uuid.uuid4(), "name": "Exclusive",
                          "kind": "product", "price_points": 500, "active": True,
                          "tiers": ["vip"], "segments": [], "stock": None,
                          "valid_from": None, "valid_until": None})
    member = uuid.uuid4()
    assert eligible(vip_only, MemberContext(member, "vip", frozenset())) is None
    assert eligible(vip_only, MemberContext(member, "standard", frozenset())) == \
        "For VIP members only."
    assert eligible(vip_only, MemberContext(member, None, frozenset())) is not None
    segment = uuid.uuid4()
    vip_only.segments = [segment]
    assert eligible(vip_only, MemberContext(member, "vip", frozenset({segment}))) is None
    assert "selected members" in eligible(vip_only, MemberContext(member, "vip", frozenset()))
    vip_only.tiers, vip_only.segments = [], []
    now = clock.now()
    vip_only.valid_from = now + timedelta(days=1)
    assert "Available from" in eligible(vip_only, MemberContext(member, None, frozenset()))
    assert eligible(vip_only, MemberContext(member, None, frozenset()),
                    at=now + timedelta(days=2)) is None
    vip_only.valid_from, vip_only.valid_until = None, now
    assert "ended" in eligible(vip_only, MemberContext(member, None, frozenset()))
    vip_only.valid_until, vip_only.stock = None, 0
    assert eligible(vip_only, MemberContext(member, None, frozenset())) == "Out of stock."
    vip_only.stock, vip_only.active = 1, False
    assert "no longer" in eligible(vip_only, MemberContext(member, None, frozenset()))


async def test_redemption_burns_at_the_rewards_partner_and_issues_a_voucher(
        app, partner, other_partner, db):
    pool = app.state.pool
    member = await _member_with(partner, 300)        # linked to `partner` only
    reward = await make_reward(db, other_partner.partner_id, stock=5, voucher_days=30)
    result = await _redeem(pool, reward, member)
    voucher = result["voucher"]
    assert CODE.match(voucher["code"]) and voucher["status"] == "issued"
    assert voucher["partner"]["id"] == other_partner.partner_id
    assert voucher["points"] == 100 and result["balance"] == {"available": 200}
    assert voucher["expires_at"] - voucher["issued_at"] == timedelta(days=30)
    assert await wallet(db, member) == 200
    entry = await db.fetchrow("SELECT kind, partner_id FROM journal_entries WHERE id = $1",
                              result["transaction_id"])
    assert tuple(entry) == ("redeem", other_partner.partner_id)
    assert tuple(await db.fetchrow("SELECT stock, issued FROM rewards WHERE id = $1",
                                   reward)) == (4, 1)
    # The member chose the other brand's reward: now its customer too.
    assert await db.fetchval("SELECT count(*) FROM member_links WHERE member_id = $1",
                             uuid.UUID(member)) == 2
    async with pool.acquire() as conn:
        assert await verify_ledger(conn) == []


@pytest.mark.parametrize("case", ["inactive", "not yet", "ended", "no stock", "tier",
                                  "segment", "points", "unlisted", "other partner",
                                  "unknown", "blocked"])
async def test_every_refusal_writes_nothing(app, partner, other_partner, db, case):
    pool = app.state.pool
    member = await _member_with(partner, 150)
    now = clock.now()
    fields = {
        "inactive": {"active": False},
        "not yet": {"valid_from": now + timedelta(days=3)},
        "ended": {"valid_from": now - timedelta(days=3), "valid_until": now},
        "no stock": {"stock": 0},
        "tier": {"tiers": ["vip"]},
        "segment": {"segments": [uuid.uuid4()]},
        "points": {"price_points": 151, "stock": 2},
        "unlisted": {"listed": False},
    }.get(case, {"stock": 3})
    reward = await make_reward(db, other_partner.partner_id, **fields)
    kwargs = {}
    if case == "other partner":
        kwargs["partner_id"] = partner.partner_id     # the API's partner: not its reward
    if case == "unknown":
        reward = uuid.uuid4()
    if case == "blocked":
        await db.execute("UPDATE members SET status = 'blocked' WHERE id = $1",
                         uuid.UUID(member))
    before = await footprint(db, member)
    with pytest.raises(DomainError) as refused:
        await _redeem(pool, reward, member, **kwargs)
    expected = {"inactive": "reward-not-available", "not yet": "reward-not-available",
                "ended": "reward-not-available", "no stock": "reward-out-of-stock",
                "tier": "reward-not-eligible", "segment": "reward-not-eligible",
                "points": "insufficient-points", "unlisted": "reward-not-available",
                "other partner": "reward-not-found", "unknown": "reward-not-found",
                "blocked": "member-not-active"}[case]
    assert refused.value.slug == expected and 400 <= refused.value.status < 500
    assert await footprint(db, member) == before


async def test_the_per_member_limit_is_enforced(app, partner, db):
    member = await _member_with(partner, 500)
    reward = await make_reward(db, partner.partner_id, per_member_limit=2)
    await _redeem(app.state.pool, reward, member)
    await _redeem(app.state.pool, reward, member)
    before = await footprint(db, member)
    with pytest.raises(DomainError) as refused:
        await _redeem(app.state.pool, reward, member)
    assert refused.value.slug == "reward-limit-reached"
    assert await footprint(db, member) == before and await wallet(db, member) == 300


async def test_concurrent_redemptions_never_oversell(app, partner, db):
    members = [await _member_with(partner, 200) for _ in range(8)]
    reward = await make_reward(db, partner.partner_id, stock=3)
    outcomes = await asyncio.gather(*(_redeem(app.state.pool, reward, m) for m in members),
                                    return_exceptions=True)
    won = [o for o in outcomes if isinstance(o, dict)]
    lost = [o for o in outcomes if isinstance(o, DomainError)]
    assert len(won) == 3 and len(lost) == 5, outcomes
    assert {e.slug for e in lost} == {"reward-out-of-stock"}
    assert tuple(await db.fetchrow("SELECT stock, issued FROM rewards WHERE id = $1",
                                   reward)) == (0, 3)
    assert await db.fetchval("SELECT count(*) FROM vouchers WHERE reward_id = $1", reward) == 3
    assert sorted([await wallet(db, m) for m in members]) == [100] * 3 + [200] * 5


async def test_concurrent_redemptions_by_one_member_respect_the_limit(app, partner, db):
    member = await _member_with(partner, 1000)
    reward = await make_reward(db, partner.partner_id, per_member_limit=2)
    outcomes = await asyncio.gather(*(_redeem(app.state.pool, reward, member)
                                      for _ in range(6)), return_exceptions=True)
    assert sum(isinstance(o, dict) for o in outcomes) == 2, outcomes
    assert {o.slug for o in outcomes if isinstance(o, DomainError)} == {"reward-limit-reached"}
    assert await wallet(db, member) == 800


async def test_a_portal_form_token_redeems_once(app, partner, db):
    member = await _member_with(partner, 300)
    reward = await make_reward(db, partner.partner_id)
    other = await make_reward(db, partner.partner_id)
    outcomes = await asyncio.gather(*(_redeem(app.state.pool, reward, member,
                                              request_key="form-token-1") for _ in range(3)))
    assert len({o["voucher"]["code"] for o in outcomes}) == 1
    assert sorted(o["replayed"] for o in outcomes) == [False, True, True]
    assert await wallet(db, member) == 200
    with pytest.raises(DomainError) as reused:
        await _redeem(app.state.pool, other, member, request_key="form-token-1")
    assert reused.value.status == 409


async def test_a_voucher_is_consumed_exactly_once_under_concurrency(app, partner, db):
    member = await _member_with(partner, 100)
    reward = await make_reward(db, partner.partner_id)
    code = (await _redeem(app.state.pool, reward, member))["voucher"]["code"]
    outcomes = await asyncio.gather(*(_consume(app.state.pool, partner.partner_id, code,
                                               order_id=f"O-{i}") for i in range(5)),
                                    return_exceptions=True)
    used = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, DomainError)]
    assert len(used) == 1 and used[0]["status"] == "used", outcomes
    assert [(e.slug, e.status) for e in refused] == [("voucher-already-used", 409)] * 4
    row = await db.fetchrow("SELECT status, used_order_id FROM vouchers WHERE code = $1", code)
    assert row["status"] == "used" and row["used_order_id"] == used[0]["used_order_id"]


async def test_an_expired_voucher_cannot_be_used(app, partner, db):
    member = await _member_with(partner, 100)
    reward = await make_reward(db, partner.partner_id, voucher_days=7)
    code = (await _redeem(app.state.pool, reward, member))["voucher"]["code"]
    await db.execute("UPDATE vouchers SET expires_at = $2::timestamptz - interval '1 minute'"
                     " WHERE code = $1", code, clock.now())
    async with app.state.pool.acquire() as conn:
        assert (await find_voucher(conn, partner.partner_id, code))["status"] == "expired"
    with pytest.raises(DomainError) as refused:
        await _consume(app.state.pool, partner.partner_id, code)
    assert (refused.value.slug, refused.value.status) == ("voucher-expired", 422)
    assert await db.fetchval("SELECT status FROM vouchers WHERE code = $1", code) == "issued"


async def test_only_the_partner_where_a_voucher_is_usable_sees_or_uses_it(
        app, partner, other_partner, db):
    member = await _member_with(partner, 100)
    reward = await make_reward(db, partner.partner_id)
    code = (await _redeem(app.state.pool, reward, member))["voucher"]["code"]
    for attempt in (lambda c: find_voucher(c, other_partner.partner_id, code),
                    lambda c: consume(c, partner_id=other_partner.partner_id, code=code,
                                      actor="intruder")):
        async with app.state.pool.acquire() as conn:
            with pytest.raises(DomainError) as refused:
                await attempt(conn)
        assert refused.value.status == 404
    assert await db.fetchval("SELECT status FROM vouchers WHERE code = $1", code) == "issued"
