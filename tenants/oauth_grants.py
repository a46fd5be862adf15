"""The member-facing grants: authorization code with PKCE (S256 only), OpenID Connect ID
tokens, and refresh tokens that rotate on every use with reuse detection."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from authlib.oauth2.rfc6749 import OAuth2Request, grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.core.grants.util import create_half_hash
from joserfc import jwt
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from coalition import clock
from coalition.models import Member
from tenants.keys import ID_TOKEN_TTL, current_signing_key
from tenants.models import AuthorizationCode, MemberConsent, OAuthClient, OAuthToken, User
from tenants.oauth import ClientAdapter, TokenAdapter, _find_token, revoke_family
from tenants.service import hash_secret

log = logging.getLogger(__name__)
CODE_TTL = timedelta(seconds=60)
APP_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


@dataclass(frozen=True)
class MemberUser:
    """The member on whose behalf an app acts."""

    user_id: uuid.UUID
    member_id: uuid.UUID
    email: str
    name: str | None
    email_verified: bool
    card_number: str | None
    auth_time: int

    @classmethod
    def of(cls, user: User, card_number: str | None, auth_time: int | None = None
           ) -> MemberUser:
        assert user.member_id is not None
        return cls(user.id, user.member_id, user.email, user.name,
                   user.email_verified_at is not None, card_number,
                   auth_time or clock.timestamp())


def load_member_user(session: Session, user_id: uuid.UUID,
                     auth_time: int | None = None) -> MemberUser | None:
    found = session.execute(
        select(User, Member.card_number).join(Member, Member.id == User.member_id)
        .where(User.id == user_id, User.kind == "member", User.disabled_at.is_(None))
    ).first()
    if found is None:
        return None
    user, card = found
    return MemberUser.of(user, card, auth_time)


def consent_is_active(session: Session, client_pk: uuid.UUID, member_id: uuid.UUID) -> bool:
    return session.scalar(select(MemberConsent.id).where(
        MemberConsent.client_pk == client_pk, MemberConsent.member_id == member_id,
        MemberConsent.revoked_at.is_(None))) is not None


class CodeAdapter:
    """Authlib's view of a stored authorization code."""

    def __init__(self, row: AuthorizationCode) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int:
        return int(self.row.auth_time.timestamp())

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class RequireS256(CodeChallenge):
    """PKCE for every authorization request, S256 only: `plain` would hand the verifier
    to anyone who sees the authorization request."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: grants.BaseGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge and "
                                      "code_challenge_method=S256.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256; plain is refused.")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: grants.BaseGrant, result: object) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'.")
        super().validate_code_verifier(grant, result)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = APP_AUTH_METHODS

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        client: OAuthClient = request.client.row
        user: MemberUser = request.user
        data = request.payload.data
        with self.server.session_factory() as session, session.begin():
            session.add(AuthorizationCode(
                code_hash=hash_secret(code), client_pk=client.id, partner_id=client.partner_id,
                user_id=user.user_id, member_id=user.member_id,
                redirect_uri=request.payload.redirect_uri or client.redirect_uris[0],
                scope=request.scope or "", nonce=data.get("nonce"),
                code_challenge=data["code_challenge"],
                code_challenge_method=data["code_challenge_method"],
                auth_time=datetime.fromtimestamp(user.auth_time, UTC),
                family_id=uuid.uuid4(), expires_at=clock.now() + CODE_TTL))

    def query_authorization_code(self, code: str, client: ClientAdapter) -> CodeAdapter | None:
        """Claims the code in the same statement that finds it, so two concurrent
        exchanges cannot both succeed. A code presented twice revokes what the first
        exchange issued (RFC 6749 section 4.1.2)."""
        digest = hash_secret(code)
        with self.server.session_factory() as session, session.begin():
            row = session.scalar(
                update(AuthorizationCode)
                .where(AuthorizationCode.code_hash == digest,
                       AuthorizationCode.client_pk == client.row.id,
                       AuthorizationCode.used_at.is_(None),
                       AuthorizationCode.expires_at > clock.now())
                .values(used_at=clock.now())
                .returning(AuthorizationCode))
            if row is not None:
                return CodeAdapter(row)
            used = session.scalar(select(AuthorizationCode).where(
                AuthorizationCode.code_hash == digest, AuthorizationCode.used_at.is_not(None)))
            if used is not None:
                log.warning("authorization code reused; revoking its tokens (client %s)",
                            client.row.client_id)
                revoke_family(session, used.family_id)
        if used is not None:
            self.server.tokens_revoked()
        return None

    def delete_authorization_code(self, authorization_code: CodeAdapter) -> None:
        """Nothing to do: the code was marked used when it was claimed."""

    def authenticate_user(self, authorization_code: CodeAdapter) -> MemberUser | None:
        row = authorization_code.row
        with self.server.session_factory() as session:
            if not consent_is_active(session, row.client_pk, row.member_id):
                return None
            return load_member_user(session, row.user_id, authorization_code.get_auth_time())


class CoalitionOpenIDCode(OpenIDCode):
    """ID tokens signed RS256 with the current rotating key (its kid in the header)."""

    def __init__(self) -> None:
        super().__init__(require_nonce=False)

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        with request.server.session_factory() as session:
            return session.scalar(select(AuthorizationCode.code_hash).where(
                AuthorizationCode.nonce == nonce,
                AuthorizationCode.client_pk == request.client.row.id).limit(1)) is not None

    def validate_openid_authorization_request(self, grant: grants.BaseGrant,
                                              redirect_uri: str) -> None:
        if "\x00" in (grant.request.payload.data.get("nonce") or ""):
            # PostgreSQL text cannot hold it: looking it up or storing it would fail.
            raise InvalidRequestError("nonce must not contain the NUL character.",
                                      state=grant.request.payload.state,
                                      redirect_uri=redirect_uri)
        grant.request.server = grant.server
        super().validate_openid_authorization_request(grant, redirect_uri)

    def generate_user_info(self, user: MemberUser, scope: str) -> UserInfo:
        return member_claims(user, scope)

    def encode_id_token(self, token: dict, request: OAuth2Request) -> str:
        server = request.server
        with server.session_factory() as session, session.begin():
            kid, key = current_signing_key(session, server.box)
        now = clock.timestamp()
        claims: dict = {"iss": server.issuer_for(request), "aud": [request.client.get_client_id()],
                        "iat": now, "exp": now + int(ID_TOKEN_TTL.total_seconds())}
        claims.update(self.get_authorization_code_claims(request.authorization_code))
        at_hash = create_half_hash(token["access_token"], "RS256")
        if at_hash is not None:
            claims["at_hash"] = at_hash.decode()
        claims.update(self.generate_user_info(request.user, token["scope"]))
        return jwt.encode({"alg": "RS256", "kid": kid}, claims, key, ["RS256"])

    def process_token(self, grant: grants.BaseGrant, response: tuple) -> dict:
        grant.request.server = grant.server
        return super().process_token(grant, response)


def member_claims(user: MemberUser, scope: str) -> UserInfo:
    scopes = set(scope.split())
    info = UserInfo(sub=str(user.member_id))
    if "profile" in scopes:
        info["name"] = user.name or user.email.split("@")[0]
        info["card_number"] = user.card_number
    if "email" in scopes:
        info["email"] = user.email
        info["email_verified"] = user.email_verified
    return info


class RefreshTokenGrant(grants.RefreshTokenGrant):
    """Every refresh returns a new refresh token and retires the old one. Presenting a
    retired refresh token means it leaked (or the client raced itself): the whole
    family of tokens is revoked and the member must authorize again."""

    TOKEN_ENDPOINT_AUTH_METHODS = APP_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> TokenAdapter | None:
        reused = False
        with self.server.session_factory() as session, session.begin():
            token = _find_token(session, refresh_token)
            if token is None or token.row.refresh_token_hash is None:
                return None
            row = token.row
            if row.refresh_used_at is not None:
                log.warning("refresh token reused; revoking its family (client %s)",
                            token.client.client_id)
                revoke_family(session, row.family_id)
                reused = True
            elif (row.revoked_at is not None or token.client.revoked_at is not None
                    or row.refresh_expires_at is None
                    or row.refresh_expires_at <= clock.now()):
                return None
            else:
                return token
        if reused:
            self.server.tokens_revoked()
        return None

    def authenticate_user(self, refresh_token: TokenAdapter) -> MemberUser | None:
        row = refresh_token.row
        if row.user_id is None or row.member_id is None:
            return None
        with self.server.session_factory() as session:
            if not consent_is_active(session, row.client_pk, row.member_id):
                return None
            return load_member_user(session, row.user_id)

    def create_token_response(self) -> tuple:
        credential: TokenAdapter = self.request.refresh_token
        with self.server.session_factory() as session, session.begin():
            # Retire the presented refresh token atomically: of two concurrent uses
            # exactly one wins, and the loser is treated as a reuse.
            claimed = session.scalar(
                update(OAuthToken)
                .where(OAuthToken.id == credential.row.id,
                       OAuthToken.refresh_used_at.is_(None),
                       OAuthToken.revoked_at.is_(None))
                .values(refresh_used_at=clock.now())
                .returning(OAuthToken.id))
            if claimed is None:
                revoke_family(session, credential.row.family_id)
        if claimed is None:
            self.server.tokens_revoked()
            raise InvalidGrantError("The refresh token was already used; every token of "
                                    "this authorization has been revoked.")
        user = self.authenticate_user(credential)
        if user is None:
            raise InvalidGrantError("The member's consent or account is no longer active.")
        self.request.user = user
        token = self.issue_token(user, credential)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER

    def revoke_old_credential(self, refresh_token: TokenAdapter) -> None:
        """Done in create_token_response, before the new token is issued."""
