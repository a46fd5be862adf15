"""Bearer-token verification for the partner API."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import asyncpg

from coalition import clock
from coalition.db import Listener
from tenants.service import hash_secret

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartnerPrincipal:
    partner_id: uuid.UUID
    partner_name: str
    partner_status: str
    client_id: str
    scopes: frozenset[str]
    expires_at: float
    # Set for a member-scoped token (a partner app acting for one member with consent).
    member_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None

    @property
    def actor(self) -> str:
        if self.member_id is not None:
            return f"client:{self.client_id} for member:{self.member_id}"
        return f"client:{self.client_id}"


_LOOKUP = """
SELECT t.partner_id, p.name, p.status, c.client_id, t.scope, t.member_id, t.user_id,
       extract(epoch FROM t.expires_at)::float8 AS expires_at
  FROM oauth_tokens t
  JOIN oauth_clients c ON c.id = t.client_pk
  JOIN partners p ON p.id = t.partner_id
 WHERE t.access_token_hash = $1 AND t.revoked_at IS NULL AND c.revoked_at IS NULL
   AND t.expires_at > $2
"""


AUTH_CHANNEL = "coalition_auth"


class TokenVerifier:
    """Resolves a bearer token to its partner, keeping the database look-up off the hot
    path. A verified token is trusted for at most `cache_seconds` and never past its
    expiry. Revocations and partner status changes reach every process at once: a
    trigger sends NOTIFY coalition_auth and `listen` clears the cache. While the
    listening connection is down, nothing is cached; it reconnects by itself after a
    database restart (coalition.db.Listener), and caching resumes with an empty cache."""

    def __init__(self, pool: asyncpg.Pool, cache_seconds: int, max_entries: int = 50_000) -> None:
        self.pool = pool
        self.cache_seconds = cache_seconds
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, PartnerPrincipal]] = {}
        # Bumped by every forget_all: a look-up that raced a notification (or a
        # reconnection) must not cache what it read before it.
        self._generation = 0
        self.listener = Listener(AUTH_CHANNEL, self.forget_all)

    async def listen(self, dsn: str) -> None:
        await self.listener.start(dsn)

    async def close(self) -> None:
        await self.listener.close()

    @property
    def caching(self) -> bool:
        return self.cache_seconds > 0 and self.listener.connected

    async def verify(self, token: str) -> PartnerPrincipal | None:
        digest = hash_secret(token)
        now = clock.now().timestamp()
        cached = self._cache.get(digest) if self.caching else None
        if cached and cached[0] > now:
            return cached[1]
        generation = self._generation
        row = await self.pool.fetchrow(_LOOKUP, digest, clock.now())
        if row is None:
            self._cache.pop(digest, None)
            return None
        principal = PartnerPrincipal(
            partner_id=row["partner_id"],
            partner_name=row["name"],
            partner_status=row["status"],
            client_id=row["client_id"],
            scopes=frozenset(row["scope"].split()),
            expires_at=row["expires_at"],
            member_id=row["member_id"],
            user_id=row["user_id"],
        )
        if self.caching and generation == self._generation:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[digest] = (min(now + self.cache_seconds, principal.expires_at),
                                   principal)
        return principal

    def forget_all(self) -> None:
        self._generation += 1
        self._cache.clear()
