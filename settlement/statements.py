"""Reading statements (a partner its own, the operator all), CSV, disputes, netting and
the flow matrix. A partner sees a statement once its run is in review; every read of a
finalized run compares the stored content hash (`integrity`)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime

import asyncpg

from coalition import clock
from coalition.errors import Conflict, DomainError, NotFound
from settlement.runs import verify

VISIBLE = ("in_review", "finalized", "invoiced", "paid", "closed")
# The API's ceiling on an amount (web/api/schemas.py Minor): an adjustment is summed into
# a statement's bigint totals with its other lines, so it stays far below bigint's own.
MAX_ADJUSTMENT = 10**13
CSV_COLUMNS = ("line_no", "type", "description", "late", "points", "unit_price", "fx_rate",
               "amount_exact", "amount")


async def list_statements(conn: asyncpg.Connection, partner_id: uuid.UUID
                          ) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT s.*, r.period, r.cycle, r.status AS run_status, r.dispute_deadline,"
        " r.period_start, r.period_end"
        " FROM settlement_statements s JOIN settlement_runs r ON r.id = s.run_id"
        " WHERE s.partner_id = $1 AND r.status = ANY($2::text[])"
        " ORDER BY r.period_start DESC, r.cycle", partner_id, list(VISIBLE))


async def get_statement(conn: asyncpg.Connection, statement_id: int,
                        partner_id: uuid.UUID | None = None) -> dict:
    """A statement with its lines and disputes; `partner_id` limits it to that partner
    (another partner's statement, or one still in draft, is not found)."""
    row = await conn.fetchrow(
        "SELECT s.*, r.period, r.cycle, r.status AS run_status, r.dispute_deadline,"
        " r.period_start, r.period_end, r.content_hash, r.currency AS coalition_currency,"
        " p.name AS partner_name, p.slug AS partner_slug"
        " FROM settlement_statements s JOIN settlement_runs r ON r.id = s.run_id"
        " JOIN partners p ON p.id = s.partner_id WHERE s.id = $1", statement_id)
    if row is None or (partner_id is not None and (
            row["partner_id"] != partner_id or row["run_status"] not in VISIBLE)):
        raise NotFound("statement-not-found", "No such statement",
                       "No statement with this id is yours.")
    lines = await conn.fetch("SELECT * FROM settlement_lines WHERE statement_id = $1"
                             " ORDER BY line_no", statement_id)
    disputes = await conn.fetch("SELECT * FROM settlement_disputes WHERE statement_id = $1"
                                " ORDER BY id", statement_id)
    integrity = "not_finalized"
    if row["content_hash"] is not None:
        integrity = "mismatch" if await verify(conn, row["run_id"]) else "ok"
    return {"statement": row, "lines": lines, "disputes": disputes, "integrity": integrity}


def statement_csv(detail: dict) -> str:
    """The statement's lines as CSV, with a total row (amounts in minor units)."""
    out = io.StringIO()
    writer = csv.writer(out)
    s = detail["statement"]
    writer.writerow(["period", s["period"], "currency", s["currency"], "partner",
                     s["partner_slug"], "integrity", detail["integrity"]])
    writer.writerow(CSV_COLUMNS)
    for line in detail["lines"]:
        writer.writerow([_csv_value(line[c]) for c in CSV_COLUMNS])
    writer.writerow(["", "net", "", "", "", "", "", "", s["net"]])
    return out.getvalue()


def _csv_value(value: object) -> object:
    return "" if value is None else value


async def dispute_line(conn: asyncpg.Connection, partner_id: uuid.UUID, line_id: int,
                       comment: str, actor: str, *, now: datetime | None = None) -> dict:
    """A partner disputes one of its lines while its run is in review and the window
    is open; one open dispute per line."""
    now = now or clock.now()
    comment = comment.strip()
    if not 1 <= len(comment) <= 2000:
        raise DomainError("invalid-comment", "Comment required",
                          "Say what is wrong with the line (1 to 2000 characters).",
                          field="comment")
    async with conn.transaction():
        line = await conn.fetchrow(
            "SELECT l.*, r.status AS run_status, r.dispute_deadline, r.period"
            " FROM settlement_lines l JOIN settlement_runs r ON r.id = l.run_id"
            " WHERE l.id = $1 AND l.partner_id = $2 FOR UPDATE OF r", line_id, partner_id)
        if line is None or line["run_status"] not in VISIBLE:
            raise NotFound("line-not-found", "No such line",
                           "No statement line with this id is yours.", field="line_id")
        if line["run_status"] != "in_review" or line["dispute_deadline"] <= now:
            raise Conflict("dispute-window-closed", "Dispute window closed",
                           f"Lines of {line['period']} could be disputed while the run was"
                           " in review, until its dispute deadline.", field="line_id")
        if await conn.fetchval("SELECT 1 FROM settlement_disputes WHERE line_id = $1"
                               " AND status = 'open'", line_id):
            raise Conflict("dispute-already-open", "Line already disputed",
                           "This line has an open dispute.", field="line_id")
        summary = (f"#{line['line_no']} {line['type']}: {line['description']}; "
                   f"points {line['points']}, amount {line['amount']}")
        row = await conn.fetchrow(
            "INSERT INTO settlement_disputes (run_id, statement_id, line_id, partner_id,"
            " line_summary, comment, created_by, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
            line["run_id"], line["statement_id"], line_id, partner_id, summary, comment,
            actor, now)
    return dispute_json(row)


def dispute_json(row: asyncpg.Record) -> dict:
    return {"id": row["id"], "line_id": row["line_id"], "statement_id": row["statement_id"],
            "status": row["status"], "comment": row["comment"],
            "line_summary": row["line_summary"], "created_at": row["created_at"],
            "resolution": row["resolution"], "resolved_at": row["resolved_at"],
            "adjustment_id": row["adjustment_id"]}


async def resolve_dispute(conn: asyncpg.Connection, dispute_id: int, *, accept: bool,
                          resolution: str, actor: str, adjustment: int | None = None,
                          now: datetime | None = None) -> asyncpg.Record:
    """The operator accepts or rejects a dispute. An accepted one may carry an
    adjustment (minor units of the partner's settlement currency; positive = the partner
    owes more, negative = a credit): it lands on the next computed draft of the
    partner's cycle (reopen and re-run the current run to bill it there)."""
    now = now or clock.now()
    resolution = resolution.strip()
    if not resolution:
        raise DomainError("invalid-resolution", "Resolution required",
                          "Explain the decision to the partner.", field="resolution")
    if adjustment is not None and (not accept or adjustment == 0):
        raise DomainError("invalid-adjustment", "Invalid adjustment",
                          "An adjustment is a non-zero amount on an accepted dispute.",
                          field="adjustment")
    if adjustment is not None and abs(adjustment) > MAX_ADJUSTMENT:
        raise DomainError("invalid-adjustment", "Invalid adjustment",
                          f"An adjustment is at most {MAX_ADJUSTMENT} minor units either way.",
                          field="adjustment")
    async with conn.transaction():
        dispute = await conn.fetchrow("SELECT * FROM settlement_disputes WHERE id = $1"
                                      " FOR UPDATE", dispute_id)
        if dispute is None:
            raise NotFound("dispute-not-found", "No such dispute", f"No dispute {dispute_id}.")
        if dispute["status"] != "open":
            raise Conflict("dispute-resolved", "Already resolved",
                           f"The dispute was already {dispute['status']}.")
        adjustment_id = None
        if adjustment is not None:
            adjustment_id = await conn.fetchval(
                "INSERT INTO settlement_adjustments (partner_id, amount, reason, dispute_id,"
                " created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                dispute["partner_id"], adjustment,
                f"dispute #{dispute_id}: {resolution}"[:500], dispute_id, actor, now)
        return await conn.fetchrow(
            "UPDATE settlement_disputes SET status = $2, resolution = $3, resolved_by = $4,"
            " resolved_at = $5, adjustment_id = $6 WHERE id = $1 RETURNING *",
            dispute_id, "accepted" if accept else "rejected", resolution, actor, now,
            adjustment_id)


async def run_statements(conn: asyncpg.Connection, run_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT s.*, p.name AS partner_name, p.slug AS partner_slug,"
        " (SELECT count(*) FROM settlement_disputes d WHERE d.statement_id = s.id"
        "   AND d.status = 'open') AS open_disputes"
        " FROM settlement_statements s JOIN partners p ON p.id = s.partner_id"
        " WHERE s.run_id = $1 ORDER BY p.name", run_id)


async def netting(conn: asyncpg.Connection, run_id: int) -> list[dict]:
    """Multilateral netting per settlement currency: what partners pay the operator,
    what it pays them, and its balancing figure (operator_net = collections - payouts =
    the sum of the partners' nets, so partner nets - operator_net = 0)."""
    rows = await conn.fetch(
        "SELECT currency, coalesce(sum(net) FILTER (WHERE net > 0), 0) AS collections,"
        " coalesce(-sum(net) FILTER (WHERE net < 0), 0) AS payouts, sum(net) AS operator_net,"
        " count(*) FILTER (WHERE net > 0) AS payers,"
        " count(*) FILTER (WHERE net < 0) AS payees"
        " FROM settlement_statements WHERE run_id = $1 GROUP BY currency ORDER BY currency",
        run_id)
    return [dict(r) for r in rows]


async def flow_matrix(conn: asyncpg.Connection, run_id: int,
                      partner_id: uuid.UUID | None = None) -> list[asyncpg.Record]:
    """Issuer x redeemer cells (points, value at the redeemer's reimbursement, minor
    units of the coalition currency); a partner gets its own row and column only."""
    return await conn.fetch(
        "SELECT f.issuer_partner_id, f.redeemer_partner_id, f.funding, f.points, f.value,"
        " coalesce(i.name, 'Coalition') AS issuer, coalesce(d.name, 'Coalition') AS redeemer"
        " FROM settlement_flows f LEFT JOIN partners i ON i.id = f.issuer_partner_id"
        " LEFT JOIN partners d ON d.id = f.redeemer_partner_id"
        " WHERE f.run_id = $1 AND ($2::uuid IS NULL OR f.issuer_partner_id = $2"
        "   OR f.redeemer_partner_id = $2)"
        " ORDER BY issuer, redeemer, f.funding", run_id, partner_id)


async def run_disputes(conn: asyncpg.Connection, run_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT d.*, p.name AS partner_name FROM settlement_disputes d"
        " JOIN partners p ON p.id = d.partner_id WHERE d.run_id = $1"
        " ORDER BY d.status = 'open' DESC, d.id", run_id)
