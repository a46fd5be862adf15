"""Rate limits kept in PostgreSQL (`login_attempts`, one row per counted request, its
`kind` saying which limit): failed logins, requests that send an email (sign-up, password
reset, a new verification link) and failed OAuth client authentications. And who the
client is, behind the proxies the deployment trusts.

Every check counts and records in one transaction that first takes
`pg_advisory_xact_lock` on each key it counts by (in sorted order, so two requests never
wait on each other's second key): parallel requests for one key take their turn, and each
sees what the ones before it wrote, where a count and a separate insert let 16 parallel
guesses through a limit of 5. Transaction-level locks hold nothing past the transaction,
so this works through a transaction-mode pooler (pgbouncer) too.

Failed logins do not lock anyone out. After MAX_FAILURES_* failures for one email (or
from one address) the next attempt waits FAILURE_DELAY_BASE after the last failure, and
the wait doubles with every further failure up to FAILURE_DELAY_CAP: whoever guesses
gains a handful of guesses an hour, and whoever knows the password gets in once the
delay is over, however many wrong ones someone else sent. Refused attempts are not
recorded, so they do not lengthen the delay. A correct password for an email starts its
count afresh."""

from __future__ import annotations

import ipaddress
import math
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy import ColumnElement, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.errors import DomainError
from coalition.uow import Tx
from tenants.models import LoginAttempt

COLUMN_LENGTH = 320             # login_attempts.email
ADDRESS_LENGTH = 64             # login_attempts.ip

# Logins: failures counted within THROTTLE_WINDOW (and, per email, since its last
# correct password).
THROTTLE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_EMAIL = 5
MAX_FAILURES_PER_IP = 20
FAILURE_DELAY_BASE = timedelta(seconds=30)
FAILURE_DELAY_CAP = timedelta(minutes=15)

# Requests that email someone: sign-ups, password resets, new verification links. Per
# kind, at most REQUESTS_PER_ADDRESS from one client address per ADDRESS_WINDOW (the
# setting COALITION_EMAIL_REQUESTS_PER_ADDRESS changes it) and REQUESTS_PER_TARGET to one
# email address per TARGET_WINDOW, so nobody can flood an inbox through the platform.
ADDRESS_WINDOW = timedelta(minutes=10)
REQUESTS_PER_ADDRESS = 5
TARGET_WINDOW = timedelta(hours=1)
REQUESTS_PER_TARGET = 3
EMAIL_REQUEST_KINDS = frozenset({"register", "forgot", "resend"})

# OAuth: failed client authentications per client id (/oauth/token, revoke, introspect).
OAUTH_CLIENT_KIND = "oauth-client"
OAUTH_CLIENT_WINDOW = timedelta(minutes=10)
OAUTH_CLIENT_FAILURES = 10


def seconds_until(moment: datetime) -> int:
    """Whole seconds from now until `moment`, at least 1: what Retry-After says."""
    return max(1, math.ceil((moment - clock.now()).total_seconds()))


def wait_text(seconds: int) -> str:
    """'45 seconds', '1 minute', '15 minutes': how long, as a person reads it."""
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class RateLimited(DomainError):
    """Too many requests of one kind: 429, Retry-After `retry_after` seconds."""

    status = 429

    def __init__(self, retry_after: int, slug: str = "too-many-requests",
                 title: str = "Too many requests",
                 detail: str = "Too many requests like this one") -> None:
        super().__init__(slug, title, f"{detail}. Wait {wait_text(retry_after)} and try "
                         "again.", retry_after=retry_after)
        self.retry_after = retry_after


async def lock(session: AsyncSession, *keys: str) -> None:
    """Take the transaction-level advisory lock of each key, in sorted order (one order
    for every caller, so none deadlocks); released at commit or rollback."""
    for key in sorted({_text(key) for key in keys}):
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                              {"k": key})


def _text(value: str) -> str:
    """What PostgreSQL's text can hold: without NUL characters, which it refuses."""
    return value.replace("\x00", "")


def _key(value: str) -> str:
    return _text(value).strip().lower()[:COLUMN_LENGTH]


async def _limit_reached_until(session: AsyncSession, kind: str, match: ColumnElement[bool],
                               limit: int, window: timedelta) -> datetime | None:
    """When the count of `kind` rows matching within `window` drops below `limit` again,
    or None if it is below already: the window after the limit-th most recent row."""
    nth = await session.scalar(
        select(LoginAttempt.created_at)
        .where(LoginAttempt.kind == kind, match,
               LoginAttempt.created_at > clock.now() - window)
        .order_by(LoginAttempt.created_at.desc()).offset(limit - 1).limit(1))
    return nth + window if nth is not None else None


async def count_email_request(session: AsyncSession, kind: str, email: str, ip: str,
                              per_address: int = REQUESTS_PER_ADDRESS) -> None:
    """Count one request of `kind` that may email `email`, from `ip`; raises RateLimited,
    recording nothing, past either limit. The caller commits (with the email it sends, or
    on its own when the answer must not tell whether an email went out)."""
    if kind not in EMAIL_REQUEST_KINDS:
        raise ValueError(f"unknown request kind {kind!r}")
    target, ip = _key(email), ip[:ADDRESS_LENGTH]
    await lock(session, f"{kind}:{target}", f"{kind}-ip:{ip}")
    until = [moment for moment in (
        await _limit_reached_until(session, kind, LoginAttempt.ip == ip, per_address,
                                   ADDRESS_WINDOW),
        await _limit_reached_until(session, kind, func.lower(LoginAttempt.email) == target,
                                   REQUESTS_PER_TARGET, TARGET_WINDOW)) if moment]
    if until:
        raise RateLimited(seconds_until(max(until)),
                          detail="Too many requests for this form from your network or for "
                          "this email address")
    session.add(LoginAttempt(kind=kind, email=target, ip=ip, succeeded=True,
                             created_at=clock.now()))
    await session.flush()


def failure_delay(failures: int, limit: int) -> timedelta | None:
    """How long after the last failure the next attempt waits, `failures` having been
    counted against a limit of `limit`: none below it, then FAILURE_DELAY_BASE doubling
    with each failure past it, never more than FAILURE_DELAY_CAP."""
    if failures < limit:
        return None
    doublings = min(failures - limit, 32)   # 2**32 times the base is far past the cap
    return min(FAILURE_DELAY_BASE * 2 ** doublings, FAILURE_DELAY_CAP)


async def _login_failures_wait(session: AsyncSession, match: ColumnElement[bool],
                               since: datetime, limit: int) -> datetime | None:
    count, last = (await session.execute(
        select(func.count(), func.max(LoginAttempt.created_at)).where(
            LoginAttempt.kind == "login", match, LoginAttempt.succeeded.is_(False),
            LoginAttempt.created_at > since))).one()
    delay = failure_delay(count, limit)
    return last + delay if delay is not None and last is not None else None


async def login_allowed_at(session: AsyncSession, email: str, ip: str) -> datetime | None:
    """Lock the email's and the address's login keys for this transaction and return when
    a password may be tried again, or None if it may be now. The caller then records the
    attempt (record_login) in the same transaction."""
    email, ip = _key(email), ip[:ADDRESS_LENGTH]
    await lock(session, f"login:{email}", f"login-ip:{ip}")
    window_start = clock.now() - THROTTLE_WINDOW
    by_email = func.lower(LoginAttempt.email) == email
    last_success = await session.scalar(
        select(func.max(LoginAttempt.created_at)).where(
            LoginAttempt.kind == "login", by_email, LoginAttempt.succeeded.is_(True),
            LoginAttempt.created_at > window_start))
    until = [moment for moment in (
        await _login_failures_wait(session, by_email, max(window_start, last_success)
                                   if last_success else window_start,
                                   MAX_FAILURES_PER_EMAIL),
        await _login_failures_wait(session, LoginAttempt.ip == ip, window_start,
                                   MAX_FAILURES_PER_IP)) if moment and moment > clock.now()]
    return max(until) if until else None


def record_login(session: AsyncSession, email: str, ip: str, succeeded: bool) -> None:
    """Keep a judged login attempt (committed by the caller) for the throttle."""
    session.add(LoginAttempt(kind="login", email=_text(email)[:COLUMN_LENGTH],
                             ip=_text(ip)[:ADDRESS_LENGTH], succeeded=succeeded,
                             created_at=clock.now()))


async def begin_client_authentication(tx: Tx, client_id: str, ip: str) -> int:
    """Before an OAuth endpoint authenticates `client_id`: raises RateLimited when
    OAUTH_CLIENT_FAILURES authentications failed for it within OAUTH_CLIENT_WINDOW;
    otherwise records a row counted as a failure until client_authenticated() says
    otherwise (committed with this Tx, before the endpoint runs), and returns its id.
    Counting the attempt before it is judged keeps parallel guesses within the limit
    without holding a lock while Authlib works."""
    session = await tx.session()
    key = _text(client_id)[:COLUMN_LENGTH]
    await lock(session, f"{OAUTH_CLIENT_KIND}:{key}")
    until = await _limit_reached_until(
        session, OAUTH_CLIENT_KIND,
        (LoginAttempt.email == key) & LoginAttempt.succeeded.is_(False),
        OAUTH_CLIENT_FAILURES, OAUTH_CLIENT_WINDOW)
    if until is not None:
        raise RateLimited(seconds_until(until), "slow_down", "Too many failed client "
                          "authentications", "Too many failed client authentications for "
                          "this client id")
    attempt = LoginAttempt(kind=OAUTH_CLIENT_KIND, email=key, ip=ip[:ADDRESS_LENGTH],
                           succeeded=False, created_at=clock.now())
    session.add(attempt)
    await session.flush()
    return attempt.id


async def client_authenticated(tx: Tx, attempt_id: int) -> None:
    """The client of begin_client_authentication()'s attempt did authenticate (whatever
    else its request got wrong): the attempt stops counting as a failure."""
    await (await tx.session()).execute(
        update(LoginAttempt).where(LoginAttempt.id == attempt_id).values(succeeded=True))


@lru_cache(maxsize=16)
def trusted_networks(spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """COALITION_TRUSTED_PROXIES parsed: comma-separated addresses and CIDR blocks."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False)
                 for part in spec.split(",") if part.strip())


def _address(text_: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = text_.strip()
    if value.startswith("[") and "]" in value:          # "[2001:db8::1]:443"
        value = value[1:value.index("]")]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: list[str], trusted: str) -> str:
    """The client's address: the connection's peer, unless the peer is a trusted proxy
    (`trusted`, as COALITION_TRUSTED_PROXIES); then, walking X-Forwarded-For (every such
    header, in order) from the right, the first address that is not a trusted proxy.
    Entries left of it were written by the client and are never believed. An entry that
    is not an address ends the walk at the proxy that passed it on."""
    if not peer:
        return "unknown"
    networks = trusted_networks(trusted)
    current = _address(peer)
    if current is None or not networks:
        return peer[:ADDRESS_LENGTH]
    hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
    while hops and any(current in network for network in networks):
        previous = _address(hops.pop())
        if previous is None:
            break
        current = previous
    return str(current)
