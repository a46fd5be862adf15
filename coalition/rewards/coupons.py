"""Cross-brand coupons (R14, C4, C10): "a purchase at brand A of at least X issues a
free voucher of reward R at brand B". The operator sets offers up (they bind two brands);
the purchase API calls grant_purchase_coupons right after a purchase posts."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from coalition.audience import member_context
from coalition.rewards.service import (
    _VOUCHER,
    eligible,
    insert_voucher,
    lock_wallet,
    present_voucher,
    reward_of,
    take_stock,
    used_count,
)

_OFFERS = """
SELECT o.id AS offer_id, o.name AS offer_name, r.*
  FROM coupon_offers o
  JOIN rewards r ON r.id = o.reward_id
  JOIN partners p ON p.id = r.partner_id AND p.status = 'active'
 WHERE o.source_partner_id = $1 AND o.active AND o.min_total <= $2
   AND (o.starts_at IS NULL OR o.starts_at <= $3) AND (o.ends_at IS NULL OR o.ends_at > $3)
 ORDER BY o.created_at, o.id
"""


async def grant_purchase_coupons(conn: asyncpg.Connection, *, partner_id: uuid.UUID,
                                 member_id: uuid.UUID, order_id: str, total: int,
                                 occurred_at: datetime) -> list[dict]:
    """Issue the coupons this purchase qualifies for; return every coupon the order has
    (issued now or by an earlier call), each a voucher dict with its `offer_id`.

    Idempotent per (offer, partner, order): a repeated call issues nothing new. A coupon
    respects its reward like a redemption does (active, validity window at the purchase
    time, tier and segment gates, stock, per-member limit) but costs no points; an offer
    that cannot be honoured is skipped. Runs inside the caller's transaction when there
    is one (a savepoint per coupon), under the member's wallet lock."""
    offers = await conn.fetch(_OFFERS, partner_id, total, occurred_at)
    if not offers:        # the common case costs the purchase one indexed query
        return []
    async with conn.transaction():
        await lock_wallet(conn, member_id)
        context = await member_context(conn, member_id)
        for offer in offers:
            granted = await conn.fetchval(
                "SELECT 1 FROM vouchers WHERE offer_id = $1 AND issuer_partner_id = $2"
                " AND order_id = $3", offer["offer_id"], partner_id, order_id)
            if granted:
                continue
            reward = reward_of(offer)
            if eligible(reward, context, at=occurred_at) is not None:
                continue
            limit = reward.per_member_limit
            if limit is not None and await used_count(conn, reward.id, member_id) >= limit:
                continue
            async with conn.transaction():
                if not await take_stock(conn, reward.id):
                    continue
                await insert_voucher(conn, reward, member_id, issuer=partner_id,
                                     source="coupon", offer_id=offer["offer_id"],
                                     order_id=order_id)
        rows = await conn.fetch(
            _VOUCHER + " WHERE v.issuer_partner_id = $1 AND v.order_id = $2"
            " AND v.offer_id IS NOT NULL AND v.member_id = $3 ORDER BY v.issued_at, v.id",
            partner_id, order_id, member_id)
    return [{**present_voucher(r), "offer_id": r["offer_id"]} for r in rows]
