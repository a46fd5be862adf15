"""The coalition's settings (the one row of `coalition_settings`), read through one cache.

Every process keeps the row for `TTL_SECONDS`: the purchase path reads the currency,
the point value and the time zone on every request, and they change about never. The
use cases that change the row call `forget()` once their Tx commits, so this process
sees the change at once; other processes see it within the TTL. (The ledger's SQL
functions read the row themselves, so what they decide is never stale.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import asyncpg

if TYPE_CHECKING:
    from coalition.uow import Tx

TTL_SECONDS = 10.0

_READ = ("SELECT name, currency_name, currency, point_face_value, timezone,"
         " points_validity_months, expiry_policy, expiry_fixed_month, expiry_fixed_day,"
         " return_policy, negative_balance_floor, hold_timeout_seconds"
         " FROM coalition_settings WHERE id = 1")


@dataclass(frozen=True)
class CoalitionSettings:
    name: str
    currency_name: str
    currency: str
    # Exact value of one point in major units of `currency` (never a float).
    point_value: Fraction
    timezone: str
    points_validity_months: int | None
    expiry_policy: str
    expiry_fixed_month: int | None
    expiry_fixed_day: int | None
    return_policy: str
    negative_balance_floor: int
    hold_timeout_seconds: int

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


_cached: tuple[float, CoalitionSettings] | None = None


async def coalition_settings(conn: asyncpg.Connection | asyncpg.Pool) -> CoalitionSettings:
    """The settings, at most TTL_SECONDS old in this process."""
    global _cached
    if _cached is not None and _cached[0] > time.monotonic():
        return _cached[1]
    row = await conn.fetchrow(_READ)
    loaded = CoalitionSettings(
        name=row["name"], currency_name=row["currency_name"], currency=row["currency"],
        point_value=Fraction(row["point_face_value"]), timezone=row["timezone"],
        points_validity_months=row["points_validity_months"],
        expiry_policy=row["expiry_policy"], expiry_fixed_month=row["expiry_fixed_month"],
        expiry_fixed_day=row["expiry_fixed_day"], return_policy=row["return_policy"],
        negative_balance_floor=row["negative_balance_floor"],
        hold_timeout_seconds=row["hold_timeout_seconds"])
    _cached = (time.monotonic() + TTL_SECONDS, loaded)
    return loaded


def forget() -> None:
    """Drop this process's copy: the next read loads the row again."""
    global _cached
    _cached = None


async def current_settings(tx: Tx) -> CoalitionSettings:
    """The settings as a use case: for a handler that needs them before it calls the use
    case that does the work (a form's dates are days in the coalition's time zone)."""
    return await coalition_settings(tx.conn)
