"""Wiring of earning: a purchase or event goes through the rules (coalition.rules), who
the member is for targeting (coalition.audience), the ledger (coalition.purchases), and
then what follows a purchase in the same transaction: the tier upgrade (coalition.tiers)
and cross-brand coupons (coalition.rewards)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from coalition.affiliates import commissions
from coalition.affiliates.attribution import Flush, Touch, add_months
from coalition.audience import MemberContext, context_join, context_of, member_context
from coalition.errors import NotFound
from coalition.ledger import PostingResult
from coalition.purchases import (
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
from coalition.rewards import grant_purchase_coupons
from coalition.rules.engine import (
    Basket,
    Evaluation,
    EventHistory,
    Line,
    RuleUsage,
    RuleVersion,
    Shopper,
    capped_rule_ids,
    evaluate,
    evaluate_event,
    referral_bonus,
)
from coalition.rules.service import active_rules, budget_left, member_usage
from coalition.tiers import service as tiers
from coalition.tiers.service import (
    PROGRAM_COLUMNS,
    lock_sql,
    program_of,
    reevaluate_locked,
)


@dataclass(frozen=True)
class Program:
    """The coalition settings earning needs, cached for a few seconds."""

    currency: str
    point_value: Fraction
    timezone: str


_program: dict[str, tuple[float, Any]] = {}


async def program(conn: asyncpg.Connection) -> Program:
    cached = _program.get("settings")
    if cached and cached[0] > time.monotonic():
        return cached[1]
    row = await conn.fetchrow("SELECT currency, point_face_value, timezone"
                              " FROM coalition_settings WHERE id = 1")
    loaded = Program(row["currency"], Fraction(row["point_face_value"]), row["timezone"])
    _program["settings"] = (time.monotonic() + 10, loaded)
    return loaded


async def _coupon_sources(conn: asyncpg.Connection) -> frozenset[uuid.UUID]:
    """Partners whose purchases can grant cross-brand coupons (cached like the settings:
    an offer the operator just created applies within seconds)."""
    cached = _program.get("coupon_sources")
    if cached and cached[0] > time.monotonic():
        return cached[1]
    rows = await conn.fetch("SELECT DISTINCT source_partner_id FROM coupon_offers WHERE active")
    sources = frozenset(row["source_partner_id"] for row in rows)
    _program["coupon_sources"] = (time.monotonic() + 10, sources)
    return sources


def periods(at: datetime, timezone: str) -> tuple[datetime, datetime, datetime]:
    """Start of the day, month and year of `at` in the coalition's time zone."""
    day = at.astimezone(ZoneInfo(timezone)).replace(hour=0, minute=0, second=0,
                                                     microsecond=0)
    return day, day.replace(day=1), day.replace(month=1, day=1)


def basket_of(order: Order) -> Basket:
    return Basket(occurred_at=order.occurred_at, total=order.total, currency=order.currency,
                  channel=order.channel, store_id=order.store_id,
                  lines=tuple(Line(line["sku"], line.get("category"), line["quantity"],
                                   line["unit_price"], line["amount"]) for line in order.lines))


def hit_rows(evaluation: Evaluation, rules: list[RuleVersion]) -> list[dict[str, Any]]:
    """Hits as the ledger records them; `budget` marks rules whose campaign budget the
    posting must consume atomically."""
    budgeted = {rule.rule_id for rule in rules if rule.budget is not None}
    return [{"rule_id": str(hit.rule_id), "version": hit.version, "name": hit.name,
             "type": hit.type, "points": hit.points, "funding": hit.funding,
             "explanation": hit.explanation, "capped_by": hit.capped_by,
             "budget": hit.rule_id in budgeted} for hit in evaluation.hits]


def skip_rows(evaluation: Evaluation) -> list[dict[str, Any]]:
    return [{"rule_id": str(skip.rule_id), "version": skip.version, "name": skip.name,
             "type": skip.type, "code": skip.code, "reason": skip.reason}
            for skip in evaluation.skipped]


async def _evaluate(conn: asyncpg.Connection, rules: list[RuleVersion], order: Order,
                    context: MemberContext | None, first_purchase: bool,
                    usage: dict[uuid.UUID, RuleUsage], settings: Program) -> Evaluation:
    shopper = Shopper(tier=context.tier if context else None,
                      segments=context.segments if context else frozenset(),
                      first_purchase=first_purchase, usage=usage)
    budgets = await budget_left(conn, rules)
    return evaluate(rules, basket_of(order), shopper, budget_left=budgets,
                    point_value=settings.point_value)


async def _referral(conn: asyncpg.Connection, rules: list[RuleVersion], order: Order,
                    referrer: uuid.UUID, settings: Program
                    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Whether this purchase of a referee with an open referral qualifies, under which
    rule version and for what (coalition/referrals.py); the skips say why not. The
    referrer's caps count the referrer's usage; the budget is taken when the bonus
    posts (SQL referral_reward, which trims what the budget no longer covers)."""
    offers = [rule for rule in rules if rule.type == "referral"]
    context = await member_context(conn, referrer)
    usage = await _referrer_usage(conn, referrer, offers, order.occurred_at, settings)
    bonus = referral_bonus(offers, order.occurred_at,
                           Shopper(context.tier, context.segments, False, usage),
                           budget_left=await budget_left(conn, offers), total=order.total,
                           currency=order.currency, coalition_currency=settings.currency)
    if not bonus.hits:
        return None, skip_rows(bonus)
    hit = bonus.hits[0]
    rule = next(rule for rule in offers if rule.rule_id == hit.rule_id)
    return {"rule_id": str(hit.rule_id), "version": hit.version, "name": hit.name,
            "funding": hit.funding, "points": hit.points,
            "welcome_points": rule.params.get("welcome_points") or 0,
            "monthly_limit": rule.params.get("monthly_limit"),
            "explanation": hit.explanation, "capped_by": hit.capped_by,
            "budget": rule.budget is not None}, []


async def _referrer_usage(conn: asyncpg.Connection, referrer: uuid.UUID,
                          offers: list[RuleVersion], at: datetime, settings: Program
                          ) -> dict[uuid.UUID, RuleUsage]:
    """The referrer's usage of the capped referral rules, read under the referrer's
    wallet lock, which the posting keeps (referral_reward takes it anyway): referees of
    one referrer qualifying at once are decided one after the other, so the referrer's
    caps are exact. Only the locked path comes here with such rules (`purchase`)."""
    if not capped_rule_ids(offers):
        return {}
    await conn.execute("SELECT 1 FROM accounts WHERE member_id = $1 FOR NO KEY UPDATE",
                       referrer)
    return await member_usage(conn, referrer, offers, at, settings.timezone)


# Whether the member has a stored affiliate attribution at the partner ($1): only
# then does a purchase without a click id or code pay for attribution (an indexed probe
# folded into the read it already makes).
_ATTRIBUTED_JOIN = (" LEFT JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM affiliate_attributions aa"
                    " WHERE aa.member_id = {member} AND aa.partner_id = $1)"
                    " AS affiliate_attributed) af ON true")


# Read with the posting's first step (coalition.purchases `begin_join`), so the hot path
# pays no round trip for them: the member's targeting context, the tier ladder, and the
# member's tier lock, which the re-evaluation after posting needs (taken after the
# wallet lock, the order every path uses).
_BEGIN_JOIN = (context_join("b.member_id")
               + f" LEFT JOIN LATERAL (SELECT {PROGRAM_COLUMNS}, {lock_sql('b.member_id')}"
               " AS tier_lock WHERE b.proceed) tp ON true"
               + _ATTRIBUTED_JOIN.format(member="b.member_id"))


# The fast path reads the same along with the member's facts ($8.. are the tier
# value's arguments), without the lock: purchase_commit takes it and checks the rest.
_FACTS_JOIN = (context_join("f.member_id") + tiers.facts_join("f.member_id", 8)
               + _ATTRIBUTED_JOIN.format(member="f.member_id"))
# The tier program the fast path last saw, by the text of its two columns.
_tier_program: dict[str, Any] = {}


async def purchase(conn: asyncpg.Connection, *, partner_id: uuid.UUID, actor: str,
                   member: MemberRef, order: Order, idempotency_key: str | None,
                   request_hash: str | None, touch: Touch | None = None,
                   flush: Flush | None = None, posted_at: datetime | None = None
                   ) -> PostingResult:
    """Post a purchase: the fast path when it applies and the facts hold, else the
    locked path (coalition.purchases explains both; they give the same result).
    A purchase that may be an affiliate's conversion (a click id or code given, or a
    stored attribution of the member at the partner) takes the locked path: its
    commission is written in the purchase's transaction (coalition.affiliates).
    `posted_at` back-dates the posting (only the demo loader does, like
    PostingRequest.posted_at); only the locked path's SQL takes it."""
    settings = await program(conn)
    rules = await active_rules(conn, partner_id, order.occurred_at)
    day, month, _ = periods(order.occurred_at, settings.timezone)
    begun: dict[str, Any] = {}

    async def decide(situation: Situation) -> Decision:
        begun["row"] = situation.begun
        usage = {rule: RuleUsage(*points) for rule, points in situation.usage.items()}
        evaluation = await _evaluate(conn, rules, order,
                                     context_of(situation.begun, situation.member_id),
                                     situation.first_purchase, usage, settings)
        referral, skipped = None, skip_rows(evaluation)
        if situation.referrer is not None:
            referral, not_qualifying = await _referral(conn, rules, order, situation.referrer,
                                                       settings)
            skipped += not_qualifying
        return Decision(hit_rows(evaluation, rules), skipped, referral)

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
        ladder = program_of(begun["row"], settings.timezone, settings.currency)
        if ladder.ladder:
            change = await reevaluate_locked(conn, ladder, member_id, order.occurred_at)
            if change is not None:
                extra["tier_change"] = _jsonable(change)
        if partner_id in await _coupon_sources(conn):
            coupons = await grant_purchase_coupons(
                conn, partner_id=partner_id, member_id=member_id, order_id=order.order_id,
                total=order.total, occurred_at=order.occurred_at)
            if coupons:
                extra["coupons"] = coupons
        return extra

    capped = capped_rule_ids(rules)
    # A referral's referrer caps are read under the referrer's lock, which only the
    # locked path holds until the posting (`_referrer_usage`).
    referrer_capped = bool(capped_rule_ids(r for r in rules if r.type == "referral"))
    # Cross-brand coupons follow the posting in its transaction: the locked path only.
    if not touch and posted_at is None and partner_id not in await _coupon_sources(conn):
        posted = await _fast_purchase(conn, settings, partner_id=partner_id, actor=actor,
                                      member=member, order=order, decide=decide,
                                      capped=capped, day=day, month=month,
                                      idempotency_key=idempotency_key,
                                      request_hash=request_hash,
                                      referrer_capped=referrer_capped)
        if posted is not None:
            return posted
    return await post_purchase(
        conn, partner_id=partner_id, actor=actor, member=member, order=order, decide=decide,
        capped_rules=capped, day_start=day, month_start=month,
        idempotency_key=idempotency_key, request_hash=request_hash, posted_at=posted_at,
        after_post=after, begin_join=_BEGIN_JOIN)


async def _fast_purchase(conn: asyncpg.Connection, settings: Program, *,
                         partner_id: uuid.UUID, actor: str, member: MemberRef, order: Order,
                         decide: Any, capped: list[uuid.UUID], day: datetime,
                         month: datetime, idempotency_key: str | None,
                         request_hash: str | None, referrer_capped: bool
                         ) -> PostingResult | None:
    """None when the locked path must decide: an unknown member (it records the
    refusal), a tier program that changed since this process last saw it, a referee
    whose referral may pay under a rule with per-member caps (`referrer_capped`), or a
    fact that changed between the read and the posting."""
    ladder = _tier_program.get("program")
    if ladder is None:
        ladder = await tiers.load_program(conn)
    situation = await read_facts(conn, partner_id=partner_id, member=member,
                                 capped_rules=capped, day_start=day, month_start=month,
                                 join=_FACTS_JOIN,
                                 join_args=tiers.facts_args(ladder, order.occurred_at))
    if situation is None or situation.begun["affiliate_attributed"] or (
            referrer_capped and situation.referrer is not None):
        return None
    seen = (situation.begun["tier_policy"], situation.begun["tier_ladder"])
    if _tier_program.get("seen") != seen:
        _tier_program.update(seen=seen, program=program_of(
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
        conn, partner_id=partner_id, actor=actor, member=member, order=order,
        situation=situation, decision=decision, capped_rules=capped, day_start=day,
        month_start=month, idempotency_key=idempotency_key, request_hash=request_hash,
        tier=tier)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: getattr(o, "__dict__", str(o))))


async def tier_after_return(conn: asyncpg.Connection, *, partner_id: uuid.UUID,
                            idempotency_key: str | None, returned: PostingResult,
                            now: datetime) -> PostingResult:
    """A posted return lowers the member's qualifying value: re-evaluate the tier at once
    (under a rolling re-evaluation policy it may fall), in the return's transaction,
    after its wallet lock. A change is added to the response and to its stored copy."""
    if returned.status != 201:
        return returned
    body = json.loads(returned.body)
    change = await tiers.reevaluate_member(conn, uuid.UUID(body["member_id"]), now)
    if change is None:
        return returned
    return await amend_response(conn, partner_id, idempotency_key, body,
                                {"tier_change": _jsonable(change)})


async def simulate(conn: asyncpg.Connection, *, partner_id: uuid.UUID,
                   member: MemberRef | None, order: Order) -> dict[str, Any]:
    """The same evaluation as a purchase, posting nothing. Without a member: a shopper
    with no tier or segment, on a first purchase."""
    settings = await program(conn)
    rules = await active_rules(conn, partner_id, order.occurred_at)
    member_id, first_purchase, context = None, True, None
    usage: dict[uuid.UUID, RuleUsage] = {}
    if member is not None:
        row = await conn.fetchrow(_FIND_MEMBER, partner_id, member.id, member.card_number,
                                  member.customer_id)
        if row is None:
            raise NotFound("member-not-found", "Member not found",
                           "No member linked to your partner account matches this reference.",
                           field="member")
        member_id, first_purchase = row["member_id"], row["first_purchase"]
        usage = await member_usage(conn, member_id, rules, order.occurred_at,
                                   settings.timezone)
        context = await member_context(conn, member_id)
    evaluation = await _evaluate(conn, rules, order, context, first_purchase, usage,
                                 settings)
    pending_days = await conn.fetchval("SELECT pending_days FROM partners WHERE id = $1",
                                       partner_id)
    return {"member_id": member_id, "order_id": order.order_id, "total": order.total,
            "currency": order.currency, "points": evaluation.points,
            "funding": {"partner": evaluation.funded("partner"),
                        "coalition": evaluation.funded("coalition")},
            "pending_days": pending_days, "rules": hit_rows(evaluation, rules),
            "skipped": skip_rows(evaluation)}


_FIND_MEMBER = """
SELECT l.member_id,
       NOT EXISTS (SELECT 1 FROM purchases p WHERE p.partner_id = $1
                      AND p.member_id = l.member_id) AS first_purchase
  FROM member_links l JOIN members m ON m.id = l.member_id
 WHERE l.partner_id = $1 AND ($2::uuid IS NULL OR l.member_id = $2)
   AND ($3::text IS NULL OR m.card_number = $3) AND ($4::text IS NULL OR l.customer_id = $4)
"""


async def event(conn: asyncpg.Connection, *, partner_id: uuid.UUID, actor: str,
                member: MemberRef, event_type: str, reference: str, occurred_at: datetime,
                idempotency_key: str | None, request_hash: str | None) -> PostingResult:
    """Post an event: its rules decide under the member's wallet lock, with the member's
    usage of the capped ones (coalition.purchases.post_event); budgets are taken when
    it posts, as for a purchase."""
    settings = await program(conn)
    offers = [rule for rule in await active_rules(conn, partner_id, occurred_at)
              if rule.type == "event" and rule.params.get("event_type") == event_type]

    async def decide(situation: EventSituation) -> Decision:
        context = await member_context(conn, situation.member_id)
        usage = {rule: RuleUsage(*points) for rule, points in situation.usage.items()}
        evaluation = evaluate_event(
            offers, event_type, occurred_at,
            Shopper(context.tier, context.segments, False, usage),
            budget_left=await budget_left(conn, offers),
            history=EventHistory(**situation.counts))
        return Decision(hit_rows(evaluation, offers), skip_rows(evaluation))

    return await post_event(
        conn, partner_id=partner_id, actor=actor, member=member, event_type=event_type,
        reference=reference, occurred_at=occurred_at, decide=decide,
        capped_rules=capped_rule_ids(offers),
        period_starts=periods(occurred_at, settings.timezone),
        idempotency_key=idempotency_key, request_hash=request_hash)
