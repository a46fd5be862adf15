"""Earning rules and their immutable versions.

`earning_rules` is the rule's identity and its mutable state: which version is current,
whether it is archived, and the campaign budget's consumption. Posting increments
`budget_used` atomically (``UPDATE earning_rules SET budget_used = budget_used + $x WHERE
id = $id AND (budget IS NULL OR budget_used + $x <= budget)``), so the current version's
budget is copied onto `earning_rules.budget`. `earning_rule_versions` rows are never
updated: an edit inserts version n + 1, and every posting records (rule_id, version) in
rule_hits. `partner_id` NULL is a coalition-wide rule managed by the operator; it is
copied onto each version so row-level security needs no join.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import Base
from coalition.rules.engine import FUNDINGS, RULE_TYPES


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class EarningRule(Base):
    __tablename__ = "earning_rules"
    __table_args__ = (
        CheckConstraint("budget_used >= 0 AND (budget IS NULL OR budget_used <= budget)",
                        name="budget"),
        CheckConstraint("current_version >= 1", name="current_version"),
        Index("ix_earning_rules_partner", "partner_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()"))
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"))
    name: Mapped[str] = mapped_column(String(200))
    current_version: Mapped[int] = mapped_column(Integer, server_default="1")
    # The current version's total campaign budget in points (NULL = unlimited).
    budget: Mapped[int | None] = mapped_column(BigInteger)
    budget_used: Mapped[int] = mapped_column(BigInteger, server_default="0")
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class EarningRuleVersion(Base):
    __tablename__ = "earning_rule_versions"
    __table_args__ = (
        CheckConstraint(_in("type", RULE_TYPES), name="type"),
        CheckConstraint(_in("funding", FUNDINGS), name="funding"),
        CheckConstraint("version >= 1", name="version"),
        CheckConstraint("ends_at IS NULL OR starts_at IS NULL OR ends_at > starts_at",
                        name="window"),
        CheckConstraint("(per_order_cap IS NULL OR per_order_cap > 0)"
                        " AND (per_member_day_cap IS NULL OR per_member_day_cap > 0)"
                        " AND (per_member_month_cap IS NULL OR per_member_month_cap > 0)"
                        " AND (budget IS NULL OR budget > 0)", name="caps"),
    )

    rule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("earning_rules.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"))
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(30))
    params: Mapped[dict] = mapped_column(JSONB, server_default="{}")
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    channels: Mapped[list[str]] = mapped_column(ARRAY(String(10)), server_default="{}")
    tiers: Mapped[list[str]] = mapped_column(ARRAY(String(50)), server_default="{}")
    segments: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)),
                                                     server_default="{}")
    per_order_cap: Mapped[int | None] = mapped_column(BigInteger)
    per_member_day_cap: Mapped[int | None] = mapped_column(BigInteger)
    per_member_month_cap: Mapped[int | None] = mapped_column(BigInteger)
    budget: Mapped[int | None] = mapped_column(BigInteger)
    funding: Mapped[str] = mapped_column(String(10))
    priority: Mapped[int] = mapped_column(Integer, server_default="100")
    stops_later_rules: Mapped[bool] = mapped_column(Boolean, server_default="false")
    # The staff user or operator who saved this version (NULL for the demo seed).
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
