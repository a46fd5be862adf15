"""Three-way reconciliation of a settlement run (README "Reconciliation").

For one run it compares, set-based in SQL:

(a) the ledger, now: the postings of the journal entries the run claimed
    (settlement_entries), valued again exactly as `settlement_compute` valued them
    (same rate cards, the statement's FX rate, one rounding per line), and the affiliate
    commissions it claimed (affiliate_commissions.settlement_run_id);
(b) what the run stored: its lines, its statements' totals and its content hash;
(c) the money: the statement's payment row (reference ('statement', id); kind invoice
    when the partner owes, transfer or sepa_credit when it is owed; none when net = 0).

Every difference is a `Discrepancy`. A run that matches everywhere yields none. Payments
are only expected once the run is finalized (a draft or a run in review has none).
Amounts are integers in minor units of the statement's currency.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass

import asyncpg

from settlement.runs import run_by_id

LEDGER_TYPES = ("issuance", "reversal", "reimbursement", "coalition_funded_bonus",
                "platform_fee_percent", "affiliate_commission")
PAID = "paid"
# Payment states in which the money has moved (a Stripe transfer is done once created).
SETTLED = {"invoice": ("paid",), "transfer": ("paid", "created"), "sepa_credit": ("paid",)}
STATEMENT_SETTLED = ("paid", "transferred")
PAYOUT_KINDS = ("transfer", "sepa_credit")
KINDS = ("hash_mismatch", "statement_total_mismatch", "ledger_changed", "payment_missing",
         "transfer_missing", "payment_wrong_kind", "payment_unexpected",
         "payment_amount_mismatch", "payment_currency_mismatch", "paid_amount_mismatch",
         "payment_status_mismatch")


@dataclass(frozen=True)
class Discrepancy:
    kind: str
    partner_id: uuid.UUID | None
    partner: str | None          # slug
    statement_id: int | None
    expected: str
    actual: str
    cause: str

    def as_dict(self) -> dict:
        data = asdict(self)
        data["partner_id"] = str(self.partner_id) if self.partner_id else None
        return data


# (a) vs (b): the ledger-valued lines recomputed now (the CTEs follow settlement_compute's
# st_terms / st_val / st_line step by step), against the stored lines, both summed per
# (partner, type, late, rate card, unit price) so two lines sharing that key compare as one.
_LEDGER_SQL = """
WITH r AS (SELECT * FROM settlement_runs WHERE id = $1),
terms AS (
    SELECT t.id, t.partner_id, t.effective_from, t.issue_price, t.reimbursement,
           t.fee_percent, coalesce(lead(t.effective_from) OVER (
               PARTITION BY t.partner_id ORDER BY t.effective_from), 'infinity') AS effective_to
      FROM settlement_terms t, r WHERE t.effective_from < r.period_end),
stmt AS (SELECT * FROM settlement_statements WHERE run_id = $1),
val AS (
    SELECT coalesce(a.partner_id, e.partner_id) AS partner_id, a.kind,
           sum(CASE a.kind WHEN 'partner_redemption' THEN p.amount ELSE -p.amount END) AS points,
           coalesce(o.occurred_at, e.occurred_at) AS priced_at,
           e.occurred_at < r.period_start AS late
      FROM r JOIN settlement_entries s ON s.run_id = r.id
      JOIN journal_entries e ON e.id = s.entry_id
      JOIN postings p ON p.entry_id = s.entry_id
      JOIN accounts a ON a.id = p.account_id
      LEFT JOIN journal_entries o ON o.id = e.reverses_entry_id
     WHERE a.kind IN ('partner_issuance', 'partner_redemption', 'operator_promotions')
       AND coalesce(a.partner_id, e.partner_id) IN (SELECT partner_id FROM stmt)
     GROUP BY 1, 2, 4, 5, sign(p.amount)),
priced AS (
    SELECT v.partner_id, v.late, v.points, v.kind, t.id AS terms_id, t.fee_percent,
           CASE WHEN v.kind = 'operator_promotions' THEN 'coalition_funded_bonus'
                WHEN v.points < 0 THEN 'reversal'
                WHEN v.kind = 'partner_issuance' THEN 'issuance'
                ELSE 'reimbursement' END AS type,
           CASE v.kind WHEN 'partner_issuance' THEN t.issue_price
                       WHEN 'partner_redemption' THEN t.reimbursement END AS unit_price,
           CASE v.kind WHEN 'partner_issuance' THEN 1
                       WHEN 'partner_redemption' THEN -1 ELSE 0 END AS sign
      FROM val v LEFT JOIN terms t ON v.kind <> 'operator_promotions'
           AND t.partner_id = v.partner_id
           AND v.priced_at >= t.effective_from AND v.priced_at < t.effective_to),
grouped AS (
    SELECT partner_id, type, kind, late, terms_id, unit_price, fee_percent,
           sum(points) AS points, sum(points) * unit_price * sign AS base
      FROM priced GROUP BY partner_id, type, kind, late, terms_id, unit_price, fee_percent,
                           sign),
ledger_lines AS (
    SELECT g.partner_id, g.type, g.late, g.terms_id, g.unit_price, g.points,
           round(coalesce(g.base, 0) * coalesce(st.fx_rate, 1)) AS amount
      FROM grouped g JOIN stmt st USING (partner_id)
    UNION ALL
    SELECT g.partner_id, 'platform_fee_percent', g.late, g.terms_id, g.fee_percent,
           sum(g.points), round(sum(g.base) * g.fee_percent / 100 * coalesce(st.fx_rate, 1))
      FROM grouped g JOIN stmt st USING (partner_id)
     WHERE g.kind = 'partner_issuance' AND g.fee_percent > 0
     GROUP BY g.partner_id, g.late, g.terms_id, g.fee_percent, st.fx_rate
    UNION ALL  -- the affiliate commissions the run claimed, valued as settlement_compute does
    SELECT c.partner_id, 'affiliate_commission', c.decided_at < r.period_start, NULL, NULL,
           NULL, round(sum(c.amount_minor) * coalesce(st.fx_rate, 1))
      FROM r JOIN affiliate_commissions c ON c.settlement_run_id = r.id
      JOIN stmt st USING (partner_id)
     GROUP BY c.partner_id, c.decided_at < r.period_start, st.fx_rate),
ledger AS (
    SELECT partner_id, type, late, terms_id, unit_price, sum(points) AS points,
           sum(amount) AS amount FROM ledger_lines
     GROUP BY partner_id, type, late, terms_id, unit_price),
stored AS (
    SELECT partner_id, type, late, terms_id, unit_price, sum(points) AS points,
           sum(amount) AS amount FROM settlement_lines
     WHERE run_id = $1 AND type = ANY($2::text[])
     GROUP BY partner_id, type, late, terms_id, unit_price)
SELECT coalesce(l.partner_id, s.partner_id) AS partner_id, pa.slug, st.id AS statement_id,
       st.currency, coalesce(l.type, s.type) AS type, coalesce(l.late, s.late) AS late,
       s.points AS stored_points, s.amount AS stored_amount,
       l.points AS ledger_points, l.amount AS ledger_amount
  FROM ledger l FULL JOIN stored s
    ON s.partner_id = l.partner_id AND s.type = l.type AND s.late = l.late
   AND s.terms_id IS NOT DISTINCT FROM l.terms_id
   AND s.unit_price IS NOT DISTINCT FROM l.unit_price
  JOIN partners pa ON pa.id = coalesce(l.partner_id, s.partner_id)
  LEFT JOIN stmt st ON st.partner_id = coalesce(l.partner_id, s.partner_id)
 WHERE (l.points, l.amount) IS DISTINCT FROM (s.points, s.amount)
 ORDER BY pa.slug, type, late
"""

# (b) on its own: each statement's stored totals against the sum of its lines.
_TOTALS_SQL = """
SELECT s.id, s.partner_id, pa.slug, s.currency, s.net, s.total_debit, s.total_credit,
       s.line_count, coalesce(sum(l.amount), 0) AS lines_net,
       coalesce(sum(l.amount) FILTER (WHERE l.amount > 0), 0) AS lines_debit,
       coalesce(sum(l.amount) FILTER (WHERE l.amount < 0), 0) AS lines_credit,
       count(l.id) AS lines
  FROM settlement_statements s JOIN partners pa ON pa.id = s.partner_id
  LEFT JOIN settlement_lines l ON l.statement_id = s.id
 WHERE s.run_id = $1
 GROUP BY s.id, pa.slug
HAVING (s.net, s.total_debit, s.total_credit, s.line_count::bigint)
       IS DISTINCT FROM (coalesce(sum(l.amount), 0),
                         coalesce(sum(l.amount) FILTER (WHERE l.amount > 0), 0),
                         coalesce(sum(l.amount) FILTER (WHERE l.amount < 0), 0), count(l.id))
 ORDER BY pa.slug
"""

# (c): every statement with the payment rows referring to it (none: one row of NULLs).
_PAYMENTS_SQL = """
SELECT s.id, s.partner_id, pa.slug, s.currency, s.net, s.payment_status,
       p.id AS payment_id, p.kind, p.amount, p.amount_paid, p.status, p.currency AS paid_in
  FROM settlement_statements s JOIN partners pa ON pa.id = s.partner_id
  LEFT JOIN settlement_payments p ON p.reference_type = 'statement'
       AND p.reference_id = s.id::text AND p.kind <> 'prepaid_block'
 WHERE s.run_id = $1
 ORDER BY pa.slug, s.id, p.id
"""


async def reconcile(conn: asyncpg.Connection, run_id: int) -> list[Discrepancy]:
    """Every difference between the run, the ledger and the payments (empty: clean)."""
    run = await run_by_id(conn, run_id)
    found: list[Discrepancy] = []
    if run["content_hash"] is not None:
        actual = await conn.fetchval("SELECT settlement_content_hash($1)", run_id)
        if actual != run["content_hash"]:
            found.append(Discrepancy(
                "hash_mismatch", None, None, None, run["content_hash"], actual,
                f"The {run['period']} run's statements, lines or flows changed after it was"
                " finalized."))
    for r in await conn.fetch(_TOTALS_SQL, run_id):
        found.append(Discrepancy(
            "statement_total_mismatch", r["partner_id"], r["slug"], r["id"],
            f"net {r['net']} over {r['line_count']} lines",
            f"net {r['lines_net']} over {r['lines']} lines",
            f"The statement's stored totals (debit {r['total_debit']}, credit"
            f" {r['total_credit']}) are not the sum of its lines (debit {r['lines_debit']},"
            f" credit {r['lines_credit']}), {r['currency']}."))
    for r in await conn.fetch(_LEDGER_SQL, run_id, list(LEDGER_TYPES)):
        late = " (late)" if r["late"] else ""
        found.append(Discrepancy(
            "ledger_changed", r["partner_id"], r["slug"], r["statement_id"],
            f"{r['stored_points']} points, {r['stored_amount']} {r['currency']}",
            f"{r['ledger_points']} points, {r['ledger_amount']} {r['currency']}",
            f"The {r['type']}{late} line no longer matches the ledger: the postings of the"
            " entries this run settled were changed (or a line was) after the run was"
            " computed."))
    if run["status"] not in ("draft", "in_review"):
        found.extend(_payment_discrepancies(await conn.fetch(_PAYMENTS_SQL, run_id)))
    return found


def _payment_discrepancies(rows: list[asyncpg.Record]) -> list[Discrepancy]:
    by_statement: dict[int, list[asyncpg.Record]] = {}
    for row in rows:
        by_statement.setdefault(row["id"], []).append(row)
    found: list[Discrepancy] = []
    for group in by_statement.values():
        s = group[0]
        payments = [r for r in group if r["payment_id"] is not None]

        def d(kind: str, expected: object, actual: object, cause: str, s=s) -> None:
            found.append(Discrepancy(kind, s["partner_id"], s["slug"], s["id"],
                                     str(expected), str(actual), cause))

        net, cur = s["net"], s["currency"]
        if net == 0:
            for p in payments:
                d("payment_unexpected", "no payment", f"{p['kind']} #{p['payment_id']}"
                  f" {p['amount']} {p['paid_in']}", "The statement nets to zero; nothing"
                  " should be invoiced or paid out.")
            continue
        wanted = ("invoice",) if net > 0 else PAYOUT_KINDS
        right = [p for p in payments if p["kind"] in wanted]
        for p in payments:
            if p["kind"] not in wanted:
                d("payment_wrong_kind", " or ".join(wanted), f"{p['kind']} #{p['payment_id']}",
                  f"The partner {'owes' if net > 0 else 'is owed'} {abs(net)} {cur}, but a"
                  f" {p['kind']} was made for the statement.")
        if not right:
            if net > 0:
                d("payment_missing", f"invoice of {net} {cur}", "none",
                  "The finalized statement owes money but no invoice was raised.")
            else:
                d("transfer_missing", f"payout of {-net} {cur}", "none",
                  "The partner is owed money but no transfer or SEPA credit was made.")
        for p in right:
            _check_payment(d, p, abs(net), cur)
        if right:   # (no payment at all is reported above)
            _check_status(d, s["payment_status"], right, abs(net))
    return found


def _check_payment(d, p: asyncpg.Record, expected: int, cur: str) -> None:
    what = f"{p['kind']} #{p['payment_id']}"
    if p["amount"] != expected:
        d("payment_amount_mismatch", f"{expected} {cur}", f"{p['amount']} {p['paid_in']}",
          f"The {what} is for a different amount than the statement's net.")
    if p["paid_in"] != cur:
        d("payment_currency_mismatch", cur, p["paid_in"],
          f"The {what} is in another currency than the statement.")
    # Stripe reports the amount an invoice was paid with; transfers carry none.
    if p["kind"] == "invoice" and p["status"] == PAID and p["amount_paid"] != expected:
        d("paid_amount_mismatch", f"{expected} {cur}", f"{p['amount_paid']} {p['paid_in']}",
          f"The {what} was paid with {p['amount_paid']} instead of {expected}.")


def _check_status(d, statement_status: str, right: list[asyncpg.Record],
                  expected: int) -> None:
    """The statement's payment status against its payments: settled on one side only
    means a webhook was missed or the status was set by hand. A payment settled for the
    wrong amount is reported by the amount checks, not here."""
    moved = [p for p in right if p["status"] in SETTLED[p["kind"]]]
    clean = [p for p in moved if p["amount"] == expected
             and (p["kind"] != "invoice" or p["amount_paid"] == expected)]
    says_settled = statement_status in STATEMENT_SETTLED
    payments = ", ".join(f"{p['kind']} #{p['payment_id']} {p['status']}" for p in right)
    if says_settled and not moved:
        d("payment_status_mismatch", "a settled payment", payments,
          f"The statement says {statement_status} but none of its payments has settled.")
    elif clean and not says_settled:
        d("payment_status_mismatch", "paid" if clean[0]["kind"] == "invoice"
          else "transferred", statement_status,
          f"The {payments} settled but the statement still says {statement_status}.")
