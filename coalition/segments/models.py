"""Segment tables: definitions (validated JSON, owned by a partner or by the coalition),
their materialised membership, and RFM scores."""

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
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import Base


class Segment(Base):
    """A rule-based segment. `partner_id` NULL: a coalition segment (operator-owned,
    evaluated over all members and all purchases); otherwise evaluated over the
    partner's linked members and the partner's own purchases only."""

    __tablename__ = "segments"
    __table_args__ = (Index("ix_segments_partner_id", "partner_id"),)

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    definition: Mapped[dict] = mapped_column(JSONB)
    member_count: Mapped[int] = mapped_column(Integer, server_default="0")
    refreshed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SegmentMember(Base):
    """Who is in a segment now: refreshed on save and by the periodic job, read on the
    purchase hot path (coalition/audience.py)."""

    __tablename__ = "segment_members"
    __table_args__ = (Index("ix_segment_members_member_id", "member_id"),)

    segment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True)
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RfmScore(Base):
    """Recency, frequency and monetary quintiles (1 = lowest, 5 = best) of a member's
    purchases over the last 12 months: coalition-wide (`partner_id` NULL) or at one
    partner. Members without a purchase in that time have no row."""

    __tablename__ = "rfm_scores"
    __table_args__ = (
        CheckConstraint("recency BETWEEN 1 AND 5 AND frequency BETWEEN 1 AND 5"
                        " AND monetary BETWEEN 1 AND 5", name="quintiles"),
        Index("uq_rfm_scores_scope_member",
              text("coalesce(partner_id, '00000000-0000-0000-0000-000000000000'::uuid)"),
              "member_id", unique=True),
        Index("ix_rfm_scores_member_id", "member_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    recency: Mapped[int] = mapped_column(SmallInteger)
    frequency: Mapped[int] = mapped_column(SmallInteger)
    monetary: Mapped[int] = mapped_column(SmallInteger)
    last_purchase_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    purchases: Mapped[int] = mapped_column(Integer)
    spend: Mapped[int] = mapped_column(BigInteger)  # minor units, net of returns
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
