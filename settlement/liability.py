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
* Margin per month: what the operator keeps of the money partners paid for points.
    margin = redemption spread + breakage + platform fees
  - redemption spread = redeemed value - reimbursements: for the points redeemed in the
    month (the same signed lot movements as `redeemed`), their value at the issue price
    of the lot they came from (the issuing partner's rate card in force when the lot was
    earned) minus the reimbursement the redeeming partner gets for them (its rate card
    in force at the redemption; a reversal at the original redemption's);
  - breakage = the points expired in the month valued at their lot's issue price;
  - fees = the platform fee lines (percent and fixed) of finalized (and later) runs
    whose period starts in the month, back in the coalition currency (each line's exact
    amount divided by its statement's FX rate).
  Coalition-funded lots were issued at no price (the operator funds them), so their
  redemptions are a cost at the reimbursement and their expiry is worth nothing; a lot
  or redemption with no rate card in force counts at price 0. Each component is summed
  exactly per month and rounded once (half away from zero); the margin is the sum of
  the rounded components. Issuance is deliberately not a term: the issue price of a
  point is earned when the point is redeemed (the spread) or expires (breakage), and
  until then it is liability, so an expired point is counted once, as breakage.
  `breakage_value` (expired x face value) is the liability that expiry released, shown
  for the breakage table, not part of the margin.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import asyncpg

from coalition.rules.engine import minor_per_major
from coalition.settings import coalition_settings

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
    redeemed_value: int            # redeemed points at their lots' issue prices
    reimbursements: int
    breakage_margin: int           # expired points at their lots' issue prices
    fees: int

    @property
    def breakage_percent(self) -> str:
        return "-" if self.breakage_rate is None else f"{self.breakage_rate * 100:.2f} %"

    @property
    def spread(self) -> int:
        return self.redeemed_value - self.reimbursements

    @property
    def margin(self) -> int:
        return self.spread + self.breakage_margin + self.fees


async def _face(conn: asyncpg.Connection) -> tuple[str, Decimal, str]:
    """The currency, a point's face value in its minor units (exact) and the zone."""
    found = await coalition_settings(conn)
    value = found.point_value * minor_per_major(found.currency)
    # A numeric(12, 6) column: the fraction terminates well within Decimal's precision.
    face = Decimal(value.numerator) / Decimal(value.denominator)
    return found.currency, face, found.timezone


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
WITH terms AS (
    SELECT partner_id, effective_from, issue_price, reimbursement,
           coalesce(lead(effective_from) OVER (PARTITION BY partner_id
                                               ORDER BY effective_from),
                    'infinity') AS effective_to
      FROM settlement_terms),
moved AS (
    SELECT to_char(e.occurred_at AT TIME ZONE $2, 'YYYY-MM') AS month, m.kind, m.points,
           CASE WHEN l.funding = 'partner' THEN coalesce(ti.issue_price, 0) ELSE 0 END
               AS issue_price,
           coalesce(tr.reimbursement, 0) AS reimbursement
      FROM lot_movements m
      JOIN journal_entries e ON e.id = m.entry_id
      JOIN lots l ON l.id = m.lot_id
      JOIN journal_entries le ON le.id = l.entry_id
      LEFT JOIN journal_entries o ON o.id = e.reverses_entry_id
      LEFT JOIN terms ti ON ti.partner_id = l.partner_id
           AND le.occurred_at >= ti.effective_from AND le.occurred_at < ti.effective_to
      LEFT JOIN terms tr ON m.kind <> 'expire' AND tr.partner_id = e.partner_id
           AND coalesce(o.occurred_at, e.occurred_at) >= tr.effective_from
           AND coalesce(o.occurred_at, e.occurred_at) < tr.effective_to
     WHERE m.kind IN ('spend', 'unspend', 'hold', 'release', 'expire')),
moves AS (
    SELECT month,
           coalesce(sum(points) FILTER (WHERE kind <> 'expire'), 0) AS redeemed,
           coalesce(sum(points) FILTER (WHERE kind = 'expire'), 0) AS expired,
           round(coalesce(sum(points * issue_price) FILTER (WHERE kind <> 'expire'), 0))
               AS redeemed_value,
           round(coalesce(sum(points * reimbursement) FILTER (WHERE kind <> 'expire'), 0))
               AS reimbursements,
           round(coalesce(sum(points * issue_price) FILTER (WHERE kind = 'expire'), 0))
               AS breakage_margin
      FROM moved GROUP BY month),
fees AS (
    SELECT to_char(r.period_start AT TIME ZONE $2, 'YYYY-MM') AS month,
           round(sum(l.amount_exact / coalesce(s.fx_rate, 1))) AS fees
      FROM settlement_runs r JOIN settlement_statements s ON s.run_id = r.id
      JOIN settlement_lines l ON l.statement_id = s.id
     WHERE r.status = ANY($3::text[])
       AND l.type IN ('platform_fee_percent', 'platform_fee_fixed')
     GROUP BY 1)
SELECT month, coalesce(mv.redeemed, 0) AS redeemed, coalesce(mv.expired, 0) AS expired,
       round(coalesce(mv.expired, 0) * $1::numeric) AS breakage_value,
       coalesce(mv.redeemed_value, 0) AS redeemed_value,
       coalesce(mv.reimbursements, 0) AS reimbursements,
       coalesce(mv.breakage_margin, 0) AS breakage_margin, coalesce(f.fees, 0) AS fees
  FROM moves mv FULL JOIN fees f USING (month)
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
                         int(r["redeemed_value"]), int(r["reimbursements"]),
                         int(r["breakage_margin"]), int(r["fees"])))
    return out


MONTH_COLUMNS = ("month", "redeemed_points", "expired_points", "breakage_rate",
                 "breakage_value", "redeemed_issue_value", "reimbursements",
                 "redemption_spread", "breakage_at_issue_price", "platform_fees", "margin")


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
                    m.redeemed_value, m.reimbursements, m.spread, m.breakage_margin, m.fees,
                    m.margin])
    return out.getvalue()


async def coalition_currency(conn: asyncpg.Connection) -> str:
    return (await _face(conn))[0]
