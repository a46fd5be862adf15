"""A finalized run collected and paid through Stripe: the partner who owes is invoiced
(localstripe) and charged, the partner owed is paid by a Connect transfer (the local
double), the webhooks move the statements and the run, and collecting again pays
nothing twice."""
# ruff: noqa: F811  (the fixtures imported below are test parameters by design)

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from coalition.errors import Conflict
from settlement import runs
from settlement.collect import collect_run
from tests.helpers import new_partner
from tests.settlement_helpers import add_terms, earn, new_member, redeem
from tests.stripe_fixtures import (  # noqa: F401  (fixtures)
    connect_double,
    event,
    localstripe,
    post_event,
    stripe_api,
    stripe_app,
    stripe_client,
)
from tests.test_stripe_payments import partner_with_card

PERIOD = "2015-06"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def test_a_run_is_invoiced_paid_out_and_closed(stripe_client, stripe_api,
                                                     connect_double, db):
    _, double = connect_double
    payer, _ = await partner_with_card(stripe_client, stripe_api)
    payee = await new_partner(stripe_client, "Owed Brand")
    account = f"acct_{uuid.uuid4().hex[:16]}"
    double.accounts.add(account)
    await db.execute("INSERT INTO partner_payout_details (partner_id, method, stripe_account_id)"
                     " VALUES ($1, 'stripe_connect', $2)", payee.partner_id, account)
    await add_terms(db, payer.partner_id, "2015-01-01", "1.2", "1.0")
    await add_terms(db, payee.partner_id, "2015-01-01", "1.2", "1.0")
    member = await new_member(db, [payer.partner_id, payee.partner_id])
    await earn(db, payer.partner_id, member, 1000, "2015-06-05")    # payer owes 1,200
    await redeem(db, payee.partner_id, member, 700, "2015-06-10")   # payee is owed 700
    async with db.acquire() as conn:
        run = await runs.run_period(conn, PERIOD, "op@test", now=NOW)
        await runs.start_review(conn, PERIOD, now=NOW)
        await runs.finalize(conn, PERIOD, "op@test", now=NOW, force=True)
    nets = {r["partner_id"]: (r["id"], r["net"]) for r in await db.fetch(
        "SELECT id, partner_id, net FROM settlement_statements WHERE run_id = $1", run["id"])}
    assert nets[payer.partner_id][1] == 1200 and nets[payee.partner_id][1] == -700

    gateway = stripe_client.app.state.stripe
    done = await collect_run(gateway, PERIOD)
    assert done.failed == [] and len(done.invoiced) == 1 and len(done.paid_out) == 1, done
    invoice = await stripe_api.v1.invoices.retrieve_async(done.invoiced[0]["stripe_object_id"])
    assert (invoice.status, invoice.amount_paid) == ("paid", 1200)
    transfer = double.transfers[done.paid_out[0]["stripe_object_id"]]
    assert (transfer["amount"], transfer["destination"]) == (700, account)
    status = {r["partner_id"]: r["payment_status"] for r in await db.fetch(
        "SELECT partner_id, payment_status FROM settlement_statements WHERE run_id = $1",
        run["id"])}
    assert status == {payer.partner_id: "paid", payee.partner_id: "transferred"}
    assert await db.fetchval("SELECT status FROM settlement_runs WHERE id = $1",
                             run["id"]) == "paid"

    # Collecting again makes no new payment.
    requests = double.requests
    again = await collect_run(gateway, PERIOD)
    assert [p["id"] for p in again.invoiced] == [p["id"] for p in done.invoiced]
    assert double.requests == requests
    assert await db.fetchval("SELECT count(*) FROM settlement_payments"
                             " WHERE reference_type = 'statement' AND reference_id = ANY($1)",
                             [str(i) for i, _ in nets.values()]) == 2

    # A reversed transfer (webhook) sends the statement back to unsettled.
    reversed_ = {**transfer, "amount_reversed": 700, "reversed": True}
    assert (await post_event(stripe_client, event("transfer.reversed", reversed_))
            ).json()["outcome"] == "applied"
    assert await db.fetchval("SELECT payment_status FROM settlement_statements WHERE id = $1",
                             nets[payee.partner_id][0]) == "payment_failed"


async def test_a_run_not_finalized_is_not_collected(stripe_client, db):
    from coalition.errors import DomainError

    partner = await new_partner(stripe_client, "Draft Brand")
    await add_terms(db, partner.partner_id, "2015-01-01", "1.2", "1.0")
    member = await new_member(db, [partner.partner_id])
    await earn(db, partner.partner_id, member, 10, "2015-09-05")
    async with db.acquire() as conn:
        await runs.run_period(conn, "2015-09", "op@test", now=NOW)
    try:
        await collect_run(stripe_client.app.state.stripe, "2015-09")
        raise AssertionError("a draft was collected")
    except DomainError as exc:
        assert (exc.slug, exc.field) == ("run-not-finalized", "period")
    finally:
        # Finalized, so its entry is claimed and no later test's run picks it up as late.
        async with db.acquire() as conn:
            await runs.start_review(conn, "2015-09", now=NOW)
            await runs.finalize(conn, "2015-09", "op@test", now=NOW, force=True)


async def test_a_paid_run_goes_back_to_invoiced_when_a_payout_is_reversed(
        stripe_client, stripe_api, connect_double, db):
    period = "2013-06"
    _, double = connect_double
    payer, _ = await partner_with_card(stripe_client, stripe_api)
    payee = await new_partner(stripe_client, "Reversed Brand")
    account = f"acct_{uuid.uuid4().hex[:16]}"
    double.accounts.add(account)
    await db.execute("INSERT INTO partner_payout_details (partner_id, method, stripe_account_id)"
                     " VALUES ($1, 'stripe_connect', $2)", payee.partner_id, account)
    for p in (payer, payee):
        await add_terms(db, p.partner_id, "2013-01-01", "1.2", "1.0")
    member = await new_member(db, [payer.partner_id, payee.partner_id])
    await earn(db, payer.partner_id, member, 500, "2013-06-05")
    await redeem(db, payee.partner_id, member, 300, "2013-06-10")
    async with db.acquire() as conn:
        run = await runs.run_period(conn, period, "op@test", now=NOW)
        await runs.start_review(conn, period, now=NOW)
        await runs.finalize(conn, period, "op@test", now=NOW, force=True)
    done = await collect_run(stripe_client.app.state.stripe, period)
    assert done.failed == [] and (await _run_status(db, run["id"])) == "paid"
    transfer = double.transfers[done.paid_out[0]["stripe_object_id"]]
    payee_statement = await db.fetchval("SELECT id FROM settlement_statements WHERE run_id = $1"
                                        " AND partner_id = $2", run["id"], payee.partner_id)

    reversed_ = {**transfer, "amount_reversed": 300, "reversed": True}
    answer = await post_event(stripe_client, event("transfer.reversed", reversed_))
    assert answer.json()["outcome"] == "applied"
    assert await db.fetchval("SELECT payment_status FROM settlement_statements WHERE id = $1",
                             payee_statement) == "payment_failed"
    assert await _run_status(db, run["id"]) == "invoiced"
    history = await db.fetch("SELECT actor, action, details FROM audit_log WHERE target = $1"
                             " AND action LIKE 'settlement_run.%' ORDER BY id", str(run["id"]))
    assert [(h["actor"], h["action"]) for h in history] == [
        ("payments", "settlement_run.paid"), ("payments", "settlement_run.payment_undone")]
    undone = json.loads(history[-1]["details"])
    assert (undone["statement_id"], undone["payment_status"], undone["to"]) == (
        payee_statement, "reversed", "invoiced")

    slug = await db.fetchval("SELECT slug FROM partners WHERE id = $1", payee.partner_id)
    async with db.acquire() as conn:
        with pytest.raises(Conflict, match=f"{slug} \\(payment_failed\\)"):
            await runs.close(conn, period)
    # The same event delivered again changes nothing (and records nothing).
    again = await post_event(stripe_client, event("transfer.reversed", reversed_))
    assert again.status_code == 200 and await _run_status(db, run["id"]) == "invoiced"
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE target = $1 AND action ="
                             " 'settlement_run.payment_undone'", str(run["id"])) == 1


async def _run_status(db, run_id: int) -> str:
    return await db.fetchval("SELECT status FROM settlement_runs WHERE id = $1", run_id)
