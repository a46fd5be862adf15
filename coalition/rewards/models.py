"""Rewards, vouchers and cross-brand coupon offers.

Money values are integers in minor units of `currency` (grosz for PLN); a percentage
discount's `value` is whole percent (1..100). Prices are whole points."""

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
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import Base

# kind -> what `value` means (None: the kind has no value).
REWARD_KINDS: dict[str, str | None] = {
    "percent_discount": "percent",
    "fixed_discount": "minor units",
    "free_delivery": None,
    "gift_card": "minor units",
    "product": None,
    "event_seat": None,
}
KIND_LABELS = {
    "percent_discount": "Percentage discount voucher",
    "fixed_discount": "Fixed discount voucher",
    "free_delivery": "Free delivery",
    "gift_card": "Gift card",
    "product": "Physical product",
    "event_seat": "Event or webinar seat",
}
VOUCHER_STATUSES = ("issued", "used", "cancelled")
VOUCHER_SOURCES = ("redemption", "coupon")


def _in(column: str, values) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


_VALUED = tuple(k for k, v in REWARD_KINDS.items() if v is not None)


class Reward(Base):
    """An item of a partner's catalogue. `stock` NULL is unlimited; `issued` counts the
    vouchers ever issued. Unlisted rewards are not offered for points: they are only
    granted as cross-brand coupons. Empty `tiers`/`segments` gate nobody; otherwise a
    member must be in one of the tiers and in one of the segments."""

    __tablename__ = "rewards"
    __table_args__ = (
        CheckConstraint(_in("kind", REWARD_KINDS), name="kind"),
        CheckConstraint("price_points > 0", name="price"),
        CheckConstraint("stock IS NULL OR stock >= 0", name="stock"),
        CheckConstraint("issued >= 0", name="issued"),
        CheckConstraint("voucher_days IS NULL OR voucher_days > 0", name="voucher_days"),
        CheckConstraint("per_member_limit IS NULL OR per_member_limit > 0",
                        name="per_member_limit"),
        CheckConstraint("valid_until IS NULL OR valid_from IS NULL OR valid_until > valid_from",
                        name="window"),
        CheckConstraint(
            f"(kind = 'percent_discount' AND value BETWEEN 1 AND 100)"
            f" OR (kind IN ('fixed_discount', 'gift_card') AND value > 0)"
            f" OR (kind NOT IN ({', '.join(repr(k) for k in _VALUED)}) AND value IS NULL)",
            name="value"),
        Index("ix_rewards_partner", "partner_id", "active"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(20))
    value: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), server_default="PLN")
    category: Mapped[str | None] = mapped_column(String(50))
    price_points: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int | None] = mapped_column(BigInteger)
    issued: Mapped[int] = mapped_column(BigInteger, server_default="0")
    valid_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    voucher_days: Mapped[int | None] = mapped_column(Integer)
    per_member_limit: Mapped[int | None] = mapped_column(Integer)
    tiers: Mapped[list[str]] = mapped_column(ARRAY(String(50)), server_default="{}")
    segments: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)),
                                                      server_default="{}")
    listed: Mapped[bool] = mapped_column(Boolean, server_default="true")
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Voucher(Base):
    """One issued reward. Usable once, at `partner_id` (the reward's partner); the
    issuer is the same partner for a redemption and brand A for a cross-brand coupon.
    `request_key` makes a member's portal redemption idempotent; (offer, issuer, order)
    makes a coupon grant idempotent."""

    __tablename__ = "vouchers"
    __table_args__ = (
        CheckConstraint(_in("status", VOUCHER_STATUSES), name="status"),
        CheckConstraint(_in("source", VOUCHER_SOURCES), name="source"),
        CheckConstraint("points >= 0", name="points"),
        CheckConstraint("(status = 'used') = (used_at IS NOT NULL)", name="used"),
        Index("ix_vouchers_member", "member_id", "issued_at"),
        Index("ix_vouchers_reward_member", "reward_id", "member_id"),
        Index("ix_vouchers_partner", "partner_id", "issued_at"),
        Index("ix_vouchers_issuer", "issuer_partner_id", "order_id"),
        Index("uq_vouchers_request", "member_id", "request_key", unique=True,
              postgresql_where=text("request_key IS NOT NULL")),
        Index("uq_vouchers_coupon", "offer_id", "issuer_partner_id", "order_id", unique=True,
              postgresql_where=text("offer_id IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()"))
    code: Mapped[str] = mapped_column(String(19), unique=True)
    reward_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rewards.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"))
    issuer_partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"))
    source: Mapped[str] = mapped_column(String(12))
    points: Mapped[int] = mapped_column(BigInteger, server_default="0")
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    offer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("coupon_offers.id"))
    order_id: Mapped[str | None] = mapped_column(String(200))
    request_key: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(10), server_default="issued")
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    used_order_id: Mapped[str | None] = mapped_column(String(200))
    used_by: Mapped[str | None] = mapped_column(String(200))


class CouponOffer(Base):
    """"A purchase at brand A of at least `min_total` issues a free voucher of reward R
    at brand B." Set up by the operator, since it binds two brands."""

    __tablename__ = "coupon_offers"
    __table_args__ = (
        CheckConstraint("min_total >= 0", name="min_total"),
        CheckConstraint("ends_at IS NULL OR starts_at IS NULL OR ends_at > starts_at",
                        name="window"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()"))
    name: Mapped[str] = mapped_column(String(200))
    source_partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    reward_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rewards.id"))
    # Minor units of the coalition's currency (coalition_settings.currency).
    min_total: Mapped[int] = mapped_column(BigInteger)
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    created_by: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


def money(minor: int, currency: str) -> str:
    """Minor units as a decimal amount, exactly (integer arithmetic, no floats)."""
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100}.{abs(minor) % 100:02d} {currency}"


def describe(kind: str, value: int | None, currency: str) -> str:
    """What the voucher is worth, in words: "10% off", "15.00 PLN off", "Gift card …"."""
    if kind == "percent_discount":
        return f"{value}% off"
    if kind == "fixed_discount":
        return f"{money(value or 0, currency)} off"
    if kind == "gift_card":
        return f"Gift card {money(value or 0, currency)}"
    return KIND_LABELS[kind]
