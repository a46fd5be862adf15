"""B2B company accounts in the portal: the company's people for its members (admins
manage, buyers look), and the operator's list and creation of companies."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import companies
from coalition.errors import DomainError
from coalition.models import Member
from tenants import accounts
from tenants.mail import Mailer
from tenants.models import User
from web.portal.auth import base_url
from web.portal.common import PageForbidden, current_user, operator, page, require

Session = NamedDependency[AsyncSession]


async def _company_user(request: Request, db_session: AsyncSession) -> tuple[User, Member]:
    user = require(request, await current_user(request, db_session), "member")
    company = await db_session.get(Member, user.member_id)
    if company is None or company.kind != "company" or user.company_role is None:
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


class CompanyPages(Controller):
    include_in_schema = False

    @get("/member/company")
    async def people(self, request: Request, db_session: Session) -> Template:
        user, company = await _company_user(request, db_session)
        return page("company.html", user=user, company=company,
                    people=await companies.people(db_session, company.id),
                    roles=companies.COMPANY_ROLES)

    async def _admin(self, request: Request, db_session: AsyncSession) -> tuple[User, Member]:
        user, company = await _company_user(request, db_session)
        if user.company_role != "admin":
            raise PageForbidden("Only the company's admins manage its people.")
        return user, company

    async def _refuse(self, user: User, company: Member, exc: DomainError,
                      db_session: AsyncSession) -> Template:
        # Nothing is committed: the request's session rolls back when it closes (after
        # the page renders, which still reads the user).
        return page("message.html", status_code=exc.status, user=user, title=exc.title,
                    message=exc.detail, field=exc.field, link="/member/company")

    @post("/member/company/people")
    async def invite(self, request: Request, db_session: Session) -> Response:
        user, company = await self._admin(request, db_session)
        form = await request.form()
        try:
            invited, token = await companies.invite(
                db_session, company.id, form.get("email", ""),
                (form.get("name") or "").strip() or None, form.get("role", ""))
        except DomainError as exc:
            return await self._refuse(user, company, exc, db_session)
        await accounts.audit(db_session, user, "company.invite", target=invited.email,
                             role=invited.company_role, company=str(company.id))
        await db_session.commit()
        await _send_invite(request, invited.email, company.company_name or company.email,
                           user.email, invited.company_role or "", token)
        return Redirect("/member/company")

    @post("/member/company/people/{person_id:uuid}/role")
    async def change_role(self, request: Request, db_session: Session,
                          person_id: FromPath[uuid.UUID]) -> Response:
        user, company = await self._admin(request, db_session)
        role = (await request.form()).get("role", "")
        try:
            await companies.change_role(db_session, company.id, person_id, role)
        except DomainError as exc:
            return await self._refuse(user, company, exc, db_session)
        await accounts.audit(db_session, user, "company.role", target=str(person_id),
                             role=role, company=str(company.id))
        await db_session.commit()
        return Redirect("/member/company")

    @post("/member/company/people/{person_id:uuid}/remove")
    async def remove(self, request: Request, db_session: Session,
                     person_id: FromPath[uuid.UUID]) -> Response:
        user, company = await self._admin(request, db_session)
        try:
            await companies.remove(db_session, company.id, person_id)
        except DomainError as exc:
            return await self._refuse(user, company, exc, db_session)
        await accounts.audit(db_session, user, "company.remove", target=str(person_id),
                             company=str(company.id))
        await db_session.commit()
        return Redirect("/member/company")

    @get("/operator/companies")
    async def operator_list(self, request: Request, state: State, db_session: Session
                            ) -> Template:
        user = await operator(request, db_session)
        rows = await state.pool.fetch(
            "SELECT m.id, m.company_name, m.tax_id, m.email, m.card_number, a.balance,"
            " (SELECT count(*) FROM users u WHERE u.member_id = m.id AND u.disabled_at IS NULL)"
            " AS people FROM members m JOIN accounts a ON a.member_id = m.id"
            " WHERE m.kind = 'company' ORDER BY m.company_name")
        return page("operator_companies.html", user=user, companies=rows, form={})

    @post("/operator/companies")
    async def operator_create(self, request: Request, state: State, db_session: Session
                              ) -> Response:
        user = await operator(request, db_session)
        form = {k: (v or "").strip() for k, v in (await request.form()).items()}
        try:
            _, admin, token = await companies.create_company(
                db_session, form.get("email", ""), form.get("company_name", ""),
                form.get("tax_id", ""), form.get("admin_email", ""),
                form.get("admin_name") or None)
        except DomainError as exc:   # nothing committed; the session rolls back on close
            return page("message.html", status_code=exc.status, user=user, title=exc.title,
                        message=exc.detail, field=exc.field, link="/operator/companies")
        await accounts.audit(db_session, user, "company.create", target=form.get("email"),
                             admin=admin.email)
        await db_session.commit()
        await _send_invite(request, admin.email, form.get("company_name", ""), user.email,
                           "admin", token)
        return Redirect("/operator/companies")
