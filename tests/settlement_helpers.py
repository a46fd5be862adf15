"""Ledger activity at chosen times, for settlement tests: the ledger's own SQL functions
with a posting time in the past, and rate cards written directly."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from coalition.cards import new_card_number


def at(day: str) -> datetime:
    """'2019-03-05' or '2019-03-05T10:00' as UTC noon (or the given time)."""
    text = day if "T" in day else f"{day}T12:00"
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def add_terms(db, partner: uuid.UUID, effective_from: str, issue: str | Decimal,
                    reimbursement: str | Decimal, *, fee_percent: str = "0",
                    fee_fixed: int = 0, currency: str = "PLN", cycle: str = "monthly") -> int:
    return await db.fetchval(
        "INSERT INTO settlement_terms (partner_id, effective_from, issue_price, reimbursement,"
        " fee_percent, fee_fixed, currency, cycle, created_by)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'test') RETURNING id",
        partner, at(effective_from), Decimal(issue), Decimal(reimbursement),
        Decimal(fee_percent), fee_fixed, currency, cycle)


async def new_member(db, partners: list[uuid.UUID]) -> uuid.UUID:
    return await db.fetchval(
        """
        WITH m AS (INSERT INTO members (email, card_number) VALUES ($1, $2) RETURNING id),
             w AS (INSERT INTO accounts (code, kind, member_id, balance, lower_bound)
                   SELECT 'member:' || id, 'member_wallet', id, 0, 0 FROM m)
        INSERT INTO member_links (partner_id, member_id)
        SELECT p, m.id FROM m, unnest($3::uuid[]) AS p RETURNING member_id
        """, f"{uuid.uuid4().hex}@settle.example", new_card_number(), partners)


def _entry(status: int, body: str) -> int:
    assert status == 201, body
    return json.loads(body)["id"]


async def earn(db, partner: uuid.UUID, member: uuid.UUID, points: int, day: str) -> int:
    row = await db.fetchrow(
        "SELECT * FROM ledger_earn($1, $2, $3, NULL, NULL, NULL, $4, 'h', 'test', $5, $5)",
        partner, member, points, uuid.uuid4().hex, at(day))
    return _entry(row["status"], row["body"])


async def redeem(db, partner: uuid.UUID, member: uuid.UUID, points: int, day: str) -> int:
    row = await db.fetchrow(
        "SELECT * FROM ledger_redeem($1, $2, $3, NULL, NULL, NULL, $4, 'h', 'test', $5, $5)",
        partner, member, points, uuid.uuid4().hex, at(day))
    return _entry(row["status"], row["body"])


async def reverse(db, partner: uuid.UUID, entry: int, points: int, day: str) -> int:
    row = await db.fetchrow(
        "SELECT * FROM ledger_reverse($1, $2, $3, NULL, $4, 'h', 'test',"
        " ARRAY['earn', 'redeem'], $5)", partner, entry, points, uuid.uuid4().hex, at(day))
    return _entry(row["status"], row["body"])


async def coalition_bonus(db: asyncpg.Pool | asyncpg.Connection, partner: uuid.UUID,
                          member: uuid.UUID, points: int, day: str) -> int:
    """Coalition-funded points earned at `partner` (as a campaign the operator pays)."""
    async with _conn(db) as conn, conn.transaction():
        entry = await conn.fetchval(
            "INSERT INTO journal_entries (kind, partner_id, member_id, actor, occurred_at,"
            " created_at) VALUES ('earn', $1, $2, 'test', $3, $3) RETURNING id",
            partner, member, at(day))
        await conn.execute("SELECT ledger_credit_lots($1, $2, $3, 0, $4, $5, NULL)",
                           entry, partner, member, points, at(day))
    return entry


class _conn:
    def __init__(self, db) -> None:
        self.db, self.acquired = db, None

    async def __aenter__(self) -> asyncpg.Connection:
        if isinstance(self.db, asyncpg.Pool):
            self.acquired = await self.db.acquire()
            return self.acquired
        return self.db

    async def __aexit__(self, *exc) -> None:
        if self.acquired is not None:
            await self.db.release(self.acquired)


async def settled_statement(db, partner: uuid.UUID, period: str) -> tuple[int, int, int]:
    """A finalized monthly run `period` holding one statement of `partner` with one line,
    a flow cell, a dispute and an adjustment, written directly (for the RLS and
    isolation walks, which test the walls, not the computation). Returns (run,
    statement, line)."""
    async with _conn(db) as conn, conn.transaction():
        run = await conn.fetchval(
            "INSERT INTO settlement_runs (period, cycle, period_start, period_end, currency,"
            " created_by) VALUES ($1, 'monthly', $2, $3, 'PLN', 'test') RETURNING id",
            period, at(f"{period}-01"), at(f"{period}-02"))
        statement = await conn.fetchval(
            "INSERT INTO settlement_statements (run_id, partner_id, currency, total_debit,"
            " total_credit, net, line_count) VALUES ($1, $2, 'PLN', 120, 0, 120, 1)"
            " RETURNING id", run, partner)
        line = await conn.fetchval(
            "INSERT INTO settlement_lines (statement_id, run_id, partner_id, line_no, type,"
            " description, points, unit_price, amount_exact, amount) VALUES ($1, $2, $3, 1,"
            " 'issuance', 'Points issued to members', 100, 1.2, 120, 120) RETURNING id",
            statement, run, partner)
        await conn.execute("INSERT INTO settlement_flows (run_id, issuer_partner_id,"
                           " redeemer_partner_id, funding, points, value)"
                           " VALUES ($1, $2, NULL, 'partner', 5, 5)", run, partner)
        adjustment = await conn.fetchval(
            "INSERT INTO settlement_adjustments (partner_id, amount, reason, created_by)"
            " VALUES ($1, -1, 'test', 'test') RETURNING id", partner)
        await conn.execute(
            "INSERT INTO settlement_disputes (run_id, statement_id, line_id, partner_id,"
            " line_summary, comment, created_by, status, adjustment_id)"
            " VALUES ($1, $2, $3, $4, 'line', 'why?', 'test', 'accepted', $5)",
            run, statement, line, partner, adjustment)
        await conn.execute("UPDATE settlement_runs SET status = 'in_review' WHERE id = $1", run)
        await conn.execute("UPDATE settlement_runs SET status = 'finalized', finalized_at ="
                           " now(), content_hash = settlement_content_hash(id) WHERE id = $1",
                           run)
    return run, statement, line
