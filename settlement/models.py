"""Commercial terms: effective-dated rate cards per partner and the FX table.

Rows here are never rewritten (a trigger refuses UPDATE and DELETE): a new price is a
new row with a later `effective_from`, so a statement can always show the price that was
in force when each lot was issued or spent.

Prices are exact decimals in minor units of the coalition currency per point (1.2 means
1.2 grosz for each point). Statement lines multiply them exactly and round once, to the
settlement currency's minor unit (settlement/statements).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import Base

BILLING_TYPES = ("postpaid", "prepaid")
CYCLES = ("monthly", "weekly")


class SettlementTerms(Base):
    """A partner's rate card from `effective_from` until the next row's."""

    __tablename__ = "settlement_terms"
    __table_args__ = (
        UniqueConstraint("partner_id", "effective_from", name="uq_settlement_terms_from"),
        CheckConstraint("issue_price >= 0 AND reimbursement >= 0", name="prices"),
        CheckConstraint("fee_percent >= 0 AND fee_percent <= 100 AND fee_fixed >= 0",
                        name="fees"),
        CheckConstraint("billing IN ('postpaid', 'prepaid')", name="billing"),
        CheckConstraint("cycle IN ('monthly', 'weekly')", name="cycle"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        CheckConstraint("credit_limit >= 0", name="credit_limit"),
        CheckConstraint("low_balance_alert IS NULL OR low_balance_alert >= 0",
                        name="low_balance_alert"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(UUID, ForeignKey("partners.id"),
                                                  index=True)
    effective_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Minor units of the coalition currency per point, exact.
    issue_price: Mapped[Decimal] = mapped_column(Numeric(14, 6))
    reimbursement: Mapped[Decimal] = mapped_column(Numeric(14, 6))
    # Platform fee: a percentage of the issuance value and/or a fixed amount per cycle
    # (minor units of the settlement currency).
    fee_percent: Mapped[Decimal] = mapped_column(Numeric(7, 4), server_default="0")
    fee_fixed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    billing: Mapped[str] = mapped_column(String(10), server_default="postpaid")
    cycle: Mapped[str] = mapped_column(String(10), server_default="monthly")
    currency: Mapped[str] = mapped_column(String(3), server_default="PLN")
    # Prepaid only: points a partner may issue beyond its paid blocks, and the remaining
    # block balance (points) at which the operator and the partner are alerted.
    credit_limit: Mapped[int] = mapped_column(BigInteger, server_default="0")
    low_balance_alert: Mapped[int | None] = mapped_column(BigInteger)
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class FxRate(Base):
    """1 `base` = `rate` `quote`, from `effective_from` (a day) until the next row's."""

    __tablename__ = "fx_rates"
    __table_args__ = (
        CheckConstraint("rate > 0", name="rate_positive"),
        CheckConstraint("base ~ '^[A-Z]{3}$' AND quote ~ '^[A-Z]{3}$' AND base <> quote",
                        name="currencies"),
    )

    base: Mapped[str] = mapped_column(String(3), primary_key=True)
    quote: Mapped[str] = mapped_column(String(3), primary_key=True)
    effective_from: Mapped[date] = mapped_column(Date, primary_key=True)
    rate: Mapped[Decimal] = mapped_column(Numeric(18, 8))
    source: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


BLOCK_STATUSES = ("awaiting_payment", "paid", "cancelled")


class PrepaidBlock(Base):
    """Points a prepaid partner buys in advance. Requested at the partner's issue price in
    force (rounded once to the minor unit of `currency`); credited to the partner's
    prepaid balance when paid (settlement/prepaid.py `credit_paid_block`)."""

    __tablename__ = "prepaid_blocks"
    __table_args__ = (
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("price >= 0", name="price"),
        CheckConstraint("status IN ('awaiting_payment', 'paid', 'cancelled')", name="status"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        CheckConstraint("(status = 'paid') = (paid_at IS NOT NULL AND amount_paid IS NOT NULL)",
                        name="paid"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(UUID, ForeignKey("partners.id"), index=True)
    points: Mapped[int] = mapped_column(BigInteger)
    # What the partner pays, minor units of `currency`, and how it was priced.
    price: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    issue_price: Mapped[Decimal] = mapped_column(Numeric(14, 6))
    terms_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("settlement_terms.id"))
    fx_rate: Mapped[Decimal | None] = mapped_column(Numeric(18, 8))
    fx_date: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20), server_default="awaiting_payment")
    requested_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    amount_paid: Mapped[int | None] = mapped_column(BigInteger)
    # Who or what confirmed the payment: "stripe:<invoice id>", "manual:<operator email>".
    paid_via: Mapped[str | None] = mapped_column(String(200))
    # A payment that did not match the price: recorded, not credited, for the operator.
    mismatch_amount: Mapped[int | None] = mapped_column(BigInteger)
    mismatch_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PrepaidBalance(Base):
    """A prepaid partner's points: paid blocks minus points its customers earned (its own
    funding) plus points cancelled back. Kept by triggers on `lots` and `lot_movements`
    (migrations/sql/0016_prepaid.sql); `available` may go below zero down to the credit
    limit of the terms in force, never further."""

    __tablename__ = "prepaid_balances"
    __table_args__ = (
        CheckConstraint("available = paid - drawn + credited", name="sum"),
    )

    partner_id: Mapped[uuid.UUID] = mapped_column(UUID, ForeignKey("partners.id"),
                                                  primary_key=True)
    available: Mapped[int] = mapped_column(BigInteger, server_default="0")
    paid: Mapped[int] = mapped_column(BigInteger, server_default="0")
    drawn: Mapped[int] = mapped_column(BigInteger, server_default="0")
    credited: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # Low-balance alert: set when `available` falls to or below the threshold (once per
    # crossing), mailed by the prepaid_alerts job, cleared by the next paid block.
    low_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    alert_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
