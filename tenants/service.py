"""Partner and OAuth client management."""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.errors import Conflict, DomainError
from coalition.models import Account
from tenants.models import OAuthClient, OAuthToken, Partner

# Scopes a partner's server can hold, with the words a consent screen would use.
PARTNER_SCOPES: dict[str, str] = {
    "members:read": "See members linked to your brand, their balances and history",
    "members:write": "Enrol members and link them to your brand",
    "points:earn": "Issue points for purchases at your brand",
    "points:redeem": "Redeem members' points at your brand",
    "points:adjust": "Correct members' balances with a stated reason",
    "vouchers:consume": "Check and use the reward vouchers members bring to your brand",
    "settlement:read": "See your brand's rate cards, prepaid balance, statements and payments",
    "settlement:dispute": "Dispute a line of your statement during its review",
    "settlement:write": "Request prepaid point blocks, invoiced to your brand",
}


# Scopes a member can consent to for a partner's app; "{partner}" is the brand's name.
MEMBER_SCOPES: dict[str, str] = {
    "openid": "Confirm to {partner} who you are in the coalition (your member id)",
    "profile": "See your name and coalition card number",
    "email": "See your email address",
    "points:read": "See your points balance and history across all brands",
    "points:redeem": "Spend your points at {partner}",
}


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name.replace("ł", "l").replace("Ł", "L"))
    ascii_name = ascii_name.encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:60] or "partner"


async def create_partner(
    session: AsyncSession,
    name: str,
    *,
    slug: str | None = None,
    settlement_currency: str = "PLN",
    status: str = "active",
) -> Partner:
    name = name.strip()
    if not name:
        raise DomainError("validation-error", "Invalid partner", "A name is required.",
                          field="name")
    if not re.fullmatch(r"[A-Z]{3}", settlement_currency):
        raise DomainError(
            "validation-error",
            "Invalid partner",
            "The settlement currency must be an ISO 4217 code such as PLN.",
            field="settlement_currency",
        )
    slug = slug or slugify(name)
    if await session.scalar(select(Partner.id).where(Partner.slug == slug)):
        raise Conflict("partner-exists", "Partner exists", f"A partner {slug!r} exists.",
                       field="slug")
    partner = Partner(name=name, slug=slug, settlement_currency=settlement_currency, status=status)
    session.add(partner)
    await session.flush()
    for kind in ("partner_issuance", "partner_redemption"):
        session.add(Account(code=f"partner:{partner.slug}:{kind.split('_')[1]}", kind=kind,
                            partner_id=partner.id))
    await session.flush()
    return partner


async def create_server_client(
    session: AsyncSession,
    partner_id: uuid.UUID,
    name: str,
    scopes: list[str] | None = None,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> tuple[OAuthClient, str]:
    """Register a client-credentials client. Returns it with its secret, shown only once."""
    scopes = list(PARTNER_SCOPES) if scopes is None else scopes
    unknown = sorted(set(scopes) - set(PARTNER_SCOPES))
    if unknown:
        raise DomainError("validation-error", "Unknown scope", f"Unknown scopes: {unknown}",
                          field="scopes")
    secret = client_secret or "cs_" + secrets.token_urlsafe(32)
    client = OAuthClient(
        client_id=client_id or "cl_" + secrets.token_urlsafe(12),
        client_secret_hash=hash_secret(secret),
        partner_id=partner_id,
        name=name,
        grant_types=["client_credentials"],
        client_type="server",
        redirect_uris=[],
        scope=" ".join(scopes),
    )
    session.add(client)
    await session.flush()
    return client, secret


def check_redirect_uri(uri: str) -> str | None:
    """Why a redirect URI is unacceptable, or None. HTTPS only (plain http for loopback
    during development), absolute, no fragment, no wildcards: it is compared exactly."""
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return f"{uri!r} is not an absolute http(s) URL."
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        return f"{uri!r} must use https (plain http is allowed for localhost only)."
    if parts.fragment or "#" in uri:
        return f"{uri!r} must not contain a fragment."
    if "*" in uri:
        return f"{uri!r} must not contain wildcards; register each URI exactly."
    return None


async def create_app_client(
    session: AsyncSession,
    partner_id: uuid.UUID,
    name: str,
    scopes: list[str],
    redirect_uris: list[str],
    *,
    public: bool = False,
) -> tuple[OAuthClient, str | None]:
    """Register an app that members connect with the authorization-code flow (PKCE
    required). A public app (mobile, single-page) gets no secret."""
    unknown = sorted(set(scopes) - set(MEMBER_SCOPES))
    if unknown or not scopes:
        raise DomainError("validation-error", "Invalid scopes",
                          f"Choose member scopes among {sorted(MEMBER_SCOPES)}.", field="scopes")
    uris = [u.strip() for u in redirect_uris if u.strip()]
    if not uris:
        raise DomainError("validation-error", "Redirect URI required",
                          "Register at least one redirect URI.", field="redirect_uris")
    for uri in uris:
        if (problem := check_redirect_uri(uri)) is not None:
            raise DomainError("validation-error", "Invalid redirect URI", problem,
                              field="redirect_uris")
    secret = None if public else "cs_" + secrets.token_urlsafe(32)
    client = OAuthClient(
        client_id="app_" + secrets.token_urlsafe(12),
        client_secret_hash=hash_secret(secret) if secret else None,
        partner_id=partner_id,
        name=name,
        client_type="app",
        public=public,
        redirect_uris=list(dict.fromkeys(uris)),
        grant_types=["authorization_code", "refresh_token"],
        scope=" ".join(scopes),
    )
    session.add(client)
    await session.flush()
    return client, secret


SECRET_ROTATION_GRACE = timedelta(hours=24)


async def rotate_client_secret(session: AsyncSession, client: OAuthClient) -> str:
    """A new secret for the client; the old one keeps working for SECRET_ROTATION_GRACE."""
    secret = "cs_" + secrets.token_urlsafe(32)
    client.previous_secret_hash = client.client_secret_hash
    client.previous_secret_expires_at = clock.now() + SECRET_ROTATION_GRACE
    client.client_secret_hash = hash_secret(secret)
    await session.flush()
    return secret


async def revoke_client(session: AsyncSession, client: OAuthClient) -> None:
    """The client can no longer get tokens, and its issued tokens stop working at once
    (the revoked_at trigger notifies every API process)."""
    client.revoked_at = client.revoked_at or clock.now()
    await session.execute(
        update(OAuthToken).where(OAuthToken.client_pk == client.id,
                                 OAuthToken.revoked_at.is_(None))
        .values(revoked_at=clock.now()))
    await session.flush()
