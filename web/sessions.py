"""Portal sessions in PostgreSQL: they survive restarts and are shared by every API
process.

Three things Litestar's server-side sessions do not do, done here:

- The id changes when the privilege does. Litestar keeps the id the browser's cookie
  brings, even across `clear_session()`, so an id planted before login (session
  fixation) would be the logged-in session. `start_session` (a login) and
  `renew_session_id` (a password reset, a confirmed email) move the session to a new id
  and delete the old one; and an id the store does not know (expired, or made up by
  whoever planted the cookie) is never adopted, a new one is issued instead.
- Nothing is stored while there is nothing to keep: an anonymous page view writes no row
  and sets no cookie (Litestar stores the empty session of every request).
- The store keeps only the SHA-256 of the id (tenants/sessions.py), and the user a
  session belongs to, so that a password reset can end the user's other sessions.

A session ended by another request (a logout elsewhere, a password reset) stays ended:
a request of that session still in flight updates its row only if the row is there."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.middleware.session.server_side import (
    ServerSideSessionBackend,
    ServerSideSessionConfig,
)
from litestar.stores.base import Store
from litestar.types import Empty, Message, Scope, ScopeSession
from litestar.utils.dataclass import extract_dataclass_items

from coalition.uow import Database
from tenants import sessions

# Keys of the request's scope["state"] (ASGI's per-request state) the backend reads.
_KNOWN_ID = "coalition.session.known_id"     # the cookie's id, which the store knew
_NEW_ID = "coalition.session.new_id"         # the id to issue when not keeping the known
_RENEW = "coalition.session.renew"           # a handler asked for a new id


def _seconds(value: int | timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _owner(data: bytes) -> uuid.UUID | None:
    """The logged-in user a session's data names (the portal stores `user_id`)."""
    try:
        raw = json.loads(data).get("user_id")
        return uuid.UUID(raw) if isinstance(raw, str) else None
    except (ValueError, AttributeError):
        return None


class PostgresSessionStore(Store):
    """Litestar's Store over `web_sessions` (tenants/sessions.py). Keys are session ids;
    the table holds their hashes."""

    def __init__(self, db: Callable[[], Database]) -> None:
        self._db = db

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None
                  ) -> None:
        data = value.encode() if isinstance(value, str) else value
        await self._db().run(sessions.store_session, key, data, _owner(data),
                             _seconds(expires_in))

    async def replace(self, key: str, value: bytes, expires_in: int | timedelta | None = None
                      ) -> bool:
        """Update a live session; False (and nothing written) when it has ended since the
        request read it, which `set` would bring back to life."""
        return await self._db().run(sessions.replace_session, key, value, _owner(value),
                                    _seconds(expires_in))

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        return await self._db().run(sessions.read_session, key, _seconds(renew_for))

    async def delete(self, key: str) -> None:
        await self._db().run(sessions.delete_session, key)

    async def delete_all(self) -> None:
        await self._db().run(sessions.delete_all_sessions)

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        return await self._db().run(sessions.session_expires_in, key)


def _state(scope: Scope) -> dict[str, Any]:
    return scope.setdefault("state", {})  # type: ignore[typeddict-item]


class PortalSessionBackend(ServerSideSessionBackend):
    """Litestar's server-side backend, with new ids on privilege changes, no rows for
    empty sessions, and no resurrection of ended ones (see the module's docstring)."""

    async def load_from_connection(self, connection: ASGIConnection) -> dict[str, Any]:
        session_id = connection.cookies.get(self.config.key)
        if session_id and session_id != "null":
            store = self.config.get_store_from_app(connection.scope["app"])
            data = await self.get(session_id, store=store)
            if data is not None:
                _state(connection.scope)[_KNOWN_ID] = session_id
                return self.deserialize_data(data)
        return {}

    def get_session_id(self, connection: ASGIConnection) -> str:
        """The id the session is kept under: the cookie's if the store knew it and no new
        one was asked for; otherwise one generated here, never the browser's."""
        state = _state(connection.scope)
        known = state.get(_KNOWN_ID)
        if known and not state.get(_RENEW):
            return known
        if _NEW_ID not in state:
            state[_NEW_ID] = self.generate_session_id()
        return state[_NEW_ID]

    async def store_in_message(self, scope_session: ScopeSession, message: Message,
                               connection: ASGIConnection) -> None:
        scope = connection.scope
        store = self.config.get_store_from_app(scope["app"])
        if not isinstance(store, PostgresSessionStore):
            raise TypeError("the portal's sessions need PostgresSessionStore")
        headers = MutableScopeHeaders.from_message(message)
        params = dict(extract_dataclass_items(self.config, exclude_none=True,
                                              include=Cookie.__dict__.keys()))
        known = _state(scope).get(_KNOWN_ID)
        # Max-Age 0 as well: Litestar's own (expires=0 beside the configured Max-Age) is
        # kept by the browser for max_age, with "null" as the id.
        forget = Cookie(value="null", key=self.config.key, **{**params, "expires": 0,
                                                               "max_age": 0})
        if scope_session is Empty or not scope_session:
            # Nothing to keep: no row, and the browser drops whatever cookie it brought.
            if known:
                await self.delete(known, store=store)
            if connection.cookies.get(self.config.key):
                headers.add("Set-Cookie", forget.to_header(header=""))
            return
        session_id = self.get_session_id(connection)
        data = self.serialize_data(scope_session, scope)
        if session_id == known:
            if not await store.replace(session_id, data, expires_in=self.config.max_age):
                headers.add("Set-Cookie", forget.to_header(header=""))
                return
        else:
            if known:
                await self.delete(known, store=store)
            await self.set(session_id=session_id, data=data, store=store)
        headers.add("Set-Cookie", Cookie(value=session_id, key=self.config.key,
                                         **params).to_header(header=""))


@dataclass
class PortalSessionConfig(ServerSideSessionConfig):
    """ServerSideSessionConfig with PortalSessionBackend (Litestar's way to plug a
    backend into its session middleware)."""

    _backend_class = PortalSessionBackend


def start_session(request: Request, data: dict[str, Any]) -> None:
    """Log in: the response carries a new session holding only `data`, under a new id;
    the session the browser came with (its data and its id) is gone."""
    request.set_session(data)
    renew_session_id(request)


def renew_session_id(request: Request) -> None:
    """Move the current session, data kept, to a new id when the response is sent, and
    delete the old id: after a privilege change, an id someone else learnt before it is
    worth nothing. Without a session there is nothing to move."""
    _state(request.scope)[_RENEW] = True


def current_session_id(request: Request) -> str | None:
    """The id of the live session this request came with (None for none)."""
    return _state(request.scope).get(_KNOWN_ID)
