"""Segment definitions: the JSON an editor saves, validated strictly, and compiled to one
parameterised SQL predicate over members `m`.

    {"match": "all" | "any",
     "conditions": [
       {"type": "last_purchase", "within_days": 30}        # bought in the last 30 days
       {"type": "last_purchase", "more_than_days": 90}     # bought before, not in 90 days
       {"type": "spend", "days": 90, "min": 50000}         # minor units, net of returns
       {"type": "transactions", "days": 365, "min": 3, "max": 10}
       {"type": "tier", "tiers": ["vip"]}
       {"type": "partner", "partners": ["<uuid>"], "days": 365}   # coalition segments only
       {"type": "category", "categories": ["tools"], "days": 365}
       {"type": "birthday_month", "current": true}  or  {"months": [1, 2]}
       {"type": "rfm", "recency_min": 4, "frequency_min": 4, "monetary_min": 4}
     ]}

A partner's segment looks at the partner's linked members and at the partner's own
purchases and RFM scores only (a brand never learns what a member does at another
brand); a coalition segment at every member and every purchase. Time conditions count
back from the evaluation's `now`; the current birthday month is taken in the coalition's
time zone. Spend counts purchases in the coalition currency only.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from msgspec import Meta, Struct

from coalition.errors import DomainError

Days = Annotated[int, Meta(ge=1, le=3650)]
Amount = Annotated[int, Meta(ge=0, le=10**15)]
Score = Annotated[int, Meta(ge=1, le=5)]
Label = Annotated[str, Meta(min_length=1, max_length=100)]


class Condition(Struct, forbid_unknown_fields=True, tag_field="type", kw_only=True):
    pass


class LastPurchase(Condition, tag="last_purchase"):
    within_days: Days | None = None
    more_than_days: Days | None = None


class Spend(Condition, tag="spend"):
    days: Days
    min: Amount | None = None
    max: Amount | None = None


class Transactions(Condition, tag="transactions"):
    days: Days
    min: Amount | None = None
    max: Amount | None = None


class TierIs(Condition, tag="tier"):
    tiers: Annotated[list[Label], Meta(min_length=1, max_length=20)]


class BoughtAt(Condition, tag="partner"):
    partners: Annotated[list[uuid.UUID], Meta(min_length=1, max_length=50)]
    days: Days | None = None


class BoughtCategory(Condition, tag="category"):
    categories: Annotated[list[Label], Meta(min_length=1, max_length=50)]
    days: Days = 365


class BirthdayMonth(Condition, tag="birthday_month"):
    months: Annotated[list[Annotated[int, Meta(ge=1, le=12)]], Meta(max_length=12)] = []
    current: bool = False


class Rfm(Condition, tag="rfm"):
    recency_min: Score = 1
    recency_max: Score = 5
    frequency_min: Score = 1
    frequency_max: Score = 5
    monetary_min: Score = 1
    monetary_max: Score = 5


AnyCondition = (LastPurchase | Spend | Transactions | TierIs | BoughtAt | BoughtCategory
                | BirthdayMonth | Rfm)


class Definition(Struct, forbid_unknown_fields=True, kw_only=True):
    match: Literal["all", "any"] = "all"
    conditions: Annotated[list[AnyCondition], Meta(min_length=1, max_length=10)]


def _invalid(detail: str, field: str = "definition") -> DomainError:
    return DomainError("validation-error", "Invalid segment definition", detail, status=400,
                       field=field)


def parse(raw: str | bytes | dict[str, Any], *, coalition: bool, tiers: set[str]) -> Definition:
    """The validated definition, or a 400 problem naming the field."""
    try:
        if isinstance(raw, dict):
            definition = msgspec.convert(raw, Definition, strict=True)
        else:
            definition = msgspec.json.decode(raw, type=Definition, strict=True)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        path = re.search(r"at `\$(.*)`", str(exc))
        raise _invalid(str(exc), "definition" + (path.group(1) if path else "")) from exc
    for i, c in enumerate(definition.conditions):
        at = f"definition.conditions[{i}]"
        if isinstance(c, LastPurchase) and (c.within_days is None) == (c.more_than_days is None):
            raise _invalid("Give within_days or more_than_days.", at)
        if isinstance(c, Spend | Transactions):
            if c.min is None and c.max is None:
                raise _invalid("Give min, max or both.", at)
            if c.min is not None and c.max is not None and c.min > c.max:
                raise _invalid("min must not exceed max.", at)
        if isinstance(c, TierIs) and not set(c.tiers) <= tiers:
            raise _invalid(f"Unknown tier: {', '.join(sorted(set(c.tiers) - tiers))}.", at)
        if isinstance(c, BoughtAt) and not coalition:
            raise _invalid("A brand's segment looks at its own purchases only; the partner "
                           "condition is for coalition segments.", at)
        if isinstance(c, BirthdayMonth) and not c.current and not c.months:
            raise _invalid("Give months or current: true.", at)
        if isinstance(c, Rfm) and (c.recency_min > c.recency_max or c.frequency_min >
                                   c.frequency_max or c.monetary_min > c.monetary_max):
            raise _invalid("Each minimum score must not exceed its maximum.", at)
    return definition


class Params:
    """Positional parameters for asyncpg ($1, $2, ...)."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any, cast: str = "") -> str:
        self.values.append(value)
        return f"${len(self.values)}{cast}"


def compile_members(definition: Definition, partner_id: uuid.UUID | None, now: datetime,
                    currency: str, timezone: str) -> tuple[str, list[Any]]:
    """SELECT m.id of the members the definition selects, and its parameters."""
    p = Params()
    at = p(now, "::timestamptz")
    if partner_id is None:
        base = f"SELECT m.id FROM members m WHERE m.status <> 'closed' AND {at} IS NOT NULL"  # noqa: S608
        scope, rfm_scope = "", "r.partner_id IS NULL"
    else:
        owner = p(partner_id, "::uuid")
        base = ("SELECT m.id FROM members m JOIN member_links ml ON ml.member_id = m.id"  # noqa: S608
                f" AND ml.partner_id = {owner} WHERE m.status <> 'closed' AND {at} IS NOT NULL")
        scope, rfm_scope = f" AND q.partner_id = {owner}", f"r.partner_id = {owner}"

    def purchases(days: int | None, extra: str = "") -> str:
        window = f" AND q.occurred_at > {at} - make_interval(days => {p(days)})" if days else ""
        return (f"FROM purchases q WHERE q.member_id = m.id{scope} AND q.occurred_at <= {at}"
                f"{window}{extra}")

    parts = []
    for c in definition.conditions:
        if isinstance(c, LastPurchase) and c.within_days:
            parts.append(f"EXISTS (SELECT 1 {purchases(c.within_days)})")
        elif isinstance(c, LastPurchase):
            parts.append(f"(EXISTS (SELECT 1 {purchases(None)}) AND NOT EXISTS"
                         f" (SELECT 1 {purchases(c.more_than_days)}))")
        elif isinstance(c, Spend | Transactions):
            measure = "sum(q.total - q.returned_total)" if isinstance(c, Spend) else "count(*)"
            extra = f" AND q.currency = {p(currency)}" if isinstance(c, Spend) else ""
            value = f"(SELECT coalesce({measure}, 0) {purchases(c.days, extra)})"
            bounds = ([f"{value} >= {p(c.min)}"] if c.min is not None else []) + \
                ([f"{value} <= {p(c.max)}"] if c.max is not None else [])
            parts.append("(" + " AND ".join(bounds) + ")")
        elif isinstance(c, TierIs):
            parts.append(
                "coalesce((SELECT CASE WHEN t.manual_until <= " + at + " THEN t.earned_code"  # noqa: S608
                " ELSE t.tier_code END FROM member_tiers t WHERE t.member_id = m.id),"
                " (SELECT code FROM tiers ORDER BY rank LIMIT 1))"
                f" = ANY({p(list(c.tiers), '::text[]')})")
        elif isinstance(c, BoughtAt):
            parts.append(f"EXISTS (SELECT 1 {purchases(c.days)}"
                         f" AND q.partner_id = ANY({p(list(c.partners), '::uuid[]')}))")
        elif isinstance(c, BoughtCategory):
            categories = p(list(c.categories), "::text[]")
            parts.append(f"EXISTS (SELECT 1 {purchases(c.days)} AND EXISTS (SELECT 1 FROM"  # noqa: S608
                         f" jsonb_array_elements(q.lines) l WHERE l->>'category' ="
                         f" ANY({categories})))")
        elif isinstance(c, BirthdayMonth):
            months = set(c.months)
            if c.current:
                months.add(now.astimezone(ZoneInfo(timezone)).month)
            parts.append("extract(month FROM m.birth_date)::int = "
                         f"ANY({p(sorted(months), '::int[]')})")
        elif isinstance(c, Rfm):
            parts.append(
                f"EXISTS (SELECT 1 FROM rfm_scores r WHERE r.member_id = m.id AND {rfm_scope}"  # noqa: S608
                f" AND r.recency BETWEEN {p(c.recency_min)} AND {p(c.recency_max)}"
                f" AND r.frequency BETWEEN {p(c.frequency_min)} AND {p(c.frequency_max)}"
                f" AND r.monetary BETWEEN {p(c.monetary_min)} AND {p(c.monetary_max)})")
    joiner = " AND " if definition.match == "all" else " OR "
    return f"{base} AND ({joiner.join(parts)})", p.values


def to_json(definition: Definition) -> str:
    return msgspec.json.encode(definition).decode()
