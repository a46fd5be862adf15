"""The tier decision, pure and without I/O, so every policy is testable with a frozen
`now`.

Qualification. The qualifying value is either spend (the sum of purchases.total minus
returned_total of purchases in the coalition currency, minor units) or points (points
earned by `earn` entries, minus what reversals and returns cancelled from those lots).
It is measured over a window ending now: rolling = the last `window_months` months;
calendar_year = 1 January of the current year (coalition time zone) until now.

Upgrade at once: when the value reaches a higher tier's threshold the member moves up
immediately (several rungs at a time if the value allows) and the tier anniversary is
set a year later.

Downgrade, by policy, when the value no longer holds the earned tier:
- never: an earned tier is kept for good;
- anniversary: checked only on the tier anniversary (a year after the tier was reached,
  then yearly); a member who still qualifies keeps the tier for another year;
- rolling: re-evaluated continuously; the member drops as soon as the value falls short.
With the calendar-year window, status earned in one year also holds through the next:
the value that keeps a tier is the higher of this year's and last year's.

Manual assignment: an operator guarantees a tier until an end date, with a reason. The
effective tier is the higher of the earned and the manual tier; when the end date
passes the manual part lapses and the earned tier applies again.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class TierDef:
    code: str
    name: str
    rank: int
    threshold: int
    benefits: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    qualification: str = "spend"        # spend | points
    window_kind: str = "rolling"        # rolling | calendar_year
    window_months: int = 12
    downgrade: str = "anniversary"      # never | anniversary | rolling


@dataclass(frozen=True)
class TierState:
    """A member's stored tier state (a member_tiers row)."""

    tier_code: str
    since: datetime | None
    earned_code: str
    earned_since: datetime | None = None
    review_at: datetime | None = None
    manual_code: str | None = None
    manual_until: datetime | None = None
    manual_reason: str | None = None
    manual_by: str | None = None


@dataclass(frozen=True)
class Change:
    from_code: str | None
    to_code: str
    reason: str      # upgrade | downgrade | manual | manual_expired
    value: int | None


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` later (or earlier); the 31st becomes the last day
    of a shorter month."""
    total = moment.month - 1 + months
    year, month = moment.year + total // 12, total % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def windows(policy: Policy, now: datetime, timezone: str
            ) -> tuple[datetime, datetime | None]:
    """The qualifying window's start, and for calendar years the previous year's start
    (the window that can still keep a tier); the window ends at `now`."""
    if policy.window_kind == "rolling":
        return add_months(now, -policy.window_months), None
    local = now.astimezone(ZoneInfo(timezone))
    start = local.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, start.replace(year=start.year - 1)


def qualified(ladder: list[TierDef], value: int) -> TierDef:
    """The highest tier whose threshold the value reaches (the ladder is by rank)."""
    best = ladder[0]
    for tier in ladder:
        if value >= tier.threshold:
            best = tier
    return best


def initial_state(ladder: list[TierDef]) -> TierState:
    base = ladder[0].code
    return TierState(tier_code=base, since=None, earned_code=base)


def decide(ladder: list[TierDef], policy: Policy, state: TierState | None, value: int,
           keep_value: int, now: datetime) -> tuple[TierState | None, Change | None]:
    """The member's new state (None when nothing needs storing) and the change of the
    effective tier, if any. `value` is the current window's qualifying value;
    `keep_value` the value that keeps a tier (see the module docstring)."""
    if not ladder:
        return None, None
    ranks = {t.code: t.rank for t in ladder}
    base = ladder[0].code
    current = state or initial_state(ladder)
    earned = current.earned_code if current.earned_code in ranks else base
    earned_since, review_at = current.earned_since, current.review_at
    reason = None

    reached = qualified(ladder, value)
    if reached.rank > ranks[earned]:
        earned, earned_since, review_at, reason = reached.code, now, add_months(now, 12), "upgrade"
    else:
        kept = qualified(ladder, max(value, keep_value))
        due = review_at is None or review_at <= now
        if kept.rank < ranks[earned] and (
                policy.downgrade == "rolling" or (policy.downgrade == "anniversary" and due)):
            earned, earned_since, reason = kept.code, now, "downgrade"
            review_at = add_months(now, 12) if kept.rank > 0 else None
        elif policy.downgrade == "anniversary" and ranks[earned] > 0 and due:
            # Still qualifies on the anniversary: the tier holds for another year.
            review_at = review_at or add_months(now, 12)
            while review_at <= now:
                review_at = add_months(review_at, 12)

    manual_code, manual_until = current.manual_code, current.manual_until
    lapsed = manual_code is not None and manual_until is not None and manual_until <= now
    if lapsed or manual_code not in (None, *ranks):
        manual_code = manual_until = None
    effective = earned
    if manual_code is not None and ranks[manual_code] > ranks[earned]:
        effective = manual_code

    new = replace(current, earned_code=earned, earned_since=earned_since, review_at=review_at,
                  manual_code=manual_code, manual_until=manual_until,
                  manual_reason=current.manual_reason if manual_code else None,
                  manual_by=current.manual_by if manual_code else None,
                  tier_code=effective,
                  since=now if effective != current.tier_code else current.since)
    change = None
    if effective != current.tier_code:
        if lapsed and ranks[effective] < ranks.get(current.tier_code, 0):
            reason = "manual_expired"
        elif reason is None:
            reason = "upgrade" if ranks[effective] > ranks.get(current.tier_code, 0) \
                else "downgrade"
        change = Change(current.tier_code, effective, reason, value)
    if new == current or (state is None and new == initial_state(ladder)):
        return None, change
    return new, change


def progress(ladder: list[TierDef], tier_code: str, value: int) -> tuple[TierDef | None, int]:
    """The next tier above the member's and what remains to reach it (0 when none)."""
    ranks = {t.code: t.rank for t in ladder}
    above = [t for t in ladder if t.rank > ranks.get(tier_code, 0)]
    if not above:
        return None, 0
    return above[0], max(above[0].threshold - value, 0)
