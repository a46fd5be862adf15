"""Three-way reconciliation over real runs: a clean run reconciles to nothing; an invoice
paid with another amount, a missing payout, a posting or a line edited behind the
triggers' back are each reported.

Each test settles its own 2017 period with its own partners (rate cards from 2017, so
the 2019 runs of test_settlement never meet them) and finalizes it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from settlement import runs
from settlement.reconcile import reconcile
from tests.helpers import new_partner
from tests.settlement_helpers import (
    add_terms,
    coalition_bonus,
    earn,
    new_member,
    redeem,
    reverse,
)
from tests.test_cli import coalition
from tests.test_rules_console import operator_browser

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class _Undo(Exception):
    pass


async def _finalized_run(client, db, period: str) -> tuple[int, dict, int]:
    """A owes 1000 x 1.2 = 1200; B earns 200 x 1.5 = 300 and reimburses 700 of A's
    points at 0.9 = -630, so it is owed 330. Returns (run, statements by name, A's
    earn entry)."""
    tag = uuid.uuid4().hex[:6]
    a = await new_partner(client, f"Recon A {tag}")
    b = await new_partner(client, f"Recon B {tag}")
    await add_terms(db, a.partner_id, "2017-01-01", "1.2", "1.0")
    await add_terms(db, b.partner_id, "2017-01-01", "1.5", "0.9")
    m = await new_member(db, [a.partner_id, b.partner_id])
    entry = await earn(db, a.partner_id, m, 1000, f"{period}-05")
    await earn(db, b.partner_id, m, 200, f"{period}-06")
    await redeem(db, b.partner_id, m, 700, f"{period}-10")
    async with db.acquire() as conn:
        run = await runs.run_period(conn, period, "op@test", now=NOW)
        await runs.start_review(conn, period, now=NOW)
        await runs.finalize(conn, period, "op@test", now=NOW, force=True)
    rows = await db.fetch("SELECT * FROM settlement_statements WHERE run_id = $1", run["id"])
    by_partner = {r["partner_id"]: r for r in rows}
    statements = {"a": by_partner[a.partner_id], "b": by_partner[b.partner_id]}
    assert (statements["a"]["net"], statements["b"]["net"]) == (1200, -330)
    return run["id"], statements, entry


# What the statement payment hook (settlement/collect.py) sets on the statement.
_STATEMENT_STATUS = {("invoice", "open"): "invoiced", ("invoice", "paid"): "paid",
                     ("transfer", "paid"): "transferred", ("transfer", "created"): "transferred",
                     ("sepa_credit", "exported"): "transfer_pending"}


async def _pay(db, statement, kind: str, amount: int, *, paid: int | None = None,
               status: str = "paid") -> int:
    """A payment row as the Stripe integration writes it, and the statement's status as
    its hook moves it (an invoice paid with another amount leaves it payment_failed)."""
    paid = amount if paid is None else paid
    state = _STATEMENT_STATUS[kind, status]
    if state == "paid" and paid != amount:
        state = "payment_failed"
    async with db.acquire() as conn:
        await runs.set_payment_status(conn, statement["id"], state)
    return await db.fetchval(
        "INSERT INTO settlement_payments (partner_id, kind, reference_type, reference_id,"
        " amount, currency, status, amount_paid) VALUES ($1, $2, 'statement', $3, $4, $5,"
        " $6, $7) RETURNING id", statement["partner_id"], kind, str(statement["id"]), amount,
        statement["currency"], status, paid)


async def _kinds(db, run_id: int) -> list[tuple[str, int | None]]:
    async with db.acquire() as conn:
        return sorted((d.kind, d.statement_id) for d in await reconcile(conn, run_id))


async def test_clean_run_reconciles_to_zero_and_missing_payments_are_reported(client, db):
    run_id, s, _ = await _finalized_run(client, db, "2017-03")
    assert await _kinds(db, run_id) == sorted([("payment_missing", s["a"]["id"]),
                                               ("transfer_missing", s["b"]["id"])])
    await _pay(db, s["a"], "invoice", 1200)
    transfer = await _pay(db, s["b"], "transfer", 330)
    assert await _kinds(db, run_id) == []

    # The transfer to the owed partner disappears: reported, with what was expected.
    await db.execute("DELETE FROM settlement_payments WHERE id = $1", transfer)
    async with db.acquire() as conn:
        [missing] = await reconcile(conn, run_id)
    assert (missing.kind, missing.partner_id, missing.statement_id) == (
        "transfer_missing", s["b"]["partner_id"], s["b"]["id"])
    assert missing.expected == "payout of 330 PLN" and missing.actual == "none"
    await _pay(db, s["b"], "sepa_credit", 330, status="exported", paid=0)
    assert await _kinds(db, run_id) == []
    # Marked transferred by hand while the bank file is only exported.
    async with db.acquire() as conn:
        await runs.set_payment_status(conn, s["b"]["id"], "transferred")
        [status] = await reconcile(conn, run_id)
    assert (status.kind, status.statement_id) == ("payment_status_mismatch", s["b"]["id"])
    assert "sepa_credit" in status.actual and "exported" in status.actual


async def test_invoice_paid_with_a_different_amount(client, db):
    run_id, s, _ = await _finalized_run(client, db, "2017-04")
    invoice = await _pay(db, s["a"], "invoice", 1200, status="open", paid=0)
    await _pay(db, s["b"], "transfer", 330)
    assert await _kinds(db, run_id) == []
    # The webhook records what Stripe says was paid.
    await db.execute("UPDATE settlement_payments SET status = 'paid', amount_paid = 1100"
                     " WHERE id = $1", invoice)
    async with db.acquire() as conn:
        [paid] = await reconcile(conn, run_id)
    assert (paid.kind, paid.statement_id, paid.expected, paid.actual) == (
        "paid_amount_mismatch", s["a"]["id"], "1200 PLN", "1100 PLN")
    # An invoice for the wrong amount altogether, and a payout for a partner who owes.
    await db.execute("UPDATE settlement_payments SET amount = 1000, amount_paid = 1000"
                     " WHERE id = $1", invoice)
    await _pay(db, s["a"], "transfer", 50)
    assert await _kinds(db, run_id) == sorted([
        ("payment_amount_mismatch", s["a"]["id"]), ("paid_amount_mismatch", s["a"]["id"]),
        ("payment_wrong_kind", s["a"]["id"])])


async def test_posting_edited_behind_the_apps_back_is_ledger_changed(client, db):
    run_id, s, entry = await _finalized_run(client, db, "2017-05")
    await _pay(db, s["a"], "invoice", 1200)
    await _pay(db, s["b"], "transfer", 330)
    async with db.acquire() as conn:
        with pytest.raises(_Undo):
            async with conn.transaction():
                await conn.execute("ALTER TABLE postings DISABLE TRIGGER USER")
                await conn.execute(
                    "UPDATE postings p SET amount = p.amount + 100 FROM accounts a"
                    " WHERE a.id = p.account_id AND a.kind = 'partner_issuance'"
                    " AND p.entry_id = $1", entry)
                await conn.execute("ALTER TABLE postings ENABLE TRIGGER USER")
                [changed] = await reconcile(conn, run_id)
                assert (changed.kind, changed.statement_id) == ("ledger_changed",
                                                                s["a"]["id"])
                assert changed.expected == "1000 points, 1200 PLN"
                assert changed.actual == "900 points, 1080 PLN"
                assert "issuance" in changed.cause
                raise _Undo
        assert await reconcile(conn, run_id) == []


async def test_line_edited_after_finalization_breaks_hash_and_totals(client, db):
    run_id, s, _ = await _finalized_run(client, db, "2017-06")
    await _pay(db, s["a"], "invoice", 1200)
    await _pay(db, s["b"], "transfer", 330)
    async with db.acquire() as conn:
        with pytest.raises(_Undo):
            async with conn.transaction():
                await conn.execute("ALTER TABLE settlement_lines DISABLE TRIGGER USER")
                await conn.execute("UPDATE settlement_lines SET amount = amount + 1"
                                   " WHERE statement_id = $1", s["a"]["id"])
                await conn.execute("ALTER TABLE settlement_lines ENABLE TRIGGER USER")
                found = await reconcile(conn, run_id)
                assert sorted((d.kind, d.statement_id) for d in found) == sorted([
                    ("hash_mismatch", None), ("statement_total_mismatch", s["a"]["id"]),
                    ("ledger_changed", s["a"]["id"])])
                raise _Undo


async def test_draft_run_expects_no_payment_yet(client, db):
    tag = uuid.uuid4().hex[:6]
    a = await new_partner(client, f"Recon D {tag}")
    await add_terms(db, a.partner_id, "2017-01-01", "1.2", "1.0")
    m = await new_member(db, [a.partner_id])
    await earn(db, a.partner_id, m, 10, "2017-07-03")
    async with db.acquire() as conn:
        run = await runs.run_period(conn, "2017-07", "op@test", now=NOW)
        assert await reconcile(conn, run["id"]) == []
        # Finalized (not discarded, so no later run claims its entries): now it is owed.
        await runs.start_review(conn, "2017-07", now=NOW)
        await runs.finalize(conn, "2017-07", "op@test", now=NOW, force=True)
        assert [d.kind for d in await reconcile(conn, run["id"])] == ["payment_missing"]


async def test_cli_and_operator_page_list_the_discrepancies(app, client, db, database_url):
    _, s, _ = await _finalized_run(client, db, "2017-08")
    await _pay(db, s["a"], "invoice", 1200, paid=1150)
    bad = coalition(database_url, "settle", "reconcile", "--period", "2017-08")
    assert bad.returncode == 1, bad.stderr
    assert "paid_amount_mismatch" in bad.stdout and "transfer_missing" in bad.stdout
    assert "2 discrepancy" in bad.stdout
    browser = await operator_browser(app)
    async with browser:
        page = await browser.get("/operator/reconciliation?period=2017-08")
        assert page.status_code == 200
        assert "paid_amount_mismatch" in page.text and "transfer_missing" in page.text
        wrong = await browser.get("/operator/reconciliation?period=2017-13")
        assert wrong.status_code == 422 and "period" in wrong.text
        missing = await browser.get("/operator/reconciliation?period=2016-01")
        assert missing.status_code == 404

    # Stripe's late correction: paid in full after all, but the hook never ran.
    await db.execute("UPDATE settlement_payments SET amount_paid = 1200 WHERE reference_id"
                     " = $1", str(s["a"]["id"]))
    middle = coalition(database_url, "settle", "reconcile", "--period", "2017-08")
    assert middle.returncode == 1 and "payment_status_mismatch" in middle.stdout
    assert "still says payment_failed" in middle.stdout
    async with db.acquire() as conn:
        await runs.set_payment_status(conn, s["a"]["id"], "paid")
    await _pay(db, s["b"], "transfer", 330)
    good = coalition(database_url, "settle", "reconcile", "--period", "2017-08")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "agree" in good.stdout
    async with await operator_browser(app) as browser:
        page = await browser.get("/operator/reconciliation?period=2017-08")
        assert 'id="clean"' in page.text


async def test_fx_late_lines_reversals_and_bonus_recompute_exactly(client, db):
    """The ledger leg over every kind of valued line: a weekly EUR partner with an FX
    rate, a late entry of the week before, a price change, reversals of an earn and of
    a redemption, coalition-funded points and a percent fee."""
    await db.execute("INSERT INTO fx_rates (base, quote, effective_from, rate)"
                     " VALUES ('PLN', 'EUR', '2017-01-01', 0.2345) ON CONFLICT DO NOTHING")
    e = await new_partner(client, f"Recon Euro {uuid.uuid4().hex[:6]}")
    await add_terms(db, e.partner_id, "2017-01-01", "1.234567", "0.987", currency="EUR",
                    cycle="weekly", fee_percent="1.5")
    await add_terms(db, e.partner_id, "2017-03-08", "1.3", "1.01", currency="EUR",
                    cycle="weekly", fee_percent="1.5")
    m = await new_member(db, [e.partner_id])
    late = await earn(db, e.partner_id, m, 333, "2017-03-01")          # 2017-W09
    await earn(db, e.partner_id, m, 777, "2017-03-09")                 # 2017-W10
    spent = await redeem(db, e.partner_id, m, 101, "2017-03-09T13:00")
    await reverse(db, e.partner_id, late, 33, "2017-03-10")
    await reverse(db, e.partner_id, spent, 11, "2017-03-10T13:00")
    await coalition_bonus(db, e.partner_id, m, 17, "2017-03-11")
    async with db.acquire() as conn:
        run = await runs.run_period(conn, "2017-W10", "op@test", now=NOW)
        types = {r["type"] for r in await conn.fetch(
            "SELECT type FROM settlement_lines WHERE run_id = $1 AND late", run["id"])}
        assert types == {"issuance", "platform_fee_percent"}
        assert await reconcile(conn, run["id"]) == []
        await runs.start_review(conn, "2017-W10", now=NOW)
        await runs.finalize(conn, "2017-W10", "op@test", now=NOW, force=True)
        statement = await conn.fetchrow("SELECT * FROM settlement_statements"
                                        " WHERE run_id = $1", run["id"])
        assert statement["currency"] == "EUR" and statement["net"] > 0
        assert [d.kind for d in await reconcile(conn, run["id"])] == ["payment_missing"]
    await _pay(db, statement, "invoice", statement["net"])
    assert await _kinds(db, run["id"]) == []
