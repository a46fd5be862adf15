"""Settlement benchmark: one month of 1,000,000 postings across 50 partners and 200,000
members, settled by `settlement_compute`, against a bare GROUP BY of the same postings.

    python bench/settlement.py [--entries 500000] [--partners 50] [--members 200000]

Creates a scratch database (coalition_bench_settlement) on COALITION_DATABASE_URL's
server (or the embedded one), fills the ledger set-based with INSERT ... SELECT (70 %
earns with their lots, 25 % cross-brand redemptions consuming earlier lots, 5 % returns),
two postings per entry, then times the draft run and the bare aggregate and drops it.
Target: the run in at most 30 s and at most 10x the bare aggregate.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_databases  # noqa: E402
from coalition.migrate import upgrade  # noqa: E402
from settlement import runs  # noqa: E402

PERIOD = "2026-10"
START = "2026-10-01 00:00:00+02"

GENERATE = [
    # Partners with issuance and redemption accounts and rate cards; half of them change
    # price in mid-month.
    """INSERT INTO partners (slug, name) SELECT 'bench-' || i, 'Bench ' || i
         FROM generate_series(1, $partners) i""",
    """INSERT INTO accounts (code, kind, partner_id)
       SELECT 'partner:' || p.slug || ':' || k, 'partner_' || k, p.id
         FROM partners p, unnest(ARRAY['issuance', 'redemption']) k""",
    """INSERT INTO settlement_terms (partner_id, effective_from, issue_price, reimbursement,
                                     fee_percent, fee_fixed, created_by)
       SELECT id, '2026-01-01', 1.2 + (row_number() OVER (ORDER BY slug) % 5) / 10.0, 1.0,
              2.5, 10000, 'bench' FROM partners""",
    """INSERT INTO settlement_terms (partner_id, effective_from, issue_price, reimbursement,
                                     created_by)
       SELECT id, '2026-10-16', 1.35, 1.05, 'bench' FROM partners
        WHERE right(slug, 1) IN ('0', '2', '4', '6', '8')""",
    """INSERT INTO members (email, card_number)
       SELECT 'b' || i || '@bench.example', '73' || lpad(i::text, 14, '0')
         FROM generate_series(1, $members) i""",
    """INSERT INTO accounts (code, kind, member_id, balance, lower_bound)
       SELECT 'member:' || id, 'member_wallet', id, 0, 0 FROM members""",
    # Entries: g % 20 = 0 is a return of entry g-1 (an earn), 1..5 a redemption, else earn.
    """CREATE TEMP TABLE gen AS
       SELECT g,
              CASE WHEN g % 20 = 0 THEN 'reverse' WHEN g % 20 <= 5 THEN 'redeem'
                   ELSE 'earn' END AS kind,
              (SELECT array_agg(id ORDER BY slug) FROM partners)[1 + g % $partners] AS partner,
              (SELECT array_agg(id ORDER BY id) FROM members)
                  [1 + (g::bigint * 7919) % $members] AS member,
              10 + (g * 31) % 500 AS points,
              $start::timestamptz + (g::float8 / $entries) * interval '30 days' AS at
         FROM generate_series(1, $entries) g""",
    """INSERT INTO journal_entries (id, kind, partner_id, member_id, reverses_entry_id, actor,
                                    occurred_at, created_at)
       OVERRIDING SYSTEM VALUE
       SELECT g, kind, partner, member, CASE WHEN kind = 'reverse' THEN g - 1 END, 'bench',
              at, at FROM gen""",
    """INSERT INTO postings (entry_id, account_id, amount)
       SELECT g.g, leg.account, leg.amount
         FROM gen g
         JOIN accounts pa ON pa.partner_id = g.partner
              AND pa.kind = CASE WHEN g.kind = 'redeem' THEN 'partner_redemption'
                                 ELSE 'partner_issuance' END
         JOIN accounts w ON w.member_id = g.member,
              LATERAL (VALUES
                  (pa.id, CASE g.kind WHEN 'earn' THEN -g.points WHEN 'redeem' THEN g.points
                                      ELSE g.points / 2 END),
                  (w.id, CASE g.kind WHEN 'earn' THEN g.points WHEN 'redeem' THEN -g.points
                                     ELSE -(g.points / 2) END)) AS leg(account, amount)""",
    """INSERT INTO lots (id, member_id, partner_id, entry_id, points, remaining, status,
                         earned_at)
       OVERRIDING SYSTEM VALUE
       SELECT g, member, partner, g, points, points, 'active', at FROM gen
        WHERE kind = 'earn'""",
    # A redemption consumes the lot of entry g-7 (another partner's earn), a return
    # cancels half of the lot of the earn it reverses.
    """INSERT INTO lot_movements (lot_id, entry_id, kind, points)
       SELECT CASE kind WHEN 'redeem' THEN g - 7 ELSE g - 1 END, g,
              CASE kind WHEN 'redeem' THEN 'spend' ELSE 'cancel' END,
              CASE kind WHEN 'redeem' THEN points ELSE points / 2 END
         FROM gen WHERE kind <> 'earn' AND g > 7""",
    "ANALYZE",
]

BARE = """SELECT a.partner_id, a.kind, sum(p.amount), count(*)
            FROM postings p JOIN accounts a ON a.id = p.account_id
            JOIN journal_entries e ON e.id = p.entry_id
           WHERE e.occurred_at >= $1 AND e.occurred_at < $2
             AND a.kind IN ('partner_issuance', 'partner_redemption')
           GROUP BY 1, 2"""


async def bench(dsn: str, entries: int, partners: int, members: int,
                explain: bool = False) -> None:
    conn = await asyncpg.connect(dsn, command_timeout=3600)
    try:
        started = time.perf_counter()
        params = {"$partners": partners, "$members": members, "$entries": entries,
                  "$start": datetime.fromisoformat(START)}
        for sql in GENERATE:
            # Named placeholders become $1, $2... in order of first use.
            names = sorted({n for n in params if n in sql}, key=sql.index)
            for i, name in enumerate(names, 1):
                sql = sql.replace(name, f"${i}")
            await conn.execute(sql, *(params[n] for n in names))
        postings = await conn.fetchval("SELECT count(*) FROM postings")
        print(f"generated {entries:,} entries, {postings:,} postings, {partners} partners,"
              f" {members:,} members in {time.perf_counter() - started:.1f} s")
        period = runs.parse_period(PERIOD, "Europe/Warsaw")
        bare = []
        for _ in range(3):
            t = time.perf_counter()
            await conn.fetch(BARE, period.start, period.end)
            bare.append(time.perf_counter() - t)
        now = datetime(2026, 11, 2, tzinfo=UTC)
        if explain:   # the plans of the run's slow statements, printed
            conn.add_log_listener(lambda _c, message: print(message.message))
            for setting in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 200",
                            "SET auto_explain.log_nested_statements = on",
                            "SET auto_explain.log_analyze = on",
                            "SET auto_explain.log_level = 'notice'"):
                await conn.execute(setting)
        t = time.perf_counter()
        run = await runs.run_period(conn, PERIOD, "bench", now=now)
        first = time.perf_counter() - t
        t = time.perf_counter()
        await runs.run_period(conn, PERIOD, "bench", now=now)
        rerun = time.perf_counter() - t
        lines = await conn.fetchval("SELECT count(*) FROM settlement_lines WHERE run_id = $1",
                                    run["id"])
        claimed = await conn.fetchval("SELECT count(*) FROM settlement_entries")
        t = time.perf_counter()
        await runs.start_review(conn, PERIOD, now=now)
        await runs.finalize(conn, PERIOD, "bench", now=now, force=True)
        finalize = time.perf_counter() - t
        best = min(bare)
        print(f"bare GROUP BY of the period's postings: {best:.2f} s (best of 3)")
        print(f"settlement run (draft): {first:.2f} s = {first / best:.1f}x the bare"
              f" aggregate; re-run {rerun:.2f} s = {rerun / best:.1f}x;"
              f" {claimed:,} entries claimed, {lines} lines")
        print(f"review + finalize (content hash): {finalize:.2f} s")
        ok = first <= 30 and first / best <= 10
        print("target (<= 30 s and <= 10x):", "met" if ok else "NOT met")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--partners", type=int, default=50)
    parser.add_argument("--members", type=int, default=200_000)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
    parser.add_argument("--explain", action="store_true", help="Print slow plans.")
    args = parser.parse_args()
    with scratch_databases("coalition_bench_settlement", keep=args.keep) as (url,):
        upgrade(url)
        asyncio.run(bench(url.asyncpg_dsn, args.entries, args.partners, args.members,
                          args.explain))


if __name__ == "__main__":
    main()
