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
write nothing and report `None`; the caller then takes the locked path.

The statements and their parameters are in statements.py, with what each reads along
about the member (its targeting context, the tier program, an affiliate attribution):
the rules need it, and it comes back with the first step instead of costing a round
trip of its own."""

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
from coalition.earning.statements import (
    AmendResponse,
    EventBegin,
    EventPost,
    PurchaseBegin,
    PurchaseCommit,
    PurchaseFacts,
    PurchasePost,
)
from coalition.ledger import PostingResult
from coalition.tiers.service import TierProgram, qualifying_window


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
    begun: asyncpg.Record  # step 1's row, with what its statement reads along


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
) -> PostingResult:
    """The locked path (see the module's docstring), in a transaction of its own (a
    savepoint when the caller's connection is in one)."""
    begin = PurchaseBegin(
        partner=partner_id, idem_key=idempotency_key, request_hash=request_hash,
        member=member.id, card=member.card_number, customer=member.customer_id,
        order_id=order.order_id, capped_rules=capped_rules, day_start=day_start,
        month_start=month_start)
    try:
        return await _post_locked(conn, begin, actor, order, decide, posted_at, after_post)
    except asyncpg.UniqueViolationError as exc:
        return _order_posted_meanwhile(exc)


def _usage(begun: asyncpg.Record) -> dict[uuid.UUID, tuple[int, int]]:
    """The member's points under each capped rule today and this month, as the first
    step read them under the wallet lock."""
    return {uuid.UUID(rule): (day, month)
            for rule, (day, month) in json.loads(begun["usage"]).items()}


async def _post_locked(conn: asyncpg.Connection, begin: PurchaseBegin, actor: str,
                       order: Order, decide: Decide, posted_at: datetime | None,
                       after_post: AfterPost | None) -> PostingResult:
    async with conn.transaction():
        begun = await conn.fetchrow(begin.sql, *begin.args())
        if not begun["proceed"]:
            return PostingResult(begun["status"], begun["body"])
        usage = _usage(begun)
        situation = Situation(begun["member_id"], begun["first_purchase"],
                              begun["coalition_first"], begun["referrer"], usage, conn,
                              begun)
        decision = await decide(situation)
        referral = None
        if decision.referral and situation.referrer:
            referral = {**decision.referral, "referrer": str(situation.referrer)}
        post = PurchasePost(
            partner=begin.partner, member=situation.member_id, idem_key=begin.idem_key,
            actor=actor, order_id=order.order_id, occurred_at=order.occurred_at,
            currency=order.currency, total=order.total, channel=order.channel,
            store=order.store_id, lines=json.dumps(order.lines),
            hits=json.dumps(decision.hits, default=str),
            skipped=json.dumps(decision.skipped, default=str),
            referral=json.dumps(referral, default=str) if referral else None,
            posted_at=posted_at or clock.now())
        row = await conn.fetchrow(post.sql, *post.args())
        if after_post is None or row["status"] != 201:
            return PostingResult(row["status"], row["body"])
        body = json.loads(row["body"])
        extra = await after_post(situation.member_id, body)
        if not extra:
            return PostingResult(row["status"], row["body"])
        return await amend_response(conn, begin.partner, begin.idem_key, body, extra)


async def amend_response(conn: asyncpg.Connection, partner_id: uuid.UUID,
                         idempotency_key: str | None, body: dict[str, Any],
                         extra: dict[str, Any]) -> PostingResult:
    """A posted write's 201 with `extra` added (what followed it in its transaction: a
    tier change, coupons), in the response and in the stored copy a retry replays."""
    text = json.dumps({**body, **extra}, default=str)
    if idempotency_key is not None:
        amend = AmendResponse(partner=partner_id, key=idempotency_key, response=text)
        await conn.execute(amend.sql, *amend.args())
    return PostingResult(201, text)


STALE_FACTS = "CL001"  # SQLSTATE purchase_commit raises when a fact changed


async def read_facts(conn: asyncpg.Connection, *, partner_id: uuid.UUID, member: MemberRef,
                     capped_rules: list[uuid.UUID], day_start: datetime,
                     month_start: datetime, tiers: TierProgram, at: datetime
                     ) -> Situation | None:
    """The fast path's first step, outside any transaction: the member and what the
    rules need to know, and the member's tier facts under `tiers` for a purchase at
    `at` (coalition.tiers.predict). None when the reference matches no member of the
    partner (the locked path records that refusal)."""
    window = qualifying_window(tiers, at)
    facts = PurchaseFacts(
        partner=partner_id, member=member.id, card=member.card_number,
        customer=member.customer_id, capped_rules=capped_rules, day_start=day_start,
        month_start=month_start, basis=window.basis, start=window.start,
        earlier=window.earlier, currency=window.currency, now=window.now)
    row = await conn.fetchrow(facts.sql, *facts.args())
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
    commit = PurchaseCommit(
        partner=partner_id, idem_key=idempotency_key, request_hash=request_hash,
        member=member.id, card=member.card_number, customer=member.customer_id,
        order_id=order.order_id, capped_rules=capped_rules, day_start=day_start,
        month_start=month_start, expected=_json(expected), actor=actor,
        occurred_at=order.occurred_at, currency=order.currency, total=order.total,
        channel=order.channel, store=order.store_id, lines=_json(order.lines),
        hits=_json(decision.hits), skipped=_json(decision.skipped),
        referral=_json(referral) if referral else None, tier=_json(tier) if tier else None,
        posted_at=clock.now())
    try:
        row = await conn.fetchrow(commit.sql, *commit.args())
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
    day_start, month_start, year_start = period_starts
    begin = EventBegin(
        partner=partner_id, idem_key=idempotency_key, request_hash=request_hash,
        member=member.id, card=member.card_number, customer=member.customer_id,
        event_type=event_type, reference=reference, day_start=day_start,
        month_start=month_start, year_start=year_start, capped_rules=capped_rules)
    try:
        return await _post_event_locked(conn, begin, actor, occurred_at, decide)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "uq_member_events_reference":
            raise
        return PostingResult(409, _EVENT_RECORDED)


async def _post_event_locked(conn: asyncpg.Connection, begin: EventBegin, actor: str,
                             occurred_at: datetime,
                             decide: Callable[[EventSituation], Awaitable[Decision]]
                             ) -> PostingResult:
    async with conn.transaction():
        begun = await conn.fetchrow(begin.sql, *begin.args())
        if not begun["proceed"]:
            return PostingResult(begun["status"], begun["body"])
        usage = _usage(begun)
        decision = await decide(EventSituation(begun["member_id"],
                                               json.loads(begun["counts"]), usage))
        post = EventPost(
            partner=begin.partner, member=begun["member_id"], idem_key=begin.idem_key,
            actor=actor, event_type=begin.event_type, reference=begin.reference,
            occurred_at=occurred_at, hits=json.dumps(decision.hits, default=str),
            skipped=json.dumps(decision.skipped, default=str), posted_at=clock.now())
        row = await conn.fetchrow(post.sql, *post.args())
        return PostingResult(row["status"], row["body"])


# The answer event_begin gives for a reference already recorded (ledger_problem): two
# posts of one reference at once both pass its check, and the unique index stops the
# later one, whose transaction is rolled back whole, as for an order id above.
_EVENT_RECORDED = json.dumps({
    "type": "/problems/event-already-recorded", "title": "Event already recorded",
    "status": 409, "detail": "This member already has an event of this type with this"
    " reference.", "field": "reference"})
