"""/oauth/authorize: a member signs in and consents to a partner's app (authorization code
with PKCE). Errors before the client and redirect URI are known are shown as a page;
after that they go back to the app as RFC 6749 section 4.1.2.1 parameters."""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlencode, urlsplit

import anyio
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.util import scope_to_list
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.response import Redirect

from coalition.uow import Database
from tenants import consents, queries
from tenants.models import OAuthClient, User
from tenants.oauth import ClientAdapter, FormRequest
from tenants.oauth_grants import MemberUser
from tenants.oauth_server import CoalitionAuthorizationServer
from tenants.service import MEMBER_SCOPES
from web.headers import csp_with_form_targets
from web.portal.common import acting, current_user, page

NOT_PARAMS = {"decision", "_csrf_token"}


def _oauth_request(request: Request, params: list[tuple[str, str]]) -> FormRequest:
    url = f"{str(request.base_url).rstrip('/')}/oauth/authorize?{urlencode(params)}"
    return FormRequest("GET", url, request.headers, [], params)


def _respond(status: int, body: object, headers: list[tuple[str, str]]) -> Response:
    location = dict(headers).get("Location")
    if status == 302 and location:
        return Redirect(location, status_code=302)
    # No verified redirect URI: tell the person, never bounce to an unknown address.
    error = body if isinstance(body, dict) else {}
    return page("accounts/oauth_error.html", status_code=400,
                error=error.get("error", "invalid_request"),
                description=error.get("error_description", "The request is not valid."))


def redirect_origins(uris: list[str]) -> list[str]:
    return [f"{parts.scheme}://{parts.netloc}" for parts in map(urlsplit, uris)]


def form_targets_policy(uris: list[str]) -> dict[str, str]:
    """Headers for a page whose form ends in a redirect to these URIs (see headers.py)."""
    return {"Content-Security-Policy": csp_with_form_targets(redirect_origins(uris))}


async def login_policy(db: Database, next_path: str | None) -> dict[str, str] | None:
    """The login page on the way to /oauth/authorize may end, through a remembered
    consent, in a redirect to the app: allow the app's registered origins there."""
    if not next_path or not next_path.startswith("/oauth/authorize?"):
        return None
    client_id = parse_qs(urlsplit(next_path).query).get("client_id", [""])[0]
    if "\x00" in client_id:
        # No client's id, and PostgreSQL text cannot hold it (the query would fail).
        return None
    uris = await db.run(consents.app_redirect_uris, client_id)
    return form_targets_policy(uris) if uris else None


async def _member_user(db: Database, request: Request, user: User) -> MemberUser:
    card = await db.run(consents.member_card, user.member_id)
    return MemberUser.of(user, card, request.session.get("auth_time"))


class AuthorizePages(Controller):
    path = "/oauth/authorize"
    include_in_schema = False

    async def _grant(self, state: State, oauth_request: FormRequest,
                     end_user: MemberUser | None) -> tuple[object | None, Response | None]:
        server: CoalitionAuthorizationServer = state.oauth_server
        try:
            grant = await anyio.to_thread.run_sync(server.get_consent_grant, oauth_request,
                                                   end_user)
        except OAuth2Error as error:
            return None, _respond(*server.handle_error_response(oauth_request, error))
        except ValueError:
            # Authlib refuses to build an error whose description would repeat characters
            # RFC 6749 forbids there (a quote or a non-ASCII letter in an unregistered
            # redirect_uri or an unknown response_type). The request is invalid all the
            # same, and no redirect URI is verified: shown, not redirected.
            return None, _respond(400, {"error": "invalid_request"}, [])
        return grant, None

    async def _issue(self, state: State, oauth_request: FormRequest, grant: object,
                     member: MemberUser | None) -> Response:
        server: CoalitionAuthorizationServer = state.oauth_server
        args = await anyio.to_thread.run_sync(
            lambda: server.create_authorization_response(oauth_request, member, grant))
        return _respond(*args)

    @get("/")
    async def ask(self, request: Request, db: Database, state: State) -> Response:
        params = list(request.query_params.multi_items())
        oauth_request = _oauth_request(request, params)
        user = await current_user(request, db)
        member = (await _member_user(db, request, user)
                  if user and user.kind == "member" else None)
        grant, failed = await self._grant(state, oauth_request, member)
        if failed:
            return failed
        if user is None:
            target = f"/oauth/authorize?{urlencode(params)}"
            return Redirect(f"/login?next={quote(target)}")
        if member is None:
            return page("accounts/oauth_error.html", status_code=403, user=user,
                        error="member_account_required",
                        description="Only a member account can connect a brand's app. "
                        "Log out and sign in with your member account.")
        client: ClientAdapter = grant.request.client
        scopes = scope_to_list(grant.request.scope) or []
        consent = await db.run(consents.remembered_scope, client.row.id, member.member_id)
        prompt = set((request.query_params.get("prompt") or "").split())
        if consent is not None and set(scopes) <= set(consent.split()) and "consent" not in prompt:
            return await self._issue(state, oauth_request, grant, member)
        partner = await db.run(queries.partner, client.row.partner_id)
        return page("accounts/consent.html", headers=form_targets_policy(client.row.redirect_uris),
                    user=user, partner=partner, client=client.row,
                    params=params, redirect_host=urlsplit(grant.request.payload.redirect_uri
                                                          or client.get_default_redirect_uri()
                                                          or "").netloc,
                    scopes=[(s, MEMBER_SCOPES[s].format(partner=partner.name)) for s in scopes])

    @post("/")
    async def decide(self, request: Request, db: Database, state: State) -> Response:
        form = await request.form()
        params = [(k, v) for k, v in form.multi_items() if k not in NOT_PARAMS]
        oauth_request = _oauth_request(request, params)
        user = await current_user(request, db)
        if user is None or user.kind != "member":
            target = f"/oauth/authorize?{urlencode(params)}"
            return Redirect(f"/login?next={quote(target)}")
        member = await _member_user(db, request, user)
        grant, failed = await self._grant(state, oauth_request, member)
        if failed:
            return failed
        if form.get("decision") != "allow":
            return await self._issue(state, oauth_request, grant, None)
        client: OAuthClient = grant.request.client.row
        await acting(db, user).run(consents.record_consent, user.member_id, client.partner_id,
                                   client.id, client.client_id, grant.request.scope or "")
        return await self._issue(state, oauth_request, grant, member)
