"""Prepaid point blocks: every earning path draws a prepaid partner's balance, every
cancellation credits it back, coalition-funded points never touch it, issuance beyond
the balance plus the credit limit is refused with nothing written (also under
concurrency), and the low-balance alert fires once per crossing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest

from coalition import clock
from coalition.errors import DomainError
from coalition.importer import import_transactions
from coalition.ledger import Ledger, PostingRequest
from coalition.rules.validation import RuleSpec
from settlement import prepaid
from settlement.terms import add_fx_rate, add_rate_card
from tenants.accounts import create_user
from tests.helpers import new_key
from tests.test_lifecycle import assert_verified, buy, give_back, hit
from tests.test_purchases_api import BASE, order, rules


async def make_prepaid(db, partner_id: uuid.UUID, *, block: int | None = None,
                       credit_limit: int = 0, alert: int | None = None,
                       issue_price: str = "1.2", currency: str | None = None) -> None:
    async with db.acquire() as conn:
        await add_rate_card(conn, partner_id, {
            "issue_price": issue_price, "reimbursement": "1.0", "billing": "prepaid",
            "credit_limit": credit_limit, "low_balance_alert": alert,
            "currency": currency}, "test")
        if block:
            await buy_block(conn, partner_id, block)


async def buy_block(conn, partner_id: uuid.UUID, points: int) -> prepaid.Block:
    requested = await prepaid.request_block(conn, partner_id, points, "test")
    result = await prepaid.credit_paid_block(conn, requested.id, requested.price, "test")
    assert result.outcome == "credited"
    return result.block


async def available(db, partner_id: uuid.UUID) -> int:
    return await db.fetchval("SELECT available FROM prepaid_balances WHERE partner_id = $1",
                             partner_id)


async def entries(db, partner_id: uuid.UUID) -> int:
    return await db.fetchval("SELECT count(*) FROM journal_entries WHERE partner_id = $1",
                             partner_id)


async def test_earn_draws_the_block_and_beyond_the_credit_limit_is_refused(db, partner):
    await make_prepaid(db, partner.partner_id, block=100, credit_limit=50)
    member = await partner.enroll()
    assert (await partner.earn(member, 120)).status_code == 201
    assert await available(db, partner.partner_id) == -20
    before = await entries(db, partner.partner_id)
    key = new_key()
    refused = await partner.post("/api/v1/earn", {"member_id": member, "points": 31}, key=key)
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["type"] == "/problems/prepaid-balance-exhausted"
    assert (problem["available"], problem["credit_limit"], problem["requested"]) == (-20, 50, 31)
    assert "-20 points left" in problem["detail"]
    # Nothing written: no entry, no lot, the member and the block unchanged.
    assert await entries(db, partner.partner_id) == before
    assert (await partner.balance(member))["available"] == 120
    assert await available(db, partner.partner_id) == -20
    # Exactly up to the limit is allowed; a block bought later lets the same key through.
    assert (await partner.earn(member, 30)).status_code == 201
    async with db.acquire() as conn:
        await buy_block(conn, partner.partner_id, 100)
    again = await partner.post("/api/v1/earn", {"member_id": member, "points": 31}, key=key)
    assert again.status_code == 201
    assert await available(db, partner.partner_id) == 100 - 120 - 30 + 100 - 31
    await assert_verified(db)


async def test_every_earning_path_draws_and_every_cancellation_credits_back(
        app, db, partner, tmp_path, database_url):
    await make_prepaid(db, partner.partner_id, block=10_000)
    await rules(app, partner, BASE,
                RuleSpec("Webinar", "event", {"event_type": "webinar", "points": 20,
                                              "frequency": "unlimited"}))
    member = await partner.enroll()
    level = 10_000

    async def drawn(points: int) -> None:
        nonlocal level
        level -= points
        assert await available(db, partner.partner_id) == level

    earned = (await partner.earn(member, 100)).json()
    await drawn(100)
    purchase = (await partner.post("/api/v1/purchases", order(member))).json()
    assert purchase["points"] == 250
    await drawn(250)
    assert (await partner.post("/api/v1/events", {"member": {"id": member},
                                                  "event_type": "webinar",
                                                  "reference": "W-1"})).status_code == 201
    await drawn(20)
    assert (await partner.post("/api/v1/adjustments", {"member_id": member, "points": 7,
                                                       "reason": "goodwill"})).status_code == 201
    await drawn(7)
    card = (await partner.get(f"/api/v1/members/{member}")).json()["card_number"]
    slug = await db.fetchval("SELECT slug FROM partners WHERE id = $1", partner.partner_id)
    csv = tmp_path / "import.csv"
    csv.write_text("card_number,points,order_reference,occurred_at\n"
                   f"{card},40,IMP-1,2026-01-05T10:00:00+01:00\n"
                   f"{card},60,IMP-2,2026-01-05T11:00:00+01:00\n")
    report = await import_transactions(database_url.asyncpg_dsn, slug, csv, workers=1)
    assert (report.posted, report.errors) == (2, [])
    await drawn(100)

    # Cancellations credit back: an earn reversal, a return, a debit adjustment.
    assert (await partner.post(f"/api/v1/transactions/{earned['id']}/reversal",
                               {"points": 30})).status_code == 201
    await drawn(-30)
    returned = await partner.post(f"/api/v1/purchases/{purchase['order_id']}/returns",
                                  {"amount": 10000})
    assert returned.json()["points"] == 100
    await drawn(-100)
    assert (await partner.post("/api/v1/adjustments", {"member_id": member, "points": -5,
                                                       "reason": "correction"})).status_code == 201
    await drawn(-5)
    await assert_verified(db)


async def test_the_importer_reports_a_refused_chunk_and_posts_none_of_it(db, partner, tmp_path,
                                                                         database_url):
    await make_prepaid(db, partner.partner_id, block=50)
    member = await partner.enroll()
    card = (await partner.get(f"/api/v1/members/{member}")).json()["card_number"]
    slug = await db.fetchval("SELECT slug FROM partners WHERE id = $1", partner.partner_id)
    csv = tmp_path / "too-much.csv"
    csv.write_text("card_number,points,order_reference,occurred_at\n"
                   f"{card},40,OVER-1,2026-01-05T10:00:00+01:00\n"
                   f"{card},40,OVER-2,2026-01-05T11:00:00+01:00\n")
    report = await import_transactions(database_url.asyncpg_dsn, slug, csv, workers=1)
    assert report.posted == 0 and [line for line, _ in report.errors] == [2, 3]
    assert "prepaid balance has 50 points left" in report.errors[0][1]
    assert await entries(db, partner.partner_id) == 0
    assert await available(db, partner.partner_id) == 50


async def test_coalition_funded_points_never_touch_the_block_partner_funded_referrals_do(
        app, db, partner):
    await make_prepaid(db, partner.partner_id, block=100)
    member = await partner.enroll()
    bought = await buy(db, partner, member, [hit(30), hit(500, "coalition")])
    assert bought["funding"] == {"partner": 30, "coalition": 500}
    assert await available(db, partner.partner_id) == 70
    await give_back(db, partner, bought["order_id"])
    assert await available(db, partner.partner_id) == 100
    # A partner's own referral rule is partner-funded: both bonuses draw the block
    # (coalition-funded referral bonuses: tests/test_referrals.py).
    await rules(app, partner, BASE, RuleSpec("Refer a friend", "referral",
                                             {"points": 20, "welcome_points": 10}))
    card = (await partner.get(f"/api/v1/members/{member}")).json()["card_number"]
    referee = await partner.enroll(referrer_card_number=card)
    first = (await partner.post("/api/v1/purchases", order(referee, total=5000))).json()
    assert first["referral_bonus"]["points"] == 20
    assert first["referral_bonus"]["welcome_points"] == 10
    assert await available(db, partner.partner_id) == 100 - 50 - 20 - 10
    await assert_verified(db)


async def test_postpaid_partners_have_no_balance_and_are_never_refused(db, partner):
    async with db.acquire() as conn:
        await add_rate_card(conn, partner.partner_id,
                            {"issue_price": "1.2", "reimbursement": "1"}, "test")
    member = await partner.enroll()
    assert (await partner.earn(member, 10**6)).status_code == 201
    assert await db.fetchval("SELECT count(*) FROM prepaid_balances WHERE partner_id = $1",
                             partner.partner_id) == 0


async def test_concurrent_earns_never_overdraw_the_block(db, partner):
    await make_prepaid(db, partner.partner_id, block=100, credit_limit=20)
    members = [await partner.enroll() for _ in range(4)]
    results = await asyncio.gather(*(partner.earn(members[i % 4], 30) for i in range(12)))
    codes = sorted(r.status_code for r in results)
    assert codes == [201] * 4 + [422] * 8, codes
    assert await available(db, partner.partner_id) == 100 - 120
    assert await db.fetchval("SELECT coalesce(sum(points), 0) FROM lots WHERE partner_id = $1",
                             partner.partner_id) == 120


async def test_a_block_is_priced_exactly_and_credited_once(db, partner):
    async with db.acquire() as conn:
        await add_fx_rate(conn, {"base": "PLN", "quote": "EUR", "rate": "0.23456789",
                                 "effective_from": "2020-01-01"})
    await make_prepaid(db, partner.partner_id, issue_price="1.234567", currency="EUR")
    async with db.acquire() as conn:
        block = await prepaid.request_block(conn, partner.partner_id, 1001, "test")
        # 1001 x 1.234567 grosz = 1235.801567 grosz; x 0.23456789 = 289.879...: 290 cents.
        exact = Decimal(1001) * Decimal("1.234567") * Decimal("0.23456789")
        assert block.price == 290 and exact.quantize(Decimal("0.0001")) == Decimal("289.8794")
        assert (block.currency, block.fx_rate, block.status) == ("EUR", Decimal("0.23456789"),
                                                                "awaiting_payment")
        assert await available(db, partner.partner_id) == 0
        mismatch = await prepaid.credit_paid_block(conn, block.id, 289, "stripe:in_1")
        assert mismatch.outcome == "mismatch" and mismatch.block.mismatch_amount == 289
        assert await available(db, partner.partner_id) == 0
        first = await prepaid.credit_paid_block(conn, block.id, 290, "stripe:in_1")
        again = await prepaid.credit_paid_block(conn, block.id, 290, "stripe:in_1")
        assert (first.outcome, again.outcome) == ("credited", "already_paid")
        assert await available(db, partner.partner_id) == 1001
        with pytest.raises(DomainError) as refused:
            await prepaid.request_block(conn, partner.partner_id, "1.5", "test")
        assert refused.value.field == "points"


async def test_low_balance_alert_fires_once_per_crossing(app, db, partner, smtp):
    await make_prepaid(db, partner.partner_id, block=100, alert=40)
    async with app.state.sessionmaker() as session:
        owner = await create_user(session, f"owner-{new_key()[:8]}@prepaid.example",
                                  "partner_staff", partner_id=partner.partner_id, role="owner")
        operator = await create_user(session, f"op-{new_key()[:8]}@coalition.example",
                                     "operator")
        await session.commit()
    member = await partner.enroll()
    mailer = app.state.mailer

    async def alerts() -> int:
        """Runs the job (which mails every partner's pending alerts) and counts the mails
        this partner's owner got from this run."""
        before = sum(m["To"] == owner.email for m in smtp.messages)
        async with db.acquire() as conn:
            await prepaid.send_low_balance_alerts(conn, mailer)
        return sum(m["To"] == owner.email for m in smtp.messages) - before

    await partner.earn(member, 50)
    assert await alerts() == 0
    await partner.earn(member, 15)                       # 35 <= 40: crossing
    assert await db.fetchval("SELECT low_since IS NOT NULL FROM prepaid_balances"
                             " WHERE partner_id = $1", partner.partner_id)
    assert await alerts() == 1
    message = smtp.last_to(owner.email)
    assert "down to 35 points" in message.get_payload(decode=True).decode()
    assert any(m["To"] == operator.email and "down to 35 points"
               in m.get_payload(decode=True).decode() for m in smtp.messages)
    await partner.earn(member, 5)                        # still low: no second alert
    assert await alerts() == 0
    async with db.acquire() as conn:
        await buy_block(conn, partner.partner_id, 100)   # 130: re-armed
    assert await db.fetchval("SELECT low_since FROM prepaid_balances WHERE partner_id = $1",
                             partner.partner_id) is None
    await partner.earn(member, 100)                      # 30: a new crossing
    assert await alerts() == 1


async def test_a_cancellation_of_points_issued_before_prepaid_credits_nothing(db, partner):
    member = await partner.enroll()
    earned = (await partner.earn(member, 80)).json()
    await make_prepaid(db, partner.partner_id, block=100)
    assert (await partner.post(f"/api/v1/transactions/{earned['id']}/reversal")
            ).status_code == 201
    assert await available(db, partner.partner_id) == 100


async def test_a_refused_posting_of_a_demo_style_backdated_entry_is_not_drawn(db, partner):
    """Points posted with a created_at before the prepaid terms (the demo's history) were
    issued under other terms: they draw nothing."""
    await make_prepaid(db, partner.partner_id, block=10)
    member = uuid.UUID(await partner.enroll())
    result = await Ledger(db).earn(PostingRequest(
        partner_id=partner.partner_id, member_id=member, points=500, actor="demo",
        posted_at=clock.now() - timedelta(days=30)))
    assert result.status == 201
    assert await available(db, partner.partner_id) == 10
