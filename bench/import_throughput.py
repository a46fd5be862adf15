"""Bulk import throughput: `coalition import transactions` on a generated file.

    python bench/import_throughput.py [--rows 200000] [--members 10000]

Creates a scratch database (coalition_bench_import, dropped at the end) on
COALITION_DATABASE_URL's server or the embedded one, enrols the members, writes a CSV of
earnings by customer id, and runs the real CLI twice: the first run posts every row, the
second must post nothing. Prints rows/s for each. Target: >= 20,000 rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_databases  # noqa: E402
from coalition.db import (  # noqa: E402
    DatabaseUrl,
)
from coalition.migrate import upgrade  # noqa: E402


async def enrol(dsn: str, members: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """
            WITH p AS (INSERT INTO partners (slug, name) VALUES ('importer', 'Import Bench')
                       RETURNING id),
                 a AS (INSERT INTO accounts (code, kind, partner_id)
                       SELECT 'partner:importer:' || k, 'partner_' || k, p.id
                         FROM p, unnest(ARRAY['issuance', 'redemption']) AS k),
                 m AS (INSERT INTO members (email, card_number)
                       SELECT 'imp' || i || '@example.com', '72' || lpad(i::text, 14, '0')
                         FROM generate_series(1, $1) AS i RETURNING id, email),
                 w AS (INSERT INTO accounts (code, kind, member_id, balance, lower_bound)
                       SELECT 'member:' || id, 'member_wallet', id, 0, 0 FROM m)
            INSERT INTO member_links (partner_id, member_id, customer_id)
            SELECT p.id, m.id, split_part(m.email, '@', 1) FROM p, m
            """, members)
    finally:
        await conn.close()


def run_import(url: str, path: Path, workers: int) -> tuple[float, str]:
    env = {**os.environ, "COALITION_DATABASE_URL": url, "COALITION_LOG_LEVEL": "WARNING"}
    started = time.perf_counter()
    command = [sys.executable, "-m", "web", "import", "transactions", str(path),
               "--partner", "importer", "--workers", str(workers)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT,
                            check=True)
    return time.perf_counter() - started, result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with scratch_databases("coalition_bench_import") as (url,):
        run(args, url)


def run(args: argparse.Namespace, url: DatabaseUrl) -> None:
    """Enrol, write the file, import it twice and verify the ledger."""
    upgrade(url)
    asyncio.run(enrol(url.asyncpg_dsn, args.members))
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "earnings.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["customer_id", "points", "order_reference", "occurred_at"])
            for i in range(args.rows):
                writer.writerow([f"imp{rng.randint(1, args.members)}", rng.randint(1, 500),
                                 f"ORD-{i}", f"2026-10-{rng.randint(1, 28):02d}T12:00:00"])
        for label in ("first run", "re-run"):
            seconds, summary = run_import(url.raw, path, args.workers)
            print(f"{label}: {args.rows:,} rows in {seconds:.2f} s wall "
                  f"({args.rows / seconds:,.0f} rows/s incl. process start) | {summary}")
            if label == "first run":
                rate = float(re.search(r"\(([\d,]+) rows/s\)", summary).group(1).replace(",", ""))
                print(f"target >= 20,000 rows/s: {'met' if rate >= 20_000 else 'NOT met'}")
    verify = subprocess.run([sys.executable, "-m", "web", "ledger", "verify"], cwd=ROOT,
                            env={**os.environ, "COALITION_DATABASE_URL": url.raw},
                            capture_output=True, text=True)
    print(verify.stdout.strip() or verify.stderr.strip())


if __name__ == "__main__":
    main()
