"""Affiliate payouts: Stripe Connect transfers (against the local Connect double, with
signed transfer webhooks), SEPA credits in a pain.001 file marked by the operator,
points through the ledger funded by the partner, the minimum payout and carry-over,
clawback netting, and two concurrent runs paying a commission once."""
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from xml.etree import ElementTree

import pytest

from coalition.verify import verify_ledger
from settlement import sepa
from settlement.affiliate_payouts import run_payouts
from tests.affiliate_c_helpers import (
    commission,
    enroll,
    new_affiliate,
    new_program,
    wallet_member,
)
from tests.helpers import new_partner
from tests.settlement_helpers import add_terms
from tests.stripe_fixtures import (  # noqa: F401  (fixtures)
    connect_double,
    event,
    localstripe,
    post_event,
    stripe_app,
    stripe_client,
)
from tests.test_cli import coalition


def mine(run, enrollment):
    found = [o for o in run.outcomes if o.enrollment_id == enrollment]
    assert len(found) <= 1, found
    return found[0] if found else None


async def statuses(db, ids):
    rows = await db.fetch("SELECT id, status, payout_id FROM affiliate_commissions"
                          " WHERE id = ANY($1::bigint[]) ORDER BY id", ids)
    return [(r["status"], r["payout_id"]) for r in rows]


async def stripe_affiliate(stripe_client, db, double, min_payout=5000):
    partner = await new_partner(stripe_client, "Affiliate Brand")
    account = f"acct_{uuid.uuid4().hex[:16]}"
    double.accounts.add(account)
    affiliate = await new_affiliate(db, "stripe_connect", stripe_account_id=account)
    program, _ = await new_program(db, partner.partner_id, min_payout=min_payout)
    enrollment, _ = await enroll(db, program, affiliate)
    return partner, account, enrollment


async def test_stripe_payout_nets_clawbacks_and_follows_transfer_webhooks(
        stripe_client, connect_double, db):
    _, double = connect_double
    gateway = stripe_client.app.state.stripe
    partner, account, enrollment = await stripe_affiliate(stripe_client, db, double)
    due = [await commission(db, enrollment, 3000), await commission(db, enrollment, 4000),
           await commission(db, enrollment, -1000)]
    waiting = [await commission(db, enrollment, 9999, status="pending"),
               await commission(db, enrollment, 777, status="hold")]
    dry = mine(await run_payouts(gateway, dry_run=True), enrollment)
    assert (dry.status, dry.net, dry.payout_id) == ("would_pay", 6000, None)
    assert await db.fetchval("SELECT count(*) FROM affiliate_payouts WHERE enrollment_id"
                             " = $1", enrollment) == 0
    outcome = mine(await run_payouts(gateway), enrollment)
    assert (outcome.status, outcome.net, outcome.method) == ("paid", 6000, "stripe_connect")
    payout = await db.fetchrow("SELECT * FROM affiliate_payouts WHERE id = $1",
                               outcome.payout_id)
    assert (payout["status"], payout["amount_minor"], payout["partner_id"]) == \
        ("paid", 6000, partner.partner_id)
    transfer = double.transfers[payout["stripe_transfer_id"]]
    assert (transfer["amount"], transfer["currency"], transfer["destination"]) == \
        (6000, "pln", account)
    key = f"coalition:transfer:affiliate_payout:{payout['id']}:transfer"
    assert double.by_key[key]["id"] == transfer["id"]   # idempotency key = payout id
    assert await statuses(db, due) == [("paid", payout["id"])] * 3
    assert await statuses(db, waiting) == [("pending", None), ("hold", None)]
    # A second run finds nothing due: no second transfer.
    requests = double.requests
    assert mine(await run_payouts(gateway), enrollment) is None
    assert double.requests == requests
    # The transfer webhooks: created changes nothing; reversed fails the payout and gives
    # its commissions back for the next run.
    created = await post_event(stripe_client, event("transfer.created", transfer))
    assert created.json()["outcome"] == "unchanged"
    reversed_ = {**transfer, "amount_reversed": 6000, "reversed": True}
    assert (await post_event(stripe_client, event("transfer.reversed", reversed_))
            ).json()["outcome"] == "applied"
    payout = await db.fetchrow("SELECT * FROM affiliate_payouts WHERE id = $1", payout["id"])
    assert payout["status"] == "failed" and "6000 reversed" in payout["failure_reason"]
    assert await statuses(db, due) == [("approved", None)] * 3
    again = mine(await run_payouts(gateway), enrollment)
    assert again.status == "paid" and again.payout_id != payout["id"]
    assert await statuses(db, due) == [("paid", again.payout_id)] * 3


async def test_refused_transfer_fails_the_payout_and_releases_commissions(
        stripe_client, connect_double, db):
    _, double = connect_double
    gateway = stripe_client.app.state.stripe
    _, account, enrollment = await stripe_affiliate(stripe_client, db, double)
    double.accounts.discard(account)   # Stripe answers "No such destination"
    due = [await commission(db, enrollment, 5000)]
    outcome = mine(await run_payouts(gateway), enrollment)
    assert outcome.status == "failed" and "No such destination" in outcome.reason
    assert await db.fetchval("SELECT status FROM affiliate_payouts WHERE id = $1",
                             outcome.payout_id) == "failed"
    assert await statuses(db, due) == [("approved", None)]


async def test_minimum_payout_carries_over_and_a_negative_net_waits(
        stripe_client, connect_double, db):
    _, double = connect_double
    gateway = stripe_client.app.state.stripe
    _, _, enrollment = await stripe_affiliate(stripe_client, db, double, min_payout=5000)
    first = await commission(db, enrollment, 3000)
    outcome = mine(await run_payouts(gateway), enrollment)
    assert (outcome.status, outcome.net, outcome.payout_id) == ("carried", 3000, None)
    assert "below the minimum payout 5000" in outcome.reason
    clawback = await commission(db, enrollment, -4000)
    outcome = mine(await run_payouts(gateway), enrollment)
    assert (outcome.status, outcome.net) == ("carried", -1000)
    later = [await commission(db, enrollment, 2500), await commission(db, enrollment, 3500)]
    outcome = mine(await run_payouts(gateway), enrollment)
    assert (outcome.status, outcome.net) == ("paid", 5000)
    assert await statuses(db, [first, clawback, *later]) == [("paid", outcome.payout_id)] * 4
    # The minimum is the terms' version in force: a newer version with a higher minimum.
    program = await db.fetchval("SELECT program_id FROM affiliate_enrollments WHERE id = $1",
                                enrollment)
    await db.execute("INSERT INTO affiliate_program_terms (program_id, partner_id, version,"
                     " model, rate_bp, min_payout_minor, created_by) SELECT $1, partner_id,"
                     " 2, 'percent', 500, 8000, 'test' FROM affiliate_programs WHERE id = $1",
                     program)
    await commission(db, enrollment, 6000)
    outcome = mine(await run_payouts(gateway), enrollment)
    assert outcome.status == "carried" and "minimum payout 8000" in outcome.reason


async def test_two_concurrent_runs_pay_each_commission_once(stripe_client, connect_double, db):
    _, double = connect_double
    gateway = stripe_client.app.state.stripe
    enrollments = []
    for _ in range(3):
        _, account, enrollment = await stripe_affiliate(stripe_client, db, double)
        for amount in (2000, 2500, 3000, -500):
            await commission(db, enrollment, amount)
        enrollments.append((enrollment, account))
    runs = await asyncio.gather(*(run_payouts(gateway) for _ in range(4)))
    for enrollment, account in enrollments:
        payouts = await db.fetch("SELECT id, amount_minor, status FROM affiliate_payouts"
                                 " WHERE enrollment_id = $1", enrollment)
        assert [(p["amount_minor"], p["status"]) for p in payouts] == [(7000, "paid")]
        sent = [t for t in double.transfers.values() if t["destination"] == account]
        assert [t["amount"] for t in sent] == [7000]
        paid_by = [o for run in runs for o in run.outcomes
                   if o.enrollment_id == enrollment and o.payout_id]
        assert {o.payout_id for o in paid_by} == {payouts[0]["id"]}
        assert await db.fetchval("SELECT count(*) FROM affiliate_commissions WHERE"
                                 " enrollment_id = $1 AND payout_id = $2 AND status = 'paid'",
                                 enrollment, payouts[0]["id"]) == 4


async def test_sepa_payout_pays_the_affiliates_account_when_the_operator_marks_it(
        stripe_client, db):
    app = stripe_client.app
    partner = await new_partner(stripe_client, "Sepa Affiliate Brand")
    affiliate = await new_affiliate(db, "sepa", iban="PL61109010140000071219812874",
                                    bic="WBKPPLPP", account_holder="Jan Bloger")
    program, _ = await new_program(db, partner.partner_id, currency="EUR")
    enrollment, _ = await enroll(db, program, affiliate)
    due = [await commission(db, enrollment, 4000), await commission(db, enrollment, 2345)]
    outcome = mine(await run_payouts(app.state.stripe), enrollment)
    assert (outcome.status, outcome.net) == ("pending", 6345)
    payout = await db.fetchrow("SELECT * FROM affiliate_payouts WHERE id = $1",
                               outcome.payout_id)
    payment = await db.fetchrow("SELECT * FROM settlement_payments WHERE id = $1",
                                payout["payment_id"])
    assert (payment["kind"], payment["status"], payment["reference_type"],
            payment["reference_id"], payment["partner_id"], payment["amount"]) == \
        ("sepa_credit", "ready", "affiliate_payout", str(payout["id"]), partner.partner_id,
         6345)
    assert await statuses(db, due) == [("approved", payout["id"])] * 2
    batch = await sepa.export_batch(app.state.pool, app.state.settings, [payment["id"]],
                                    date(2026, 12, 1), "op@test")
    ns = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"}
    root = ElementTree.fromstring(batch.xml)
    ibans = [e.text for e in root.iter("{{{}}}IBAN".format(ns["p"]))]
    assert ibans == ["DE89370400440532013000", "PL61109010140000071219812874"]
    names = [e.text for e in root.iter("{{{}}}Nm".format(ns["p"]))]
    assert "Jan Bloger" in names
    assert await db.fetchval("SELECT status FROM affiliate_payouts WHERE id = $1",
                             payout["id"]) == "processing"
    assert await sepa.mark(app.state.pool, payment["id"], "paid") == ("applied", None)
    assert await db.fetchval("SELECT status FROM affiliate_payouts WHERE id = $1",
                             payout["id"]) == "paid"
    assert await statuses(db, due) == [("paid", payout["id"])] * 2


async def test_bounced_sepa_payout_gives_the_commissions_back(stripe_client, db):
    app = stripe_client.app
    partner = await new_partner(stripe_client, "Bounce Brand")
    affiliate = await new_affiliate(db, "sepa", iban="DE89370400440532013000",
                                    account_holder="Bounce Blog")
    program, _ = await new_program(db, partner.partner_id, currency="EUR")
    enrollment, _ = await enroll(db, program, affiliate)
    due = [await commission(db, enrollment, 5000)]
    outcome = mine(await run_payouts(app.state.stripe), enrollment)
    payment = await db.fetchval("SELECT payment_id FROM affiliate_payouts WHERE id = $1",
                                outcome.payout_id)
    await sepa.export_batch(app.state.pool, app.state.settings, [payment],
                            date(2026, 12, 1), "op@test")
    await sepa.mark(app.state.pool, payment, "failed", "account closed")
    row = await db.fetchrow("SELECT status, failure_reason FROM affiliate_payouts"
                            " WHERE id = $1", outcome.payout_id)
    assert tuple(row) == ("failed", "account closed")
    assert await statuses(db, due) == [("approved", None)]


async def test_invalid_iban_is_refused_and_nothing_is_written(stripe_client, db):
    partner = await new_partner(stripe_client, "Bad Iban Brand")
    affiliate = await new_affiliate(db, "sepa", iban="PL61109010140000071219812875",
                                    account_holder="Typo Blog")
    program, _ = await new_program(db, partner.partner_id)
    enrollment, _ = await enroll(db, program, affiliate)
    due = [await commission(db, enrollment, 5000)]
    outcome = mine(await run_payouts(stripe_client.app.state.stripe), enrollment)
    assert outcome.status == "failed" and "IBAN" in outcome.reason
    assert await db.fetchval("SELECT count(*) FROM affiliate_payouts WHERE enrollment_id"
                             " = $1", enrollment) == 0
    assert await statuses(db, due) == [("approved", None)]


async def test_points_payout_is_an_earn_funded_by_the_partner(stripe_client, db):
    gateway = stripe_client.app.state.stripe
    currency = await db.fetchval("SELECT currency FROM coalition_settings")
    partner = await new_partner(stripe_client, "Points Brand")
    member = await wallet_member(db)
    affiliate = await new_affiliate(db, "points", payout_member_id=member)
    program, _ = await new_program(db, partner.partner_id, currency=currency)
    enrollment, _ = await enroll(db, program, affiliate)
    due = [await commission(db, enrollment, 6000), await commission(db, enrollment, -999)]
    outcome = mine(await run_payouts(gateway), enrollment)
    assert outcome.status == "carried" and "rate card" in outcome.reason
    await add_terms(db, partner.partner_id, "2020-01-01", "1.2", "1.0")
    outcome = mine(await run_payouts(gateway), enrollment)
    # 5001 minor units at 1.2 a point: 4167.5 points, floored to 4167.
    assert (outcome.status, outcome.net, outcome.points) == ("paid", 5001, 4167)
    payout = await db.fetchrow("SELECT * FROM affiliate_payouts WHERE id = $1",
                               outcome.payout_id)
    assert (payout["status"], payout["points"], payout["amount_minor"]) == ("paid", 4167, 5001)
    entry = await db.fetchrow("SELECT * FROM journal_entries WHERE id = $1", payout["entry_id"])
    assert (entry["kind"], entry["partner_id"], entry["member_id"],
            entry["idempotency_key"]) == ("earn", partner.partner_id, member,
                                          f"affiliate-payout:{payout['id']}")
    assert await db.fetchval("SELECT balance FROM accounts WHERE member_id = $1",
                             member) == 4167
    assert await db.fetchval("SELECT partner_id FROM lots WHERE entry_id = $1",
                             entry["id"]) == partner.partner_id
    assert await statuses(db, due) == [("paid", payout["id"])] * 2
    assert mine(await run_payouts(gateway), enrollment) is None
    async with db.acquire() as conn:
        assert await verify_ledger(conn) == []


async def test_points_payout_below_one_point_waits(stripe_client, db):
    currency = await db.fetchval("SELECT currency FROM coalition_settings")
    partner = await new_partner(stripe_client, "Dear Points Brand")
    await add_terms(db, partner.partner_id, "2020-01-01", "700", "600")
    affiliate = await new_affiliate(db, "points", payout_member_id=await wallet_member(db))
    program, _ = await new_program(db, partner.partner_id, currency=currency, min_payout=100)
    enrollment, _ = await enroll(db, program, affiliate)
    await commission(db, enrollment, 600)
    outcome = mine(await run_payouts(stripe_client.app.state.stripe), enrollment)
    assert outcome.status == "carried" and "less than one point" in outcome.reason


@pytest.mark.parametrize("missing", ["payout_method", "banned"])
async def test_no_payout_without_a_method_or_for_a_banned_enrollment(stripe_client, db,
                                                                     missing):
    partner = await new_partner(stripe_client, "Careful Brand")
    affiliate = await new_affiliate(db, None if missing == "payout_method" else "sepa",
                                    iban="DE89370400440532013000", account_holder="X")
    program, _ = await new_program(db, partner.partner_id)
    enrollment, _ = await enroll(db, program, affiliate,
                                 status="banned" if missing == "banned" else "approved")
    await commission(db, enrollment, 9000)
    outcome = mine(await run_payouts(stripe_client.app.state.stripe), enrollment)
    assert outcome.status == "carried" and outcome.payout_id is None


async def test_cli_dry_run_shows_what_would_be_paid_and_writes_nothing(client, db,
                                                                       database_url):
    partner = await new_partner(client, "Cli Payout Brand")
    affiliate = await new_affiliate(db, "sepa", iban="DE89370400440532013000",
                                    account_holder="Cli Blog", name=f"Cli {uuid.uuid4().hex[:6]}")
    program, _ = await new_program(db, partner.partner_id)
    enrollment, _ = await enroll(db, program, affiliate)
    await commission(db, enrollment, 5000)
    await commission(db, enrollment, 1234)
    name = await db.fetchval("SELECT name FROM affiliates WHERE id = $1", affiliate)
    result = await asyncio.to_thread(coalition, database_url, "affiliates", "payout",
                                     "--dry-run")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith(name))
    assert "net 6234 PLN" in line and "would_pay" in line
    assert "dry run:" in result.stdout
    assert await db.fetchval("SELECT count(*) FROM affiliate_payouts WHERE enrollment_id"
                             " = $1", enrollment) == 0
