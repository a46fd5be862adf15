"""Payment tables: how each partner is billed and paid, every payment the platform asked
Stripe or the bank for, and every Stripe event received.

A payment is keyed by a plain reference, ('statement', '<id>') or ('prepaid_block',
'<id>'), so this module knows nothing of statements or point blocks; the code that owns
them attaches itself through `settlement.payment_hooks`. Amounts are integers in minor
units of `currency`, never floats.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import Base

PAYOUT_METHODS = ("stripe_connect", "sepa")
PAYMENT_KINDS = ("invoice", "transfer", "sepa_credit", "prepaid_block")
# Every status a payment can be in, by kind (the webhook's precedence is in webhooks.py).
STATUSES: dict[str, tuple[str, ...]] = {
    "invoice": ("open", "paid", "payment_failed", "voided", "uncollectible"),
    "prepaid_block": ("open", "paid", "payment_failed", "voided", "uncollectible"),
    "transfer": ("created", "paid", "failed", "reversed"),
    "sepa_credit": ("ready", "exported", "paid", "failed"),
}
ALL_STATUSES = tuple(sorted({s for group in STATUSES.values() for s in group}))


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class PayoutDetails(Base):
    """How a partner is billed (its Stripe Customer) and paid (a Connect account, or a
    bank account for SEPA credit transfers). IBAN and BIC are checked with schwifty
    before they are stored (coalition/bank.py)."""

    __tablename__ = "partner_payout_details"
    __table_args__ = (
        CheckConstraint("method IS NULL OR " + _in("method", PAYOUT_METHODS), name="method"),
        CheckConstraint("method IS DISTINCT FROM 'sepa' OR (iban IS NOT NULL AND"
                        " account_holder IS NOT NULL)", name="sepa_needs_account"),
        CheckConstraint("method IS DISTINCT FROM 'stripe_connect' OR"
                        " stripe_account_id IS NOT NULL", name="connect_needs_account"),
        CheckConstraint("stripe_account_id IS NULL OR stripe_account_id ~ '^acct_[A-Za-z0-9]+$'",
                        name="account_id"),
    )

    partner_id: Mapped[uuid.UUID] = mapped_column(UUID, ForeignKey("partners.id"),
                                                  primary_key=True)
    # NULL until the partner chose how it is paid; billing works without it.
    method: Mapped[str | None] = mapped_column(String(20))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_account_id: Mapped[str | None] = mapped_column(String(255))
    account_holder: Mapped[str | None] = mapped_column(String(140))
    iban: Mapped[str | None] = mapped_column(String(34))   # compact, upper case
    bic: Mapped[str | None] = mapped_column(String(11))
    billing_email: Mapped[str | None] = mapped_column(String(320))
    updated_by: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class SettlementPayment(Base):
    """One payment: an invoice the partner pays, a transfer or SEPA credit it receives,
    or a prepaid point block it buys. One per (kind, reference): asking twice returns
    the first."""

    __tablename__ = "settlement_payments"
    __table_args__ = (
        UniqueConstraint("kind", "reference_type", "reference_id",
                         name="uq_settlement_payments_reference"),
        CheckConstraint(_in("kind", PAYMENT_KINDS), name="kind"),
        CheckConstraint(_in("status", ALL_STATUSES), name="status"),
        CheckConstraint("amount > 0 AND amount_paid >= 0", name="amounts"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        CheckConstraint("collection IS NULL OR collection IN ('charge_automatically',"
                        " 'send_invoice')", name="collection"),
        Index("ix_settlement_payments_reference", "reference_type", "reference_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(UUID, ForeignKey("partners.id"),
                                                  index=True)
    kind: Mapped[str] = mapped_column(String(20))
    reference_type: Mapped[str] = mapped_column(String(40))
    reference_id: Mapped[str] = mapped_column(String(100))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    collection: Mapped[str | None] = mapped_column(String(30))
    # in_…, tr_…; NULL for SEPA credits.
    stripe_object_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    status: Mapped[str] = mapped_column(String(20))
    amount_paid: Mapped[int] = mapped_column(BigInteger, server_default="0")
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # The `created` time of the newest Stripe event applied: an older one never
    # overrides what a newer one set (webhooks.py).
    stripe_event_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sepa_message_id: Mapped[str | None] = mapped_column(String(35),
                                                         ForeignKey("sepa_batches.message_id"))
    # A SEPA credit paid to someone other than the partner on the partner's behalf (an
    # affiliate): the account, checked and copied when queued. NULL: the partner's own.
    creditor_name: Mapped[str | None] = mapped_column(String(140))
    creditor_iban: Mapped[str | None] = mapped_column(String(34))
    creditor_bic: Mapped[str | None] = mapped_column(String(11))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class SepaBatch(Base):
    """A pain.001 credit-transfer file as exported, kept so it can be downloaded again."""

    __tablename__ = "sepa_batches"

    message_id: Mapped[str] = mapped_column(String(35), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    total: Mapped[int] = mapped_column(BigInteger)
    payments: Mapped[int] = mapped_column(BigInteger)
    xml: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class StripeEvent(Base):
    """Every Stripe event received, stored once by its id."""

    __tablename__ = "stripe_events"
    __table_args__ = (
        # Events waiting for their payment (webhooks.replay_waiting_events).
        Index("ix_stripe_events_waiting", "created", postgresql_where="processed_at IS NULL"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                  server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # applied, stale (an older event than the state it would change), ignored (a type
    # not handled), unmatched (no payment of ours), error.
    outcome: Mapped[str | None] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    payment_id: Mapped[int | None] = mapped_column(BigInteger,
                                                   ForeignKey("settlement_payments.id"))


class OperatorNotification(Base):
    """Something the operator must look at (a failed charge, a reversed transfer). Also
    emailed to every operator; listed on /operator/payments until acknowledged."""

    __tablename__ = "operator_notifications"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    partner_id: Mapped[uuid.UUID | None] = mapped_column(UUID, ForeignKey("partners.id"))
    payment_id: Mapped[int | None] = mapped_column(BigInteger,
                                                   ForeignKey("settlement_payments.id"))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
