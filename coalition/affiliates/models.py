"""Affiliates, partners' affiliate programs and their versioned terms, enrollments,
clicks, attributions, commissions, payouts and creatives.

An affiliate (blogger, influencer, e-shop) is a person or company that promotes partner
brands; it is not a tenant and may join programs of several partners. Each partner runs
its own programs. Money is in minor units of the program's currency; rates are basis
points (1 bp = 0.01 %), so every commission is integer arithmetic: sale * rate_bp /
10,000, rounded once, half away from zero, to the minor unit (as settlement lines are).

Sign convention for commissions: `amount_minor` is what the funding partner owes the
affiliate; a clawback is a negative commission netted against the next payout.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import Base

AFFILIATE_KINDS = ("person", "company")
PAYOUT_METHODS = ("stripe_connect", "sepa", "points")
ENROLLMENT_STATUSES = ("pending", "approved", "rejected", "banned")
COMMISSION_MODELS = ("percent", "tiered_percent", "per_lead", "per_transaction")
CLICK_MODELS = ("last_click", "first_click")
# pending: inside the hold period; hold: flagged by a fraud rule, waits for a person;
# approved: payable; paid: in a paid payout; voided: refunded before payout or rejected.
COMMISSION_STATUSES = ("pending", "hold", "approved", "paid", "voided", "rejected")
COMMISSION_KINDS = ("sale", "lead", "clawback")
PAYOUT_STATUSES = ("pending", "processing", "paid", "failed", "canceled")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True,
                         server_default=text("gen_random_uuid()"))


class Affiliate(Base):
    """The affiliate's profile; its login is a `users` row of kind 'affiliate'."""

    __tablename__ = "affiliates"
    __table_args__ = (
        CheckConstraint(_in("kind", AFFILIATE_KINDS), name="kind"),
        CheckConstraint(f"payout_method IS NULL OR {_in('payout_method', PAYOUT_METHODS)}",
                        name="payout_method"),
        CheckConstraint("status IN ('active', 'suspended')", name="status"),
        Index("uq_affiliates_email_lower", text("lower(email)"), unique=True),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    kind: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(200))
    company_name: Mapped[str | None] = mapped_column(String(200))
    nip: Mapped[str | None] = mapped_column(String(20))
    email: Mapped[str] = mapped_column(String(320))
    website: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(10), server_default="active")
    terms_version: Mapped[str | None] = mapped_column(String(20))
    terms_accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    payout_method: Mapped[str | None] = mapped_column(String(20))
    stripe_account_id: Mapped[str | None] = mapped_column(String(100))
    iban: Mapped[str | None] = mapped_column(String(34))
    bic: Mapped[str | None] = mapped_column(String(11))
    account_holder: Mapped[str | None] = mapped_column(String(140))
    # Payouts in points go to this member's wallet.
    payout_member_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("members.id"))
    # The affiliate's own member account (self-referral fraud rule).
    member_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("members.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AffiliateProgram(Base):
    __tablename__ = "affiliate_programs"
    __table_args__ = (
        CheckConstraint("enrollment IN ('auto', 'application')", name="enrollment"),
        CheckConstraint("status IN ('active', 'paused', 'archived')", name="status"),
        UniqueConstraint("partner_id", "name", name="uq_affiliate_programs_name"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    landing_url: Mapped[str] = mapped_column(String(1000))
    # auto: public, joining approves at once; application: the partner decides.
    enrollment: Mapped[str] = mapped_column(String(12), server_default="auto")
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(10), server_default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ProgramTerms(Base):
    """One version of a program's commission terms; append-only, the highest version in
    force (effective_from <= t) applies, and each commission records the version used."""

    __tablename__ = "affiliate_program_terms"
    __table_args__ = (
        UniqueConstraint("program_id", "version", name="uq_affiliate_program_terms_version"),
        CheckConstraint(_in("model", COMMISSION_MODELS), name="model"),
        CheckConstraint(_in("click_model", CLICK_MODELS), name="click_model"),
        CheckConstraint("rate_bp IS NULL OR rate_bp BETWEEN 0 AND 10000", name="rate"),
        CheckConstraint("flat_minor IS NULL OR flat_minor >= 0", name="flat"),
        CheckConstraint("attribution_window_days BETWEEN 1 AND 365", name="window"),
        CheckConstraint("hold_days BETWEEN 0 AND 365", name="hold"),
        CheckConstraint("min_payout_minor >= 0", name="min_payout"),
        CheckConstraint("recurring_months IS NULL OR recurring_months > 0", name="recurring"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliate_programs.id"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(20))
    # percent: rate_bp of the sale; tiered_percent: `tiers` [{"from_minor": monthly sales
    # of the affiliate in the program, "rate_bp"}] ascending; per_lead / per_transaction:
    # flat_minor each.
    rate_bp: Mapped[int | None] = mapped_column(Integer)
    tiers: Mapped[list[dict[str, int]] | None] = mapped_column(JSONB)
    flat_minor: Mapped[int | None] = mapped_column(BigInteger)
    # {category: rate_bp}: lines of these categories earn this rate instead.
    category_rates: Mapped[dict[str, int]] = mapped_column(JSONB, server_default="{}")
    # NULL: first purchase only; N: every purchase in the N months after the first.
    recurring_months: Mapped[int | None] = mapped_column(Integer)
    attribution_window_days: Mapped[int] = mapped_column(Integer, server_default="30")
    click_model: Mapped[str] = mapped_column(String(12), server_default="last_click")
    hold_days: Mapped[int] = mapped_column(Integer, server_default="30")
    min_payout_minor: Mapped[int] = mapped_column(BigInteger, server_default="5000")
    effective_from: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                     server_default=func.now())
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Enrollment(Base):
    """An affiliate in a program; `code` is its tracking code in /r/{code}."""

    __tablename__ = "affiliate_enrollments"
    __table_args__ = (
        UniqueConstraint("program_id", "affiliate_id", name="uq_affiliate_enrollments_member"),
        UniqueConstraint("code", name="uq_affiliate_enrollments_code"),
        CheckConstraint(_in("status", ENROLLMENT_STATUSES), name="status"),
        Index("ix_affiliate_enrollments_affiliate", "affiliate_id"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliate_programs.id"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    affiliate_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliates.id"))
    code: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(10), server_default="pending")
    status_reason: Mapped[str | None] = mapped_column(Text)
    application_note: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Click(Base):
    """A tracked visit through /r/{code}; written in batches by the click recorder.
    `click_id` is what the landing URL and the cookie carry back in conversions."""

    __tablename__ = "affiliate_clicks"
    __table_args__ = (
        UniqueConstraint("click_id", name="uq_affiliate_clicks_click_id"),
        Index("ix_affiliate_clicks_enrollment", "enrollment_id", "clicked_at"),
        Index("ix_affiliate_clicks_ip", "ip_hash", "clicked_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    click_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    enrollment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliate_enrollments.id"))
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliate_programs.id"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    clicked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # HMAC of the client address with the app's secret: counts repeats, never reveals it.
    ip_hash: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(500), server_default="")
    referrer: Mapped[str] = mapped_column(String(1000), server_default="")
    sub_id: Mapped[str | None] = mapped_column(String(100))


class Attribution(Base):
    """The member's stored attribution per program: which click (or code) brought them,
    kept so later purchases without a click id can still be attributed in the window."""

    __tablename__ = "affiliate_attributions"
    __table_args__ = (
        CheckConstraint("source IN ('click', 'code')", name="source"),
    )

    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliate_programs.id"),
                                                  primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    enrollment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliate_enrollments.id"))
    click_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    source: Mapped[str] = mapped_column(String(10))
    clicked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attributed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                    server_default=func.now())
    # The first qualifying purchase: the start of "recurring for N months".
    first_conversion_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Commission(Base):
    __tablename__ = "affiliate_commissions"
    __table_args__ = (
        CheckConstraint(_in("kind", COMMISSION_KINDS), name="kind"),
        CheckConstraint(_in("status", COMMISSION_STATUSES), name="status"),
        CheckConstraint("(kind = 'clawback') = (amount_minor < 0)", name="sign"),
        CheckConstraint("refunded_minor >= 0", name="refunded"),
        # One commission per (program, order) and one lead per (program, member), whatever
        # the concurrency of duplicate posts.
        Index("uq_affiliate_commissions_order", "program_id", "order_id", unique=True,
              postgresql_where=text("kind = 'sale'")),
        Index("uq_affiliate_commissions_lead", "program_id", "member_id", unique=True,
              postgresql_where=text("kind = 'lead'")),
        Index("ix_affiliate_commissions_enrollment", "enrollment_id", "status"),
        Index("ix_affiliate_commissions_due", "status", "hold_until"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliate_programs.id"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    enrollment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliate_enrollments.id"))
    affiliate_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliates.id"), index=True)
    terms_id: Mapped[int] = mapped_column(ForeignKey("affiliate_program_terms.id"))
    kind: Mapped[str] = mapped_column(String(10))
    order_id: Mapped[str | None] = mapped_column(String(100))
    member_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("members.id"))
    click_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    currency: Mapped[str] = mapped_column(String(3))
    sale_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    refunded_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(10))
    # Why this commission exists: the click, the window, the click model, the rate.
    explanation: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    fraud_reasons: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    hold_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("affiliate_commissions.id"))
    payout_id: Mapped[int | None] = mapped_column(ForeignKey("affiliate_payouts.id"))
    # Claimed by the settlement run that put it on the funding partner's statement.
    settlement_run_id: Mapped[int | None] = mapped_column(ForeignKey("settlement_runs.id"))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Payout(Base):
    """What one enrollment's approved commissions paid out at once (net of clawbacks)."""

    __tablename__ = "affiliate_payouts"
    __table_args__ = (
        CheckConstraint(_in("method", PAYOUT_METHODS), name="method"),
        CheckConstraint(_in("status", PAYOUT_STATUSES), name="status"),
        CheckConstraint("amount_minor > 0", name="positive"),
        Index("ix_affiliate_payouts_affiliate", "affiliate_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    enrollment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliate_enrollments.id"))
    affiliate_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliates.id"))
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliate_programs.id"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    method: Mapped[str] = mapped_column(String(20))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    points: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(10), server_default="pending")
    stripe_transfer_id: Mapped[str | None] = mapped_column(String(100))
    # The settlement payment carrying the money (a Connect transfer or a SEPA credit,
    # reference ('affiliate_payout', id)); its SEPA file is payment.sepa_message_id.
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("settlement_payments.id"))
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Creative(Base):
    """Banners and texts a partner uploads for its program's affiliates."""

    __tablename__ = "affiliate_creatives"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("affiliate_programs.id"),
                                                  index=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"))
    title: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
