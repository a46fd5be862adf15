"""A Litestar session store in PostgreSQL: sessions survive restarts and are shared by
every API process."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import asyncpg
from litestar.stores.base import Store


def _seconds(value: int | timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class PostgresSessionStore(Store):
    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool = pool

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None
                  ) -> None:
        data = value.encode() if isinstance(value, str) else value
        await self._pool().execute(
            "INSERT INTO web_sessions (key, value, expires_at) VALUES ($1, $2, now() + "
            "make_interval(secs => $3)) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,"
            " expires_at = EXCLUDED.expires_at", key, data, _seconds(expires_in))

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        if renew_for is not None:
            return await self._pool().fetchval(
                "UPDATE web_sessions SET expires_at = now() + make_interval(secs => $2)"
                " WHERE key = $1 AND (expires_at IS NULL OR expires_at > now())"
                " RETURNING value", key, _seconds(renew_for))
        return await self._pool().fetchval(
            "SELECT value FROM web_sessions WHERE key = $1"
            " AND (expires_at IS NULL OR expires_at > now())", key)

    async def delete(self, key: str) -> None:
        await self._pool().execute("DELETE FROM web_sessions WHERE key = $1", key)

    async def delete_all(self) -> None:
        await self._pool().execute("DELETE FROM web_sessions")

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        seconds = await self._pool().fetchval(
            "SELECT extract(epoch FROM expires_at - now())::int FROM web_sessions"
            " WHERE key = $1", key)
        return seconds
