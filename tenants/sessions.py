"""Portal session security: how a session id is kept, ending a user's sessions when the
password changes, and purging what has expired.

The browser holds a session id; `web_sessions` holds only its SHA-256, so a copy of the
table (a backup, a replica) logs no one in. web/sessions.py is the Litestar store and
session backend built on this.

Session expiry is technical time: the store stamps and checks `expires_at` with the
database's now(), and the purge does the same. Login attempts are judged by the platform
clock (the throttles in tenants/throttle.py count rows since `clock.now()` minus their
windows), so their purge reads the same clock and never removes one the throttle counts."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import asyncpg
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.uow import Tx, one_statement
from tenants.models import AuthorizationCode, OAuthToken, WebSession

# Far beyond the throttles' windows (15 minutes for logins, an hour at most for the other
# kinds of row, tenants/throttle.py), so that purging never lifts a throttle,
# and long enough to look into yesterday's attack on an account.
LOGIN_ATTEMPT_RETENTION = timedelta(days=1)


def hash_session_id(session_id: str) -> str:
    """The key a session is stored under. Session ids are 32 random bytes, so a plain
    SHA-256 is enough: there is nothing to guess that a slow hash would protect."""
    return hashlib.sha256(session_id.encode()).hexdigest()


async def end_other_sessions(session: AsyncSession, user_id: uuid.UUID,
                             keep_session_id: str | None) -> int:
    """Delete every portal session of the user but the one with id `keep_session_id`
    (the browser making the change). Returns how many ended."""
    statement = delete(WebSession).where(WebSession.user_id == user_id)
    if keep_session_id:
        statement = statement.where(WebSession.key_hash != hash_session_id(keep_session_id))
    return (await session.execute(statement)).rowcount


async def revoke_remembered_access(session: AsyncSession, user_id: uuid.UUID) -> int:
    """Revoke the OAuth tokens issued for the user (access and refresh: a refresh token is
    what keeps an app logged in for weeks) and drop the user's unused authorization codes,
    which could still be exchanged for new ones. The revoked_at trigger on oauth_tokens
    makes every API process forget the tokens at once. Returns how many tokens."""
    revoked = await session.execute(
        update(OAuthToken)
        .where(OAuthToken.user_id == user_id, OAuthToken.revoked_at.is_(None))
        .values(revoked_at=clock.now()))
    await session.execute(delete(AuthorizationCode).where(
        AuthorizationCode.user_id == user_id, AuthorizationCode.used_at.is_(None)))
    return revoked.rowcount


async def password_changed(session: AsyncSession, user_id: uuid.UUID,
                           keep_session_id: str | None) -> None:
    """Whoever knew the old password (or held a session opened with it) is out: the
    user's other sessions end and the apps' refresh tokens stop working. In the caller's
    transaction, so a password that is not saved ends nothing."""
    await end_other_sessions(session, user_id, keep_session_id)
    await revoke_remembered_access(session, user_id)


async def purge(conn: asyncpg.Connection) -> dict[str, int]:
    """Delete expired sessions and login attempts older than LOGIN_ATTEMPT_RETENTION (the
    maintenance pass, tenants/maintenance.py)."""
    sessions = await conn.execute("DELETE FROM web_sessions WHERE expires_at < now()")
    attempts = await conn.execute("DELETE FROM login_attempts WHERE created_at < $1",
                                  clock.now() - LOGIN_ATTEMPT_RETENTION)
    return {"web_sessions": int(sessions.split()[-1]),
            "login_attempts": int(attempts.split()[-1])}


# The Litestar store's statements (web/sessions.py), one each: every portal request runs
# one or two of them, so they take no BEGIN/COMMIT (`one_statement`). Keys are the
# hashes; expiry is the database's now() (technical time, see the module's docstring),
# and a session is live while its expires_at is NULL or ahead of it.


@one_statement
async def store_session(tx: Tx, key: str, data: bytes, owner: uuid.UUID | None,
                        seconds: float | None) -> None:
    await tx.conn.execute(
        "INSERT INTO web_sessions (key_hash, value, user_id, expires_at) VALUES ($1, $2,"
        " $3, now() + make_interval(secs => $4)) ON CONFLICT (key_hash) DO UPDATE SET"
        " value = EXCLUDED.value, user_id = EXCLUDED.user_id,"
        " expires_at = EXCLUDED.expires_at",
        hash_session_id(key), data, owner, seconds)


@one_statement
async def replace_session(tx: Tx, key: str, data: bytes, owner: uuid.UUID | None,
                          seconds: float | None) -> bool:
    """Update a live session; False (and nothing written) when it has ended since the
    request read it, which store_session would bring back to life."""
    return bool(await tx.conn.fetchval(
        "UPDATE web_sessions SET value = $2, user_id = $3,"
        " expires_at = now() + make_interval(secs => $4)"
        " WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())"
        " RETURNING true",
        hash_session_id(key), data, owner, seconds))


@one_statement
async def read_session(tx: Tx, key: str, renew_seconds: float | None = None) -> bytes | None:
    """A live session's data; with `renew_seconds`, its expiry moves that far ahead."""
    if renew_seconds is not None:
        return await tx.conn.fetchval(
            "UPDATE web_sessions SET expires_at = now() + make_interval(secs => $2)"
            " WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())"
            " RETURNING value",
            hash_session_id(key), renew_seconds)
    return await tx.conn.fetchval(
        "SELECT value FROM web_sessions WHERE key_hash = $1"
        " AND (expires_at IS NULL OR expires_at > now())",
        hash_session_id(key))


@one_statement
async def delete_session(tx: Tx, key: str) -> None:
    await tx.conn.execute("DELETE FROM web_sessions WHERE key_hash = $1",
                          hash_session_id(key))


@one_statement
async def delete_all_sessions(tx: Tx) -> None:
    await tx.conn.execute("DELETE FROM web_sessions")


@one_statement
async def session_expires_in(tx: Tx, key: str) -> int | None:
    return await tx.conn.fetchval(
        "SELECT extract(epoch FROM expires_at - now())::int FROM web_sessions"
        " WHERE key_hash = $1", hash_session_id(key))

