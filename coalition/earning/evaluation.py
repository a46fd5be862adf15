"""What the rules (coalition.rules) need around a purchase or event, and the shape of
their answer as the ledger records it: the basket, the periods in the coalition's time
zone, the shopper's targeting context and usage, budgets, and a referee's referral."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from coalition.audience import MemberContext, member_context
from coalition.earning.posting import Order
from coalition.rules.engine import (
    Basket,
    Evaluation,
    Line,
    RuleUsage,
    RuleVersion,
    Shopper,
    capped_rule_ids,
    evaluate,
    referral_bonus,
)
from coalition.rules.service import budget_left, member_usage
from coalition.settings import CoalitionSettings

COUPON_SOURCES_TTL = 10.0
_coupon_sources: tuple[float, frozenset[uuid.UUID]] | None = None


async def coupon_sources(conn: asyncpg.Connection) -> frozenset[uuid.UUID]:
    """Partners whose purchases can grant cross-brand coupons (cached like the settings:
    an offer the operator just created applies within seconds)."""
    global _coupon_sources
    if _coupon_sources is not None and _coupon_sources[0] > time.monotonic():
        return _coupon_sources[1]
    rows = await conn.fetch("SELECT DISTINCT source_partner_id FROM coupon_offers WHERE active")
    sources = frozenset(row["source_partner_id"] for row in rows)
    _coupon_sources = (time.monotonic() + COUPON_SOURCES_TTL, sources)
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


async def evaluate_order(conn: asyncpg.Connection, rules: list[RuleVersion], order: Order,
                         context: MemberContext | None, first_purchase: bool,
                         usage: dict[uuid.UUID, RuleUsage], settings: CoalitionSettings
                         ) -> Evaluation:
    shopper = Shopper(tier=context.tier if context else None,
                      segments=context.segments if context else frozenset(),
                      first_purchase=first_purchase, usage=usage)
    budgets = await budget_left(conn, rules)
    return evaluate(rules, basket_of(order), shopper, budget_left=budgets,
                    point_value=settings.point_value)


async def referral(conn: asyncpg.Connection, rules: list[RuleVersion], order: Order,
                   referrer: uuid.UUID, settings: CoalitionSettings
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
                          offers: list[RuleVersion], at: datetime, settings: CoalitionSettings
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
