"""Segment pages: the partner's (/partner/segments, over its own members and purchases,
queried on a tenant-scoped connection) and the operator's coalition segments
(/operator/segments). One editor: name, description, the JSON definition, and two
buttons, "Preview count" (nothing saved) and "Save" (saves and refreshes members)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.errors import DomainError
from coalition.segments import service as segments
from tenants.models import User
from tenants.roles import can
from tenants.scope import tenant_connection
from web.portal.common import operator, page
from web.portal.console import provide_console_session, staff

Session = NamedDependency[AsyncSession]
EXAMPLE = json.dumps({"match": "all", "conditions": [
    {"type": "last_purchase", "within_days": 30},
    {"type": "spend", "days": 90, "min": 50000}]}, indent=2)


class _Editor:
    """What the partner and operator pages share; `owner` is the partner id or None."""

    base = ""

    @asynccontextmanager
    async def connection(self, state: State, owner: uuid.UUID | None
                         ) -> AsyncIterator[asyncpg.Connection]:
        if owner is None:
            async with state.pool.acquire() as conn:
                yield conn
        else:
            async with tenant_connection(state.pool, owner) as conn:
                yield conn

    async def listing(self, state: State, user: User, owner: uuid.UUID | None,
                      can_edit: bool) -> Template:
        async with self.connection(state, owner) as conn:
            rows = await segments.list_segments(conn, owner)
        return page("segments.html", user=user, segments=rows, base=self.base,
                    can_edit=can_edit, coalition=owner is None,
                    form={"definition": EXAMPLE})

    async def editor(self, state: State, user: User, owner: uuid.UUID | None,
                     segment_id: uuid.UUID, can_edit: bool) -> Template:
        async with self.connection(state, owner) as conn:
            row = await segments.owned(conn, owner, segment_id)
        form = {"name": row["name"], "description": row["description"] or "",
                "definition": json.dumps(json.loads(row["definition"]), indent=2)}
        return page("segment_edit.html", user=user, segment=row, form=form, base=self.base,
                    can_edit=can_edit, coalition=owner is None)

    async def submit(self, request: Request, state: State, user: User,
                     owner: uuid.UUID | None, segment_id: uuid.UUID | None) -> Response:
        form = dict(await request.form())
        now = clock.now()
        context = {"user": user, "form": form, "base": self.base, "can_edit": True,
                   "coalition": owner is None, "segment": {"id": segment_id}
                   if segment_id else None}
        raw = (form.get("definition") or "").encode()
        try:
            async with self.connection(state, owner) as conn:
                if form.get("action") == "preview":
                    count = await segments.preview(conn, owner, raw, now)
                    return page("segment_edit.html", preview=count, **context)
                await segments.save(conn, owner, segment_id, form.get("name", ""),
                                    (form.get("description") or "").strip() or None, raw,
                                    user.email, now)
        except DomainError as exc:
            return page("segment_edit.html", status_code=exc.status, error=exc.detail,
                        error_field=exc.field, **context)
        return Redirect(self.base)

    async def remove(self, state: State, owner: uuid.UUID | None, segment_id: uuid.UUID
                     ) -> Redirect:
        async with self.connection(state, owner) as conn:
            await segments.delete(conn, owner, segment_id)
        return Redirect(self.base)


class PartnerSegmentPages(Controller, _Editor):
    path = "/partner/segments"
    base = "/partner/segments"
    include_in_schema = False
    dependencies = {"db_session": Provide(provide_console_session)}

    @get("/")
    async def index(self, request: Request, db_session: Session, state: State) -> Template:
        user = await staff(request, db_session, "segments.view")

        return await self.listing(state, user, user.partner_id, can(user, "segments.manage"))

    @post("/")
    async def create(self, request: Request, db_session: Session, state: State) -> Response:
        user = await staff(request, db_session, "segments.manage")
        return await self.submit(request, state, user, user.partner_id, None)

    @get("/{segment_id:uuid}")
    async def edit(self, request: Request, db_session: Session, state: State,
                   segment_id: FromPath[uuid.UUID]) -> Template:
        user = await staff(request, db_session, "segments.view")

        return await self.editor(state, user, user.partner_id, segment_id,
                                 can(user, "segments.manage"))

    @post("/{segment_id:uuid}")
    async def update(self, request: Request, db_session: Session, state: State,
                     segment_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db_session, "segments.manage")
        async with self.connection(state, user.partner_id) as conn:
            await segments.owned(conn, user.partner_id, segment_id)
        return await self.submit(request, state, user, user.partner_id, segment_id)

    @post("/{segment_id:uuid}/delete")
    async def delete(self, request: Request, db_session: Session, state: State,
                     segment_id: FromPath[uuid.UUID]) -> Redirect:
        user = await staff(request, db_session, "segments.manage")
        return await self.remove(state, user.partner_id, segment_id)


class OperatorSegmentPages(Controller, _Editor):
    path = "/operator/segments"
    base = "/operator/segments"
    include_in_schema = False


    @get("/")
    async def index(self, request: Request, db_session: Session, state: State) -> Template:
        return await self.listing(state, await operator(request, db_session), None, True)

    @post("/")
    async def create(self, request: Request, db_session: Session, state: State) -> Response:
        user = await operator(request, db_session)
        return await self.submit(request, state, user, None, None)

    @get("/{segment_id:uuid}")
    async def edit(self, request: Request, db_session: Session, state: State,
                   segment_id: FromPath[uuid.UUID]) -> Template:
        user = await operator(request, db_session)
        return await self.editor(state, user, None, segment_id, True)

    @post("/{segment_id:uuid}")
    async def update(self, request: Request, db_session: Session, state: State,
                     segment_id: FromPath[uuid.UUID]) -> Response:
        user = await operator(request, db_session)
        async with self.connection(state, None) as conn:
            await segments.owned(conn, None, segment_id)
        return await self.submit(request, state, user, None, segment_id)

    @post("/{segment_id:uuid}/delete")
    async def delete(self, request: Request, db_session: Session, state: State,
                     segment_id: FromPath[uuid.UUID]) -> Redirect:
        await operator(request, db_session)
        return await self.remove(state, None, segment_id)
