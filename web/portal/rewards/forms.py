"""Reading the console's reward form and the operator's coupon-offer form.

Money is typed in major units ("15" or "15.50") and stored exactly in minor units;
dates are whole days in the coalition's time zone: a reward valid from 1 May to 31 May
is redeemable from 1 May 00:00 until 1 June 00:00 local time."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from coalition.rewards.models import REWARD_KINDS

TIER_CODE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")
MAX_POINTS = 10**12
MAX_MONEY = 10**13          # minor units, as the purchases API takes them


class FormErrors(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def minor_units(text: str) -> int | None:
    """ "15", "15.5", "15,50" -> 1500, 1550, 1550; None when not an amount with at most
    two decimals."""
    try:
        amount = Decimal(text.strip().replace(",", ".").replace(" ", ""))
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount.as_tuple().exponent < -2:
        return None
    return int(amount * 100)


def as_major(minor: int | None) -> str:
    return "" if minor is None else f"{minor // 100}.{minor % 100:02d}"


class Reader:
    """Pulls typed fields out of a form, collecting every error by field name."""

    def __init__(self, form: Any, zone: ZoneInfo) -> None:
        self.form, self.zone, self.errors = form, zone, {}

    def text(self, name: str, limit: int, required: bool = False) -> str | None:
        value = (self.form.get(name) or "").strip()
        if required and not value:
            self.errors[name] = "Required."
        elif len(value) > limit:
            self.errors[name] = f"At most {limit} characters."
        return value or None

    def integer(self, name: str, low: int, high: int, required: bool = False) -> int | None:
        raw = (self.form.get(name) or "").strip()
        if not raw:
            if required:
                self.errors[name] = "Required."
            return None
        if not re.fullmatch(r"\d+", raw) or not low <= int(raw) <= high:
            self.errors[name] = f"A whole number from {low} to {high}."
            return None
        return int(raw)

    def money(self, name: str) -> int | None:
        raw = (self.form.get(name) or "").strip()
        value = minor_units(raw) if raw else None
        if raw and (value is None or not 0 < value <= MAX_MONEY):
            self.errors[name] = (f"An amount such as 15 or 15.50, at most"
                                 f" {MAX_MONEY // 100}.")
            return None
        return value

    def day(self, name: str, end: bool = False) -> datetime | None:
        """Start of the day (or, for an end date, start of the next day) in the zone."""
        raw = (self.form.get(name) or "").strip()
        if not raw:
            return None
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            self.errors[name] = "A date as YYYY-MM-DD."
            return None
        return datetime.combine(day + timedelta(days=1 if end else 0), time(), self.zone)

    def codes(self, name: str) -> list[str]:
        items = [t.strip().lower() for t in (self.form.get(name) or "").split(",") if t.strip()]
        if any(not TIER_CODE.match(t) for t in items):
            self.errors[name] = "Tier codes such as vip, separated by commas."
        return list(dict.fromkeys(items))

    def uuids(self, name: str) -> list[uuid.UUID]:
        found = []
        for item in (self.form.get(name) or "").replace("\n", ",").split(","):
            if item.strip():
                try:
                    found.append(uuid.UUID(item.strip()))
                except ValueError:
                    self.errors[name] = "Segment ids, separated by commas."
        return list(dict.fromkeys(found))

    def flag(self, name: str) -> bool:
        return self.form.get(name) == "on"


def read_reward(form: Any, zone: ZoneInfo) -> dict[str, Any]:
    """The reward's columns from the console form; FormErrors names every bad field."""
    r = Reader(form, zone)
    kind = form.get("kind") or ""
    if kind not in REWARD_KINDS:
        r.errors["kind"] = "Choose a kind."
    fields: dict[str, Any] = {
        "name": r.text("name", 200, required=True),
        "description": r.text("description", 2000),
        "kind": kind,
        "category": r.text("category", 50),
        "price_points": r.integer("price_points", 1, MAX_POINTS, required=True),
        "stock": r.integer("stock", 0, MAX_POINTS),
        "valid_from": r.day("valid_from"),
        "valid_until": r.day("valid_until", end=True),
        "voucher_days": r.integer("voucher_days", 1, 3650),
        "per_member_limit": r.integer("per_member_limit", 1, 10**6),
        "tiers": r.codes("tiers"),
        "segments": r.uuids("segments"),
        "listed": r.flag("listed"),
        "active": r.flag("active"),
        "value": None,
    }
    if kind == "percent_discount":
        fields["value"] = r.integer("percent", 1, 100, required=True)
    elif kind in ("fixed_discount", "gift_card"):
        fields["value"] = r.money("amount")
        if fields["value"] is None and "amount" not in r.errors:
            r.errors["amount"] = "Required for this kind."
    if fields["valid_from"] and fields["valid_until"] \
            and fields["valid_until"] <= fields["valid_from"]:
        r.errors["valid_until"] = "Must not be before the start date."
    if r.errors:
        raise FormErrors(r.errors)
    return fields


def read_offer(form: Any, zone: ZoneInfo) -> dict[str, Any]:
    r = Reader(form, zone)
    fields: dict[str, Any] = {"name": r.text("name", 200, required=True)}
    for name in ("source_partner_id", "reward_id"):
        try:
            fields[name] = uuid.UUID(form.get(name) or "")
        except ValueError:
            r.errors[name] = "Choose one."
    fields["min_total"] = r.money("min_total")
    if fields["min_total"] is None and "min_total" not in r.errors:
        r.errors["min_total"] = "Required."
    fields["starts_at"] = r.day("starts_at")
    fields["ends_at"] = r.day("ends_at", end=True)
    if fields["starts_at"] and fields["ends_at"] and fields["ends_at"] <= fields["starts_at"]:
        r.errors["ends_at"] = "Must not be before the start date."
    if r.errors:
        raise FormErrors(r.errors)
    return fields
