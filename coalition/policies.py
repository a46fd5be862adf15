"""The points-lifecycle policies people set in the portal: the coalition's expiry, return
and checkout-hold policies (the operator, one row of coalition_settings) and each
partner's return window (its owner, partners.pending_days).

The ledger's SQL reads them at the moment points are earned, returned or held
(migrations/sql/0013_points_lifecycle.sql). A lot stores its expiry date and the end of
its return window when it is earned, and a hold its lapse time when it is opened, so a
change applies to points earned (holds opened) from then on; a return is judged by the
return policy in force when it is posted."""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg

from coalition import clock, settings
from coalition.errors import DomainError
from coalition.models import EXPIRY_POLICIES, RETURN_POLICIES
from coalition.uow import Tx

VALIDITY_MONTHS = (1, 120)
# A minute is the shortest a till needs; a week is the longest an explicit hold may ask
# for in the API (web/api/schemas.py, Authorize.expires_in_seconds).
HOLD_TIMEOUT_SECONDS = (60, 7 * 86400)
MAX_NEGATIVE_FLOOR = 1_000_000_000
RETURN_WINDOW_DAYS = (0, 365)   # partners' check constraint "pending_days"
# The audit actions of the two pages, whose history each page shows.
OPERATOR_ACTION = "policies.save"
PARTNER_ACTION = "policies.return_window"


@dataclass(frozen=True)
class Policies:
    """The coalition's lifecycle policies, named like their coalition_settings columns."""

    expiry_policy: str
    points_validity_months: int | None   # NULL: points never expire, whatever the policy
    expiry_fixed_month: int | None
    expiry_fixed_day: int | None
    return_policy: str
    negative_balance_floor: int
    hold_timeout_seconds: int

    @property
    def effective_expiry(self) -> str:
        return "never" if self.points_validity_months is None else self.expiry_policy


_READ_FOR_UPDATE = (
    "SELECT expiry_policy, points_validity_months, expiry_fixed_month, expiry_fixed_day,"
    " return_policy, negative_balance_floor, hold_timeout_seconds"
    " FROM coalition_settings WHERE id = 1 FOR UPDATE")
_UPDATE = ("UPDATE coalition_settings SET expiry_policy = $1, points_validity_months = $2,"
           " expiry_fixed_month = $3, expiry_fixed_day = $4, return_policy = $5,"
           " negative_balance_floor = $6, hold_timeout_seconds = $7 WHERE id = 1")


async def load(conn: asyncpg.Connection, *, for_update: bool = False) -> Policies:
    """The policies in force; `for_update` reads the row itself and locks it (a change
    compares against what it replaces), else the settings' cached copy."""
    if for_update:
        return Policies(**dict(await conn.fetchrow(_READ_FOR_UPDATE)))
    current = await settings.coalition_settings(conn)
    return Policies(current.expiry_policy, current.points_validity_months,
                    current.expiry_fixed_month, current.expiry_fixed_day,
                    current.return_policy, current.negative_balance_floor,
                    current.hold_timeout_seconds)


async def expiry_of_points_earned_at(conn: asyncpg.Connection, earned_at: datetime
                                     ) -> datetime | None:
    """When points earned at `earned_at` expire under the policies in force (None: never)."""
    return await conn.fetchval("SELECT ledger_lot_expiry($1)", earned_at)


def _whole(form: Mapping[str, str], field: str, low: int, high: int, what: str,
           errors: dict[str, str]) -> int | None:
    """A whole number typed in the form (spaces and _ as digit separators), within
    [low, high]; None (and an error) when missing or out of range."""
    raw = re.sub(r"[\s_]", "", str(form.get(field) or ""))
    if not re.fullmatch(r"\d{1,12}", raw) or not low <= int(raw) <= high:
        errors[field] = f"Enter {what}: a whole number from {low:,} to {high:,}."
        return None
    return int(raw)


def validate(form: Mapping[str, str], current: Policies
             ) -> tuple[Policies | None, dict[str, str]]:
    """(the policies to store, None when there are errors; {field: error})."""
    errors: dict[str, str] = {}
    policy = str(form.get("expiry_policy") or "").strip()
    if policy not in EXPIRY_POLICIES:
        errors["expiry_policy"] = "Choose an expiry policy: " + ", ".join(EXPIRY_POLICIES) + "."
    months: int | None = current.points_validity_months
    if policy != "never" or str(form.get("points_validity_months") or "").strip():
        months = _whole(form, "points_validity_months", *VALIDITY_MONTHS,
                        "how many months points stay valid", errors)
    month = day = None
    if policy == "fixed_date":
        month = _whole(form, "expiry_fixed_month", 1, 12, "the month of the expiry date",
                       errors)
        day = _whole(form, "expiry_fixed_day", 1, 31, "the day of the expiry date", errors)
        # A leap year's month lengths: 29 February is a date (the ledger takes the 28th
        # in other years); 30 February or 31 April are not.
        if month and day and day > calendar.monthrange(2024, month)[1]:
            errors["expiry_fixed_day"] = (f"{calendar.month_name[month]} has no day {day}"
                                          f" (it has {calendar.monthrange(2024, month)[1]}).")
    return_policy = str(form.get("return_policy") or "").strip()
    if return_policy not in RETURN_POLICIES:
        errors["return_policy"] = "Choose a return policy: " + ", ".join(RETURN_POLICIES) + "."
    floor = _whole(form, "negative_balance_floor", 0, MAX_NEGATIVE_FLOOR,
                   "the deepest negative balance in points", errors)
    hold = _whole(form, "hold_timeout_seconds", *HOLD_TIMEOUT_SECONDS,
                  "the hold timeout in seconds", errors)
    if errors:
        return None, errors
    return Policies(policy, months, month, day, return_policy, floor, hold), {}


async def change_policies(tx: Tx, form: Mapping[str, str]
                          ) -> tuple[dict[str, list] | None, dict[str, str]]:
    """The operator's form: (what changed, {column: [before, after]}, empty when nothing
    did; {}) once stored, or (None, {field: error}) with nothing written. The change and
    its audit entry commit together; this process forgets its cached settings then."""
    before = await load(tx.conn, for_update=True)
    chosen, errors = validate(form, before)
    if chosen is None:
        return None, errors
    after = asdict(chosen)
    changes = {column: [value, after[column]] for column, value in asdict(before).items()
               if value != after[column]}
    if changes:
        await tx.conn.execute(_UPDATE, *after.values())
        await tx.audit(OPERATOR_ACTION, changes=changes)
        tx.after_commit(settings.forget)
    return changes, {}


def parse_return_window(raw: str) -> int:
    """Days typed in the form, or a 400 naming pending_days."""
    errors: dict[str, str] = {}
    days = _whole({"pending_days": raw}, "pending_days", *RETURN_WINDOW_DAYS,
                  "the return window in days", errors)
    if days is None:
        raise DomainError("validation-error", "Invalid return window", errors["pending_days"],
                          status=400, field="pending_days")
    return days


async def change_return_window(tx: Tx, raw: str) -> None:
    """Sets the Tx's partner's return window from the form (a 400 naming pending_days
    when it is no number of days in range), with its audit entry. Points already pending
    keep the date they were given."""
    days = parse_return_window(raw)
    before = await tx.conn.fetchval(
        "SELECT pending_days FROM partners WHERE id = $1 FOR UPDATE", tx.partner_id)
    if before != days:
        await tx.conn.execute("UPDATE partners SET pending_days = $2 WHERE id = $1",
                              tx.partner_id, days)
        await tx.audit(PARTNER_ACTION, changes={"pending_days": [before, days]})


@dataclass(frozen=True)
class PolicyPage:
    """What the policy pages show: the policies, when points earned now expire (in the
    coalition's zone, where month ends and fixed dates are taken), the page's last
    changes, and for a partner its name and return window."""

    policies: Policies
    zone: str
    expires_now: datetime | None
    history: list[dict[str, Any]]
    partner: dict[str, Any] | None


async def policy_page(tx: Tx) -> PolicyPage:
    """The operator's page (a Tx with no partner) or the Tx's partner's."""
    current = await load(tx.conn)
    zone = (await settings.coalition_settings(tx.conn)).zone
    expires_now = await expiry_of_points_earned_at(tx.conn, clock.now())
    partner = None
    if tx.partner_id is not None:
        partner = dict(await tx.conn.fetchrow(
            "SELECT name, pending_days FROM partners WHERE id = $1", tx.partner_id))
    action = OPERATOR_ACTION if tx.partner_id is None else PARTNER_ACTION
    rows = await tx.conn.fetch(
        "SELECT created_at, actor, details FROM audit_log WHERE action = $1"
        " AND partner_id IS NOT DISTINCT FROM $2 ORDER BY id DESC LIMIT 20",
        action, tx.partner_id)
    history = [{"created_at": r["created_at"], "actor": r["actor"],
                "details": json.loads(r["details"]) if r["details"] else {}} for r in rows]
    return PolicyPage(current, zone.key, expires_now.astimezone(zone) if expires_now else None,
                      history, partner)


@dataclass(frozen=True)
class PartnerPolicies:
    """The policies as a partner's integration reads them."""

    policies: Policies
    timezone: str
    expires_now: datetime | None
    return_window_days: int


async def partner_policies(tx: Tx) -> PartnerPolicies:
    current = await load(tx.conn)
    expires_now = await expiry_of_points_earned_at(tx.conn, clock.now())
    days = await tx.conn.fetchval("SELECT pending_days FROM partners WHERE id = $1",
                                  tx.partner_id)
    return PartnerPolicies(current, (await settings.coalition_settings(tx.conn)).timezone,
                           expires_now, days)
