"""The ledger's Python face. Writes are single calls to the SQL posting functions
(migrations/sql), which validate, post and record idempotency in one round trip."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from coalition import clock
from coalition.uow import Database, Tx, one_statement


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


async def _posting(conn: asyncpg.Connection | asyncpg.Pool, sql: str, *args: object
                   ) -> PostingResult:
    return PostingResult(*await conn.fetchrow(sql, *args))


@one_statement
async def earn(tx: Tx, request: PostingRequest) -> PostingResult:
    """Issue points to a member at the request's partner."""
    return await _posting(tx.conn, _EARN, *_args(request))


@one_statement
async def adjust(tx: Tx, request: PostingRequest, credit: bool) -> PostingResult:
    """A partner-funded correction: a credit creates a lot like an earn; a debit takes
    back points the partner itself issued."""
    if credit:
        return await _posting(tx.conn, _CREDIT, *_args(request))
    args = _args(request)
    return await _posting(tx.conn, _WITHDRAW, *args[:9], args[10])


@one_statement
async def redeem(tx: Tx, request: PostingRequest) -> PostingResult:
    """Spend a member's points, first-expiring lots first."""
    return await redeem_on(tx.conn, request)


async def redeem_on(conn: asyncpg.Connection, request: PostingRequest) -> PostingResult:
    """The same redemption on the caller's connection, inside the caller's transaction,
    so it commits or rolls back with the caller's other writes (a reward's voucher).
    A refusal is returned, not raised: the caller must roll back what it wrote."""
    return await _posting(conn, _REDEEM, *_args(request))


@one_statement
async def reverse(tx: Tx, *, partner_id: uuid.UUID, entry_id: int, points: int | None,
                  actor: str, allowed_kinds: list[str], description: str | None = None,
                  idempotency_key: str | None = None, request_hash: str | None = None,
                  posted_at: datetime | None = None) -> PostingResult:
    """Reverse the partner's own earn or redemption, fully or partly (`points` None:
    what remains). A purchase's points are taken back by a return instead."""
    if await tx.conn.fetchval(_IS_PURCHASE, entry_id, partner_id):
        return PostingResult(422, json.dumps({
            "type": "/problems/use-returns", "title": "Use the returns endpoint",
            "status": 422, "field": "transaction_id",
            "detail": "This transaction is a purchase's points; take them back with "
                      "POST /api/v1/purchases/{order_id}/returns."}))
    return await _posting(tx.conn, _REVERSE, partner_id, entry_id, points, description,
                          idempotency_key, request_hash, actor, allowed_kinds,
                          posted_at or clock.now())


@one_statement
async def hold(tx: Tx, request: PostingRequest, expires_at: datetime | None = None
               ) -> PostingResult:
    """Authorize a checkout: hold points until capture, void or expiry."""
    return await _posting(
        tx.conn, _HOLD, request.partner_id, request.member_id, request.points,
        request.order_id, request.description, request.idempotency_key,
        request.request_hash, request.actor, expires_at, clock.now())


@one_statement
async def close_hold(tx: Tx, *, partner_id: uuid.UUID, hold_id: uuid.UUID,
                     capture: int | None, actor: str, idempotency_key: str | None = None,
                     request_hash: str | None = None) -> PostingResult:
    """Capture `capture` points of a hold (the rest goes back), or void it (None)."""
    return await _posting(tx.conn, _HOLD_CLOSE, partner_id, hold_id, capture,
                          idempotency_key, request_hash, actor, clock.now())


async def post_return(conn: asyncpg.Connection | asyncpg.Pool, *, partner_id: uuid.UUID,
                      order_id: str, amount: int | None, lines: list[dict] | None,
                      actor: str, idempotency_key: str | None = None,
                      request_hash: str | None = None, posted_at: datetime | None = None
                      ) -> PostingResult:
    """The SQL return of all or part of a purchase, on the caller's connection (and
    transaction); what follows it (the affiliate commission, the tier) is
    coalition.earning `purchase_return`."""
    return await _posting(
        conn, _RETURN, partner_id, order_id, amount,
        json.dumps(lines) if lines is not None else None, idempotency_key, request_hash,
        actor, posted_at or clock.now())


_HOLD_BODY = ("SELECT h.member_id, ledger_hold_body(h.id, a.balance) AS body"
              " FROM point_holds h JOIN accounts a ON a.member_id = h.member_id"
              " WHERE h.id = $1")
_HELD = "SELECT member_id, points FROM point_holds WHERE id = $1"


async def hold_detail(tx: Tx, hold_id: uuid.UUID) -> dict[str, Any] | None:
    """A checkout authorization (member_id, body as the API shows it), or None. Run
    it scoped: row-level security hides another partner's holds."""
    row = await tx.conn.fetchrow(_HOLD_BODY, hold_id)
    return dict(row) if row is not None else None


async def held(tx: Tx, hold_id: uuid.UUID) -> dict[str, Any] | None:
    """A hold's member_id and held points, or None (scoped, as `hold_detail`)."""
    row = await tx.conn.fetchrow(_HELD, hold_id)
    return dict(row) if row is not None else None


class Ledger:
    """The use cases above on a pool, each in a Tx of its own, as the platform, for
    tests and scripts; and the member's balance and history."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._db = Database(pool)

    async def earn(self, request: PostingRequest) -> PostingResult:
        return await self._db.run(earn, request)

    async def adjust(self, request: PostingRequest, credit: bool) -> PostingResult:
        return await self._db.run(adjust, request, credit)

    async def redeem(self, request: PostingRequest) -> PostingResult:
        return await self._db.run(redeem, request)

    redeem_on = staticmethod(redeem_on)

    async def reverse(self, **kwargs: Any) -> PostingResult:
        return await self._db.run(reverse, **kwargs)

    async def hold(self, request: PostingRequest, expires_at: datetime | None = None
                   ) -> PostingResult:
        return await self._db.run(hold, request, expires_at)

    async def close_hold(self, **kwargs: Any) -> PostingResult:
        return await self._db.run(close_hold, **kwargs)

    async def purchase_return(self, **kwargs: Any) -> PostingResult:
        return await post_return(self.pool, **kwargs)

    async def balance(self, member_id: uuid.UUID) -> dict[str, int]:
        return await member_balance(self.pool, member_id)

    async def transactions(self, partner_id: uuid.UUID, member_id: uuid.UUID,
                           before: int | None, limit: int) -> tuple[list[dict], int | None]:
        return await self._db.run(transactions, partner_id, member_id, before, limit)


async def member_balance(conn: asyncpg.Connection | asyncpg.Pool, member_id: uuid.UUID
                         ) -> dict[str, int]:
    """Available, pending, held and expiring points, and the lifetime figures."""
    return dict(await conn.fetchrow(_BALANCE, member_id, clock.now()))


@one_statement
async def balance(tx: Tx, member_id: uuid.UUID) -> dict[str, int]:
    return await member_balance(tx.conn, member_id)


async def member_history(conn: asyncpg.Connection | asyncpg.Pool, member_id: uuid.UUID,
                         before: int | None, limit: int) -> list[asyncpg.Record]:
    """The member's ledger lines across brands, newest first, from before `before`."""
    return await conn.fetch(_TRANSACTIONS, member_id, before, limit)


@one_statement
async def transactions(tx: Tx, partner_id: uuid.UUID, member_id: uuid.UUID,
                       before: int | None, limit: int) -> tuple[list[dict], int | None]:
    """One page of the member's history as `partner_id` may see it, and the id the
    next page starts before."""
    rows = await member_history(tx.conn, member_id, before, limit)
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
