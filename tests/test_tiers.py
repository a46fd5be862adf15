"""Tiers: upgrade at once, downgrade under each policy, calendar and rolling windows,
manual assignment and its expiry, the periodic job, progress through the API; all with
an explicit `now` (frozen time) on real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from coalition import clock
from coalition.audience import member_context, member_contexts
from coalition.errors import DomainError
from coalition.tiers import (
    assign_manual,
    end_manual,
    history,
    member_status,
    reevaluate_all,
    reevaluate_member,
)
from coalition.tiers.admin import TierInput, save_program
from coalition.tiers.ladder import Policy, add_months
from tenants.service import create_app_client, hash_secret
from tests.tiering import LADDER, buy, set_program

T0 = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


async def tier_of(db, member) -> str | None:
    async with db.acquire() as conn:
        return (await member_context(conn, uuid.UUID(str(member)))).tier


async def evaluate(db, member, now):
    async with db.acquire() as conn:
        return await reevaluate_member(conn, uuid.UUID(str(member)), now)


async def reasons(db, member) -> list[str]:
    async with db.acquire() as conn:
        return [r["reason"] for r in reversed(await history(conn, uuid.UUID(str(member))))]


def test_add_months_clamps_to_the_month_end():
    assert add_months(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2026, 3, 15, tzinfo=UTC), -12) == datetime(2025, 3, 15, tzinfo=UTC)
    assert add_months(datetime(2024, 2, 29, tzinfo=UTC), 12) == datetime(2025, 2, 28, tzinfo=UTC)


async def test_upgrade_is_immediate_and_idempotent(db, partner):
    await set_program(db, T0, downgrade="rolling")
    member = await partner.enroll()
    await buy(db, partner.partner_id, member, 60_000, T0 - timedelta(days=30))
    assert await evaluate(db, member, T0) is None
    assert await tier_of(db, member) == "standard"
    await buy(db, partner.partner_id, member, 40_000, T0)            # 1,000 PLN reached
    change = await evaluate(db, member, T0)
    assert (change.from_code, change.to_code, change.reason, change.value) == \
        ("standard", "vip", "upgrade", 100_000)
    assert await tier_of(db, member) == "vip"
    assert await evaluate(db, member, T0) is None                     # running twice: nothing
    assert await reasons(db, member) == ["upgrade"]


async def test_other_currencies_and_returns_do_not_qualify(db, partner):
    await set_program(db, T0, downgrade="rolling")
    member = await partner.enroll()
    await buy(db, partner.partner_id, member, 90_000, T0, currency="EUR")
    await buy(db, partner.partner_id, member, 150_000, T0, returned=60_000)
    assert await evaluate(db, member, T0) is None
    async with db.acquire() as conn:
        status = await member_status(conn, uuid.UUID(member), T0)
    assert (status.value, status.next_tier.code, status.remaining) == (90_000, "vip", 10_000)


async def test_rolling_downgrade_drops_as_soon_as_the_value_falls_short(db, partner):
    await set_program(db, T0, downgrade="rolling")
    member = await partner.enroll()
    order = await buy(db, partner.partner_id, member, 100_000, T0)
    await evaluate(db, member, T0)
    await db.execute("UPDATE purchases SET returned_total = 50000 WHERE id = $1", order)
    change = await evaluate(db, member, T0 + timedelta(days=3))
    assert (change.to_code, change.reason) == ("standard", "downgrade")
    assert await reasons(db, member) == ["upgrade", "downgrade"]


async def test_anniversary_keeps_the_tier_until_the_anniversary(db, partner):
    await set_program(db, T0, downgrade="anniversary")
    member = await partner.enroll()
    order = await buy(db, partner.partner_id, member, 100_000, T0)
    await evaluate(db, member, T0)
    await db.execute("UPDATE purchases SET returned_total = 50000 WHERE id = $1", order)
    assert await evaluate(db, member, T0 + timedelta(days=200)) is None
    assert await tier_of(db, member) == "vip"
    async with db.acquire() as conn:
        status = await member_status(conn, uuid.UUID(member), T0 + timedelta(days=200))
    assert status.review_at == add_months(T0, 12) and status.tier.code == "vip"
    change = await evaluate(db, member, add_months(T0, 12))
    assert (change.to_code, change.reason) == ("standard", "downgrade")
    assert await evaluate(db, member, add_months(T0, 12)) is None


async def test_anniversary_renews_a_tier_still_qualified_for(db, partner):
    await set_program(db, T0, downgrade="anniversary")
    member = await partner.enroll()
    await buy(db, partner.partner_id, member, 100_000, T0)
    await evaluate(db, member, T0)
    await buy(db, partner.partner_id, member, 100_000, add_months(T0, 11))
    assert await evaluate(db, member, add_months(T0, 12)) is None
    review = await db.fetchval("SELECT review_at FROM member_tiers WHERE member_id = $1",
                               uuid.UUID(member))
    assert review == add_months(T0, 24)
    # A year later the renewed tier is reviewed again and the spend has aged out.
    assert (await evaluate(db, member, add_months(T0, 24))).reason == "downgrade"


async def test_never_downgrade_keeps_an_earned_tier(db, partner):
    await set_program(db, T0, downgrade="never")
    member = await partner.enroll()
    await buy(db, partner.partner_id, member, 120_000, T0)
    await evaluate(db, member, T0)
    assert await evaluate(db, member, add_months(T0, 36)) is None
    assert await tier_of(db, member) == "vip"


async def test_calendar_year_counts_from_january_and_status_holds_through_next_year(
        db, partner):
    await set_program(db, T0, window_kind="calendar_year", downgrade="rolling")
    member = await partner.enroll()
    december = datetime(2025, 12, 20, 12, tzinfo=UTC)
    await buy(db, partner.partner_id, member, 100_000, december)
    await evaluate(db, member, december)
    assert await tier_of(db, member) == "vip"
    january = datetime(2026, 1, 5, 12, tzinfo=UTC)
    assert await evaluate(db, member, january) is None   # last year's spend keeps VIP
    async with db.acquire() as conn:
        status = await member_status(conn, uuid.UUID(member), january)
    # The window starts on 1 January, Warsaw time.
    assert status.value == 0 and status.window_start == datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert status.window_kind == "calendar_year"
    change = await evaluate(db, member, datetime(2027, 1, 2, tzinfo=UTC))
    assert change.reason == "downgrade"

    # The same purchase under a rolling 12-month window still counts in January.
    await set_program(db, T0, window_kind="rolling", downgrade="rolling")
    async with db.acquire() as conn:
        status = await member_status(conn, uuid.UUID(member), january)
    assert status.value == 100_000


async def test_points_basis_counts_earned_points_net_of_reversals(db, partner):
    points_ladder = [TierInput("standard", "Standard", 0), TierInput("vip", "VIP", 1000)]
    await set_program(db, T0, ladder=points_ladder, qualification="points",
                      downgrade="rolling")
    member = await partner.enroll()
    now = clock.now() + timedelta(seconds=5)
    earn = (await partner.earn(member, 1200)).json()
    assert (await evaluate(db, member, now)).to_code == "vip"
    reversal = await partner.post(f"/api/v1/transactions/{earn['id']}/reversal",
                                  {"points": 300})
    assert reversal.status_code == 201, reversal.text
    change = await evaluate(db, member, now)
    assert (change.to_code, change.value) == ("standard", 900)


async def test_manual_assignment_lifts_until_its_end_date_then_lapses(db, partner):
    await set_program(db, T0, downgrade="rolling")
    member = uuid.UUID(await partner.enroll())
    until = T0 + timedelta(days=30)
    async with db.acquire() as conn:
        change = await assign_manual(conn, member, "vip", until, "Key account", "op@x", T0)
        assert (change.to_code, change.reason) == ("vip", "manual")
        status = await member_status(conn, member, T0 + timedelta(days=1))
        assert (status.tier.code, status.manual_until, status.manual_reason) == \
            ("vip", until, "Key account")
        assert await reevaluate_member(conn, member, T0 + timedelta(days=10)) is None
        change = await reevaluate_member(conn, member, until)
        assert (change.to_code, change.reason) == ("standard", "manual_expired")
        assert await reevaluate_member(conn, member, until) is None
        rows = await history(conn, member)
    assert [(r["reason"], r["actor"]) for r in rows] == [("manual_expired", "system"),
                                                         ("manual", "op@x")]
    assert "Key account" in rows[1]["note"]


async def test_a_lapsed_manual_tier_no_longer_counts_even_before_the_job(db, partner):
    await set_program(db, T0, downgrade="rolling")
    member = uuid.UUID(await partner.enroll())
    soon = clock.now() + timedelta(seconds=1)
    async with db.acquire() as conn:
        await assign_manual(conn, member, "vip", soon, "Trial", "op@x", soon - timedelta(days=1))
        await conn.execute("SELECT pg_sleep(1.1)")
        assert (await member_context(conn, member)).tier == "standard"


async def test_manual_assignment_is_validated(db, partner):
    await set_program(db, T0, downgrade="rolling")
    member = uuid.UUID(await partner.enroll())
    await buy(db, partner.partner_id, member, 100_000, T0)
    async with db.acquire() as conn:
        for args, field in [(("gold", T0 + timedelta(days=1), "Reason"), "tier"),
                            (("vip", T0 - timedelta(days=1), "Reason"), "until"),
                            (("vip", T0 + timedelta(days=1), " "), "reason"),
                            (("vip", T0 + timedelta(days=1), "Reason"), "tier")]:  # earned
            with pytest.raises(DomainError) as caught:
                await assign_manual(conn, member, *args, "op@x", T0)
            assert caught.value.field == field


async def test_ending_a_manual_assignment_early(db, partner):
    await set_program(db, T0, downgrade="rolling")
    member = uuid.UUID(await partner.enroll())
    async with db.acquire() as conn:
        await assign_manual(conn, member, "vip", T0 + timedelta(days=90), "Goodwill", "op@x", T0)
        change = await end_manual(conn, member, "op@y", T0 + timedelta(days=1))
        assert (change.to_code, change.reason) == ("standard", "manual_expired")
        assert (await history(conn, member))[0]["actor"] == "op@y"
        assert await end_manual(conn, member, "op@y", T0 + timedelta(days=2)) is None


async def test_reevaluate_all_changes_each_member_once(db, partner):
    await set_program(db, T0, downgrade="rolling")
    up, down, same = [uuid.UUID(await partner.enroll()) for _ in range(3)]
    await buy(db, partner.partner_id, down, 100_000, T0 - timedelta(days=400))
    async with db.acquire() as conn:
        await reevaluate_member(conn, down, T0 - timedelta(days=400))
        await buy(db, partner.partner_id, up, 150_000, T0)
        await buy(db, partner.partner_id, same, 10_000, T0)
        changed = await reevaluate_all(conn, T0)
        assert changed >= 2
        contexts = await member_contexts(conn, [up, down, same])
        assert [contexts[m].tier for m in (up, down, same)] == ["vip", "standard", "standard"]
        assert await reevaluate_all(conn, T0) == 0                    # idempotent


async def test_ladder_validation_and_tiers_in_use(db, partner):
    async with db.acquire() as conn:
        bad = [
            ([TierInput("standard", "Standard", 100)], "tiers[0].threshold"),
            ([TierInput("Standard", "S", 0)], "tiers[0].code"),
            ([TierInput("a", "A", 0), TierInput("a", "B", 5)], "tiers"),
            ([TierInput("a", "A", 0), TierInput("b", "B", 0)], "tiers"),
            ([TierInput("a", "", 0)], "tiers[0].name"),
        ]
        for ladder, field in bad:
            with pytest.raises(DomainError) as caught:
                await save_program(conn, ladder, Policy(), "t", T0, reevaluate=False)
            assert caught.value.field == field
        with pytest.raises(DomainError) as caught:
            await save_program(conn, LADDER, Policy(downgrade="sometimes"), "t", T0)
        assert caught.value.field == "downgrade"
    await set_program(db, T0, downgrade="rolling")
    member = await partner.enroll()
    await buy(db, partner.partner_id, member, 100_000, T0)
    await evaluate(db, member, T0)
    async with db.acquire() as conn:
        with pytest.raises(DomainError) as caught:
            await save_program(conn, [TierInput("standard", "Standard", 0)], Policy(), "t", T0)
        assert caught.value.slug == "tier-in-use"


async def member_token(client, partner, member: str, scope: str) -> dict[str, str]:
    token = uuid.uuid4().hex
    async with client.app.state.sessionmaker() as session:
        app_client, _ = await create_app_client(session, partner.partner_id, "Tier app",
                                                scope.split(), ["https://a.example/cb"])
        await session.commit()
    await client.app.state.pool.execute(
        "INSERT INTO oauth_tokens (client_pk, partner_id, member_id, scope, access_token_hash,"
        " expires_at) VALUES ($1, $2, $3, $4, $5, $6::timestamptz + interval '1 hour')",
        app_client.id, partner.partner_id, uuid.UUID(member), scope, hash_secret(token),
        clock.now())
    return {"Authorization": f"Bearer {token}"}


async def test_tier_api_shows_tier_and_progress_to_its_partners_only(
        client, db, partner, other_partner):
    now = clock.now()
    await set_program(db, now, downgrade="rolling")
    member = await partner.enroll()
    await buy(db, partner.partner_id, member, 75_000, now - timedelta(days=10))
    response = await partner.get(f"/api/v1/members/{member}/tier")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tier"]["code"] == "standard" and body["manual"] is False
    assert body["qualification"]["basis"] == "spend"
    assert body["qualification"]["value"] == 75_000
    assert body["qualification"]["currency"] == "PLN"
    assert body["qualification"]["window_months"] == 12
    assert body["next_tier"] == {"code": "vip", "name": "VIP", "threshold": 100_000,
                                 "remaining": 25_000}
    refused = await other_partner.get(f"/api/v1/members/{member}/tier")
    assert refused.status_code == 404 and "75000" not in refused.text

    own = await member_token(client, partner, member, "points:read")
    assert (await client.get(f"/api/v1/members/{member}/tier", headers=own)).status_code == 200
    stranger = await partner.enroll()
    assert (await client.get(f"/api/v1/members/{stranger}/tier",
                             headers=own)).status_code == 404
    profile_only = await member_token(client, partner, member, "profile")
    assert (await client.get(f"/api/v1/members/{member}/tier",
                             headers=profile_only)).status_code == 403


async def test_member_context_in_one_query(db, partner):
    await set_program(db, T0, downgrade="rolling")
    member = uuid.UUID(await partner.enroll(birth_date="1990-07-04"))
    async with db.acquire() as conn:
        segment = await conn.fetchval(
            "INSERT INTO segments (partner_id, name, definition, created_by)"
            " VALUES ($1, 'Test', $2, 't') RETURNING id", partner.partner_id,
            '{"conditions": [{"type": "birthday_month", "months": [7]}]}')
        await conn.execute("INSERT INTO segment_members VALUES ($1, $2, now())", segment, member)
        context = await member_context(conn, member)
        assert (context.tier, context.segments, context.birth_month) == \
            ("standard", frozenset({segment}), 7)
        nobody = uuid.uuid4()
        assert (await member_contexts(conn, [nobody]))[nobody].tier is None
