"""Password work off the event loop: argon2id hashing and verifying, and the strength
rules (length, the email, zxcvbn) that a new password must pass.

An argon2id hash takes about 200 ms of CPU; run on the event loop it stalls every other
request the process serves, the partner API included (4 logins/s took /health p99 from
59 ms to 903 ms). So each piece of password work runs in a worker thread (argon2-cffi
releases the GIL while it hashes), and at most `password_hash_concurrency` of them at
once: on two cores one hash at a time, on one core (one lane, below), leaves a core for
the API. Further work queues; a request that would wait longer than
`password_hash_max_wait_seconds` is refused with 503 and Retry-After rather than left to
time out in a pile-up of logins.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

from coalition.errors import DomainError

T = TypeVar("T")

# argon2id, 64 MiB and 3 passes as the library recommends, but one lane: libargon2 runs
# each lane in a thread of its own, so its default four lanes let "one hash at a time"
# take every core of a two-core machine in bursts, and the API stalls behind them. One
# lane costs the same CPU on one core (still above OWASP's argon2id minimums). Hashes
# with four lanes still verify, and are re-hashed at the next login (needs_rehash).
HASHER = PasswordHasher(parallelism=1)
DEFAULT_MEMORY_KIB, DEFAULT_TIME_COST = HASHER.memory_cost, HASHER.time_cost
# OWASP ASVS V2.1.1: at least 12 characters.
MIN_PASSWORD_LENGTH = 12
# zxcvbn's scale: 0-2 fall to an online or a throttled offline attack within days;
# 3 is "safely unguessable: moderate protection from offline slow-hash scenario".
MIN_STRENGTH_SCORE = 3
# zxcvbn refuses longer input, and its time grows faster than the length: the first 72
# characters are judged, which any real passphrase's strength shows in.
ZXCVBN_MAX_LENGTH = 72
# A local part this short ("jo@…") is in too many good passwords to forbid it.
MIN_LOCAL_PART_CHECKED = 3


class PasswordWorkBusy(DomainError):
    """Too much password work is queued: the caller answers 503 with Retry-After."""

    status = 503

    def __init__(self, retry_after: int) -> None:
        super().__init__("password-work-busy", "Too busy",
                         "Too many people are logging in or setting passwords right now. "
                         f"Wait {retry_after} seconds and try again.", retry_after=retry_after)
        self.retry_after = retry_after


class PasswordWork:
    """Runs password work in a thread pool, `concurrency` at a time, refusing work that
    waits longer than `max_wait_seconds` for its turn."""

    def __init__(self, concurrency: int, max_wait_seconds: float) -> None:
        if concurrency < 1:
            raise ValueError("password hash concurrency must be at least 1")
        if max_wait_seconds <= 0:
            raise ValueError("password hash max wait must be positive")
        self.concurrency = concurrency
        self.max_wait_seconds = max_wait_seconds
        self._executor = ThreadPoolExecutor(max_workers=concurrency,
                                            thread_name_prefix="password-work")
        # asyncio primitives belong to one loop; the CLI and tests run several in turn.
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())

    async def run(self, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` in a worker thread once a slot is free; PasswordWorkBusy if none
        frees within the wait limit."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.concurrency)
        try:
            async with asyncio.timeout(self.max_wait_seconds):
                await slots.acquire()
        except TimeoutError:
            raise PasswordWorkBusy(max(1, math.ceil(self.max_wait_seconds))) from None
        future = loop.run_in_executor(self._executor, work, *args)
        # The slot is freed when the thread is done, not when the request gives up: a
        # cancelled request's hash still occupies a core until it finishes.
        future.add_done_callback(lambda _: slots.release())
        return await asyncio.shield(future)

    def close(self) -> None:
        self._executor.shutdown(wait=False)


_work: PasswordWork | None = None


def set_cost(memory_kib: int, time_cost: int) -> None:
    """argon2id's memory and passes for new hashes (a stored hash carries its own, and
    one made with others is re-hashed at the next login). Lower them only where speed
    matters more than an attacker's cost: the test suite, which hashes some hundreds of
    times (tests/conftest.py; tests/test_passwords.py puts the defaults back)."""
    global HASHER
    if (memory_kib, time_cost) != (HASHER.memory_cost, HASHER.time_cost):
        HASHER = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)


def configure(concurrency: int, max_wait_seconds: float,
              memory_kib: int = DEFAULT_MEMORY_KIB, time_cost: int = DEFAULT_TIME_COST
              ) -> PasswordWork | None:
    """Use these limits and this cost from now on (the app sets them from its settings at
    start); returns the previous PasswordWork, which keeps serving work already queued."""
    global _work
    set_cost(memory_kib, time_cost)
    previous, _work = _work, PasswordWork(concurrency, max_wait_seconds)
    return previous


def restore(previous: PasswordWork | None) -> None:
    """Put back what configure() returned."""
    global _work
    _work = previous


def current() -> PasswordWork:
    """The limits in force; unconfigured (the CLI, the demo loader), from the settings."""
    global _work
    if _work is None:
        from coalition.config import get_settings

        settings = get_settings()
        set_cost(settings.password_hash_memory_kib, settings.password_hash_time_cost)
        _work = PasswordWork(settings.password_hash_concurrency,
                             settings.password_hash_max_wait_seconds)
    return _work


def _weak(detail: str) -> DomainError:
    return DomainError("validation-error", "Password not accepted", detail, status=400,
                       field="password")


def strength_problem(password: str, email: str | None = None) -> DomainError | None:
    """Why `password` may not be set for the account `email`, or None. CPU work (zxcvbn
    takes 1-45 ms): call it through check_strength, off the event loop."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return _weak(f"The password must be at least {MIN_PASSWORD_LENGTH} characters long.")
    lowered = password.casefold()
    hints: list[str] = []
    if email:
        address = email.strip().casefold()
        local = address.partition("@")[0]
        if lowered == address or (len(local) >= MIN_LOCAL_PART_CHECKED and local in lowered):
            return _weak("The password must not be or contain your email address or the "
                         "part of it before the @.")
        hints = [address, local]
    result = zxcvbn(password[:ZXCVBN_MAX_LENGTH], user_inputs=hints)
    if result["score"] < MIN_STRENGTH_SCORE:
        warning = result["feedback"].get("warning") or ""
        return _weak("The password is too easy to guess" + (f" ({warning.rstrip('.')})"
                                                             if warning else "")
                     + ": use a longer phrase of several uncommon words.")
    return None


def _checked(password: str, email: str | None) -> None:
    if (problem := strength_problem(password, email)) is not None:
        raise problem


def _checked_hash(password: str, email: str | None) -> str:
    _checked(password, email)
    return HASHER.hash(password)


def _verify(stored: str, password: str) -> bool:
    try:
        return HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


async def check_strength(password: str, email: str | None = None) -> None:
    """Raises DomainError (field `password`) unless the password may be set."""
    await current().run(_checked, password, email)


async def hash_new_password(password: str, email: str | None = None) -> str:
    """The argon2id hash of a password being set, after the strength rules: one turn in
    the queue for both."""
    return await current().run(_checked_hash, password, email)


async def hash_password(password: str) -> str:
    """The argon2id hash, without the rules: for re-hashing a password already in use."""
    return await current().run(HASHER.hash, password)


async def verify_password(stored: str, password: str) -> bool:
    return await current().run(_verify, stored, password)


def needs_rehash(stored: str) -> bool:
    """Cheap (it parses the hash's parameters), so it stays on the loop."""
    return HASHER.check_needs_rehash(stored)
