"""Affiliate payouts: per enrollment, the approved commissions no payout holds yet (sales,
leads and negative clawbacks) are netted; once the net reaches the minimum payout of the
program's terms in force, one payout takes them all, by the affiliate's payout method.
A net below the minimum, or negative, waits (carries over) for the next run.

Statuses. A commission taken by a payout gets `payout_id` and stays `approved` while the
payout is pending or processing; it becomes `paid` with the payout. A payout that fails
(a refused or reversed transfer, a bounced SEPA credit) gives its commissions back
(`approved`, no payout) for the next run. Payout statuses:
- pending: created; a SEPA credit waits for the next bank file, a Stripe transfer for
  its call (a call that failed for a network or Stripe server error is retried by the
  next run with the same payout id, hence the same idempotency key);
- processing: in an exported SEPA file, until the operator marks it from the statement;
- paid: a Stripe Connect transfer Stripe created (money moves at once, as for partner
  payouts in settlement/collect.py; transfer.paid keeps it paid), a SEPA credit marked
  paid, or points posted (at once, in the payout's own transaction);
- failed: Stripe refused or reversed the transfer, or the bank bounced the credit.

Points. The net (minor units of the program's currency) is converted to the coalition
currency at the FX rate in force (settlement.terms.convert) and divided by the funding
partner's issue price of its rate card in force; the points are floored to a whole
point, and the fraction of one point's price left over is not paid (it is less than one
point's worth). The earn is the program partner's, into the affiliate's payout member
wallet (linked to the partner first), idempotency key `affiliate-payout:<id>`.

Concurrency. Each enrollment is paid under its row lock (SELECT ... FOR UPDATE), and
the commissions are read again under it, so two runs at once never put a commission
in two payouts: the second run finds nothing left.

The payouts are the affiliates' (coalition/affiliates), paid through settlement's
payments (SEPA files, Stripe transfers, the payment hooks), hence this module is here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import asyncpg
import stripe

from coalition import clock
from coalition.bank import BankAccount
from coalition.config import Settings
from coalition.errors import DomainError
from coalition.uow import Tx
from settlement import prepaid, sepa
from settlement import terms as rate_cards
from settlement.payment_hooks import PaymentChange, on_payment_change

REFERENCE = "affiliate_payout"
# Settlement payment state -> payout state.
_BY_PAYMENT = {"ready": "pending", "exported": "processing", "created": "paid",
               "paid": "paid", "failed": "failed", "reversed": "failed"}
# Stripe errors worth retrying with the same idempotency key; others fail the payout.
_TRANSIENT = (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError)


class Transfers(Protocol):
    """What payouts need of settlement.stripe_gateway.StripeGateway."""

    pool: asyncpg.Pool

    @property
    def configured(self) -> bool: ...

    async def transfer_for_partner(self, partner_id: uuid.UUID, reference: tuple[str, str],
                                   amount: int, currency: str, destination: str) -> dict: ...


@dataclass
class Outcome:
    enrollment_id: uuid.UUID
    affiliate: str
    program: str
    net: int
    currency: str
    status: str                 # paid | pending | processing | failed | carried | would_pay
    method: str | None = None
    payout_id: int | None = None
    points: int | None = None
    reason: str | None = None


@dataclass
class PayoutRun:
    dry_run: bool
    outcomes: list[Outcome] = field(default_factory=list)

    def by_status(self, *statuses: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in statuses]


async def run_payouts(gateway: Transfers, *, now: datetime | None = None,
                      dry_run: bool = False) -> PayoutRun:
    """One payout run: retry Stripe payouts left pending, then pay every enrollment
    whose approved net reaches its minimum."""
    now = now or clock.now()
    run = PayoutRun(dry_run)
    pool = gateway.pool
    if not dry_run:
        for payout_id in [r["id"] for r in await pool.fetch(
                "SELECT id FROM affiliate_payouts WHERE method = 'stripe_connect'"
                " AND status = 'pending' ORDER BY id")]:
            run.outcomes.append(await _send_transfer(gateway, payout_id))
    enrollments = await pool.fetch(
        "SELECT DISTINCT enrollment_id FROM affiliate_commissions"
        " WHERE status = 'approved' AND payout_id IS NULL")
    for row in enrollments:
        outcome = await _pay_enrollment(gateway, row["enrollment_id"], now, dry_run)
        if outcome is None:
            continue
        if outcome.status == "pending" and outcome.method == "stripe_connect":
            outcome = await _send_transfer(gateway, outcome.payout_id)
        run.outcomes.append(outcome)
    return run


async def _pay_enrollment(gateway: Transfers, enrollment_id: uuid.UUID, now: datetime,
                          dry_run: bool) -> Outcome | None:
    try:
        async with gateway.pool.acquire() as conn, conn.transaction():
            e = await conn.fetchrow(
                "SELECT e.id, e.status, e.partner_id, e.program_id, e.affiliate_id,"
                " p.name AS program, p.currency, a.name AS affiliate, a.status AS"
                " affiliate_status, a.payout_method, a.stripe_account_id, a.iban, a.bic,"
                " a.account_holder, a.payout_member_id FROM affiliate_enrollments e"
                " JOIN affiliate_programs p ON p.id = e.program_id"
                " JOIN affiliates a ON a.id = e.affiliate_id WHERE e.id = $1 FOR UPDATE OF e",
                enrollment_id)
            due = await conn.fetch(
                "SELECT id, amount_minor FROM affiliate_commissions WHERE enrollment_id = $1"
                " AND status = 'approved' AND payout_id IS NULL ORDER BY id FOR UPDATE",
                enrollment_id)
            if not due:
                return None   # another run took them while we waited for the lock
            net = sum(c["amount_minor"] for c in due)
            outcome = Outcome(enrollment_id, e["affiliate"], e["program"], net, e["currency"],
                              "carried", e["payout_method"])
            minimum = await conn.fetchval(
                "SELECT min_payout_minor FROM affiliate_program_terms WHERE program_id = $1"
                " AND effective_from <= $2 ORDER BY version DESC LIMIT 1",
                e["program_id"], now)
            outcome.reason = _why_not(e, net, minimum, gateway)
            if outcome.reason is None and e["payout_method"] == "points":
                outcome.points, outcome.reason = await _points_for(conn, e, net, now)
            if outcome.reason is not None or dry_run:
                outcome.status = "carried" if outcome.reason else "would_pay"
                return outcome
            outcome.payout_id = await conn.fetchval(
                "INSERT INTO affiliate_payouts (enrollment_id, affiliate_id, program_id,"
                " partner_id, method, currency, amount_minor, points, status) VALUES"
                " ($1, $2, $3, $4, $5, $6, $7, $8, 'pending') RETURNING id",
                enrollment_id, e["affiliate_id"], e["program_id"], e["partner_id"],
                e["payout_method"], e["currency"], net, outcome.points)
            taken = await conn.execute(
                "UPDATE affiliate_commissions SET payout_id = $1 WHERE id = ANY($2::bigint[])"
                " AND payout_id IS NULL AND status = 'approved'", outcome.payout_id,
                [c["id"] for c in due])
            if taken != f"UPDATE {len(due)}":   # the enrollment lock rules this out
                raise RuntimeError(f"payout {outcome.payout_id}: commissions changed")
            outcome.status = "pending"
            if e["payout_method"] == "sepa":
                payment = await sepa.queue_credit(
                    conn, e["partner_id"], (REFERENCE, str(outcome.payout_id)), net,
                    e["currency"], BankAccount(e["account_holder"] or e["affiliate"],
                                               e["iban"] or "", e["bic"] or ""))
                await conn.execute("UPDATE affiliate_payouts SET payment_id = $2 WHERE id = $1",
                                   outcome.payout_id, payment["id"])
            elif e["payout_method"] == "points":
                await _credit_points(conn, e, outcome)
                outcome.status = "paid"
            return outcome
    except DomainError as exc:
        return Outcome(enrollment_id, "", "", 0, "", "failed", reason=exc.detail)
    except asyncpg.PostgresError as exc:
        refused = prepaid.refusal(exc)
        if refused is None:
            raise
        return Outcome(enrollment_id, "", "", 0, "", "failed", reason=refused.detail)


def _why_not(e: Any, net: int, minimum: int | None, gateway: Transfers) -> str | None:
    """Why this enrollment is not paid now (its commissions carry over), or None."""
    if minimum is None:
        return "The program has no terms in force."
    if e["status"] == "banned" or e["affiliate_status"] != "active":
        return "The affiliate or its enrollment is not active."
    if net <= 0 or net < minimum:
        return f"The net {net} is below the minimum payout {minimum}."
    method = e["payout_method"]
    if method is None:
        return "The affiliate has no payout method."
    if method == "stripe_connect" and not e["stripe_account_id"]:
        return "The affiliate has no Stripe connected account."
    if method == "stripe_connect" and not gateway.configured:
        return "Stripe is not configured (COALITION_STRIPE_SECRET_KEY)."
    if method == "sepa" and not e["iban"]:
        return "The affiliate has no IBAN."
    if method == "points" and not e["payout_member_id"]:
        return "The affiliate has no member wallet for points."
    return None


async def _points_for(conn: asyncpg.Connection, e: Any, net: int, now: datetime
                      ) -> tuple[int | None, str | None]:
    """(points, None), or (None, why not): the net at the partner's issue price, floored."""
    card = await rate_cards.terms_at(conn, e["partner_id"], now)
    if card is None or card.issue_price <= 0:
        return None, "The partner has no rate card with an issue price."
    currency, _ = await rate_cards.settings(conn)
    value = await rate_cards.convert(conn, Decimal(net), e["currency"], currency, now.date())
    points = int(value.amount // card.issue_price)
    if points < 1:
        return None, "The net is worth less than one point."
    return points, None


async def _credit_points(conn: asyncpg.Connection, e: Any, outcome: Outcome) -> None:
    """The program partner's earn into the payout wallet, in the payout's transaction."""
    member = e["payout_member_id"]
    await conn.execute("INSERT INTO member_links (partner_id, member_id) VALUES ($1, $2)"
                       " ON CONFLICT DO NOTHING", e["partner_id"], member)
    row = await conn.fetchrow(
        "SELECT status, body FROM ledger_earn($1, $2, $3, NULL, $4, $5, $6, $7, $8)",
        e["partner_id"], member, outcome.points, f"Affiliate payout #{outcome.payout_id}",
        json.dumps({"affiliate_payout_id": outcome.payout_id}),
        f"affiliate-payout:{outcome.payout_id}", f"affiliate-payout:{outcome.points}",
        "affiliate-payouts")
    if row["status"] >= 300:
        body = json.loads(row["body"])
        raise DomainError(body.get("type", "points-refused").rsplit("/", 1)[-1],
                          "Points payout refused", body.get("detail", row["body"]),
                          status=409, field="payout_member_id")
    entry = json.loads(row["body"])["id"]
    await conn.execute("UPDATE affiliate_payouts SET entry_id = $2 WHERE id = $1",
                       outcome.payout_id, entry)
    await _settle(conn, outcome.payout_id, "paid")


async def _send_transfer(gateway: Transfers, payout_id: int) -> Outcome:
    row = await gateway.pool.fetchrow(
        "SELECT o.*, a.name AS affiliate, a.stripe_account_id, p.name AS program"
        " FROM affiliate_payouts o JOIN affiliates a ON a.id = o.affiliate_id"
        " JOIN affiliate_programs p ON p.id = o.program_id WHERE o.id = $1", payout_id)
    outcome = Outcome(row["enrollment_id"], row["affiliate"], row["program"],
                      row["amount_minor"], row["currency"], "pending", "stripe_connect",
                      payout_id)
    try:
        await gateway.transfer_for_partner(row["partner_id"], (REFERENCE, str(payout_id)),
                                           row["amount_minor"], row["currency"],
                                           row["stripe_account_id"] or "")
    except DomainError as exc:
        outcome.reason = exc.detail
        async with gateway.pool.acquire() as conn, conn.transaction():
            if isinstance(exc.__cause__, _TRANSIENT):
                await conn.execute("UPDATE affiliate_payouts SET failure_reason = $2"
                                   " WHERE id = $1", payout_id, exc.detail)
                return outcome   # retried by the next run, same idempotency key
            await _settle(conn, payout_id, "failed", exc.detail)
        outcome.status = "failed"
        return outcome
    outcome.status = await gateway.pool.fetchval(
        "SELECT status FROM affiliate_payouts WHERE id = $1", payout_id)
    return outcome


async def _settle(conn: asyncpg.Connection, payout_id: int, status: str,
                  reason: str | None = None) -> None:
    """Move the payout and its commissions: paid pays them; failed gives them back."""
    payout = await conn.fetchrow("SELECT status FROM affiliate_payouts WHERE id = $1"
                                 " FOR UPDATE", payout_id)
    if payout is None or payout["status"] == status or payout["status"] == "failed":
        return
    if status == "paid":
        await conn.execute("UPDATE affiliate_payouts SET status = 'paid', paid_at = $2,"
                           " failure_reason = NULL WHERE id = $1", payout_id, clock.now())
        await conn.execute("UPDATE affiliate_commissions SET status = 'paid'"
                           " WHERE payout_id = $1 AND status = 'approved'", payout_id)
    elif status == "failed":
        await conn.execute("UPDATE affiliate_payouts SET status = 'failed',"
                           " failure_reason = $2 WHERE id = $1", payout_id, reason)
        await conn.execute("UPDATE affiliate_commissions SET status = 'approved',"
                           " payout_id = NULL WHERE payout_id = $1", payout_id)
    elif payout["status"] != "paid":
        await conn.execute("UPDATE affiliate_payouts SET status = $2 WHERE id = $1",
                           payout_id, status)


@on_payment_change(REFERENCE)
async def _payment_changed(conn: asyncpg.Connection, change: PaymentChange) -> None:
    """A transfer or SEPA credit of a payout moved (the gateway's answer, a webhook, the
    operator marking the bank statement): move the payout with it."""
    status = _BY_PAYMENT.get(change.new_status)
    if status is None or not change.reference_id.isdigit():
        return
    payment = await conn.fetchrow("SELECT stripe_object_id, failure_reason FROM"
                                  " settlement_payments WHERE id = $1", change.payment_id)
    await conn.execute(
        "UPDATE affiliate_payouts SET payment_id = $2, stripe_transfer_id ="
        " coalesce($3, stripe_transfer_id) WHERE id = $1",
        int(change.reference_id), change.payment_id, payment["stripe_object_id"])
    await _settle(conn, int(change.reference_id), status,
                  payment["failure_reason"] or f"The payment was {change.new_status}.")


# ---- the operator's page (/operator/affiliate-payouts) ----

_PAYOUTS = """
SELECT o.*, a.name AS affiliate, p.name AS program, pa.name AS partner,
       s.status AS payment_status, s.sepa_message_id
  FROM affiliate_payouts o
  JOIN affiliates a ON a.id = o.affiliate_id
  JOIN affiliate_programs p ON p.id = o.program_id
  JOIN partners pa ON pa.id = o.partner_id
  LEFT JOIN settlement_payments s ON s.id = o.payment_id
 ORDER BY o.id DESC LIMIT 300
"""


async def payouts_overview(tx: Tx) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """The latest payouts with their payments, and the ready affiliate SEPA credits by
    currency (what the next bank file would pay)."""
    rows = await tx.conn.fetch(_PAYOUTS)
    ready = await tx.conn.fetch(
        "SELECT currency, count(*) AS n FROM settlement_payments WHERE kind = 'sepa_credit'"
        " AND status = 'ready' AND reference_type = $1 GROUP BY currency ORDER BY 1",
        REFERENCE)
    return rows, ready


async def export_sepa(tx: Tx, settings: Settings, currency: str) -> sepa.Batch:
    """The ready affiliate SEPA credits of one currency in one pain.001 file."""
    batch = await sepa.export_ready_on(tx.conn, settings, currency, tx.actor.label,
                                       reference_type=REFERENCE)
    await tx.audit("sepa_batch.export", target=batch.message_id, currency=batch.currency,
                   total=batch.total, payments=batch.payments)
    return batch


async def mark_sepa_payout(tx: Tx, payout_id: int | None, status: str,
                           reason: str | None) -> str:
    """The bank statement shows a payout's exported SEPA credit paid or bounced; the
    payment hook above moves the payout and its commissions with it."""
    payment = await tx.conn.fetchval(
        "SELECT payment_id FROM affiliate_payouts WHERE id = $1 AND method = 'sepa'",
        payout_id) if payout_id is not None else None
    if payment is None:
        raise DomainError("validation-error", "Invalid payout", "choose a SEPA payout.",
                          status=400, field="payout_id")
    outcome, _ = await sepa.mark_on(tx.conn, payment, status, reason)
    await tx.audit(f"sepa_payout.{status}", target=str(payment), outcome=outcome,
                   reason=reason, affiliate_payout=payout_id)
    return outcome
