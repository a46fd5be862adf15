"""Earning's use cases: a purchase or event goes through the rules (coalition.rules), who
the member is for targeting (coalition.audience) and the ledger (posting.py); what
follows a purchase happens in its transaction: the affiliate's commission
(coalition.affiliates), the tier upgrade (coalition.tiers) and cross-brand coupons
(coalition.rewards). A return takes the points back and brings the commission and the
tier in line, in one Tx.

Each runs with the partner and the actor of its Tx (the API client's)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from coalition import clock
from coalition.affiliates import commissions
from coalition.affiliates.attribution import Flush, Touch, add_months
from coalition.audience import MemberContext, context_of, member_context
from coalition.earning import evaluation, queries
from coalition.earning.evaluation import hit_rows, periods, skip_rows
from coalition.earning.posting import (
    Decide,
    Decision,
    EventSituation,
    MemberRef,
    Order,
    Situation,
    amend_response,
    commit_purchase,
    post_event,
    post_purchase,
    read_facts,
)
from coalition.errors import DomainError, NotFound
from coalition.ledger import PostingResult, post_return
from coalition.rewards import grant_purchase_coupons
from coalition.rules.engine import (
    EventHistory,
    RuleUsage,
    RuleVersion,
    Shopper,
    capped_rule_ids,
    evaluate_event,
)
from coalition.rules.service import active_rules, budget_left, member_usage
from coalition.settings import CoalitionSettings, coalition_settings
from coalition.tiers import service as tiers
from coalition.uow import Tx, one_statement

# A purchase may be reported a little ahead of our clock, never from the future.
CLOCK_SKEW = timedelta(minutes=5)
# Nor from before the Unix epoch: no loyalty activity predates it, and every later moment
# has a day, month and year start in any time zone (year 1 has none before it).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def check_moment(value: datetime, field: str) -> datetime:
    """When a purchase or event happened, as the partner reports it."""
    if value.tzinfo is None:
        raise DomainError("validation-error", "Invalid request",
                          f"{field} needs a time zone offset (e.g. 2026-11-26T10:00:00+01:00).",
                          status=400, field=field)
    if value > clock.now() + CLOCK_SKEW:
        raise DomainError("validation-error", "Invalid request", f"{field} is in the future.",
                          status=422, field=field)
    if value < EARLIEST:
        raise DomainError("validation-error", "Invalid request",
                          f"{field} is before {EARLIEST.date().isoformat()}.", status=422,
                          field=field)
    return value


def _check_order(order: Order, settings: CoalitionSettings) -> None:
    if order.currency != settings.currency:
        raise DomainError("currency-not-supported", "Currency not supported",
                          f"Purchases are accepted in {settings.currency} only.",
                          field="currency")
    check_moment(order.occurred_at, "occurred_at")


def _partner(tx: Tx) -> uuid.UUID:
    if tx.partner_id is None:
        raise RuntimeError("earning runs for a partner: run it acting for one")
    return tx.partner_id


@one_statement
async def purchase(tx: Tx, *, member: MemberRef, order: Order, idempotency_key: str | None,
                   request_hash: str | None, touch: Touch | None = None,
                   flush: Flush | None = None, posted_at: datetime | None = None
                   ) -> PostingResult:
    """Post a purchase: the fast path when it applies and the facts hold, else the
    locked path (posting.py explains both; they give the same result), which opens its
    own transaction: a one-statement Tx, so the fast path pays no BEGIN.
    A purchase that may be an affiliate's conversion (a click id or code given, or a
    stored attribution of the member at the partner) takes the locked path: its
    commission is written in the purchase's transaction (coalition.affiliates).
    `posted_at` back-dates the posting (only the demo loader does, like
    PostingRequest.posted_at); only the locked path's SQL takes it."""
    conn, partner_id = tx.conn, _partner(tx)
    settings = await coalition_settings(conn)
    _check_order(order, settings)
    rules = await active_rules(conn, partner_id, order.occurred_at)
    day, month, _ = periods(order.occurred_at, settings.timezone)
    begun: dict[str, Any] = {}

    async def decide(situation: Situation) -> Decision:
        begun["row"] = situation.begun
        usage = {rule: RuleUsage(*points) for rule, points in situation.usage.items()}
        found = await evaluation.evaluate_order(
            conn, rules, order, context_of(situation.begun, situation.member_id),
            situation.first_purchase, usage, settings)
        referral, skipped = None, skip_rows(found)
        if situation.referrer is not None:
            referral, not_qualifying = await evaluation.referral(
                conn, rules, order, situation.referrer, settings)
            skipped += not_qualifying
        return Decision(hit_rows(found, rules), skipped, referral)

    async def after(member_id: uuid.UUID, body: dict[str, Any]) -> dict[str, Any]:
        """Only what happened goes into the response: `tier_change`, `coupons`."""
        extra: dict[str, Any] = {}
        if touch or begun["row"]["affiliate_attributed"]:
            made = await commissions.for_purchase(
                conn, partner_id=partner_id, member_id=member_id, order_id=order.order_id,
                total=order.total, lines=order.lines, at=order.occurred_at,
                currency=order.currency, month=(month, add_months(month, 1)), touch=touch,
                flush=flush)
            if made is not None:
                extra["affiliate_commission"] = {
                    key: made[key] for key in ("id", "amount", "currency", "status")}
        ladder = tiers.program_of(begun["row"], settings.timezone, settings.currency)
        if ladder.ladder:
            change = await tiers.reevaluate_locked(conn, ladder, member_id, order.occurred_at)
            if change is not None:
                extra["tier_change"] = _jsonable(change)
        if partner_id in await evaluation.coupon_sources(conn):
            coupons = await grant_purchase_coupons(
                conn, partner_id=partner_id, member_id=member_id, order_id=order.order_id,
                total=order.total, occurred_at=order.occurred_at)
            if coupons:
                extra["coupons"] = coupons
        return extra

    capped = capped_rule_ids(rules)
    # A referral's referrer caps are read under the referrer's lock, which only the
    # locked path holds until the posting (evaluation `_referrer_usage`).
    referrer_capped = bool(capped_rule_ids(r for r in rules if r.type == "referral"))
    # Cross-brand coupons follow the posting in its transaction: the locked path only.
    if (not touch and posted_at is None
            and partner_id not in await evaluation.coupon_sources(conn)):
        posted = await _fast_purchase(tx, settings, member=member, order=order,
                                      decide=decide, capped=capped, day=day, month=month,
                                      idempotency_key=idempotency_key,
                                      request_hash=request_hash,
                                      referrer_capped=referrer_capped)
        if posted is not None:
            return posted
    return await post_purchase(
        conn, partner_id=partner_id, actor=tx.actor.label, member=member, order=order,
        decide=decide, capped_rules=capped, day_start=day, month_start=month,
        idempotency_key=idempotency_key, request_hash=request_hash, posted_at=posted_at,
        after_post=after)


# The tier program the fast path last saw, by the text of its two columns.
_tier_program: dict[str, Any] = {}


async def _fast_purchase(tx: Tx, settings: CoalitionSettings, *, member: MemberRef,
                         order: Order, decide: Decide, capped: list[uuid.UUID],
                         day: datetime, month: datetime, idempotency_key: str | None,
                         request_hash: str | None, referrer_capped: bool
                         ) -> PostingResult | None:
    """None when the locked path must decide: an unknown member (it records the
    refusal), a tier program that changed since this process last saw it, a referee
    whose referral may pay under a rule with per-member caps (`referrer_capped`), or a
    fact that changed between the read and the posting."""
    conn, partner_id = tx.conn, _partner(tx)
    ladder = _tier_program.get("program")
    if ladder is None:
        ladder = await tiers.load_program(conn)
    situation = await read_facts(conn, partner_id=partner_id, member=member,
                                 capped_rules=capped, day_start=day, month_start=month,
                                 tiers=ladder, at=order.occurred_at)
    if situation is None or situation.begun["affiliate_attributed"] or (
            referrer_capped and situation.referrer is not None):
        return None
    seen = (situation.begun["tier_policy"], situation.begun["tier_ladder"])
    if _tier_program.get("seen") != seen:
        _tier_program.update(seen=seen, program=tiers.program_of(
            situation.begun, settings.timezone, settings.currency))
        return None
    decision = await decide(situation)
    tier = None
    if ladder.ladder:
        welcome = decision.referral["welcome_points"] if decision.referral else 0
        gained = (sum(hit["points"] for hit in decision.hits) + welcome
                  if ladder.policy.qualification == "points"
                  else order.total if order.currency == ladder.currency else 0)
        tier = tiers.predict(ladder, situation.begun, gained, order.occurred_at)
    return await commit_purchase(
        conn, partner_id=partner_id, actor=tx.actor.label, member=member, order=order,
        situation=situation, decision=decision, capped_rules=capped, day_start=day,
        month_start=month, idempotency_key=idempotency_key, request_hash=request_hash,
        tier=tier)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: getattr(o, "__dict__", str(o))))


async def purchase_return(tx: Tx, *, order_id: str, amount: int | None,
                          lines: list[dict[str, Any]] | None, idempotency_key: str | None,
                          request_hash: str | None) -> PostingResult:
    """Return all or part of a purchase (SQL purchase_return takes its points back); the
    order's affiliate commission and the member's tier follow in the same Tx."""
    partner_id = _partner(tx)
    returned = await post_return(
        tx.conn, partner_id=partner_id, order_id=order_id, amount=amount, lines=lines,
        actor=tx.actor.label, idempotency_key=idempotency_key, request_hash=request_hash)
    if returned.status != 201:
        return returned
    now = clock.now()
    await commissions.apply_return(tx.conn, partner_id, order_id, now)
    return await _tier_after_return(tx, idempotency_key, returned, now)


async def _tier_after_return(tx: Tx, idempotency_key: str | None, returned: PostingResult,
                             now: datetime) -> PostingResult:
    """A posted return lowers the member's qualifying value: re-evaluate the tier at once
    (under a rolling re-evaluation policy it may fall), in the return's transaction,
    after its wallet lock. A change is added to the response and to its stored copy."""
    body = json.loads(returned.body)
    change = await tiers.reevaluate_member(tx.conn, uuid.UUID(body["member_id"]), now)
    if change is None:
        return returned
    return await amend_response(tx.conn, _partner(tx), idempotency_key, body,
                                {"tier_change": _jsonable(change)})


@one_statement  # reads only: no transaction to pay for
async def simulate(tx: Tx, *, member: MemberRef | None, order: Order) -> dict[str, Any]:
    """The same evaluation as a purchase, posting nothing. Without a member: a shopper
    with no tier or segment, on a first purchase."""
    conn, partner_id = tx.conn, _partner(tx)
    settings = await coalition_settings(conn)
    _check_order(order, settings)
    rules = await active_rules(conn, partner_id, order.occurred_at)
    member_id, first_purchase, context = None, True, None
    usage: dict[uuid.UUID, RuleUsage] = {}
    if member is not None:
        row = await queries.find_member(conn, partner_id, member)
        if row is None:
            raise NotFound("member-not-found", "Member not found",
                           "No member linked to your partner account matches this reference.",
                           field="member")
        member_id, first_purchase = row["member_id"], row["first_purchase"]
        usage = await member_usage(conn, member_id, rules, order.occurred_at,
                                   settings.timezone)
        context = await member_context(conn, member_id)
    found = await evaluation.evaluate_order(conn, rules, order, context, first_purchase,
                                            usage, settings)
    return {"member_id": member_id, "order_id": order.order_id, "total": order.total,
            "currency": order.currency, "points": found.points,
            "funding": {"partner": found.funded("partner"),
                        "coalition": found.funded("coalition")},
            "pending_days": await queries.pending_days(conn, partner_id),
            "rules": hit_rows(found, rules), "skipped": skip_rows(found)}


@one_statement
async def event(tx: Tx, *, member: MemberRef, event_type: str, reference: str,
                occurred_at: datetime | None, idempotency_key: str | None,
                request_hash: str | None) -> PostingResult:
    """Post an event (at `occurred_at`, or now): its rules decide under the member's
    wallet lock, with the member's usage of the capped ones (posting.post_event, which
    opens its own transaction); budgets are taken when it posts, as for a purchase."""
    conn, partner_id = tx.conn, _partner(tx)
    at = check_moment(occurred_at or clock.now(), "occurred_at")
    settings = await coalition_settings(conn)
    offers: list[RuleVersion] = [
        rule for rule in await active_rules(conn, partner_id, at)
        if rule.type == "event" and rule.params.get("event_type") == event_type]

    async def decide(situation: EventSituation) -> Decision:
        context: MemberContext = await member_context(conn, situation.member_id)
        usage = {rule: RuleUsage(*points) for rule, points in situation.usage.items()}
        found = evaluate_event(
            offers, event_type, at, Shopper(context.tier, context.segments, False, usage),
            budget_left=await budget_left(conn, offers),
            history=EventHistory(**situation.counts))
        return Decision(hit_rows(found, offers), skip_rows(found))

    return await post_event(
        conn, partner_id=partner_id, actor=tx.actor.label, member=member,
        event_type=event_type, reference=reference, occurred_at=at, decide=decide,
        capped_rules=capped_rule_ids(offers), period_starts=periods(at, settings.timezone),
        idempotency_key=idempotency_key, request_hash=request_hash)
