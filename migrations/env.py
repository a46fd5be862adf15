"""Alembic environment (async, asyncpg). The URL comes from the caller's config
(`coalition db upgrade`, the tests) or from the settings."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import coalition.affiliates.models
import coalition.commerce
import coalition.models
import coalition.rewards.models
import coalition.rules.models
import coalition.segments.models
import coalition.tiers.models  # noqa: F401
import settlement.models
import settlement.payments
import settlement.statement_models  # noqa: F401
import tenants.models  # noqa: F401
from coalition.config import get_settings
from coalition.db import Base, DatabaseUrl, resolve_database_url

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    configured = config.get_main_option("sqlalchemy.url")
    if configured:
        return DatabaseUrl(configured).sqlalchemy_async
    settings = get_settings()
    return resolve_database_url(settings.database_url, settings.data_dir).sqlalchemy_async


def _ours(name: str | None, type_: str, _parent_names: object) -> bool:
    """procrastinate's tables are its own schema (migration 0014), not our models."""
    return not (type_ == "table" and name is not None and name.startswith("procrastinate_"))


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      compare_type=True, include_name=_ours)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
