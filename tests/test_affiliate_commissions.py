"""Commission models and rounding, first purchase vs recurring, one commission per order
under concurrent duplicates, the hold -> approved job, returns before and after payout,
and the `affiliate_commission` line on the funding partner's statement."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from coalition.affiliates import commissions
from coalition.affiliates.attribution import Touch, add_months, attribute
from coalition.affiliates.commissions import round_half_away, sale_amount, tier_rate
from settlement import runs
from settlement.reconcile import reconcile
from tests import affiliate_b_helpers as aff
from tests.affiliate_b_helpers import NOW, purchase
from tests.helpers import new_key, new_partner
from tests.settlement_helpers import add_terms
from web import jobs

LINES = [{"sku": "PAINT", "category": "paint", "quantity": 1, "unit_price": 10000,
          "amount": 10000},
         {"sku": "BRUSH", "category": "tools", "quantity": 3, "unit_price": 5000,
          "amount": 15000}]


@pytest.mark.parametrize(("numerator", "denominator", "rounded"), [
    (12345 * 1000, 10_000, 1235), (12344 * 1000, 10_000, 1234), (5, 10, 1), (4, 10, 0),
    (-12345 * 1000, 10_000, -1235), (-15, 10, -2), (0, 10_000, 0)])
def test_rounding_is_half_away_from_zero(numerator, denominator, rounded):
    assert round_half_away(numerator, denominator) == rounded


def test_percent_with_category_overrides_and_tiers_reached_including_the_sale():
    terms = {"model": "percent", "rate_bp": 1000, "category_rates": {"paint": 500},
             "tiers": None, "flat_minor": None}
    # paint 100.00 at 5 %, the rest (150.00) at 10 %: 5.00 + 15.00
    amount, detail = sale_amount(terms, 25000, LINES, 0)
    assert amount == 2000
    assert detail["category_rates_applied"] == {"paint": {"rate_bp": 500, "amount": 10000}}
    assert sale_amount({**terms, "category_rates": {}}, 12345, [], 0)[0] == 1235
    tiers = [{"from_minor": 0, "rate_bp": 500}, {"from_minor": 50000, "rate_bp": 1000}]
    tiered = {**terms, "model": "tiered_percent", "tiers": tiers, "category_rates": {}}
    # 300.00 sold this month before; this 300.00 sale takes the month to 600.00, past
    # the 500.00 threshold: the whole sale earns the higher tier's 10 %.
    assert sale_amount(tiered, 30000, [], 0)[0] == 1500
    assert sale_amount(tiered, 30000, [], 30000)[0] == 3000
    assert sale_amount(tiered, 20000, [], 29999)[0] == 1000
    assert tier_rate(tiers, 50000)["rate_bp"] == 1000
    assert sale_amount({**terms, "model": "per_lead"}, 100, [], 0) is None
    assert add_months(datetime(2024, 1, 31, tzinfo=UTC), 1) == datetime(2024, 2, 29,
                                                                        tzinfo=UTC)


async def test_every_model_through_the_purchase_api(partner, db):
    member = await partner.enroll()
    # percent with a category override
    _, _, enrollment, _ = await aff.setup(db, partner.partner_id,
                                          category_rates={"paint": 500})
    click = await aff.click(db, enrollment, NOW - timedelta(hours=1))
    body = (await partner.post("/api/v1/purchases", purchase(
        member, 25000, lines=LINES, click_id=str(click)))).json()
    assert body["affiliate_commission"]["amount"] == 2000
    # tiered percent by the month's sales, recurring
    tiered, _, enrollment, code = await aff.setup(
        db, partner.partner_id, model="tiered_percent", rate_bp=None, recurring_months=3,
        tiers=[{"from_minor": 0, "rate_bp": 500}, {"from_minor": 50000, "rate_bp": 1000}])
    other = await partner.enroll()
    for total in (30000, 30000):
        await partner.post("/api/v1/purchases", purchase(other, total, affiliate_code=code))
    assert [r["amount_minor"] for r in await aff.commissions_of(db, tiered)] == [1500, 3000]
    # per transaction, first purchase only
    flat, _, _, code = await aff.setup(db, partner.partner_id, model="per_transaction",
                                       rate_bp=None, flat_minor=700)
    third = await partner.enroll()
    for _ in range(2):
        await partner.post("/api/v1/purchases", purchase(third, 9900, affiliate_code=code))
    assert [r["amount_minor"] for r in await aff.commissions_of(db, flat)] == [700]
    # per lead: the sign-up pays, purchases do not
    lead, _, _, code = await aff.setup(db, partner.partner_id, model="per_lead",
                                       rate_bp=None, flat_minor=400)
    fourth = await partner.enroll(affiliate_code=code)
    await partner.post("/api/v1/purchases", purchase(fourth, 9900, affiliate_code=code))
    assert [(r["kind"], r["amount_minor"]) for r in await aff.commissions_of(db, lead)] == [
        ("lead", 400)]


async def test_recurring_commissions_stop_n_months_after_the_first_purchase(partner, db):
    program, _, enrollment, _ = await aff.setup(db, partner.partner_id, window_days=120,
                                                recurring_months=1)
    member = await partner.enroll()
    first_at = NOW - timedelta(days=40)
    click = await aff.click(db, enrollment, first_at - timedelta(hours=1))
    await partner.post("/api/v1/purchases",
                       purchase(member, 10000, at=first_at, click_id=str(click)))
    inside = first_at + timedelta(days=20)
    await partner.post("/api/v1/purchases", purchase(member, 10000, at=inside))
    # 40 days after the first: past the one recurring month (the click window of 120
    # days would still hold, but only the first purchase and its month count).
    response = await partner.post("/api/v1/purchases", purchase(member, 10000))
    assert "affiliate_commission" not in response.json()
    rows = await aff.commissions_of(db, program)
    assert [r["occurred_at"] for r in rows] == [first_at, inside]
    assert json.loads(rows[1]["explanation"])["purchase"].startswith("recurring")


async def test_one_commission_per_order_under_concurrent_duplicate_posts(partner, db):
    program, _, enrollment, _ = await aff.setup(db, partner.partner_id, recurring_months=12)
    member = await partner.enroll()
    click = await aff.click(db, enrollment, NOW - timedelta(hours=1))
    body = purchase(member, 10000, click_id=str(click))
    answers = await asyncio.gather(*[partner.post("/api/v1/purchases", body)
                                     for _ in range(4)])
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409]
    assert len(await aff.commissions_of(db, program)) == 1
    # The same order recorded by two transactions at once (below the purchase's own
    # order-id check): the unique index lets one through.
    member_id = uuid.UUID(member)
    order_id = new_key()

    async def record() -> object:
        async with db.acquire() as conn, conn.transaction():
            found, _ = await attribute(conn, partner_id=partner.partner_id,
                                       member_id=member_id, at=NOW,
                                       touch=Touch(click_id=click), store=False)
            made, _ = await commissions.record_sale(
                conn, found, member_id=member_id, order_id=order_id, total=5000, lines=[],
                at=NOW, month=(NOW - timedelta(days=1), NOW + timedelta(days=1)))
            await asyncio.sleep(0.05)
            return made

    results = await asyncio.gather(*[record() for _ in range(3)])
    assert sum(r is not None for r in results) == 1
    assert await db.fetchval("SELECT count(*) FROM affiliate_commissions WHERE order_id = $1",
                             order_id) == 1


async def test_the_job_approves_commissions_whose_hold_period_ended(partner, db):
    program, _, enrollment, _ = await aff.setup(db, partner.partner_id)
    due = await aff.commission_row(db, enrollment, status="pending",
                                   hold_until=NOW - timedelta(seconds=1))
    later = await aff.commission_row(db, enrollment, status="pending",
                                     hold_until=NOW + timedelta(days=3))
    held = await aff.commission_row(db, enrollment, status="hold",
                                    hold_until=NOW - timedelta(days=1))
    assert jobs.PERIODIC["approve_commissions"] is commissions.approve_due
    async with db.acquire() as conn:
        assert await commissions.approve_due(conn, NOW) >= 1
    status = {r["id"]: (r["status"], r["decided_by"]) for r in
              await aff.commissions_of(db, program)}
    assert status == {due: ("approved", "system"), later: ("pending", None),
                      held: ("hold", None)}


async def test_returns_reduce_before_payout_and_claw_back_after(partner, db):
    program, _, _, code = await aff.setup(db, partner.partner_id, recurring_months=12)
    member = await partner.enroll()
    first = purchase(member, 25000, affiliate_code=code)
    await partner.post("/api/v1/purchases", first)
    returned = await partner.post(f"/api/v1/purchases/{first['order_id']}/returns",
                                  {"amount": 10000})
    assert returned.status_code == 201, returned.text
    [row] = await aff.commissions_of(db, program)
    assert (row["amount_minor"], row["refunded_minor"], row["status"]) == (1500, 10000,
                                                                           "pending")
    await partner.post(f"/api/v1/purchases/{first['order_id']}/returns")   # the rest
    [row] = await aff.commissions_of(db, program)
    assert (row["amount_minor"], row["refunded_minor"], row["status"]) == (0, 25000,
                                                                           "voided")
    # Paid out, then returned: a clawback, approved at once, nets the next payout.
    second = purchase(member, 30000)
    await partner.post("/api/v1/purchases", second)
    paid = (await aff.commissions_of(db, program))[-1]
    assert paid["amount_minor"] == 3000
    await db.execute("UPDATE affiliate_commissions SET status = 'paid' WHERE id = $1",
                     paid["id"])
    await partner.post(f"/api/v1/purchases/{second['order_id']}/returns", {"amount": 10000})
    rows = await aff.commissions_of(db, program)
    claw = rows[-1]
    assert (claw["kind"], claw["amount_minor"], claw["status"], claw["reverses_id"]) == (
        "clawback", -1000, "approved", paid["id"])
    assert claw["decided_at"] is not None
    original = next(r for r in rows if r["id"] == paid["id"])
    assert (original["amount_minor"], original["refunded_minor"], original["status"]) == (
        3000, 10000, "paid")


async def test_commissions_go_on_the_partners_statement_once(client, db):
    """A 2012 period: approved commissions (net of a clawback) in the period are one
    line the partner owes; a re-run claims the same ones; a commission approved late
    (after the run) lands on the next run, marked late; reconciliation is clean."""
    brand = await new_partner(client, f"Affiliate Settle {new_key()[:6]}")
    await add_terms(db, brand.partner_id, "2012-01-01", "1.0", "1.0")
    _, _, enrollment, _ = await aff.setup(db, brand.partner_id)

    def day(text: str) -> datetime:
        return datetime.fromisoformat(f"{text}T12:00").replace(tzinfo=UTC)

    sale = await aff.commission_row(db, enrollment, amount=1500, decided_at=day("2012-03-10"))
    claw = await aff.commission_row(db, enrollment, amount=-200, kind="clawback",
                                    decided_at=day("2012-03-15"))
    await aff.commission_row(db, enrollment, amount=900, status="pending")   # not payable
    april = await aff.commission_row(db, enrollment, amount=700,
                                     decided_at=day("2012-04-02"))
    now = datetime(2026, 1, 1, tzinfo=UTC)

    async def lines(run_id: int) -> list[tuple]:
        return [tuple(r) for r in await db.fetch(
            "SELECT type, late, amount, description FROM settlement_lines"
            " WHERE run_id = $1 AND partner_id = $2 ORDER BY line_no", run_id,
            brand.partner_id)]

    async with db.acquire() as conn:
        march = await runs.run_period(conn, "2012-03", "op@test", now=now)
    expected = [("affiliate_commission", False, 1300,
                 "Affiliate commissions, paid to your affiliates by the operator")]
    assert await lines(march["id"]) == expected
    claimed = await db.fetch("SELECT id FROM affiliate_commissions WHERE settlement_run_id"
                             " = $1", march["id"])
    assert {r["id"] for r in claimed} == {sale, claw}
    net = await db.fetchval("SELECT net FROM settlement_statements WHERE run_id = $1"
                            " AND partner_id = $2", march["id"], brand.partner_id)
    assert net == 1300
    async with db.acquire() as conn:
        await runs.run_period(conn, "2012-03", "op@test", now=now)     # a re-run
        assert await lines(march["id"]) == expected
        await runs.start_review(conn, "2012-03", now=now)
        await runs.finalize(conn, "2012-03", "op@test", now=now, force=True)
    late = await aff.commission_row(db, enrollment, amount=50, decided_at=day("2012-03-20"))
    async with db.acquire() as conn:
        april_run = await runs.run_period(conn, "2012-04", "op@test", now=now)
        found = [d.kind for run_id in (march["id"], april_run["id"])
                 for d in await reconcile(conn, run_id)
                 if d.partner_id in (brand.partner_id, None)]
    # (no invoice was raised for the finalized statement: only that is missing)
    assert found == ["payment_missing"]
    assert [line[:3] for line in await lines(april_run["id"])] == [
        ("affiliate_commission", False, 700), ("affiliate_commission", True, 50)]
    assert {r["id"] for r in await db.fetch(
        "SELECT id FROM affiliate_commissions WHERE settlement_run_id = $1",
        april_run["id"])} == {april, late}
    # A line changed behind the run's back is reported.
    await db.execute("UPDATE affiliate_commissions SET amount_minor = 1 WHERE id = $1", april)
    async with db.acquire() as conn:
        changed = [d.kind for d in await reconcile(conn, april_run["id"])
                   if d.partner_id == brand.partner_id]
    assert changed == ["ledger_changed"]
    # Later periods' runs (other tests') need this one closed.
    await db.execute("UPDATE affiliate_commissions SET amount_minor = 700 WHERE id = $1", april)
    async with db.acquire() as conn:
        await runs.start_review(conn, "2012-04", now=now)
        await runs.finalize(conn, "2012-04", "op@test", now=now, force=True)
