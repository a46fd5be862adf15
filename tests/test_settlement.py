"""Settlement runs over real ledger activity: hand-computed statements, effective-dated
prices, FX, netting, the flow matrix, late entries, re-runs, lifecycle and immutability.

Each test settles its own past period with its own partners (rate cards from 2019 on),
and finalizes or discards its run: one run per cycle may be open at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from coalition.errors import Conflict, DomainError
from settlement import runs, statements
from tests.helpers import new_partner
from tests.settlement_helpers import (
    add_terms,
    coalition_bonus,
    earn,
    new_member,
    redeem,
    reverse,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def _lines(db, run_id: int, partner) -> list[tuple]:
    rows = await db.fetch(
        "SELECT type, late, points, unit_price, amount_exact, amount FROM settlement_lines"
        " WHERE run_id = $1 AND partner_id = $2 ORDER BY line_no", run_id, partner)
    return [(r["type"], r["late"], r["points"], r["unit_price"], r["amount"]) for r in rows]


async def _statement(db, run_id: int, partner) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM settlement_statements WHERE run_id = $1"
                             " AND partner_id = $2", run_id, partner)


async def _finalize(conn, period: str) -> None:
    await runs.start_review(conn, period, now=NOW)
    await runs.finalize(conn, period, "op@test", now=NOW, force=True)


async def test_hand_computed_statements_netting_and_flows(client, db):
    a = await new_partner(client, "Settle Alpha")
    b = await new_partner(client, "Settle Beta")
    await add_terms(db, a.partner_id, "2019-01-01", "1.2", "1.0", fee_percent="2.5",
                    fee_fixed=5000)
    await add_terms(db, b.partner_id, "2019-01-01", "1.5", "0.9")
    m = await new_member(db, [a.partner_id, b.partner_id])
    earned = await earn(db, a.partner_id, m, 1000, "2019-03-05")
    await earn(db, b.partner_id, m, 200, "2019-03-06")
    await redeem(db, b.partner_id, m, 700, "2019-03-10")      # A's points, spent at B
    await reverse(db, a.partner_id, earned, 100, "2019-03-12")  # a return at A
    await coalition_bonus(db, a.partner_id, m, 50, "2019-03-15")

    async with db.acquire() as conn:
        run = await runs.run_period(conn, "2019-03", "op@test", now=NOW)
    assert run["status"] == "draft" and run["cycle"] == "monthly"
    assert await _lines(db, run["id"], a.partner_id) == [
        ("issuance", False, 1000, Decimal("1.200000"), 1200),
        ("reversal", False, -100, Decimal("1.200000"), -120),
        ("coalition_funded_bonus", False, 50, None, 0),
        # 2.5 % of (1000 - 100) x 1.2 gr
        ("platform_fee_percent", False, 900, Decimal("2.500000"), 27),
        ("platform_fee_fixed", False, None, None, 5000),
    ]
    assert await _lines(db, run["id"], b.partner_id) == [
        ("issuance", False, 200, Decimal("1.500000"), 300),
        ("reimbursement", False, 700, Decimal("0.900000"), -630),
    ]
    sa, sb = await _statement(db, run["id"], a.partner_id), await _statement(db, run["id"],
                                                                           b.partner_id)
    assert (sa["net"], sa["total_debit"], sa["total_credit"]) == (6107, 6227, -120)
    assert (sb["net"], sb["payment_status"]) == (-330, "pending")
    async with db.acquire() as conn:
        flows = await statements.flow_matrix(conn, run["id"], a.partner_id)
        netted = {n["currency"]: n for n in await statements.netting(conn, run["id"])}
    cells = {(f["issuer_partner_id"], f["redeemer_partner_id"]): (f["points"], f["value"])
             for f in flows}
    assert cells == {(a.partner_id, b.partner_id): (700, 630)}
    # Netting: the operator's balancing figure is the sum of the nets of this run's
    # statements (other tests' partners may have fixed fees here too).
    nets = await db.fetch("SELECT net FROM settlement_statements WHERE run_id = $1",
                          run["id"])
    pln = netted["PLN"]
    assert pln["collections"] - pln["payouts"] == pln["operator_net"] == sum(
        r["net"] for r in nets)
    async with db.acquire() as conn:
        await _finalize(conn, "2019-03")
        assert await runs.verify(conn, run["id"]) == []


async def test_price_change_mid_period_and_return_at_original_price(client, db):
    a = await new_partner(client, "Settle Gamma")
    await add_terms(db, a.partner_id, "2019-01-01", "1.2", "1.0")
    await add_terms(db, a.partner_id, "2019-05-15", "1.3", "1.1")
    m = await new_member(db, [a.partner_id])
    first = await earn(db, a.partner_id, m, 100, "2019-05-10")
    await earn(db, a.partner_id, m, 100, "2019-05-20")
    await reverse(db, a.partner_id, first, 50, "2019-05-25")  # priced when it was earned
    await redeem(db, a.partner_id, m, 10, "2019-05-26")
    async with db.acquire() as conn:
        run = await runs.run_period(conn, "2019-05", "op@test", now=NOW)
        lines = await _lines(db, run["id"], a.partner_id)
        assert lines == [
            ("issuance", False, 100, Decimal("1.200000"), 120),
            ("issuance", False, 100, Decimal("1.300000"), 130),
            ("reversal", False, -50, Decimal("1.200000"), -60),
            ("reimbursement", False, 10, Decimal("1.100000"), -11),
        ]
        await _finalize(conn, "2019-05")


async def test_fx_line_rounded_once(client, db):
    c = await new_partner(client, "Settle Euro")
    await db.execute("INSERT INTO fx_rates (base, quote, effective_from, rate)"
                     " VALUES ('PLN', 'EUR', '2019-01-01', 0.23)"
                     " ON CONFLICT DO NOTHING")
    await add_terms(db, c.partner_id, "2019-01-01", "1.234567", "1.0", currency="EUR",
                    cycle="weekly")
    m = await new_member(db, [c.partner_id])
    await earn(db, c.partner_id, m, 1000, "2019-06-05")       # ISO week 2019-W23
    async with db.acquire() as conn:
        run = await runs.run_period(conn, "2019-W23", "op@test", now=NOW)
        line = await db.fetchrow("SELECT * FROM settlement_lines WHERE run_id = $1"
                                 " AND partner_id = $2", run["id"], c.partner_id)
        # 1000 x 1.234567 gr x 0.23 = 283.95041 euro cents -> 284
        assert line["amount_exact"] == Decimal("283.95041000")
        assert (line["amount"], line["fx_rate"]) == (284, Decimal("0.23000000"))
        statement = await _statement(db, run["id"], c.partner_id)
        assert (statement["currency"], statement["net"]) == ("EUR", 284)
        await _finalize(conn, "2019-W23")


async def test_late_entry_lands_in_next_period_and_rerun_is_idempotent(client, db):
    a = await new_partner(client, "Settle Delta")
    await add_terms(db, a.partner_id, "2019-01-01", "1.0", "1.0", cycle="weekly")
    m = await new_member(db, [a.partner_id])
    await earn(db, a.partner_id, m, 100, "2019-07-02")        # 2019-W27
    async with db.acquire() as conn:
        run = await runs.run_period(conn, "2019-W27", "op@test", now=NOW)
        first = await _lines(db, run["id"], a.partner_id)
        again = await runs.run_period(conn, "2019-W27", "op@test", now=NOW)
        assert again["id"] == run["id"]
        assert await _lines(db, run["id"], a.partner_id) == first == [
            ("issuance", False, 100, Decimal("1.000000"), 100)]
        assert await db.fetchval("SELECT count(*) FROM settlement_lines WHERE run_id = $1"
                                 " AND partner_id = $2", run["id"], a.partner_id) == 1
        await _finalize(conn, "2019-W27")
        # Posted after W27 was finalized, but it happened in W27: settles in W28, late.
        await earn(db, a.partner_id, m, 40, "2019-07-03")
        await earn(db, a.partner_id, m, 5, "2019-07-09")     # W28 itself
        nxt = await runs.run_period(conn, "2019-W28", "op@test", now=NOW)
        assert await _lines(db, nxt["id"], a.partner_id) == [
            ("issuance", False, 5, Decimal("1.000000"), 5),
            ("issuance", True, 40, Decimal("1.000000"), 40)]
        assert (await _statement(db, nxt["id"], a.partner_id))["late_lines"] == 1
        await runs.discard(conn, "2019-W28")


async def test_lifecycle_immutability_and_hash(client, db):
    a = await new_partner(client, "Settle Epsilon")
    await add_terms(db, a.partner_id, "2019-01-01", "1.0", "1.0", cycle="weekly")
    m = await new_member(db, [a.partner_id])
    await earn(db, a.partner_id, m, 10, "2019-08-06")        # 2019-W32
    async with db.acquire() as conn:
        with pytest.raises(DomainError) as refused:
            await runs.run_period(conn, "2019-W99", "op@test", now=NOW)
        assert refused.value.field == "period"
        with pytest.raises(DomainError):
            await runs.run_period(conn, "2999-01", "op@test", now=NOW)  # not over
        run = await runs.run_period(conn, "2019-W32", "op@test", now=NOW,
                                    dispute_window_days=7)
        with pytest.raises(Conflict):                          # one open run per cycle
            await runs.run_period(conn, "2019-W33", "op@test", now=NOW)
        with pytest.raises(Conflict):                          # review first
            await runs.finalize(conn, "2019-W32", "op@test", now=NOW)
        await runs.start_review(conn, "2019-W32", now=NOW)
        with pytest.raises(Conflict):                          # a review is not re-run
            await runs.run_period(conn, "2019-W32", "op@test", now=NOW)
        with pytest.raises(Conflict) as window:
            await runs.finalize(conn, "2019-W32", "op@test", now=NOW)
        assert window.value.slug == "dispute-window-open"
        done = await runs.finalize(conn, "2019-W32", "op@test", now=NOW, force=True)
        assert done["status"] == "finalized" and len(done["content_hash"]) == 64

        line_id = await db.fetchval("SELECT id FROM settlement_lines WHERE run_id = $1",
                                    run["id"])
        for sql in ("UPDATE settlement_lines SET amount = amount + 1 WHERE id = $1",
                    "DELETE FROM settlement_lines WHERE id = $1"):
            with pytest.raises(asyncpg.PostgresError) as frozen:
                await db.execute(sql, line_id)
            assert frozen.value.sqlstate == "SE010"
        with pytest.raises(asyncpg.PostgresError):
            await db.execute("UPDATE settlement_statements SET net = net + 1,"
                             " total_debit = total_debit + 1 WHERE run_id = $1", run["id"])
        with pytest.raises(asyncpg.PostgresError):
            await db.execute("DELETE FROM settlement_entries WHERE run_id = $1", run["id"])
        with pytest.raises(asyncpg.PostgresError):
            await db.execute("UPDATE settlement_runs SET status = 'draft' WHERE id = $1",
                             run["id"])
        with pytest.raises(asyncpg.PostgresError):
            await db.execute("DELETE FROM settlement_runs WHERE id = $1", run["id"])
        # The payment state still moves.
        statement = await _statement(db, run["id"], a.partner_id)
        await runs.set_payment_status(conn, statement["id"], "paid")

        # Behind the triggers' back (a superuser disabling them), the hash tells.
        with pytest.raises(_Undo):
            async with conn.transaction():
                await conn.execute("ALTER TABLE settlement_lines DISABLE TRIGGER USER")
                await conn.execute("UPDATE settlement_lines SET amount = amount + 1,"
                                   " amount_exact = amount_exact + 1 WHERE id = $1", line_id)
                await conn.execute("ALTER TABLE settlement_lines ENABLE TRIGGER USER")
                problems = await runs.verify(conn, run["id"])
                assert "content hash" in problems[0] and "lines sum" in problems[1]
                detail = await statements.get_statement(conn, statement["id"], a.partner_id)
                assert detail["integrity"] == "mismatch"
                raise _Undo
        assert await runs.verify(conn, run["id"]) == []

        with pytest.raises(Conflict):              # other statements still unpaid?
            if await db.fetchval("SELECT count(*) FROM settlement_statements WHERE run_id"
                                 " = $1 AND payment_status NOT IN ('paid', 'nothing_due')",
                                 run["id"]) == 0:
                raise Conflict("x", "x", "nothing unpaid: skip this check")
            await runs.close(conn, "2019-W32", now=NOW)
        for row in await db.fetch("SELECT id FROM settlement_statements WHERE run_id = $1",
                                  run["id"]):
            await runs.set_payment_status(conn, row["id"], "paid")
        assert (await runs.close(conn, "2019-W32", now=NOW))["status"] == "closed"


class _Undo(Exception):
    pass
