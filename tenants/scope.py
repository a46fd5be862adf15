"""The one tenant-scoped data-access path.

Every transaction of a tenant session (or tenant connection) starts by switching to the
`coalition_tenant` role and setting `coalition.partner_id`, both transaction-local:

    SELECT set_config('role', 'coalition_tenant', true),        -- SET LOCAL ROLE
           set_config('coalition.partner_id', <partner>, true)

PostgreSQL's row-level security policies (migration 0007) then show and accept only the
partner's own rows, whatever the query says: the second wall behind the explicit
partner filters in the code. The app's tenant sessions also *log in* as
`coalition_tenant_login` (migration 0008), a member of `coalition_tenant` with nothing of
its own, so not even `RESET ROLE` leaves the policies behind.

Both settings end with the transaction, so a pooled
connection goes back to the pool as the login role with no partner set; a session that
commits and goes on working is scoped again by the next transaction's `after_begin`.

Used by the partner API (`/api/v1`, partner from the bearer token) and the partner
console (`/partner`, partner of the logged-in staff member). Operator pages, member
pages, OAuth endpoints, the importer and system jobs use the plain session. The ledger's
posting functions take the partner id as an argument and run on the ledger pool as the
login role: they are the tenant-scoped path for ledger writes (one round trip each).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

# The roles live in coalition/db.py (coalition db check reads them); named here too.
from coalition.db import TENANT_LOGIN_ROLE, TENANT_ROLE  # noqa: F401

PARTNER_SETTING = "coalition.partner_id"
_INFO_KEY = "coalition.tenant_partner_id"
_SCOPE = (f"SELECT set_config('role', '{TENANT_ROLE}', true),"
          f" set_config('{PARTNER_SETTING}', {{}}, true)")
_SCOPE_ORM = text(_SCOPE.format(":partner"))
_SCOPE_ASYNCPG = _SCOPE.format("$1")


def tenant_session(sessionmaker: async_sessionmaker, partner_id: uuid.UUID) -> AsyncSession:
    """An ORM session whose every transaction runs as coalition_tenant for this partner."""
    return sessionmaker(info={_INFO_KEY: str(partner_id)})


def session_partner(session: AsyncSession | Session) -> uuid.UUID | None:
    """The partner a session is scoped to; None for a plain session."""
    value = session.info.get(_INFO_KEY)
    return uuid.UUID(value) if value is not None else None


@event.listens_for(Session, "after_begin")
def _scope_transaction(session: Session, transaction, connection) -> None:
    partner = session.info.get(_INFO_KEY)
    if partner is not None:
        connection.execute(_SCOPE_ORM, {"partner": partner})


@asynccontextmanager
async def tenant_connection(pool: asyncpg.Pool, partner_id: uuid.UUID
                            ) -> AsyncIterator[asyncpg.Connection]:
    """A raw asyncpg connection inside a transaction scoped like a tenant session."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(_SCOPE_ASYNCPG, str(partner_id))
        yield connection
