"""What an affiliate sees of its own business: figures per program, commissions by
month and status, the commissions list and its CSV, payouts with their statements,
the terms in force, creatives. Every query is keyed by the affiliate's id: an
affiliate never sees another's rows (not even by guessing ids).

Figures (integers, minor units of the program's currency):
- conversions: sale commissions not voided or rejected;
- earnings: commissions pending, on hold, approved or paid (clawbacks included);
- conversion rate: conversions / clicks in basis points, floored;
- earnings per click: earnings / clicks, rounded half away from zero to a minor unit.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg

from coalition.affiliates.attribution import from_json

EARNING = ("pending", "hold", "approved", "paid")
CHART_STATUSES = ("pending", "hold", "approved", "paid")


@dataclass
class Figures:
    clicks: int
    conversions: int
    earnings: int

    @property
    def rate_bp(self) -> int | None:
        return self.conversions * 10000 // self.clicks if self.clicks else None

    @property
    def per_click(self) -> int | None:
        if not self.clicks:
            return None
        return int((Decimal(self.earnings) / self.clicks).quantize(Decimal(1), ROUND_HALF_UP))

    def __add__(self, other: Figures) -> Figures:
        return Figures(self.clicks + other.clicks, self.conversions + other.conversions,
                       self.earnings + other.earnings)


def percent(bp: int | None) -> str:
    return "-" if bp is None else f"{bp // 100}.{bp % 100:02d} %"


async def enrollments(conn: asyncpg.Connection, affiliate_id: uuid.UUID, now: datetime
                      ) -> list[dict[str, Any]]:
    """The affiliate's enrollments with their program, partner, figures and the terms
    version in force now."""
    rows = await conn.fetch(
        """
        SELECT e.id, e.code, e.status, e.program_id, p.name AS program, p.currency,
               pa.name AS partner, t.version, t.model, t.rate_bp, t.tiers, t.flat_minor,
               t.category_rates, t.recurring_months, t.attribution_window_days,
               t.click_model, t.hold_days, t.min_payout_minor, t.effective_from,
               (SELECT count(*) FROM affiliate_clicks k WHERE k.enrollment_id = e.id)
                   AS clicks,
               (SELECT count(*) FROM affiliate_commissions c WHERE c.enrollment_id = e.id
                   AND c.kind = 'sale' AND c.status NOT IN ('voided', 'rejected'))
                   AS conversions,
               (SELECT coalesce(sum(c.amount_minor), 0) FROM affiliate_commissions c
                 WHERE c.enrollment_id = e.id AND c.status = ANY($3::text[])) AS earnings
          FROM affiliate_enrollments e
          JOIN affiliate_programs p ON p.id = e.program_id
          JOIN partners pa ON pa.id = e.partner_id
          LEFT JOIN LATERAL (SELECT * FROM affiliate_program_terms t
                              WHERE t.program_id = e.program_id AND t.effective_from <= $2
                              ORDER BY t.version DESC LIMIT 1) t ON true
         WHERE e.affiliate_id = $1
         ORDER BY pa.name, p.name
        """, affiliate_id, now, list(EARNING))
    out = []
    for r in rows:
        row = dict(r)
        # Tiers and category rates are jsonb, which the plain pool hands over as text.
        row["tiers"] = from_json(r["tiers"])
        row["category_rates"] = from_json(r["category_rates"]) or {}
        row["figures"] = Figures(r["clicks"], r["conversions"], int(r["earnings"]))
        out.append(row)
    return out


def totals(rows: list[dict[str, Any]]) -> dict[str, Figures]:
    """Figures summed per currency (earnings of different currencies never add up)."""
    out: dict[str, Figures] = {}
    for row in rows:
        out[row["currency"]] = out.get(row["currency"], Figures(0, 0, 0)) + row["figures"]
    return out


def month_starts(now: datetime, count: int = 12) -> list[date]:
    first = date(now.year, now.month, 1)
    months = []
    for _ in range(count):
        months.append(first)
        first = (first - timedelta(days=1)).replace(day=1)
    return months[::-1]


async def months(conn: asyncpg.Connection, affiliate_id: uuid.UUID, now: datetime
                 ) -> list[dict[str, Any]]:
    """The last 12 months (by when the commission occurred, UTC): per currency and
    status, the sum of amounts; months without commissions are present with zeros."""
    starts = month_starts(now)
    rows = await conn.fetch(
        "SELECT date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS month,"
        " currency, status, sum(amount_minor) AS amount FROM affiliate_commissions"
        " WHERE affiliate_id = $1 AND occurred_at >= $2 AND status = ANY($3::text[])"
        " GROUP BY 1, 2, 3", affiliate_id,
        datetime(starts[0].year, starts[0].month, 1, tzinfo=now.tzinfo),
        list(CHART_STATUSES))
    currencies = sorted({r["currency"] for r in rows})
    table = {(r["month"], r["currency"], r["status"]): int(r["amount"]) for r in rows}
    return [{"month": f"{m:%Y-%m}", "currency": c,
             "amounts": {s: table.get((m, c, s), 0) for s in CHART_STATUSES}}
            for c in currencies for m in starts]


@dataclass(frozen=True)
class CommissionFilter:
    program_id: uuid.UUID | None = None
    status: str | None = None
    date_from: date | None = None
    date_to: date | None = None   # inclusive


async def commissions(conn: asyncpg.Connection, affiliate_id: uuid.UUID,
                      f: CommissionFilter, limit: int = 5000) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT c.id, c.occurred_at, p.name AS program, c.kind, c.order_id, c.currency,"
        " c.sale_minor, c.refunded_minor, c.amount_minor, c.status, c.payout_id"
        " FROM affiliate_commissions c JOIN affiliate_programs p ON p.id = c.program_id"
        " WHERE c.affiliate_id = $1 AND ($2::uuid IS NULL OR c.program_id = $2)"
        " AND ($3::text IS NULL OR c.status = $3)"
        " AND ($4::date IS NULL OR c.occurred_at >= $4::date)"
        " AND ($5::date IS NULL OR c.occurred_at < $5::date + 1)"
        " ORDER BY c.occurred_at DESC, c.id DESC LIMIT $6",
        affiliate_id, f.program_id, f.status, f.date_from, f.date_to, limit)


def _decimal(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100}.{abs(minor) % 100:02d}"


def commissions_csv(rows: list[asyncpg.Record]) -> str:
    """Amounts as exact decimals of the currency (12345 -> 123.45)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "occurred_at", "program", "kind", "order_id", "currency", "sale",
                     "refunded", "commission", "status", "payout_id"])
    for r in rows:
        writer.writerow([r["id"], r["occurred_at"].isoformat(), r["program"], r["kind"],
                         r["order_id"] or "", r["currency"], _decimal(r["sale_minor"]),
                         _decimal(r["refunded_minor"]), _decimal(r["amount_minor"]),
                         r["status"], r["payout_id"] or ""])
    return out.getvalue()


async def payouts(conn: asyncpg.Connection, affiliate_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT o.*, p.name AS program, (SELECT count(*) FROM affiliate_commissions c"
        " WHERE c.payout_id = o.id) AS commissions FROM affiliate_payouts o"
        " JOIN affiliate_programs p ON p.id = o.program_id WHERE o.affiliate_id = $1"
        " ORDER BY o.created_at DESC, o.id DESC", affiliate_id)


async def statement(conn: asyncpg.Connection, affiliate_id: uuid.UUID, payout_id: int
                    ) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
    """The payout and its commissions, if the payout is this affiliate's."""
    payout = await conn.fetchrow(
        "SELECT o.*, p.name AS program, pa.name AS partner FROM affiliate_payouts o"
        " JOIN affiliate_programs p ON p.id = o.program_id"
        " JOIN partners pa ON pa.id = o.partner_id WHERE o.id = $1 AND o.affiliate_id = $2",
        payout_id, affiliate_id)
    if payout is None:
        return None
    lines = await conn.fetch(
        "SELECT c.id, c.occurred_at, p.name AS program, c.kind, c.order_id, c.currency,"
        " c.sale_minor, c.refunded_minor, c.amount_minor, c.status, c.payout_id"
        " FROM affiliate_commissions c JOIN affiliate_programs p ON p.id = c.program_id"
        " WHERE c.payout_id = $1 AND c.affiliate_id = $2 ORDER BY c.occurred_at, c.id",
        payout_id, affiliate_id)
    return payout, lines


async def creatives(conn: asyncpg.Connection, affiliate_id: uuid.UUID
                    ) -> list[asyncpg.Record]:
    """Active creatives of the programs the affiliate is approved in."""
    return await conn.fetch(
        "SELECT c.id, c.title, c.filename, c.content_type, length(c.content) AS size,"
        " p.name AS program FROM affiliate_creatives c"
        " JOIN affiliate_enrollments e ON e.program_id = c.program_id"
        " AND e.affiliate_id = $1 AND e.status = 'approved'"
        " JOIN affiliate_programs p ON p.id = c.program_id WHERE c.active"
        " ORDER BY p.name, c.title", affiliate_id)


async def creative(conn: asyncpg.Connection, affiliate_id: uuid.UUID, creative_id: int
                   ) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT c.filename, c.content_type, c.content FROM affiliate_creatives c"
        " JOIN affiliate_enrollments e ON e.program_id = c.program_id"
        " AND e.affiliate_id = $1 AND e.status = 'approved'"
        " WHERE c.id = $2 AND c.active", affiliate_id, creative_id)
