"""Coalition-wide tables: settings, members, the double-entry ledger and point lots.

Ledger sign convention: a posting's amount is added to its account's balance and the
postings of one journal entry sum to zero. Earning moves points from the partner's
issuance account (which goes negative) into the member's wallet.
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
    Identity,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import Base

# activate: pending points become available; hold/capture/release: two-phase redemption.
ENTRY_KINDS = ("earn", "redeem", "reverse", "adjust", "transfer", "expire", "activate",
               "hold", "capture", "release")
ACCOUNT_KINDS = (
    "member_wallet",
    "partner_issuance",
    "partner_redemption",
    "operator_promotions",
    "operator_breakage",
    "operator_adjustments",
    # Points a partner issued that still wait out its return window.
    "partner_pending",
    # Points held by open checkout authorizations at a partner.
    "partner_holds",
)
LOT_STATUSES = ("pending", "active", "spent", "expired", "cancelled")
MEMBER_STATUSES = ("active", "blocked", "closed")
# A company member is a buying firm whose several person logins share one wallet
# (coalition/companies.py).
MEMBER_KINDS = ("person", "company")
EXPIRY_POLICIES = ("rolling", "end_of_month", "end_of_year", "fixed_date", "never")
RETURN_POLICIES = ("negative_floor", "clawback")
FUNDING = ("partner", "coalition")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class CoalitionSettings(Base):
    """The single row of coalition-wide settings."""

    __tablename__ = "coalition_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name="singleton"),
        CheckConstraint(_in("expiry_policy", EXPIRY_POLICIES), name="expiry_policy"),
        CheckConstraint(_in("return_policy", RETURN_POLICIES), name="return_policy"),
        CheckConstraint("negative_balance_floor >= 0", name="negative_floor"),
        CheckConstraint("hold_timeout_seconds > 0", name="hold_timeout"),
        CheckConstraint("expiry_policy <> 'fixed_date' OR (expiry_fixed_month BETWEEN 1 AND 12"
                        " AND expiry_fixed_day BETWEEN 1 AND 31)", name="fixed_date"),
    )

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default="1")
    name: Mapped[str] = mapped_column(String(200), server_default="Coalition")
    currency_name: Mapped[str] = mapped_column(String(50), server_default="points")
    currency: Mapped[str] = mapped_column(String(3), server_default="PLN")
    # Exact value of one point in major units of `currency` (0.01 PLN = 1 grosz).
    point_face_value: Mapped[Decimal] = mapped_column(Numeric(12, 6), server_default="0.01")
    timezone: Mapped[str] = mapped_column(String(64), server_default="Europe/Warsaw")
    # Rolling validity of earned points; NULL means points never expire.
    points_validity_months: Mapped[int | None] = mapped_column(Integer, server_default="36")
    # How an earned lot's expiry date is set (ledger_lot_expiry, sql/0013; the operator
    # sets it at /operator/policies, coalition/policies.py).
    expiry_policy: Mapped[str] = mapped_column(String(20), server_default="rolling")
    # For fixed_date: points expire on this day and month after validity months pass.
    expiry_fixed_month: Mapped[int | None] = mapped_column(SmallInteger)
    expiry_fixed_day: Mapped[int | None] = mapped_column(SmallInteger)
    # A return whose points the member already spent: let the balance go negative down
    # to -negative_balance_floor, or take what is left and record the shortfall.
    return_policy: Mapped[str] = mapped_column(String(20), server_default="clawback")
    negative_balance_floor: Mapped[int] = mapped_column(BigInteger, server_default="500")
    # Checkout holds lapse by themselves after this long.
    hold_timeout_seconds: Mapped[int] = mapped_column(Integer, server_default="900")


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (
        CheckConstraint(_in("status", MEMBER_STATUSES), name="status"),
        CheckConstraint(_in("kind", MEMBER_KINDS), name="kind"),
        CheckConstraint("(kind = 'company') = (company_name IS NOT NULL AND tax_id IS NOT NULL)",
                        name="company"),
        Index("uq_members_email_lower", func.lower(text("email")), unique=True),
        CheckConstraint("referral_code ~ '^[2-9A-HJKMNP-Z]{8}$'", name="referral_code"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10), server_default="active")
    card_number: Mapped[str] = mapped_column(String(16), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    kind: Mapped[str] = mapped_column(String(10), server_default="person")
    company_name: Mapped[str | None] = mapped_column(String(200))
    tax_id: Mapped[str | None] = mapped_column(String(20))  # PL NIP or EU VAT id, compact
    # For birthday segments and offers; optional.
    birth_date: Mapped[date | None] = mapped_column(Date)
    # The member-get-member code (coalition/referrals.py), drawn the first time it is shown.
    referral_code: Mapped[str | None] = mapped_column(String(8), unique=True)


class MemberLink(Base):
    """A member's relationship with one partner, with the partner's own customer id."""

    __tablename__ = "member_links"
    __table_args__ = (
        PrimaryKeyConstraint("partner_id", "member_id"),
        UniqueConstraint("partner_id", "customer_id", name="uq_member_links_partner_customer"),
        Index("ix_member_links_member_id", "member_id"),
    )

    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    customer_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Account(Base):
    """A ledger account. `balance` is a cached sum of postings for accounts that need a
    bound checked (member wallets); it is NULL for high-traffic accounts such as a
    partner's issuance account, whose balance is derived from postings so that no
    single row serializes every transaction."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(_in("kind", ACCOUNT_KINDS), name="kind"),
        CheckConstraint(
            "balance IS NULL OR lower_bound IS NULL OR balance >= lower_bound", name="lower_bound"
        ),
        CheckConstraint("(kind = 'member_wallet') = (member_id IS NOT NULL)", name="wallet_member"),
        Index(
            "uq_accounts_partner_kind",
            "partner_id",
            "kind",
            unique=True,
            postgresql_where=text("partner_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    code: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(30))
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"))
    member_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("members.id"), unique=True)
    balance: Mapped[int | None] = mapped_column(BigInteger)
    lower_bound: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(BigInteger, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class JournalEntry(Base):
    """One balanced ledger transaction. Immutable: the database refuses UPDATE/DELETE."""

    __tablename__ = "journal_entries"
    __table_args__ = (
        CheckConstraint(_in("kind", ENTRY_KINDS), name="kind"),
        UniqueConstraint("partner_id", "idempotency_key", name="uq_journal_entries_idempotency"),
        Index("ix_journal_entries_member_id", "member_id", "id"),
        Index("ix_journal_entries_partner_order", "partner_id", "order_id"),
        Index("ix_journal_entries_reverses", "reverses_entry_id",
              postgresql_where=text("reverses_entry_id IS NOT NULL")),
        # Entries arrive in time order: a BRIN index serves period scans at almost no
        # insert cost.
        Index("ix_journal_entries_created_at", "created_at", postgresql_using="brin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"))
    member_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("members.id"))
    order_id: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    reverses_entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    actor: Mapped[str] = mapped_column(String(200))
    metadata_: Mapped[dict] = mapped_column("metadata", JSONB, server_default="{}")
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Posting(Base):
    """One leg of an entry. An entry posts to an account at most once."""

    __tablename__ = "postings"
    __table_args__ = (
        PrimaryKeyConstraint("entry_id", "account_id"),
        CheckConstraint("amount <> 0", name="nonzero"),
        Index("ix_postings_account_id", "account_id", "entry_id"),
    )

    entry_id: Mapped[int] = mapped_column(ForeignKey("journal_entries.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)


class Lot(Base):
    """Points from one earning: who issued them, how many remain, when they expire."""

    __tablename__ = "lots"
    __table_args__ = (
        CheckConstraint(_in("status", LOT_STATUSES), name="status"),
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining_range"),
        Index(
            "ix_lots_spendable",
            "member_id",
            "expires_at",
            "earned_at",
            "id",
            postgresql_where=text("remaining > 0"),
        ),
        Index("ix_lots_entry_id", "entry_id"),
        CheckConstraint(_in("funding", FUNDING), name="funding"),
        Index("ix_lots_pending", "available_at", postgresql_where=text("status = 'pending'")),
        Index("ix_lots_expiring", "expires_at",
              postgresql_where=text("status = 'active' AND remaining > 0")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # Copies of the earning entry's member and partner (the entry_id foreign key holds
    # the reference; `ledger verify` checks they agree) so bulk imports skip two
    # foreign-key look-ups per lot.
    member_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    partner_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    entry_id: Mapped[int] = mapped_column(ForeignKey("journal_entries.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(10), server_default="active")
    earned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Pending lots become active at this time (the partner's return window).
    available_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Who pays for these points at settlement: the issuing partner or the coalition.
    funding: Mapped[str] = mapped_column(String(10), server_default="partner")


class LotMovement(Base):
    """Points taken from (positive) or given back to (negative) a lot by an entry.
    Redemptions record which lots they consumed: settlement's partner-to-partner flows."""

    __tablename__ = "lot_movements"
    __table_args__ = (
        CheckConstraint("points <> 0", name="nonzero"),
        # hold/release: points a checkout authorization holds or gives back; repay: points
        # of a new lot that settle a negative balance left by a return.
        CheckConstraint("kind IN ('spend', 'unspend', 'cancel', 'expire', 'hold', 'release',"
                        " 'repay')", name="kind"),
        Index("ix_lot_movements_lot_id", "lot_id"),
        Index("ix_lot_movements_entry_id", "entry_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("journal_entries.id"))
    kind: Mapped[str] = mapped_column(String(10))
    points: Mapped[int] = mapped_column(BigInteger)


class IdempotencyKey(Base):
    """A successful write's response, replayed for retries with the same key and body."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        PrimaryKeyConstraint("partner_id", "key"),
        Index("ix_idempotency_keys_created_at", "created_at"),
    )

    partner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    response: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
