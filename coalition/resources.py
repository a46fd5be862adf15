"""The connections a process works on, made in one place and closed in one place.

A server (web/lifespan.py) opens all of them: the ledger pool (the owner's login), the
tenant pool and engine (logged in as coalition_tenant_login, so under row-level security
whatever their SQL does, RESET ROLE included: tenants/scope.py), the ORM engines, a small
synchronous engine for Authlib, and the `Database` every use case runs on
(coalition/uow.py). A command or a job opens just a `Database` (`open_database`).
Every connection's session time zone is UTC: what the platform stores and compares is
UTC, and the coalition's own time zone is applied where a date is shown or bucketed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import sessionmaker

from coalition.config import Settings
from coalition.db import (
    TENANT_LOGIN_ROLE,
    DatabaseUrl,
    create_engine,
    create_ledger_pool,
    create_sessionmaker,
)
from coalition.uow import Database, Tx, one_statement

UTC_SESSION = {"timezone": "UTC"}


@dataclass
class Resources:
    url: DatabaseUrl
    tenant_url: DatabaseUrl
    pool: asyncpg.Pool
    tenant_pool: asyncpg.Pool
    # ORM sessions of their own, outside any Tx: for tests and scripts that set state
    # up (the app's use cases get theirs from the Tx, on the Tx's connection).
    engine: AsyncEngine
    sessionmaker: async_sessionmaker
    sync_engine: sqlalchemy.Engine
    sync_sessions: sessionmaker
    db: Database

    async def close(self) -> None:
        await self.db.close()
        await self.tenant_pool.close()
        await self.pool.close()
        await self.engine.dispose()
        self.sync_engine.dispose()


async def open_resources(settings: Settings, url: DatabaseUrl) -> Resources:
    """Everything a server process works on, sized by the settings; `close()` it."""
    tenant_url = (DatabaseUrl(settings.tenant_database_url) if settings.tenant_database_url
                  else url.with_user(TENANT_LOGIN_ROLE))
    engine = create_engine(url, settings.orm_pool_size, server_settings=UTC_SESSION)
    sync_engine = sqlalchemy.create_engine(url.sqlalchemy_sync, pool_size=2,
                                           pool_pre_ping=True,  # survives a DB restart
                                           connect_args={"options": "-c timezone=UTC"})
    pool = await create_ledger_pool(url, settings.ledger_pool_size, server_settings=UTC_SESSION)
    tenant_pool = await create_ledger_pool(tenant_url, settings.ledger_pool_size,
                                           server_settings=UTC_SESSION)
    return Resources(
        url=url, tenant_url=tenant_url, pool=pool, tenant_pool=tenant_pool, engine=engine,
        sessionmaker=create_sessionmaker(engine), sync_engine=sync_engine,
        sync_sessions=sessionmaker(sync_engine, expire_on_commit=False),
        # Every use case runs in one Tx on these (coalition/uow.py).
        db=Database(pool, tenant_pool=tenant_pool, orm_url=url.sqlalchemy_async))


@asynccontextmanager
async def open_database(url: DatabaseUrl, size: int = 2) -> AsyncIterator[Database]:
    """A small `Database` for a command, a job or the demo loader, closed on leaving."""
    pool = await create_ledger_pool(url, size, server_settings=UTC_SESSION)
    db = Database(pool, orm_url=url.sqlalchemy_async)
    try:
        yield db
    finally:
        await db.close()
        await pool.close()


@one_statement
async def ping(tx: Tx) -> None:
    """The database answers (the health check)."""
    await tx.conn.fetchval("SELECT 1")
