"""The ledger's Python face. Writes are single calls to the SQL posting functions
(migrations/sql), which validate, post and record idempotency in one round trip."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from coalition import clock


@dataclass(frozen=True)
class PostingResult:
    """HTTP-shaped outcome of a posting function: a status and a JSON body (as text)."""

    status: int
    body: str

    @property
    def ok(self) -> bool:
        return self.status < 300

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass(frozen=True)
class PostingRequest:
    partner_id: uuid.UUID
    member_id: uuid.UUID
    points: int
    actor: str
    order_id: str | None = None
    description: str | None = None
    metadata: dict | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    occurred_at: datetime | None = None
    # Only the demo loader back-dates postings; the API always posts "now" (the clock's).
    posted_at: datetime | None = None


_EARN = "SELECT status, body FROM ledger_earn($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
_CREDIT = (
    "SELECT status, body FROM ledger_earn($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'adjust')"
)
_WITHDRAW = "SELECT status, body FROM ledger_withdraw($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
_REDEEM = "SELECT status, body FROM ledger_redeem($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
_REVERSE = "SELECT status, body FROM ledger_reverse($1, $2, $3, $4, $5, $6, $7, $8, $9)"
_IS_PURCHASE = "SELECT EXISTS (SELECT 1 FROM purchases WHERE entry_id = $1 AND partner_id = $2)"
_HOLD = "SELECT status, body FROM ledger_hold($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
_HOLD_CLOSE = "SELECT status, body FROM ledger_hold_close($1, $2, $3, $4, $5, $6, $7)"
_RETURN = "SELECT status, body FROM purchase_return($1, $2, $3, $4, $5, $6, $7, $8)"


def _args(request: PostingRequest) -> tuple:
    return (
        request.partner_id,
        request.member_id,
        request.points,
        request.order_id,
        request.description,
        json.dumps(request.metadata) if request.metadata is not None else None,
        request.idempotency_key,
        request.request_hash,
        request.actor,
        request.occurred_at,
        request.posted_at or clock.now(),
    )


class Ledger:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def earn(self, request: PostingRequest) -> PostingResult:
        return PostingResult(*await self.pool.fetchrow(_EARN, *_args(request)))

    async def adjust(self, request: PostingRequest, credit: bool) -> PostingResult:
        """A partner-funded correction: a credit creates a lot like an earn; a debit takes
        back points the partner itself issued."""
        if credit:
            return PostingResult(*await self.pool.fetchrow(_CREDIT, *_args(request)))
        args = _args(request)
        return PostingResult(*await self.pool.fetchrow(_WITHDRAW, *args[:9], args[10]))

    async def redeem(self, request: PostingRequest) -> PostingResult:
        return PostingResult(*await self.pool.fetchrow(_REDEEM, *_args(request)))

    @staticmethod
    async def redeem_on(conn: asyncpg.Connection, request: PostingRequest) -> PostingResult:
        """The same redemption on the caller's connection, inside the caller's transaction,
        so it commits or rolls back with the caller's other writes (a reward's voucher).
        A refusal is returned, not raised: the caller must roll back what it wrote."""
        return PostingResult(*await conn.fetchrow(_REDEEM, *_args(request)))

    async def reverse(
        self,
        *,
        partner_id: uuid.UUID,
        entry_id: int,
        points: int | None,
        actor: str,
        allowed_kinds: list[str],
        description: str | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        posted_at: datetime | None = None,
    ) -> PostingResult:
        if await self.pool.fetchval(_IS_PURCHASE, entry_id, partner_id):
            return PostingResult(422, json.dumps({
                "type": "/problems/use-returns", "title": "Use the returns endpoint",
                "status": 422, "field": "transaction_id",
                "detail": "This transaction is a purchase's points; take them back with "
                          "POST /api/v1/purchases/{order_id}/returns."}))
        row = await self.pool.fetchrow(
            _REVERSE,
            partner_id,
            entry_id,
            points,
            description,
            idempotency_key,
            request_hash,
            actor,
            allowed_kinds,
            posted_at or clock.now(),
        )
        return PostingResult(*row)

    async def hold(self, request: PostingRequest, expires_at: datetime | None = None
                   ) -> PostingResult:
        """Authorize a checkout: hold points until capture, void or expiry."""
        row = await self.pool.fetchrow(
            _HOLD, request.partner_id, request.member_id, request.points, request.order_id,
            request.description, request.idempotency_key, request.request_hash, request.actor,
            expires_at, clock.now())
        return PostingResult(*row)

    async def close_hold(self, *, partner_id: uuid.UUID, hold_id: uuid.UUID,
                         capture: int | None, actor: str, idempotency_key: str | None = None,
                         request_hash: str | None = None) -> PostingResult:
        """Capture `capture` points of a hold (the rest goes back), or void it (None)."""
        row = await self.pool.fetchrow(_HOLD_CLOSE, partner_id, hold_id, capture,
                                       idempotency_key, request_hash, actor, clock.now())
        return PostingResult(*row)

    async def purchase_return(self, *, partner_id: uuid.UUID, order_id: str,
                              amount: int | None, lines: list[dict] | None, actor: str,
                              idempotency_key: str | None = None,
                              request_hash: str | None = None,
                              posted_at: datetime | None = None) -> PostingResult:
        return await self.purchase_return_on(
            self.pool, partner_id=partner_id, order_id=order_id, amount=amount, lines=lines,
            actor=actor, idempotency_key=idempotency_key, request_hash=request_hash,
            posted_at=posted_at)

    @staticmethod
    async def purchase_return_on(conn: asyncpg.Connection | asyncpg.Pool, *,
                                 partner_id: uuid.UUID, order_id: str, amount: int | None,
                                 lines: list[dict] | None, actor: str,
                                 idempotency_key: str | None = None,
                                 request_hash: str | None = None,
                                 posted_at: datetime | None = None) -> PostingResult:
        """The same return on the caller's connection (and transaction)."""
        row = await conn.fetchrow(
            _RETURN, partner_id, order_id, amount,
            json.dumps(lines) if lines is not None else None, idempotency_key, request_hash,
            actor, posted_at or clock.now())
        return PostingResult(*row)

    async def balance(self, member_id: uuid.UUID) -> dict[str, int]:
        row = await self.pool.fetchrow(_BALANCE, member_id, clock.now())
        return dict(row)

    async def transactions(
        self, partner_id: uuid.UUID, member_id: uuid.UUID, before: int | None, limit: int
    ) -> tuple[list[dict], int | None]:
        """One page of the member's history as `partner_id` may see it, and the id the
        next page starts before."""
        rows = await self.pool.fetch(_TRANSACTIONS, member_id, before, limit)
        last_id = rows[-1]["id"] if rows else None
        return [_present_transaction(dict(row), partner_id) for row in rows], last_id


# Lifetime figures are net of reversals: a reversed earn was never really earned. Points
# count as earned once available (pending points become so by an 'activate' entry), and
# as redeemed when spent: redemptions and captured checkout holds.
_BALANCE = """
WITH wallet AS (SELECT id, balance FROM accounts WHERE member_id = $1)
SELECT wallet.balance AS available,
       coalesce((SELECT sum(remaining) FROM lots
                  WHERE member_id = $1 AND status = 'pending'), 0)::bigint AS pending,
       coalesce((SELECT sum(points) FROM point_holds
                  WHERE member_id = $1 AND status = 'held'), 0)::bigint AS held,
       coalesce((SELECT sum(remaining) FROM lots
                  WHERE member_id = $1 AND status = 'active' AND remaining > 0
                    AND expires_at < $2::timestamptz + interval '30 days'), 0)::bigint
           AS expiring_within_30_days,
       coalesce(sum(p.amount) FILTER (WHERE coalesce(o.kind, e.kind) IN ('earn', 'activate')),
                0)::bigint
           AS lifetime_earned,
       (coalesce(-sum(p.amount) FILTER (WHERE coalesce(o.kind, e.kind) = 'redeem'), 0)
        + coalesce((SELECT sum(captured) FROM point_holds WHERE member_id = $1), 0))::bigint
           AS lifetime_redeemed
  FROM wallet
  LEFT JOIN postings p ON p.account_id = wallet.id
  LEFT JOIN journal_entries e ON e.id = p.entry_id
  LEFT JOIN journal_entries o ON o.id = e.reverses_entry_id
 GROUP BY wallet.balance
"""

_TRANSACTIONS = """
SELECT e.id, e.kind, e.partner_id, pt.name AS partner_name, e.order_id, e.description,
       e.metadata::text AS metadata, e.reverses_entry_id, e.occurred_at, e.created_at,
       p.amount AS points
  FROM journal_entries e
  JOIN accounts w ON w.member_id = $1
  JOIN postings p ON p.entry_id = e.id AND p.account_id = w.id
  LEFT JOIN partners pt ON pt.id = e.partner_id
 WHERE e.member_id = $1 AND ($2::bigint IS NULL OR e.id < $2)
 ORDER BY e.id DESC
 LIMIT $3
"""


def _present_transaction(row: dict, viewer: uuid.UUID) -> dict:
    """The viewer's own transactions in full; another brand's as name, kind, points, date."""
    partner = {"name": row["partner_name"] or "Coalition"}
    if row["partner_id"] != viewer:
        return {
            "own": False,
            "kind": row["kind"],
            "points": row["points"],
            "partner": partner,
            "created_at": row["created_at"],
        }
    partner["id"] = row["partner_id"]
    return {
        "own": True,
        "id": row["id"],
        "kind": row["kind"],
        "points": row["points"],
        "partner": partner,
        "order_id": row["order_id"],
        "description": row["description"],
        "metadata": json.loads(row["metadata"]),
        "reverses": row["reverses_entry_id"],
        "occurred_at": row["occurred_at"],
        "created_at": row["created_at"],
    }
