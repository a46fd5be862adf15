"""HTTP face of the authorization server: token, revocation, introspection, discovery,
JWKS and userinfo. Authlib is synchronous, so its endpoints run in a worker thread on the
already-read form. Errors follow RFC 6749 section 5.2, not RFC 9457."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

import anyio
import msgspec
from litestar import Request, Response, get, post, route
from litestar.datastructures import State
from litestar.exceptions import ClientException

from coalition.uow import Database
from tenants import consents, throttle
from tenants.auth import TokenVerifier
from tenants.keys import published_keys
from tenants.oauth import FormRequest
from tenants.oauth_grants import MemberUser, member_claims
from tenants.oauth_server import CoalitionAuthorizationServer
from tenants.throttle import RateLimited
from web.portal.common import client_ip


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=msgspec.json.encode(body), status_code=status,
                    headers={"Cache-Control": "no-store", **(headers or {})},
                    media_type="application/json")


def _client_id(request: Request, form: object) -> str | None:
    """The client id a request authenticates as: the user of HTTP Basic credentials
    (form-encoded, RFC 6749 section 2.3.1), else the form's client_id. Only parsed here,
    for the throttle; Authlib judges the credentials."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        client_id, colon, _ = decoded.partition(":")
        return unquote(client_id.replace("+", " ")) if colon and client_id else None
    value = form.get("client_id") if hasattr(form, "get") else None
    return value if isinstance(value, str) and value else None


async def _run_endpoint(request: Request, state: State, name: str | None) -> Response:
    try:
        form = await request.form()
    except ClientException:
        # A body Litestar cannot parse as a form (a broken multipart one) is the client's
        # invalid_request here, not an RFC 9457 problem as elsewhere under the API.
        return _json({"error": "invalid_request",
                      "error_description": "The request body is not a valid form."}, 400)
    oauth_request = FormRequest(
        request.method, str(request.url), request.headers,
        list(form.multi_items()), list(request.query_params.multi_items()),
    )
    server: CoalitionAuthorizationServer = state.oauth_server
    if name is None:
        call = server.create_token_response
    else:
        def call(r: FormRequest) -> tuple:
            return server.create_endpoint_response(name, r)
    # Failed client authentications are limited per client id (tenants/throttle.py): past
    # the limit, 429 slow_down with Retry-After, before the credentials are looked at.
    client_id = _client_id(request, form)
    attempt: int | None = None
    db: Database = state.db
    if client_id is not None:
        try:
            attempt = await db.run(throttle.begin_client_authentication, client_id,
                                   client_ip(request))
        except RateLimited as exc:
            return _json({"error": "slow_down", "error_description": exc.detail}, 429,
                         {"Retry-After": str(exc.retry_after)})
    status, body, headers = await anyio.to_thread.run_sync(call, oauth_request)
    if attempt is not None and not (isinstance(body, dict)
                                    and body.get("error") == "invalid_client"):
        await db.run(throttle.client_authenticated, attempt)
    return _json(body, status, dict(headers))


@post("/oauth/token", tags=["OAuth 2.0"], status_code=200,
      summary="Issue tokens (client_credentials, authorization_code, refresh_token)",
      description="RFC 6749 sections 4.1.3, 4.4 and 6. Confidential clients authenticate "
      "with client_secret_basic or client_secret_post; public apps send client_id and the "
      "PKCE code_verifier. Refresh tokens rotate on every use; a reused refresh token "
      "revokes every token of that authorization. Errors follow RFC 6749 section 5.2. "
      "After 10 failed client authentications for one client id within 10 minutes, the "
      "answer is 429 {\"error\": \"slow_down\"} (RFC 8628) with Retry-After.")
async def oauth_token(request: Request, state: State) -> Response:
    return await _run_endpoint(request, state, None)


@post("/oauth/revoke", tags=["OAuth 2.0"], status_code=200,
      summary="Revoke an access or refresh token (RFC 7009)",
      description="The client the token was issued to authenticates and sends `token`. "
      "Answers 200 whether or not the token was known; the token stops working at once. "
      "Revoking a refresh token revokes the whole authorization.")
async def oauth_revoke(request: Request, state: State) -> Response:
    response = await _run_endpoint(request, state, "revocation")
    # This process forgets at once; the others hear the database's NOTIFY.
    state.token_verifier.forget_all()
    return response


@post("/oauth/introspect", tags=["OAuth 2.0"], status_code=200,
      summary="Introspect a token (RFC 7662)",
      description="Any confidential client of the token's partner may ask; tokens of other "
      "partners, unknown, expired or revoked tokens are reported as {\"active\": false}.")
async def oauth_introspect(request: Request, state: State) -> Response:
    return await _run_endpoint(request, state, "introspection")


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@get("/.well-known/oauth-authorization-server", tags=["OAuth 2.0"],
     summary="Authorization server metadata (RFC 8414)")
async def oauth_metadata(request: Request, state: State) -> dict:
    return state.oauth_server.metadata(_base(request))


@get("/.well-known/openid-configuration", tags=["OAuth 2.0"],
     summary="OpenID Connect discovery")
async def openid_configuration(request: Request, state: State) -> dict:
    return state.oauth_server.metadata(_base(request))


@get("/oauth/jwks", tags=["OAuth 2.0"], summary="Keys that sign ID tokens (JWKS)",
     description="The current key and recently retired ones: keys rotate every 30 days.")
async def jwks(state: State) -> Response:
    server: CoalitionAuthorizationServer = state.oauth_server

    def load() -> dict:
        with server.session_factory() as session:
            return published_keys(session)
    return Response(await anyio.to_thread.run_sync(load),
                    headers={"Cache-Control": "public, max-age=300"})


def _bearer_error(status: int, error: str, description: str) -> Response:
    challenge = f'Bearer realm="coalition", error="{error}", error_description="{description}"'
    return _json({"error": error, "error_description": description}, status,
                 {"WWW-Authenticate": challenge})


@route("/oauth/userinfo", http_method=["GET", "POST"], tags=["OAuth 2.0"],
       summary="OpenID Connect userinfo",
       description="Needs a member access token with the openid scope. Claims follow the "
       "consented scopes: profile (name, card_number), email (email, email_verified).")
async def userinfo(request: Request, state: State) -> Response:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _bearer_error(401, "invalid_request", "A bearer access token is required.")
    verifier: TokenVerifier = state.token_verifier
    principal = await verifier.verify(token.strip())
    if principal is None or principal.partner_status != "active":
        return _bearer_error(401, "invalid_token", "The access token is invalid or revoked.")
    if principal.member_id is None or "openid" not in principal.scopes:
        return _bearer_error(403, "insufficient_scope",
                             "Userinfo needs a member token with the openid scope.")
    found = await state.db.run(consents.member_login, principal.user_id)
    if found is None:
        return _bearer_error(401, "invalid_token", "The member account no longer exists.")
    user, card = found
    return _json(dict(member_claims(MemberUser.of(user, card), " ".join(principal.scopes))))


OAUTH_HANDLERS = [oauth_token, oauth_revoke, oauth_introspect, oauth_metadata,
                  openid_configuration, jwks, userinfo]
