"""The partner console's affiliate pages (/partner/affiliates): the brand's programs,
their terms (each change a new version), the affiliates in them (approve, reject, ban
with a reason), creatives, and the commissions under review. Owners and admins manage;
analysts read; reviewers decide held commissions. Everything runs tenant-scoped, so
another partner's programs, enrollments, creatives and commissions are invisible (404)
even by id."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from coalition.affiliates import programs, queries, service
from coalition.affiliates.models import COMMISSION_MODELS
from coalition.affiliates.programs import ProgramSpec
from coalition.errors import DomainError
from coalition.uow import Database, Runner
from tenants.models import User
from tenants.roles import can
from web.portal.affiliates.review import decide, listing
from web.portal.common import acting, page
from web.portal.partners.console import staff

TERMS_DEFAULTS = {"model": "percent", "rate": "5", "attribution_window_days": "30",
                  "click_model": "last_click", "hold_days": "30", "min_payout": "50.00",
                  "recurring": "first"}


def program_spec(form) -> ProgramSpec:
    return ProgramSpec(name=form.get("name", ""), landing_url=form.get("landing_url", ""),
                       currency=form.get("currency", ""),
                       description=form.get("description", ""),
                       enrollment=form.get("enrollment", "auto"),
                       status=form.get("status", "active"))


async def _staff(request: Request, db: Database, permission: str) -> tuple[User, Runner]:
    """The signed-in staff member allowed `permission`, and their tenant-scoped runner."""
    user = await staff(request, db, permission)
    return user, acting(db, user, scoped=True)


class AffiliateConsolePages(Controller):
    path = "/partner/affiliates"
    include_in_schema = False

    async def _list(self, runner: Runner, user: User, *, form: dict | None = None,
                    errors: dict | None = None, status_code: int = 200) -> Template:
        found = await runner.run(queries.console, user.partner_id)
        return page("affiliates/console_list.html", status_code=status_code, user=user,
                    programs=found.programs, names={p.id: p.name for p in found.programs},
                    affiliates=found.affiliates, manage=can(user, "affiliates.manage"),
                    form=form or {"enrollment": "auto", "currency": "PLN"},
                    errors=errors or {})

    @get("")
    async def overview(self, request: Request, db: Database) -> Template:
        user, runner = await _staff(request, db, "affiliates.view")
        return await self._list(runner, user)

    @post("")
    async def create(self, request: Request, db: Database) -> Response:
        user, runner = await _staff(request, db, "affiliates.manage")
        form = await request.form()
        try:
            program = await runner.run(service.create_program, user.partner_id,
                                       program_spec(form))
        except DomainError as exc:
            return await self._list(runner, user, form=dict(form),
                                    errors={exc.field or "form": exc.detail},
                                    status_code=exc.status)
        return Redirect(f"/partner/affiliates/programs/{program.id}", status_code=303)

    async def _program(self, runner: Runner, user: User, program_id: uuid.UUID, *,
                       form: dict | None = None, terms_form: dict | None = None,
                       errors: dict | None = None, status_code: int = 200) -> Template:
        found = await runner.run(queries.program_page, user.partner_id, program_id)
        program = found.program
        if form is None:
            form = {name: getattr(program, name) for name in
                    ("name", "description", "landing_url", "enrollment", "currency", "status")}
        return page("affiliates/console_program.html", status_code=status_code, user=user,
                    program=program, form=form, terms_form=terms_form or TERMS_DEFAULTS,
                    errors=errors or {}, models=COMMISSION_MODELS, history=found.history,
                    affiliates=found.affiliates, creatives=found.creatives,
                    manage=can(user, "affiliates.manage"))

    @get("/programs/{program_id:uuid}")
    async def program(self, request: Request, db: Database,
                      program_id: FromPath[uuid.UUID]) -> Template:
        user, runner = await _staff(request, db, "affiliates.view")
        return await self._program(runner, user, program_id)

    @post("/programs/{program_id:uuid}")
    async def save(self, request: Request, db: Database,
                   program_id: FromPath[uuid.UUID]) -> Response:
        user, runner = await _staff(request, db, "affiliates.manage")
        form = await request.form()
        try:
            await runner.run(service.update_program, user.partner_id, program_id,
                             program_spec(form))
        except DomainError as exc:
            if exc.status == 404:   # not a program of this partner
                raise
            return await self._program(runner, user, program_id, form=dict(form),
                                       errors={exc.field or "form": exc.detail},
                                       status_code=exc.status)
        return Redirect(f"/partner/affiliates/programs/{program_id}", status_code=303)

    @post("/programs/{program_id:uuid}/terms")
    async def new_terms(self, request: Request, db: Database,
                        program_id: FromPath[uuid.UUID]) -> Response:
        user, runner = await _staff(request, db, "affiliates.manage")
        form = await request.form()
        try:
            await runner.run(service.add_terms, user.partner_id, program_id,
                             programs.terms_from_form(dict(form)))
        except DomainError as exc:
            if exc.status == 404:
                raise
            return await self._program(runner, user, program_id, terms_form=dict(form),
                                       errors={f"terms.{exc.field}": exc.detail},
                                       status_code=exc.status)
        return Redirect(f"/partner/affiliates/programs/{program_id}#terms", status_code=303)

    @post("/programs/{program_id:uuid}/creatives")
    async def upload(self, request: Request, db: Database,
                     program_id: FromPath[uuid.UUID]) -> Response:
        user, runner = await _staff(request, db, "affiliates.manage")
        form = await request.form()
        upload = form.get("file")
        file_fields = {}
        if isinstance(upload, UploadFile) and upload.filename:
            file_fields = {"filename": upload.filename, "content_type": upload.content_type,
                           "content": await upload.read()}
        try:
            await runner.run(service.add_creative, user.partner_id, program_id,
                             form.get("title") or "", text=form.get("text") or "",
                             **file_fields)
        except DomainError as exc:
            if exc.status == 404:
                raise
            return await self._program(runner, user, program_id,
                                       errors={f"creative.{exc.field}": exc.detail},
                                       status_code=exc.status)
        return Redirect(f"/partner/affiliates/programs/{program_id}#creatives", status_code=303)

    @get("/creatives/{creative_id:int}")
    async def creative(self, request: Request, db: Database,
                       creative_id: FromPath[int]) -> Response:
        user, runner = await _staff(request, db, "affiliates.view")
        creative = await runner.run(queries.own_creative, user.partner_id, creative_id)
        media_type = creative.content_type + ("; charset=utf-8"
                                              if creative.content_type == "text/plain" else "")
        return Response(creative.content, media_type=media_type, headers={
            "Content-Disposition": f'inline; filename="{creative.filename}"'})

    @post("/creatives/{creative_id:int}/active")
    async def toggle_creative(self, request: Request, db: Database,
                              creative_id: FromPath[int]) -> Response:
        user, runner = await _staff(request, db, "affiliates.manage")
        active = (await request.form()).get("active") == "on"
        creative = await runner.run(service.set_creative_active, user.partner_id,
                                    creative_id, active)
        return Redirect(f"/partner/affiliates/programs/{creative.program_id}#creatives",
                        status_code=303)

    @post("/enrollments/{enrollment_id:uuid}")
    async def decide(self, request: Request, db: Database,
                     enrollment_id: FromPath[uuid.UUID]) -> Response:
        user, runner = await _staff(request, db, "affiliates.manage")
        program_id = await runner.run(queries.enrollment_program, user.partner_id,
                                      enrollment_id)
        form = await request.form()
        try:
            await runner.run(service.decide_enrollment, user.partner_id, enrollment_id,
                             form.get("action", ""), form.get("reason"))
        except DomainError as exc:
            # "reason: ..." names the field the person left empty (a ban's reason).
            detail = f"{exc.field}: {exc.detail}" if exc.field else exc.detail
            return await self._program(runner, user, program_id,
                                       errors={f"enrollment.{enrollment_id}": detail},
                                       status_code=exc.status)
        return Redirect(f"/partner/affiliates/programs/{program_id}#affiliates",
                        status_code=303)


class PartnerCommissionPages(Controller):
    path = "/partner/affiliates/commissions"
    include_in_schema = False

    @get("/")
    async def list_commissions(self, request: Request, db: Database,
                               status: FromQuery[str | None] = None,
                               affiliate: FromQuery[str | None] = None) -> Template:
        user, runner = await _staff(request, db, "affiliates.review")
        return await listing(runner, user, self.path, user.partner_id, status, affiliate)

    @post("/{commission_id:int}/release")
    async def release(self, request: Request, db: Database,
                      commission_id: FromPath[int]) -> Response:
        user, runner = await _staff(request, db, "affiliates.review")
        await decide(runner, commission_id, True, user.partner_id)
        return Redirect(f"{self.path}?status=hold", status_code=303)

    @post("/{commission_id:int}/reject")
    async def reject(self, request: Request, db: Database,
                     commission_id: FromPath[int]) -> Response:
        user, runner = await _staff(request, db, "affiliates.review")
        await decide(runner, commission_id, False, user.partner_id)
        return Redirect(f"{self.path}?status=hold", status_code=303)
