"""Partner API authentication (bearer tokens) and per-route scope guards."""

from __future__ import annotations

import uuid

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from coalition.errors import NotFound
from coalition.uow import Actor, Database, Runner
from tenants.auth import PartnerPrincipal, TokenVerifier


class BearerTokenMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException("A bearer access token is required.")
        verifier: TokenVerifier = connection.app.state.token_verifier
        principal = await verifier.verify(token.strip())
        if principal is None:
            raise NotAuthorizedException(
                "The access token is invalid, expired or revoked.",
                headers={"WWW-Authenticate": 'Bearer realm="coalition", error="invalid_token"'},
            )
        if principal.partner_status != "active":
            raise PermissionDeniedException(
                f"The partner account is {principal.partner_status}; API access is blocked.",
                extra={"slug": "partner-not-active"},
            )
        return AuthenticationResult(user=principal, auth=token)


def ensure_acting_for(principal: PartnerPrincipal, member_id: uuid.UUID) -> None:
    """A member token acts only for its own member: any other member is "not found"."""
    if principal.member_id is not None and principal.member_id != member_id:
        raise NotFound("member-not-found", "Member not found",
                       "This token acts for another member.", field="member_id")


async def requires_scope(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Guard: a server token must hold every scope in the handler's `opt["scopes"]`; a
    member token (an app acting for one member) every scope in `opt["member_scopes"]`,
    and routes without member scopes are closed to member tokens. A coroutine although
    it awaits nothing: Litestar runs a plain-function guard in a worker thread, a thread
    hop on every API request."""
    if connection.scope["method"] == "OPTIONS":
        # The authentication middleware lets OPTIONS through without a token (as CORS
        # preflights need), so there is no principal; the generated OPTIONS handler only
        # lists the route's methods in Allow, which the published schema says anyway.
        return
    principal: PartnerPrincipal = connection.user
    if principal.member_id is not None:
        needed_scopes = handler.opt.get("member_scopes")
        if needed_scopes is None:
            raise PermissionDeniedException(
                "This route is for the partner's server; a member-scoped token cannot use it.",
                extra={"slug": "insufficient-scope"},
                headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
            )
    else:
        needed_scopes = handler.opt.get("scopes", ())
    missing = [s for s in needed_scopes if s not in principal.scopes]
    if missing:
        needed = " ".join(missing)
        raise PermissionDeniedException(
            f"This route needs the scope {' '.join(missing)}.",
            extra={"slug": "insufficient-scope"},
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'},
        )


def as_client(db: Database, principal: PartnerPrincipal, *, scoped: bool = False) -> Runner:
    """Run use cases as the bearer token's partner: the audit rows name the API client
    (and the member a member-scoped token acts for); `scoped` puts the Tx under
    row-level security for the partner (tenants/scope.py)."""
    return db.acting(Actor(principal.actor, principal.user_id), partner_id=principal.partner_id,
                     scoped=scoped)
