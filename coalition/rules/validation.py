"""What a rule version must look like, and the console form that edits one. Every
refusal is a DomainError naming the field (the form field's name).

Form conventions: money in major units with at most two decimals ("50", "199.99") is
stored in minor units; cashback in percent with at most two decimals is stored in basis
points; the active window is a pair of dates in the coalition's timezone, the end date
inclusive (a rule for April runs 1 April 00:00 to 1 May 00:00)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from coalition.commerce import CHANNELS
from coalition.errors import DomainError
from coalition.rules.engine import FREQUENCIES, FUNDINGS, RULE_TYPES

MAX_POINTS = 10**12
_CODE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,49}$")
TYPE_LABELS = {
    "per_amount": "Points per amount spent",
    "min_spend": "Minimum spend",
    "threshold_bonus": "Order threshold bonus",
    "product": "Product / category points",
    "first_purchase": "First-purchase bonus",
    "cashback": "Cashback in points",
    "multiplier": "Multiplier (tier or campaign)",
    "event": "Event points",
    "referral": "Referral bonus",
}


def bad(field_name: str, detail: str, status: int = 422) -> DomainError:
    return DomainError("invalid-rule", "Invalid earning rule", detail, status=status,
                       field=field_name)


@dataclass(frozen=True)
class RuleSpec:
    name: str
    type: str
    params: dict[str, Any]
    funding: str = "partner"
    priority: int = 100
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    channels: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    segments: tuple[uuid.UUID, ...] = ()
    per_order_cap: int | None = None
    per_member_day_cap: int | None = None
    per_member_month_cap: int | None = None
    budget: int | None = None
    stops_later_rules: bool = False

    def checked(self) -> RuleSpec:
        """Raises DomainError naming the first bad field; returns self."""
        name = self.name.strip()
        if not name or len(name) > 200:
            raise bad("name", "Give the rule a name of at most 200 characters.")
        if self.type not in RULE_TYPES:
            raise bad("type", f"Rule type must be one of {', '.join(RULE_TYPES)}.")
        if self.funding not in FUNDINGS:
            raise bad("funding", "Funding is partner or coalition.")
        if not 0 <= self.priority <= 10_000:
            raise bad("priority", "Priority is a whole number from 0 to 10000.")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise bad("ends_on", "The rule must end after it starts.")
        if set(self.channels) - set(CHANNELS):
            raise bad("channels", f"Channels are {', '.join(CHANNELS)}.")
        for tier in self.tiers:
            if not _CODE.match(tier):
                raise bad("tiers", f"{tier!r} is not a tier code (lower case, digits, _-.).")
        for name_, cap in (("per_order_cap", self.per_order_cap),
                           ("per_member_day_cap", self.per_member_day_cap),
                           ("per_member_month_cap", self.per_member_month_cap),
                           ("budget", self.budget)):
            if cap is not None and not 0 < cap <= MAX_POINTS:
                raise bad(name_, "A cap is a positive whole number of points.")
        check_params(self.type, self.params)
        return self


def _points(params: Mapping[str, Any], key: str, label: str = "points") -> None:
    value = params.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_POINTS:
        raise bad(label, "Points must be a positive whole number.")


def _amount(params: Mapping[str, Any], key: str, minimum: int = 1) -> None:
    value = params.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= 10**13:
        raise bad(key, "Give an amount of money (at most two decimals).")


def _multiplier(params: Mapping[str, Any]) -> None:
    try:
        value = Fraction(str(params.get("multiplier")))
    except (ValueError, ZeroDivisionError):
        raise bad("multiplier", "The multiplier is a decimal number such as 1.5.") from None
    if not 1 < value <= 100:
        raise bad("multiplier", "The multiplier must be above 1 and at most 100.")


def _referral(params: Mapping[str, Any]) -> None:
    """Referrer points; optional welcome bonus, minimum qualifying purchase, monthly
    limit of rewarded referrals per referrer (absent or None: none)."""
    _points(params, "points")
    if params.get("welcome_points") is not None:
        _points(params, "welcome_points", "welcome_points")
    if params.get("min_amount") is not None:
        _amount(params, "min_amount", minimum=0)
    limit = params.get("monthly_limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                              or not 0 < limit <= 10_000):
        raise bad("monthly_limit", "The monthly limit is a whole number of referrals from 1"
                                   " to 10000, or empty for none.")
    unknown = set(params) - {"points", "welcome_points", "min_amount", "monthly_limit"}
    if unknown:
        raise bad("type", f"Unknown referral parameter(s): {', '.join(sorted(unknown))}.")


def check_params(type_: str, params: Mapping[str, Any]) -> None:
    if type_ == "per_amount":
        _points(params, "points")
        _amount(params, "per")
    elif type_ == "min_spend":
        _amount(params, "amount")
    elif type_ == "threshold_bonus":
        _amount(params, "above", minimum=0)
        _points(params, "points")
    elif type_ == "first_purchase":
        _points(params, "points")
    elif type_ == "referral":
        _referral(params)
    elif type_ == "product":
        if not (params.get("skus") or params.get("categories")):
            raise bad("skus", "Name at least one SKU or category.")
        if params.get("mode") == "fixed":
            _points(params, "points")
        elif params.get("mode") == "multiplier":
            _multiplier(params)
        else:
            raise bad("mode", "Mode is multiplier or fixed.")
    elif type_ == "cashback":
        bp = params.get("basis_points")
        if not isinstance(bp, int) or not 0 < bp <= 10_000:
            raise bad("cashback_percent", "Cashback is a percentage above 0 and at most 100.")
    elif type_ == "multiplier":
        _multiplier(params)
    elif type_ == "event":
        if not _CODE.match(str(params.get("event_type") or "")):
            raise bad("event_type", "The event type is a code such as signup or webinar.")
        _points(params, "points")
        if params.get("frequency") not in FREQUENCIES:
            raise bad("frequency", f"Frequency is one of {', '.join(FREQUENCIES)}.")


# --- the console form --------------------------------------------------------------------

def _get(form: Mapping[str, Any], key: str) -> str:
    value = form.get(key)
    return str(value).strip() if value is not None else ""


def _int(form: Mapping[str, Any], key: str, default: int | None = None) -> int | None:
    raw = _get(form, key)
    if not raw:
        return default
    if not re.fullmatch(r"-?\d{1,13}", raw):
        raise bad(key, "Give a whole number.")
    return int(raw)


def parse_decimal(raw: str, key: str, places: int) -> Decimal:
    try:
        value = Decimal(raw.replace(",", ".").replace(" ", ""))
    except InvalidOperation:
        raise bad(key, "Give a number.") from None
    if not value.is_finite() or value.as_tuple().exponent < -places:  # type: ignore[operator]
        raise bad(key, f"Give a number with at most {places} decimals.")
    return value


def parse_money(raw: str, key: str) -> int:
    """Major units with at most two decimals to minor units, exactly."""
    return int(parse_decimal(raw, key, 2) * 100)


def _money(form: Mapping[str, Any], key: str) -> int | None:
    raw = _get(form, key)
    return parse_money(raw, key) if raw else None


def _list(form: Mapping[str, Any], key: str) -> tuple[str, ...]:
    values = form.getall(key, []) if hasattr(form, "getall") else form.get(key) or []
    if isinstance(values, str):
        values = [values]
    parts = (part.strip() for value in values for part in value.split(","))
    return tuple(sorted({part for part in parts if part}))


def _date(form: Mapping[str, Any], key: str, tz: ZoneInfo, shift: int) -> datetime | None:
    raw = _get(form, key)
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise bad(key, "Give a date as YYYY-MM-DD.") from None
    return datetime.combine(day + timedelta(days=shift), time(0), tz)


def spec_from_form(form: Mapping[str, Any], tz: ZoneInfo) -> RuleSpec:
    type_ = _get(form, "type")
    params: dict[str, Any] = {}
    if type_ in ("per_amount", "threshold_bonus", "first_purchase", "referral", "event") or (
            type_ == "product" and _get(form, "mode") == "fixed"):
        params["points"] = _int(form, "points")
    if type_ == "per_amount":
        params["per"] = _money(form, "per")
    elif type_ == "min_spend":
        params["amount"] = _money(form, "amount")
    elif type_ == "threshold_bonus":
        params["above"] = _money(form, "above")
    elif type_ in ("product", "cashback"):
        params["skus"], params["categories"] = list(_list(form, "skus")), list(
            _list(form, "categories"))
        if type_ == "product":
            params["mode"] = _get(form, "mode")
            if params["mode"] == "multiplier":
                params["multiplier"] = _get(form, "multiplier")
        else:
            raw = _get(form, "cashback_percent")
            params["basis_points"] = (int(parse_decimal(raw, "cashback_percent", 2) * 100)
                                      if raw else None)
    elif type_ == "multiplier":
        params["multiplier"] = _get(form, "multiplier")
    elif type_ == "referral":
        params["welcome_points"] = _int(form, "welcome_points")
        params["min_amount"] = _money(form, "min_amount")
        params["monthly_limit"] = _int(form, "monthly_limit")
        params = {key: value for key, value in params.items()
                  if value is not None or key == "points"}
    elif type_ == "event":
        params["event_type"] = _get(form, "event_type").lower()
        params["frequency"] = _get(form, "frequency") or "unlimited"
    if "multiplier" in params:
        try:
            params["multiplier"] = str(parse_decimal(params["multiplier"], "multiplier", 4))
        except DomainError:
            raise bad("multiplier", "The multiplier is a decimal number such as 1.5.") from None
    segments = []
    for raw in _list(form, "segments"):
        try:
            segments.append(uuid.UUID(raw))
        except ValueError:
            raise bad("segments", f"{raw!r} is not a segment id.") from None
    return RuleSpec(
        name=_get(form, "name"), type=type_, params=params,
        funding=_get(form, "funding") or "partner", priority=_int(form, "priority", 100),
        starts_at=_date(form, "starts_on", tz, 0), ends_at=_date(form, "ends_on", tz, 1),
        channels=_list(form, "channels"),
        tiers=tuple(t.lower() for t in _list(form, "tiers")), segments=tuple(segments),
        per_order_cap=_int(form, "per_order_cap"),
        per_member_day_cap=_int(form, "per_member_day_cap"),
        per_member_month_cap=_int(form, "per_member_month_cap"),
        budget=_int(form, "budget"), stops_later_rules=_get(form, "stops_later_rules") == "on",
    ).checked()


def form_of(version: Any, tz: ZoneInfo) -> dict[str, Any]:
    """The form fields showing a saved version (the editor's initial values)."""
    p = version.params
    def money(v: int | None) -> str:
        return "" if v is None else f"{Decimal(v) / 100:.2f}"
    return {
        "name": version.name, "type": version.type, "funding": version.funding,
        "priority": version.priority,
        "starts_on": version.starts_at.astimezone(tz).date().isoformat()
        if version.starts_at else "",
        "ends_on": (version.ends_at.astimezone(tz) - timedelta(days=1)).date().isoformat()
        if version.ends_at else "",
        "channels": list(version.channels), "tiers": ", ".join(version.tiers),
        "segments": ", ".join(str(s) for s in version.segments),
        "per_order_cap": version.per_order_cap or "",
        "per_member_day_cap": version.per_member_day_cap or "",
        "per_member_month_cap": version.per_member_month_cap or "",
        "budget": version.budget or "", "stops_later_rules": version.stops_later_rules,
        "points": p.get("points", ""), "per": money(p.get("per")),
        "amount": money(p.get("amount")), "above": money(p.get("above")),
        "skus": ", ".join(p.get("skus", [])), "categories": ", ".join(p.get("categories", [])),
        "mode": p.get("mode", "multiplier"), "multiplier": p.get("multiplier", ""),
        "cashback_percent": f"{Decimal(p['basis_points']) / 100}" if "basis_points" in p
        else "",
        "event_type": p.get("event_type", ""), "frequency": p.get("frequency", "unlimited"),
        "welcome_points": p.get("welcome_points", ""), "min_amount": money(p.get("min_amount")),
        "monthly_limit": p.get("monthly_limit", ""),
    }
