"""The authorization server: which grants and endpoints it offers, how tokens are stored,
and its RFC 8414 / OpenID Connect discovery metadata."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from sqlalchemy import select
from sqlalchemy.orm import Session

from coalition import clock
from tenants.keys import SecretBox
from tenants.models import OAuthClient, OAuthToken, Partner
from tenants.oauth import (
    ACCESS_TOKEN_PREFIX,
    REFRESH_TOKEN_PREFIX,
    REFRESH_TOKEN_TTL,
    ClientAdapter,
    ClientCredentialsGrant,
    FormRequest,
    TokenIntrospection,
    TokenRevocation,
    client_secret_basic,
)
from tenants.oauth_grants import (
    AuthorizationCodeGrant,
    CoalitionOpenIDCode,
    MemberUser,
    RefreshTokenGrant,
    RequireS256,
)
from tenants.service import MEMBER_SCOPES, PARTNER_SCOPES, hash_secret

# Said when Authlib gives an error no description. Fixed text: a description must stay
# within RFC 6749 section 5.2's characters, so it never repeats what the client sent.
ERROR_DESCRIPTIONS = {
    "invalid_request": "The request is missing a required parameter or has a malformed one.",
    "invalid_client": "Client authentication failed.",
    "invalid_grant": "The code, refresh token or token is invalid, expired, revoked, or was "
                     "issued to another client.",
    "unauthorized_client": "The client may not use this grant type.",
    "unsupported_grant_type": "grant_type must be authorization_code, refresh_token or "
                              "client_credentials.",
    "invalid_scope": "The requested scope is invalid, unknown, or more than the client may "
                     "have.",
}


class CoalitionAuthorizationServer(AuthorizationServer):
    def __init__(self, session_factory: Callable[[], Session], access_token_ttl: int,
                 box: SecretBox, issuer: str = "",
                 refresh_token_ttl: timedelta = REFRESH_TOKEN_TTL) -> None:
        super().__init__(scopes_supported=[*PARTNER_SCOPES, *MEMBER_SCOPES])
        self.session_factory = session_factory
        self.access_token_ttl = access_token_ttl
        self.refresh_token_ttl = refresh_token_ttl
        self.box = box
        self.issuer = issuer
        # Called (from the worker thread) after a grant revoked tokens, so this process
        # stops trusting cached ones at once; other processes hear the NOTIFY.
        self.on_tokens_revoked: Callable[[], None] | None = None
        self.register_client_auth_method("client_secret_basic", client_secret_basic)
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(AuthorizationCodeGrant, [RequireS256(), CoalitionOpenIDCode()])
        self.register_grant(RefreshTokenGrant)
        self.register_endpoint(TokenRevocation)
        self.register_endpoint(TokenIntrospection)
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda *a, **k: ACCESS_TOKEN_PREFIX
                + secrets.token_urlsafe(32),
                refresh_token_generator=lambda *a, **k: REFRESH_TOKEN_PREFIX
                + secrets.token_urlsafe(32),
                expires_generator=lambda client, grant_type: access_token_ttl,
            ),
        )

    def tokens_revoked(self) -> None:
        if self.on_tokens_revoked is not None:
            self.on_tokens_revoked()

    def issuer_for(self, request: OAuth2Request | None) -> str:
        """The configured public URL, else the URL this request came in on."""
        if self.issuer or request is None:
            return self.issuer
        parts = urlsplit(request.uri)
        return f"{parts.scheme}://{parts.netloc}"

    def query_client(self, client_id: str) -> ClientAdapter | None:
        if "\x00" in client_id:
            # No client's id, and PostgreSQL text cannot hold it (the query would fail).
            return None
        with self.session_factory() as session:
            row = session.scalar(
                select(OAuthClient)
                .join(Partner, Partner.id == OAuthClient.partner_id)
                .where(
                    OAuthClient.client_id == client_id,
                    OAuthClient.revoked_at.is_(None),
                    Partner.status == "active",
                )
            )
            return ClientAdapter(row) if row else None

    def save_token(self, token: dict, request: OAuth2Request) -> None:
        client: OAuthClient = request.client.row
        user: MemberUser | None = request.user
        family_id = None
        if request.authorization_code is not None:
            family_id = request.authorization_code.row.family_id
        elif request.refresh_token is not None:
            family_id = request.refresh_token.row.family_id
        now = clock.now()
        refresh = token.get("refresh_token")
        with self.session_factory() as session, session.begin():
            session.add(
                OAuthToken(
                    client_pk=client.id,
                    partner_id=client.partner_id,
                    member_id=user.member_id if user else None,
                    user_id=user.user_id if user else None,
                    scope=token.get("scope", ""),
                    access_token_hash=hash_secret(token["access_token"]),
                    expires_at=now + timedelta(seconds=token["expires_in"]),
                    refresh_token_hash=hash_secret(refresh) if refresh else None,
                    refresh_expires_at=now + self.refresh_token_ttl if refresh else None,
                    family_id=family_id,
                )
            )

    def metadata(self, base_url: str) -> dict:
        """RFC 8414 authorization server metadata; also the OpenID provider metadata."""
        methods = ["client_secret_basic", "client_secret_post"]
        issuer = self.issuer or base_url
        return {
            "issuer": issuer,
            "authorization_endpoint": f"{base_url}/oauth/authorize",
            "token_endpoint": f"{base_url}/oauth/token",
            "revocation_endpoint": f"{base_url}/oauth/revoke",
            "introspection_endpoint": f"{base_url}/oauth/introspect",
            "userinfo_endpoint": f"{base_url}/oauth/userinfo",
            "jwks_uri": f"{base_url}/oauth/jwks",
            "grant_types_supported": ["authorization_code", "refresh_token",
                                      "client_credentials"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": [*MEMBER_SCOPES, *PARTNER_SCOPES],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce",
                                 "name", "email", "email_verified", "card_number"],
            "token_endpoint_auth_methods_supported": [*methods, "none"],
            "revocation_endpoint_auth_methods_supported": [*methods, "none"],
            "introspection_endpoint_auth_methods_supported": methods,
            "service_documentation": f"{base_url}/schema",
        }

    def create_oauth2_request(self, request: FormRequest) -> FormRequest:
        return request

    def handle_response(self, status: int, body: dict, headers: list[tuple[str, str]]):
        return status, body, headers

    def handle_error_response(self, request: OAuth2Request, error: OAuth2Error) -> tuple:
        """Every error says what is wrong (error_description), where Authlib sends some
        codes bare; an error redirected to the app (body "") is left as it is."""
        status, body, headers = error(self.get_error_uri(request, error))
        if isinstance(body, dict) and not body.get("error_description"):
            body["error_description"] = ERROR_DESCRIPTIONS.get(
                body.get("error"), "The request was refused.")
        return self.handle_response(status, body, headers)

    def send_signal(self, name: str, *args: object, **kwargs: object) -> None:
        return None

