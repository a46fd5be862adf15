"""The partner console: home, OAuth clients and staff. Every page checks the role's
permission (tenants.roles) and looks rows up within the user's own partner only; and every
query runs in a tenant-scoped session (tenants/scope.py), so PostgreSQL's row-level
security refuses other partners' rows even if a filter were forgotten."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock, referrals
from coalition.errors import DomainError
from tenants import accounts
from tenants.mail import Mailer
from tenants.models import STAFF_ROLES, OAuthClient, Partner, User
from tenants.roles import can
from tenants.scope import tenant_session
from tenants.service import (
    MEMBER_SCOPES,
    PARTNER_SCOPES,
    SECRET_ROTATION_GRACE,
    create_app_client,
    create_server_client,
    revoke_client,
    rotate_client_secret,
)
from web.portal.auth import base_url
from web.portal.common import LoginRequired, PageForbidden, current_user, page, require

Session = NamedDependency[AsyncSession]


async def provide_console_session(request: Request, state: State
                                  ) -> AsyncGenerator[AsyncSession, None]:
    """The console's session, scoped to the logged-in staff member's partner. Only the
    login itself (who is this, which partner) is looked up outside the scope."""
    raw = request.session.get("user_id") if request.scope.get("session") else None
    who = None
    if raw:
        who = await state.pool.fetchrow(
            "SELECT kind, partner_id, disabled_at FROM users WHERE id = $1", uuid.UUID(raw))
    if who is None or who["disabled_at"] is not None:
        if raw:
            request.clear_session()
        raise LoginRequired(request.url.path)
    if who["kind"] != "partner_staff":
        raise PageForbidden("This page is not available to your account.")
    async with tenant_session(state.tenant_sessionmaker, who["partner_id"]) as session:
        yield session


async def staff(request: Request, db_session: AsyncSession, permission: str) -> User:
    user = require(request, await current_user(request, db_session), "partner_staff")
    if not can(user, permission):
        raise PageForbidden(f"Your role ({user.role}) does not allow this.")
    return user


async def own_client(db_session: AsyncSession, user: User, client_pk: uuid.UUID) -> OAuthClient:
    client = await db_session.scalar(select(OAuthClient).where(
        OAuthClient.id == client_pk, OAuthClient.partner_id == user.partner_id))
    if client is None:
        raise NotFoundException("No such client.")
    return client


async def own_staff(db_session: AsyncSession, user: User, staff_id: uuid.UUID) -> User:
    member = await db_session.scalar(select(User).where(
        User.id == staff_id, User.partner_id == user.partner_id,
        User.kind == "partner_staff"))
    if member is None:
        raise NotFoundException("No such staff member.")
    return member


def _no_such_role(user: User) -> Template:
    """A role the form does not offer: a mistake in the form, not a permission."""
    return page("message.html", status_code=400, user=user, title="No such role",
                message=f"Choose one of the roles: {', '.join(STAFF_ROLES)}.", field="role",
                link="/partner/staff")


class ConsolePages(Controller):
    path = "/partner"
    include_in_schema = False
    dependencies = {"db_session": Provide(provide_console_session)}

    @get("/")
    async def home(self, request: Request, db_session: Session) -> Template:
        user = await staff(request, db_session, "console.view")
        partner = await db_session.get_one(Partner, user.partner_id)
        figures = (await db_session.execute(text(
            """
            SELECT (SELECT count(*) FROM member_links WHERE partner_id = :p) AS members,
                   coalesce((SELECT -sum(p.amount) FROM postings p JOIN accounts a
                              ON a.id = p.account_id
                             WHERE a.partner_id = :p AND a.kind = 'partner_issuance'), 0)
                       AS points_outstanding_issued,
                   coalesce((SELECT sum(p.amount) FROM postings p JOIN accounts a
                              ON a.id = p.account_id
                             WHERE a.partner_id = :p AND a.kind = 'partner_redemption'), 0)
                       AS points_redeemed
            """), {"p": partner.id})).mappings().one()
        recent = (await db_session.execute(text(
            "SELECT id, kind, order_id, created_at FROM journal_entries WHERE partner_id = :p"
            " ORDER BY id DESC LIMIT 20"), {"p": partner.id})).mappings().all()
        prepaid_low = (await db_session.execute(text(
            "SELECT available FROM prepaid_balances WHERE partner_id = :p"
            " AND low_since IS NOT NULL"), {"p": partner.id})).mappings().first()
        timezone = (await db_session.execute(text(
            "SELECT timezone FROM coalition_settings"))).scalar_one()
        referral_figures = [referrals.figures_of(label, (await db_session.execute(text(
            "SELECT * FROM referral_figures_mine(:s, :e)"), {"s": start, "e": end}))
            .mappings().one())
            for label, start, end in referrals.report_periods(clock.now(), timezone)]
        return page("partner_home.html", user=user, partner=partner, figures=figures,
                    recent=recent, prepaid_low=prepaid_low,
                    referral_figures=referral_figures)

    @get("/clients")
    async def clients(self, request: Request, db_session: Session) -> Template:
        user = await staff(request, db_session, "clients.manage")
        rows = (await db_session.scalars(select(OAuthClient).where(
            OAuthClient.partner_id == user.partner_id).order_by(OAuthClient.created_at))).all()
        partner = await db_session.get_one(Partner, user.partner_id)
        return page("clients.html", user=user, clients=rows, scopes=PARTNER_SCOPES,
                    member_scopes=MEMBER_SCOPES, partner_name=partner.name,
                    grace_hours=int(SECRET_ROTATION_GRACE.total_seconds() // 3600))

    @post("/clients")
    async def create_client(self, request: Request, db_session: Session) -> Template:
        user = await staff(request, db_session, "clients.manage")
        form = await request.form()
        kind = form.get("client_type", "server")
        name = (form.get("name") or "").strip()[:200] or ("App" if kind == "app" else "Server")
        known = MEMBER_SCOPES if kind == "app" else PARTNER_SCOPES
        scopes = [s for s in form.getall("scope", []) if s in known]
        if not scopes:
            return page("message.html", status_code=400, user=user, title="Choose scopes",
                        message="Select at least one scope for the client.", field="scope",
                        link="/partner/clients")
        try:
            if kind == "app":
                client, secret = await create_app_client(
                    db_session, user.partner_id, name, scopes,
                    (form.get("redirect_uris") or "").splitlines(),
                    public=form.get("public") == "on")
            else:
                client, secret = await create_server_client(db_session, user.partner_id, name,
                                                            scopes)
        except DomainError as exc:
            return page("message.html", status_code=400, user=user, title=exc.title,
                        message=exc.detail, field=exc.field, link="/partner/clients")
        await accounts.audit(db_session, user, "client.create", target=client.client_id,
                             partner_id=user.partner_id, scopes=scopes)
        await db_session.commit()
        return page("secret.html", user=user, client=client, secret=secret)

    @post("/clients/{client_pk:uuid}/rotate")
    async def rotate(self, request: Request, db_session: Session,
                     client_pk: FromPath[uuid.UUID]) -> Template:
        user = await staff(request, db_session, "clients.manage")
        client = await own_client(db_session, user, client_pk)
        if client.public or client.revoked_at is not None:
            raise PageForbidden("This client has no secret to rotate.")
        secret = await rotate_client_secret(db_session, client)
        await accounts.audit(db_session, user, "client.rotate_secret", target=client.client_id,
                             partner_id=user.partner_id)
        await db_session.commit()
        return page("secret.html", user=user, client=client, secret=secret, rotated=True,
                    grace_hours=int(SECRET_ROTATION_GRACE.total_seconds() // 3600))

    @post("/clients/{client_pk:uuid}/revoke")
    async def revoke(self, request: Request, db_session: Session,
                     client_pk: FromPath[uuid.UUID]) -> Redirect:
        user = await staff(request, db_session, "clients.manage")
        client = await own_client(db_session, user, client_pk)
        await revoke_client(db_session, client)
        await accounts.audit(db_session, user, "client.revoke", target=client.client_id,
                             partner_id=user.partner_id)
        await db_session.commit()
        return Redirect("/partner/clients")

    @get("/staff")
    async def staff_list(self, request: Request, db_session: Session) -> Template:
        user = await staff(request, db_session, "staff.manage")
        rows = (await db_session.scalars(select(User).where(
            User.partner_id == user.partner_id).order_by(User.created_at))).all()
        roles = STAFF_ROLES if user.role == "owner" else tuple(r for r in STAFF_ROLES
                                                               if r != "owner")
        return page("staff.html", user=user, staff=rows, roles=roles)

    @post("/staff")
    async def invite(self, request: Request, db_session: Session) -> Response:
        user = await staff(request, db_session, "staff.manage")
        form = await request.form()
        email, role = (form.get("email") or "").strip(), form.get("role", "")
        if role not in STAFF_ROLES:
            return _no_such_role(user)
        if role == "owner" and user.role != "owner":
            raise PageForbidden("You cannot grant this role.")
        try:
            invited = await accounts.create_user(db_session, email, "partner_staff",
                                                 name=(form.get("name") or "").strip() or None,
                                                 partner_id=user.partner_id, role=role)
        except DomainError as exc:
            return page("message.html", status_code=exc.status, user=user, title="Cannot invite",
                        message=exc.detail, field=exc.field, link="/partner/staff")
        token = await accounts.issue_token(db_session, invited, "invite")
        partner = await db_session.get_one(Partner, user.partner_id)
        await accounts.audit(db_session, user, "staff.invite", target=email,
                             partner_id=user.partner_id, role=role)
        await db_session.commit()
        mailer: Mailer = request.app.state.mailer
        await mailer.send(email, f"You are invited to {partner.name} on Coalition",
                          f"{user.email} invited you to the partner console of {partner.name} "
                          f"as {role}. Set your password:\n\n{base_url(request)}/set-password?"
                          f"token={token}\n\nThe link works once and expires in 7 days.\n")
        return Redirect("/partner/staff")

    @post("/staff/{staff_id:uuid}/role")
    async def change_role(self, request: Request, db_session: Session,
                          staff_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db_session, "staff.manage")
        target = await own_staff(db_session, user, staff_id)
        role = (await request.form()).get("role", "")
        if role not in STAFF_ROLES:
            return _no_such_role(user)
        if user.role != "owner" and "owner" in (role, target.role):
            raise PageForbidden("You cannot grant or change this role.")
        await self._keep_an_owner(db_session, target, leaving_owner=role != "owner")
        target.role = role
        await accounts.audit(db_session, user, "staff.role", target=target.email,
                             partner_id=user.partner_id, role=role)
        await db_session.commit()
        return Redirect("/partner/staff")

    @post("/staff/{staff_id:uuid}/remove")
    async def remove(self, request: Request, db_session: Session,
                     staff_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db_session, "staff.manage")
        target = await own_staff(db_session, user, staff_id)
        if user.role != "owner" and target.role == "owner":
            raise PageForbidden("Only an owner can remove an owner.")
        await self._keep_an_owner(db_session, target, leaving_owner=True)
        target.disabled_at = clock.now()
        await accounts.audit(db_session, user, "staff.remove", target=target.email,
                             partner_id=user.partner_id)
        await db_session.commit()
        return Redirect("/partner/staff")

    @staticmethod
    async def _keep_an_owner(db_session: AsyncSession, target: User, leaving_owner: bool) -> None:
        if target.role != "owner" or not leaving_owner:
            return
        owners = await db_session.scalar(select(func.count()).select_from(User).where(
            User.partner_id == target.partner_id, User.role == "owner",
            User.disabled_at.is_(None)))
        if owners <= 1:
            raise PageForbidden("A partner must keep at least one owner.")
