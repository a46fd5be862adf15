"""The importer under concurrency: two runs of one file post each row exactly once."""

import asyncio
import csv
from pathlib import Path

from coalition.importer import import_transactions
from coalition.verify import verify_ledger


async def test_concurrent_runs_of_one_file_post_each_row_once(client, partner, db, database_url,
                                                            tmp_path: Path):
    customers = []
    for i in range(20):
        await partner.enroll(partner_customer_id=f"K{i}")
        customers.append(f"K{i}")
    slug = await db.fetchval("SELECT slug FROM partners WHERE id = $1", partner.partner_id)
    path = tmp_path / "twice.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "points", "order_reference", "occurred_at"])
        for n in range(3000):
            writer.writerow([customers[n % 20], n % 7 + 1, f"T-{n}", "2026-09-01T10:00:00Z"])
    first, second = await asyncio.gather(
        import_transactions(database_url.asyncpg_dsn, slug, path, chunk_size=500, workers=3),
        import_transactions(database_url.asyncpg_dsn, slug, path, chunk_size=700, workers=2))
    assert first.posted + second.posted == 3000
    assert first.skipped + second.skipped == 3000
    assert first.errors == second.errors == []
    total = await db.fetchval(
        "SELECT count(*) FROM journal_entries WHERE partner_id = $1", partner.partner_id)
    assert total == 3000
    async with db.acquire() as conn:
        assert await verify_ledger(conn) == []


async def test_a_large_import_refreshes_the_ledger_statistics(partner, db, database_url,
                                                               tmp_path: Path):
    await partner.enroll(partner_customer_id="A1")
    slug = await db.fetchval("SELECT slug FROM partners WHERE id = $1", partner.partner_id)
    path = tmp_path / "opening.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "points", "order_reference", "occurred_at"])
        writer.writerows([["A1", 5, f"O-{n}", "2026-09-01T10:00:00Z"] for n in range(3)])
    query = ("SELECT max(last_analyze) FROM pg_stat_user_tables"
             " WHERE relname IN ('journal_entries', 'postings', 'lots', 'accounts')")
    before = await db.fetchval(query)
    report = await import_transactions(database_url.asyncpg_dsn, slug, path, workers=1,
                                       analyze_after=3)
    assert report.posted == 3
    await db.execute("SELECT pg_stat_clear_snapshot()")
    after = await db.fetchval(query)
    assert after is not None and (before is None or after > before)
