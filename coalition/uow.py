"""The unit of work: every change runs in one `Tx`, on one connection, in one transaction.

A use case is `async def f(tx: Tx, ...)` in the domain package that owns the concept.
Its caller (an HTTP handler, a job, a CLI command) never opens a transaction: it runs
the use case through `Database.run`, which gives it a Tx and commits when it returns, or
rolls everything back when it raises. What a use case writes — ledger postings, ORM
rows, the audit row that says who did it — therefore commits together or not at all.

A Tx carries:
- `conn`, the asyncpg connection (the ledger's posting functions, hand-written SQL);
- `session()`, an ORM session bound to the same connection and transaction, made on
  first use (the hot paths never ask, so they never pay for it);
- `partner_id` and `actor`: who is acting, for the audit row and for row-level security;
  with `scoped=True` the transaction runs as `coalition_tenant` for that partner
  (tenants/scope.py), logged in as `coalition_tenant_login`;
- `audit()`, which writes the audit row in the same transaction;
- `after_commit()`, for what may only happen once the change is durable (a cache
  invalidation, an email).

One-statement use cases (the ledger's posting functions, the purchase fast path) are
marked with `@one_statement`: their writes are a single statement, which PostgreSQL
runs as its own transaction, so BEGIN and COMMIT would be two round trips for nothing.
Their Tx is not in a transaction; `audit()` and `session()` refuse there.

A Tx is independent of any request, so a batching layer can run several requests' use
cases in one Tx (one BEGIN/COMMIT for the batch) without touching them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from coalition.db import nothing_sent

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
UseCase = Callable[Concatenate["Tx", P], Awaitable[R]]

# The same statement tenants/scope.py runs: role and partner, both transaction-local.
_SCOPE = ("SELECT set_config('role', 'coalition_tenant', true),"
          " set_config('coalition.partner_id', $1, true)")
_AUDIT = ("INSERT INTO audit_log (actor_user_id, actor, partner_id, action, target, details)"
          " VALUES ($1, $2, $3, $4, $5, $6::jsonb)")


@dataclass(frozen=True)
class Actor:
    """Who acts: a signed-in user (`user_id` set), a partner's API client, or the
    platform itself (a job: `Actor.system("payments")`)."""

    label: str
    user_id: uuid.UUID | None = None

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(label)


SYSTEM = Actor.system()


def one_statement(use_case: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Mark a use case whose writes are one statement (see the module's docstring)."""
    use_case.one_statement = True  # type: ignore[attr-defined]
    return use_case


def own_transactions(use_case: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Mark a use case that commits in steps of its own: a periodic job draining a backlog
    in batches that each commit alone (so a long backlog never holds locks for long), a
    check that takes its own snapshot. It runs outside a transaction, as a one-statement
    use case does, and like one it runs once more on another connection when its
    connection was found broken before a statement was sent: only for idempotent work."""
    return one_statement(use_case)


class OutsideTransaction(RuntimeError):
    """audit() or session() in a one-statement Tx: its write would commit on its own."""


@dataclass(eq=False)
class Tx:
    conn: asyncpg.Connection
    partner_id: uuid.UUID | None = None
    actor: Actor = SYSTEM
    in_transaction: bool = True
    _orm: _BorrowingEngine | None = None
    _session: AsyncSession | None = None
    _after_commit: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)

    async def session(self) -> AsyncSession:
        """The ORM session on this Tx's connection, made on first use. Its commit()
        only releases a savepoint: the Tx commits. Its rollback() undoes what the
        session did since its last commit, nothing of the rest of the Tx."""
        if self._session is None:
            if not self.in_transaction:
                raise OutsideTransaction("a one-statement use case has no ORM session")
            if self._orm is None:
                raise RuntimeError("this Database was made without an ORM URL")
            self._session = await self._orm.session_on(self.conn)
        return self._session

    async def audit(self, action: str, *, target: str | None = None,
                    partner_id: uuid.UUID | None = None, actor: Actor | None = None,
                    **details: object) -> None:
        """Who did what, in this Tx: the audit row commits with the change or not at
        all. The partner defaults to the Tx's."""
        if not self.in_transaction:
            raise OutsideTransaction("an audit row needs the change's transaction")
        who = actor or self.actor
        await self.conn.execute(_AUDIT, who.user_id, who.label,
                                partner_id if partner_id is not None else self.partner_id,
                                action, target, json.dumps(details, default=str))

    def savepoint(self) -> Any:
        """A nested block: what fails inside is undone alone, the Tx goes on."""
        return self.conn.transaction()

    def after_commit(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        """Run once the Tx committed (never if it rolls back); a failure is logged."""
        self._after_commit.append(callback)

    async def _finish(self) -> None:
        if self._session is not None:
            await self._session.commit()  # flushes what is pending (a savepoint release)
            await self._close_session()

    async def _close_session(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
            await session.info["borrowed"].close()

    async def _run_after_commit(self) -> None:
        for callback in self._after_commit:
            try:
                result = callback()
                if result is not None:
                    await result
            except Exception:
                log.exception("after-commit callback failed")


class Database:
    """The connections every use case runs on: the ledger pool (the owner's login) and,
    for tenant-scoped work, a pool logged in as coalition_tenant_login."""

    def __init__(self, pool: asyncpg.Pool, *, tenant_pool: asyncpg.Pool | None = None,
                 orm_url: str | None = None) -> None:
        self.pool = pool
        self.tenant_pool = tenant_pool
        self._orm = _BorrowingEngine(orm_url) if orm_url else None

    async def close(self) -> None:
        if self._orm is not None:
            await self._orm.dispose()

    @asynccontextmanager
    async def begin(self, *, partner_id: uuid.UUID | None = None, scoped: bool = False,
                    actor: Actor = SYSTEM, transaction: bool = True) -> AsyncIterator[Tx]:
        """A Tx: committed when the block ends, rolled back when it raises."""
        if scoped and partner_id is None:
            raise ValueError("a tenant-scoped Tx needs the partner")
        pool = self.tenant_pool if scoped and self.tenant_pool is not None else self.pool
        conn, block = await _open(pool, transaction)
        tx = Tx(conn, partner_id, actor, transaction, self._orm)
        try:
            if block is None:
                yield tx
            else:
                try:
                    if scoped:
                        await conn.execute(_SCOPE, str(partner_id))
                    yield tx
                    await tx._finish()
                except BaseException:
                    try:
                        await tx._close_session()
                    finally:
                        if not conn.is_closed():
                            await block.rollback()
                    raise
                await block.commit()
        finally:
            await pool.release(conn)
        await tx._run_after_commit()

    def acting(self, actor: Actor, *, partner_id: uuid.UUID | None = None,
               scoped: bool = False) -> Runner:
        """Run use cases as `actor`, for `partner_id` (under row-level security with
        `scoped`)."""
        return Runner(self, actor, partner_id, scoped)

    async def run(self, use_case: UseCase[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one use case in its own Tx, as the platform (no user, no partner)."""
        return await Runner(self).run(use_case, *args, **kwargs)


@dataclass(frozen=True)
class Runner:
    """Who a caller's use cases run as; `run` gives each its own Tx."""

    db: Database
    actor: Actor = SYSTEM
    partner_id: uuid.UUID | None = None
    scoped: bool = False

    def begin(self, *, transaction: bool = True) -> Any:
        return self.db.begin(partner_id=self.partner_id, scoped=self.scoped,
                             actor=self.actor, transaction=transaction)

    async def run(self, use_case: UseCase[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Commit what the use case wrote when it returns; roll all of it back when it
        raises. A one-statement use case whose statement never reached the server (a
        pooled connection found broken, see coalition/db.py `nothing_sent`)
        runs once more on another connection: nothing of it was written."""
        single = getattr(use_case, "one_statement", False)
        try:
            async with self.begin(transaction=not single) as tx:
                return await use_case(tx, *args, **kwargs)
        except (asyncpg.InternalClientError, asyncpg.InterfaceError) as exc:
            if not (single and nothing_sent(exc)):
                raise
            log.info("running again on another connection a use case never sent: %s", exc)
        async with self.begin(transaction=False) as tx:
            return await use_case(tx, *args, **kwargs)


async def _open(pool: asyncpg.Pool, transaction: bool
                ) -> tuple[asyncpg.Connection, Any]:
    """A connection, in a started transaction when asked. A pooled connection found
    broken before BEGIN was sent (a database restart) is replaced once."""
    for attempt in (1, 2):
        conn = await pool.acquire()
        if not transaction:
            return conn, None
        block = conn.transaction()
        try:
            await block.start()
        except (asyncpg.InternalClientError, asyncpg.InterfaceError) as exc:
            await pool.release(conn)
            if attempt == 2 or not nothing_sent(exc):
                raise
            continue
        except BaseException:
            await pool.release(conn)
            raise
        return conn, block
    raise AssertionError("unreachable")


class _TextJsonDialect(PGDialect_asyncpg):
    """SQLAlchemy's asyncpg dialect with JSON crossing the driver as text, as it does
    on the raw pool: SQLAlchemy's asyncpg dialect would install json/jsonb codecs on
    the connection it connects, and the raw SQL sharing the Tx would then read JSON as
    dicts where it expects text. Here the ORM encodes and decodes JSON itself."""

    supports_native_json_deserialization = False
    supports_statement_cache = True

    def on_connect(self) -> None:
        return None


registry.register("postgresql.asyncpg_textjson", __name__, "_TextJsonDialect")


class _BorrowingEngine:
    """An ORM engine with no connections of its own: each session borrows the Tx's
    asyncpg connection (SQLAlchemy's asyncpg dialect accepts a connection factory)."""

    def __init__(self, url: str) -> None:
        self._lending: contextvars.ContextVar[asyncpg.Connection] = contextvars.ContextVar(
            "lending")

        async def borrow() -> _Borrowed:
            return _Borrowed(self._lending.get())

        url = make_url(url).set(drivername="postgresql+asyncpg_textjson")
        self.engine: AsyncEngine = create_async_engine(url, async_creator=borrow,
                                                       poolclass=NullPool)

    async def session_on(self, conn: asyncpg.Connection) -> AsyncSession:
        token = self._lending.set(conn)
        try:
            bound = await self.engine.connect()
        finally:
            self._lending.reset(token)
        session = AsyncSession(bind=bound, expire_on_commit=False)
        session.info["borrowed"] = bound
        return session

    async def dispose(self) -> None:
        await self.engine.dispose()


class _Borrowed:
    """The Tx's connection as SQLAlchemy sees it: everything but closing it, which is
    the pool's business."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def close(self, *args: Any, **kwargs: Any) -> None:
        return None

    def terminate(self) -> None:
        return None
