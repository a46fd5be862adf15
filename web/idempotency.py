"""Idempotency for writes that go through the ORM (the ledger's SQL functions handle
their own). Both use the same table and SQL helpers, so the semantics match: a retry
with the same key and body replays the stored response, a different body is a 409, and
a failed request stores nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec
from litestar import Request, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tenants.auth import PartnerPrincipal
from web.problems import PROBLEM_MEDIA_TYPE


def request_hash(request: Request, body: object) -> str:
    canonical = f"{request.method} {request.url.path}\n".encode() + msgspec.json.encode(body)
    return hashlib.sha256(canonical).hexdigest()


def stored_response(status: int, body: str) -> Response:
    media_type = PROBLEM_MEDIA_TYPE if status >= 400 else "application/json"
    return Response(content=body.encode(), status_code=status, media_type=media_type)


async def run_idempotent(
    session: AsyncSession,
    principal: PartnerPrincipal,
    key: str,
    fingerprint: str,
    action: Callable[[], Awaitable[tuple[int, object]]],
) -> Response:
    params = {"p": principal.partner_id, "k": key, "h": fingerprint}
    claim = (
        await session.execute(
            text("SELECT claimed, status, body FROM idempotency_claim(:p, :k, :h)"), params
        )
    ).one()
    if not claim.claimed:
        await session.commit()
        return stored_response(claim.status, claim.body)
    try:
        status, payload = await action()
    except BaseException:
        await session.rollback()
        raise
    body = msgspec.json.encode(payload).decode()
    await session.execute(
        text("SELECT idempotency_finish(:p, :k, :s, :b)"), {**params, "s": status, "b": body}
    )
    await session.commit()
    return stored_response(status, body)


async def run_idempotent_on(
    conn: asyncpg.Connection,
    principal: PartnerPrincipal,
    key: str,
    fingerprint: str,
    action: Callable[[], Awaitable[tuple[int, object]]],
) -> Response:
    """run_idempotent for writes on a raw asyncpg connection: the key's claim, the
    action's writes and the stored response commit together in one transaction, and an
    exception from the action rolls all of them back (the key stays free for a retry)."""
    args = (principal.partner_id, key, fingerprint)
    async with conn.transaction():
        claim = await conn.fetchrow(
            "SELECT claimed, status, body FROM idempotency_claim($1, $2, $3)", *args)
        if not claim["claimed"]:
            return stored_response(claim["status"], claim["body"])
        status, payload = await action()
        body = msgspec.json.encode(payload).decode()
        await conn.execute("SELECT idempotency_finish($1, $2, $3, $4)",
                           principal.partner_id, key, status, body)
    return stored_response(status, body)
