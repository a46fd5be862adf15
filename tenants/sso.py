"""Staff single sign-on: a partner's own OpenID Connect provider (Authlib's OAuth 2.0
client, authorization code + PKCE). A person is let in only as an existing staff account
of that partner whose email the provider asserts as verified."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.errors import DomainError
from coalition.uow import SYSTEM, Actor, Tx
from tenants import accounts
from tenants.keys import SecretBox
from tenants.models import IdentityProvider, Partner, User
from tenants.service import check_redirect_uri

HTTP_TIMEOUT = httpx.Timeout(10.0)


class SsoFailed(Exception):
    """The sign-in cannot complete; the message is safe to show."""


async def discover(issuer: str, transport: httpx.AsyncBaseTransport | None = None) -> dict:
    """The provider's OpenID configuration; its issuer must be the one configured."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, transport=transport) as http:
            response = await http.get(url)
            response.raise_for_status()
            metadata = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise SsoFailed(f"Could not read {url}: {exc.__class__.__name__}.") from exc
    if metadata.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
        raise SsoFailed("The provider's discovery document names another issuer.")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not metadata.get(key):
            raise SsoFailed(f"The provider's discovery document has no {key}.")
    return metadata


async def configure(session: AsyncSession, box: SecretBox, partner_id: uuid.UUID, *,
                    issuer: str, client_id: str, client_secret: str | None, enabled: bool,
                    transport: httpx.AsyncBaseTransport | None = None) -> IdentityProvider:
    """Save the partner's provider after checking that its discovery document answers.
    An empty secret keeps the stored one."""
    issuer, client_id = issuer.strip().rstrip("/"), client_id.strip()
    if (problem := check_redirect_uri(issuer)) is not None:
        raise DomainError("validation-error", "Invalid issuer", problem, field="issuer")
    if not client_id:
        raise DomainError("validation-error", "Client id required",
                          "Enter the client id the provider gave you.", field="client_id")
    existing = await session.get(IdentityProvider, partner_id)
    if not client_secret and existing is None:
        raise DomainError("validation-error", "Client secret required",
                          "Enter the client secret the provider gave you.", field="client_secret")
    try:
        await discover(issuer, transport)
    except SsoFailed as exc:
        raise DomainError("validation-error", "Provider not reachable", str(exc),
                          field="issuer") from exc
    sealed = box.seal(client_secret) if client_secret else existing.client_secret_encrypted
    values = {"issuer": issuer, "client_id": client_id, "client_secret_encrypted": sealed,
              "enabled": enabled, "updated_at": func.now()}
    await session.execute(insert(IdentityProvider).values(partner_id=partner_id, **values)
                          .on_conflict_do_update(index_elements=["partner_id"], set_=values))
    return await session.get_one(IdentityProvider, partner_id, populate_existing=True)


@dataclass(frozen=True)
class PendingSignIn:
    """What the session keeps between the redirect to the provider and the callback."""

    partner_id: str
    state: str
    nonce: str
    code_verifier: str
    started_at: float

    def expired(self) -> bool:
        return clock.timestamp() - self.started_at > 600


def _client(provider: IdentityProvider, box: SecretBox, redirect_uri: str,
            transport: httpx.AsyncBaseTransport | None) -> AsyncOAuth2Client:
    secret = box.open(provider.client_secret_encrypted)
    if secret is None:
        raise SsoFailed("The stored client secret cannot be read; configure SSO again.")
    return AsyncOAuth2Client(client_id=provider.client_id, client_secret=secret,
                             scope="openid email profile", redirect_uri=redirect_uri,
                             code_challenge_method="S256", timeout=HTTP_TIMEOUT,
                             transport=transport)


async def start(provider: IdentityProvider, box: SecretBox, redirect_uri: str,
                transport: httpx.AsyncBaseTransport | None = None) -> tuple[str, PendingSignIn]:
    metadata = await discover(provider.issuer, transport)
    pending = PendingSignIn(str(provider.partner_id), generate_token(24), generate_token(24),
                            generate_token(48), clock.timestamp())
    async with _client(provider, box, redirect_uri, transport) as client:
        url, _ = client.create_authorization_url(
            metadata["authorization_endpoint"], state=pending.state, nonce=pending.nonce,
            code_verifier=pending.code_verifier)
    return url, pending


async def finish(session: AsyncSession, provider: IdentityProvider, box: SecretBox,
                 pending: PendingSignIn, code: str, redirect_uri: str,
                 transport: httpx.AsyncBaseTransport | None = None) -> User:
    """Exchange the code, verify the ID token, and find the partner's staff account."""
    metadata = await discover(provider.issuer, transport)
    async with _client(provider, box, redirect_uri, transport) as client:
        try:
            token = await client.fetch_token(metadata["token_endpoint"], code=code,
                                             code_verifier=pending.code_verifier)
            keys = KeySet.import_key_set((await client.get(metadata["jwks_uri"])).json())
        except Exception as exc:   # the provider's errors come in many shapes
            raise SsoFailed("The provider refused the sign-in.") from exc
    try:
        decoded = jwt.decode(token.get("id_token", ""), keys)
        JWTClaimsRegistry(
            now=clock.timestamp,   # the platform's clock judges exp, like every other time
            iss={"essential": True, "value": provider.issuer},
            aud={"essential": True, "value": provider.client_id},
            exp={"essential": True}, nonce={"essential": True, "value": pending.nonce},
        ).validate(decoded.claims)
    except (JoseError, ValueError) as exc:
        raise SsoFailed("The provider's ID token did not verify.") from exc
    claims = decoded.claims
    email = claims.get("email")
    if not email or claims.get("email_verified") is not True:
        raise SsoFailed("The provider did not confirm a verified email address.")
    user = await session.scalar(select(User).where(
        func.lower(User.email) == email.lower(), User.kind == "partner_staff",
        User.partner_id == provider.partner_id, User.disabled_at.is_(None)))
    if user is None:
        raise SsoFailed(f"{email} has no staff account at this partner. Ask an owner or "
                        "admin to invite you.")
    return user


async def settings_of(tx: Tx) -> tuple[IdentityProvider | None, Partner]:
    """The Tx's partner's provider (None: not configured) and the partner."""
    session = await tx.session()
    return (await session.get(IdentityProvider, tx.partner_id),
            await session.get_one(Partner, tx.partner_id))


async def save_settings(tx: Tx, box: SecretBox, *, issuer: str, client_id: str,
                        client_secret: str | None, enabled: bool,
                        transport: httpx.AsyncBaseTransport | None = None
                        ) -> IdentityProvider:
    """configure() for the Tx's partner, audited as the Tx's staff member."""
    provider = await configure(await tx.session(), box, tx.partner_id, issuer=issuer,
                               client_id=client_id, client_secret=client_secret,
                               enabled=enabled, transport=transport)
    await tx.audit("sso.configure", target=provider.issuer, enabled=provider.enabled)
    return provider


async def provider_for_company(tx: Tx, slug: str) -> IdentityProvider | None:
    """The enabled provider of the active partner with this company id (its slug)."""
    return await (await tx.session()).scalar(
        select(IdentityProvider)
        .join(Partner, IdentityProvider.partner_id == Partner.id)
        .where(Partner.slug == slug.strip().lower(), Partner.status == "active",
               IdentityProvider.enabled))


async def enabled_provider(tx: Tx, partner_id: uuid.UUID | str) -> IdentityProvider | None:
    return await (await tx.session()).scalar(select(IdentityProvider).where(
        IdentityProvider.partner_id == partner_id, IdentityProvider.enabled))


async def sign_in(tx: Tx, provider: IdentityProvider, box: SecretBox, pending: PendingSignIn,
                  code: str, redirect_uri: str,
                  transport: httpx.AsyncBaseTransport | None = None) -> User | SsoFailed:
    """finish() with its audit row: the staff member signed in (their email now counts
    as verified), or the refusal, returned rather than raised so that its audit row
    commits."""
    session = await tx.session()
    try:
        user = await finish(session, provider, box, pending, code, redirect_uri, transport)
    except SsoFailed as exc:
        await tx.audit("staff.sso_refused", partner_id=provider.partner_id, actor=SYSTEM,
                       reason=str(exc))
        return exc
    accounts.mark_verified(user)
    await tx.audit("staff.sso_login", target=user.email, partner_id=user.partner_id,
                   actor=Actor(user.email, user.id), issuer=provider.issuer)
    return user
