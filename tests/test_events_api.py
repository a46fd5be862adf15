"""POST /api/v1/events under the limits of its rules, as purchases are: the per-member
day and month caps (usage read under the member's wallet lock), the campaign budget
(taken under the rule's row lock, exact when events of different members race), and
one reference posted several times at once. Partner-owned rules only, dated in a past
month no other test posts events in."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from coalition.rules.validation import RuleSpec
from tests.test_lifecycle import assert_verified
from tests.test_purchases_api import rules

WARSAW = ZoneInfo("Europe/Warsaw")  # the coalition's time zone
MARCH_10 = datetime(2026, 3, 10, 9, 0, tzinfo=WARSAW)


def webinar(points: int = 30, **limits) -> RuleSpec:
    return RuleSpec("Webinar", "event", {"event_type": "webinar", "points": points,
                                         "frequency": "unlimited"}, **limits)


async def attend(partner, member: str, at: datetime, reference: str | None = None):
    return await partner.post("/api/v1/events", {
        "member": {"id": member}, "event_type": "webinar",
        "reference": reference or uuid.uuid4().hex, "occurred_at": at.isoformat()})


async def earned(partner, member: str, at: datetime) -> dict:
    response = await attend(partner, member, at)
    assert response.status_code == 201, response.text
    return response.json()


async def test_per_member_day_and_month_caps_lower_then_skip_an_event_rule(app, partner, db):
    rule_id, = await rules(app, partner, webinar(per_member_day_cap=40,
                                                 per_member_month_cap=60))
    member, other = await partner.enroll(), await partner.enroll()

    first = await earned(partner, member, MARCH_10)
    assert first["points"] == 30 and first["rules"][0]["capped_by"] is None
    second = (await earned(partner, member, MARCH_10 + timedelta(hours=3)))["rules"][0]
    assert (second["points"], second["capped_by"]) == (10, "per_member_day")
    assert second["explanation"] == ("webinar: +30 pts; capped at 10 pts by the per member"
                                     " day cap of 40 pts (30 pts already today)")
    third = await earned(partner, member, MARCH_10 + timedelta(hours=5))
    assert third["points"] == 0 and third["entry_id"] is None and third["rules"] == []
    assert third["skipped"][0]["code"] == "cap"
    assert "per member day cap of 40 pts" in third["skipped"][0]["reason"]

    next_day = (await earned(partner, member, MARCH_10 + timedelta(days=1)))["rules"][0]
    assert (next_day["points"], next_day["capped_by"]) == (20, "per_member_month")
    assert next_day["explanation"].endswith(
        "capped at 20 pts by the per member month cap of 60 pts (40 pts already this month)")
    later = await earned(partner, member, MARCH_10 + timedelta(days=2))
    assert later["points"] == 0 and later["skipped"][0]["code"] == "cap"
    assert "per member month cap of 60 pts (60 pts already this month)" in \
        later["skipped"][0]["reason"]

    # The caps are the member's: another member, or the next month, earns in full.
    assert (await earned(partner, other, MARCH_10))["points"] == 30
    assert (await earned(partner, member, MARCH_10 + timedelta(days=25)))["points"] == 30
    assert (await partner.balance(member))["available"] == 30 + 10 + 20 + 30
    hits = await db.fetchval("SELECT sum(points) FROM rule_hits WHERE rule_id = $1"
                             " AND member_id = $2", rule_id, uuid.UUID(member))
    assert hits == 90
    await assert_verified(db)


async def budget_used(db, rule_id: uuid.UUID) -> int:
    return await db.fetchval("SELECT budget_used FROM earning_rules WHERE id = $1", rule_id)


async def test_an_event_rules_budget_is_used_up_and_its_last_hit_trimmed(app, partner, db):
    rule_id, = await rules(app, partner, webinar(budget=70))
    members = [await partner.enroll() for _ in range(4)]
    answers = [await earned(partner, member, MARCH_10) for member in members]
    assert [a["points"] for a in answers] == [30, 30, 10, 0]
    trimmed = answers[2]["rules"][0]
    assert trimmed["capped_by"] == "budget"
    assert trimmed["explanation"] == ("webinar: +30 pts; capped at 10 pts by the campaign"
                                      " budget (10 pts left of 70 pts)")
    assert "budget" not in answers[0]["rules"][0]  # the posting's flag stays internal
    assert answers[3]["skipped"][0]["code"] == "budget"
    assert await budget_used(db, rule_id) == 70
    await assert_verified(db)


async def test_an_event_rules_budget_holds_when_members_post_at_once(app, partner, db):
    rule_id, = await rules(app, partner, webinar(budget=100))
    members = [await partner.enroll() for _ in range(8)]
    answers = await asyncio.gather(*(attend(partner, member, MARCH_10) for member in members))
    assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
    bodies = [a.json() for a in answers]
    assert sorted(b["points"] for b in bodies) == [0] * 4 + [10, 30, 30, 30]
    for body in bodies:
        if 0 < body["points"] < 30 or (body["rules"] and body["points"] == 0):
            # Trimmed by the engine, or by the posting when the budget ran out meanwhile.
            assert body["rules"][0]["capped_by"] == "budget", body
    assert await budget_used(db, rule_id) == 100
    assert await db.fetchval("SELECT sum(points) FROM rule_hits WHERE rule_id = $1",
                             rule_id) == 100
    assert sum([(await partner.balance(m))["available"] for m in members]) == 100
    await assert_verified(db)


async def test_one_reference_posted_at_once_is_recorded_once(app, partner, db):
    await rules(app, partner, webinar())
    for round_ in range(3):
        member = await partner.enroll()
        reference = f"W-{round_}"
        answers = await asyncio.gather(*(attend(partner, member, MARCH_10, reference)
                                         for _ in range(4)))
        assert sorted(a.status_code for a in answers) == [201, 409, 409, 409], \
            [a.text for a in answers]
        later = await attend(partner, member, MARCH_10, reference)
        problems = [a.json() for a in answers if a.status_code == 409]
        assert all(problem == later.json() for problem in problems)
        assert later.json()["type"] == "/problems/event-already-recorded"
        assert later.json()["field"] == "reference"
        rows = await db.fetch("SELECT entry_id FROM member_events WHERE member_id = $1",
                              uuid.UUID(member))
        assert len(rows) == 1
        assert await db.fetchval("SELECT count(*) FROM journal_entries WHERE member_id = $1",
                                 uuid.UUID(member)) == 1
        assert (await partner.balance(member))["available"] == 30
    await assert_verified(db)

