"""Points liability, breakage and the operator's margin (README "Liability, breakage and
margin"). Money is in minor units of the coalition currency, integers.

* Outstanding liability, per issuing partner (lots.partner_id) and funding: the points
  left in active and pending lots, times the point face value
  (coalition_settings.point_face_value, major units per point, times 100 or 1 minor
  units per major for the currency). Rounded once per row, half away from zero; the
  total is the sum of the rounded rows, so the table adds up exactly.
* Per month (the coalition's time zone, by the moving entry's occurred_at):
  redeemed = points taken from lots by redemptions and checkout holds, net of their
  reversals and releases (lot_movements spend + hold + unspend + release, signed);
  expired = points moved to breakage (lot_movements expire). Breakage rate =
  expired / (expired + redeemed), 4 decimals half up; None when both are 0.
  Breakage value = expired x face value, rounded once per month.
* Margin per month, from the lines of finalized (and later) runs whose period starts
  in that month, each line's exact amount taken back to the coalition currency
  (divided by its statement's FX rate, exactly), summed per component, rounded once:
  issuance = issuance lines and the issuance credits among reversals (negative);
  reimbursements = reimbursement lines and the redemption reversals (as a cost, > 0);
  fees = percent and fixed platform fees. Adjustment lines (dispute corrections) are
  not part of the margin.
  margin = issuance - reimbursements + breakage value + fees. Breakage here is the
  liability released by expiry at face value (the issue's definition), shown as its
  own term although the issuance value already contains what partners paid for them.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import asyncpg

from coalition.rules.engine import minor_per_major

FINAL_RUNS = ("finalized", "invoiced", "paid", "closed")


@dataclass(frozen=True)
class Outstanding:
    partner_id: uuid.UUID | None
    partner: str                   # name ("Coalition" for none)
    funding: str
    points: int
    value: int


@dataclass(frozen=True)
class Month:
    month: str                     # YYYY-MM
    redeemed: int
    expired: int
    breakage_rate: Decimal | None
    breakage_value: int
    issuance: int
    reimbursements: int
    fees: int

    @property
    def breakage_percent(self) -> str:
        return "-" if self.breakage_rate is None else f"{self.breakage_rate * 100:.2f} %"

    @property
    def margin(self) -> int:
        return self.issuance - self.reimbursements + self.breakage_value + self.fees


async def _face(conn: asyncpg.Connection) -> tuple[str, Decimal, str]:
    row = await conn.fetchrow("SELECT currency, point_face_value, timezone"
                              " FROM coalition_settings WHERE id = 1")
    return (row["currency"], row["point_face_value"] * minor_per_major(row["currency"]),
            row["timezone"])


async def outstanding(conn: asyncpg.Connection) -> list[Outstanding]:
    _, face, _ = await _face(conn)
    rows = await conn.fetch(
        "SELECT l.partner_id, coalesce(p.name, 'Coalition') AS name, l.funding,"
        " sum(l.remaining) AS points, round(sum(l.remaining) * $1::numeric) AS value"
        " FROM lots l LEFT JOIN partners p ON p.id = l.partner_id"
        " WHERE l.status IN ('active', 'pending') AND l.remaining > 0"
        " GROUP BY l.partner_id, p.name, l.funding ORDER BY points DESC, name", face)
    return [Outstanding(r["partner_id"], r["name"], r["funding"], int(r["points"]),
                        int(r["value"])) for r in rows]


_MONTHS_SQL = """
WITH moves AS (
    SELECT to_char(e.occurred_at AT TIME ZONE $2, 'YYYY-MM') AS month,
           coalesce(sum(m.points) FILTER (WHERE m.kind IN ('spend', 'unspend', 'hold',
                                                           'release')), 0) AS redeemed,
           coalesce(sum(m.points) FILTER (WHERE m.kind = 'expire'), 0) AS expired
      FROM lot_movements m JOIN journal_entries e ON e.id = m.entry_id
     WHERE m.kind IN ('spend', 'unspend', 'hold', 'release', 'expire')
     GROUP BY 1),
lines AS (
    SELECT to_char(r.period_start AT TIME ZONE $2, 'YYYY-MM') AS month,
           l.type, l.amount_exact / coalesce(s.fx_rate, 1) AS value
      FROM settlement_runs r JOIN settlement_statements s ON s.run_id = r.id
      JOIN settlement_lines l ON l.statement_id = s.id
     WHERE r.status = ANY($3::text[])),
money AS (
    SELECT month,
           round(coalesce(sum(value) FILTER (WHERE type = 'issuance'
                     OR (type = 'reversal' AND value < 0)), 0)) AS issuance,
           round(-coalesce(sum(value) FILTER (WHERE type = 'reimbursement'
                     OR (type = 'reversal' AND value > 0)), 0)) AS reimbursements,
           round(coalesce(sum(value) FILTER (WHERE type IN ('platform_fee_percent',
                     'platform_fee_fixed')), 0)) AS fees
      FROM lines GROUP BY month)
SELECT month, coalesce(mv.redeemed, 0) AS redeemed, coalesce(mv.expired, 0) AS expired,
       round(coalesce(mv.expired, 0) * $1::numeric) AS breakage_value,
       coalesce(mo.issuance, 0) AS issuance, coalesce(mo.reimbursements, 0) AS reimbursements,
       coalesce(mo.fees, 0) AS fees
  FROM moves mv FULL JOIN money mo USING (month)
 ORDER BY month
"""


async def months(conn: asyncpg.Connection) -> list[Month]:
    _, face, tz = await _face(conn)
    out = []
    for r in await conn.fetch(_MONTHS_SQL, face, tz, list(FINAL_RUNS)):
        redeemed, expired = int(r["redeemed"]), int(r["expired"])
        rate = None
        if expired + redeemed > 0:
            rate = (Decimal(expired) / Decimal(expired + redeemed)).quantize(
                Decimal("0.0001"), rounding=ROUND_HALF_UP)
        out.append(Month(r["month"], redeemed, expired, rate, int(r["breakage_value"]),
                         int(r["issuance"]), int(r["reimbursements"]), int(r["fees"])))
    return out


MONTH_COLUMNS = ("month", "redeemed_points", "expired_points", "breakage_rate",
                 "breakage_value", "issuance_value", "reimbursements", "platform_fees",
                 "margin")


def report_csv(currency: str, rows: list[Outstanding], by_month: list[Month]) -> str:
    """Outstanding liability by issuer, then the monthly figures (minor units)."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["currency", currency, "amounts in minor units"])
    w.writerow(["issuer", "funding", "outstanding_points", "liability"])
    for o in rows:
        w.writerow([o.partner, o.funding, o.points, o.value])
    w.writerow(["total", "", sum(o.points for o in rows), sum(o.value for o in rows)])
    w.writerow([])
    w.writerow(MONTH_COLUMNS)
    for m in by_month:
        w.writerow([m.month, m.redeemed, m.expired,
                    "" if m.breakage_rate is None else m.breakage_rate, m.breakage_value,
                    m.issuance, m.reimbursements, m.fees, m.margin])
    return out.getvalue()


async def coalition_currency(conn: asyncpg.Connection) -> str:
    return (await _face(conn))[0]
