"""`coalition ledger verify`: recompute everything derived from postings and compare.

Each check is one set-based query returning the rows that disagree, so verification
of millions of postings stays a handful of scans."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

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
        SELECT 'lot ' || l.id || ': ' || l.points || ' points, its entry credited '
               || coalesce(p.amount, 0) || ' to the wallet'
          FROM lots l
          JOIN accounts w ON w.member_id = l.member_id
          LEFT JOIN postings p ON p.entry_id = l.entry_id AND p.account_id = w.id
         WHERE coalesce(p.amount, 0) <> l.points
         ORDER BY l.id""",
    "wallet vs lots": """
        SELECT 'member ' || w.member_id || ': wallet postings sum to ' || coalesce(s.total, 0)
               || ', lots hold ' || coalesce(l.held, 0)
          FROM accounts w
          LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id) s
                 ON s.account_id = w.id
          LEFT JOIN (SELECT member_id, sum(remaining) AS held FROM lots
                      WHERE status <> 'pending' GROUP BY member_id) l
                 ON l.member_id = w.member_id
         WHERE w.kind = 'member_wallet' AND coalesce(s.total, 0) <> coalesce(l.held, 0)
         ORDER BY w.id""",
    "movement vs posting": """
        SELECT 'entry ' || e.id || ' (' || e.kind || '): lots moved ' || coalesce(m.moved, 0)
               || ', wallet posting ' || coalesce(p.amount, 0)
          FROM journal_entries e
          JOIN accounts w ON w.member_id = e.member_id
          LEFT JOIN postings p ON p.entry_id = e.id AND p.account_id = w.id
          LEFT JOIN (SELECT entry_id, sum(points) AS moved FROM lot_movements GROUP BY entry_id) m
                 ON m.entry_id = e.id
         WHERE (e.kind IN ('redeem', 'reverse') OR (e.kind = 'adjust' AND p.amount < 0))
           AND coalesce(m.moved, 0) <> -coalesce(p.amount, 0)
         ORDER BY e.id""",
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
