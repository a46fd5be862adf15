"""Commissions: what an attributed conversion earns its affiliate, their life from
pending to approved, and what returns do to them.

Amounts are integer minor units. A percentage is computed exactly and rounded once,
half away from zero: round(sum(amount_i x rate_i) / 10,000). Models (terms.model):
* percent: `rate_bp` of the sale; lines whose category has an entry in
  `category_rates` earn that rate instead (the rest of the total earns `rate_bp`);
* tiered_percent: the rate of the highest tier (`tiers`, [{from_minor, rate_bp}])
  reached by the affiliate's sales in the program in the calendar month of the
  conversion (coalition time zone) INCLUDING this sale, applied to the whole sale;
  category overrides apply as for percent. Monthly sales count every sale commission
  of the enrollment that is not voided or rejected, net of refunds;
* per_transaction: `flat_minor` per attributed purchase;
* per_lead: `flat_minor` once per member per program, at sign-up; purchases earn none.
First purchase only (`recurring_months` NULL) or every purchase until `recurring_months`
after the member's first attributed purchase.

Status: `pending` until `hold_until` (conversion + hold_days), then `approved` by the
`approve_commissions` job; `hold` when a fraud rule fired (a person releases or
rejects it). Returns: before the commission is paid out or claimed by a settlement run,
its amount is reduced in proportion to the returned share of the sale (a full return
voids it); after that, a negative `clawback` commission (approved at once) takes the
difference back from the next payout and statement.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from coalition import clock
from coalition.affiliates import fraud
from coalition.affiliates.attribution import (
    Attributed,
    Flush,
    Touch,
    add_months,
    attribute,
    from_json,
    mark_first_conversion,
)

REVIEWABLE = ("hold",)


def round_half_away(numerator: int, denominator: int) -> int:
    """numerator / denominator to the nearest integer, halves away from zero."""
    quotient, remainder = divmod(abs(numerator), denominator)
    if remainder * 2 >= denominator:
        quotient += 1
    return quotient if (numerator >= 0) == (denominator > 0) else -quotient


def tier_rate(tiers: list[dict[str, int]], monthly_sales: int) -> dict[str, int]:
    """The highest tier whose threshold the monthly sales reach (the first tier if none)."""
    ordered = sorted(tiers, key=lambda tier: tier["from_minor"])
    reached = [tier for tier in ordered if tier["from_minor"] <= monthly_sales]
    return reached[-1] if reached else ordered[0]


def sale_amount(terms: dict[str, Any], total: int, lines: list[dict[str, Any]],
                monthly_before: int) -> tuple[int, dict[str, Any]] | None:
    """The commission on a sale of `total` and how it was computed; None for per_lead."""
    model = terms["model"]
    if model == "per_lead":
        return None
    if model == "per_transaction":
        return terms["flat_minor"], {"model": model, "flat_minor": terms["flat_minor"]}
    detail: dict[str, Any] = {"model": model}
    rate = terms["rate_bp"] or 0
    if model == "tiered_percent":
        tier = tier_rate(terms["tiers"], monthly_before + total)
        rate = tier["rate_bp"]
        detail.update(monthly_sales_before=monthly_before,
                      monthly_sales_with_this=monthly_before + total, tier=tier)
    overrides = terms["category_rates"] or {}
    numerator, overridden, by_category = 0, 0, {}
    for line in lines:
        category = line.get("category")
        if category in overrides:
            numerator += line["amount"] * overrides[category]
            overridden += line["amount"]
            by_category.setdefault(category, {"rate_bp": overrides[category], "amount": 0})
            by_category[category]["amount"] += line["amount"]
    rest = max(total - overridden, 0)
    numerator += rest * rate
    detail.update(rate_bp=rate, base_minor=rest, category_rates_applied=by_category)
    return round_half_away(numerator, 10_000), detail


_INSERT = """
INSERT INTO affiliate_commissions (program_id, partner_id, enrollment_id, affiliate_id,
    terms_id, kind, order_id, member_id, click_id, currency, sale_minor, amount_minor,
    status, explanation, fraud_reasons, hold_until, occurred_at, decided_at, decided_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::text, $14::jsonb, $15,
        $16::timestamptz, $17, CASE WHEN $13::text = 'approved' THEN $16::timestamptz END,
        CASE WHEN $13::text = 'approved' THEN 'system' END)
ON CONFLICT DO NOTHING
RETURNING id, kind, amount_minor, currency, status, fraud_reasons, hold_until, explanation
"""

_MONTHLY = """
SELECT coalesce(sum(sale_minor - refunded_minor), 0) FROM affiliate_commissions
 WHERE enrollment_id = $1 AND kind = 'sale' AND status NOT IN ('voided', 'rejected')
   AND occurred_at >= $2 AND occurred_at < $3
"""


def _out(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "kind": row["kind"], "amount": row["amount_minor"],
            "currency": row["currency"], "status": row["status"],
            "fraud_reasons": list(row["fraud_reasons"]), "hold_until": row["hold_until"],
            "explanation": from_json(row["explanation"])}


async def _insert(conn: asyncpg.Connection, a: Attributed, *, kind: str, member_id: uuid.UUID,
                  at: datetime, amount: int, sale: int, order_id: str | None,
                  detail: dict[str, Any]) -> dict[str, Any] | None:
    held = await fraud.reasons(conn, fraud.Conversion(
        a.partner_id, a.program_id, a.enrollment_id, a.affiliate_id, member_id, a.click_id,
        a.clicked_at, at, order_id, sale))
    hold_until = at + timedelta(days=a.terms["hold_days"])
    # A conversion reported after its hold already ended is approved as of the hold's
    # end (decided_at), the moment the approval job would have approved it.
    status = ("hold" if held else "approved" if hold_until <= clock.now()
              else "pending")
    explanation = {**a.explanation, **detail, "amount_before_refunds": amount,
                   "hold_days": a.terms["hold_days"]}
    row = await conn.fetchrow(
        _INSERT, a.program_id, a.partner_id, a.enrollment_id, a.affiliate_id,
        a.terms["id"], kind, order_id, member_id, a.click_id, a.currency, sale, amount,
        status, json.dumps(explanation, default=str), held, hold_until, at)
    return _out(row) if row is not None else None


async def record_sale(conn: asyncpg.Connection, a: Attributed, *, member_id: uuid.UUID,
                      order_id: str, total: int, lines: list[dict[str, Any]], at: datetime,
                      month: tuple[datetime, datetime]) -> tuple[dict[str, Any] | None, str]:
    """The sale commission of an attributed purchase (None and why when it earns none,
    or when this order already has one in the program)."""
    terms = a.terms
    if a.first_conversion_at is not None:
        if terms["recurring_months"] is None:
            return None, ("first purchase only: the member's first attributed purchase"
                          f" was on {a.first_conversion_at:%Y-%m-%d}")
        if at >= add_months(a.first_conversion_at, terms["recurring_months"]):
            return None, (f"the {terms['recurring_months']} recurring months after the"
                          " first attributed purchase have passed")
    monthly = 0
    if terms["model"] == "tiered_percent":
        monthly = await conn.fetchval(_MONTHLY, a.enrollment_id, *month)
    computed = sale_amount(terms, total, lines, monthly)
    if computed is None:
        return None, "the program pays per lead, not per purchase"
    amount, detail = computed
    if a.first_conversion_at is None:
        await mark_first_conversion(conn, member_id, a.program_id, at)
    detail["purchase"] = ("first attributed purchase" if a.first_conversion_at is None
                          else f"recurring (first on {a.first_conversion_at:%Y-%m-%d})")
    made = await _insert(conn, a, kind="sale", member_id=member_id, at=at, amount=amount,
                         sale=total, order_id=order_id, detail=detail)
    return made, "" if made else "this order already has a commission in the program"


async def record_lead(conn: asyncpg.Connection, a: Attributed, *, member_id: uuid.UUID,
                      at: datetime) -> dict[str, Any] | None:
    """A per-lead program's commission for a member's sign-up (once per member)."""
    if a.terms["model"] != "per_lead":
        return None
    return await _insert(conn, a, kind="lead", member_id=member_id, at=at,
                         amount=a.terms["flat_minor"], sale=0, order_id=None,
                         detail={"model": "per_lead", "flat_minor": a.terms["flat_minor"]})


async def for_purchase(conn: asyncpg.Connection, *, partner_id: uuid.UUID,
                       member_id: uuid.UUID, order_id: str, total: int,
                       lines: list[dict[str, Any]], at: datetime, currency: str,
                       month: tuple[datetime, datetime], touch: Touch | None,
                       flush: Flush | None = None) -> dict[str, Any] | None:
    """Attribute a posted purchase and record its commission, in the caller's
    transaction. None: not attributed (or nothing earned)."""
    attributed, _ = await attribute(conn, partner_id=partner_id, member_id=member_id,
                                    at=at, touch=touch, flush=flush)
    if attributed is None or attributed.currency != currency:
        return None
    made, _ = await record_sale(conn, attributed, member_id=member_id, order_id=order_id,
                                total=total, lines=lines, at=at, month=month)
    return made


async def click_partner(conn: asyncpg.Connection, touch: Touch,
                        flush: Flush | None = None) -> uuid.UUID | None:
    """The partner whose program a click id or code belongs to (a sign-up outside any
    partner, at the member portal, converts for that partner)."""
    if touch.click_id is not None:
        found = await conn.fetchval("SELECT partner_id FROM affiliate_clicks"
                                    " WHERE click_id = $1", touch.click_id)
        if found is None and flush is not None:
            await flush()
            found = await conn.fetchval("SELECT partner_id FROM affiliate_clicks"
                                        " WHERE click_id = $1", touch.click_id)
        if found is not None:
            return found
    if touch.code is not None:
        return await conn.fetchval("SELECT partner_id FROM affiliate_enrollments"
                                   " WHERE code = $1", touch.code)
    return None


async def for_signup(conn: asyncpg.Connection, *, member_id: uuid.UUID, at: datetime,
                     touch: Touch, partner_id: uuid.UUID | None = None,
                     flush: Flush | None = None) -> dict[str, Any] | None:
    """A member's sign-up through an affiliate: the attribution is stored (later
    purchases use it) and a per-lead program pays its lead."""
    if not touch:
        return None
    if partner_id is None:
        partner_id = await click_partner(conn, touch, flush)
        if partner_id is None:
            return None
    attributed, _ = await attribute(conn, partner_id=partner_id, member_id=member_id,
                                    at=at, touch=touch, flush=flush)
    if attributed is None:
        return None
    return await record_lead(conn, attributed, member_id=member_id, at=at)


async def approve_due(conn: asyncpg.Connection, now: datetime) -> int:
    """Pending commissions whose hold period ended become approved (payable)."""
    done = await conn.execute(
        "UPDATE affiliate_commissions SET status = 'approved', decided_at = $1,"
        " decided_by = 'system' WHERE status = 'pending' AND hold_until <= $1", now)
    return int(done.split()[-1])


_FOR_ORDER = """
SELECT c.*, p.total, p.returned_total FROM affiliate_commissions c
  JOIN purchases p ON p.partner_id = c.partner_id AND p.order_id = c.order_id
 WHERE c.partner_id = $1 AND c.order_id = $2 AND c.kind = 'sale'
   FOR UPDATE OF c
"""

_CLAWBACK = """
INSERT INTO affiliate_commissions (program_id, partner_id, enrollment_id, affiliate_id,
    terms_id, kind, order_id, member_id, click_id, currency, sale_minor, amount_minor,
    status, explanation, reverses_id, occurred_at, decided_at, decided_by)
SELECT program_id, partner_id, enrollment_id, affiliate_id, terms_id, 'clawback', order_id,
       member_id, click_id, currency, 0, $2, 'approved', $3::jsonb, id, $4, $4, 'system'
  FROM affiliate_commissions WHERE id = $1
RETURNING id
"""


async def apply_return(conn: asyncpg.Connection, partner_id: uuid.UUID, order_id: str,
                       now: datetime) -> list[dict[str, Any]]:
    """Bring the order's sale commission in line with the purchase's returned total
    (idempotent: it follows purchases.returned_total). In the caller's transaction."""
    changes = []
    for c in await conn.fetch(_FOR_ORDER, partner_id, order_id):
        sale = c["sale_minor"]
        refunded = min(c["returned_total"], sale)
        if refunded <= c["refunded_minor"] or sale == 0:
            continue
        original = from_json(c["explanation"]).get("amount_before_refunds", c["amount_minor"])
        before = round_half_away(original * (sale - c["refunded_minor"]), sale)
        after = round_half_away(original * (sale - refunded), sale)
        settled = (c["status"] == "paid" or c["payout_id"] is not None
                   or c["settlement_run_id"] is not None)
        if c["status"] in ("voided", "rejected") or not settled:
            status = ("voided" if refunded >= sale and c["status"] not in ("rejected",)
                      else c["status"])
            amount = c["amount_minor"] if c["status"] in ("voided", "rejected") else after
            await conn.execute("UPDATE affiliate_commissions SET refunded_minor = $2,"
                               " amount_minor = $3, status = $4 WHERE id = $1",
                               c["id"], refunded, amount, status)
            changes.append({"id": c["id"], "amount": amount, "status": status})
            continue
        await conn.execute("UPDATE affiliate_commissions SET refunded_minor = $2"
                           " WHERE id = $1", c["id"], refunded)
        if before > after:
            why = {"why": f"returned {refunded} of {sale} after the commission was"
                   f" {'paid out' if c['status'] == 'paid' else 'settled'}",
                   "reverses": c["id"], "returned_minor": refunded}
            claw = await conn.fetchval(_CLAWBACK, c["id"], after - before, json.dumps(why),
                                       now)
            changes.append({"id": claw, "amount": after - before, "status": "approved",
                            "reverses_id": c["id"]})
    return changes


async def decide(conn: asyncpg.Connection, commission_id: int, *, release: bool,
                 actor: str, now: datetime, partner_id: uuid.UUID | None = None
                 ) -> str | None:
    """Release (back to pending, or approved if its hold period has passed) or reject a
    held commission. `partner_id` limits it to that partner's (None: the operator).
    Returns the new status, or None when there is no such held commission."""
    return await conn.fetchval(
        "UPDATE affiliate_commissions SET status = CASE WHEN NOT $2 THEN 'rejected'"
        " WHEN hold_until <= $4 THEN 'approved' ELSE 'pending' END,"
        " decided_at = $4, decided_by = $3"
        " WHERE id = $1 AND status = 'hold' AND ($5::uuid IS NULL OR partner_id = $5)"
        " RETURNING status", commission_id, release, actor, now, partner_id)
