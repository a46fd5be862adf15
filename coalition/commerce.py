"""What partners report to the program: purchases and their returns, checkout holds,
non-purchase events and referrals, and which earning rule versions produced each
posting. Money is in minor units of the purchase currency (grosz for PLN)."""

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
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import Base

CHANNELS = ("online", "store", "mobile")
HOLD_STATUSES = ("held", "captured", "voided", "expired")


class Purchase(Base):
    """One order a partner reported. `lines` is a JSON array of
    {sku, category, quantity, unit_price, amount}; `breakdown` lists the rules that fired."""

    __tablename__ = "purchases"
    __table_args__ = (
        UniqueConstraint("partner_id", "order_id", name="uq_purchases_partner_order"),
        CheckConstraint("total >= 0", name="total"),
        CheckConstraint("returned_total >= 0 AND returned_total <= total", name="returned"),
        CheckConstraint("channel IN ('online', 'store', 'mobile')", name="channel"),
        Index("ix_purchases_member", "member_id", "occurred_at"),
        # "First purchase at this partner" is asked on every purchase.
        Index("ix_purchases_member_partner", "member_id", "partner_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    order_id: Mapped[str] = mapped_column(String(200))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    currency: Mapped[str] = mapped_column(String(3))
    total: Mapped[int] = mapped_column(BigInteger)
    channel: Mapped[str] = mapped_column(String(10))
    store_id: Mapped[str | None] = mapped_column(String(100))
    lines: Mapped[list] = mapped_column(JSONB, server_default="[]")
    points: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # The earn entry (NULL when no rule awarded anything).
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    breakdown: Mapped[list] = mapped_column(JSONB, server_default="[]")
    # The referral bonuses this purchase paid (its referee's first qualifying purchase).
    referral: Mapped[dict | None] = mapped_column(JSONB)
    returned_total: Mapped[int] = mapped_column(BigInteger, server_default="0")
    returned_points: Mapped[int] = mapped_column(BigInteger, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PurchaseReturn(Base):
    """A full or partial return and the points it took back. `shortfall` is what the
    member had already spent and the return policy could not recover."""

    __tablename__ = "purchase_returns"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount"),
        CheckConstraint("points >= 0 AND shortfall >= 0", name="points"),
        Index("ix_purchase_returns_purchase", "purchase_id"),
        Index("ix_purchase_returns_entry", "entry_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"))
    purchase_id: Mapped[int] = mapped_column(ForeignKey("purchases.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    lines: Mapped[list | None] = mapped_column(JSONB)
    points: Mapped[int] = mapped_column(BigInteger)
    shortfall: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # Points the negative-floor policy let the balance go below zero by.
    debt: Mapped[int] = mapped_column(BigInteger, server_default="0")
    policy: Mapped[str | None] = mapped_column(String(20))
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RuleHit(Base):
    """One earning rule version that awarded points in one posting: the audit trail of
    where points came from, the member's usage for per-day and per-month caps, and the
    funding split settlement bills by. `rule_id` points at earning_rules."""

    __tablename__ = "rule_hits"
    __table_args__ = (
        CheckConstraint("funding IN ('partner', 'coalition')", name="funding"),
        Index("ix_rule_hits_member_rule", "member_id", "rule_id", "occurred_at"),
        Index("ix_rule_hits_entry", "entry_id"),
        Index("ix_rule_hits_rule", "rule_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("journal_entries.id"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    rule_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    rule_version: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(BigInteger)
    funding: Mapped[str] = mapped_column(String(10))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PointHold(Base):
    """A checkout authorization: points taken out of `available` and held at a partner
    until captured (spent), voided (given back) or expired (given back by the job)."""

    __tablename__ = "point_holds"
    __table_args__ = (
        CheckConstraint("status IN ('held', 'captured', 'voided', 'expired')", name="status"),
        CheckConstraint("points > 0 AND captured >= 0 AND captured <= points", name="points"),
        Index("ix_point_holds_open", "expires_at", postgresql_where=text("status = 'held'")),
        Index("ix_point_holds_member", "member_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    captured: Mapped[int] = mapped_column(BigInteger, server_default="0")
    status: Mapped[str] = mapped_column(String(10), server_default="held")
    order_id: Mapped[str | None] = mapped_column(String(200))
    hold_entry_id: Mapped[int] = mapped_column(ForeignKey("journal_entries.id"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MemberEvent(Base):
    """A non-purchase activity a partner reported (webinar, survey, sign-up, birthday).
    One reference per member and event type counts once."""

    __tablename__ = "member_events"
    __table_args__ = (
        UniqueConstraint("partner_id", "member_id", "event_type", "reference",
                         name="uq_member_events_reference"),
        Index("ix_member_events_member", "member_id", "event_type", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    event_type: Mapped[str] = mapped_column(String(50))
    reference: Mapped[str] = mapped_column(String(200))
    points: Mapped[int] = mapped_column(BigInteger, server_default="0")
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MemberReferral(Base):
    """Who brought a member in (member-get-member). The referral stays open until the
    referee's first qualifying purchase (coalition/referrals.py says what qualifies);
    that purchase closes it once: `outcome` rewarded (the referrer's bonus is
    `rewarded_entry_id`) or limit (the referrer had reached the rule's monthly limit),
    and the referee's welcome bonus is `welcome_entry_id` either way. `partner_id`: the
    partner whose enrolment recorded it (None: the member portal)."""

    __tablename__ = "member_referrals"
    __table_args__ = (
        CheckConstraint("referee_id <> referrer_id", name="not_self"),
        CheckConstraint("outcome IN ('rewarded', 'limit')", name="outcome"),
        CheckConstraint("(qualified_at IS NULL) = (outcome IS NULL)", name="closed"),
    )

    referee_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), primary_key=True)
    referrer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), index=True)
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"))
    rewarded_entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    welcome_entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    purchase_id: Mapped[int | None] = mapped_column(ForeignKey("purchases.id"))
    qualified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
