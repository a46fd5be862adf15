"""Fraud rules run on every new commission. Any rule that fires puts the commission on
`hold` (a person releases or rejects it in the console) with one reason per rule in
`fraud_reasons`, each "<rule>: <what was seen>".

Rules and their thresholds (module constants, the same for every program):
* self_referral: the converting member is the affiliate's own member account or the
  member its points payouts go to (its card), or has the affiliate's email address;
* click_flooding: more than CLICK_FLOOD_MAX clicks from the attributed click's address
  (ip_hash) on the enrollment within CLICK_FLOOD_MINUTES before that click;
* too_soon: the conversion came less than MIN_SECONDS_AFTER_CLICK seconds after the
  click (a code has no click and is exempt);
* duplicate_order: a commission of the same affiliate at the same partner for the same
  member and the same sale amount, for another order id, within DUPLICATE_ORDER_MINUTES;
* refund_rate: over the last REFUND_RATE_DAYS, the affiliate's sales in the program
  (at least REFUND_RATE_MIN_SALES of them) were refunded for more than
  REFUND_RATE_MAX_BP basis points of their value.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

CLICK_FLOOD_MAX = 20
CLICK_FLOOD_MINUTES = 10
MIN_SECONDS_AFTER_CLICK = 10
DUPLICATE_ORDER_MINUTES = 30
REFUND_RATE_DAYS = 90
REFUND_RATE_MIN_SALES = 3
REFUND_RATE_MAX_BP = 3000   # 30 %


@dataclass(frozen=True)
class Conversion:
    partner_id: uuid.UUID
    program_id: uuid.UUID
    enrollment_id: uuid.UUID
    affiliate_id: uuid.UUID
    member_id: uuid.UUID
    click_id: uuid.UUID | None
    clicked_at: datetime
    at: datetime
    order_id: str | None = None
    sale_minor: int = 0


_SELF = """
SELECT m.id = a.member_id AS own_account, m.id = a.payout_member_id AS payout_card,
       lower(m.email) = lower(a.email) AS same_email
  FROM affiliates a, members m WHERE a.id = $1 AND m.id = $2
"""

_FLOOD = """
SELECT count(*) FROM affiliate_clicks c
 WHERE c.enrollment_id = $1 AND c.clicked_at > $3::timestamptz - make_interval(mins => $4)
   AND c.clicked_at <= $3::timestamptz
   AND c.ip_hash = (SELECT ip_hash FROM affiliate_clicks WHERE click_id = $2)
"""

_DUPLICATE = """
SELECT order_id FROM affiliate_commissions
 WHERE affiliate_id = $1 AND partner_id = $2 AND member_id = $3 AND kind = 'sale'
   AND sale_minor = $4 AND order_id <> $5
   AND occurred_at BETWEEN $6::timestamptz - make_interval(mins => $7)
                       AND $6::timestamptz + make_interval(mins => $7)
 LIMIT 1
"""

_REFUNDS = """
SELECT count(*) AS sales, coalesce(sum(sale_minor), 0) AS sold,
       coalesce(sum(refunded_minor), 0) AS refunded
  FROM affiliate_commissions
 WHERE enrollment_id = $1 AND kind = 'sale'
   AND occurred_at >= $2::timestamptz - make_interval(days => $3)
"""


async def reasons(conn: asyncpg.Connection, c: Conversion) -> list[str]:
    found: list[str] = []
    own = await conn.fetchrow(_SELF, c.affiliate_id, c.member_id)
    if own is not None:
        if own["own_account"]:
            found.append("self_referral: the buyer is the affiliate's own member account")
        elif own["payout_card"]:
            found.append("self_referral: the buyer's card receives the affiliate's payouts")
        elif own["same_email"]:
            found.append("self_referral: the buyer has the affiliate's email address")
    if c.click_id is not None:
        clicks = await conn.fetchval(_FLOOD, c.enrollment_id, c.click_id, c.clicked_at,
                                     CLICK_FLOOD_MINUTES)
        if clicks > CLICK_FLOOD_MAX:
            found.append(f"click_flooding: {clicks} clicks from the same address within"
                         f" {CLICK_FLOOD_MINUTES} minutes (more than {CLICK_FLOOD_MAX})")
        seconds = (c.at - c.clicked_at).total_seconds()
        if seconds < MIN_SECONDS_AFTER_CLICK:
            found.append(f"too_soon: converted {max(seconds, 0):.0f} s after the click"
                         f" (under {MIN_SECONDS_AFTER_CLICK} s)")
    if c.order_id is not None:
        other = await conn.fetchval(_DUPLICATE, c.affiliate_id, c.partner_id, c.member_id,
                                    c.sale_minor, c.order_id, c.at, DUPLICATE_ORDER_MINUTES)
        if other is not None:
            found.append(f"duplicate_order: order {other} has the same member and amount"
                         f" within {DUPLICATE_ORDER_MINUTES} minutes")
        row = await conn.fetchrow(_REFUNDS, c.enrollment_id, c.at, REFUND_RATE_DAYS)
        if (row["sales"] >= REFUND_RATE_MIN_SALES and row["sold"] > 0
                and row["refunded"] * 10_000 > row["sold"] * REFUND_RATE_MAX_BP):
            share = row["refunded"] * 100 // row["sold"]
            found.append(f"refund_rate: {share} % of the affiliate's sales in the last"
                         f" {REFUND_RATE_DAYS} days were refunded (over"
                         f" {REFUND_RATE_MAX_BP // 100} %)")
    return found

