"""Member-get-member referrals (coalition/referrals.py): codes, the /join link, binding
through the portal and the enrolment API, the bonuses on the referee's first qualifying
purchase (exactly once, both funding sides, the referrer's monthly limit under
concurrency), the rules console form and the referral figures. Partner-owned rules,
except one coalition rule active only in a past two-hour window no other test posts in."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from coalition import clock, earning, referrals
from coalition.earning.evaluation import periods
from coalition.earning.posting import (
    Decision,
    MemberRef,
    Order,
    commit_purchase,
    read_facts,
)
from coalition.rules.engine import RuleVersion, Shopper, describe, referral_bonus
from coalition.rules.service import archive_rule, create_rule, get_rule
from coalition.rules.validation import RuleSpec
from coalition.settings import coalition_settings
from coalition.tiers import load_program
from coalition.uow import Actor, Tx
from tenants.accounts import create_user
from tests.helpers import new_key, new_partner
from tests.portal import Browser, csrf_of, owner_browser, submit
from tests.test_lifecycle import assert_verified
from tests.test_purchases_api import BASE, order, rules
from tests.test_rules_console import create, operator_browser

CODE = re.compile(r"^[2-9A-HJKMNP-Z]{8}$")


def email() -> str:
    return f"mgm-{uuid.uuid4().hex[:10]}@example.com"


async def member_browser(app, member_id: str, address: str) -> Browser:
    async with app.state.sessionmaker() as session:
        await create_user(session, address, "member", password="member secret 12",
                          member_id=uuid.UUID(member_id), verified=True)
        await session.commit()
    browser = Browser(app)
    login = await submit(browser, "/login", "/login", email=address, password="member secret 12")
    assert login.status_code == 302
    return browser


async def staff_browser(app, partner_id: uuid.UUID) -> Browser:
    address = f"owner-{uuid.uuid4().hex[:8]}@brand.example"
    async with app.state.sessionmaker() as session:
        await create_user(session, address, "partner_staff", partner_id=partner_id,
                          role="owner", password="staff secret 12", verified=True)
        await session.commit()
    browser = Browser(app)
    assert (await submit(browser, "/login", "/login", email=address,
                         password="staff secret 12")).status_code == 302
    return browser


async def code_of(db, member: str) -> str:
    async with db.acquire() as conn:
        return await referrals.ensure_code(conn, uuid.UUID(member))


async def referral(db, referee: str):
    return await db.fetchrow("SELECT * FROM member_referrals WHERE referee_id = $1",
                             uuid.UUID(referee))


# --- codes ------------------------------------------------------------------------------

async def test_codes_are_drawn_once_unique_and_unambiguous(partner, db):
    members = [await partner.enroll() for _ in range(30)]
    codes = [await code_of(db, m) for m in members]
    assert all(CODE.match(c) for c in codes) and len(set(codes)) == len(codes)
    assert not set("01OIL") & set("".join(codes))
    # Stable, and concurrent first draws agree.
    assert [await code_of(db, m) for m in members[:5]] == codes[:5]
    fresh = await partner.enroll()
    drawn = await asyncio.gather(*(code_of(db, fresh) for _ in range(6)))
    assert len(set(drawn)) == 1
    assert referrals.normalized(f" {drawn[0][:4].lower()}-{drawn[0][4:]} ") == drawn[0]
    assert referrals.normalized("0OIL1234") is None and referrals.normalized("ABC") is None
    # The database refuses a code outside the alphabet, and a second holder of a code.
    with pytest.raises(asyncpg.CheckViolationError, match="ck_members_referral_code"):
        await db.execute("UPDATE members SET referral_code = 'ABCDEFG0' WHERE id = $1",
                         uuid.UUID(fresh))
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute("UPDATE members SET referral_code = $2 WHERE id = $1",
                         uuid.UUID(fresh), codes[0])


# --- binding ----------------------------------------------------------------------------

async def test_the_join_link_prefills_sign_up_and_binds_the_new_member(app, partner, db):
    referrer_email = email()
    referrer = await partner.enroll(email=referrer_email)
    async with await member_browser(app, referrer, referrer_email) as home_browser:
        home = await home_browser.get("/member")
    code = re.search(r'id="referral-code">([^<]+)<', home.text).group(1)
    assert CODE.match(code) and f"/join/{code}" in home.text
    assert await code_of(db, referrer) == code

    async with Browser(app) as visitor:
        landing = await visitor.get(f"/join/{code.lower()}")
        assert landing.status_code == 200 and 'id="referral-notice"' in landing.text
        assert f'name="referral_code" id="referral_code" value="{code}"' in landing.text
        referee_email = email()
        signed_up = await visitor.post("/register", data={
            "_csrf_token": csrf_of(landing), "email": referee_email, "name": "Friend",
            "password": "friend secret 12", "referral_code": code})
        assert signed_up.status_code == 200 and "Check your email" in signed_up.text
    referee = await db.fetchval("SELECT id FROM members WHERE email = $1", referee_email)
    bound = await referral(db, str(referee))
    assert bound["referrer_id"] == uuid.UUID(referrer) and bound["partner_id"] is None
    assert bound["qualified_at"] is None

    async with Browser(app) as visitor:
        # An unknown code: the sign-up page all the same, gently, binding nothing.
        unknown = await visitor.get("/join/ZZZZZZZZ")
        assert unknown.status_code == 200 and 'id="referral-invalid"' in unknown.text
        assert (await visitor.get("/join/not-a-code!")).status_code == 200
        # A mistyped code on the form is named; nothing is created.
        typo_email = email()
        typo = await submit(visitor, "/register", "/register", email=typo_email,
                            password="friend secret 12", referral_code="ZZZZZZZZ")
        assert typo.status_code == 400 and 'id="referral_code-error"' in typo.text
        assert await db.fetchval("SELECT count(*) FROM members WHERE email = $1",
                                 typo_email) == 0
        # A member the shop enrolled earlier signs up with a code: never re-bound.
        existing_email = email()
        existing = await partner.enroll(email=existing_email)
        joined = await submit(visitor, f"/join/{code}", "/register", email=existing_email,
                              password="friend secret 12", referral_code=code)
        assert joined.status_code == 200
        assert await referral(db, existing) is None


async def test_enrolment_api_binds_by_code_or_card_and_names_the_bad_field(partner, db):
    referrer = await partner.enroll()
    other = await partner.enroll()
    code, other_code = await code_of(db, referrer), await code_of(db, other)
    card = (await partner.get(f"/api/v1/members/{referrer}")).json()["card_number"]

    by_code = await partner.enroll(referral_code=code.lower())
    assert (await referral(db, by_code))["referrer_id"] == uuid.UUID(referrer)
    both = await partner.enroll(referral_code=code, referrer_card_number=card)
    assert (await referral(db, both))["referrer_id"] == uuid.UUID(referrer)

    for fields, field in (({"referral_code": "ZZZZZZZZ"}, "referral_code"),
                          ({"referral_code": "bad"}, "referral_code"),
                          ({"referral_code": other_code, "referrer_card_number": card},
                           "referral_code"),
                          ({"referrer_card_number": "0000"}, "referrer_card_number")):
        address = email()
        refused = await partner.post("/api/v1/members", {"email": address, **fields})
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == field
        assert await db.fetchval("SELECT count(*) FROM members WHERE email = $1", address) == 0
    # An existing member is linked again, never re-bound.
    again = await partner.post("/api/v1/members", {
        "email": await db.fetchval("SELECT email FROM members WHERE id = $1",
                                   uuid.UUID(by_code)), "referral_code": other_code})
    assert again.status_code == 200
    assert (await referral(db, by_code))["referrer_id"] == uuid.UUID(referrer)


# --- bonuses ----------------------------------------------------------------------------

MGM = RuleSpec("Refer a friend", "referral",
               {"points": 100, "welcome_points": 40, "min_amount": 10_000})


async def test_bonuses_post_once_on_the_first_qualifying_purchase(app, partner, db):
    _, rule_id = await rules(app, partner, BASE, MGM)
    referrer = await partner.enroll()
    referee = await partner.enroll(referral_code=await code_of(db, referrer))

    small = (await partner.post("/api/v1/purchases", order(referee, total=5_000))).json()
    assert small["points"] == 50 and small["referral_bonus"] is None
    why = [s for s in small["skipped"] if s["type"] == "referral"]
    assert why and "below the referral minimum of 100.00 PLN" in why[0]["reason"]
    assert (await referral(db, referee))["qualified_at"] is None

    qualifying = (await partner.post("/api/v1/purchases", order(referee, total=20_000))).json()
    bonus = qualifying["referral_bonus"]
    assert (bonus["points"], bonus["welcome_points"], bonus["funding"]) == (100, 40, "partner")
    assert bonus["rule_id"] == str(rule_id) and bonus["version"] == 1
    assert qualifying["points"] == 200 and qualifying["balance"]["available"] == 50 + 200 + 40

    shown = (await partner.get(f"/api/v1/purchases/{qualifying['order_id']}")).json()
    assert shown["referral_bonus"] == bonus

    later = (await partner.post("/api/v1/purchases", order(referee, total=30_000))).json()
    assert later["referral_bonus"] is None
    assert (await partner.balance(referrer))["available"] == 100
    assert (await partner.balance(referee))["available"] == 50 + 200 + 40 + 300

    closed = await referral(db, referee)
    assert closed["outcome"] == "rewarded" and closed["purchase_id"] == qualifying["id"]
    hits = await db.fetch("SELECT member_id, points, rule_version, funding, entry_id"
                          " FROM rule_hits WHERE rule_id = $1 ORDER BY points", rule_id)
    assert [(h["member_id"], h["points"], h["rule_version"], h["funding"]) for h in hits] == [
        (uuid.UUID(referee), 40, 1, "partner"), (uuid.UUID(referrer), 100, 1, "partner")]
    assert {h["entry_id"] for h in hits} == {closed["rewarded_entry_id"],
                                             closed["welcome_entry_id"]}
    # Partner-funded: the partner's entries and lots, its issuance account pays.
    lots = await db.fetch("SELECT l.partner_id, l.funding, l.points, e.partner_id AS issuer"
                          " FROM lots l JOIN journal_entries e ON e.id = l.entry_id"
                          " WHERE l.entry_id = ANY($1::bigint[])",
                          [closed["rewarded_entry_id"], closed["welcome_entry_id"]])
    assert sorted((r["partner_id"], r["funding"], r["points"], r["issuer"]) for r in lots) == [
        (partner.partner_id, "partner", 40, partner.partner_id),
        (partner.partner_id, "partner", 100, partner.partner_id)]
    await assert_verified(db)


async def test_concurrent_duplicate_purchases_pay_the_bonuses_once(app, partner, db):
    await rules(app, partner, BASE, MGM)
    referrer = await partner.enroll()
    referee = await partner.enroll(referral_code=await code_of(db, referrer))
    posted = await asyncio.gather(*(partner.post("/api/v1/purchases",
                                                 order(referee, total=15_000))
                                    for _ in range(8)))
    assert [r.status_code for r in posted] == [201] * 8
    paid = [r.json()["referral_bonus"] for r in posted if r.json()["referral_bonus"]]
    assert len(paid) == 1 and paid[0]["points"] == 100
    assert (await partner.balance(referrer))["available"] == 100
    assert (await partner.balance(referee))["available"] == 8 * 150 + 40
    await assert_verified(db)


async def test_the_fast_path_sees_a_closed_referral_and_the_locked_path_decides(
        app, partner, db):
    _, rule_id = await rules(app, partner, BASE, MGM)
    referrer = await partner.enroll()
    referee = await partner.enroll(referral_code=await code_of(db, referrer))
    ref = MemberRef(id=uuid.UUID(referee))
    async with db.acquire() as conn:
        settings = await coalition_settings(conn)
        day, month, _ = periods(clock.now(), settings.timezone)
        facts = await read_facts(conn, partner_id=partner.partner_id, member=ref,
                                 capped_rules=[], day_start=day, month_start=month,
                                 tiers=await load_program(conn), at=clock.now())
    assert facts is not None and facts.referrer == uuid.UUID(referrer)
    # The qualifying purchase posts between the read and the commit.
    first = (await partner.post("/api/v1/purchases", order(referee, total=20_000))).json()
    assert first["referral_bonus"]["points"] == 100
    stale = Order(order_id=new_key(), occurred_at=clock.now() - timedelta(minutes=1),
                  currency="PLN", total=20_000, channel="store", store_id=None, lines=[])
    referral = {"rule_id": str(rule_id), "version": 1, "name": "Refer a friend",
                "funding": "partner", "points": 100, "welcome_points": 40,
                "monthly_limit": None, "explanation": "stale"}
    key = new_key()
    async with db.acquire() as conn:
        result = await commit_purchase(
            conn, partner_id=partner.partner_id, actor="test", member=ref, order=stale,
            situation=facts, decision=Decision([], [], referral), capped_rules=[],
            day_start=day, month_start=month, idempotency_key=key, request_hash=key,
            tier=None)
        assert result is None
        assert await conn.fetchval("SELECT count(*) FROM purchases WHERE order_id = $1",
                                   stale.order_id) == 0
        # The whole path: decided afresh under the lock, no second bonus.
        posted = await earning.purchase(
            Tx(conn, partner.partner_id, Actor("test"), in_transaction=False), member=ref,
            order=stale, idempotency_key=key, request_hash=key)
    assert posted.status == 201 and json.loads(posted.body)["referral_bonus"] is None
    assert (await partner.balance(referrer))["available"] == 100
    await assert_verified(db)


def month_start(now: datetime) -> datetime:
    local = now.astimezone(ZoneInfo("Europe/Warsaw"))
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def test_the_monthly_limit_holds_under_concurrency(app, partner, db):
    await rules(app, partner, BASE, RuleSpec("Refer a friend", "referral", {
        "points": 10, "welcome_points": 5, "monthly_limit": 2}))
    referrer = await partner.enroll()
    code = await code_of(db, referrer)
    referees = [await partner.enroll(referral_code=code) for _ in range(7)]
    last_month = (month_start(clock.now()) - timedelta(days=10)).isoformat()

    async def buy(referee: str, at: str | None = None):
        body = order(referee, total=1_000)
        if at:
            body["occurred_at"] = at
        response = await partner.post("/api/v1/purchases", body)
        assert response.status_code == 201, response.text
        return response.json()["referral_bonus"]

    earlier = await asyncio.gather(*(buy(r, last_month) for r in referees[:3]))
    now = await asyncio.gather(*(buy(r) for r in referees[3:]))
    for month in (earlier, now):
        assert sorted(b["points"] for b in month) == [0] * (len(month) - 2) + [10, 10]
        assert all(b["welcome_points"] == 5 for b in month)
        assert [b["capped_by"] for b in month if b["points"] == 0] == \
            ["monthly_limit"] * (len(month) - 2)
    assert (await partner.balance(referrer))["available"] == 4 * 10
    outcomes = await db.fetch("SELECT outcome, count(*) FROM member_referrals"
                              " WHERE referrer_id = $1 GROUP BY outcome", uuid.UUID(referrer))
    assert dict((r["outcome"], r["count"]) for r in outcomes) == {"rewarded": 4, "limit": 3}
    # A closed referral stays closed: the next purchase pays nobody.
    assert await buy(referees[-1]) is None
    await assert_verified(db)



async def test_the_referrers_day_cap_holds_when_referees_qualify_at_once(app, partner, db):
    rule_id = (await rules(app, partner, BASE, RuleSpec(
        "Refer a friend", "referral", {"points": 10, "welcome_points": 5},
        per_member_day_cap=25)))[1]
    referrer = await partner.enroll()
    code = await code_of(db, referrer)
    referees = [await partner.enroll(referral_code=code) for _ in range(5)]
    posted = await asyncio.gather(*(partner.post("/api/v1/purchases", order(r, total=1_000))
                                    for r in referees))
    assert [p.status_code for p in posted] == [201] * 5, [p.text for p in posted]
    bodies = [p.json() for p in posted]
    paid = sorted((b["referral_bonus"] for b in bodies if b["referral_bonus"]),
                  key=lambda bonus: bonus["points"])
    assert [(b["points"], b["welcome_points"], b["capped_by"]) for b in paid] == [
        (5, 5, "per_member_day"), (10, 5, None), (10, 5, None)]
    assert paid[0]["explanation"].endswith(
        "capped at 5 pts by the per member day cap of 25 pts (20 pts already today)")
    # With the cap used up the rule does not apply: those referrals stay open.
    unpaid = [b for b in bodies if b["referral_bonus"] is None]
    assert [s["code"] for b in unpaid for s in b["skipped"] if s["type"] == "referral"] \
        == ["cap", "cap"]
    assert [(await referral(db, b["member_id"]))["qualified_at"] for b in unpaid] == [None] * 2
    assert (await partner.balance(referrer))["available"] == 25
    # Another day's cap is fresh: the open referrals qualify then.
    yesterday = order(unpaid[0]["member_id"], total=1_000)
    yesterday["occurred_at"] = (datetime.fromisoformat(yesterday["occurred_at"])
                                - timedelta(days=1)).isoformat()
    later = (await partner.post("/api/v1/purchases", yesterday)).json()["referral_bonus"]
    assert (later["points"], later["capped_by"]) == (10, None)
    assert await db.fetchval("SELECT sum(points) FROM rule_hits WHERE rule_id = $1"
                             " AND member_id = $2", rule_id, uuid.UUID(referrer)) == 35
    await assert_verified(db)


async def budget_used(db, rule_id: uuid.UUID) -> int:
    return await db.fetchval("SELECT budget_used FROM earning_rules WHERE id = $1", rule_id)


async def refer(partner, db) -> str:
    """A new referee of a new referrer."""
    return await partner.enroll(referral_code=await code_of(db, await partner.enroll()))


async def test_a_referral_rules_budget_pays_the_referrer_then_the_welcome(app, partner, db):
    rule_id = (await rules(app, partner, BASE, RuleSpec(
        "Refer a friend", "referral", {"points": 10, "welcome_points": 5}, budget=40)))[1]
    referees = [await refer(partner, db) for _ in range(4)]
    bodies = [(await partner.post("/api/v1/purchases", order(r, total=1_000))).json()
              for r in referees]
    bonuses = [b["referral_bonus"] for b in bodies]
    assert [(b["points"], b["welcome_points"], b["capped_by"]) for b in bonuses[:3]] == [
        (10, 5, None), (10, 5, None), (10, 0, "budget")]
    assert bonuses[2]["explanation"].endswith(
        "(campaign budget left only 10 points: 10 to the referrer, 0 welcome bonus)")
    assert await budget_used(db, rule_id) == 40
    # The campaign is spent: the rule no longer applies, and the referral stays open.
    assert bonuses[3] is None
    assert [s["code"] for s in bodies[3]["skipped"] if s["type"] == "referral"] == ["budget"]
    assert (await referral(db, referees[3]))["qualified_at"] is None
    assert await db.fetchval("SELECT sum(points) FROM rule_hits WHERE rule_id = $1",
                             rule_id) == 40
    await assert_verified(db)


async def test_a_referral_rules_budget_holds_when_referees_qualify_at_once(app, partner, db):
    rule_id = (await rules(app, partner, BASE, RuleSpec(
        "Refer a friend", "referral", {"points": 10, "welcome_points": 5}, budget=50)))[1]
    referees = [await refer(partner, db) for _ in range(6)]
    posted = await asyncio.gather(*(partner.post("/api/v1/purchases", order(r, total=1_000))
                                    for r in referees))
    assert [p.status_code for p in posted] == [201] * 6, [p.text for p in posted]
    paid = [b for b in (p.json()["referral_bonus"] for p in posted) if b]
    assert sum(b["points"] + b["welcome_points"] for b in paid) == 50
    assert sorted(b["points"] + b["welcome_points"] for b in paid if b["points"]) == \
        [5, 15, 15, 15]
    for bonus in paid:
        if bonus["points"] + bonus["welcome_points"] < 15:
            assert bonus["capped_by"] == "budget", bonus
    # A referral decided before the budget ran out and posted after closes unpaid.
    closed = await db.fetch("SELECT outcome, rewarded_entry_id FROM member_referrals"
                            " WHERE referee_id = ANY($1::uuid[]) AND qualified_at IS NOT NULL",
                            [uuid.UUID(r) for r in referees])
    assert len(closed) == len(paid)
    assert all(r["outcome"] == ("rewarded" if r["rewarded_entry_id"] else "limit")
               for r in closed)
    assert await budget_used(db, rule_id) == 50
    assert await db.fetchval("SELECT sum(points) FROM rule_hits WHERE rule_id = $1",
                             rule_id) == 50
    await assert_verified(db)

async def test_a_coalition_funded_rule_pays_from_the_operator(app, partner, db):
    # Active only in a past window of its own, so no other test's purchase meets it.
    start = clock.now().replace(microsecond=0) - timedelta(hours=5)
    async with app.state.sessionmaker() as session:
        rule = await create_rule(session, None, RuleSpec(
            "Coalition referral", "referral", {"points": 70, "welcome_points": 30},
            funding="coalition", starts_at=start, ends_at=start + timedelta(hours=2)
        ).checked(), None)
        await session.commit()
    try:
        await rules(app, partner, BASE)
        referrer = await partner.enroll()
        referee = await partner.enroll(referral_code=await code_of(db, referrer))
        body = order(referee, total=5_000)
        body["occurred_at"] = (start + timedelta(hours=1)).isoformat()
        bonus = (await partner.post("/api/v1/purchases", body)).json()["referral_bonus"]
        assert (bonus["points"], bonus["welcome_points"], bonus["funding"]) == (
            70, 30, "coalition")
        closed = await referral(db, referee)
        rows = await db.fetch(
            "SELECT e.partner_id, l.partner_id AS lot_partner, l.funding, l.points, a.kind"
            " FROM journal_entries e JOIN lots l ON l.entry_id = e.id"
            " JOIN postings p ON p.entry_id = e.id AND p.amount < 0"
            " JOIN accounts a ON a.id = p.account_id WHERE e.id = ANY($1::bigint[])",
            [closed["rewarded_entry_id"], closed["welcome_entry_id"]])
        assert sorted(tuple(r) for r in rows) == [
            (None, None, "coalition", 30, "operator_promotions"),
            (None, None, "coalition", 70, "operator_promotions")]
        assert (await partner.balance(referrer))["available"] == 70
        await assert_verified(db)
    finally:
        async with app.state.sessionmaker() as session:
            await archive_rule(session, await get_rule(session, rule.id, None),
                               clock.now())
            await session.commit()


def test_the_engine_applies_the_minimum_and_describes_the_rule():
    rule = RuleVersion(uuid.uuid4(), 1, None, "MGM", "referral",
                       {"points": 100, "welcome_points": 50, "min_amount": 5_000,
                        "monthly_limit": 3})
    shopper = Shopper(None, frozenset(), False)
    at = datetime(2026, 3, 1, tzinfo=UTC)
    below = referral_bonus([rule], at, shopper, budget_left={}, total=4_999)
    assert not below.hits and below.skipped[0].code == "condition"
    met = referral_bonus([rule], at, shopper, budget_left={}, total=5_000)
    assert met.hits[0].points == 100 and "+50 pts welcome bonus" in met.hits[0].explanation
    foreign = referral_bonus([rule], at, shopper, budget_left={}, total=90_000,
                             currency="EUR", coalition_currency="PLN")
    assert not foreign.hits
    assert describe(rule) == ("+100 pts to the referrer, +50 pts to the new member, on a first"
                              " purchase from 50.00 PLN, at most 3 a month per referrer")


# --- console and figures -----------------------------------------------------------------

async def test_the_rules_console_edits_referral_parameters(app, client, db):
    browser, partner_id = await owner_browser(app, client, name=f"MGM Console {new_key()[:6]}")
    async with browser:
        fields = {"name": "Bring a friend", "type": "referral", "points": "100",
                  "welcome_points": "50", "min_amount": "80.50", "monthly_limit": "5",
                  "priority": "100", "funding": "partner"}
        bad = await submit(browser, "/partner/rules/new", "/partner/rules",
                           **{**fields, "monthly_limit": "0"})
        assert bad.status_code == 422 and 'id="error-monthly_limit"' in bad.text
        bad = await submit(browser, "/partner/rules/new", "/partner/rules",
                           **{**fields, "welcome_points": "-3"})
        assert bad.status_code == 422 and 'id="error-welcome_points"' in bad.text
        rule_id = await create(browser, **fields)
        shown = await browser.get(f"/partner/rules/{rule_id}")
        assert 'value="80.50"' in shown.text and 'name="monthly_limit" value="5"' in shown.text
        bare = await create(browser, **{**fields, "name": "Plain", "welcome_points": "",
                                        "min_amount": "", "monthly_limit": ""})
    params = await db.fetch("SELECT r.id, v.params FROM earning_rules r JOIN"
                            " earning_rule_versions v ON v.rule_id = r.id"
                            " WHERE r.partner_id = $1", partner_id)
    by_id = {str(r["id"]): r["params"] for r in params}
    assert json.loads(by_id[rule_id]) == {"points": 100, "welcome_points": 50,
                                          "min_amount": 8050, "monthly_limit": 5}
    assert json.loads(by_id[bare]) == {"points": 100}


async def test_referral_figures_for_the_operator_and_each_partner_alone(app, client, db):
    alpha = await new_partner(client, "Alpha MGM")
    beta = await new_partner(client, "Beta MGM")
    await rules(app, alpha, BASE, MGM)
    referrer = await alpha.enroll()
    code = await code_of(db, referrer)
    referees = [await alpha.enroll(referral_code=code) for _ in range(2)]
    for _ in range(2):
        await alpha.enroll()
    await alpha.post("/api/v1/purchases", order(referees[0], total=20_000))
    # Beta links one of Alpha's referred members: a referred new member of Beta's too.
    shared = await db.fetchval("SELECT email FROM members WHERE id = $1",
                               uuid.UUID(referees[1]))
    await beta.enroll(email=shared)
    await beta.enroll()

    def row(html: str, label: str) -> list[str]:
        table = html[html.index('id="referral-figures"'):]
        cells = re.search(rf"<tr><td>{label}</td>(.*?)</tr>", table).group(1)
        return re.findall(r'<td class="num">([^<]*)</td>', cells)

    async with await staff_browser(app, alpha.partner_id) as console:
        home = await console.get("/partner/")
        assert home.status_code == 200
        assert row(home.text, "This month") == ["5", "2", "40.0%", "1", "50.0%", "1"]
    async with await staff_browser(app, beta.partner_id) as console:
        home = await console.get("/partner/")
        assert row(home.text, "This month") == ["2", "1", "50.0%", "0", "0.0%", "1"]
        assert row(home.text, "Last month") == ["0", "0", "n/a", "0", "n/a", "0"]
    async with await operator_browser(app) as operator:
        home = await operator.get("/operator")
        new, referred = (int(v) for v in row(home.text, "This month")[:2])
        assert new >= 7 and referred >= 2
    # The tenant function answers nothing without a partner in scope.
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE coalition_tenant")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no partner in scope"):
            await conn.fetchrow("SELECT * FROM referral_figures_mine(now(), now())")
