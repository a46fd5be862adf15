"""`coalition ledger verify`: recompute everything derived from postings and compare.

Each check is one set-based query returning the rows that disagree, so verification
of millions of postings stays a handful of scans."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from coalition.uow import Tx, own_transactions

CHECKS: dict[str, str] = {
    "unbalanced entry": """
        SELECT 'entry ' || e.id || ': ' || count(p.entry_id) || ' postings summing to '
               || coalesce(sum(p.amount), 0)
          FROM journal_entries e LEFT JOIN postings p ON p.entry_id = e.id
         GROUP BY e.id HAVING coalesce(sum(p.amount), 0) <> 0 OR count(p.entry_id) < 2
         ORDER BY e.id""",
    "trial balance": """
        SELECT 'sum of all postings is ' || total
          FROM (SELECT coalesce(sum(amount), 0) AS total FROM postings) t
         WHERE total <> 0""",
    "cached balance": """
        SELECT 'account ' || a.code || ': cached ' || a.balance || ', postings sum to '
               || coalesce(s.total, 0)
          FROM accounts a
          LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id) s
                 ON s.account_id = a.id
         WHERE a.balance IS NOT NULL AND a.balance <> coalesce(s.total, 0)
         ORDER BY a.id""",
    "balance below bound": """
        SELECT 'account ' || a.code || ': postings sum to ' || s.total
               || ', below its lower bound ' || a.lower_bound
          FROM accounts a
          JOIN (SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id) s
            ON s.account_id = a.id
         WHERE a.lower_bound IS NOT NULL AND s.total < a.lower_bound""",
    "lot remaining": """
        SELECT 'lot ' || l.id || ': remaining ' || l.remaining || ', movements leave '
               || (l.points - coalesce(m.taken, 0))
          FROM lots l
          LEFT JOIN (SELECT lot_id, sum(points) AS taken FROM lot_movements GROUP BY lot_id) m
                 ON m.lot_id = l.id
         WHERE l.remaining <> l.points - coalesce(m.taken, 0)
         ORDER BY l.id""",
    "lot status": """
        SELECT 'lot ' || id || ': status ' || status || ' with ' || remaining || ' remaining'
          FROM lots
         WHERE (status IN ('spent', 'expired', 'cancelled') AND remaining <> 0)
            OR (status = 'active' AND remaining = 0)
         ORDER BY id""",
    "lot origin": """
        SELECT 'lot ' || l.id || ': member/partner differ from its entry ' || e.id
          FROM lots l JOIN journal_entries e ON e.id = l.entry_id
         WHERE l.member_id IS DISTINCT FROM e.member_id
            OR l.partner_id IS DISTINCT FROM e.partner_id
         ORDER BY l.id""",
    "lot points": """
        SELECT 'entry ' || l.entry_id || ': lots of ' || l.points || ' points, the entry'
               || ' credited ' || coalesce(p.amount, 0) || ' to the wallet or pending'
          FROM (SELECT entry_id, min(member_id::text)::uuid AS member_id, sum(points) AS points
                  FROM lots GROUP BY entry_id) l
          JOIN accounts w ON w.member_id = l.member_id
          LEFT JOIN (SELECT p.entry_id, sum(p.amount) AS amount
                       FROM postings p JOIN accounts a ON a.id = p.account_id
                      WHERE a.kind IN ('member_wallet', 'partner_pending')
                      GROUP BY p.entry_id) p ON p.entry_id = l.entry_id
         WHERE coalesce(p.amount, 0) <> l.points
         ORDER BY l.entry_id""",
    # A negative balance is a debt left by a return: no active lot may hold points then.
    "wallet vs lots": """
        SELECT 'member ' || w.member_id || ': wallet postings sum to ' || coalesce(s.total, 0)
               || ', active lots hold ' || coalesce(l.held, 0)
          FROM accounts w
          LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id) s
                 ON s.account_id = w.id
          LEFT JOIN (SELECT member_id, sum(remaining) AS held FROM lots
                      WHERE status <> 'pending' GROUP BY member_id) l
                 ON l.member_id = w.member_id
         WHERE w.kind = 'member_wallet'
           AND coalesce(l.held, 0) <> greatest(coalesce(s.total, 0), 0)
         ORDER BY w.id""",
    "pending vs lots": """
        SELECT 'partner ' || a.partner_id || ': pending account holds ' || coalesce(s.total, 0)
               || ', pending lots ' || coalesce(l.held, 0)
          FROM accounts a
          LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id) s
                 ON s.account_id = a.id
          LEFT JOIN (SELECT partner_id, sum(remaining) AS held FROM lots
                      WHERE status = 'pending' GROUP BY partner_id) l
                 ON l.partner_id = a.partner_id
         WHERE a.kind = 'partner_pending' AND coalesce(s.total, 0) <> coalesce(l.held, 0)""",
    "holds vs authorizations": """
        SELECT 'partner ' || a.partner_id || ': holds account holds ' || coalesce(s.total, 0)
               || ', open authorizations ' || coalesce(h.held, 0)
          FROM accounts a
          LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id) s
                 ON s.account_id = a.id
          LEFT JOIN (SELECT partner_id, sum(points) AS held FROM point_holds
                      WHERE status = 'held' GROUP BY partner_id) h
                 ON h.partner_id = a.partner_id
         WHERE a.kind = 'partner_holds' AND coalesce(s.total, 0) <> coalesce(h.held, 0)""",
    # Entries that create no lots move exactly the points they post to the member's
    # wallet and pending lots, except what a return let go below zero (its debt).
    "movement vs posting": """
        SELECT 'entry ' || e.id || ' (' || e.kind || '): lots moved ' || coalesce(m.moved, 0)
               || ', wallet and pending postings ' || coalesce(p.amount, 0)
               || ', debt ' || coalesce(r.debt, 0)
          FROM journal_entries e
          JOIN accounts w ON w.member_id = e.member_id
          LEFT JOIN (SELECT p.entry_id, sum(p.amount) AS amount
                       FROM postings p JOIN accounts a ON a.id = p.account_id
                      WHERE a.kind IN ('member_wallet', 'partner_pending')
                      GROUP BY p.entry_id) p ON p.entry_id = e.id
          LEFT JOIN (SELECT entry_id, sum(points) AS moved FROM lot_movements
                      WHERE kind <> 'repay' GROUP BY entry_id) m ON m.entry_id = e.id
          LEFT JOIN purchase_returns r ON r.entry_id = e.id
         WHERE NOT EXISTS (SELECT 1 FROM lots l WHERE l.entry_id = e.id)
           AND coalesce(m.moved, 0) <> -coalesce(p.amount, 0) - coalesce(r.debt, 0)
         ORDER BY e.id""",
    "repayment": """
        SELECT 'entry ' || m.entry_id || ': repaid ' || m.repaid || ' points of a debt'
          FROM (SELECT entry_id, sum(points) AS repaid FROM lot_movements
                 WHERE kind = 'repay' GROUP BY entry_id) m
          JOIN journal_entries e ON e.id = m.entry_id
         WHERE e.kind NOT IN ('earn', 'adjust', 'activate', 'release', 'capture', 'reverse')""",
}


@dataclass(frozen=True)
class Discrepancy:
    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.detail}"


async def verify_ledger(connection: asyncpg.Connection, limit: int = 1000) -> list[Discrepancy]:
    found: list[Discrepancy] = []
    # One snapshot for all checks, so concurrent postings cannot show up as differences.
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        for name, query in CHECKS.items():
            rows = await connection.fetch(f"{query} LIMIT {limit}")
            found.extend(Discrepancy(name, row[0]) for row in rows)
    return found


@own_transactions
async def verify(tx: Tx, limit: int = 1000) -> list[Discrepancy]:
    """`verify_ledger` as a use case: it takes its own read-only snapshot, so it runs
    outside the Tx's transaction (`coalition ledger verify`)."""
    return await verify_ledger(tx.conn, limit)
