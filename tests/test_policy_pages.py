"""The points-policy pages and their API read: the operator sets the coalition's expiry,
return and hold policies, a partner's owner its return window; saved values change what
the ledger does next, bad input is refused by field and changes nothing, and nobody else
can change either. Every test that changes coalition_settings puts it back."""

from __future__ import annotations

import uuid
from calendar import monthrange
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from coalition import clock, settings
from tenants.accounts import create_user
from tests.helpers import new_partner
from tests.portal import Browser, csrf_of, submit
from tests.test_lifecycle import assert_verified
from tests.test_purchases_api import BASE, order, rules
from tests.test_rls import as_tenant
from tests.test_rules_console import operator_browser

PASSWORD = "policy secret 12"
VALID = {"expiry_policy": "rolling", "points_validity_months": "36", "expiry_fixed_day": "",
         "expiry_fixed_month": "", "return_policy": "clawback",
         "negative_balance_floor": "500", "hold_timeout_seconds": "900"}
COLUMNS = ("points_validity_months", "expiry_policy", "expiry_fixed_month", "expiry_fixed_day",
           "return_policy", "negative_balance_floor", "hold_timeout_seconds")


@pytest.fixture
async def restore_policies(db) -> AsyncIterator[None]:
    """coalition_settings is shared by the whole session: put it back afterwards."""
    saved = await db.fetchrow(f"SELECT {', '.join(COLUMNS)} FROM coalition_settings")
    yield
    await db.execute("UPDATE coalition_settings SET " + ", ".join(
        f"{column} = ${i}" for i, column in enumerate(COLUMNS, 1)), *saved.values())
    settings.forget()   # the cached settings (coalition/settings.py)


async def staff_browser(app, partner_id: uuid.UUID, role: str) -> Browser:
    email = f"{role}-{uuid.uuid4().hex[:8]}@brand.example"
    async with app.state.sessionmaker() as session:
        await create_user(session, email, "partner_staff", partner_id=partner_id, role=role,
                          password=PASSWORD, verified=True)
        await session.commit()
    browser = Browser(app)
    login = await submit(browser, "/login", "/login", email=email, password=PASSWORD)
    assert login.status_code == 302, login.text
    return browser


async def post_policies(browser: Browser, **fields: str):
    return await submit(browser, "/operator/policies", "/operator/policies",
                        **{**VALID, **fields})


async def settings_row(db) -> dict:
    return dict(await db.fetchrow(f"SELECT {', '.join(COLUMNS)} FROM coalition_settings"))


def first_fixed_date_after(earned: datetime, months: int, month: int, day: int,
                           zone: ZoneInfo) -> datetime:
    """The midnight after the first `day` `month` on or after `months` months from
    `earned` (local time; a month's missing days clamp to its end, as in PostgreSQL)."""
    local = earned.astimezone(zone).replace(tzinfo=None)
    years, index = divmod(local.month - 1 + months, 12)
    year, mon = local.year + years, index + 1
    base = local.replace(year=year, month=mon, day=min(local.day, monthrange(year, mon)[1]))
    for candidate_year in (base.year, base.year + 1):
        last = min(day, monthrange(candidate_year, month)[1])
        end = datetime(candidate_year, month, last) + timedelta(days=1)
        if end > base:
            return end.replace(tzinfo=zone)
    raise AssertionError("unreachable")


async def test_operator_switches_to_a_fixed_date_and_new_lots_follow_it(
        app, client, db, partner, restore_policies):
    member = await partner.enroll()
    operator = await operator_browser(app)
    async with operator:
        await post_policies(operator)   # rolling, 36 months, to start from
        before = (await partner.earn(member, 10)).json()
        shown = await operator.get("/operator/policies")
        assert shown.status_code == 200 and "36 months after the day" in shown.text
        saved = await post_policies(operator, expiry_policy="fixed_date",
                                    points_validity_months="1", expiry_fixed_day="30",
                                    expiry_fixed_month="9", hold_timeout_seconds="1 200")
        assert saved.status_code == 200, saved.text
        assert "Saved" in saved.text and "first 30 September" in saved.text
        zone = ZoneInfo(await db.fetchval("SELECT timezone FROM coalition_settings"))
        assert f"-10-01 00:00 ({zone.key})" in saved.text   # points earned now
    assert await settings_row(db) == {
        "points_validity_months": 1, "expiry_policy": "fixed_date", "expiry_fixed_month": 9,
        "expiry_fixed_day": 30, "return_policy": "clawback", "negative_balance_floor": 500,
        "hold_timeout_seconds": 1200}
    after = (await partner.earn(member, 10)).json()
    lots = {r["entry_id"]: r for r in await db.fetch(
        "SELECT entry_id, earned_at, expires_at FROM lots WHERE entry_id = ANY($1)",
        [before["id"], after["id"]])}
    new_lot = lots[after["id"]]
    expected = first_fixed_date_after(new_lot["earned_at"], 1, 9, 30, zone)
    assert new_lot["expires_at"] == expected
    assert expected.astimezone(zone).strftime("%m-%d") == "10-01"   # good through 30 Sep
    # The lot earned before the change keeps its rolling date.
    old_lot = lots[before["id"]]
    assert old_lot["expires_at"].year == old_lot["earned_at"].year + 3
    # A hold opened now lapses after the new timeout.
    hold = (await partner.post("/api/v1/redemptions/authorizations",
                               {"member_id": member, "points": 5})).json()
    lapse = datetime.fromisoformat(hold["expires_at"]) - datetime.fromisoformat(
        hold["created_at"])
    assert timedelta(seconds=1195) < lapse < timedelta(seconds=1205)
    audit = await db.fetchrow("SELECT actor, details FROM audit_log WHERE action ="
                              " 'policies.save' ORDER BY id DESC LIMIT 1")
    assert audit["actor"].startswith("op-")
    assert '"expiry_policy": ["rolling", "fixed_date"]' in audit["details"]
    await assert_verified(db)


async def test_a_return_after_switching_to_negative_floor_goes_down_to_the_floor(
        app, client, db, partner, restore_policies):
    await rules(app, partner, BASE)
    member = await partner.enroll()
    operator = await operator_browser(app)
    async with operator:
        await post_policies(operator, return_policy="clawback")
        clawed = await _spent_then_returned(partner, member)
        assert (clawed["shortfall"], clawed["balance"]) == (90, {"available": 0})
        saved = await post_policies(operator, return_policy="negative_floor",
                                    negative_balance_floor="50")
        assert saved.status_code == 200 and "down to -50 points" in saved.text
    returned = await _spent_then_returned(partner, member)
    assert returned["policy"] == "negative_floor"
    assert returned["covered_by"]["negative_balance"] == 50
    assert (returned["shortfall"], returned["balance"]) == (40, {"available": -50})
    await assert_verified(db)


async def _spent_then_returned(partner, member: str) -> dict:
    """100 points earned, 90 of them spent, then the whole order returned."""
    bought = (await partner.post("/api/v1/purchases",
                                 order(member, total=10000, lines=[]))).json()
    assert bought["points"] == 100 and bought["status"] == "active", bought
    balance = (await partner.balance(member))["available"]
    assert (await partner.redeem(member, balance - 10)).status_code == 201
    returned = await partner.post(f"/api/v1/purchases/{bought['order_id']}/returns")
    assert returned.status_code == 201, returned.text
    return returned.json()


@pytest.mark.parametrize(("fields", "field"), [
    ({"expiry_policy": "fixed_date", "expiry_fixed_day": "31", "expiry_fixed_month": "2"},
     "expiry_fixed_day"),
    ({"expiry_policy": "fixed_date", "expiry_fixed_day": "31", "expiry_fixed_month": "4"},
     "expiry_fixed_day"),
    ({"expiry_policy": "fixed_date", "expiry_fixed_day": "1", "expiry_fixed_month": "13"},
     "expiry_fixed_month"),
    ({"expiry_policy": "fixed_date", "expiry_fixed_month": "9"}, "expiry_fixed_day"),
    ({"points_validity_months": "0"}, "points_validity_months"),
    ({"points_validity_months": "121"}, "points_validity_months"),
    ({"points_validity_months": "12.5"}, "points_validity_months"),
    ({"expiry_policy": "sometimes"}, "expiry_policy"),
    ({"return_policy": "forgive"}, "return_policy"),
    ({"negative_balance_floor": "-1"}, "negative_balance_floor"),
    ({"negative_balance_floor": ""}, "negative_balance_floor"),
    ({"hold_timeout_seconds": "59"}, "hold_timeout_seconds"),
    ({"hold_timeout_seconds": str(7 * 86400 + 1)}, "hold_timeout_seconds"),
])
async def test_bad_policy_input_is_refused_by_field_and_changes_nothing(
        app, db, restore_policies, fields, field):
    operator = await operator_browser(app)
    async with operator:
        await post_policies(operator, return_policy="negative_floor",
                            negative_balance_floor="70")
        before = await settings_row(db)
        audits = await db.fetchval("SELECT count(*) FROM audit_log")
        refused = await post_policies(operator, **{"expiry_policy": "end_of_year", **fields})
    assert refused.status_code == 400
    assert f'id="{field}-error"' in refused.text and "nothing was saved" in refused.text
    assert await settings_row(db) == before
    assert await db.fetchval("SELECT count(*) FROM audit_log") == audits


async def test_29_february_is_a_fixed_date_and_never_keeps_the_months(app, db,
                                                                      restore_policies):
    operator = await operator_browser(app)
    async with operator:
        leap = await post_policies(operator, expiry_policy="fixed_date",
                                   points_validity_months="12", expiry_fixed_day="29",
                                   expiry_fixed_month="2")
        assert leap.status_code == 200, leap.text
        never = await post_policies(operator, expiry_policy="never",
                                    points_validity_months="")
        assert never.status_code == 200 and "Points never expire." in never.text
    row = await settings_row(db)
    assert (row["expiry_policy"], row["points_validity_months"], row["expiry_fixed_month"]) \
        == ("never", 12, None)
    assert await db.fetchval("SELECT ledger_lot_expiry($1)", clock.now()) is None


async def test_only_operators_change_the_coalition_policies(app, client, db, partner,
                                                            restore_policies):
    before = await settings_row(db)
    owner = await staff_browser(app, partner.partner_id, "owner")
    async with owner:
        assert (await owner.get("/operator/policies")).status_code == 403
        token = csrf_of(await owner.get("/partner/policies"))
        refused = await owner.post("/operator/policies", data={
            "_csrf_token": token, **VALID, "expiry_policy": "never"})
        assert refused.status_code == 403
    async with Browser(app) as anonymous:
        assert (await anonymous.get("/operator/policies")).status_code == 302
    assert await settings_row(db) == before


async def test_owner_sets_the_return_window_and_later_purchases_wait_it_out(app, client, db,
                                                                           partner):
    await rules(app, partner, BASE)
    member = await partner.enroll()
    owner = await staff_browser(app, partner.partner_id, "owner")
    async with owner:
        page = await owner.get("/partner/policies")
        assert page.status_code == 200 and "0 days" in page.text
        saved = await submit(owner, "/partner/policies", "/partner/policies",
                             pending_days="14")
        assert saved.status_code == 302
        first = (await partner.post("/api/v1/purchases", order(member, lines=[]))).json()
        assert first["status"] == "pending"
        assert datetime.fromisoformat(first["available_at"]) == \
            datetime.fromisoformat(first["occurred_at"]) + timedelta(days=14)
        shorter = await submit(owner, "/partner/policies", "/partner/policies",
                               pending_days="3")
        assert shorter.status_code == 302
        second = (await partner.post("/api/v1/purchases", order(member, lines=[]))).json()
        assert datetime.fromisoformat(second["available_at"]) == \
            datetime.fromisoformat(second["occurred_at"]) + timedelta(days=3)
        page = await owner.get("/partner/policies")
        assert "3 days" in page.text and "14 → 3" in page.text
    # Points already pending keep their date.
    dates = [r["available_at"] - r["earned_at"] for r in await db.fetch(
        "SELECT l.available_at, l.earned_at FROM lots l JOIN journal_entries e"
        " ON e.id = l.entry_id WHERE e.order_id = ANY($1) ORDER BY l.id",
        [first["order_id"], second["order_id"]])]
    assert dates == [timedelta(days=14), timedelta(days=3)]
    await assert_verified(db)


@pytest.mark.parametrize("value", ["366", "-1", "", "7.5", "two weeks"])
async def test_a_bad_return_window_is_refused_and_changes_nothing(app, client, db, value):
    partner = await new_partner(client)
    await db.execute("UPDATE partners SET pending_days = 7 WHERE id = $1", partner.partner_id)
    owner = await staff_browser(app, partner.partner_id, "owner")
    async with owner:
        refused = await submit(owner, "/partner/policies", "/partner/policies",
                               pending_days=value)
    assert refused.status_code == 400
    assert 'id="pending_days-error"' in refused.text and "0 to 365" in refused.text
    assert await db.fetchval("SELECT pending_days FROM partners WHERE id = $1",
                             partner.partner_id) == 7


async def test_only_the_owner_changes_the_return_window_and_only_its_own(app, client, db):
    mine, theirs = await new_partner(client), await new_partner(client, "Their Brand")
    await db.execute("UPDATE partners SET pending_days = 5 WHERE id = ANY($1)",
                     [mine.partner_id, theirs.partner_id])
    for role in ("admin", "analyst"):
        browser = await staff_browser(app, mine.partner_id, role)
        async with browser:
            page = await browser.get("/partner/policies")
            assert page.status_code == 200 and "Only an owner" in page.text
            refused = await browser.post("/partner/policies", data={
                "_csrf_token": csrf_of(page), "pending_days": "30"})
            assert refused.status_code == 403, role
    cashier = await staff_browser(app, mine.partner_id, "cashier")
    async with cashier:
        assert (await cashier.get("/partner/policies")).status_code == 403
    operator = await operator_browser(app)
    async with operator:
        assert (await operator.get("/partner/policies")).status_code == 403
    # Their owner's form writes their row only, whatever it sends.
    owner = await staff_browser(app, theirs.partner_id, "owner")
    async with owner:
        saved = await submit(owner, "/partner/policies", "/partner/policies",
                             pending_days="9", partner_id=str(mine.partner_id))
        assert saved.status_code == 302
    windows = await db.fetch("SELECT id, pending_days FROM partners WHERE id = ANY($1)",
                             [mine.partner_id, theirs.partner_id])
    assert dict(windows) == {mine.partner_id: 5, theirs.partner_id: 9}


async def test_the_tenant_may_update_its_own_return_window_and_nothing_else(client, db):
    mine, theirs = await new_partner(client), await new_partner(client, "Their Brand")
    async with as_tenant(db, mine.partner_id) as conn:
        assert await conn.execute("UPDATE partners SET pending_days = 4 WHERE id = $1",
                                  theirs.partner_id) == "UPDATE 0"
        assert await conn.execute("UPDATE partners SET pending_days = 4") == "UPDATE 1"
        for statement in ("UPDATE partners SET name = 'Taken'",
                          "UPDATE partners SET status = 'active', pending_days = 1"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(statement)
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():
                await conn.execute("UPDATE partners SET pending_days = 366")


async def test_the_api_reads_the_policies_and_the_brands_own_window(app, client, db,
                                                                    restore_policies):
    mine, theirs = await new_partner(client), await new_partner(client, "Their Brand")
    owner = await staff_browser(app, mine.partner_id, "owner")
    operator = await operator_browser(app)
    async with owner, operator:
        await submit(owner, "/partner/policies", "/partner/policies", pending_days="21")
        await post_policies(operator, expiry_policy="end_of_year",
                            points_validity_months="24", return_policy="negative_floor",
                            negative_balance_floor="300", hold_timeout_seconds="600")
    shown = await mine.get("/api/v1/policies")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    expires = datetime.fromisoformat(body["expiry"].pop("points_earned_now_expire_at"))
    zone = ZoneInfo(body["expiry"]["timezone"])
    assert expires.astimezone(zone).strftime("%m-%d %H:%M") == "01-01 00:00"
    assert body == {
        "partner_id": str(mine.partner_id),
        "expiry": {"policy": "end_of_year", "validity_months": 24, "fixed_month": None,
                   "fixed_day": None, "timezone": body["expiry"]["timezone"]},
        "returns": {"window_days": 21, "policy": "negative_floor",
                    "negative_balance_floor": 300},
        "holds": {"timeout_seconds": 600}}
    assert (await theirs.get("/api/v1/policies")).json()["returns"]["window_days"] == 0
    assert (await client.get("/api/v1/policies")).status_code == 401
    schema = (await client.get("/schema/openapi.json")).json()
    assert "get" in schema["paths"]["/api/v1/policies"]
