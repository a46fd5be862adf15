"""Maintenance: purge records past their retention (the `maintenance` periodic job of
web/jobs.py, run by coalition/jobs.py `run_job`: each DELETE commits alone)."""

from __future__ import annotations

import logging

import asyncpg

from coalition.config import Settings
from tenants import sessions

log = logging.getLogger(__name__)


async def maintenance_pass(conn: asyncpg.Connection, settings: Settings) -> dict[str, int]:
    keys = await conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
        settings.idempotency_retention_hours,
    )
    # A used refresh token is kept until it would have expired: presenting it again is how
    # a stolen token is detected (its family is revoked).
    tokens = await conn.execute(
        "DELETE FROM oauth_tokens WHERE expires_at < now() - interval '1 day'"
        " AND (refresh_expires_at IS NULL OR refresh_expires_at < now() - interval '1 day')")
    codes = await conn.execute(
        "DELETE FROM oauth_authorization_codes WHERE expires_at < now() - interval '1 day'")
    # Expired portal sessions and old login attempts: nothing else removes them.
    purged = await sessions.purge(conn)
    return {"idempotency_keys": int(keys.split()[-1]), "oauth_tokens": int(tokens.split()[-1]),
            "oauth_authorization_codes": int(codes.split()[-1]), **purged}
