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
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.errors import DomainError
from coalition.models import EXPIRY_POLICIES, RETURN_POLICIES

VALIDITY_MONTHS = (1, 120)
# A minute is the shortest a till needs; a week is the longest an explicit hold may ask
# for in the API (web/api/schemas.py, Authorize.expires_in_seconds).
HOLD_TIMEOUT_SECONDS = (60, 7 * 86400)
MAX_NEGATIVE_FLOOR = 1_000_000_000
RETURN_WINDOW_DAYS = (0, 365)   # partners' check constraint "pending_days"


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


_READ = ("SELECT expiry_policy, points_validity_months, expiry_fixed_month, expiry_fixed_day,"
         " return_policy, negative_balance_floor, hold_timeout_seconds"
         " FROM coalition_settings WHERE id = 1")
SELECT, SELECT_FOR_UPDATE = text(_READ), text(_READ + " FOR UPDATE")
UPDATE = text("UPDATE coalition_settings SET expiry_policy = :expiry_policy,"
              " points_validity_months = :points_validity_months,"
              " expiry_fixed_month = :expiry_fixed_month, expiry_fixed_day = :expiry_fixed_day,"
              " return_policy = :return_policy, negative_balance_floor = :negative_balance_floor,"
              " hold_timeout_seconds = :hold_timeout_seconds WHERE id = 1")


async def load(session: AsyncSession, *, for_update: bool = False) -> Policies:
    query = SELECT_FOR_UPDATE if for_update else SELECT
    return Policies(**(await session.execute(query)).mappings().one())


async def expiry_of_points_earned_at(session: AsyncSession, earned_at: datetime
                                     ) -> datetime | None:
    """When points earned at `earned_at` expire under the policies in force (None: never)."""
    return (await session.execute(text("SELECT ledger_lot_expiry(:at)"),
                                  {"at": earned_at})).scalar_one()


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


async def save(session: AsyncSession, policies: Policies) -> dict[str, list]:
    """Stores the policies; returns what changed, {column: [before, after]} (empty when
    nothing did). The caller commits, with its audit entry in the same transaction."""
    before = await load(session, for_update=True)
    after = asdict(policies)
    changes = {column: [value, after[column]] for column, value in asdict(before).items()
               if value != after[column]}
    if changes:
        await session.execute(UPDATE, after)
    return changes


def parse_return_window(raw: str) -> int:
    """Days typed in the form, or a 400 naming pending_days."""
    errors: dict[str, str] = {}
    days = _whole({"pending_days": raw}, "pending_days", *RETURN_WINDOW_DAYS,
                  "the return window in days", errors)
    if days is None:
        raise DomainError("validation-error", "Invalid return window", errors["pending_days"],
                          status=400, field="pending_days")
    return days


async def set_return_window(session: AsyncSession, partner_id: uuid.UUID, days: int) -> int:
    """Sets the partner's return window; returns the one it replaces. Points already
    pending keep the date they were given. The caller commits."""
    before = (await session.execute(text(
        "SELECT pending_days FROM partners WHERE id = :p FOR UPDATE"),
        {"p": partner_id})).scalar_one()
    if before != days:
        await session.execute(text("UPDATE partners SET pending_days = :d WHERE id = :p"),
                              {"d": days, "p": partner_id})
    return before
