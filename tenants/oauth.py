"""OAuth 2.0 authorization server (Authlib) for partner servers.

Authlib's server is synchronous, so it runs in a worker thread with a synchronous
SQLAlchemy session (psycopg); the rest of the platform stays async. Access tokens are
opaque random strings stored as SHA-256 digests.
"""

from __future__ import annotations

import hmac
import secrets
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Payload, OAuth2Request, TokenMixin, grants
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from sqlalchemy import select
from sqlalchemy.orm import Session

from tenants.models import OAuthClient, OAuthToken, Partner
from tenants.service import PARTNER_SCOPES, hash_secret

ACCESS_TOKEN_PREFIX = "cat_"  # noqa: S105  (a prefix, not a secret)


class ClientAdapter(ClientMixin):
    """Authlib's view of a stored client."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        allowed = scope_to_list(self.row.scope) or []
        if not scope:
            return " ".join(allowed)
        requested = scope_to_list(scope) or []
        # Asking for a scope the client was not granted fails rather than narrowing silently.
        return " ".join(requested) if set(requested) <= set(allowed) else None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        offered = hash_secret(client_secret)
        current = self.row.client_secret_hash
        if current is not None and hmac.compare_digest(current, offered):
            return True
        previous, until = self.row.previous_secret_hash, self.row.previous_secret_expires_at
        return (previous is not None and until is not None and until > datetime.now(UTC)
                and hmac.compare_digest(previous, offered))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.row.grant_types


class TokenAdapter(TokenMixin):
    """Authlib's view of a stored access token."""

    def __init__(self, row: OAuthToken, client: OAuthClient) -> None:
        self.row = row
        self.client = client

    def check_client(self, client: ClientAdapter) -> bool:
        return client.row.id == self.row.client_pk

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return int((self.row.expires_at - self.row.issued_at).total_seconds())

    def is_expired(self) -> bool:
        return self.row.expires_at <= datetime.now(UTC)

    def is_revoked(self) -> bool:
        return self.row.revoked_at is not None or self.client.revoked_at is not None

    def get_user(self) -> None:
        return None

    def get_client(self) -> ClientAdapter:
        return ClientAdapter(self.client)


def _find_token(session: Session, token_string: str) -> TokenAdapter | None:
    found = session.execute(
        select(OAuthToken, OAuthClient)
        .join(OAuthClient, OAuthClient.id == OAuthToken.client_pk)
        .where(OAuthToken.access_token_hash == hash_secret(token_string))
    ).first()
    return TokenAdapter(*found) if found else None


class TokenRevocation(RevocationEndpoint):
    """RFC 7009. Only the client the token was issued to may revoke it."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    SUPPORTED_TOKEN_TYPES = ("access_token",)

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenAdapter | None:
        with self.server.session_factory() as session:
            return _find_token(session, token_string)

    def revoke_token(self, token: TokenAdapter, request: OAuth2Request) -> None:
        # The database trigger on oauth_tokens tells every API process to forget the
        # token at once (NOTIFY coalition_auth).
        with self.server.session_factory() as session, session.begin():
            row = session.get(OAuthToken, token.row.id)
            if row is not None and row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)


class TokenIntrospection(IntrospectionEndpoint):
    """RFC 7662. Any client of the same partner may introspect the partner's tokens;
    tokens of other partners are reported as inactive."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    SUPPORTED_TOKEN_TYPES = ("access_token",)

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenAdapter | None:
        with self.server.session_factory() as session:
            return _find_token(session, token_string)

    def check_permission(self, token: TokenAdapter, client: ClientAdapter,
                         request: OAuth2Request) -> bool:
        return token.row.partner_id == client.row.partner_id

    def introspect_token(self, token: TokenAdapter) -> dict:
        return {
            "active": True,
            "client_id": token.client.client_id,
            "scope": token.row.scope,
            "token_type": "Bearer",
            "sub": str(token.row.partner_id),
            "iat": int(token.row.issued_at.timestamp()),
            "exp": int(token.row.expires_at.timestamp()),
            "iss": self.server.issuer,
        }


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class FormPayload(OAuth2Payload):
    def __init__(self, form: list[tuple[str, str]], query: list[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list] = defaultdict(list)
        for key, value in [*query, *form]:
            self._datalist[key].append(value)
        self._data = {key: values[0] for key, values in self._datalist.items()}

    @property
    def data(self) -> dict:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list]:
        return self._datalist


class FormRequest(OAuth2Request):
    """An already-read HTTP request, so Authlib's sync code never awaits the body."""

    def __init__(self, method: str, url: str, headers: dict[str, str],
                 form: list[tuple[str, str]], query: list[tuple[str, str]]) -> None:
        super().__init__(method, url, headers=headers)
        self._form = dict(form)
        self._args = dict(query)
        self.payload = FormPayload(form, query)

    @property
    def args(self) -> dict:
        return self._args

    @property
    def form(self) -> dict:
        return self._form


class CoalitionAuthorizationServer(AuthorizationServer):
    def __init__(self, session_factory: Callable[[], Session], access_token_ttl: int,
                 issuer: str = "") -> None:
        super().__init__(scopes_supported=list(PARTNER_SCOPES))
        self.session_factory = session_factory
        self.access_token_ttl = access_token_ttl
        self.issuer = issuer
        self.register_grant(ClientCredentialsGrant)
        self.register_endpoint(TokenRevocation)
        self.register_endpoint(TokenIntrospection)
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda *a, **k: ACCESS_TOKEN_PREFIX
                + secrets.token_urlsafe(32),
                expires_generator=lambda client, grant_type: access_token_ttl,
            ),
        )

    def query_client(self, client_id: str) -> ClientAdapter | None:
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
        with self.session_factory() as session, session.begin():
            session.add(
                OAuthToken(
                    client_pk=client.id,
                    partner_id=client.partner_id,
                    scope=token.get("scope", ""),
                    access_token_hash=hash_secret(token["access_token"]),
                    expires_at=datetime.now(UTC) + timedelta(seconds=token["expires_in"]),
                )
            )

    def metadata(self, base_url: str) -> dict:
        """RFC 8414 authorization server metadata."""
        methods = ["client_secret_basic", "client_secret_post"]
        return {
            "issuer": self.issuer or base_url,
            "token_endpoint": f"{base_url}/oauth/token",
            "revocation_endpoint": f"{base_url}/oauth/revoke",
            "introspection_endpoint": f"{base_url}/oauth/introspect",
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "scopes_supported": list(PARTNER_SCOPES),
            "token_endpoint_auth_methods_supported": methods,
            "revocation_endpoint_auth_methods_supported": methods,
            "introspection_endpoint_auth_methods_supported": methods,
            "service_documentation": f"{base_url}/schema",
        }

    def create_oauth2_request(self, request: FormRequest) -> FormRequest:
        return request

    def handle_response(self, status: int, body: dict, headers: list[tuple[str, str]]):
        return status, body, headers

    def send_signal(self, name: str, *args: object, **kwargs: object) -> None:
        return None
