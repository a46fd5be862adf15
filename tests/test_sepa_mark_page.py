"""The operator marks exported SEPA payouts paid or failed on /operator/payments, through
a confirmation page; the mark moves the partner's statement (and the run), a failure
notifies the operators. Period 2014-03 is this file's own."""
# ruff: noqa: F811  (the fixtures imported below are test parameters by design)

from __future__ import annotations

from datetime import UTC, date, datetime

from settlement import runs, sepa
from settlement.collect import collect_run
from tests.portal import csrf_of
from tests.settlement_helpers import add_terms, coalition_bonus, new_member, redeem
from tests.stripe_fixtures import (  # noqa: F401  (fixtures)
    connect_double,
    localstripe,
    stripe_app,
    stripe_client,
)
from tests.test_rules_console import operator_browser
from tests.test_stripe_payments import sepa_partner

PERIOD = "2014-03"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def test_operator_marks_a_bank_payout_paid_and_another_failed(stripe_client, db, smtp):
    app = stripe_client.app
    paid_to = await sepa_partner(stripe_client, "Sepa Mark Paid", "DE89370400440532013000", "")
    bounced = await sepa_partner(stripe_client, "Sepa Mark Bounced",
                                 "PL61 1090 1014 0000 0712 1981 2874", "WBKPPLPP")
    for partner in (paid_to, bounced):
        await add_terms(db, partner, "2014-01-01", "1.2", "1.0")
    member = await new_member(db, [paid_to, bounced])
    await coalition_bonus(db, paid_to, member, 1000, "2014-03-02")   # the operator's points
    await redeem(db, paid_to, member, 300, "2014-03-03")             # paid_to is owed 300
    await redeem(db, bounced, member, 700, "2014-03-04")             # bounced is owed 700
    async with db.acquire() as conn:
        run = await runs.run_period(conn, PERIOD, "op@test", now=NOW)
        await runs.start_review(conn, PERIOD, now=NOW)
        await runs.finalize(conn, PERIOD, "op@test", now=NOW, force=True)
    done = await collect_run(app.state.stripe, PERIOD)
    assert done.failed == [], done
    payouts = {p["partner_id"]: p["id"] for p in done.paid_out}
    assert set(payouts) == {paid_to, bounced}
    await sepa.export_batch(app.state.pool, app.state.settings, list(payouts.values()),
                            date(2026, 1, 2), "op@test")
    payout = payouts[bounced]
    statements = {r["partner_id"]: r["id"] for r in await db.fetch(
        "SELECT id, partner_id FROM settlement_statements WHERE run_id = $1", run["id"])}
    statement = statements[bounced]
    assert await db.fetchval("SELECT payment_status FROM settlement_statements WHERE id = $1",
                             statement) == "transfer_pending"
    ready = await sepa.queue_payout(app.state.pool, paid_to, ("test", "ready-one"), 5, "PLN")

    browser = await operator_browser(app)
    async with browser:
        listing = await browser.get("/operator/payments")
        assert f'href="/operator/payments/{payout}/mark?status=paid"' in listing.text
        assert f'href="/operator/payments/{payout}/mark?status=failed"' in listing.text
        assert f"/operator/payments/{ready['id']}/mark" not in listing.text   # not exported

        confirm = await browser.get(f"/operator/payments/{payout}/mark?status=failed")
        assert confirm.status_code == 200
        assert "Sepa Mark Bounced" in confirm.text and "7.00 PLN" in confirm.text
        assert "Yes, mark it failed" in confirm.text
        # Posting without the confirmation only leads back to it; nothing moves.
        unconfirmed = await browser.post(f"/operator/payments/{payout}/mark", data={
            "_csrf_token": csrf_of(confirm), "status": "failed"})
        assert unconfirmed.status_code in (302, 303)
        assert unconfirmed.headers["location"].endswith(f"/{payout}/mark?status=failed")
        assert await _status(db, payout) == "exported"
        forged = await browser.post(f"/operator/payments/{payout}/mark", data={
            "status": "failed", "confirm": "yes"})                          # no CSRF token
        assert forged.status_code == 403 and await _status(db, payout) == "exported"

        marked = await browser.post(f"/operator/payments/{payout}/mark", data={
            "_csrf_token": csrf_of(confirm), "status": "failed", "confirm": "yes",
            "reason": "AC04 account closed"})
        assert marked.status_code == 303 and marked.headers["location"] == "/operator/payments"
        row = await db.fetchrow("SELECT status, failure_reason FROM settlement_payments"
                                " WHERE id = $1", payout)
        assert tuple(row) == ("failed", "AC04 account closed")
        assert await db.fetchval("SELECT payment_status FROM settlement_statements"
                                 " WHERE id = $1", statement) == "payment_failed"
        assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action ="
                                 " 'sepa_payout.failed' AND target = $1", str(payout)) == 1
        assert any("Payout failed: Sepa Mark Bounced" in (m["Subject"] or "")
                   for m in smtp.messages)
        after = await browser.get("/operator/payments")
        assert "Payout failed: Sepa Mark Bounced" in after.text        # to acknowledge
        assert f"/operator/payments/{payout}/mark" not in after.text   # marked once

        # Marked already, or never exported: the confirmation refuses, and so does a post.
        again = await browser.get(f"/operator/payments/{payout}/mark?status=paid")
        assert again.status_code == 409 and "Yes, mark it" not in again.text
        not_exported = await browser.post(f"/operator/payments/{ready['id']}/mark", data={
            "_csrf_token": csrf_of(after), "status": "paid", "confirm": "yes"})
        assert not_exported.status_code == 409
        assert "Only an exported SEPA payout can be marked" in not_exported.text
        assert await _status(db, ready["id"]) == "ready"
        nonsense = await browser.get(f"/operator/payments/{payout}/mark?status=maybe")
        assert nonsense.status_code == 409 and "Choose paid or failed" in nonsense.text

        # The other payout, marked paid: its statement is transferred.
        page = await browser.get(f"/operator/payments/{payouts[paid_to]}/mark?status=paid")
        assert page.status_code == 200 and "3.00 PLN" in page.text
        assert (await browser.post(f"/operator/payments/{payouts[paid_to]}/mark", data={
            "_csrf_token": csrf_of(page), "status": "paid", "confirm": "yes"})
            ).status_code == 303
    assert await _status(db, payouts[paid_to]) == "paid"
    assert await db.fetchval("SELECT payment_status FROM settlement_statements WHERE id = $1",
                             statements[paid_to]) == "transferred"
    # The bounced one keeps the run from being paid.
    assert await db.fetchval("SELECT status FROM settlement_runs WHERE id = $1",
                             run["id"]) == "invoiced"


async def _status(db, payment_id: int) -> str:
    return await db.fetchval("SELECT status FROM settlement_payments WHERE id = $1", payment_id)
