"""`coalition settle …` as an operator runs it (a subprocess against the test database):
the lifecycle commands with their refusals, `settle collect` against localstripe and the
Connect double, and the `draft_settlement` job. Periods 2010-03, 2011-04 and 2012-05 are
this file's own."""
# ruff: noqa: F811  (the fixtures imported below are test parameters by design)

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime

from coalition import clock
from settlement import runs
from tests.helpers import new_partner
from tests.settlement_helpers import add_terms, earn, new_member, redeem
from tests.stripe_fixtures import (  # noqa: F401  (fixtures)
    SECRET_KEY,
    connect_double,
    localstripe,
    stripe_api,
    stripe_app,
    stripe_client,
)
from tests.test_cli import coalition
from tests.test_stripe_payments import partner_with_card
from web import jobs

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def _status(db, period: str) -> str | None:
    return await db.fetchval("SELECT status FROM settlement_runs WHERE cycle = 'monthly'"
                             " AND period = $1", period)


async def test_lifecycle_commands_move_the_run_and_refuse_what_the_rules_forbid(
        client, db, database_url):
    period = "2010-03"
    partner = await new_partner(client, "CLI Settle Brand")
    slug = await db.fetchval("SELECT slug FROM partners WHERE id = $1", partner.partner_id)
    await add_terms(db, partner.partner_id, "2010-01-01", "1.2", "1.0")
    member = await new_member(db, [partner.partner_id])
    await earn(db, partner.partner_id, member, 1000, "2010-03-05")     # owes 1,200

    def settle(*args: str):
        return coalition(database_url, "settle", *args)

    bad = settle("run", "--period", "2010-13")
    assert bad.returncode == 1 and "is not a period" in bad.stderr
    assert settle("review", "--period", period).returncode == 1       # no run yet

    drafted = settle("run", "--period", period)
    assert drafted.returncode == 0, drafted.stderr
    assert f"{period} (monthly): draft" in drafted.stdout
    assert slug in drafted.stdout and "net           1200 PLN" in drafted.stdout
    statement = await db.fetchval("SELECT s.id FROM settlement_statements s JOIN"
                                  " settlement_runs r ON r.id = s.run_id WHERE r.period = $1"
                                  " AND s.partner_id = $2", period, partner.partner_id)

    early = settle("finalize", "--period", period)                    # a draft
    assert early.returncode == 1 and "is draft; this needs in_review" in early.stderr
    assert await _status(db, period) == "draft"

    reviewed = settle("review", "--period", period)
    assert reviewed.returncode == 0 and f"{period} (monthly): in_review" in reviewed.stdout
    assert settle("run", "--period", period).returncode == 1          # only a draft re-runs
    in_window = settle("finalize", "--period", period)                # 7-day window open
    assert in_window.returncode == 1 and "Partners may dispute until" in in_window.stderr
    assert await _status(db, period) == "in_review"

    reopened = settle("reopen", "--period", period)
    assert reopened.returncode == 0 and "draft" in reopened.stdout
    rerun = settle("run", "--period", period)                         # same statement ids
    assert rerun.returncode == 0 and "net           1200 PLN" in rerun.stdout
    assert await db.fetchval("SELECT id FROM settlement_statements WHERE partner_id = $1",
                             partner.partner_id) == statement

    discarded = settle("discard", "--period", period)
    assert discarded.returncode == 0 and f"{period}: draft discarded" in discarded.stdout
    assert await _status(db, period) is None
    assert await db.fetchval("SELECT count(*) FROM settlement_entries se JOIN journal_entries"
                             " e ON e.id = se.entry_id WHERE e.partner_id = $1",
                             partner.partner_id) == 0                 # claims released

    assert settle("run", "--period", period, "--dispute-window-days", "3").returncode == 0
    assert settle("review", "--period", period).returncode == 0
    forced = settle("finalize", "--period", period, "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"{period} (monthly): finalized, hash" in forced.stdout
    statement = await db.fetchval("SELECT id FROM settlement_statements WHERE partner_id = $1",
                                  partner.partner_id)
    assert settle("discard", "--period", period).returncode == 1      # finalized is kept
    assert settle("reopen", "--period", period).returncode == 1

    verified = settle("verify", "--period", period)
    assert verified.returncode == 0 and "match their lines and stored hash" in verified.stdout
    async with db.acquire() as conn:
        try:
            await conn.execute("ALTER TABLE settlement_statements DISABLE TRIGGER USER")
            await conn.execute("UPDATE settlement_statements SET net = net + 1,"
                               " total_debit = total_debit + 1 WHERE id = $1",
                               statement)
            tampered = settle("verify", "--period", period)
            assert tampered.returncode == 1
            assert "content hash" in tampered.stdout and f"statement {statement}" in \
                tampered.stdout
        finally:
            await conn.execute("UPDATE settlement_statements SET net = net - 1,"
                               " total_debit = total_debit - 1 WHERE id = $1",
                               statement)
            await conn.execute("ALTER TABLE settlement_statements ENABLE TRIGGER USER")
    assert settle("verify", "--period", period).returncode == 0

    unpaid = settle("close", "--period", period)
    assert unpaid.returncode == 1 and f"{slug} (pending)" in unpaid.stderr
    assert await _status(db, period) == "finalized"
    async with db.acquire() as conn:
        await runs.set_payment_status(conn, statement, "paid")
    closed = settle("close", "--period", period)
    assert closed.returncode == 0 and f"{period} (monthly): closed" in closed.stdout
    assert await _status(db, period) == "closed"


async def _coalition_async(database_url, settings, stripe_env: dict[str, str], *args: str
                           ) -> tuple[int, str, str]:
    """The CLI without blocking the event loop, which serves the Connect double."""
    env = {**os.environ, "COALITION_DATABASE_URL": database_url.raw,
           "COALITION_LOG_LEVEL": "WARNING", "COALITION_SMTP_HOST": "127.0.0.1",
           "COALITION_SMTP_PORT": str(settings.smtp_port), **stripe_env}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "web", *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, out.decode(), err.decode()


async def test_collect_command_invoices_pays_out_and_reports_what_it_could_not(
        stripe_client, stripe_api, connect_double, localstripe, db, database_url, settings):
    period = "2011-04"
    connect_url, double = connect_double
    payer, _ = await partner_with_card(stripe_client, stripe_api)
    payee = await new_partner(stripe_client, "CLI Owed Brand")
    unpayable = await new_partner(stripe_client, "CLI No Payout Brand")
    account = f"acct_{uuid.uuid4().hex[:16]}"
    double.accounts.add(account)
    await db.execute("INSERT INTO partner_payout_details (partner_id, method, stripe_account_id)"
                     " VALUES ($1, 'stripe_connect', $2)", payee.partner_id, account)
    for p in (payer, payee, unpayable):
        await add_terms(db, p.partner_id, "2011-01-01", "1.2", "1.0")
    member = await new_member(db, [payer.partner_id, payee.partner_id, unpayable.partner_id])
    await earn(db, payer.partner_id, member, 1000, "2011-04-05")        # owes 1,200
    await redeem(db, payee.partner_id, member, 700, "2011-04-10")       # is owed 700
    await redeem(db, unpayable.partner_id, member, 100, "2011-04-11")   # is owed 100
    env = {"COALITION_STRIPE_SECRET_KEY": SECRET_KEY, "COALITION_STRIPE_API_BASE": localstripe,
           "COALITION_STRIPE_CONNECT_BASE": connect_url}

    async with db.acquire() as conn:
        await runs.run_period(conn, period, "op@test", now=NOW)
    try:
        code, _, err = await _coalition_async(database_url, settings, env,
                                              "settle", "collect", "--period", period)
        assert code == 1 and "only a finalized run is collected" in err       # a draft
    finally:   # finalized whatever happens: an open run would block later tests' runs
        async with db.acquire() as conn:
            await runs.start_review(conn, period, now=NOW)
            run = await runs.finalize(conn, period, "op@test", now=NOW, force=True)

    code, out, err = await _coalition_async(database_url, settings, env,
                                            "settle", "collect", "--period", period)
    assert code == 1, out + err
    assert f"{period}: 1 invoiced, 1 paid out, 0 with nothing due" in out
    unpayable_slug = await db.fetchval("SELECT slug FROM partners WHERE id = $1",
                                       unpayable.partner_id)
    assert f"not collected: {unpayable_slug}:" in err
    status = {r["partner_id"]: r["payment_status"] for r in await db.fetch(
        "SELECT partner_id, payment_status FROM settlement_statements WHERE run_id = $1",
        run["id"])}
    assert status == {payer.partner_id: "paid", payee.partner_id: "transferred",
                      unpayable.partner_id: "pending"}
    assert await _status(db, period) == "invoiced"
    invoice_id = await db.fetchval(
        "SELECT stripe_object_id FROM settlement_payments WHERE partner_id = $1"
        " AND kind = 'invoice'", payer.partner_id)
    invoice = await stripe_api.v1.invoices.retrieve_async(invoice_id)
    assert (invoice.status, invoice.amount_paid) == ("paid", 1200)
    [transfer] = [t for t in double.transfers.values() if t["destination"] == account]
    assert transfer["amount"] == 700

    refused = coalition(database_url, "settle", "close", "--period", period)
    assert refused.returncode == 1 and f"{unpayable_slug} (pending)" in refused.stderr

    # Payout details added, collecting again pays only what was missing.
    second = f"acct_{uuid.uuid4().hex[:16]}"
    double.accounts.add(second)
    await db.execute("INSERT INTO partner_payout_details (partner_id, method, stripe_account_id)"
                     " VALUES ($1, 'stripe_connect', $2)", unpayable.partner_id, second)
    requests = double.requests
    code, out, err = await _coalition_async(database_url, settings, env,
                                            "settle", "collect", "--period", period)
    assert code == 0, out + err
    assert double.requests == requests + 1
    assert [t["amount"] for t in double.transfers.values() if t["destination"] == second] \
        == [100]
    assert await db.fetchval("SELECT count(*) FROM settlement_payments WHERE partner_id = $1",
                             payer.partner_id) == 1
    assert await _status(db, period) == "paid"
    assert coalition(database_url, "settle", "close", "--period", period).returncode == 0
    assert await _status(db, period) == "closed"


async def test_draft_settlement_job_drafts_the_previous_month_once(client, db, database_url):
    partner = await new_partner(client, "Job Settle Brand")
    await add_terms(db, partner.partner_id, "2012-01-01", "1.2", "1.0")
    member = await new_member(db, [partner.partner_id])
    await earn(db, partner.partner_id, member, 500, "2012-05-20")
    jobs._database["dsn"] = database_url.asyncpg_dsn
    # The cron fires on the 1st at 02:10 UTC (04:10 in Warsaw): last month is 2012-05.
    fired = int(clock.wall_timestamp(datetime(2012, 6, 1, 2, 10, tzinfo=UTC)))
    try:
        assert await jobs.draft_settlement(fired) == "2012-05: drafted (draft)"
        assert await _status(db, "2012-05") == "draft"
        assert await db.fetchval(
            "SELECT s.net FROM settlement_statements s JOIN settlement_runs r"
            " ON r.id = s.run_id WHERE r.period = '2012-05' AND s.partner_id = $1",
            partner.partner_id) == 600
        # Fired again (a retry, a second worker): the run is left as it is.
        async with db.acquire() as conn:
            await runs.start_review(conn, "2012-05", now=NOW)
        assert await jobs.draft_settlement(fired) == "2012-05: exists"
        assert await _status(db, "2012-05") == "in_review"
        # Next month's firing while this run is still open: reported, not raised.
        july = int(clock.wall_timestamp(datetime(2012, 7, 1, 2, 10, tzinfo=UTC)))
        assert await jobs.draft_settlement(july) == (
            "2012-06: not drafted: The 2012-05 run is still open: finalize or discard it"
            " first.")
        assert await _status(db, "2012-06") is None
    finally:
        async with db.acquire() as conn:
            await runs.finalize(conn, "2012-05", "op@test", now=NOW, force=True)
