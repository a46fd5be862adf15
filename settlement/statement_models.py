"""Settlement runs, statements, lines, disputes, adjustments and the flow matrix.

A run settles one period (a month, or an ISO week for weekly partners) of one cycle.
Its statements and lines are computed by SQL (migrations/sql/0017_settlement.sql) and are
writable only while the run is a draft; database triggers refuse any other change, and
a SHA-256 content hash stored at finalization is checked on every read.

Sign convention: a positive amount is owed by the partner to the operator; a negative
one is owed by the operator to the partner. A statement's net is the sum of its
lines' rounded amounts.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import Base

RUN_STATUSES = ("draft", "in_review", "finalized", "invoiced", "paid", "closed")
LINE_TYPES = ("issuance", "reimbursement", "reversal", "coalition_funded_bonus",
              "affiliate_commission", "platform_fee_percent", "platform_fee_fixed",
              "adjustment")
# Where a statement's money stands; the Stripe integration moves it after finalization.
PAYMENT_STATUSES = ("pending", "nothing_due", "invoiced", "paid", "payment_failed", "void",
                    "transfer_pending", "transferred")
DISPUTE_STATUSES = ("open", "accepted", "rejected")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class SettlementRun(Base):
    __tablename__ = "settlement_runs"
    __table_args__ = (
        UniqueConstraint("cycle", "period", name="uq_settlement_runs_period"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        CheckConstraint("cycle IN ('monthly', 'weekly')", name="cycle"),
        CheckConstraint("period_start < period_end", name="period_range"),
        CheckConstraint("dispute_window_days >= 0", name="dispute_window"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    period: Mapped[str] = mapped_column(String(10))          # 2026-10 or 2026-W43
    cycle: Mapped[str] = mapped_column(String(10))
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # exclusive
    status: Mapped[str] = mapped_column(String(12), server_default="draft")
    dispute_window_days: Mapped[int] = mapped_column(Integer, server_default="7")
    currency: Mapped[str] = mapped_column(String(3))         # the coalition's, at computation
    computed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dispute_deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finalized_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finalized_by: Mapped[str | None] = mapped_column(String(200))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    # Partners with activity in the period but no rate card: not settled, their entries
    # stay unclaimed for a later run (once a rate card covers them).
    skipped_partners: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class SettlementStatement(Base):
    """One partner's account for one run: one net amount in its settlement currency."""

    __tablename__ = "settlement_statements"
    __table_args__ = (
        UniqueConstraint("run_id", "partner_id", name="uq_settlement_statements_partner"),
        CheckConstraint(_in("payment_status", PAYMENT_STATUSES), name="payment_status"),
        CheckConstraint("net = total_debit + total_credit", name="net"),
        Index("ix_settlement_statements_partner", "partner_id", "run_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("settlement_runs.id", ondelete="CASCADE"))
    partner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True),
                                                  ForeignKey("partners.id"))
    currency: Mapped[str] = mapped_column(String(3))
    # 1 unit of the coalition currency = fx_rate units of `currency` (NULL: the same).
    fx_rate: Mapped[Decimal | None] = mapped_column(Numeric(18, 8))
    total_debit: Mapped[int] = mapped_column(BigInteger)     # sum of positive lines
    total_credit: Mapped[int] = mapped_column(BigInteger)    # sum of negative lines
    net: Mapped[int] = mapped_column(BigInteger)             # > 0: the partner pays
    line_count: Mapped[int] = mapped_column(Integer)
    late_lines: Mapped[int] = mapped_column(Integer, server_default="0")
    payment_status: Mapped[str] = mapped_column(String(20), server_default="pending")
    payment_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SettlementLine(Base):
    __tablename__ = "settlement_lines"
    __table_args__ = (
        UniqueConstraint("statement_id", "line_no", name="uq_settlement_lines_no"),
        CheckConstraint(_in("type", LINE_TYPES), name="type"),
        Index("ix_settlement_lines_run", "run_id"),
        Index("ix_settlement_lines_partner", "partner_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    statement_id: Mapped[int] = mapped_column(
        ForeignKey("settlement_statements.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(ForeignKey("settlement_runs.id", ondelete="CASCADE"))
    partner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True),
                                                  ForeignKey("partners.id"))
    line_no: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(24))
    description: Mapped[str] = mapped_column(Text)
    late: Mapped[bool] = mapped_column(Boolean, server_default="false")
    points: Mapped[int | None] = mapped_column(BigInteger)
    # Minor units of the coalition currency per point (a percentage for
    # platform_fee_percent); NULL where no price applies.
    unit_price: Mapped[Decimal | None] = mapped_column(Numeric(14, 6))
    terms_id: Mapped[int | None] = mapped_column(ForeignKey("settlement_terms.id"))
    fx_rate: Mapped[Decimal | None] = mapped_column(Numeric(18, 8))
    # Exact amount in minor units of the statement currency, then rounded once.
    amount_exact: Mapped[Decimal] = mapped_column(Numeric())  # unconstrained: exact
    amount: Mapped[int] = mapped_column(BigInteger)
    adjustment_id: Mapped[int | None] = mapped_column(BigInteger)


class SettlementEntry(Base):
    """The journal entries a run settles: claimed when the draft is computed, so a
    finalized run's input is fixed and later runs pick up only what nobody claimed."""

    __tablename__ = "settlement_entries"

    entry_id: Mapped[int] = mapped_column(ForeignKey("journal_entries.id"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("settlement_runs.id", ondelete="CASCADE"),
                                        index=True)


class SettlementAdjustment(Base):
    """An operator's correction, billed as an adjustment line on the next computed draft
    of the partner's cycle (run_id is that draft's while it claims it)."""

    __tablename__ = "settlement_adjustments"
    __table_args__ = (CheckConstraint("amount <> 0", name="nonzero"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True),
                                                  ForeignKey("partners.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)   # minor units of settlement currency
    reason: Mapped[str] = mapped_column(Text)
    dispute_id: Mapped[int | None] = mapped_column(BigInteger)
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("settlement_runs.id", ondelete="SET NULL"))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class SettlementDispute(Base):
    __tablename__ = "settlement_disputes"
    __table_args__ = (
        CheckConstraint(_in("status", DISPUTE_STATUSES), name="status"),
        CheckConstraint("length(comment) BETWEEN 1 AND 2000", name="comment"),
        Index("ix_settlement_disputes_run", "run_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("settlement_runs.id"))
    statement_id: Mapped[int | None] = mapped_column(
        ForeignKey("settlement_statements.id", ondelete="SET NULL"))
    line_id: Mapped[int | None] = mapped_column(
        ForeignKey("settlement_lines.id", ondelete="SET NULL"))
    partner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True),
                                                  ForeignKey("partners.id"), index=True)
    # What the line said when disputed (a draft re-run replaces lines).
    line_summary: Mapped[str] = mapped_column(Text)
    comment: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    status: Mapped[str] = mapped_column(String(10), server_default="open")
    resolution: Mapped[str | None] = mapped_column(Text)
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    adjustment_id: Mapped[int | None] = mapped_column(
        ForeignKey("settlement_adjustments.id"))


class SettlementFlow(Base):
    """Points issued by one partner and redeemed at another within a run (the bilateral
    flow matrix), valued at the redeeming partner's reimbursement, in minor units of the
    coalition currency. NULL issuer or redeemer is the coalition itself."""

    __tablename__ = "settlement_flows"
    __table_args__ = (Index("ix_settlement_flows_run", "run_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("settlement_runs.id", ondelete="CASCADE"))
    issuer_partner_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    redeemer_partner_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    funding: Mapped[str] = mapped_column(String(10))
    points: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[int] = mapped_column(BigInteger)
