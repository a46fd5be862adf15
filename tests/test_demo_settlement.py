"""The demo coalition settles end to end through the Stripe sandbox (issue 5's "done
when"): its past months are invoiced, charged, paid out by Connect transfer and SEPA,
closed and reconciled to zero while loading; then the operator settles the last month
through the CLI (review, finalize) and the portal (invoice and pay out, the SEPA file,
close) while the sandbox delivers its signed webhooks to the running server, and the
CLI reconciles it to zero."""
# ruff: noqa: F811  (the fixtures imported below are test parameters by design)

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import stripe

from settlement import sepa, stripe_sandbox
from settlement.reconcile import reconcile
from tests.live import serve
from tests.portal import csrf_of, submit
from tests.stripe_fixtures import SECRET_KEY, WEBHOOK_SECRET, localstripe  # noqa: F401
from tests.test_cli import coalition
from web.app import create_app
from web.demo import DEMO_LOGINS, load_demo


def test_the_demo_settles_a_month_end_to_end(settings, demo_database, localstripe):
    configured = settings.model_copy(update={
        "stripe_secret_key": SECRET_KEY, "stripe_api_base": localstripe,
        "stripe_connect_base": "", "stripe_webhook_secret": WEBHOOK_SECRET,
        "sepa_debtor_name": "Coalition Operator Sp. z o.o.",
        "sepa_debtor_iban": "PL61109010140000071219812874", "sepa_debtor_bic": "WBKPPLPP"})
    api = stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe},
                              http_client=stripe.HTTPXClient(allow_sync_methods=False))
    asyncio.run(load_demo(demo_database, extra_members=10, stripe=configured))
    last = asyncio.run(_history_is_paid_closed_and_reconciled(demo_database, api))

    # The last month, as the operator does it.
    for step in (["settle", "review", "--period", last],
                 ["settle", "finalize", "--period", last, "--force"]):
        result = coalition(demo_database, *step)
        assert result.returncode == 0, result.stderr
    assert "finalized" in result.stdout
    with serve(create_app(configured, demo_database)) as address:
        stripe_sandbox.deliver_webhooks(localstripe, f"{address}/webhooks/stripe",
                                        secret=WEBHOOK_SECRET, key=SECRET_KEY)
        asyncio.run(_settle_in_the_portal(address, demo_database, last))
    result = coalition(demo_database, "settle", "reconcile", "--period", last)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ledger, statements and payments agree" in result.stdout


async def _history_is_paid_closed_and_reconciled(url, api: stripe.StripeClient) -> str:
    conn = await asyncpg.connect(url.asyncpg_dsn)
    try:
        runs = await conn.fetch("SELECT id, period, status FROM settlement_runs"
                                " ORDER BY period_start")
        *history, last = runs
        assert last["status"] == "draft" and len(history) >= 4
        assert {r["status"] for r in history} == {"closed"}
        for run in history:
            assert await reconcile(conn, run["id"]) == [], run["period"]
        # The demo affiliates' commissions are on their partners' closed statements.
        assert await conn.fetchval(
            "SELECT count(DISTINCT l.partner_id) FROM settlement_lines l JOIN settlement_runs"
            " r ON r.id = l.run_id WHERE l.type = 'affiliate_commission'"
            " AND r.status = 'closed'") >= 2
        payments = await conn.fetch("SELECT kind, status, stripe_object_id, amount"
                                    " FROM settlement_payments")
        kinds = {p["kind"] for p in payments}
        assert kinds == {"invoice", "transfer", "sepa_credit"}, kinds
        assert {p["status"] for p in payments} == {"paid", "created"}
        invoice = next(p for p in payments if p["kind"] == "invoice")
        paid = await api.v1.invoices.retrieve_async(invoice["stripe_object_id"])
        assert (paid.status, paid.amount_paid) == ("paid", invoice["amount"])
        transfer = next(p for p in payments if p["kind"] == "transfer")
        async with httpx.AsyncClient(base_url=str(api._requestor.base_addresses["api"]),
                                     auth=(SECRET_KEY, "")) as client:
            sent = (await client.get(f"/v1/transfers/{transfer['stripe_object_id']}")).json()
        assert sent["amount"] == transfer["amount"] and sent["destination"].startswith("acct_")
        assert await conn.fetchval("SELECT count(*) FROM sepa_batches") == \
            await conn.fetchval("SELECT count(DISTINCT sepa_message_id) FROM"
                                " settlement_payments WHERE kind = 'sepa_credit'") > 0
        return last["period"]
    finally:
        await conn.close()


async def _settle_in_the_portal(address: str, url, period: str) -> None:
    email, password, _ = DEMO_LOGINS[0]
    conn = await asyncpg.connect(url.asyncpg_dsn)
    async with httpx.AsyncClient(base_url=address, timeout=30) as browser:
        try:
            login = await submit(browser, "/login", "/login", email=email, password=password)
            assert login.status_code == 302, login.text
            run_id = await conn.fetchval("SELECT id FROM settlement_runs WHERE period = $1",
                                         period)
            page = f"/operator/settlement/{run_id}"
            collected = await _press(browser, page, "collect")
            assert collected.status_code == 303, collected.text[-2000:]
            ready = await conn.fetchval(
                "SELECT count(*) FROM settlement_payments p JOIN settlement_statements s ON"
                " p.reference_id = s.id::text AND p.reference_type = 'statement'"
                " WHERE s.run_id = $1 AND p.kind = 'sepa_credit'", run_id)
            if ready:
                payments = await browser.get("/operator/payments")
                batch = await browser.post("/operator/payments/sepa", data={
                    "_csrf_token": csrf_of(payments), "currency": "PLN"})
                assert batch.status_code == 201 and b"pain.001" in batch.content, batch.text[:500]
                # The bank statement shows the credits paid.
                pool = await asyncpg.create_pool(url.asyncpg_dsn, min_size=1, max_size=2)
                try:
                    for row in await pool.fetch(
                            "SELECT id FROM settlement_payments WHERE status = 'exported'"):
                        await sepa.mark(pool, row["id"], "paid")
                finally:
                    await pool.close()
            await _wait_for_webhooks(conn, run_id)
            closed = await _press(browser, page, "close")
            assert closed.status_code == 303, closed.text[-2000:]
            assert await conn.fetchval("SELECT status FROM settlement_runs WHERE id = $1",
                                       run_id) == "closed"
            shown = await browser.get(f"/operator/reconciliation?period={period}")
            assert shown.status_code == 200
        finally:
            await conn.close()


async def _press(browser: httpx.AsyncClient, page: str, action: str) -> httpx.Response:
    """A lifecycle button on the run's page."""
    form = await browser.get(page)
    return await browser.post(page, data={"_csrf_token": csrf_of(form), "action": action})


async def _wait_for_webhooks(conn: asyncpg.Connection, run_id: int) -> None:
    """Every Stripe object the month's collection made is heard back from the sandbox
    (it signs and posts its events a second after the call) and processed; they change
    nothing, as collecting already recorded what Stripe answered."""
    objects = {r["stripe_object_id"] for r in await conn.fetch(
        "SELECT p.stripe_object_id FROM settlement_payments p JOIN settlement_statements s"
        " ON p.reference_id = s.id::text AND p.reference_type = 'statement'"
        " WHERE s.run_id = $1 AND p.stripe_object_id IS NOT NULL", run_id)}
    assert objects
    deadline = time.monotonic() + 20
    while True:
        heard = {r["object_id"] for r in await conn.fetch(
            "SELECT payload -> 'data' -> 'object' ->> 'id' AS object_id FROM stripe_events"
            " WHERE payload -> 'data' -> 'object' ->> 'id' = ANY($1::text[])"
            " AND processed_at IS NOT NULL AND error IS NULL"
            " AND type IN ('invoice.payment_succeeded', 'transfer.created')", list(objects))}
        if heard == objects:
            return
        if time.monotonic() > deadline:
            events = await conn.fetch("SELECT type, outcome, error FROM stripe_events")
            raise AssertionError(f"no webhook for {objects - heard}; events: {events}")
        await asyncio.sleep(0.2)
