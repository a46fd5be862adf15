"""B2B company accounts in the portal: the company's people for its members (admins
manage, buyers look), and the operator's list and creation of companies."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from coalition.errors import DomainError
from coalition.models import Member
from coalition.uow import Database
from tenants import companies
from tenants.mail import Mailer
from tenants.models import User
from web.portal.common import (
    PageForbidden,
    acting,
    base_url,
    current_user,
    operator,
    page,
    require,
)


async def _company_user(request: Request, db: Database) -> tuple[User, Member]:
    user = require(request, await current_user(request, db), "member")
    company = await acting(db, user).run(companies.company, user.member_id)
    if company is None or user.company_role is None:
        raise PageForbidden("This page is for the people of a company account.")
    return user, company


async def _send_invite(request: Request, email: str, company: str, inviter: str, role: str,
                       token: str) -> None:
    mailer: Mailer = request.app.state.mailer
    await mailer.send(email, f"You are invited to {company}'s Coalition account",
                      f"{inviter} invited you to the company account of {company} as {role}: "
                      "you will share its points wallet.\n\nSet your password:\n\n"
                      f"{base_url(request)}/set-password?token={token}\n\n"
                      "The link works once and expires in 7 days.\n")


def _refuse(user: User, exc: DomainError, link: str = "/member/company") -> Template:
    # Nothing is committed: the use case's Tx rolled back.
    return page("message.html", status_code=exc.status, user=user, title=exc.title,
                message=exc.detail, field=exc.field, link=link)


class CompanyPages(Controller):
    include_in_schema = False

    @get("/member/company")
    async def people(self, request: Request, db: Database) -> Template:
        user, company = await _company_user(request, db)
        return page("partners/company.html", user=user, company=company,
                    people=await acting(db, user).run(companies.people_of, company.id),
                    roles=companies.COMPANY_ROLES)

    async def _admin(self, request: Request, db: Database) -> tuple[User, Member]:
        user, company = await _company_user(request, db)
        if user.company_role != "admin":
            raise PageForbidden("Only the company's admins manage its people.")
        return user, company

    @post("/member/company/people")
    async def invite(self, request: Request, db: Database) -> Response:
        user, company = await self._admin(request, db)
        form = await request.form()
        try:
            invited, token = await acting(db, user).run(
                companies.invite_person, company.id, form.get("email", ""),
                (form.get("name") or "").strip() or None, form.get("role", ""))
        except DomainError as exc:
            return _refuse(user, exc)
        await _send_invite(request, invited.email, company.company_name or company.email,
                           user.email, invited.company_role or "", token)
        return Redirect("/member/company")

    @post("/member/company/people/{person_id:uuid}/role")
    async def change_role(self, request: Request, db: Database,
                          person_id: FromPath[uuid.UUID]) -> Response:
        user, company = await self._admin(request, db)
        role = (await request.form()).get("role", "")
        try:
            await acting(db, user).run(companies.set_role, company.id, person_id, role)
        except DomainError as exc:
            return _refuse(user, exc)
        return Redirect("/member/company")

    @post("/member/company/people/{person_id:uuid}/remove")
    async def remove(self, request: Request, db: Database,
                     person_id: FromPath[uuid.UUID]) -> Response:
        user, company = await self._admin(request, db)
        try:
            await acting(db, user).run(companies.remove_person, company.id, person_id)
        except DomainError as exc:
            return _refuse(user, exc)
        return Redirect("/member/company")

    @get("/operator/companies")
    async def operator_list(self, request: Request, db: Database) -> Template:
        user = await operator(request, db)
        rows = await acting(db, user).run(companies.companies)
        return page("partners/operator_companies.html", user=user, companies=rows, form={})

    @post("/operator/companies")
    async def operator_create(self, request: Request, db: Database) -> Response:
        user = await operator(request, db)
        form = {k: (v or "").strip() for k, v in (await request.form()).items()}
        try:
            admin, token = await acting(db, user).run(
                companies.open_company, form.get("email", ""), form.get("company_name", ""),
                form.get("tax_id", ""), form.get("admin_email", ""),
                form.get("admin_name") or None)
        except DomainError as exc:   # nothing committed
            return _refuse(user, exc, "/operator/companies")
        await _send_invite(request, admin.email, form.get("company_name", ""), user.email,
                           "admin", token)
        return Redirect("/operator/companies")
