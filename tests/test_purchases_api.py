"""POST /api/v1/purchases, /simulate, returns and /events end to end: the partner's real
rules (created through the rules service) decide, the ledger posts, the response
explains. Only partner-owned rules are created here, so no other test's purchases are
affected."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from coalition import clock
from coalition.rules.service import create_rule, edit_rule, get_rule
from coalition.rules.validation import RuleSpec
from tests.helpers import new_key
from tests.test_lifecycle import assert_verified

NOW = clock.now() - timedelta(minutes=1)
LINES = [
    {"sku": "PAINT-10L", "category": "paint", "quantity": 2, "unit_price": 5000,
     "amount": 10000},
    {"sku": "BRUSH", "category": "tools", "quantity": 3, "unit_price": 5000, "amount": 15000},
]


def order(member: str, total: int = 25000, **extra) -> dict:
    return {"member": {"id": member}, "order_id": new_key(), "occurred_at": NOW.isoformat(),
            "total": total, "currency": "PLN", "channel": "store", "lines": LINES, **extra}


async def rules(app, partner, *specs: RuleSpec) -> list[uuid.UUID]:
    async with app.state.sessionmaker() as session:
        created = [await create_rule(session, partner.partner_id, spec.checked(), None)
                   for spec in specs]
        await session.commit()
    return [rule.id for rule in created]


BASE = RuleSpec("1 pt per 1 PLN", "per_amount", {"points": 1, "per": 100}, priority=10)


async def test_rules_decide_and_the_breakdown_explains(app, partner, db):
    base, bonus, paint, first = await rules(
        app, partner, BASE,
        RuleSpec("Above 200 PLN: +30", "threshold_bonus", {"above": 20000, "points": 30},
                 priority=20),
        RuleSpec("Paint x2", "product", {"categories": ["paint"], "mode": "multiplier",
                                         "multiplier": "2"}, priority=30),
        RuleSpec("Welcome", "first_purchase", {"points": 50}, priority=40))
    member = await partner.enroll()
    posted = await partner.post("/api/v1/purchases", order(member))
    assert posted.status_code == 201, posted.text
    body = posted.json()
    by_rule = {hit["rule_id"]: hit for hit in body["rules"]}
    assert by_rule[str(base)]["points"] == 250
    assert by_rule[str(bonus)]["points"] == 30
    assert by_rule[str(paint)]["points"] == 100  # the paint lines earn the rate twice
    assert by_rule[str(first)]["points"] == 50
    assert [hit["rule_id"] for hit in body["rules"]] == [str(base), str(bonus), str(paint),
                                                         str(first)]
    assert body["points"] == 430 and body["status"] == "active"
    assert body["balance"] == {"available": 430, "pending": 0}
    # The second purchase is not the first any more; the record keeps rule versions.
    second = (await partner.post("/api/v1/purchases", order(member))).json()
    assert second["points"] == 380
    assert any(s["rule_id"] == str(first) for s in second["skipped"])
    versions = await db.fetch("SELECT DISTINCT rule_id, rule_version FROM rule_hits"
                              " WHERE member_id = $1", uuid.UUID(member))
    assert {r["rule_version"] for r in versions} == {1}
    shown = (await partner.get(f"/api/v1/purchases/{body['order_id']}")).json()
    assert shown["points"] == 430 and len(shown["rules"]) == 4
    await assert_verified(db)


async def test_editing_a_rule_makes_a_new_version_that_later_postings_record(app, partner,
                                                                             db):
    (base,) = await rules(app, partner, BASE)
    member = await partner.enroll()
    await partner.post("/api/v1/purchases", order(member))
    async with app.state.sessionmaker() as session:
        rule = await get_rule(session, base, partner.partner_id)
        await edit_rule(session, rule, RuleSpec("2 pts per 1 PLN", "per_amount",
                                                {"points": 2, "per": 100},
                                                priority=10).checked(), None)
        await session.commit()
    again = (await partner.post("/api/v1/purchases", order(member))).json()
    assert again["points"] == 500 and again["rules"][0]["version"] == 2
    recorded = await db.fetch("SELECT rule_version FROM rule_hits WHERE rule_id = $1"
                              " ORDER BY id", base)
    assert [r["rule_version"] for r in recorded] == [1, 2]


async def test_simulation_matches_the_posting_and_posts_nothing(app, partner, db):
    await rules(app, partner, BASE, RuleSpec("Welcome", "first_purchase", {"points": 50}))
    member = await partner.enroll()
    basket = order(member)
    entries = await db.fetchval("SELECT count(*) FROM journal_entries")
    simulated = await partner.client.post("/api/v1/purchases/simulate", json=basket,
                                          headers=partner.auth)
    assert simulated.status_code == 200, simulated.text
    assert await db.fetchval("SELECT count(*) FROM journal_entries") == entries
    posted = (await partner.post("/api/v1/purchases", basket)).json()
    assert simulated.json()["points"] == posted["points"] == 300
    anonymous = {k: v for k, v in basket.items() if k not in ("member", "order_id")}
    assert (await partner.client.post("/api/v1/purchases/simulate", json=anonymous,
                                      headers=partner.auth)).json()["points"] == 300


async def test_points_stay_pending_for_the_return_window_and_returns_are_proportional(
        app, partner, db):
    await rules(app, partner, BASE)
    await db.execute("UPDATE partners SET pending_days = 14 WHERE id = $1", partner.partner_id)
    member = await partner.enroll()
    posted = (await partner.post("/api/v1/purchases", order(member, total=7000,
                                                            lines=[]))).json()
    assert (posted["status"], posted["points"]) == ("pending", 70)
    assert posted["available_at"] is not None
    half = await partner.post(f"/api/v1/purchases/{posted['order_id']}/returns",
                              {"amount": 3500})
    assert half.status_code == 201 and half.json()["points"] == 35
    assert half.json()["covered_by"]["pending"] == 35
    assert (await partner.balance(member))["pending"] == 35
    await assert_verified(db)


async def test_the_member_named_by_card_number_or_the_partners_customer_id(
        app, partner, other_partner, db):
    await rules(app, partner, BASE)
    customer = f"C-{uuid.uuid4().hex[:8]}"
    member = await partner.enroll(partner_customer_id=customer)
    card = (await partner.get(f"/api/v1/members/{member}")).json()["card_number"]
    for reference in ({"card_number": card}, {"customer_id": customer}):
        posted = await partner.post("/api/v1/purchases", {**order(member),
                                                          "member": reference})
        assert posted.status_code == 201, posted.text
        assert posted.json()["member_id"] == member
    # Another brand knows neither: the card is not linked to it, the id is not its own.
    for reference, field in (({"card_number": card}, "member.card_number"),
                             ({"customer_id": customer}, "member.customer_id")):
        refused = await other_partner.post("/api/v1/purchases", {**order(member),
                                                                 "member": reference})
        assert refused.status_code == 404 and refused.json()["field"] == field
    assert await db.fetchval("SELECT count(*) FROM purchases WHERE member_id = $1",
                             uuid.UUID(member)) == 2
    await assert_verified(db)


async def test_bad_purchases_are_refused_by_field_and_write_nothing(app, partner, db):
    await rules(app, partner, BASE)
    member = await partner.enroll()
    cases = [
        ({**order(member), "member": {"id": member, "card_number": "1"}}, 400, "member"),
        ({**order(member), "currency": "EUR"}, 422, "currency"),
        ({**order(member), "occurred_at": (NOW + timedelta(days=1)).isoformat()}, 422,
         "occurred_at"),
        ({**order(member), "occurred_at": "2026-01-01T10:00:00"}, 400, "occurred_at"),
        ({**order(member), "total": 10.5}, 400, None),
        ({**order(member), "channel": "fax"}, 400, None),
        ({**order(member), "member": {"id": str(uuid.uuid4())}}, 404, "member.id"),
        ({**order(member), "member": {"customer_id": "nobody"}}, 404, "member.customer_id"),
    ]
    for body, status, field in cases:
        response = await partner.post("/api/v1/purchases", body)
        assert response.status_code == status, (body, response.text)
        if field:
            assert response.json()["field"] == field
    first = order(member)
    assert (await partner.post("/api/v1/purchases", first)).status_code == 201
    duplicate = await partner.post("/api/v1/purchases", {**first, "total": 100})
    assert duplicate.status_code == 409 and duplicate.json()["field"] == "order_id"
    assert await db.fetchval("SELECT count(*) FROM purchases WHERE member_id = $1",
                             uuid.UUID(member)) == 1


async def test_a_moment_before_1970_is_refused_naming_occurred_at(app, partner, db):
    # Year 1 (found by tests/test_api_fuzz.py) was a 500: its day start in the coalition's
    # time zone falls before year 1 in UTC, which asyncpg cannot send.
    await rules(app, partner, BASE,
                RuleSpec("Webinar", "event", {"event_type": "webinar", "points": 20,
                                              "frequency": "unlimited"}))
    member = await partner.enroll()
    simulated = {k: v for k, v in order(member).items() if k not in ("member", "order_id")}
    for moment in ("0001-01-01T00:00:01Z", "0001-01-01T00:00:00+14:00",
                   "1969-12-31T23:59:59Z"):
        for path, body in (
                ("/api/v1/purchases", {**order(member), "occurred_at": moment}),
                ("/api/v1/purchases/simulate", {**simulated, "occurred_at": moment}),
                ("/api/v1/events", {"member": {"id": member}, "event_type": "webinar",
                                    "reference": new_key(), "occurred_at": moment})):
            response = await partner.post(path, body)
            assert response.status_code == 422, (path, moment, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["field"] == "occurred_at"
    assert (await partner.balance(member))["available"] == 0
    assert await db.fetchval("SELECT count(*) FROM purchases WHERE member_id = $1",
                             uuid.UUID(member)) == 0
    oldest = await partner.post("/api/v1/events", {
        "member": {"id": member}, "event_type": "webinar", "reference": new_key(),
        "occurred_at": "1970-01-01T00:00:00Z"})
    assert oldest.status_code == 201, oldest.text


async def test_campaign_budget_and_daily_cap_hold_under_concurrency(app, partner, db):
    await rules(app, partner,
                RuleSpec("Budgeted", "per_amount", {"points": 1, "per": 100}, budget=400),
                RuleSpec("Capped bonus", "threshold_bonus", {"above": 0, "points": 30},
                         per_member_day_cap=50))
    members = [await partner.enroll() for _ in range(2)]
    responses = await asyncio.gather(*(partner.post("/api/v1/purchases",
                                                    order(members[n % 2], total=15000))
                                       for n in range(6)))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    hits = await db.fetch(
        "SELECT h.member_id, r.name, sum(h.points) AS points FROM rule_hits h"
        " JOIN earning_rules r ON r.id = h.rule_id WHERE h.partner_id = $1"
        " GROUP BY h.member_id, r.name", partner.partner_id)
    budgeted = sum(r["points"] for r in hits if r["name"] == "Budgeted")
    assert budgeted == 400  # 6 x 150 asked, the budget gave 400 and no more
    assert all(r["points"] <= 50 for r in hits if r["name"] == "Capped bonus")
    await assert_verified(db)


async def test_a_return_gives_back_the_cap_and_the_budget_it_used(app, partner, db):
    budgeted, capped = await rules(
        app, partner,
        RuleSpec("Budgeted", "per_amount", {"points": 1, "per": 100}, budget=1000),
        RuleSpec("Capped bonus", "threshold_bonus", {"above": 0, "points": 30},
                 per_member_day_cap=30))
    member = await partner.enroll()

    async def buy() -> dict:
        response = await partner.post("/api/v1/purchases", order(member))
        assert response.status_code == 201, response.text
        return {hit["rule_id"]: hit["points"] for hit in response.json()["rules"]} | {
            "order_id": response.json()["order_id"]}

    async def budget_used() -> int:
        return await db.fetchval("SELECT budget_used FROM earning_rules WHERE id = $1",
                                 budgeted)

    first = await buy()
    assert (first[str(budgeted)], first[str(capped)]) == (250, 30)
    assert str(capped) not in await buy()          # today's cap is used up
    assert await budget_used() == 500
    half = await partner.post(f"/api/v1/purchases/{first['order_id']}/returns",
                              {"amount": 12500})
    assert half.status_code == 201 and half.json()["points"] == 140
    assert await budget_used() == 500 - 125
    third = await buy()
    assert third[str(capped)] == 15                 # half of the first one's bonus is back
    rest = await partner.post(f"/api/v1/purchases/{first['order_id']}/returns", {})
    assert rest.status_code == 201 and rest.json()["points"] == 140
    assert await budget_used() == 500 - 125 + 250 - 125
    assert (await buy())[str(capped)] == 15         # the rest of the first one's bonus
    released = await db.fetch("SELECT rule_id, points FROM rule_hits WHERE member_id = $1"
                              " AND points < 0", uuid.UUID(member))
    assert sorted((str(r["rule_id"]), r["points"]) for r in released) == sorted(
        [(str(budgeted), -125), (str(capped), -15)] * 2)
    await assert_verified(db)


async def test_events_earn_once_per_reference_within_frequency_limits(app, partner, db):
    await rules(app, partner,
                RuleSpec("Webinar", "event", {"event_type": "webinar", "points": 20,
                                              "frequency": "unlimited"}),
                RuleSpec("Sign-up", "event", {"event_type": "signup", "points": 50,
                                              "frequency": "once"}))
    member = await partner.enroll()

    async def event(kind: str, reference: str):
        return await partner.post("/api/v1/events", {"member": {"id": member},
                                                     "event_type": kind,
                                                     "reference": reference})

    assert (await event("webinar", "W-1")).json()["points"] == 20
    assert (await event("webinar", "W-1")).status_code == 409
    assert (await event("webinar", "W-2")).json()["points"] == 20
    assert (await event("signup", "S-1")).json()["points"] == 50
    again = (await event("signup", "S-2")).json()
    assert again["points"] == 0 and again["skipped"][0]["code"] == "frequency"
    assert (await partner.balance(member))["available"] == 90
    await assert_verified(db)


async def test_the_referrer_earns_at_the_referees_first_purchase_only(app, partner, db):
    await rules(app, partner, BASE, RuleSpec("Refer a friend", "referral", {"points": 100}))
    referrer = await partner.enroll()
    card = (await partner.get(f"/api/v1/members/{referrer}")).json()["card_number"]
    unknown = await partner.post("/api/v1/members", {"email": f"{new_key()}@example.com",
                                                     "referrer_card_number": "0000"})
    assert unknown.status_code == 422 and unknown.json()["field"] == "referrer_card_number"
    referee = await partner.enroll(referrer_card_number=card)
    first = (await partner.post("/api/v1/purchases", order(referee))).json()
    assert first["referral_bonus"]["points"] == 100
    await partner.post("/api/v1/purchases", order(referee))
    assert (await partner.balance(referrer))["available"] == 100
    await assert_verified(db)
