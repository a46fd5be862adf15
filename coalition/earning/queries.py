"""Reads of earning: a posted purchase as the API shows it, and what a simulation needs
to know about the member and the partner."""

from __future__ import annotations

import uuid

import asyncpg

from coalition.earning.posting import MemberRef
from coalition.uow import Tx

_PURCHASE = """
SELECT jsonb_build_object(
    'id', p.id, 'order_id', p.order_id, 'member_id', p.member_id,
    'occurred_at', p.occurred_at, 'total', p.total, 'currency', p.currency,
    'channel', p.channel, 'store_id', p.store_id, 'lines', p.lines, 'points', p.points,
    'entry_id', p.entry_id, 'rules', p.breakdown, 'referral_bonus', p.referral,
    'returned_total', p.returned_total,
    'returned_points', p.returned_points,
    'returns', coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'id', r.id, 'amount', r.amount, 'lines', r.lines, 'points', r.points,
                    'shortfall', r.shortfall, 'negative_balance', r.debt, 'policy', r.policy,
                    'created_at', r.created_at) ORDER BY r.id)
                  FROM purchase_returns r WHERE r.purchase_id = p.id), '[]'),
    'created_at', p.created_at)::text
  FROM purchases p WHERE p.order_id = $1
"""


async def purchase_detail(tx: Tx, order_id: str) -> str | None:
    """The purchase with its rule breakdown and returns, as JSON text, or None. Run it
    scoped: row-level security limits it to the caller's own purchases."""
    return await tx.conn.fetchval(_PURCHASE, order_id)


_FIND_MEMBER = """
SELECT l.member_id,
       NOT EXISTS (SELECT 1 FROM purchases p WHERE p.partner_id = $1
                      AND p.member_id = l.member_id) AS first_purchase
  FROM member_links l JOIN members m ON m.id = l.member_id
 WHERE l.partner_id = $1 AND ($2::uuid IS NULL OR l.member_id = $2)
   AND ($3::text IS NULL OR m.card_number = $3) AND ($4::text IS NULL OR l.customer_id = $4)
"""


async def find_member(conn: asyncpg.Connection, partner_id: uuid.UUID, member: MemberRef
                      ) -> asyncpg.Record | None:
    """The partner's member (member_id) and whether a purchase would be the member's
    first at the partner (first_purchase)."""
    return await conn.fetchrow(_FIND_MEMBER, partner_id, member.id, member.card_number,
                               member.customer_id)


async def pending_days(conn: asyncpg.Connection, partner_id: uuid.UUID) -> int | None:
    """The partner's return window: how long a purchase's points stay pending."""
    return await conn.fetchval("SELECT pending_days FROM partners WHERE id = $1", partner_id)
