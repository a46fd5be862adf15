"""The platform's one clock: what rules, campaigns, pending periods, expiry, tiers, holds,
tokens, commissions, settlement periods and the demo see as "now".

Nothing else reads the wall clock (ruff's banned-API setting in pyproject.toml refuses
`datetime.now()`, `utcnow()` and `date.today()` outside this module), and SQL functions
that decide by time take this clock's reading as a parameter instead of calling the
database's `now()`. Audit columns (`created_at` defaults) may keep the database's time.

`COALITION_NOW=<ISO 8601 instant with an offset>` starts the clock at that instant: at the
moment the process first reads the clock, `now()` is that instant, and from then on time
runs at the wall clock's pace. It runs rather than stands still because the platform
measures durations as they pass: a purchase ten seconds after an affiliate's click, a
checkout hold that times out, a token's lifetime. The moment the instant held is put in
`COALITION_NOW_ANCHOR` (seconds since the epoch on the wall clock), so a child process
(a server, a worker, a benchmark) keeps the very same reading as its parent.

Tests move it with `travel_to()` (the clock runs on from the instant given) or `freeze()`
(it stands still until the block ends)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, tzinfo

ENV = "COALITION_NOW"
ANCHOR_ENV = "COALITION_NOW_ANCHOR"


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant with its UTC offset ("2027-03-28T03:30+02:00"); a local time
    without an offset is refused, since it may name no instant or two."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{ENV} must carry a UTC offset (for example +01:00): {text!r}")
    return moment.astimezone(UTC)


class Clock:
    """Wall time shifted by an offset, or a frozen instant."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._frozen: datetime | None = None
        self._configured = False

    def _configure(self) -> None:
        self._configured = True
        start = os.environ.get(ENV, "").strip()
        if not start:
            return
        instant = parse_instant(start)
        anchor = os.environ.get(ANCHOR_ENV)
        wall = float(anchor) if anchor else time.time()
        os.environ[ANCHOR_ENV] = repr(wall)
        self._offset = instant - datetime.fromtimestamp(wall, UTC)

    def now(self) -> datetime:
        if not self._configured:
            self._configure()
        if self._frozen is not None:
            return self._frozen
        return datetime.now(UTC) + self._offset

    def at_wall(self, seconds: float) -> datetime:
        """The clock's reading at the moment the wall clock read `seconds` since the epoch
        (a time another program stamped by the wall clock: a job's schedule)."""
        if not self._configured:
            self._configure()
        if self._frozen is not None:
            return self._frozen
        return datetime.fromtimestamp(seconds, UTC) + self._offset

    def wall_timestamp(self, instant: datetime) -> float:
        """The inverse of `at_wall`: the wall clock's seconds when this clock reads
        `instant` (what a scheduler would stamp a job meant for that instant with)."""
        if not self._configured:
            self._configure()
        return (instant - self._offset).timestamp()

    def travel_to(self, instant: datetime) -> None:
        """From now on the clock reads `instant`, then runs on."""
        if not self._configured:
            self._configure()
        self._frozen = None
        self._offset = instant.astimezone(UTC) - datetime.now(UTC)

    @contextmanager
    def freeze(self, instant: datetime | None = None) -> Iterator[datetime]:
        """Stand still at `instant` (default: the current reading) inside the block; the
        clock then goes on from where it was before."""
        before_frozen, before_offset = self._frozen, self._offset
        self._frozen = (instant or self.now()).astimezone(UTC)
        try:
            yield self._frozen
        finally:
            self._frozen, self._offset = before_frozen, before_offset

    @contextmanager
    def travel(self, instant: datetime) -> Iterator[datetime]:
        """`travel_to(instant)` inside the block; the clock's offset is restored after."""
        before_frozen, before_offset = self._frozen, self._offset
        self.travel_to(instant)
        try:
            yield instant
        finally:
            self._frozen, self._offset = before_frozen, before_offset


CLOCK = Clock()


def now() -> datetime:
    """The platform's current instant, timezone-aware, in UTC."""
    return CLOCK.now()


def today(zone: tzinfo) -> date:
    """The current date in `zone` (the coalition's time zone for anything shown)."""
    return CLOCK.now().astimezone(zone).date()


def timestamp() -> int:
    """Whole seconds since the epoch on the platform's clock (JWT `iat`, `auth_time`)."""
    return int(CLOCK.now().timestamp())


at_wall = CLOCK.at_wall
wall_timestamp = CLOCK.wall_timestamp
travel_to = CLOCK.travel_to
travel = CLOCK.travel
freeze = CLOCK.freeze
