"""Staff single sign-on pages: the partner's provider settings in the console, the
company sign-in button on the login page, and the callback from the provider."""

from __future__ import annotations

import dataclasses

from litestar import Controller, Request, Response, get, post
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from coalition import clock
from coalition.errors import DomainError
from coalition.uow import Database
from tenants import sso
from tenants.keys import SecretBox
from web.portal.common import HOME, acting, base_url, page
from web.portal.partners.console import staff
from web.sessions import start_session

PENDING_KEY = "sso_pending"


def _box(request: Request) -> SecretBox:
    return request.app.state.oauth_server.box


def _callback(request: Request) -> str:
    return f"{base_url(request)}/sso/callback"


def _refuse(message: str, status: int = 403) -> Template:
    return page("accounts/login.html", status_code=status, error=message, next="")


class SsoSettingsPages(Controller):
    path = "/partner/sso"
    include_in_schema = False

    @get("/")
    async def show(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "sso.manage")
        provider, partner = await acting(db, user, scoped=True).run(sso.settings_of)
        return page("accounts/sso.html", user=user, provider=provider, partner=partner,
                    callback=_callback(request))

    @post("/")
    async def save(self, request: Request, db: Database) -> Response:
        user = await staff(request, db, "sso.manage")
        form = await request.form()
        console = acting(db, user, scoped=True)
        try:
            await console.run(
                sso.save_settings, _box(request), issuer=form.get("issuer", ""),
                client_id=form.get("client_id", ""), client_secret=form.get("client_secret"),
                enabled=form.get("enabled") == "on")
        except DomainError as exc:     # raised before anything is written
            provider, partner = await console.run(sso.settings_of)
            return page("accounts/sso.html", status_code=400, user=user, partner=partner,
                        provider=provider, callback=_callback(request),
                        errors={exc.field: exc.detail}, form=dict(form))
        return Redirect("/partner/sso")


class SsoLoginPages(Controller):
    path = "/sso"
    include_in_schema = False

    @get("/start")
    async def begin(self, request: Request, db: Database,
                    company: FromQuery[str] = "") -> Response:
        provider = await db.run(sso.provider_for_company, company)
        if provider is None:
            return _refuse("Single sign-on is not set up for this company id.", 404)
        try:
            url, pending = await sso.start(provider, _box(request), _callback(request))
        except sso.SsoFailed as exc:
            return _refuse(str(exc), 502)
        request.session[PENDING_KEY] = dataclasses.asdict(pending)
        return Redirect(url)

    @get("/callback")
    async def callback(self, request: Request, db: Database) -> Response:
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
        provider = await db.run(sso.enabled_provider, pending.partner_id)
        if provider is None:
            return _refuse("Single sign-on is no longer enabled for this company.")
        user = await db.run(sso.sign_in, provider, _box(request), pending, code,
                            _callback(request))
        if isinstance(user, sso.SsoFailed):   # its refusal is audited
            return _refuse(str(user))
        # A new session id, as at a password login (web/sessions.py).
        start_session(request, {"user_id": str(user.id), "auth_time": clock.timestamp(),
                                "sso": provider.issuer})
        return Redirect(HOME[user.kind])
