"""Bearer-token verification for the partner API."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import asyncpg

from tenants.service import hash_secret


@dataclass(frozen=True)
class PartnerPrincipal:
    partner_id: uuid.UUID
    partner_name: str
    partner_status: str
    client_id: str
    scopes: frozenset[str]
    expires_at: float

    @property
    def actor(self) -> str:
        return f"client:{self.client_id}"


_LOOKUP = """
SELECT t.partner_id, p.name, p.status, c.client_id, t.scope,
       extract(epoch FROM t.expires_at)::float8 AS expires_at
  FROM oauth_tokens t
  JOIN oauth_clients c ON c.id = t.client_pk
  JOIN partners p ON p.id = t.partner_id
 WHERE t.access_token_hash = $1 AND t.revoked_at IS NULL AND c.revoked_at IS NULL
   AND t.expires_at > now()
"""


class TokenVerifier:
    """Resolves a bearer token to its partner. A verified token is trusted for at most
    `cache_seconds` (and never past its expiry), which keeps the lookup off the hot path
    while a revocation still takes effect within seconds."""

    def __init__(self, pool: asyncpg.Pool, cache_seconds: int, max_entries: int = 50_000) -> None:
        self.pool = pool
        self.cache_seconds = cache_seconds
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, PartnerPrincipal]] = {}

    async def verify(self, token: str) -> PartnerPrincipal | None:
        digest = hash_secret(token)
        now = time.time()
        cached = self._cache.get(digest)
        if cached and cached[0] > now:
            return cached[1]
        row = await self.pool.fetchrow(_LOOKUP, digest)
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
        )
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[digest] = (min(now + self.cache_seconds, principal.expires_at), principal)
        return principal

    def forget_all(self) -> None:
        self._cache.clear()
