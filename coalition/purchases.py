"""Posting purchases and events.

The locked path (`post_purchase`, and `post_event`): three steps on one connection, in
one transaction.

1. `purchase_begin` (SQL): idempotency claim, member lookup, order-id check, the member's
   wallet lock, and what rules need to know about the member (first purchase, usage of
   capped rules, the referrer of an open referral).
2. The rules decide the points (pure Python, `Decide`).
3. `purchase_post` (SQL): entries, lots (pending during the partner's return window),
   rule hits, campaign budgets, the referral bonuses (coalition/referrals.py), the
   stored response.

Holding the wallet lock from step 1 to step 3 makes per-member caps and "first purchase"
exact under concurrency; a failure anywhere rolls the whole transaction back, so a
retry with the same Idempotency-Key is evaluated afresh.

The fast path (`read_facts`, then `commit_purchase`) gives the same result in two round
trips instead of five (BEGIN, begin, post, the tier read, COMMIT), which is most of a
purchase's cost: the facts are read without a lock, the rules decide, and one
statement (`purchase_commit`) claims, locks, checks that every fact still holds, and
posts. A fact that changed in between (a concurrent posting for the member) makes it
write nothing and report `None`; the caller then takes the locked path."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from coalition import clock
from coalition.ledger import PostingResult


@dataclass(frozen=True)
class MemberRef:
    """How the partner names the member: exactly one of the three."""

    id: uuid.UUID | None = None
    card_number: str | None = None
    customer_id: str | None = None


@dataclass(frozen=True)
class Order:
    order_id: str
    occurred_at: datetime
    currency: str
    total: int
    channel: str
    store_id: str | None
    lines: list[dict[str, Any]]


@dataclass(frozen=True)
class Situation:
    """What step 1 found out about the member, for the rules."""

    member_id: uuid.UUID
    first_purchase: bool
    coalition_first: bool
    referrer: uuid.UUID | None
    usage: dict[uuid.UUID, tuple[int, int]]  # rule id -> (points today, this month)
    conn: asyncpg.Connection
    begun: asyncpg.Record  # step 1's row, with whatever the caller's `begin_join` added


@dataclass
class Decision:
    """The rules' answer: hits are dicts with rule_id, version, points, funding, budget
    and explanation fields; `referral` (the referee's purchase qualifies under a referral
    rule) is {rule_id, version, name, funding, points, welcome_points, monthly_limit,
    explanation} or None."""

    hits: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    referral: dict[str, Any] | None = None


Decide = Callable[[Situation], Awaitable[Decision]]
# Work that follows a posted purchase in the same transaction (tier upgrade, coupons);
# what it returns is added to the response, and to the stored copy a retry replays.
AfterPost = Callable[[uuid.UUID, dict[str, Any]], Awaitable[dict[str, Any]]]

_BEGIN = ("SELECT * FROM purchase_begin($1, $2, $3, $4, $5, $6, $7, $8::uuid[], $9, $10) b")
_POST = ("SELECT status, body FROM purchase_post($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
         " $11::jsonb, $12::jsonb, $13::jsonb, $14::jsonb, $15)")


async def post_purchase(
    conn: asyncpg.Connection,
    *,
    partner_id: uuid.UUID,
    actor: str,
    member: MemberRef,
    order: Order,
    decide: Decide,
    capped_rules: list[uuid.UUID],
    day_start: datetime,
    month_start: datetime,
    idempotency_key: str | None,
    request_hash: str | None,
    posted_at: datetime | None = None,
    after_post: AfterPost | None = None,
    begin_join: str = "",
) -> PostingResult:
    """`begin_join` is SQL joined onto step 1's row `b` (b.member_id is the member once
    found; b.proceed says whether to go on): what the rules need to read about the
    member comes back with step 1 instead of costing a round trip of its own. It must
    be constant text, never input."""
    try:
        return await _post_locked(conn, partner_id, actor, member, order, decide,
                                  capped_rules, day_start, month_start, idempotency_key,
                                  request_hash, posted_at, after_post, begin_join)
    except asyncpg.UniqueViolationError as exc:
        return _order_posted_meanwhile(exc)


async def _post_locked(conn: asyncpg.Connection, partner_id: uuid.UUID, actor: str,
                       member: MemberRef, order: Order, decide: Decide,
                       capped_rules: list[uuid.UUID], day_start: datetime,
                       month_start: datetime, idempotency_key: str | None,
                       request_hash: str | None, posted_at: datetime | None,
                       after_post: AfterPost | None, begin_join: str) -> PostingResult:
    async with conn.transaction():
        begun = await conn.fetchrow(
            _BEGIN + begin_join, partner_id, idempotency_key, request_hash, member.id,
            member.card_number, member.customer_id, order.order_id, capped_rules, day_start,
            month_start)
        if not begun["proceed"]:
            return PostingResult(begun["status"], begun["body"])
        usage = {uuid.UUID(rule): (day, month)
                 for rule, (day, month) in json.loads(begun["usage"]).items()}
        situation = Situation(begun["member_id"], begun["first_purchase"],
                              begun["coalition_first"], begun["referrer"], usage, conn,
                              begun)
        decision = await decide(situation)
        referral = None
        if decision.referral and situation.referrer:
            referral = {**decision.referral, "referrer": str(situation.referrer)}
        row = await conn.fetchrow(
            _POST, partner_id, situation.member_id, idempotency_key, actor, order.order_id,
            order.occurred_at, order.currency, order.total, order.channel, order.store_id,
            json.dumps(order.lines), json.dumps(decision.hits, default=str),
            json.dumps(decision.skipped, default=str),
            json.dumps(referral, default=str) if referral else None,
            posted_at or clock.now())
        if after_post is None or row["status"] != 201:
            return PostingResult(row["status"], row["body"])
        body = json.loads(row["body"])
        extra = await after_post(situation.member_id, body)
        if not extra:
            return PostingResult(row["status"], row["body"])
        return await amend_response(conn, partner_id, idempotency_key, body, extra)


async def amend_response(conn: asyncpg.Connection, partner_id: uuid.UUID,
                         idempotency_key: str | None, body: dict[str, Any],
                         extra: dict[str, Any]) -> PostingResult:
    """A posted write's 201 with `extra` added (what followed it in its transaction: a
    tier change, coupons), in the response and in the stored copy a retry replays."""
    text = json.dumps({**body, **extra}, default=str)
    if idempotency_key is not None:
        await conn.execute("UPDATE idempotency_keys SET response = $3"
                           " WHERE partner_id = $1 AND key = $2",
                           partner_id, idempotency_key, text)
    return PostingResult(201, text)


_FACTS = "SELECT * FROM purchase_facts($1, $2, $3, $4, $5::uuid[], $6, $7) f"
_COMMIT = ("SELECT status, body FROM purchase_commit($1, $2, $3, $4, $5, $6, $7, $8::uuid[],"
           " $9, $10, $11::jsonb, $12, $13, $14, $15, $16, $17, $18::jsonb, $19::jsonb,"
           " $20::jsonb, $21::jsonb, $22::jsonb, $23)")
STALE_FACTS = "CL001"  # SQLSTATE purchase_commit raises when a fact changed


async def read_facts(conn: asyncpg.Connection, *, partner_id: uuid.UUID, member: MemberRef,
                     capped_rules: list[uuid.UUID], day_start: datetime,
                     month_start: datetime, join: str = "", join_args: tuple = ()
                     ) -> Situation | None:
    """The fast path's first step, outside any transaction: the member and what the
    rules need to know, plus whatever `join` (constant SQL over `f`, with parameters
    from $8 on) reads along. None when the reference matches no member of the partner
    (the locked path records that refusal)."""
    row = await conn.fetchrow(_FACTS + join, partner_id, member.id, member.card_number,
                              member.customer_id, capped_rules, day_start, month_start,
                              *join_args)
    if row["member_id"] is None:
        return None
    usage = {uuid.UUID(rule): (day, month)
             for rule, (day, month) in json.loads(row["usage"]).items()}
    return Situation(row["member_id"], row["first_purchase"], row["coalition_first"],
                     row["referrer"], usage, conn, row)


async def commit_purchase(
    conn: asyncpg.Connection,
    *,
    partner_id: uuid.UUID,
    actor: str,
    member: MemberRef,
    order: Order,
    situation: Situation,
    decision: Decision,
    capped_rules: list[uuid.UUID],
    day_start: datetime,
    month_start: datetime,
    idempotency_key: str | None,
    request_hash: str | None,
    tier: dict[str, Any] | None,
) -> PostingResult | None:
    """The fast path's last step: post `decision` if every fact in `situation` (and the
    tier facts in `tier`, see purchase_commit) still holds; None when one changed, with
    nothing written."""
    expected = {"member_id": str(situation.member_id),
                "first_purchase": situation.first_purchase,
                "coalition_first": situation.coalition_first,
                "referrer": str(situation.referrer) if situation.referrer else None,
                "usage": json.loads(situation.begun["usage"])}
    referral = None
    if decision.referral and situation.referrer:
        referral = {**decision.referral, "referrer": str(situation.referrer)}
    try:
        row = await conn.fetchrow(
            _COMMIT, partner_id, idempotency_key, request_hash, member.id,
            member.card_number, member.customer_id, order.order_id, capped_rules, day_start,
            month_start, _json(expected), actor, order.occurred_at, order.currency,
            order.total, order.channel, order.store_id, _json(order.lines),
            _json(decision.hits), _json(decision.skipped),
            _json(referral) if referral else None, _json(tier) if tier else None,
            clock.now())
    except asyncpg.UniqueViolationError as exc:
        return _order_posted_meanwhile(exc)
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == STALE_FACTS:
            return None
        raise
    return PostingResult(row["status"], row["body"])


# The answer purchase_begin gives for an order id already posted (ledger_problem).
_ORDER_POSTED = ('{"type": "/problems/order-already-posted", "title": "Order already posted",'
                 ' "status": 409, "detail": "A purchase with this order_id was already'
                 ' posted; post a return to change it.", "field": "order_id"}')


def _order_posted_meanwhile(exc: asyncpg.UniqueViolationError) -> PostingResult:
    """Two posts of one order id at once both pass the check in purchase_begin; the
    unique index stops the later one, whose transaction is rolled back whole (its
    idempotency key too). It gets the answer it would have got a moment later."""
    if exc.constraint_name != "uq_purchases_partner_order":
        raise exc
    return PostingResult(409, _ORDER_POSTED)


_ENCODER = msgspec.json.Encoder(enc_hook=str)


def _json(value: Any) -> str:
    """JSON text for a jsonb parameter (msgspec: several times faster than json.dumps on
    a 20-line order; datetimes as RFC 3339, anything else unknown as its str)."""
    return _ENCODER.encode(value).decode()


_EVENT_BEGIN = ("SELECT * FROM event_begin($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
                " $12::uuid[])")
_EVENT_POST = ("SELECT status, body FROM event_post($1, $2, $3, $4, $5, $6, $7, $8::jsonb,"
               " $9::jsonb, $10)")


@dataclass(frozen=True)
class EventSituation:
    member_id: uuid.UUID
    counts: dict[str, int]  # earlier events of this type: ever, year, month, day
    usage: dict[uuid.UUID, tuple[int, int]]  # rule id -> (points today, this month)


async def post_event(
    conn: asyncpg.Connection,
    *,
    partner_id: uuid.UUID,
    actor: str,
    member: MemberRef,
    event_type: str,
    reference: str,
    occurred_at: datetime,
    decide: Callable[[EventSituation], Awaitable[Decision]],
    capped_rules: list[uuid.UUID],
    period_starts: tuple[datetime, datetime, datetime],
    idempotency_key: str | None,
    request_hash: str | None,
) -> PostingResult:
    """The locked path for an event: event_begin (claim, member, reference check, wallet
    lock, frequency counts and the usage of `capped_rules`), the rules, event_post
    (budgets, entry, rule hits, the stored response)."""
    try:
        return await _post_event_locked(conn, partner_id, actor, member, event_type,
                                        reference, occurred_at, decide, capped_rules,
                                        period_starts, idempotency_key, request_hash)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "uq_member_events_reference":
            raise
        return PostingResult(409, _EVENT_RECORDED)


async def _post_event_locked(conn: asyncpg.Connection, partner_id: uuid.UUID, actor: str,
                             member: MemberRef, event_type: str, reference: str,
                             occurred_at: datetime,
                             decide: Callable[[EventSituation], Awaitable[Decision]],
                             capped_rules: list[uuid.UUID],
                             period_starts: tuple[datetime, datetime, datetime],
                             idempotency_key: str | None, request_hash: str | None
                             ) -> PostingResult:
    day_start, month_start, year_start = period_starts
    async with conn.transaction():
        begun = await conn.fetchrow(
            _EVENT_BEGIN, partner_id, idempotency_key, request_hash, member.id,
            member.card_number, member.customer_id, event_type, reference, day_start,
            month_start, year_start, capped_rules)
        if not begun["proceed"]:
            return PostingResult(begun["status"], begun["body"])
        usage = {uuid.UUID(rule): (day, month)
                 for rule, (day, month) in json.loads(begun["usage"]).items()}
        decision = await decide(EventSituation(begun["member_id"],
                                               json.loads(begun["counts"]), usage))
        row = await conn.fetchrow(
            _EVENT_POST, partner_id, begun["member_id"], idempotency_key, actor, event_type,
            reference, occurred_at, json.dumps(decision.hits, default=str),
            json.dumps(decision.skipped, default=str), clock.now())
        return PostingResult(row["status"], row["body"])


# The answer event_begin gives for a reference already recorded (ledger_problem): two
# posts of one reference at once both pass its check, and the unique index stops the
# later one, whose transaction is rolled back whole, as for an order id above.
_EVENT_RECORDED = json.dumps({
    "type": "/problems/event-already-recorded", "title": "Event already recorded",
    "status": 409, "detail": "This member already has an event of this type with this"
    " reference.", "field": "reference"})
