"""Bulk earning from a CSV file: `coalition import transactions FILE --partner SLUG`.

Rows are validated in Python, then each chunk is COPY'd into a temporary table and
posted by a handful of set-based statements in one transaction: entries, postings, lots
and wallet totals for thousands of rows at a time. Every row's idempotency key is
"import <order reference>", so re-running a file posts nothing new.

Columns (header required): card_number or customer_id, points, order_reference,
occurred_at (ISO 8601; without an offset it is read in the coalition's timezone).
"""

from __future__ import annotations

import asyncio
import csv
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from coalition import clock
from coalition.cards import is_valid_card_number
from coalition.prepaid import refusal
from coalition.settings import coalition_settings

MAX_POINTS = 10**12
REQUIRED = {"points", "order_reference", "occurred_at"}


@dataclass
class ImportReport:
    posted: int = 0
    skipped: int = 0
    points: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.errors)


Row = tuple[int, str | None, str | None, int, str, datetime]


def parse_blocks(lines: Iterable[str], timezone: ZoneInfo, report: ImportReport,
                 block_size: int = 5_000) -> Iterator[list[Row]]:
    """Validate rows, yielding them in blocks so posting can start before the file is
    read to the end. Invalid rows go to `report.errors` with their line number."""
    reader = csv.DictReader(lines)
    header = set(reader.fieldnames or [])
    missing = REQUIRED - header
    if missing or not header & {"card_number", "customer_id"}:
        wanted = sorted(missing) or ["card_number or customer_id"]
        raise ValueError(f"the header lacks {', '.join(wanted)}")
    block: list[Row] = []
    first_line: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        error = None
        card = (record.get("card_number") or "").strip() or None
        customer = (record.get("customer_id") or "").strip() or None
        raw_points = (record.get("points") or "").strip()
        order = (record.get("order_reference") or "").strip()
        occurred = None
        if bool(card) == bool(customer):
            error = "give exactly one of card_number and customer_id"
        elif card and not is_valid_card_number(card):
            error = f"card_number {card!r} is not a valid card number"
        elif not raw_points.isdigit() or not 0 < int(raw_points) <= MAX_POINTS:
            error = f"points must be a whole number from 1 to 10^12, got {raw_points!r}"
        elif not order or len(order) > 200:
            error = "order_reference is required (at most 200 characters)"
        elif order in first_line:
            error = f"order_reference {order!r} repeats line {first_line[order]}"
        else:
            try:
                occurred = datetime.fromisoformat(record.get("occurred_at", "").strip())
            except ValueError:
                error = "occurred_at must be an ISO 8601 date-time"
        if error:
            report.errors.append((line, error))
            continue
        assert occurred is not None
        if occurred.tzinfo is None:
            occurred = occurred.replace(tzinfo=timezone)
        first_line[order] = line
        block.append((line, card, customer, int(raw_points), order, occurred))
        if len(block) >= block_size:
            yield block
            block = []
    if block:
        yield block


def parse_rows(lines: Iterable[str], timezone: ZoneInfo, report: ImportReport) -> list[Row]:
    return [row for block in parse_blocks(lines, timezone, report) for row in block]


_STAGE = """
CREATE TEMP TABLE import_rows (
    line int, card_number text, customer_id text, points bigint, order_ref text,
    occurred_at timestamptz, member_id uuid, entry_id bigint, outcome text
) ON COMMIT DROP
"""

# Each statement works on the whole chunk. $1 = partner id.
_RESOLVE = [
    """UPDATE import_rows r SET member_id = m.id
         FROM members m WHERE r.card_number IS NOT NULL AND m.card_number = r.card_number""",
    """UPDATE import_rows r SET member_id = l.member_id
         FROM member_links l
        WHERE r.customer_id IS NOT NULL AND l.partner_id = $1
          AND l.customer_id = r.customer_id""",
    """UPDATE import_rows SET outcome = 'unknown member' WHERE member_id IS NULL""",
    """UPDATE import_rows r SET outcome = 'member is not linked to this partner'
        WHERE outcome IS NULL AND NOT EXISTS (
              SELECT 1 FROM member_links l
               WHERE l.partner_id = $1 AND l.member_id = r.member_id)""",
    """UPDATE import_rows r SET outcome = 'member is ' || m.status
         FROM members m WHERE r.outcome IS NULL AND m.id = r.member_id AND m.status <> 'active'""",
    """UPDATE import_rows r
          SET outcome = CASE WHEN e.member_id = r.member_id AND p.amount = r.points
                             THEN 'skip' ELSE 'order_reference was imported before with other '
                                              || 'member or points' END
         FROM journal_entries e
         JOIN accounts w ON w.member_id = e.member_id
         JOIN postings p ON p.entry_id = e.id AND p.account_id = w.id
        WHERE r.outcome IS NULL AND e.partner_id = $1
          AND e.idempotency_key = 'import ' || r.order_ref""",
]

_POST = [
    """UPDATE import_rows SET entry_id = nextval(pg_get_serial_sequence('journal_entries', 'id'))
        WHERE outcome IS NULL""",
    # Lock the touched wallets in id order, as single postings do, so no deadlock.
    """SELECT a.id FROM accounts a
        WHERE a.member_id IN (SELECT member_id FROM import_rows WHERE entry_id IS NOT NULL)
        ORDER BY a.id FOR NO KEY UPDATE""",
    # created_at: the posting moment on the platform's clock (the prepaid draw prices by it).
    """INSERT INTO journal_entries (id, kind, partner_id, member_id, order_id, description,
                                    idempotency_key, actor, metadata, occurred_at, created_at)
       SELECT entry_id, 'earn', $1, member_id, order_ref, 'Imported purchase',
              'import ' || order_ref, $2, jsonb_build_object('import_line', line), occurred_at,
              $3::timestamptz
         FROM import_rows WHERE entry_id IS NOT NULL""",
    """INSERT INTO postings (entry_id, account_id, amount)
       SELECT r.entry_id, i.id, -r.points
         FROM import_rows r, accounts i
        WHERE r.entry_id IS NOT NULL AND i.partner_id = $1 AND i.kind = 'partner_issuance'
       UNION ALL
       SELECT r.entry_id, w.id, r.points
         FROM import_rows r JOIN accounts w ON w.member_id = r.member_id
        WHERE r.entry_id IS NOT NULL""",
    # Expiry as the coalition's policy has it (rolling, month or year end, a fixed date,
    # never), like points earned any other way.
    """INSERT INTO lots (member_id, partner_id, entry_id, points, remaining, status,
                         earned_at, expires_at)
       SELECT r.member_id, $1, r.entry_id, r.points, r.points, 'active', r.occurred_at,
              ledger_lot_expiry(r.occurred_at)
         FROM import_rows r
        WHERE r.entry_id IS NOT NULL""",
    # A wallet below zero (a return under the negative-floor policy) is repaid first from
    # the imported points, as from any other credit.
    """WITH credited AS (
           SELECT member_id, sum(points) AS total, count(*) AS n, min(entry_id) AS entry
             FROM import_rows WHERE entry_id IS NOT NULL GROUP BY member_id),
            moved AS (
           UPDATE accounts a SET balance = a.balance + c.total, version = a.version + c.n
             FROM credited c WHERE a.member_id = c.member_id
           RETURNING a.member_id, a.balance - c.total AS before, c.total, c.entry)
       SELECT count(ledger_repay_debt(member_id, entry, before::bigint, total::bigint))
         FROM moved WHERE before < 0""",
]


LOCK_BUCKETS = 64
# A first import can grow the ledger tables from nothing to hundreds of thousands of rows
# in seconds, long before autovacuum takes their statistics: until then the planner
# takes them for nearly empty, and pooled connections keep the plans it made (spending
# scanned every active lot of the coalition to find one member's: 4x slower in the
# benchmark). ANALYZE replaces those plans everywhere.
ANALYZE_AFTER = 1_000
IMPORTED_TABLES = ("journal_entries", "postings", "lots", "accounts")


def bucket_of(row: Row) -> int:
    return zlib.crc32((row[1] or row[2] or "").encode()) % LOCK_BUCKETS


async def import_chunk(
    conn: asyncpg.Connection, partner_id: uuid.UUID, actor: str, rows: list[Row],
    report: ImportReport,
) -> None:
    try:
        try:
            outcome = await _post_chunk(conn, partner_id, actor, rows)
        except asyncpg.UniqueViolationError:
            # A concurrent run posted one of these order references under another member
            # reference (so in another bucket) first; now the chunk sees it as imported.
            outcome = await _post_chunk(conn, partner_id, actor, rows)
    except asyncpg.PostgresError as exc:
        # A prepaid partner whose balance and credit limit do not cover the chunk: the
        # chunk's transaction posted nothing; every row of it is reported, and a re-run
        # after buying a block posts exactly these.
        refused = refusal(exc)
        if refused is None:
            raise
        report.errors.extend((row[0], refused.detail) for row in rows)
        return
    for record in outcome:
        if record["outcome"] is None:
            report.posted += 1
            report.points += record["points"]
        elif record["outcome"] == "skip":
            report.skipped += 1
        else:
            report.errors.append((record["line"], record["outcome"]))


async def _post_chunk(
    conn: asyncpg.Connection, partner_id: uuid.UUID, actor: str, rows: list[Row]
) -> list[asyncpg.Record]:
    async with conn.transaction():
        # A crash may lose the last chunks' commits, never corrupt them, and re-running the
        # file posts exactly what is missing: durability per chunk is not worth an fsync.
        await conn.execute("SET LOCAL synchronous_commit = off")
        # A row's lock bucket depends only on its member reference, so two runs of one
        # file (whatever their worker counts) serialize on the same buckets and cannot both
        # post a row. Buckets are locked in ascending order: no deadlock between runs.
        buckets = sorted({bucket_of(row) for row in rows})
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1 || b::text)) FROM unnest($2::int[]) AS b",
            f"import:{partner_id}:", buckets)
        await conn.execute(_STAGE)
        await conn.copy_records_to_table(
            "import_rows", records=rows,
            columns=["line", "card_number", "customer_id", "points", "order_ref", "occurred_at"],
        )
        for statement in _RESOLVE:
            await conn.execute(statement, *([partner_id] if "$1" in statement else []))
        allocate, lock_wallets, entries, postings, lots, wallets = _POST
        await conn.execute(allocate)
        await conn.fetch(lock_wallets)
        await conn.execute(entries, partner_id, actor, clock.now())
        await conn.execute(postings, partner_id)
        await conn.execute(lots, partner_id)
        await conn.execute(wallets)
        return await conn.fetch(
            "SELECT line, outcome, points FROM import_rows WHERE outcome IS NOT NULL"
            " OR entry_id IS NOT NULL")


async def import_transactions(
    dsn: str,
    partner_slug: str,
    path: Path,
    *,
    chunk_size: int = 10_000,
    workers: int = 4,
    progress: Callable[[int, int | None], None] | None = None,
    analyze_after: int = ANALYZE_AFTER,
) -> ImportReport:
    """Import a CSV file. Parsing runs while `workers` connections post chunks in
    parallel, each owning the rows of a disjoint set of member references (hence of
    wallets). An import that posted `analyze_after` rows or more ends by refreshing the
    ledger tables' statistics (see ANALYZE_AFTER)."""
    settings = {"timezone": "UTC"}
    connections = [await asyncpg.connect(dsn, server_settings=settings) for _ in range(workers)]
    try:
        conn = connections[0]
        partner = await conn.fetchrow("SELECT id, status FROM partners WHERE slug = $1",
                                      partner_slug)
        if partner is None:
            raise ValueError(f"no partner with slug {partner_slug!r}")
        if partner["status"] != "active":
            raise ValueError(f"partner {partner_slug!r} is {partner['status']}, not active")
        timezone = (await coalition_settings(conn)).zone
        report = ImportReport()
        actor = f"import:{path.name}"
        queues: list[asyncio.Queue[list[Row] | None]] = [asyncio.Queue() for _ in range(workers)]
        parsed = 0

        async def post_shard(index: int) -> None:
            while (chunk := await queues[index].get()) is not None:
                await import_chunk(connections[index], partner["id"], actor, chunk, report)
                if progress:
                    progress(len(chunk), None)

        posting = [asyncio.create_task(post_shard(i)) for i in range(workers)]
        try:
            buffers: list[list[Row]] = [[] for _ in range(workers)]
            with path.open(newline="", encoding="utf-8-sig") as handle:
                for block in parse_blocks(handle, timezone, report):
                    parsed += len(block)
                    for row in block:
                        shard = bucket_of(row) % workers
                        buffers[shard].append(row)
                        if len(buffers[shard]) >= chunk_size:
                            queues[shard].put_nowait(buffers[shard])
                            buffers[shard] = []
                    await asyncio.sleep(0)  # let the posting tasks send their next statements
            for shard, buffer in enumerate(buffers):
                if buffer:
                    queues[shard].put_nowait(buffer)
                queues[shard].put_nowait(None)
            if progress:
                progress(0, parsed)
            await asyncio.gather(*posting)
        finally:
            for task in posting:
                task.cancel()
        if report.posted >= analyze_after:
            await conn.execute(f"ANALYZE {', '.join(IMPORTED_TABLES)}")
    finally:
        for connection in connections:
            await connection.close()
    report.errors.sort()
    return report
