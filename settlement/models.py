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
