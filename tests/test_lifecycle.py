"""The points lifecycle in the ledger: pending points and their activation, returns under
both return policies, expiry under every policy, checkout holds. Purchases are posted
through coalition.earning.posting with explicit rule decisions, so these tests are about the
ledger, not the rule engine (tests/test_purchases_api.py covers the whole path)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from coalition import clock, lifecycle
from coalition.earning.posting import Decision, MemberRef, Order, post_purchase
from coalition.importer import import_transactions
from coalition.ledger import Ledger, PostingRequest
from coalition.verify import verify_ledger
from tests.helpers import new_key

NOW = clock.now()
DAY = NOW.replace(hour=0, minute=0, second=0, microsecond=0)


def hit(points: int, funding: str = "partner", rule: uuid.UUID | None = None) -> dict:
    return {"rule_id": str(rule or uuid.uuid4()), "version": 1, "points": points,
            "funding": funding, "budget": False, "explanation": f"{points} points"}


async def buy(db, partner, member: str, points: int | list[dict], *, total: int = 10000,
              order_id: str | None = None, occurred_at: datetime | None = None,
              lines: list[dict] | None = None) -> dict:
    hits = points if isinstance(points, list) else [hit(points)]

    async def decide(_situation) -> Decision:
        return Decision(hits=hits)

    async with db.acquire() as conn:
        result = await post_purchase(
            conn, partner_id=partner.partner_id, actor="test", member=MemberRef(uuid.UUID(member)),
            order=Order(order_id or new_key(), occurred_at or NOW, "PLN", total, "store", None,
                        lines or []),
            decide=decide, capped_rules=[], day_start=DAY, month_start=DAY.replace(day=1),
            idempotency_key=new_key(), request_hash="h")
    assert result.status == 201, result.body
    return result.json()


async def give_back(db, partner, order_id: str, amount: int | None = None,
                    lines: list[dict] | None = None) -> dict:
    result = await Ledger(db).purchase_return(partner_id=partner.partner_id, order_id=order_id,
                                              amount=amount, lines=lines, actor="test",
                                              idempotency_key=new_key(), request_hash="h")
    assert result.status == 201, result.body
    return result.json()


async def assert_verified(db) -> None:
    async with db.acquire() as conn:
        assert [str(d) for d in await verify_ledger(conn)] == []


@pytest.fixture
async def settings_row(db) -> AsyncIterator[None]:
    """Tests here change the coalition's policies; put them back afterwards."""
    saved = dict(await db.fetchrow("SELECT * FROM coalition_settings WHERE id = 1"))
    yield
    await db.execute(
        "UPDATE coalition_settings SET points_validity_months = $1, expiry_policy = $2,"
        " expiry_fixed_month = $3, expiry_fixed_day = $4, return_policy = $5,"
        " negative_balance_floor = $6, hold_timeout_seconds = $7 WHERE id = 1",
        saved["points_validity_months"], saved["expiry_policy"], saved["expiry_fixed_month"],
        saved["expiry_fixed_day"], saved["return_policy"], saved["negative_balance_floor"],
        saved["hold_timeout_seconds"])


async def test_points_wait_out_the_return_window_then_activate_once(db, partner):
    await db.execute("UPDATE partners SET pending_days = 14 WHERE id = $1", partner.partner_id)
    member = await partner.enroll()
    posted = await buy(db, partner, member, 70)
    assert posted["status"] == "pending"
    assert posted["balance"] == {"available": 0, "pending": 70}
    balance = await partner.balance(member)
    assert (balance["available"], balance["pending"], balance["lifetime_earned"]) == (0, 70, 0)
    # A redemption cannot touch pending points.
    assert (await partner.redeem(member, 1)).status_code == 422

    async with db.acquire() as conn:
        # The job is coalition-wide: other tests' shorter windows may end before this one.
        await lifecycle.activate_pending(conn, NOW + timedelta(days=13))
        assert (await partner.balance(member))["pending"] == 70
        later = NOW + timedelta(days=14, seconds=1)
        assert await lifecycle.activate_pending(conn, later) >= 1
        assert await lifecycle.activate_pending(conn, later) == 0  # idempotent
    balance = await partner.balance(member)
    assert (balance["available"], balance["pending"], balance["lifetime_earned"]) == (70, 0, 70)
    await assert_verified(db)


async def test_a_return_takes_pending_points_first_then_active(db, partner):
    member = await partner.enroll()
    active = await buy(db, partner, member, 40)  # no return window yet: active at once
    await db.execute("UPDATE partners SET pending_days = 14 WHERE id = $1", partner.partner_id)
    pending = await buy(db, partner, member, 70)
    assert (active["status"], pending["status"]) == ("active", "pending")
    half = await give_back(db, partner, pending["order_id"], amount=5000)
    assert half["points"] == 35
    assert half["covered_by"] == {"pending": 35, "active": 0, "other_points": 0,
                                  "negative_balance": 0}
    assert (await partner.balance(member))["pending"] == 35
    rest = await give_back(db, partner, pending["order_id"])
    assert rest["points"] == 35 and rest["order"]["returned_points"] == 70
    # The cancelled pending lot is closed, not activated, when its window ends.
    async with db.acquire() as conn:
        await lifecycle.activate_pending(conn, NOW + timedelta(days=15))
    assert (await partner.balance(member))["available"] == 40
    await assert_verified(db)


async def test_partial_returns_add_up_to_one_full_return(db, partner):
    member = await partner.enroll()
    order = await buy(db, partner, member, 70, total=9999)
    taken = [(await give_back(db, partner, order["order_id"], amount=amount))["points"]
             for amount in (3333, 3333, 3333)]
    # floor(70 * R / T) after each return: 23, 46, 70 — the last one takes the remainder.
    assert taken == [23, 23, 24] and sum(taken) == 70
    assert (await partner.balance(member))["available"] == 0
    refused = await Ledger(db).purchase_return(partner_id=partner.partner_id,
                                               order_id=order["order_id"], amount=1, lines=None,
                                               actor="t", idempotency_key=new_key(),
                                               request_hash="h")
    assert refused.status == 422 and refused.json()["type"] == "/problems/order-fully-returned"
    await assert_verified(db)


async def test_returns_by_lines_are_valued_by_the_order_line(db, partner):
    member = await partner.enroll()
    lines = [{"sku": "A", "category": "tools", "quantity": 4, "unit_price": 2500, "amount": 9000},
             {"sku": "B", "category": None, "quantity": 1, "unit_price": 1000, "amount": 1000}]
    order = await buy(db, partner, member, 100, total=10000, lines=lines)
    first = await give_back(db, partner, order["order_id"], lines=[{"sku": "A", "quantity": 2}])
    assert (first["amount"], first["points"]) == (4500, 45)
    too_many = await Ledger(db).purchase_return(
        partner_id=partner.partner_id, order_id=order["order_id"], amount=None,
        lines=[{"sku": "A", "quantity": 3}], actor="t", idempotency_key=new_key(),
        request_hash="h")
    assert too_many.status == 422
    assert too_many.json()["field"] == "lines[0].quantity"
    assert too_many.json()["returnable"] == 2
    unknown = await Ledger(db).purchase_return(
        partner_id=partner.partner_id, order_id=order["order_id"], amount=None,
        lines=[{"sku": "B", "quantity": 1}, {"sku": "Z", "quantity": 1}], actor="t",
        idempotency_key=new_key(), request_hash="h")
    assert unknown.status == 422 and unknown.json()["field"] == "lines[1].sku"
    assert await db.fetchval("SELECT count(*) FROM purchase_returns WHERE purchase_id = $1",
                             order["id"]) == 1  # refusals wrote nothing
    await assert_verified(db)


async def test_clawback_takes_what_is_left_and_records_the_shortfall(db, partner,
                                                                     other_partner,
                                                                     settings_row):
    await db.execute("UPDATE coalition_settings SET return_policy = 'clawback'")
    member = await partner.enroll()
    order = await buy(db, partner, member, 100)
    await other_partner.enroll(await _email(db, member))
    assert (await other_partner.earn(member, 30)).status_code == 201
    assert (await other_partner.redeem(member, 120)).status_code == 201  # spends A's 100 too
    await other_partner.earn(member, 15)  # the member holds 10 + 15 of B's points
    returned = await give_back(db, partner, order["order_id"])
    assert returned["points"] == 100
    assert returned["covered_by"] == {"pending": 0, "active": 0, "other_points": 25,
                                      "negative_balance": 0}
    assert (returned["shortfall"], returned["policy"]) == (75, "clawback")
    assert returned["balance"] == {"available": 0}
    assert await db.fetchval("SELECT shortfall FROM purchase_returns WHERE id = $1",
                             returned["id"]) == 75
    await assert_verified(db)


async def test_negative_floor_lets_the_balance_go_below_zero_and_new_points_repay(
        db, partner, settings_row):
    await db.execute("UPDATE coalition_settings SET return_policy = 'negative_floor',"
                     " negative_balance_floor = 50")
    member = await partner.enroll()
    order = await buy(db, partner, member, 100)
    assert (await partner.redeem(member, 90)).status_code == 201
    returned = await give_back(db, partner, order["order_id"])
    # 10 left in the wallet, 50 more below zero, 40 beyond the floor.
    assert returned["covered_by"] == {"pending": 0, "active": 10, "other_points": 0,
                                      "negative_balance": 50}
    assert (returned["shortfall"], returned["balance"]) == (40, {"available": -50})
    # Nothing can be spent while in debt; the next points repay it first.
    assert (await partner.redeem(member, 1)).status_code == 422
    assert (await partner.earn(member, 30)).json()["balance"] == {"available": -20}
    await buy(db, partner, member, 25)
    balance = await partner.balance(member)
    assert balance["available"] == 5
    assert (await partner.redeem(member, 5)).status_code == 201
    await assert_verified(db)


async def test_a_reversed_redemption_repays_the_debt_a_return_left(db, partner, settings_row):
    # Found by tests/test_api_fuzz.py: the points went back to the returned purchase's
    # cancelled lot and the debt stayed owed by the lots ("wallet vs lots").
    await db.execute("UPDATE coalition_settings SET return_policy = 'negative_floor',"
                     " negative_balance_floor = 50")
    member = await partner.enroll()
    order = await buy(db, partner, member, 100)
    redemption = (await partner.redeem(member, 90)).json()
    assert (await give_back(db, partner, order["order_id"]))["balance"] == {"available": -50}
    back = await partner.post(f"/api/v1/transactions/{redemption['id']}/reversal")
    assert back.status_code == 201, back.text
    assert back.json()["balance"] == {"available": 40}
    lot = await db.fetchrow("SELECT status, remaining FROM lots WHERE entry_id = $1",
                            order["entry_id"])
    assert (lot["status"], lot["remaining"]) == ("active", 40)    # 50 repaid the debt
    assert (await partner.redeem(member, 40)).status_code == 201
    await assert_verified(db)


async def test_imported_points_follow_the_expiry_policy_and_repay_a_debt(
        db, partner, settings_row, database_url, tmp_path):
    await db.execute("UPDATE coalition_settings SET return_policy = 'negative_floor',"
                     " negative_balance_floor = 50, expiry_policy = 'never'")
    member = await partner.enroll(partner_customer_id=f"IMP-{uuid.uuid4().hex[:8]}")
    customer = await db.fetchval("SELECT customer_id FROM member_links WHERE member_id = $1",
                                 uuid.UUID(member))
    slug = await db.fetchval("SELECT slug FROM partners WHERE id = $1", partner.partner_id)
    order = await buy(db, partner, member, 100)
    assert (await partner.redeem(member, 90)).status_code == 201
    assert (await give_back(db, partner, order["order_id"]))["balance"] == {"available": -50}
    for points, reference in ((30, "OPEN-1"), (25, "OPEN-2")):
        path = tmp_path / f"{reference}.csv"
        path.write_text("customer_id,points,order_reference,occurred_at\n"
                        f"{customer},{points},{reference}-{member},2026-09-01T10:00:00Z\n")
        report = await import_transactions(database_url.asyncpg_dsn, slug, path, workers=1)
        assert (report.posted, report.errors) == (1, [])
    assert (await partner.balance(member))["available"] == 5
    lots = await db.fetch("SELECT points, remaining, status, expires_at FROM lots l"
                          " JOIN journal_entries e ON e.id = l.entry_id"
                          " WHERE l.member_id = $1 AND e.description = 'Imported purchase'"
                          " ORDER BY l.id", uuid.UUID(member))
    assert [(r["points"], r["remaining"], r["status"]) for r in lots] == [
        (30, 0, "spent"), (25, 5, "active")]                  # 50 of debt repaid first
    assert all(r["expires_at"] is None for r in lots)        # the policy is "never"
    await assert_verified(db)


async def test_coalition_funded_points_are_returned_to_the_coalition(db, partner):
    member = await partner.enroll()
    order = await buy(db, partner, member, [hit(60), hit(40, "coalition")])
    assert order["funding"] == {"partner": 60, "coalition": 40}
    returned = await give_back(db, partner, order["order_id"], amount=5000)
    assert returned["points"] == 50
    legs = await db.fetch(
        "SELECT a.kind, p.amount FROM postings p JOIN accounts a ON a.id = p.account_id"
        " WHERE p.entry_id = $1 ORDER BY a.kind", returned["entry_id"])
    assert [(r["kind"], r["amount"]) for r in legs] == [
        ("member_wallet", -50), ("operator_promotions", 20), ("partner_issuance", 30)]
    await assert_verified(db)


async def _email(db, member: str) -> str:
    return await db.fetchval("SELECT email FROM members WHERE id = $1", uuid.UUID(member))


# Expiry -----------------------------------------------------------------------------------

EARNED = datetime(2026, 3, 15, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(("policy", "fixed", "expected"), [
    ("rolling", None, datetime(2027, 3, 15, 10, 0, tzinfo=UTC)),
    # Good through the last day, in Warsaw time (UTC+1 in winter, +2 in summer).
    ("end_of_month", None, datetime(2027, 3, 31, 22, 0, tzinfo=UTC)),
    ("end_of_year", None, datetime(2027, 12, 31, 23, 0, tzinfo=UTC)),
    ("fixed_date", (9, 30), datetime(2027, 9, 30, 22, 0, tzinfo=UTC)),
    ("never", None, None),
])
async def test_expiry_date_under_each_policy(db, settings_row, policy, fixed, expected):
    month, day = fixed or (None, None)
    await db.execute("UPDATE coalition_settings SET points_validity_months = 12,"
                     " expiry_policy = $1, expiry_fixed_month = $2, expiry_fixed_day = $3",
                     policy, month, day)
    assert await db.fetchval("SELECT ledger_lot_expiry($1)", EARNED) == expected


async def test_expiry_job_moves_remainders_to_breakage_once(db, partner, settings_row):
    await db.execute("UPDATE coalition_settings SET points_validity_months = 12,"
                     " expiry_policy = 'end_of_month'")
    member = await partner.enroll()
    old = await buy(db, partner, member, 100, occurred_at=NOW - timedelta(days=400))
    await buy(db, partner, member, 30)
    assert (await partner.redeem(member, 60)).status_code == 201  # first-expiring first
    expiring = await _expiring(db, member, NOW)
    assert expiring == []  # the old lot is already past its date
    breakage = await _breakage(db, member)
    async with db.acquire() as conn:
        assert await lifecycle.expire_points(conn, NOW) >= 1
        assert await lifecycle.expire_points(conn, NOW) == 0
    assert await _breakage(db, member) - breakage == 40
    assert (await partner.balance(member))["available"] == 30
    lot = await db.fetchrow("SELECT status, remaining FROM lots WHERE entry_id = $1",
                            old["entry_id"])
    assert (lot["status"], lot["remaining"]) == ("expired", 0)
    await assert_verified(db)


async def test_points_expiring_within_30_days_per_member(db, partner, settings_row):
    await db.execute("UPDATE coalition_settings SET points_validity_months = 12,"
                     " expiry_policy = 'rolling'")
    member = await partner.enroll()
    await buy(db, partner, member, 25, occurred_at=NOW - timedelta(days=365 - 10))
    await buy(db, partner, member, 40, occurred_at=NOW - timedelta(days=365 - 40))
    expiring = await _expiring(db, member, NOW)
    assert [row["points"] for row in expiring] == [25]
    assert (await partner.balance(member))["expiring_within_30_days"] == 25


async def _expiring(db, member: str, now: datetime) -> list[dict]:
    async with db.acquire() as conn:
        return await lifecycle.expiring_points(conn, now, member_id=uuid.UUID(member))


async def _breakage(db, member: str) -> int:
    """What the member's entries moved to breakage (other tests' lots expire in the same
    run of the coalition-wide job)."""
    return await db.fetchval(
        "SELECT coalesce(sum(p.amount), 0) FROM postings p"
        " JOIN accounts a ON a.id = p.account_id"
        " JOIN journal_entries e ON e.id = p.entry_id"
        " WHERE a.kind = 'operator_breakage' AND e.member_id = $1", uuid.UUID(member))


# Checkout holds ---------------------------------------------------------------------------

async def _hold(db, partner, member: str, points: int, expires_at: datetime | None = None):
    return await Ledger(db).hold(PostingRequest(
        partner_id=partner.partner_id, member_id=uuid.UUID(member), points=points,
        actor="test", order_id="CHK-1", idempotency_key=new_key(), request_hash="h"),
        expires_at)


async def _close(db, partner, hold: str, capture: int | None):
    return await Ledger(db).close_hold(partner_id=partner.partner_id, hold_id=uuid.UUID(hold),
                                       capture=capture, actor="test", idempotency_key=new_key(),
                                       request_hash="h")


async def test_hold_then_partial_capture_gives_the_rest_back(db, partner):
    member = await partner.enroll()
    await buy(db, partner, member, 100)
    held = await _hold(db, partner, member, 80)
    assert held.status == 201 and held.json()["balance"] == {"available": 20}
    balance = await partner.balance(member)
    assert (balance["available"], balance["held"]) == (20, 80)
    captured = await _close(db, partner, held.json()["id"], 50)
    assert captured.status == 200
    assert (captured.json()["status"], captured.json()["captured"],
            captured.json()["released"]) == ("captured", 50, 30)
    balance = await partner.balance(member)
    assert (balance["available"], balance["held"], balance["lifetime_redeemed"]) == (50, 0, 50)
    again = await _close(db, partner, held.json()["id"], None)
    assert again.status == 409 and again.json()["authorization_status"] == "captured"
    await assert_verified(db)


async def test_void_and_expiry_give_every_point_back(db, partner, other_partner):
    member = await partner.enroll()
    await buy(db, partner, member, 100)
    voided = await _close(db, partner, (await _hold(db, partner, member, 60)).json()["id"], None)
    assert (voided.json()["status"], voided.json()["balance"]) == ("voided", {"available": 100})
    lapsing = (await _hold(db, partner, member, 70, NOW - timedelta(seconds=1))).json()
    # Another partner cannot close it; capturing after expiry releases it and says so.
    assert (await _close(db, other_partner, lapsing["id"], 10)).status == 404
    late = await _close(db, partner, lapsing["id"], 10)
    assert late.status == 409 and late.json()["type"] == "/problems/authorization-expired"
    assert (await partner.balance(member))["available"] == 100
    lapsing = (await _hold(db, partner, member, 30, NOW - timedelta(seconds=1))).json()
    async with db.acquire() as conn:
        assert await lifecycle.expire_holds(conn, clock.now()) >= 1
        assert await lifecycle.expire_holds(conn, clock.now()) == 0
    state = await db.fetchval("SELECT status FROM point_holds WHERE id = $1",
                              uuid.UUID(lapsing["id"]))
    assert state == "expired"
    assert (await partner.balance(member))["available"] == 100
    await assert_verified(db)


async def test_points_held_past_their_expiry_expire_once_released(db, partner, settings_row):
    # A lot that expired while part of it was held was left expired with the released
    # points in it, beyond any redemption's or expiry's reach.
    await db.execute("UPDATE coalition_settings SET points_validity_months = 12,"
                     " expiry_policy = 'end_of_month'")
    member = await partner.enroll()
    old = await buy(db, partner, member, 100, occurred_at=NOW - timedelta(days=400))
    held = (await _hold(db, partner, member, 60)).json()
    breakage = await _breakage(db, member)
    async with db.acquire() as conn:
        assert await lifecycle.expire_points(conn, NOW) >= 1
    assert (await _close(db, partner, held["id"], None)).status == 200
    lot = await db.fetchrow("SELECT status, remaining FROM lots WHERE entry_id = $1",
                            old["entry_id"])
    assert (lot["status"], lot["remaining"]) == ("active", 60)
    await assert_verified(db)
    async with db.acquire() as conn:
        assert await lifecycle.expire_points(conn, NOW) >= 1
    assert await _breakage(db, member) - breakage == 100
    assert (await partner.balance(member))["available"] == 0
    await assert_verified(db)


async def test_concurrent_captures_and_voids_close_a_hold_exactly_once(db, partner):
    member = await partner.enroll()
    await buy(db, partner, member, 100)
    hold = (await _hold(db, partner, member, 100)).json()["id"]
    results = await asyncio.gather(*(_close(db, partner, hold, 40 if n % 2 else None)
                                      for n in range(6)))
    assert sorted(r.status for r in results) == [200, 409, 409, 409, 409, 409]
    winner = next(r for r in results if r.status == 200).json()
    balance = await partner.balance(member)
    assert balance["available"] == 100 - winner["captured"]
    await assert_verified(db)


async def test_concurrent_holds_never_overdraw(db, partner):
    member = await partner.enroll()
    await buy(db, partner, member, 100)
    results = await asyncio.gather(*(_hold(db, partner, member, 30) for _ in range(6)))
    assert sorted(r.status for r in results) == [201, 201, 201, 422, 422, 422]
    assert (await partner.balance(member))["available"] == 10
    await assert_verified(db)


async def test_hold_body_is_replayed_for_the_same_key(db, partner):
    member = await partner.enroll()
    await buy(db, partner, member, 50)
    request = PostingRequest(partner_id=partner.partner_id, member_id=uuid.UUID(member),
                             points=20, actor="t", idempotency_key=new_key(), request_hash="h")
    first, second = await Ledger(db).hold(request), await Ledger(db).hold(request)
    assert json.loads(first.body) == json.loads(second.body)
    assert (await partner.balance(member))["available"] == 30


# Jobs on the real task queue ----------------------------------------------------------------

def test_every_periodic_job_is_scheduled_on_the_queue():
    """`coalition worker --once` runs PERIODIC by hand; a worker only runs what the
    procrastinate app schedules. The two lists must not drift apart, and the lifecycle
    jobs must come round often enough for their promises (pending points activate and
    holds lapse within minutes, expiry within the hour, tiers daily)."""
    from web.jobs import PERIODIC, app

    schedules = {task.task.name: task.cron
                 for task in app.periodic_registry.periodic_tasks.values()}
    assert set(PERIODIC) | {"maintenance", "draft_settlement"} == set(schedules)
    assert schedules["activate_pending"] == schedules["expire_holds"] == "* * * * *"
    assert schedules["expire_points"].split()[1:] == ["*", "*", "*", "*"]      # hourly
    assert schedules["reevaluate_tiers"].split()[2:] == ["*", "*", "*"]        # daily


async def test_queued_jobs_run_on_a_procrastinate_worker_and_twice_change_nothing(
        db, partner, database_url):
    from web.jobs import activate_pending, expire_holds, opened

    await db.execute("UPDATE partners SET pending_days = 3 WHERE id = $1", partner.partner_id)
    member = await partner.enroll()
    await buy(db, partner, member, 45, occurred_at=NOW - timedelta(days=1))
    await buy(db, partner, member, 10, occurred_at=NOW + timedelta(days=2))
    assert (await partner.balance(member))["pending"] == 55  # nothing ran yet
    # The jobs' timestamp is their "now": two days on, the first window is over.
    when = int(clock.wall_timestamp(NOW + timedelta(days=2, hours=1)))
    async with opened(database_url) as jobs:
        for _ in range(2):
            await activate_pending.defer_async(timestamp=when)
            await expire_holds.defer_async(timestamp=when)
            await jobs.run_worker_async(wait=False, install_signal_handlers=False)
        failed = await db.fetchval("SELECT count(*) FROM procrastinate_jobs"
                                   " WHERE status <> 'succeeded'")
    assert failed == 0
    balance = await partner.balance(member)
    assert (balance["available"], balance["pending"]) == (45, 10)
    await assert_verified(db)
