"""Segments and RFM on real PostgreSQL: each condition, all/any, count preview, save
and refresh (idempotent), a brand's segment sees only its own purchases, RFM quintiles."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from coalition.audience import member_context
from coalition.errors import DomainError
from coalition.segments import service as segments
from coalition.tiers import reevaluate_member
from tenants.scope import tenant_connection
from tests.tiering import buy, set_program

NOW = datetime(2026, 6, 10, 12, tzinfo=UTC)


def days(n: float) -> datetime:
    return NOW - timedelta(days=n)


@pytest.fixture
async def shop(db, partner, other_partner):
    """Partner A's members: a recent big spender (VIP, birthday in June), a lapsed one
    who bought tools, a newcomer who buys only at partner B."""
    await set_program(db, NOW, downgrade="rolling")
    big = uuid.UUID(await partner.enroll(birth_date="1985-06-02"))
    lapsed = uuid.UUID(await partner.enroll(birth_date="1990-01-15"))
    elsewhere = uuid.UUID(await partner.enroll())
    await other_partner.enroll(f"b-{uuid.uuid4().hex[:6]}@example.com")
    a = partner.partner_id
    await buy(db, a, big, 80_000, days(5), lines=[{"sku": "D1", "category": "drills",
                                                   "quantity": 1, "unit_price": 80_000,
                                                   "amount": 80_000}])
    await buy(db, a, big, 40_000, days(40))
    await buy(db, a, lapsed, 9_000, days(200), lines=[{"sku": "H1", "category": "tools",
                                                       "quantity": 3, "unit_price": 3_000,
                                                       "amount": 9_000}])
    await buy(db, other_partner.partner_id, elsewhere, 70_000, days(3))
    async with db.acquire() as conn:
        await reevaluate_member(conn, big, NOW)
    return {"big": big, "lapsed": lapsed, "elsewhere": elsewhere}


async def members_of(db, segment_id) -> set[uuid.UUID]:
    return {r[0] for r in await db.fetch(
        "SELECT member_id FROM segment_members WHERE segment_id = $1", segment_id)}


CASES = [
    ({"conditions": [{"type": "last_purchase", "within_days": 30}]}, {"big"}),
    ({"conditions": [{"type": "last_purchase", "more_than_days": 90}]}, {"lapsed"}),
    ({"conditions": [{"type": "spend", "days": 90, "min": 50_000}]}, {"big"}),
    ({"conditions": [{"type": "spend", "days": 365, "max": 10_000}]}, {"lapsed", "elsewhere"}),
    ({"conditions": [{"type": "transactions", "days": 365, "min": 2}]}, {"big"}),
    ({"conditions": [{"type": "tier", "tiers": ["vip"]}]}, {"big"}),
    ({"conditions": [{"type": "tier", "tiers": ["standard"]}]}, {"lapsed", "elsewhere"}),
    ({"conditions": [{"type": "category", "categories": ["tools"], "days": 365}]}, {"lapsed"}),
    ({"conditions": [{"type": "birthday_month", "current": True}]}, {"big"}),
    ({"conditions": [{"type": "birthday_month", "months": [1, 2]}]}, {"lapsed"}),
    ({"match": "any", "conditions": [{"type": "category", "categories": ["drills"]},
                                     {"type": "birthday_month", "months": [1]}]},
     {"big", "lapsed"}),
    ({"conditions": [{"type": "last_purchase", "within_days": 30},
                     {"type": "birthday_month", "months": [1]}]}, set()),
]


@pytest.mark.parametrize(("definition", "expected"), CASES)
async def test_each_condition_selects_the_right_members(db, partner, shop, definition,
                                                        expected):
    async with tenant_connection(db, partner.partner_id) as conn:
        assert await segments.preview(conn, partner.partner_id, definition, NOW) == \
            len(expected)
        segment = await segments.save(conn, partner.partner_id, None, "Case", None,
                                      definition, "test", NOW)
    assert await members_of(db, segment) == {shop[k] for k in expected}


async def test_a_brands_segment_never_counts_another_brands_purchases(db, partner, shop):
    # `elsewhere` spent 700 PLN at partner B three days ago: invisible to partner A.
    definition = {"conditions": [{"type": "last_purchase", "within_days": 30}]}
    async with tenant_connection(db, partner.partner_id) as conn:
        assert await segments.preview(conn, partner.partner_id, definition, NOW) == 1
    async with db.acquire() as conn:   # a coalition segment sees every purchase
        assert await segments.preview(conn, None, definition, NOW) >= 2
        coalition = {"conditions": [{"type": "partner", "partners": [str(partner.partner_id)]}]}
        segment = await segments.save(conn, None, None, "Bought at A", None, coalition, "op",
                                      NOW)
        assert {shop["big"], shop["lapsed"]} <= await members_of(db, segment)
        assert shop["elsewhere"] not in await members_of(db, segment)


async def test_refresh_follows_time_and_is_idempotent(db, partner, shop):
    definition = {"conditions": [{"type": "last_purchase", "within_days": 30}]}
    async with db.acquire() as conn:
        segment = await segments.save(conn, partner.partner_id, None, "Recent", None,
                                      definition, "test", NOW)
        assert await segments.refresh(conn, segment, NOW) == (0, 0)
        later = NOW + timedelta(days=30)
        assert await segments.refresh(conn, segment, later) == (0, 1)   # big aged out
        assert await segments.refresh(conn, segment, later) == (0, 0)
        await buy(db, partner.partner_id, shop["lapsed"], 1_000, later)
        assert await segments.refresh(conn, segment, later) == (1, 0)
        assert segment in (await member_context(conn, shop["lapsed"])).segments
        row = await segments.owned(conn, partner.partner_id, segment)
        assert row["member_count"] == 1 and row["refreshed_at"] == later
        # A stored definition that no longer validates does not stop the job.
        await conn.execute("INSERT INTO segments (partner_id, name, definition, created_by)"
                           " VALUES ($1, 'Broken', $2, 't')", partner.partner_id,
                           '{"conditions": [{"type": "tier", "tiers": ["gone"]}]}')
        await segments.refresh_all(conn, later)
        assert await segments.refresh_all(conn, later) == 0


async def test_rfm_scores_rank_members_in_quintiles(db, partner, shop):
    async with db.acquire() as conn:
        await segments.refresh_rfm(conn, NOW)
        assert await segments.refresh_rfm(conn, NOW) == 0               # idempotent
        rows = {r["member_id"]: r for r in await conn.fetch(
            "SELECT * FROM rfm_scores WHERE partner_id = $1", partner.partner_id)}
    assert set(rows) == {shop["big"], shop["lapsed"]}
    big, lapsed = rows[shop["big"]], rows[shop["lapsed"]]
    assert (big["recency"], big["frequency"], big["monetary"]) == (5, 5, 5)
    assert (lapsed["recency"], lapsed["frequency"], lapsed["monetary"]) == (3, 3, 3)
    assert (big["purchases"], big["spend"]) == (2, 120_000)
    champions = {"conditions": [{"type": "rfm", "recency_min": 4, "frequency_min": 4,
                                 "monetary_min": 4}]}
    async with tenant_connection(db, partner.partner_id) as conn:
        assert await segments.preview(conn, partner.partner_id, champions, NOW) == 1


BAD = [
    ({"conditions": []}, "definition.conditions"),
    ({"conditions": [{"type": "spend", "days": 0, "min": 1}]}, "definition.conditions[0].days"),
    ({"conditions": [{"type": "spend", "days": 30}]}, "definition.conditions[0]"),
    ({"conditions": [{"type": "spend", "days": 30, "min": 9, "max": 1}]},
     "definition.conditions[0]"),
    ({"conditions": [{"type": "last_purchase"}]}, "definition.conditions[0]"),
    ({"conditions": [{"type": "tier", "tiers": ["platinum"]}]}, "definition.conditions[0]"),
    ({"conditions": [{"type": "partner", "partners": [str(uuid.uuid4())]}]},
     "definition.conditions[0]"),
    ({"conditions": [{"type": "birthday_month"}]}, "definition.conditions[0]"),
    ({"conditions": [{"type": "birthday_month", "months": [13]}]},
     "definition.conditions[0].months[0]"),
    ({"conditions": [{"type": "weather", "sunny": True}]}, "definition.conditions[0].type"),
    ({"conditions": [{"type": "spend", "days": "30", "min": 1}]},
     "definition.conditions[0].days"),
    ({"match": "some", "conditions": [{"type": "birthday_month", "current": True}]},
     "definition.match"),
]


@pytest.mark.parametrize(("definition", "field"), BAD)
async def test_bad_definitions_are_refused_naming_the_field(db, partner, definition, field):
    async with tenant_connection(db, partner.partner_id) as conn:
        with pytest.raises(DomainError) as caught:
            await segments.preview(conn, partner.partner_id, definition, NOW)
    assert caught.value.status == 400 and caught.value.field == field, caught.value.detail


async def test_segments_belong_to_their_owner(db, partner, other_partner, shop):
    definition = {"conditions": [{"type": "birthday_month", "current": True}]}
    async with tenant_connection(db, partner.partner_id) as conn:
        segment = await segments.save(conn, partner.partner_id, None, "June", None,
                                      definition, "a", NOW)
    async with tenant_connection(db, other_partner.partner_id) as conn:
        assert await segments.list_segments(conn, other_partner.partner_id) == []
        for attempt in (segments.owned(conn, other_partner.partner_id, segment),
                        segments.delete(conn, other_partner.partner_id, segment),
                        segments.save(conn, other_partner.partner_id, segment, "Stolen", None,
                                      definition, "b", NOW)):
            with pytest.raises(DomainError):
                await attempt
    assert await db.fetchval("SELECT name FROM segments WHERE id = $1", segment) == "June"
