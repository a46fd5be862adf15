"""Partner console: the brand's affiliate programs, their terms (each change a new
version), the affiliates in them (approve, reject, ban with a reason) and creatives.
Owners and admins manage; analysts read. Everything runs in the console's
tenant-scoped session, so another partner's programs, enrollments and creatives are
invisible (404) even by id."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.affiliates import programs
from coalition.affiliates.models import COMMISSION_MODELS, Affiliate, Enrollment
from coalition.affiliates.programs import ProgramSpec
from coalition.errors import DomainError
from tenants import accounts
from tenants.models import User
from tenants.roles import can
from web.portal.common import page
from web.portal.console import provide_console_session, staff

Session = NamedDependency[AsyncSession]
TERMS_DEFAULTS = {"model": "percent", "rate": "5", "attribution_window_days": "30",
                  "click_model": "last_click", "hold_days": "30", "min_payout": "50.00",
                  "recurring": "first"}


def program_spec(form) -> ProgramSpec:
    return ProgramSpec(name=form.get("name", ""), landing_url=form.get("landing_url", ""),
                       currency=form.get("currency", ""),
                       description=form.get("description", ""),
                       enrollment=form.get("enrollment", "auto"),
                       status=form.get("status", "active"))


async def _affiliates(db_session: AsyncSession, user: User,
                      program_id: uuid.UUID | None = None) -> list:
    query = select(Enrollment, Affiliate).join(Affiliate, Affiliate.id == Enrollment.affiliate_id
                                               ).where(Enrollment.partner_id == user.partner_id)
    if program_id is not None:
        query = query.where(Enrollment.program_id == program_id)
    rows = await db_session.execute(query.order_by(
        (Enrollment.status == "pending").desc(), Enrollment.created_at.desc()))
    return list(rows.all())


async def _reset(db_session: AsyncSession, user: User) -> None:
    """Undo a refused change; the page is then rendered from fresh rows."""
    await db_session.rollback()
    await db_session.refresh(user)


class AffiliateConsolePages(Controller):
    path = "/partner/affiliates"
    include_in_schema = False
    dependencies = {"db_session": Provide(provide_console_session)}

    async def _list(self, db_session: AsyncSession, user: User, *, form: dict | None = None,
                    errors: dict | None = None, status_code: int = 200) -> Template:
        own = await programs.partner_programs(db_session, user.partner_id)
        names = {p.id: p.name for p in own}
        return page("affiliates/console_list.html", status_code=status_code, user=user,
                    programs=own, names=names, affiliates=await _affiliates(db_session, user),
                    manage=can(user, "affiliates.manage"),
                    form=form or {"enrollment": "auto", "currency": "PLN"},
                    errors=errors or {})

    @get("")
    async def overview(self, request: Request, db_session: Session) -> Template:
        user = await staff(request, db_session, "affiliates.view")
        return await self._list(db_session, user)

    @post("")
    async def create(self, request: Request, db_session: Session) -> Response:
        user = await staff(request, db_session, "affiliates.manage")
        form = await request.form()
        try:
            program = await programs.create_program(db_session, user.partner_id,
                                                    program_spec(form))
        except DomainError as exc:
            await _reset(db_session, user)
            return await self._list(db_session, user, form=dict(form),
                                    errors={exc.field or "form": exc.detail},
                                    status_code=exc.status)
        await accounts.audit(db_session, user, "affiliate_program.create",
                             target=str(program.id), partner_id=user.partner_id,
                             name=program.name)
        await db_session.commit()
        return Redirect(f"/partner/affiliates/programs/{program.id}", status_code=303)

    async def _program(self, db_session: AsyncSession, user: User, program_id: uuid.UUID, *,
                       form: dict | None = None, terms_form: dict | None = None,
                       errors: dict | None = None, status_code: int = 200) -> Template:
        program = await programs.own_program(db_session, user.partner_id, program_id)
        if form is None:
            form = {name: getattr(program, name) for name in
                    ("name", "description", "landing_url", "enrollment", "currency", "status")}
        return page("affiliates/console_program.html", status_code=status_code, user=user,
                    program=program, form=form, terms_form=terms_form or TERMS_DEFAULTS,
                    errors=errors or {}, models=COMMISSION_MODELS,
                    history=await programs.terms_history(db_session, program.id),
                    affiliates=await _affiliates(db_session, user, program.id),
                    creatives=await programs.program_creatives(db_session, program.id),
                    manage=can(user, "affiliates.manage"))

    @get("/programs/{program_id:uuid}")
    async def program(self, request: Request, db_session: Session,
                      program_id: FromPath[uuid.UUID]) -> Template:
        user = await staff(request, db_session, "affiliates.view")
        return await self._program(db_session, user, program_id)

    @post("/programs/{program_id:uuid}")
    async def save(self, request: Request, db_session: Session,
                   program_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db_session, "affiliates.manage")
        await programs.own_program(db_session, user.partner_id, program_id)
        form = await request.form()
        try:
            await programs.update_program(db_session, user.partner_id, program_id,
                                          program_spec(form))
        except DomainError as exc:
            await _reset(db_session, user)
            return await self._program(db_session, user, program_id, form=dict(form),
                                       errors={exc.field or "form": exc.detail},
                                       status_code=exc.status)
        await accounts.audit(db_session, user, "affiliate_program.update",
                             target=str(program_id), partner_id=user.partner_id)
        await db_session.commit()
        return Redirect(f"/partner/affiliates/programs/{program_id}", status_code=303)

    @post("/programs/{program_id:uuid}/terms")
    async def new_terms(self, request: Request, db_session: Session,
                        program_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db_session, "affiliates.manage")
        await programs.own_program(db_session, user.partner_id, program_id)
        form = await request.form()
        try:
            terms = await programs.add_terms(db_session, user.partner_id, program_id,
                                             programs.terms_from_form(dict(form)),
                                             f"staff:{user.email}")
        except DomainError as exc:
            await _reset(db_session, user)
            return await self._program(db_session, user, program_id, terms_form=dict(form),
                                       errors={f"terms.{exc.field}": exc.detail},
                                       status_code=exc.status)
        await accounts.audit(db_session, user, "affiliate_terms.create", target=str(program_id),
                             partner_id=user.partner_id, version=terms.version)
        await db_session.commit()
        return Redirect(f"/partner/affiliates/programs/{program_id}#terms", status_code=303)

    @post("/programs/{program_id:uuid}/creatives")
    async def upload(self, request: Request, db_session: Session,
                     program_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db_session, "affiliates.manage")
        await programs.own_program(db_session, user.partner_id, program_id)
        form = await request.form()
        upload = form.get("file")
        file_fields = {}
        if isinstance(upload, UploadFile) and upload.filename:
            file_fields = {"filename": upload.filename, "content_type": upload.content_type,
                           "content": await upload.read()}
        try:
            creative = await programs.add_creative(
                db_session, user.partner_id, program_id, form.get("title") or "",
                text=form.get("text") or "", **file_fields)
        except DomainError as exc:
            await _reset(db_session, user)
            return await self._program(db_session, user, program_id,
                                       errors={f"creative.{exc.field}": exc.detail},
                                       status_code=exc.status)
        await accounts.audit(db_session, user, "affiliate_creative.create",
                             target=str(creative.id), partner_id=user.partner_id)
        await db_session.commit()
        return Redirect(f"/partner/affiliates/programs/{program_id}#creatives", status_code=303)

    @get("/creatives/{creative_id:int}")
    async def creative(self, request: Request, db_session: Session,
                       creative_id: FromPath[int]) -> Response:
        user = await staff(request, db_session, "affiliates.view")
        creative = await programs.own_creative(db_session, user.partner_id, creative_id)
        media_type = creative.content_type + ("; charset=utf-8"
                                              if creative.content_type == "text/plain" else "")
        return Response(creative.content, media_type=media_type, headers={
            "Content-Disposition": f'inline; filename="{creative.filename}"'})

    @post("/creatives/{creative_id:int}/active")
    async def toggle_creative(self, request: Request, db_session: Session,
                              creative_id: FromPath[int]) -> Response:
        user = await staff(request, db_session, "affiliates.manage")
        creative = await programs.own_creative(db_session, user.partner_id, creative_id)
        creative.active = (await request.form()).get("active") == "on"
        await accounts.audit(db_session, user, "affiliate_creative.active",
                             target=str(creative.id), partner_id=user.partner_id,
                             active=creative.active)
        await db_session.commit()
        return Redirect(f"/partner/affiliates/programs/{creative.program_id}#creatives",
                        status_code=303)

    @post("/enrollments/{enrollment_id:uuid}")
    async def decide(self, request: Request, db_session: Session,
                     enrollment_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db_session, "affiliates.manage")
        enrollment = await programs.own_enrollment(db_session, user.partner_id, enrollment_id)
        program_id = enrollment.program_id
        form = await request.form()
        action = form.get("action", "")
        try:
            await programs.decide_enrollment(db_session, user.partner_id, enrollment_id,
                                             action, f"staff:{user.email}", form.get("reason"))
        except DomainError as exc:
            await _reset(db_session, user)
            # "reason: ..." names the field the person left empty (a ban's reason).
            detail = f"{exc.field}: {exc.detail}" if exc.field else exc.detail
            return await self._program(db_session, user, program_id,
                                       errors={f"enrollment.{enrollment_id}": detail},
                                       status_code=exc.status)
        await accounts.audit(db_session, user, f"affiliate_enrollment.{action}",
                             target=str(enrollment_id), partner_id=user.partner_id,
                             reason=form.get("reason") or None)
        await db_session.commit()
        return Redirect(f"/partner/affiliates/programs/{program_id}#affiliates",
                        status_code=303)
