"""Partner (tenant) and OAuth 2.0 client/token tables."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

# users.affiliate_id refers to `affiliates`: its table must be known wherever users are.
import coalition.affiliates.models  # noqa: F401
from coalition.db import Base

PARTNER_STATUSES = ("applied", "under_review", "active", "rejected", "suspended", "offboarded")


class Partner(Base):
    __tablename__ = "partners"
    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in PARTNER_STATUSES) + ")", name="status"
        ),
        CheckConstraint("settlement_currency ~ '^[A-Z]{3}$'", name="currency"),
        CheckConstraint("pending_days BETWEEN 0 AND 365", name="pending_days"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), server_default="active")
    settlement_currency: Mapped[str] = mapped_column(String(3), server_default="PLN")
    # The return window: points earned here stay pending this many days.
    pending_days: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The application (public "Become a partner" form); NULL for partners an operator
    # created directly.
    legal_form: Mapped[str | None] = mapped_column(String(100))
    tax_id: Mapped[str | None] = mapped_column(String(20))  # PL NIP or EU VAT id, compact
    address: Mapped[str | None] = mapped_column(Text)
    website: Mapped[str | None] = mapped_column(String(300))
    industry: Mapped[str | None] = mapped_column(String(100))
    contact_name: Mapped[str | None] = mapped_column(String(200))
    contact_email: Mapped[str | None] = mapped_column(String(320))
    iban: Mapped[str | None] = mapped_column(String(34))
    status_reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PartnerTerms(Base):
    """A published version of the partner terms."""

    __tablename__ = "partner_terms"

    version: Mapped[str] = mapped_column(String(20), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                   server_default=func.now())


class TermsAcceptance(Base):
    __tablename__ = "partner_terms_acceptances"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    version: Mapped[str] = mapped_column(ForeignKey("partner_terms.version"))
    accepted_by: Mapped[str] = mapped_column(String(320))
    accepted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                  server_default=func.now())


class OAuthClient(Base):
    """A registered OAuth 2.0 client. Secrets are stored as SHA-256 digests: they are
    256-bit random values, so a slow password hash would add latency and no strength."""

    __tablename__ = "oauth_clients"
    __table_args__ = (CheckConstraint("client_type IN ('server', 'app')", name="client_type"),)

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_secret_hash: Mapped[str | None] = mapped_column(String(64))
    # After a rotation the previous secret keeps working until this moment, so a partner
    # can roll the new secret out to its servers without downtime.
    previous_secret_hash: Mapped[str | None] = mapped_column(String(64))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    grant_types: Mapped[list[str]] = mapped_column(ARRAY(Text))
    scope: Mapped[str] = mapped_column(Text)
    # "server": the partner's own back end (client credentials, partner-wide scopes).
    # "app": a partner's website or mobile app acting for one member with the member's
    # consent (authorization code + PKCE); exact redirect URIs only.
    client_type: Mapped[str] = mapped_column(String(10), server_default="server")
    redirect_uris: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    # A public app (a mobile or single-page app) cannot keep a secret: it authenticates
    # with PKCE alone (token_endpoint_auth_method "none").
    public: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OAuthToken(Base):
    """An issued access token (stored as its SHA-256 digest, never in clear)."""

    __tablename__ = "oauth_tokens"
    __table_args__ = (Index("ix_oauth_tokens_expires_at", "expires_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    client_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_clients.id"), index=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    member_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("members.id"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    scope: Mapped[str] = mapped_column(Text)
    access_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Member tokens come with a refresh token. Every refresh rotates it; all tokens that
    # descend from one authorization code share a family, revoked together when a used
    # refresh token (or a used code) is presented again.
    refresh_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    refresh_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    refresh_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    family_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)


class AuthorizationCode(Base):
    """A code from /oauth/authorize: single use, short-lived, bound to its client,
    redirect URI, PKCE challenge and member. Stored as its SHA-256 digest."""

    __tablename__ = "oauth_authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_clients.id"), index=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    nonce: Mapped[str | None] = mapped_column(Text)
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(10))
    auth_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    family_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MemberConsent(Base):
    """A member's consent for one partner app: what the member's "Connected brands"
    page lists. Revoking it kills every token the partner holds for the member."""

    __tablename__ = "member_consents"
    __table_args__ = (Index("uq_member_consents_client_member", "client_pk", "member_id",
                            unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    client_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_clients.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), index=True)
    scope: Mapped[str] = mapped_column(Text)
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SigningKey(Base):
    """RSA keys that sign ID tokens. The newest signs; older ones stay published in the
    JWKS until every token they signed has expired. Private keys are encrypted with
    the platform secret key."""

    __tablename__ = "oidc_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(10), server_default="RS256")
    private_key_encrypted: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[dict] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IdentityProvider(Base):
    """A partner's own OpenID Connect provider for staff single sign-on."""

    __tablename__ = "partner_identity_providers"

    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    issuer: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str] = mapped_column(Text)
    client_secret_encrypted: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


USER_KINDS = ("operator", "partner_staff", "member")
COMPANY_ROLES = ("buyer", "admin")
STAFF_ROLES = ("owner", "admin", "analyst", "cashier")


class User(Base):
    """A person who logs in to the portal: operator staff, partner staff or a member.
    One login per email address."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("kind IN ('operator', 'partner_staff', 'member', 'affiliate')",
                        name="kind"),
        CheckConstraint(
            "(kind = 'partner_staff') = (partner_id IS NOT NULL AND role IS NOT NULL)",
            name="staff_partner",
        ),
        CheckConstraint("(kind = 'member') = (member_id IS NOT NULL)", name="member_link"),
        CheckConstraint("(kind = 'affiliate') = (affiliate_id IS NOT NULL)",
                        name="affiliate_link"),
        CheckConstraint(
            "role IS NULL OR role IN ('owner', 'admin', 'analyst', 'cashier')", name="role"
        ),
        CheckConstraint("company_role IS NULL OR (kind = 'member' AND company_role IN"
                        " ('buyer', 'admin'))", name="company_role"),
        Index("uq_users_email_lower", text("lower(email)"), unique=True),
        # A person member has one login; a company member several (company_role set).
        Index("uq_users_person_member", "member_id", unique=True,
              postgresql_where=text("company_role IS NULL")),
        Index("ix_users_member_id", "member_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(20))
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"), index=True)
    role: Mapped[str | None] = mapped_column(String(20))
    member_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("members.id"))
    affiliate_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("affiliates.id"),
                                                           unique=True)
    # For a login of a company member: buyer (spends, sees the wallet) or admin (also
    # manages the company's people).
    company_role: Mapped[str | None] = mapped_column(String(10))
    email_verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class UserToken(Base):
    """A single-use, expiring token sent by email (verification, password reset, invite).
    Stored as its SHA-256 digest."""

    __tablename__ = "user_tokens"
    __table_args__ = (
        CheckConstraint("purpose IN ('verify_email', 'reset_password', 'invite')",
                        name="purpose"),
    )

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(20))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginAttempt(Base):
    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_email", text("lower(email)"), "created_at"),
        Index("ix_login_attempts_ip", "ip", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # Which limit the row counts towards (tenants/throttle.py): "login", a kind of emailed
    # request ("register", "forgot", "resend"), or "oauth-client" (email is the client id).
    kind: Mapped[str] = mapped_column(String(32), server_default="login")
    email: Mapped[str] = mapped_column(String(320))
    ip: Mapped[str] = mapped_column(String(64))
    succeeded: Mapped[bool] = mapped_column()
    # Indexed for the maintenance pass, which purges old attempts (tenants/sessions.py).
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(),
                                                 index=True)


class WebSession(Base):
    """Server-side portal sessions; the browser holds only a random session id, the table
    only its SHA-256 (a copy of the table logs no one in). `user_id` is the logged-in
    user's, so that a password reset can end the user's other sessions."""

    __tablename__ = "web_sessions"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)


class AuditEntry(Base):
    """Who did what, when: every operator and partner action in the portal."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    actor: Mapped[str] = mapped_column(String(320))
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"), index=True)
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
