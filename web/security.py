"""Partner API authentication (bearer tokens) and per-route scope guards."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

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


def requires_scope(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Guard: the token must hold every scope named in the handler's `opt["scopes"]`."""
    principal: PartnerPrincipal = connection.user
    missing = [s for s in handler.opt.get("scopes", ()) if s not in principal.scopes]
    if missing:
        needed = " ".join(missing)
        raise PermissionDeniedException(
            f"This route needs the scope {' '.join(missing)}.",
            extra={"slug": "insufficient-scope"},
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'},
        )
