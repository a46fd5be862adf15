"""Settlement runs: compute a period's draft, review, finalize, close.

Lifecycle (a database trigger refuses any other transition):

    draft -> in_review -> finalized -> invoiced -> paid -> closed
      ^---------'  (reopen)       `--> paid / closed   invoiced -> closed
                                               ^---------'  (a payment undone)

* draft: `run_period` (re)computes every statement with `settlement_compute` (SQL,
  set-based); a re-run replaces the draft's lines, claims and flows.
* in_review: partners see their statements and may dispute a line until
  `dispute_deadline` (review start + `dispute_window_days`, default 7).
* finalized: no open dispute and the window over (or `force`); the content hash of the
  statements, lines and flows is stored and every later read compares it.
* invoiced / paid: moved by the payments integration (`advance`); a paid run whose
  statement's payment fails or is reversed afterwards goes back to invoiced
  (`payment_undone`); closed: every statement's payment settled.

At most one run per cycle is open (draft or in review) at a time: its claims on journal
entries must not overlap another open run's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from coalition import clock
from coalition.errors import Conflict, DomainError, NotFound
from coalition.settings import coalition_settings

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_WEEK = re.compile(r"^(\d{4})-W(0[1-9]|[1-4]\d|5[0-3])$")
SETTLED_PAYMENTS = ("paid", "transferred", "nothing_due")


@dataclass(frozen=True)
class Period:
    label: str
    cycle: str
    start: datetime
    end: datetime   # exclusive


def parse_period(label: str, tz: str) -> Period:
    """`2026-10` (monthly) or `2026-W43` (ISO week, weekly), in the coalition's zone."""
    zone = ZoneInfo(tz)
    if m := _MONTH.match(label):
        year, month = int(m[1]), int(m[2])
        start = datetime(year, month, 1, tzinfo=zone)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
        return Period(label, "monthly", start, end)
    if m := _WEEK.match(label):
        try:
            monday = date.fromisocalendar(int(m[1]), int(m[2]), 1)
        except ValueError:
            raise _bad_period(label) from None
        start = datetime(monday.year, monday.month, monday.day, tzinfo=zone)
        nxt = monday + timedelta(days=7)
        return Period(label, "weekly", start, datetime(nxt.year, nxt.month, nxt.day,
                                                       tzinfo=zone))
    raise _bad_period(label)


def previous_period(now: datetime, tz: str, cycle: str = "monthly") -> str:
    """The last complete period before `now` (the scheduled job drafts it)."""
    local = now.astimezone(ZoneInfo(tz)).date()
    if cycle == "weekly":
        year, week, _ = (local - timedelta(days=7)).isocalendar()
        return f"{year}-W{week:02d}"
    first = local.replace(day=1) - timedelta(days=1)
    return f"{first.year}-{first.month:02d}"


def _bad_period(label: str) -> DomainError:
    return DomainError("invalid-period", "Invalid period",
                       f"{label!r} is not a period: use YYYY-MM (monthly) or YYYY-Www (weekly).",
                       field="period")


_SQL_ERRORS = {"SE001": ("run-not-draft", "Run not in that state", 409),
               "SE002": ("rate-card-missing", "No rate card in force", 422),
               "SE003": ("fx-rate-missing", "No FX rate", 422),
               "SE010": ("run-immutable", "Finalized run cannot change", 409)}


def domain_error(exc: asyncpg.PostgresError) -> DomainError | None:
    """The settlement SQL's own errors (SQLSTATE SE0xx) as domain errors."""
    known = _SQL_ERRORS.get(getattr(exc, "sqlstate", "") or "")
    if known is None:
        return None
    slug, title, status = known
    return DomainError(slug, title, str(exc), status=status)


async def get_run(conn: asyncpg.Connection, period: str) -> asyncpg.Record:
    p = parse_period(period, (await coalition_settings(conn)).timezone)
    row = await conn.fetchrow("SELECT * FROM settlement_runs WHERE cycle = $1 AND period = $2",
                              p.cycle, p.label)
    if row is None:
        raise NotFound("run-not-found", "No such run", f"No settlement run for {period}.",
                       field="period")
    return row


async def run_by_id(conn: asyncpg.Connection, run_id: int) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM settlement_runs WHERE id = $1", run_id)
    if row is None:
        raise NotFound("run-not-found", "No such run", f"No settlement run {run_id}.")
    return row


async def list_runs(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT r.*, count(s.id) AS statements, coalesce(sum(s.net), 0) AS operator_net,"
        " (SELECT count(*) FROM settlement_disputes d WHERE d.run_id = r.id"
        "   AND d.status = 'open') AS open_disputes"
        " FROM settlement_runs r LEFT JOIN settlement_statements s ON s.run_id = r.id"
        " GROUP BY r.id ORDER BY r.period_start DESC, r.cycle")


async def run_period(conn: asyncpg.Connection, period: str, actor: str, *,
                     now: datetime | None = None,
                     dispute_window_days: int | None = None) -> asyncpg.Record:
    """Create the period's draft run, or re-run it, and compute its statements."""
    now = now or clock.now()
    settings = await coalition_settings(conn)
    p = parse_period(period, settings.timezone)
    if p.end > now:
        raise DomainError("period-not-ended", "Period not over",
                          f"{period} ends at {p.end.isoformat()}: settle it after that.",
                          field="period")
    if dispute_window_days is not None and not 0 <= dispute_window_days <= 90:
        raise DomainError("invalid-dispute-window", "Invalid dispute window",
                          "The dispute window is 0 to 90 days.", field="dispute_window_days")
    async with conn.transaction():
        # One open run per cycle: serialize run creation within the cycle.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('settlement:' || $1))",
                           p.cycle)
        run = await conn.fetchrow("SELECT * FROM settlement_runs WHERE cycle = $1"
                                  " AND period = $2 FOR UPDATE", p.cycle, p.label)
        if run is None:
            other = await conn.fetchval(
                "SELECT period FROM settlement_runs WHERE cycle = $1"
                " AND status IN ('draft', 'in_review')", p.cycle)
            if other is not None:
                raise Conflict("run-open", "Another run is open",
                               f"The {other} run is still open: finalize or discard it first.",
                               field="period")
            run = await conn.fetchrow(
                "INSERT INTO settlement_runs (period, cycle, period_start, period_end,"
                " currency, created_by, dispute_window_days)"
                " VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, 7)) RETURNING *",
                p.label, p.cycle, p.start, p.end, settings.currency, actor,
                dispute_window_days)
        elif run["status"] != "draft":
            raise Conflict("run-not-draft", "Run not a draft",
                           f"The {period} run is {run['status']}; only a draft is re-run.",
                           field="period")
        elif dispute_window_days is not None:
            await conn.execute("UPDATE settlement_runs SET dispute_window_days = $2"
                               " WHERE id = $1", run["id"], dispute_window_days)
        try:
            await conn.execute("SELECT settlement_compute($1)", run["id"])
        except asyncpg.PostgresError as exc:
            if (error := domain_error(exc)) is not None:
                raise error from None
            raise
        return await run_by_id(conn, run["id"])


async def _transition(conn: asyncpg.Connection, period: str, expected: tuple[str, ...],
                      sql: str, *args: object) -> asyncpg.Record:
    async with conn.transaction():
        run = await get_run(conn, period)
        run = await conn.fetchrow("SELECT * FROM settlement_runs WHERE id = $1 FOR UPDATE",
                                  run["id"])
        if run["status"] not in expected:
            raise Conflict("run-wrong-state", "Run not in that state",
                           f"The {period} run is {run['status']}; this needs "
                           f"{' or '.join(expected)}.", field="period")
        return await conn.fetchrow(sql, run["id"], *args)


async def start_review(conn: asyncpg.Connection, period: str, *,
                       now: datetime | None = None) -> asyncpg.Record:
    """Show the draft to the partners and open the dispute window."""
    now = now or clock.now()
    return await _transition(
        conn, period, ("draft",),
        "UPDATE settlement_runs SET status = 'in_review', review_started_at = $2::timestamptz,"
        " dispute_deadline = $2::timestamptz + make_interval(days => dispute_window_days)"
        " WHERE id = $1 RETURNING *", now)


async def reopen(conn: asyncpg.Connection, period: str) -> asyncpg.Record:
    """Back to draft (to re-run with an adjustment); partners stop seeing it."""
    return await _transition(
        conn, period, ("in_review",),
        "UPDATE settlement_runs SET status = 'draft', review_started_at = NULL,"
        " dispute_deadline = NULL WHERE id = $1 RETURNING *")


async def finalize(conn: asyncpg.Connection, period: str, actor: str, *,
                   now: datetime | None = None, force: bool = False) -> asyncpg.Record:
    """Freeze the run: no open dispute, the window over (unless forced), hash stored."""
    now = now or clock.now()
    run = await get_run(conn, period)
    open_disputes = await conn.fetchval(
        "SELECT count(*) FROM settlement_disputes WHERE run_id = $1 AND status = 'open'",
        run["id"])
    if open_disputes:
        raise Conflict("disputes-open", "Disputes open",
                       f"{open_disputes} disputed line(s) of {period} await a resolution.",
                       field="period")
    if (run["status"] == "in_review" and not force
            and run["dispute_deadline"] is not None and run["dispute_deadline"] > now):
        raise Conflict("dispute-window-open", "Dispute window still open",
                       f"Partners may dispute until {run['dispute_deadline'].isoformat()};"
                       " finalize after that, or force it.", field="period")
    return await _transition(
        conn, period, ("in_review",),
        "UPDATE settlement_runs SET status = 'finalized', finalized_at = $2,"
        " finalized_by = $3, content_hash = settlement_content_hash(id)"
        " WHERE id = $1 RETURNING *", now, actor)


async def advance(conn: asyncpg.Connection, period: str, status: str) -> asyncpg.Record:
    """finalized -> invoiced -> paid (the payments integration's calls)."""
    expected = {"invoiced": ("finalized",), "paid": ("finalized", "invoiced")}.get(status)
    if expected is None:
        raise DomainError("invalid-status", "Invalid status",
                          "A run advances to invoiced or paid here.", field="status")
    return await _transition(conn, period, expected,
                             "UPDATE settlement_runs SET status = $2 WHERE id = $1"
                             " RETURNING *", status)


async def payment_undone(conn: asyncpg.Connection, period: str) -> asyncpg.Record:
    """paid -> invoiced: a statement's payment failed or was reversed after the run was
    paid, so the run waits for it again (and `close` refuses until then)."""
    return await _transition(conn, period, ("paid",),
                             "UPDATE settlement_runs SET status = 'invoiced' WHERE id = $1"
                             " RETURNING *")


async def close(conn: asyncpg.Connection, period: str, *,
                now: datetime | None = None) -> asyncpg.Record:
    """Close the period once every statement's money has moved."""
    run = await get_run(conn, period)
    unpaid = await conn.fetch(
        "SELECT p.slug, s.payment_status FROM settlement_statements s"
        " JOIN partners p ON p.id = s.partner_id WHERE s.run_id = $1"
        " AND s.payment_status <> ALL($2::text[]) ORDER BY p.slug",
        run["id"], list(SETTLED_PAYMENTS))
    if unpaid:
        names = ", ".join(f"{r['slug']} ({r['payment_status']})" for r in unpaid)
        raise Conflict("payments-outstanding", "Payments outstanding",
                       f"Statements not yet settled: {names}.", field="period")
    return await _transition(
        conn, period, ("finalized", "invoiced", "paid"),
        "UPDATE settlement_runs SET status = 'closed', closed_at = $2 WHERE id = $1"
        " RETURNING *", now or clock.now())


async def discard(conn: asyncpg.Connection, period: str) -> None:
    """Delete a draft with its lines and claims (its entries go back to unclaimed)."""
    await _transition(conn, period, ("draft",),
                      "DELETE FROM settlement_runs WHERE id = $1 RETURNING id")


async def set_payment_status(conn: asyncpg.Connection, statement_id: int, status: str,
                             *, now: datetime | None = None) -> None:
    """The one statement column that moves after finalization (payments integration)."""
    done = await conn.execute(
        "UPDATE settlement_statements SET payment_status = $2, payment_updated_at = $3"
        " WHERE id = $1", statement_id, status, now or clock.now())
    if done.endswith(" 0"):
        raise NotFound("statement-not-found", "No such statement",
                       f"No statement {statement_id}.")


async def verify(conn: asyncpg.Connection, run_id: int) -> list[str]:
    """Differences between a run's stored figures and what they must be: the content
    hash (finalized runs) and each statement's totals against its lines."""
    problems: list[str] = []
    run = await run_by_id(conn, run_id)
    if run["content_hash"] is not None:
        actual = await conn.fetchval("SELECT settlement_content_hash($1)", run_id)
        if actual != run["content_hash"]:
            problems.append(f"run {run['period']}: content hash {actual[:12]}… differs from"
                            f" the stored {run['content_hash'][:12]}… (changed after"
                            " finalization)")
    for row in await conn.fetch(
            "SELECT s.id, s.net, s.total_debit, s.total_credit, s.line_count,"
            " coalesce(sum(l.amount), 0) AS lines_sum,"
            " coalesce(sum(l.amount) FILTER (WHERE l.amount > 0), 0) AS debit,"
            " count(l.id) AS lines,"
            " bool_or(l.amount <> round(l.amount_exact)) AS misrounded"
            " FROM settlement_statements s LEFT JOIN settlement_lines l ON l.statement_id = s.id"
            " WHERE s.run_id = $1 GROUP BY s.id ORDER BY s.id", run_id):
        if (row["net"] != row["lines_sum"] or row["total_debit"] != row["debit"]
                or row["line_count"] != row["lines"] or row["misrounded"]):
            problems.append(f"statement {row['id']}: net {row['net']} / {row['line_count']}"
                            f" lines stored, lines sum to {row['lines_sum']} over"
                            f" {row['lines']} lines")
    return problems


async def draft_previous_month(conn: asyncpg.Connection, now: datetime) -> str:
    """The scheduled job: draft last month's run unless it exists (then leave it: an
    operator may be reviewing it). Refusals (an open earlier run, a missing rate card)
    are reported, not raised, so the job does not retry them blindly."""
    period = previous_period(now, (await coalition_settings(conn)).timezone)
    if await conn.fetchval("SELECT 1 FROM settlement_runs WHERE cycle = 'monthly'"
                           " AND period = $1", period):
        return f"{period}: exists"
    try:
        run = await run_period(conn, period, "scheduler", now=now)
    except DomainError as exc:
        return f"{period}: not drafted: {exc.detail}"
    return f"{period}: drafted ({run['status']})"
