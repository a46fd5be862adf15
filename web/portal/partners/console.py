"""The partner console: home, OAuth clients and staff. Every page checks the role's
permission (tenants.roles) and looks rows up within the user's own partner only; and every
use case runs in a Tx scoped to that partner (`acting(..., scoped=True)`, tenants/scope.py),
so PostgreSQL's row-level security refuses other partners' rows even if a filter were
forgotten."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import TypeVar

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template

from coalition.errors import DomainError, NotFound
from coalition.uow import Database
from tenants import clients, queries
from tenants import staff as people
from tenants.mail import Mailer
from tenants.models import STAFF_ROLES, User
from tenants.roles import can
from tenants.service import MEMBER_SCOPES, PARTNER_SCOPES, SECRET_ROTATION_GRACE
from web.portal.common import PageForbidden, acting, base_url, current_user, page, require

T = TypeVar("T")


async def staff(request: Request, db: Database, permission: str) -> User:
    """The signed-in staff member whose role allows `permission`, or the refusal."""
    user = require(request, await current_user(request, db), "partner_staff")
    if not can(user, permission):
        raise PageForbidden(f"Your role ({user.role}) does not allow this.")
    return user


async def refused_as_pages(action: Awaitable[T]) -> T:
    """A console use case's refusals as the console's pages: 404 for a row of another
    partner (or none), 403 for what the role does not allow."""
    try:
        return await action
    except NotFound as exc:
        raise NotFoundException(exc.detail) from None
    except (people.NotAllowed, clients.NoSecret) as exc:
        raise PageForbidden(exc.detail) from None


def _no_such_role(user: User) -> Template:
    """A role the form does not offer: a mistake in the form, not a permission."""
    return page("message.html", status_code=400, user=user, title="No such role",
                message=f"Choose one of the roles: {', '.join(STAFF_ROLES)}.", field="role",
                link="/partner/staff")


def _grace_hours() -> int:
    return int(SECRET_ROTATION_GRACE.total_seconds() // 3600)


class ConsolePages(Controller):
    path = "/partner"
    include_in_schema = False

    @get("/")
    async def home(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "console.view")
        home = await acting(db, user, scoped=True).run(queries.partner_home)
        return page("home/partner_home.html", user=user, partner=home.partner, figures=home.figures,
                    recent=home.recent, prepaid_low=home.prepaid_low,
                    referral_figures=home.referral_figures)

    @get("/clients")
    async def clients(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "clients.manage")
        partner_name, rows = await acting(db, user, scoped=True).run(clients.clients)
        return page("partners/clients.html", user=user, clients=rows, scopes=PARTNER_SCOPES,
                    member_scopes=MEMBER_SCOPES, partner_name=partner_name,
                    grace_hours=_grace_hours())

    @post("/clients")
    async def create_client(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "clients.manage")
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
            client, secret = await acting(db, user, scoped=True).run(
                clients.register, kind, name, scopes,
                (form.get("redirect_uris") or "").splitlines(), form.get("public") == "on")
        except DomainError as exc:
            return page("message.html", status_code=400, user=user, title=exc.title,
                        message=exc.detail, field=exc.field, link="/partner/clients")
        return page("partners/secret.html", user=user, client=client, secret=secret)

    @post("/clients/{client_pk:uuid}/rotate")
    async def rotate(self, request: Request, db: Database,
                     client_pk: FromPath[uuid.UUID]) -> Template:
        user = await staff(request, db, "clients.manage")
        client, secret = await refused_as_pages(
            acting(db, user, scoped=True).run(clients.rotate, client_pk))
        return page("partners/secret.html", user=user, client=client, secret=secret, rotated=True,
                    grace_hours=_grace_hours())

    @post("/clients/{client_pk:uuid}/revoke")
    async def revoke(self, request: Request, db: Database,
                     client_pk: FromPath[uuid.UUID]) -> Redirect:
        user = await staff(request, db, "clients.manage")
        await refused_as_pages(acting(db, user, scoped=True).run(clients.revoke, client_pk))
        return Redirect("/partner/clients")

    @get("/staff")
    async def staff_list(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "staff.manage")
        rows = await acting(db, user, scoped=True).run(people.staff)
        roles = STAFF_ROLES if user.role == "owner" else tuple(r for r in STAFF_ROLES
                                                               if r != "owner")
        return page("partners/staff.html", user=user, staff=rows, roles=roles)

    @post("/staff")
    async def invite(self, request: Request, db: Database) -> Response:
        user = await staff(request, db, "staff.manage")
        form = await request.form()
        email, role = (form.get("email") or "").strip(), form.get("role", "")
        if role not in STAFF_ROLES:
            return _no_such_role(user)
        if role == "owner" and user.role != "owner":
            raise PageForbidden("You cannot grant this role.")
        try:
            token, partner_name = await acting(db, user, scoped=True).run(
                people.invite, email, (form.get("name") or "").strip() or None, role)
        except DomainError as exc:
            return page("message.html", status_code=exc.status, user=user, title="Cannot invite",
                        message=exc.detail, field=exc.field, link="/partner/staff")
        mailer: Mailer = request.app.state.mailer
        await mailer.send(email, f"You are invited to {partner_name} on Coalition",
                          f"{user.email} invited you to the partner console of {partner_name} "
                          f"as {role}. Set your password:\n\n{base_url(request)}/set-password?"
                          f"token={token}\n\nThe link works once and expires in 7 days.\n")
        return Redirect("/partner/staff")

    @post("/staff/{staff_id:uuid}/role")
    async def change_role(self, request: Request, db: Database,
                          staff_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db, "staff.manage")
        role = (await request.form()).get("role", "")
        try:
            await refused_as_pages(acting(db, user, scoped=True).run(
                people.change_role, user.role, staff_id, role))
        except people.NoSuchRole:
            return _no_such_role(user)
        return Redirect("/partner/staff")

    @post("/staff/{staff_id:uuid}/remove")
    async def remove(self, request: Request, db: Database,
                     staff_id: FromPath[uuid.UUID]) -> Response:
        user = await staff(request, db, "staff.manage")
        await refused_as_pages(acting(db, user, scoped=True).run(
            people.remove, user.role, staff_id))
        return Redirect("/partner/staff")
