"""Segment pages: the partner's (/partner/segments, over its own members and purchases,
queried on a tenant-scoped connection) and the operator's coalition segments
(/operator/segments). One editor: name, description, the JSON definition, and two
buttons, "Preview count" (nothing saved) and "Save" (saves and refreshes members)."""

from __future__ import annotations

import json
import uuid

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from coalition.errors import DomainError
from coalition.segments import queries
from coalition.segments import service as segments
from coalition.uow import Database, Runner
from tenants.models import User
from tenants.roles import can
from web.portal.common import acting, operator, page
from web.portal.partners.console import staff

EXAMPLE = json.dumps({"match": "all", "conditions": [
    {"type": "last_purchase", "within_days": 30},
    {"type": "spend", "days": 90, "min": 50000}]}, indent=2)


class _Editor:
    """What the partner and operator pages share. The runner's partner owns the segments
    (None: the coalition); a partner's runs under row-level security."""

    base = ""

    async def listing(self, runner: Runner, user: User, can_edit: bool) -> Template:
        rows = await runner.run(queries.segments_of_owner)
        return page("segments/segments.html", user=user, segments=rows, base=self.base,
                    can_edit=can_edit, coalition=runner.partner_id is None,
                    form={"definition": EXAMPLE})

    async def editor(self, runner: Runner, user: User, segment_id: uuid.UUID,
                     can_edit: bool) -> Template:
        row = await runner.run(queries.segment_of_owner, segment_id)
        form = {"name": row["name"], "description": row["description"] or "",
                "definition": json.dumps(json.loads(row["definition"]), indent=2)}
        return page("segments/segment_edit.html", user=user, segment=row, form=form, base=self.base,
                    can_edit=can_edit, coalition=runner.partner_id is None)

    async def submit(self, request: Request, runner: Runner, user: User,
                     segment_id: uuid.UUID | None) -> Response:
        form = dict(await request.form())
        context = {"user": user, "form": form, "base": self.base, "can_edit": True,
                   "coalition": runner.partner_id is None, "segment": {"id": segment_id}
                   if segment_id else None}
        raw = (form.get("definition") or "").encode()
        try:
            if form.get("action") == "preview":
                count = await runner.run(queries.preview_count, raw)
                return page("segments/segment_edit.html", preview=count, **context)
            await runner.run(segments.save_segment, segment_id, form.get("name", ""),
                             (form.get("description") or "").strip() or None, raw)
        except DomainError as exc:
            return page("segments/segment_edit.html", status_code=exc.status, error=exc.detail,
                        error_field=exc.field, **context)
        return Redirect(self.base)

    async def remove(self, runner: Runner, segment_id: uuid.UUID) -> Redirect:
        await runner.run(segments.delete_segment, segment_id)
        return Redirect(self.base)


class PartnerSegmentPages(Controller, _Editor):
    path = "/partner/segments"
    base = "/partner/segments"
    include_in_schema = False

    @get("/")
    async def index(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "segments.view")
        return await self.listing(acting(db, user, scoped=True), user,
                                  can(user, "segments.manage"))

    @post("/")
    async def create(self, request: Request, db: Database) -> Response:
        user = await staff(request, db, "segments.manage")
        return await self.submit(request, acting(db, user, scoped=True), user, None)

    @get("/{segment_id:uuid}")
    async def edit(self, request: Request, db: Database,
                   segment_id: FromPath[uuid.UUID]) -> Template:
        user = await staff(request, db, "segments.view")
        return await self.editor(acting(db, user, scoped=True), user, segment_id,
                                 can(user, "segments.manage"))

    @post("/{segment_id:uuid}")
    async def update(self, request: Request, db: Database,
                     segment_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db, "segments.manage")
        runner = acting(db, user, scoped=True)
        await runner.run(queries.segment_of_owner, segment_id)
        return await self.submit(request, runner, user, segment_id)

    @post("/{segment_id:uuid}/delete")
    async def delete(self, request: Request, db: Database,
                     segment_id: FromPath[uuid.UUID]) -> Redirect:
        user = await staff(request, db, "segments.manage")
        return await self.remove(acting(db, user, scoped=True), segment_id)


class OperatorSegmentPages(Controller, _Editor):
    path = "/operator/segments"
    base = "/operator/segments"
    include_in_schema = False

    @get("/")
    async def index(self, request: Request, db: Database) -> Template:
        user = await operator(request, db)
        return await self.listing(acting(db, user), user, True)

    @post("/")
    async def create(self, request: Request, db: Database) -> Response:
        user = await operator(request, db)
        return await self.submit(request, acting(db, user), user, None)

    @get("/{segment_id:uuid}")
    async def edit(self, request: Request, db: Database,
                   segment_id: FromPath[uuid.UUID]) -> Template:
        user = await operator(request, db)
        return await self.editor(acting(db, user), user, segment_id, True)

    @post("/{segment_id:uuid}")
    async def update(self, request: Request, db: Database,
                     segment_id: FromPath[uuid.UUID]) -> Response:
        user = await operator(request, db)
        runner = acting(db, user)
        await runner.run(queries.segment_of_owner, segment_id)
        return await self.submit(request, runner, user, segment_id)

    @post("/{segment_id:uuid}/delete")
    async def delete(self, request: Request, db: Database,
                     segment_id: FromPath[uuid.UUID]) -> Redirect:
        user = await operator(request, db)
        return await self.remove(acting(db, user), segment_id)


ROUTES = [PartnerSegmentPages, OperatorSegmentPages]
