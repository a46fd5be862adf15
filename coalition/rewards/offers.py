"""Cross-brand coupon offers as the operator sets them up ("a purchase at brand A of at
least X gives a coupon for reward R at brand B"); the purchase path grants the coupons
(coupons.py). An offer binds two brands, so only the operator (or the demo) makes one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coalition.errors import DomainError, NotFound
from coalition.rewards.models import describe, money
from coalition.settings import coalition_settings
from coalition.uow import Tx


@dataclass(frozen=True)
class OfferInput:
    name: str
    source_partner_id: uuid.UUID
    reward_id: uuid.UUID
    min_total: int                    # minor units of the coalition currency
    starts_at: datetime | None = None
    ends_at: datetime | None = None


def _refused(field: str, detail: str) -> DomainError:
    return DomainError("validation-error", "Invalid coupon offer", detail, status=400,
                       field=field)


async def create_coupon_offer(tx: Tx, offer: OfferInput) -> uuid.UUID:
    """The offer, with its audit entry. The reward must be another brand's than the one
    where the purchase is made: a cross-brand coupon is used at a different brand."""
    target = await tx.conn.fetchval("SELECT partner_id FROM rewards WHERE id = $1",
                                    offer.reward_id)
    if target is None:
        raise _refused("reward_id", "Choose one.")
    if not await tx.conn.fetchval("SELECT 1 FROM partners WHERE id = $1",
                                  offer.source_partner_id):
        raise _refused("source_partner_id", "Choose one.")
    if target == offer.source_partner_id:
        raise _refused("reward_id", "Choose another brand's reward: a cross-brand coupon is"
                       " used at a different brand.")
    offer_id = await tx.conn.fetchval(
        "INSERT INTO coupon_offers (name, source_partner_id, reward_id, min_total,"
        " starts_at, ends_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " RETURNING id", offer.name, offer.source_partner_id, offer.reward_id,
        offer.min_total, offer.starts_at, offer.ends_at, tx.actor.label)
    await tx.audit("coupon_offer.create", target=str(offer_id))
    return offer_id


async def set_coupon_offer_active(tx: Tx, offer_id: uuid.UUID, active: bool) -> None:
    changed = await tx.conn.fetchval(
        "UPDATE coupon_offers SET active = $2 WHERE id = $1 RETURNING id", offer_id, active)
    if changed is None:
        raise NotFound("not-found", "No such offer", "No such offer.")
    await tx.audit("coupon_offer.activate" if active else "coupon_offer.deactivate",
                   target=str(offer_id))


@dataclass(frozen=True)
class OffersPage:
    """The operator's offers (with coupons granted and used), and what a new one may
    name: the active brands and the active rewards."""

    currency: str
    offers: list[dict[str, Any]]
    partners: list[Any]
    rewards: list[dict[str, Any]]


async def coupon_offers(tx: Tx) -> OffersPage:
    currency = (await coalition_settings(tx.conn)).currency
    offers = await tx.conn.fetch(
        "SELECT o.*, sp.name AS source_name, r.name AS reward_name, r.kind, r.value,"
        " r.currency, rp.name AS target_name,"
        " (SELECT count(*) FROM vouchers v WHERE v.offer_id = o.id) AS granted,"
        " (SELECT count(*) FROM vouchers v WHERE v.offer_id = o.id"
        "   AND v.status = 'used') AS used"
        " FROM coupon_offers o JOIN partners sp ON sp.id = o.source_partner_id"
        " JOIN rewards r ON r.id = o.reward_id JOIN partners rp ON rp.id = r.partner_id"
        " ORDER BY o.active DESC, o.created_at DESC")
    partners = await tx.conn.fetch("SELECT id, name FROM partners WHERE status = 'active'"
                                   " ORDER BY name")
    rewards = await tx.conn.fetch(
        "SELECT r.id, r.name, r.kind, r.value, r.currency, p.name AS partner_name"
        " FROM rewards r JOIN partners p ON p.id = r.partner_id"
        " WHERE r.active ORDER BY p.name, r.name")
    rows = [{**dict(o), "worth": describe(o["kind"], o["value"], o["currency"]),
             "threshold": money(o["min_total"], currency)} for o in offers]
    choices = [{"id": r["id"], "label": f"{r['partner_name']}: {r['name']} "
                f"({describe(r['kind'], r['value'], r['currency'])})"} for r in rewards]
    return OffersPage(currency, rows, list(partners), choices)
