"""Staff single sign-on pages: the partner's provider settings in the console, the
company sign-in button on the login page, and the callback from the provider."""

from __future__ import annotations

import dataclasses

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery
from litestar.response import Redirect, Template
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.errors import DomainError
from tenants import accounts, sso
from tenants.keys import SecretBox
from tenants.models import IdentityProvider, Partner
from web.portal.auth import base_url
from web.portal.common import HOME, page
from web.portal.console import provide_console_session, staff
from web.sessions import start_session

Session = NamedDependency[AsyncSession]
PENDING_KEY = "sso_pending"


def _box(request: Request) -> SecretBox:
    return request.app.state.oauth_server.box


def _callback(request: Request) -> str:
    return f"{base_url(request)}/sso/callback"


def _refuse(message: str, status: int = 403) -> Template:
    return page("login.html", status_code=status, error=message, next="")


class SsoSettingsPages(Controller):
    path = "/partner/sso"
    include_in_schema = False
    dependencies = {"db_session": Provide(provide_console_session)}

    @get("/")
    async def show(self, request: Request, db_session: Session) -> Template:
        user = await staff(request, db_session, "sso.manage")
        provider = await db_session.get(IdentityProvider, user.partner_id)
        partner = await db_session.get_one(Partner, user.partner_id)
        return page("sso.html", user=user, provider=provider, partner=partner,
                    callback=_callback(request))

    @post("/")
    async def save(self, request: Request, db_session: Session) -> Response:
        user = await staff(request, db_session, "sso.manage")
        form = await request.form()
        partner = await db_session.get_one(Partner, user.partner_id)
        try:
            provider = await sso.configure(
                db_session, _box(request), user.partner_id, issuer=form.get("issuer", ""),
                client_id=form.get("client_id", ""), client_secret=form.get("client_secret"),
                enabled=form.get("enabled") == "on")
        except DomainError as exc:     # raised before anything is written
            return page("sso.html", status_code=400, user=user, partner=partner,
                        provider=await db_session.get(IdentityProvider, user.partner_id),
                        callback=_callback(request), errors={exc.field: exc.detail},
                        form=dict(form))
        await accounts.audit(db_session, user, "sso.configure", target=provider.issuer,
                             partner_id=user.partner_id, enabled=provider.enabled)
        await db_session.commit()
        return Redirect("/partner/sso")


class SsoLoginPages(Controller):
    path = "/sso"
    include_in_schema = False

    @get("/start")
    async def begin(self, request: Request, db_session: Session,
                    company: FromQuery[str] = "") -> Response:
        found = (await db_session.execute(
            select(Partner, IdentityProvider)
            .join(IdentityProvider, IdentityProvider.partner_id == Partner.id)
            .where(Partner.slug == company.strip().lower(), Partner.status == "active",
                   IdentityProvider.enabled))).first()
        if found is None:
            return _refuse("Single sign-on is not set up for this company id.", 404)
        try:
            url, pending = await sso.start(found[1], _box(request), _callback(request))
        except sso.SsoFailed as exc:
            return _refuse(str(exc), 502)
        request.session[PENDING_KEY] = dataclasses.asdict(pending)
        return Redirect(url)

    @get("/callback")
    async def callback(self, request: Request, db_session: Session) -> Response:
        # "state" is a reserved parameter name in Litestar handlers: read the query here.
        code = request.query_params.get("code", "")
        state = request.query_params.get("state", "")
        error = request.query_params.get("error", "")
        raw = request.session.pop(PENDING_KEY, None) if request.session else None
        pending = sso.PendingSignIn(**raw) if raw else None
        if pending is None or pending.expired() or not state or state != pending.state:
            return _refuse("This sign-in link is not valid any more. Start again.", 400)
        if error or not code:
            return _refuse(f"The company sign-in was not completed ({error or 'no code'}).")
        provider = await db_session.scalar(select(IdentityProvider).where(
            IdentityProvider.partner_id == pending.partner_id, IdentityProvider.enabled))
        if provider is None:
            return _refuse("Single sign-on is no longer enabled for this company.")
        try:
            user = await sso.finish(db_session, provider, _box(request), pending, code,
                                    _callback(request))
        except sso.SsoFailed as exc:
            await accounts.audit(db_session, None, "staff.sso_refused",
                                 partner_id=provider.partner_id, reason=str(exc))
            await db_session.commit()
            return _refuse(str(exc))
        accounts.mark_verified(user)
        await accounts.audit(db_session, user, "staff.sso_login", target=user.email,
                             partner_id=user.partner_id, issuer=provider.issuer)
        await db_session.commit()
        # A new session id, as at a password login (web/sessions.py).
        start_session(request, {"user_id": str(user.id), "auth_time": clock.timestamp(),
                                "sso": provider.issuer})
        return Redirect(HOME[user.kind])
