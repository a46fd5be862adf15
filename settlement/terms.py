"""Rate cards and FX rates: validation, effective-dated look-ups and exact conversion.

Units. `issue_price` and `reimbursement` are minor units of the coalition currency per
point, exact decimals with at most 6 places (1.2 = 1.2 grosz a point). `fee_percent` is a
percentage of the issuance value (at most 4 places), `fee_fixed` minor units of the
settlement currency per cycle, `credit_limit` and `low_balance_alert` points.

Effective dating. A rate card applies from its `effective_from` until the next card's; it
is never rewritten (migration 0015's trigger refuses UPDATE and DELETE) and may not start
in the past, so a price already applied to a posting can never change. FX rates are
append-only too, but may be entered for past days (a day's published rate entered late):
every statement line records the rate it applied.

Rounding. Values are exact `Decimal`s until they become money, then `round_minor` rounds
once, half up (0.5 grosz → 1 grosz), to an integer of minor units. FX conversion of minor
units assumes both currencies have two decimal places (PLN, EUR, USD, GBP, CZK...).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import asyncpg

from coalition import clock
from coalition.errors import Conflict, DomainError
from coalition.settings import coalition_settings

from .models import BILLING_TYPES, CYCLES

MAX_PRICE = Decimal("100000000")       # numeric(14, 6)
MAX_RATE = Decimal("10000000000")      # numeric(18, 8)
MAX_POINTS = 10**12


@dataclass(frozen=True)
class Terms:
    id: int
    partner_id: uuid.UUID
    effective_from: datetime
    issue_price: Decimal
    reimbursement: Decimal
    fee_percent: Decimal
    fee_fixed: int
    billing: str
    cycle: str
    currency: str
    credit_limit: int
    low_balance_alert: int | None
    note: str | None
    created_by: str
    created_at: datetime

    def public(self) -> dict:
        """JSON-ready: exact decimals as strings, never floats."""
        out = asdict(self)
        for key in ("issue_price", "reimbursement", "fee_percent"):
            out[key] = str(out[key])
        return out


@dataclass(frozen=True)
class FxRate:
    base: str
    quote: str
    effective_from: date
    rate: Decimal
    source: str | None


@dataclass(frozen=True)
class Conversion:
    """`amount` (exact) in `quote`, and the rate that made it: 1 base = rate quote."""

    amount: Decimal
    base: str
    quote: str
    rate: Decimal
    rate_date: date | None   # None when no conversion was needed (same currency)


def round_minor(amount: Decimal) -> int:
    """The one rounding rule: to whole minor units, half up."""
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


class Invalid(DomainError):
    """Several fields at once; `errors` names each."""

    def __init__(self, errors: dict[str, str], title: str = "Invalid request") -> None:
        detail = "; ".join(f"{field}: {message}" for field, message in errors.items())
        super().__init__("validation-error", title, detail, status=422,
                         field=next(iter(errors)),
                         errors=[{"field": f, "message": m} for f, m in errors.items()])
        self.errors = errors


def _decimal(raw: object, field: str, errors: dict[str, str], *, places: int,
             maximum: Decimal, required: bool = True) -> Decimal | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if required:
            errors[field] = "is required"
        return None
    if isinstance(raw, float):
        errors[field] = "give an exact decimal (a string), not a float"
        return None
    try:
        value = Decimal(str(raw).strip().replace(",", "."))
    except InvalidOperation:
        errors[field] = f"{raw!r} is not a decimal number"
        return None
    if not value.is_finite():
        errors[field] = "must be a finite number"
    elif value < 0:
        errors[field] = "may not be negative"
    elif value >= maximum:
        errors[field] = f"must be below {maximum}"
    elif value != value.quantize(Decimal(1).scaleb(-places)):
        errors[field] = f"at most {places} decimal places"
    else:
        return value
    return None


def _integer(raw: object, field: str, errors: dict[str, str], *, default: int | None,
             maximum: int = MAX_POINTS) -> int | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    if isinstance(raw, (bool, float)):
        errors[field] = "must be a whole number"
        return None
    text = str(raw).strip()
    if not text.lstrip("-").isdigit():
        errors[field] = "must be a whole number"
        return None
    value = int(text)
    if value < 0:
        errors[field] = "may not be negative"
    elif value > maximum:
        errors[field] = f"must be at most {maximum}"
    else:
        return value
    return None


def _currency(raw: object, field: str, errors: dict[str, str]) -> str | None:
    value = str(raw or "").strip().upper()
    if len(value) != 3 or not value.isalpha() or not value.isascii():
        errors[field] = "must be a three-letter ISO 4217 code"
        return None
    return value


async def settings(conn: asyncpg.Connection) -> tuple[str, ZoneInfo]:
    """The coalition's currency and time zone."""
    found = await coalition_settings(conn)
    return found.currency, found.zone


def _effective_from(raw: object, zone: ZoneInfo, now: datetime,
                    errors: dict[str, str]) -> datetime | None:
    """Empty: now. A date: its midnight in the coalition's time zone. A date-time: as
    given (an offset is required). Never in the past."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return now
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, date):
        value = datetime.combine(raw, time(), zone)
    else:
        text = str(raw).strip()
        try:
            value = (datetime.combine(date.fromisoformat(text), time(), zone) if len(text) == 10
                     else datetime.fromisoformat(text))
        except ValueError:
            errors["effective_from"] = "must be a date (YYYY-MM-DD) or an ISO 8601 date-time"
            return None
    if value.tzinfo is None:
        errors["effective_from"] = "needs a time-zone offset"
        return None
    if value < now:
        errors["effective_from"] = ("may not be in the past: rate cards are never rewritten; "
                                    "leave it empty to start now, or give a later date")
        return None
    return value


async def add_rate_card(conn: asyncpg.Connection, partner_id: uuid.UUID,
                        raw: Mapping[str, object], created_by: str,
                        now: datetime | None = None) -> Terms:
    """Validate and append a rate card. Every invalid field is named (422); a card at the
    same instant as an existing one is a 409."""
    now = now or clock.now()
    coalition_currency, zone = await settings(conn)
    errors: dict[str, str] = {}
    effective = _effective_from(raw.get("effective_from"), zone, now, errors)
    issue = _decimal(raw.get("issue_price"), "issue_price", errors, places=6, maximum=MAX_PRICE)
    reimbursement = _decimal(raw.get("reimbursement"), "reimbursement", errors, places=6,
                             maximum=MAX_PRICE)
    fee_percent = _decimal(raw.get("fee_percent") or "0", "fee_percent", errors, places=4,
                           maximum=Decimal("100.0001"))
    fee_fixed = _integer(raw.get("fee_fixed"), "fee_fixed", errors, default=0)
    billing = str(raw.get("billing") or "postpaid").strip()
    if billing not in BILLING_TYPES:
        errors["billing"] = f"must be one of {', '.join(BILLING_TYPES)}"
    cycle = str(raw.get("cycle") or "monthly").strip()
    if cycle not in CYCLES:
        errors["cycle"] = f"must be one of {', '.join(CYCLES)}"
    currency = _currency(raw.get("currency") or coalition_currency, "currency", errors)
    credit_limit = _integer(raw.get("credit_limit"), "credit_limit", errors, default=0)
    low_alert = _integer(raw.get("low_balance_alert"), "low_balance_alert", errors,
                         default=None)
    note = (str(raw.get("note") or "").strip() or None)
    if note and len(note) > 2000:
        errors["note"] = "at most 2000 characters"
    if billing == "postpaid" and (credit_limit or low_alert is not None):
        errors["credit_limit" if credit_limit else "low_balance_alert"] = (
            "applies to prepaid billing only")
    if currency and effective and currency != coalition_currency:
        on = effective.astimezone(zone).date()
        if await fx_rate_at(conn, coalition_currency, currency, on) is None:
            errors["currency"] = (f"no FX rate {coalition_currency}→{currency} in force on "
                                  f"{on}; add one first")
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM partners WHERE id = $1)",
                               partner_id):
        errors["partner_id"] = "no such partner"
    if errors:
        raise Invalid(errors, "Invalid rate card")
    try:
        row = await conn.fetchrow(
            "INSERT INTO settlement_terms (partner_id, effective_from, issue_price,"
            " reimbursement, fee_percent, fee_fixed, billing, cycle, currency, credit_limit,"
            " low_balance_alert, note, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
            " $10, $11, $12, $13) RETURNING *", partner_id, effective, issue, reimbursement,
            fee_percent, fee_fixed, billing, cycle, currency, credit_limit, low_alert, note,
            created_by)
    except asyncpg.UniqueViolationError:
        raise Conflict("validation-error", "Rate card exists",
                       f"The partner already has a rate card from {effective.isoformat()}.",
                       field="effective_from") from None
    return _terms(row)


def plain(value: Decimal) -> Decimal:
    """The same number without the column's trailing zeros (1.200000 → 1.2), never in
    exponent notation."""
    return Decimal(format(value.normalize(), "f"))


def _terms(row: asyncpg.Record) -> Terms:
    values = {field: row[field] for field in Terms.__dataclass_fields__}
    for key in ("issue_price", "reimbursement", "fee_percent"):
        values[key] = plain(values[key])
    return Terms(**values)


async def terms_at(conn: asyncpg.Connection, partner_id: uuid.UUID,
                   at: datetime | None = None) -> Terms | None:
    """The rate card in force at `at` (now by default): the latest effective_from ≤ at."""
    row = await conn.fetchrow(
        "SELECT * FROM settlement_terms WHERE partner_id = $1 AND effective_from <= $2"
        " ORDER BY effective_from DESC LIMIT 1", partner_id, at or clock.now())
    return _terms(row) if row else None


async def terms_history(conn: asyncpg.Connection, partner_id: uuid.UUID) -> list[Terms]:
    """Every rate card of the partner, latest first (future ones included)."""
    rows = await conn.fetch("SELECT * FROM settlement_terms WHERE partner_id = $1"
                            " ORDER BY effective_from DESC", partner_id)
    return [_terms(row) for row in rows]


async def add_fx_rate(conn: asyncpg.Connection, raw: Mapping[str, object]) -> FxRate:
    """Append a rate: 1 `base` = `rate` `quote` from the day `effective_from`."""
    errors: dict[str, str] = {}
    base = _currency(raw.get("base"), "base", errors)
    quote = _currency(raw.get("quote"), "quote", errors)
    if base and quote and base == quote:
        errors["quote"] = "must differ from base"
    rate = _decimal(raw.get("rate"), "rate", errors, places=8, maximum=MAX_RATE)
    if rate is not None and rate == 0:
        errors["rate"] = "must be positive"
    on = raw.get("effective_from")
    if not isinstance(on, date):
        try:
            on = date.fromisoformat(str(on or "").strip())
        except ValueError:
            errors["effective_from"] = "must be a date (YYYY-MM-DD)"
    source = (str(raw.get("source") or "").strip() or None)
    if source and len(source) > 100:
        errors["source"] = "at most 100 characters"
    if errors:
        raise Invalid(errors, "Invalid FX rate")
    try:
        await conn.execute("INSERT INTO fx_rates (base, quote, effective_from, rate, source)"
                           " VALUES ($1, $2, $3, $4, $5)", base, quote, on, rate, source)
    except asyncpg.UniqueViolationError:
        raise Conflict("validation-error", "FX rate exists",
                       f"A {base}→{quote} rate from {on} exists; rates are never rewritten.",
                       field="effective_from") from None
    return FxRate(base, quote, on, rate, source)


async def fx_rate_at(conn: asyncpg.Connection, base: str, quote: str, on: date
                     ) -> FxRate | None:
    """The rate in force on a day: the latest effective_from ≤ that day."""
    row = await conn.fetchrow(
        "SELECT base, quote, effective_from, rate, source FROM fx_rates WHERE base = $1"
        " AND quote = $2 AND effective_from <= $3 ORDER BY effective_from DESC LIMIT 1",
        base, quote, on)
    return FxRate(**{**dict(row), "rate": plain(row["rate"])}) if row else None


async def fx_rates(conn: asyncpg.Connection) -> list[FxRate]:
    rows = await conn.fetch("SELECT base, quote, effective_from, rate, source FROM fx_rates"
                            " ORDER BY base, quote, effective_from DESC")
    return [FxRate(**{**dict(row), "rate": plain(row["rate"])}) for row in rows]


async def convert(conn: asyncpg.Connection, amount: Decimal, base: str, quote: str,
                  on: date) -> Conversion:
    """`amount` of `base` in `quote`, exactly (no rounding: the caller rounds once), with
    the rate applied. Only a direct base→quote rate is used: an inverted one would need a
    division that is not exact."""
    if base == quote:
        return Conversion(amount, base, quote, Decimal(1), None)
    rate = await fx_rate_at(conn, base, quote, on)
    if rate is None:
        raise DomainError("fx-rate-missing", "No FX rate",
                          f"No {base}→{quote} rate is in force on {on}.", field="currency")
    return Conversion(amount * rate.rate, base, quote, rate.rate, rate.effective_from)
