"""Wiring of affiliate conversions (coalition.affiliates) into the purchase API, member
enrolment and the member portal's registration: the click recorder's flush and the
asyncpg connection under a SQLAlchemy session, so a lead is written in the sign-up's
own transaction."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.affiliates import commissions
from coalition.affiliates.attribution import Flush, Touch

# Set by /r/{code} (web/tracking.py): the click id, for the member portal's sign-up.
CLICK_COOKIE = "coalition_click"


def click_flush(state: State) -> Flush | None:
    """The click recorder's flush, when the app runs one: a click id may arrive before
    its click left the recorder's buffer."""
    recorder = getattr(state, "click_recorder", None)
    return recorder.flush if recorder is not None else None


async def session_connection(db_session: AsyncSession) -> asyncpg.Connection:
    """The session's own asyncpg connection, inside its transaction (and, for a tenant
    session, under its role and partner)."""
    connection = await db_session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


def cookie_click(value: str | None) -> Touch:
    """The `coalition_click` cookie as a touch; anything but a UUID is ignored."""
    try:
        return Touch(click_id=uuid.UUID(value)) if value else Touch()
    except ValueError:
        return Touch()


async def signup_lead(db_session: AsyncSession, state: State, member_id: uuid.UUID,
                      touch: Touch, partner_id: uuid.UUID | None = None
                      ) -> dict[str, Any] | None:
    if not touch:
        return None
    conn = await session_connection(db_session)
    return await commissions.for_signup(conn, member_id=member_id, at=clock.now(),
                                        touch=touch, partner_id=partner_id,
                                        flush=click_flush(state))
