"""OAuth 2.0 / OpenID Connect authorization server (Authlib): client adapters, revocation,
introspection and the request wrapper. Grants live in oauth_grants, the server in
oauth_server.

Authlib's server is synchronous, so it runs in a worker thread with a synchronous
SQLAlchemy session (psycopg); the rest of the platform stays async. Access tokens are
opaque random strings stored as SHA-256 digests.
"""

from __future__ import annotations

import hmac
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta

from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Payload, OAuth2Request, TokenMixin, grants
from authlib.oauth2.rfc6749.authenticate_client import authenticate_client_secret_basic
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from coalition import clock
from tenants.models import OAuthClient, OAuthToken
from tenants.service import hash_secret

ACCESS_TOKEN_PREFIX = "cat_"  # noqa: S105  (a prefix, not a secret)
REFRESH_TOKEN_PREFIX = "crt_"  # noqa: S105
REFRESH_TOKEN_TTL = timedelta(days=30)


class ClientAdapter(ClientMixin):
    """Authlib's view of a stored client."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.row.redirect_uris or []
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        allowed = scope_to_list(self.row.scope) or []
        if not scope:
            return " ".join(allowed)
        requested = scope_to_list(scope) or []
        # Asking for a scope the client was not granted fails rather than narrowing silently.
        return " ".join(requested) if set(requested) <= set(allowed) else None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact string comparison, as RFC 9700 section 4.1.3 requires.
        return redirect_uri in (self.row.redirect_uris or [])

    def check_client_secret(self, client_secret: str) -> bool:
        offered = hash_secret(client_secret)
        current = self.row.client_secret_hash
        if current is not None and hmac.compare_digest(current, offered):
            return True
        previous, until = self.row.previous_secret_hash, self.row.previous_secret_expires_at
        return (previous is not None and until is not None and until > clock.now()
                and hmac.compare_digest(previous, offered))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.row.public:
            # A public app proves itself with PKCE; it may revoke its own tokens but
            # not introspect.
            return method == "none" and endpoint in ("token", "revocation")
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return self.row.client_type == "app" and response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.row.grant_types


class TokenAdapter(TokenMixin):
    """Authlib's view of a stored access (and refresh) token."""

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
        return self.row.expires_at <= clock.now()

    def is_revoked(self) -> bool:
        return self.row.revoked_at is not None or self.client.revoked_at is not None

    def get_user(self) -> None:
        return None

    def get_client(self) -> ClientAdapter:
        return ClientAdapter(self.client)


def _find_token(session: Session, token_string: str,
                hint: str | None = None) -> TokenAdapter | None:
    digest = hash_secret(token_string)
    column = (OAuthToken.refresh_token_hash if token_string.startswith(REFRESH_TOKEN_PREFIX)
              else OAuthToken.access_token_hash)
    found = session.execute(
        select(OAuthToken, OAuthClient)
        .join(OAuthClient, OAuthClient.id == OAuthToken.client_pk)
        .where(column == digest)
    ).first()
    return TokenAdapter(*found) if found else None


def revoke_family(session: Session, family_id: uuid.UUID | None) -> int:
    """Revoke every token descending from one authorization (code and refreshes)."""
    if family_id is None:
        return 0
    result = session.execute(
        update(OAuthToken)
        .where(OAuthToken.family_id == family_id, OAuthToken.revoked_at.is_(None))
        .values(revoked_at=clock.now())
    )
    return result.rowcount


def client_secret_basic(query_client: Callable[[str], ClientAdapter | None],
                        request: OAuth2Request) -> ClientAdapter | None:
    """Authlib's client_secret_basic, except that credentials which are not UTF-8 are no
    client's, as Authlib already takes credentials that are not base64 (it let the
    UnicodeDecodeError through: a 500)."""
    try:
        return authenticate_client_secret_basic(query_client, request)
    except UnicodeDecodeError:
        return None


def check_token_param(request: OAuth2Request) -> None:
    """Revocation and introspection need `token`. token_type_hint is only a hint, which a
    server may ignore when it tells a token's kind by itself (RFC 7009 and RFC 7662,
    section 2.1), as _find_token does by the prefix: an unknown hint is no error (Authlib
    answered it with a 401 unsupported_token_type, as if the client had not
    authenticated)."""
    if "token" not in request.form:
        raise InvalidRequestError("The token parameter is required.")


class TokenRevocation(RevocationEndpoint):
    """RFC 7009. Only the client the token was issued to may revoke it. Revoking a
    refresh token revokes the whole grant (every access token descending from it)."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    SUPPORTED_TOKEN_TYPES = ("access_token", "refresh_token")

    def check_params(self, request: OAuth2Request, client: ClientAdapter) -> None:
        check_token_param(request)

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenAdapter | None:
        with self.server.session_factory() as session:
            return _find_token(session, token_string)

    def revoke_token(self, token: TokenAdapter, request: OAuth2Request) -> None:
        # The database trigger on oauth_tokens tells every API process to forget the
        # token at once (NOTIFY coalition_auth).
        token_string = request.form.get("token", "")
        with self.server.session_factory() as session, session.begin():
            if token_string.startswith(REFRESH_TOKEN_PREFIX):
                revoke_family(session, token.row.family_id)
            row = session.get(OAuthToken, token.row.id)
            if row is not None and row.revoked_at is None:
                row.revoked_at = clock.now()


class TokenIntrospection(IntrospectionEndpoint):
    """RFC 7662. Any confidential client of the same partner may introspect the
    partner's tokens; tokens of other partners are reported as inactive."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    SUPPORTED_TOKEN_TYPES = ("access_token", "refresh_token")

    def check_params(self, request: OAuth2Request, client: ClientAdapter) -> None:
        check_token_param(request)

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenAdapter | None:
        with self.server.session_factory() as session:
            token = _find_token(session, token_string)
        if token is not None and token_string.startswith(REFRESH_TOKEN_PREFIX):
            row = token.row
            if (row.refresh_used_at is not None or row.refresh_expires_at is None
                    or row.refresh_expires_at <= clock.now()):
                return None
        return token

    def check_permission(self, token: TokenAdapter, client: ClientAdapter,
                         request: OAuth2Request) -> bool:
        return token.row.partner_id == client.row.partner_id

    def introspect_token(self, token: TokenAdapter) -> dict:
        row = token.row
        body = {
            "active": True,
            "client_id": token.client.client_id,
            "scope": row.scope,
            "token_type": "Bearer",
            # A member token's subject is the member; a server token's is the partner.
            "sub": str(row.member_id or row.partner_id),
            "iat": int(row.issued_at.timestamp()),
            "exp": int(row.expires_at.timestamp()),
            "iss": self.server.issuer_for(None),
        }
        if row.member_id is not None:
            body["member_id"] = str(row.member_id)
        return body


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
