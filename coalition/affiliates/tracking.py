"""Click tracking for /r/{code}: what a code leads to, and the buffered click recorder.

The redirect is the hottest path of the platform (every banner view that turns into a
visit), so it never waits for the database:
- `CodeCache` keeps code -> `CodeTarget` in memory for a few seconds (unknown codes
  too, so a flood of made-up codes costs one query per code per TTL). Status changes in
  this process drop the entry at once (coalition/affiliates/programs.py); other
  processes see them within the TTL.
- `ClickRecorder` appends each click to a list; a background task writes the list every
  `interval` seconds, or as soon as `batch` clicks wait, with one multi-row INSERT, and
  `close()` writes what is left on shutdown. The INSERT keeps only clicks whose
  enrollment is still approved in an active program at write time, so a click through a
  code banned in another process (inside its TTL) is never recorded, let alone billed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from coalition import clock

log = logging.getLogger(__name__)

CODE_TTL_SECONDS = 5.0
MAX_CACHED_CODES = 100_000
MAX_BUFFERED_CLICKS = 200_000      # beyond this, with the database down, new clicks drop
SUB_ID_MAX = 100


@dataclass(frozen=True, slots=True)
class CodeTarget:
    """What a tracking code leads to. `trackable` is False for codes of pending,
    rejected or banned enrollments, suspended affiliates, and paused programs: those
    redirect to the landing page and record nothing."""

    enrollment_id: uuid.UUID
    program_id: uuid.UUID
    partner_id: uuid.UUID
    landing_url: str
    window_days: int
    trackable: bool

    def url_with_click(self, click_id: uuid.UUID) -> str:
        """The landing URL with click_id=<uuid> added to its query (before any #fragment)."""
        base, hash_mark, fragment = self.landing_url.partition("#")
        separator = "&" if "?" in base else "?"
        if base.endswith(("?", "&")):
            separator = ""
        return f"{base}{separator}click_id={click_id}{hash_mark}{fragment}"


_LOOKUP = """
SELECT e.id, e.program_id, e.partner_id, p.landing_url,
       e.status = 'approved' AND p.status = 'active' AND a.status = 'active' AS trackable,
       coalesce((SELECT t.attribution_window_days FROM affiliate_program_terms t
                  WHERE t.program_id = p.id AND t.effective_from <= $2
                  ORDER BY t.version DESC LIMIT 1), 30) AS window_days
  FROM affiliate_enrollments e
  JOIN affiliate_programs p ON p.id = e.program_id
  JOIN affiliates a ON a.id = e.affiliate_id
 WHERE e.code = $1
"""


class CodeCache:
    """code -> (CodeTarget | None, expiry), per process."""

    def __init__(self, ttl: float = CODE_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[CodeTarget | None, float]] = {}

    def get(self, code: str) -> tuple[bool, CodeTarget | None]:
        """(hit, target): a hit may be a cached None (unknown code)."""
        entry = self._entries.get(code)
        if entry is None or entry[1] < time.monotonic():
            return False, None
        return True, entry[0]

    def put(self, code: str, target: CodeTarget | None) -> None:
        if len(self._entries) >= MAX_CACHED_CODES:
            self._entries.clear()      # rare; cheaper than an LRU on every hit
        self._entries[code] = (target, time.monotonic() + self.ttl)

    def forget(self, code: str | None = None) -> None:
        """Drop one code, or (None) every code: a program's URL, status or terms changed."""
        if code is None:
            self._entries.clear()
        else:
            self._entries.pop(code, None)

    async def resolve(self, pool: asyncpg.Pool, code: str) -> CodeTarget | None:
        hit, target = self.get(code)
        if hit:
            return target
        row = await pool.fetchrow(_LOOKUP, code, clock.now()) if len(code) <= 40 else None
        target = CodeTarget(row["id"], row["program_id"], row["partner_id"],
                            row["landing_url"], row["window_days"],
                            row["trackable"]) if row else None
        self.put(code, target)
        return target


# One per process: programs.py drops entries on status changes.
CODES = CodeCache()


def hash_ip(secret: bytes, address: str) -> str:
    """HMAC-SHA256 of the client address: repeats can be counted, the address is not kept."""
    return hmac.new(secret, address.encode(), hashlib.sha256).hexdigest()


_INSERT = """
INSERT INTO affiliate_clicks (click_id, enrollment_id, program_id, partner_id, clicked_at,
                              ip_hash, user_agent, referrer, sub_id)
SELECT c.click_id, c.enrollment_id, e.program_id, e.partner_id, c.clicked_at, c.ip_hash,
       c.user_agent, c.referrer, c.sub_id
  FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
              $7::text[])
       AS c(click_id, enrollment_id, clicked_at, ip_hash, user_agent, referrer, sub_id)
  JOIN affiliate_enrollments e ON e.id = c.enrollment_id AND e.status = 'approved'
  JOIN affiliate_programs p ON p.id = e.program_id AND p.status = 'active'
ON CONFLICT (click_id) DO NOTHING
"""

ClickRow = tuple[uuid.UUID, uuid.UUID, datetime, str, str, str, str | None]


class ClickRecorder:
    """Buffers clicks in memory and writes them in batches (see the module docstring).
    `await flush()` writes everything recorded so far; attribution calls it when a
    click id it is given is not in the table yet."""

    def __init__(self, pool: asyncpg.Pool, secret: str, *, interval: float = 0.2,
                 batch: int = 500) -> None:
        self.pool = pool
        self.secret = secret.encode()
        self.interval = interval
        self.batch = batch
        self.written = 0                 # rows inserted since start (for tests and benches)
        self._buffer: list[ClickRow] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def record(self, target: CodeTarget, address: str, user_agent: str, referrer: str,
               sub_id: str | None) -> uuid.UUID:
        """Queue one click; returns its click id. Never touches the database."""
        click_id = uuid.uuid4()
        if len(self._buffer) >= MAX_BUFFERED_CLICKS:
            log.error("click buffer full (database not answering?): click not recorded")
            return click_id
        self._buffer.append((click_id, target.enrollment_id, clock.now(),
                             hash_ip(self.secret, address), user_agent[:500], referrer[:1000],
                             sub_id[:SUB_ID_MAX] if sub_id else None))
        if len(self._buffer) >= self.batch:
            self._wake.set()
        return click_id

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def flush(self) -> int:
        """Write every buffered click now; returns the rows inserted. On a database error
        the clicks go back to the buffer for the next attempt, and the error is raised."""
        async with self._lock:
            rows, self._buffer = self._buffer, []
            if not rows:
                return 0
            columns = list(zip(*rows, strict=True))
            try:
                status = await self.pool.execute(_INSERT, *columns)
            except BaseException:
                self._buffer[:0] = rows
                raise
            inserted = int(status.rsplit(" ", 1)[-1])
            self.written += inserted
            return inserted

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="click-recorder")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("writing clicks failed; retrying on the next tick")
                await asyncio.sleep(self.interval)

    async def close(self) -> None:
        """Stop the background task and write what is left (the app's shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:
            # The rest of the shutdown must still run; say what could not be kept.
            log.exception("shutting down with %d clicks that could not be written",
                          len(self._buffer))


# What domain code (attribution) takes to make sure buffered clicks are written.
Flush = Callable[[], Awaitable[int]]
