"""The earning-rule engine: pure, deterministic, integer. No I/O; the caller loads the
rules (service.active_rules), the member's usage and the campaigns' budgets left.

Order. Rules are evaluated one after another, sorted by
``(priority, partner rules before coalition rules, rule_id)`` — lower priority numbers
first, ties broken by owner and then by the rule's uuid, so two runs over the same input
always give the same answer. Each rule is checked in this order, and the first check
that fails is the reason it is skipped:

1. active window: ``starts_at <= occurred_at < ends_at`` (either end may be open);
2. channel (empty = every channel; events and referrals have no channel);
3. target tiers (empty = everyone) and target segments (empty = everyone; else the
   member must be in at least one);
4. stopped: an earlier rule with ``stops_later_rules`` awarded points;
5. minimum spend: an earlier ``min_spend`` rule was not met by the order;
6. the type's own condition (threshold, matching lines, first purchase, frequency...);
7. caps, in this order: per order, per member per day, per member per month, campaign
   budget left. A cap lowers the points (``RuleHit.capped_by`` names the last cap that
   did); a cap that leaves nothing skips the rule.

Rounding. Every rule computes with integers or exact Fractions and rounds **down**
(floor) once, at the end of its own computation: 1 pt per 1 PLN on 123.99 PLN is 123;
a x1.5 multiplier on 45 points adds 22. Money is in minor units (grosz).

Types and their ``params``:

- ``per_amount`` {points, per}: ``points`` for every full ``per`` minor units of the
  order total (1 pt per 1 PLN = {1, 100}; 5 pts per 100 PLN block = {5, 10000}).
- ``min_spend`` {amount}: below ``amount`` no later rule awards anything.
- ``threshold_bonus`` {above, points}: ``points`` when the total is strictly above.
- ``product`` {skus, categories, mode, multiplier | points}: lines whose sku or category
  matches. ``mode="multiplier"``: the lines earn ``multiplier`` times the rate of the
  last ``per_amount`` rule that awarded points — this rule adds the extra
  ``(multiplier - 1) x rate`` on their full blocks. ``mode="fixed"``: ``points`` per unit.
- ``first_purchase`` {points}: the member's first purchase at this partner.
- ``cashback`` {basis_points, skus?, categories?}: basis points of the eligible amount
  (the total, or the matching lines), converted to points at ``point_value`` (the value
  of one point in major units, coalition_settings.point_face_value).
- ``multiplier`` {multiplier}: adds ``(multiplier - 1) x`` the points of the rules that
  awarded points before it. Targeted at tiers it is the tier multiplier (VIP x1.5).
  Purchases only: event and referral points are flat.
- ``event`` {event_type, points, frequency}: evaluated by ``evaluate_event``. Frequency
  ``unlimited`` (every distinct reference; the caller de-duplicates references),
  ``once`` (ever), ``daily``, ``monthly``, ``yearly``: judged on ``EventHistory``, the
  member's earlier events of this type that earned points, counted by the caller.
- ``referral`` {points, welcome_points?, min_amount?, monthly_limit?}: evaluated by
  ``referral_bonus`` (targeting is the referrer's) for a purchase of a referee whose
  referral is open; the first rule that applies decides: ``points`` to the referrer,
  ``welcome_points`` to the referee, when the total is at least ``min_amount`` (minor
  units of the coalition currency); ``monthly_limit`` rewarded referrals per referrer
  per calendar month is enforced where the bonus posts (coalition/referrals.py). The
  caps apply to the referrer's ``points``; the budget also pays the welcome points,
  which the posting takes after them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from functools import lru_cache
from typing import Any

PURCHASE_TYPES = ("per_amount", "min_spend", "threshold_bonus", "product", "first_purchase",
                  "cashback", "multiplier")
RULE_TYPES = (*PURCHASE_TYPES, "event", "referral")
FREQUENCIES = ("unlimited", "once", "daily", "monthly", "yearly")
FUNDINGS = ("partner", "coalition")
_ZERO_DECIMAL = {"JPY", "KRW", "ISK", "CLP", "VND"}


@dataclass(frozen=True)
class Line:
    sku: str
    category: str | None
    quantity: int
    unit_price: int
    amount: int


@dataclass(frozen=True)
class Basket:
    occurred_at: datetime
    total: int
    currency: str
    channel: str
    store_id: str | None
    lines: tuple[Line, ...] = ()


@dataclass(frozen=True)
class RuleUsage:
    """Points a rule already awarded this member today / this month (coalition time)."""
    day: int = 0
    month: int = 0


@dataclass(frozen=True)
class Shopper:
    tier: str | None
    segments: frozenset[uuid.UUID]
    first_purchase: bool
    usage: Mapping[uuid.UUID, RuleUsage] = field(default_factory=dict)


@dataclass(frozen=True)
class EventHistory:
    """The member's earlier events of one type that earned points, counted in the
    coalition's timezone: ever, this calendar year, this month, today."""
    ever: int = 0
    year: int = 0
    month: int = 0
    day: int = 0


@dataclass(frozen=True)
class RuleVersion:
    rule_id: uuid.UUID
    version: int
    partner_id: uuid.UUID | None          # None = a coalition-wide rule
    name: str
    type: str
    params: Mapping[str, Any]
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    channels: frozenset[str] = frozenset()
    tiers: frozenset[str] = frozenset()
    segments: frozenset[uuid.UUID] = frozenset()
    per_order_cap: int | None = None
    per_member_day_cap: int | None = None
    per_member_month_cap: int | None = None
    budget: int | None = None
    funding: str = "partner"
    priority: int = 100
    stops_later_rules: bool = False


@dataclass(frozen=True)
class RuleHit:
    rule_id: uuid.UUID
    version: int
    name: str
    type: str
    points: int
    funding: str
    explanation: str
    capped_by: str | None = None   # per_order | per_member_day | per_member_month | budget


@dataclass(frozen=True)
class RuleSkip:
    """A rule that awarded nothing, and why. ``code``: window, channel, tier, segment,
    stopped, min_spend, condition, frequency, cap, budget; ``met`` for a minimum spend
    the order satisfied (it awards nothing itself)."""
    rule_id: uuid.UUID
    version: int
    name: str
    type: str
    code: str
    reason: str


@dataclass(frozen=True)
class Evaluation:
    hits: tuple[RuleHit, ...]
    skipped: tuple[RuleSkip, ...]

    @property
    def points(self) -> int:
        return sum(h.points for h in self.hits)

    def funded(self, funding: str) -> int:
        return sum(h.points for h in self.hits if h.funding == funding)

    def breakdown(self) -> list[dict[str, Any]]:
        """JSON-ready, in evaluation order: what purchases.breakdown stores."""
        rows = [{"rule_id": str(h.rule_id), "version": h.version, "name": h.name,
                 "type": h.type, "points": h.points, "funding": h.funding,
                 "explanation": h.explanation, "capped_by": h.capped_by} for h in self.hits]
        rows += [{"rule_id": str(s.rule_id), "version": s.version, "name": s.name,
                  "type": s.type, "points": 0, "skipped": s.code, "explanation": s.reason}
                 for s in self.skipped]
        return rows


def order_key(rule: RuleVersion) -> tuple[int, int, uuid.UUID]:
    # UUIDs compare by their 128-bit value: the same order as their text.
    return (rule.priority, 0 if rule.partner_id is not None else 1, rule.rule_id)


def money(amount: int, currency: str) -> str:
    if currency in _ZERO_DECIMAL:
        return f"{amount} {currency}"
    sign = "-" if amount < 0 else ""
    whole, cents = divmod(abs(amount), 100)
    return f"{sign}{whole}.{cents:02d} {currency}"


def minor_per_major(currency: str) -> int:
    return 1 if currency in _ZERO_DECIMAL else 100


def multiplier_of(params: Mapping[str, Any]) -> Fraction:
    return _fraction(str(params["multiplier"]))


@lru_cache(maxsize=1024)
def _fraction(text: str) -> Fraction:
    """Parsed once per distinct multiplier: the hot path multiplies with integers."""
    return Fraction(text)


@lru_cache(maxsize=1024)
def decimal(value: Fraction) -> str:
    """A Fraction as a plain decimal when it has one (0.01, 1.5), else as n/d."""
    for places in range(7):
        scaled = value * 10**places
        if scaled.denominator == 1:
            whole = str(abs(scaled.numerator)).rjust(places + 1, "0")
            text = whole if not places else f"{whole[:-places]}.{whole[-places:]}"
            return ("-" if value < 0 else "") + text
    return str(value)


def pts(n: int) -> str:
    return f"{n} pt" if n == 1 else f"{n} pts"


class _Run:
    """State carried from rule to rule in one evaluation."""

    def __init__(self) -> None:
        self.hits: list[RuleHit] = []
        self.skipped: list[RuleSkip] = []
        self.stopped_by: RuleVersion | None = None
        self.gated_by: RuleVersion | None = None
        self.rate: RuleVersion | None = None   # the last per_amount rule that awarded

    def skip(self, rule: RuleVersion, code: str, reason: str) -> None:
        self.skipped.append(RuleSkip(rule.rule_id, rule.version, rule.name, rule.type,
                                     code, reason))

    def result(self) -> Evaluation:
        return Evaluation(tuple(self.hits), tuple(self.skipped))


# A type's own computation: (points, explanation), or (None, reason) when its
# condition does not hold.
Award = Callable[[RuleVersion, _Run], tuple[int | None, str]]


def _targeting(rule: RuleVersion, at: datetime, channel: str | None,
               shopper: Shopper) -> tuple[str, str] | None:
    if rule.starts_at is not None and at < rule.starts_at:
        return "window", f"not active until {rule.starts_at.isoformat()}"
    if rule.ends_at is not None and at >= rule.ends_at:
        return "window", f"ended at {rule.ends_at.isoformat()}"
    if channel is not None and rule.channels and channel not in rule.channels:
        return "channel", (f"channel {channel} is not one of "
                           f"{', '.join(sorted(rule.channels))}")
    if rule.tiers and shopper.tier not in rule.tiers:
        return "tier", (f"member tier {shopper.tier or 'none'} is not one of "
                        f"{', '.join(sorted(rule.tiers))}")
    if rule.segments and not rule.segments & shopper.segments:
        return "segment", "member is in none of the rule's target segments"
    return None


def _cap(rule: RuleVersion, points: int, shopper: Shopper,
         budget_left: Mapping[uuid.UUID, int]) -> tuple[int, str | None, str]:
    """Points after the caps, the last cap that lowered them, and why (for a skip)."""
    capped_by, why = None, ""
    if rule.per_order_cap is not None and points > rule.per_order_cap:
        points, capped_by = rule.per_order_cap, "per_order"
        why = f"per-order cap of {pts(rule.per_order_cap)}"
    usage = shopper.usage.get(rule.rule_id) or RuleUsage()
    for cap, used, name, label in (
            (rule.per_member_day_cap, usage.day, "per_member_day", "today"),
            (rule.per_member_month_cap, usage.month, "per_member_month", "this month")):
        if cap is not None and points > cap - used:
            points, capped_by = max(0, cap - used), name
            why = f"{name.replace('_', ' ')} cap of {pts(cap)} ({pts(used)} already {label})"
    if rule.budget is not None:
        left = max(0, budget_left.get(rule.rule_id, rule.budget))
        if points > left:
            points, capped_by = left, "budget"
            why = f"campaign budget ({pts(left)} left of {pts(rule.budget)})"
    return points, capped_by, why


def _run(rules: Iterable[RuleVersion], at: datetime, channel: str | None, shopper: Shopper,
         budget_left: Mapping[uuid.UUID, int], award: Award) -> Evaluation:
    run = _Run()
    for rule in sorted(rules, key=order_key):
        miss = _targeting(rule, at, channel, shopper)
        if miss is not None:
            run.skip(rule, *miss)
            continue
        if run.stopped_by is not None:
            run.skip(rule, "stopped", f"stopped by rule {run.stopped_by.name!r}")
            continue
        if run.gated_by is not None:
            run.skip(rule, "min_spend",
                     f"order below the minimum spend of rule {run.gated_by.name!r}")
            continue
        points, text = award(rule, run)
        if points is None:
            code = {"min_spend": "min_spend", "event": "frequency"}.get(rule.type, "condition")
            if text.startswith("met:"):
                code, text = "met", text[4:]
            run.skip(rule, code, text)
            continue
        if points <= 0:
            run.skip(rule, "condition", text)
            continue
        points, capped_by, why = _cap(rule, points, shopper, budget_left)
        if points <= 0:
            run.skip(rule, "budget" if capped_by == "budget" else "cap",
                     f"{text}; nothing left under the {why}" if why else text)
            continue
        if capped_by:
            text = f"{text}; capped at {pts(points)} by the {why}"
        run.hits.append(RuleHit(rule.rule_id, rule.version, rule.name, rule.type, points,
                                rule.funding, text, capped_by))
        if rule.type == "per_amount":
            run.rate = rule
        if rule.stops_later_rules:
            run.stopped_by = rule
    return run.result()


def _matching(params: Mapping[str, Any], lines: tuple[Line, ...]) -> list[Line]:
    skus, categories = set(params.get("skus") or ()), set(params.get("categories") or ())
    return [ln for ln in lines if ln.sku in skus or (ln.category is not None
                                                      and ln.category in categories)]


def _purchase_award(basket: Basket, shopper: Shopper, point_value: Fraction) -> Award:
    cur = basket.currency

    def award(rule: RuleVersion, run: _Run) -> tuple[int | None, str]:
        p, kind = rule.params, rule.type
        if kind == "per_amount":
            blocks = basket.total // p["per"]
            return blocks * p["points"], (f"{pts(p['points'])} per {money(p['per'], cur)} on "
                                          f"{money(basket.total, cur)}: {blocks} full "
                                          f"block(s) = {pts(blocks * p['points'])}")
        if kind == "min_spend":
            if basket.total < p["amount"]:
                run.gated_by = rule
                return None, (f"order {money(basket.total, cur)} is below the minimum spend "
                              f"of {money(p['amount'], cur)}: later rules award nothing")
            return None, (f"met:order {money(basket.total, cur)} meets the minimum spend of "
                          f"{money(p['amount'], cur)}")
        if kind == "threshold_bonus":
            if basket.total > p["above"]:
                return p["points"], f"order above {money(p['above'], cur)}: +{pts(p['points'])}"
            return None, f"order {money(basket.total, cur)} is not above {money(p['above'], cur)}"
        if kind == "first_purchase":
            if shopper.first_purchase:
                return p["points"], f"first purchase at this partner: +{pts(p['points'])}"
            return None, "not the member's first purchase at this partner"
        if kind == "product":
            lines = _matching(p, basket.lines)
            if not lines:
                return None, "no basket line matches the rule's products or categories"
            if p.get("mode") == "fixed":
                units = sum(ln.quantity for ln in lines)
                return units * p["points"], (f"{pts(p['points'])} per unit: {units} matching "
                                             f"unit(s)")
            if run.rate is None:
                return None, "no spend-based rule awarded points before it to multiply"
            m, base = multiplier_of(p), run.rate.params
            amount = sum(ln.amount for ln in lines)
            extra = (amount // base["per"]) * base["points"] * (m.numerator - m.denominator) \
                // m.denominator
            return extra, (f"x{decimal(m)} on {len(lines)} matching line(s) worth "
                           f"{money(amount, cur)} at the rate of {run.rate.name!r}: +{pts(extra)}")
        if kind == "cashback":
            lines = _matching(p, basket.lines) if p.get("skus") or p.get("categories") else None
            if lines is not None and not lines:
                return None, "no basket line matches the rule's products or categories"
            amount = basket.total if lines is None else sum(ln.amount for ln in lines)
            # floor(amount x bp / 10000 / minor-per-major / point_value), in integers.
            points = (amount * p["basis_points"] * point_value.denominator) // (
                10_000 * minor_per_major(cur) * point_value.numerator)
            shown = money(amount * p["basis_points"] // 10_000, cur)
            return points, (f"{decimal(Fraction(p['basis_points'], 100))}% cashback on "
                            f"{money(amount, cur)} = {shown} at {decimal(point_value)} {cur} per "
                            f"point: {pts(points)}")
        if kind == "multiplier":
            base = sum(h.points for h in run.hits)
            if not base:
                return None, "no points from earlier rules to multiply"
            m = multiplier_of(p)
            extra = base * (m.numerator - m.denominator) // m.denominator
            return extra, f"x{decimal(m)} on the {pts(base)} of the rules before it: +{pts(extra)}"
        raise ValueError(f"not a purchase rule type: {kind}")

    return award


def evaluate(rules: Iterable[RuleVersion], basket: Basket, shopper: Shopper, *,
             budget_left: Mapping[uuid.UUID, int], point_value: Fraction) -> Evaluation:
    """The points a purchase earns. Only purchase rule types take part; event and
    referral rules are ignored. ``budget_left``: points left in the campaign budget of
    each budgeted rule (a budgeted rule missing from it counts as untouched)."""
    return _run((r for r in rules if r.type in PURCHASE_TYPES), basket.occurred_at,
                basket.channel, shopper, budget_left,
                _purchase_award(basket, shopper, point_value))


def evaluate_event(rules: Iterable[RuleVersion], event_type: str, occurred_at: datetime,
                   shopper: Shopper, *, budget_left: Mapping[uuid.UUID, int],
                   history: EventHistory = EventHistory()) -> Evaluation:
    """The points a non-purchase event earns: the ``event`` rules for ``event_type``.
    ``history`` counts the member's earlier events of this type that earned points."""
    limits = {"once": ("ever", "already earned once"),
              "yearly": ("year", "already earned this year"),
              "monthly": ("month", "already earned this month"),
              "daily": ("day", "already earned today")}

    def award(rule: RuleVersion, run: _Run) -> tuple[int | None, str]:
        frequency = rule.params.get("frequency", "unlimited")
        if frequency in limits and getattr(history, limits[frequency][0]) > 0:
            return None, f"{event_type}: {limits[frequency][1]}"
        return rule.params["points"], f"{event_type}: +{pts(rule.params['points'])}"

    return _run((r for r in rules if r.type == "event"
                 and r.params.get("event_type") == event_type),
                occurred_at, None, shopper, budget_left, award)


def referral_bonus(rules: Iterable[RuleVersion], at: datetime, referrer: Shopper, *,
                   budget_left: Mapping[uuid.UUID, int], total: int = 0,
                   currency: str = "PLN", coalition_currency: str | None = None
                   ) -> Evaluation:
    """The referral rule a referee's purchase (``total`` in ``currency``, at ``at``)
    qualifies under: its first hit (``points`` for the referrer); skips say why a purchase
    does not qualify (the referral then stays open)."""
    home = coalition_currency or currency

    def award(rule: RuleVersion, run: _Run) -> tuple[int | None, str]:
        p = rule.params
        minimum = p.get("min_amount") or 0
        if minimum and (currency != home or total < minimum):
            return None, (f"order {money(total, currency)} is below the referral minimum of "
                          f"{money(minimum, home)}: the referral stays open")
        welcome = p.get("welcome_points") or 0
        return p["points"], ("referred member's first qualifying purchase: "
                             f"+{pts(p['points'])} to the referrer"
                             + (f", +{pts(welcome)} welcome bonus" if welcome else ""))

    return _run((r for r in rules if r.type == "referral"), at, None, referrer, budget_left,
                award)


def capped_rule_ids(rules: Iterable[RuleVersion]) -> list[uuid.UUID]:
    """The rules whose per-member caps need RuleUsage (so the caller queries only those)."""
    return [r.rule_id for r in rules
            if r.per_member_day_cap is not None or r.per_member_month_cap is not None]


def budgeted_rule_ids(rules: Iterable[RuleVersion]) -> list[uuid.UUID]:
    return [r.rule_id for r in rules if r.budget is not None]


def describe(rule: RuleVersion, currency: str = "PLN") -> str:
    """One line a person reads in the rules list."""
    p = rule.params
    return {
        "per_amount": lambda: f"{pts(p['points'])} per {money(p['per'], currency)}",
        "min_spend": lambda: f"no points below {money(p['amount'], currency)}",
        "threshold_bonus": lambda: (f"+{pts(p['points'])} above "
                                    f"{money(p['above'], currency)}"),
        "product": lambda: (f"x{decimal(multiplier_of(p))}" if p.get("mode") != "fixed"
                            else f"{pts(p['points'])} per unit") + " on "
                           + ", ".join([*p.get("skus", ()), *p.get("categories", ())]),
        "first_purchase": lambda: f"+{pts(p['points'])} on the first purchase",
        "cashback": lambda: f"{decimal(Fraction(p['basis_points'], 100))}% cashback in points",
        "multiplier": lambda: f"x{decimal(multiplier_of(p))} on earlier rules' points",
        "event": lambda: f"+{pts(p['points'])} per {p['event_type']} ({p['frequency']})",
        "referral": lambda: f"+{pts(p['points'])} to the referrer" + "".join((
            f", +{pts(p['welcome_points'])} to the new member" if p.get("welcome_points")
            else "",
            f", on a first purchase from {money(p['min_amount'], currency)}"
            if p.get("min_amount") else "",
            f", at most {p['monthly_limit']} a month per referrer"
            if p.get("monthly_limit") else "")),
    }[rule.type]()
