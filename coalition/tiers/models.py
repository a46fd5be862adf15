"""Tier tables: the coalition-wide ladder and its policy, each member's tier state and
the history of every change. Money thresholds are minor units of the coalition currency
(grosz for PLN); points thresholds are whole points."""

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
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import Base

QUALIFICATIONS = ("spend", "points")
WINDOWS = ("rolling", "calendar_year")
DOWNGRADES = ("never", "anniversary", "rolling")
CHANGE_REASONS = ("upgrade", "downgrade", "manual", "manual_expired")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class TierSettings(Base):
    """The single row of the ladder's policy (coalition/tiers/ladder.py explains it)."""

    __tablename__ = "tier_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name="singleton"),
        CheckConstraint(_in("qualification", QUALIFICATIONS), name="qualification"),
        CheckConstraint(_in("window_kind", WINDOWS), name="window_kind"),
        CheckConstraint("window_months BETWEEN 1 AND 60", name="window_months"),
        CheckConstraint(_in("downgrade", DOWNGRADES), name="downgrade"),
    )

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default="1")
    qualification: Mapped[str] = mapped_column(String(10), server_default="spend")
    window_kind: Mapped[str] = mapped_column(String(20), server_default="rolling")
    window_months: Mapped[int] = mapped_column(SmallInteger, server_default="12")
    downgrade: Mapped[str] = mapped_column(String(20), server_default="anniversary")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_by: Mapped[str | None] = mapped_column(String(320))


class Tier(Base):
    """One rung of the ladder. `code` is the stable name rules and rewards target."""

    __tablename__ = "tiers"
    __table_args__ = (
        CheckConstraint("code ~ '^[a-z][a-z0-9_]{0,29}$'", name="code"),
        CheckConstraint("threshold >= 0", name="threshold"),
        CheckConstraint("rank >= 0", name="rank"),
    )

    code: Mapped[str] = mapped_column(String(30), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    rank: Mapped[int] = mapped_column(SmallInteger, unique=True)
    threshold: Mapped[int] = mapped_column(BigInteger)
    benefits: Mapped[list] = mapped_column(JSONB, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MemberTier(Base):
    """A member's tier. `earned_code` is what qualification gave (subject to the
    downgrade policy); a manual assignment until `manual_until` guarantees at least
    `manual_code`; `tier_code` is the effective tier, the higher of the two. Members
    without a row hold the lowest tier."""

    __tablename__ = "member_tiers"
    __table_args__ = (
        CheckConstraint("(manual_code IS NULL) = (manual_until IS NULL)", name="manual"),
        Index("ix_member_tiers_tier_code", "tier_code"),
    )

    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), primary_key=True)
    tier_code: Mapped[str] = mapped_column(ForeignKey("tiers.code"))
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    earned_code: Mapped[str] = mapped_column(ForeignKey("tiers.code"))
    earned_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The tier anniversary: when the anniversary policy next checks the earned tier.
    review_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    manual_code: Mapped[str | None] = mapped_column(ForeignKey("tiers.code"))
    manual_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    manual_reason: Mapped[str | None] = mapped_column(Text)
    manual_by: Mapped[str | None] = mapped_column(String(320))


class TierChange(Base):
    """One change of a member's effective tier (or a manual assignment), with why."""

    __tablename__ = "tier_history"
    __table_args__ = (
        CheckConstraint(_in("reason", CHANGE_REASONS), name="reason"),
        Index("ix_tier_history_member", "member_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    from_code: Mapped[str | None] = mapped_column(String(30))
    to_code: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str] = mapped_column(String(20))
    # The qualifying value when the change was decided (minor units or points).
    value: Mapped[int | None] = mapped_column(BigInteger)
    note: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(320))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
