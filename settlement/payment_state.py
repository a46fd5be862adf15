"""One place where a payment changes state, whoever saw the change (a Stripe API answer,
a webhook, an operator marking a bank transfer): the precedence rule, the hooks, and the
operator's notification of failures.

Events arrive in any order, so a state is only replaced by a state of higher rank, or,
between the non-terminal states of equal rank (an open invoice and a failed attempt),
by a newer observation (Stripe's event `created` time). A paid invoice therefore stays
paid when an older `invoice.payment_failed` or `invoice.finalized` arrives after it; an
uncollectible invoice that is paid after all becomes paid; paid and voided exclude each
other, so whichever came first stays.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from coalition.uow import Tx
from settlement.payment_hooks import PaymentChange, run_hooks

RANKS: dict[str, dict[str, int]] = {
    "invoice": {"open": 1, "payment_failed": 1, "uncollectible": 2, "paid": 3, "voided": 3},
    "transfer": {"created": 1, "paid": 2, "failed": 3, "reversed": 3},
    "sepa_credit": {"ready": 0, "exported": 1, "paid": 3, "failed": 3},
}
RANKS["prepaid_block"] = RANKS["invoice"]
# Failures the operator hears about (email and /operator/payments).
FAILURES = {"payment_failed", "failed", "reversed"}
NON_TERMINAL_RANK = 1
_OPERATORS = "SELECT email FROM users WHERE kind = 'operator' AND disabled_at IS NULL"
_NOTES = ("SELECT subject, body FROM operator_notifications WHERE id = ANY($1::bigint[])"
          " ORDER BY id")


def supersedes(kind: str, current: str, current_at: datetime | None, new: str,
               new_at: datetime | None) -> bool:
    ranks = RANKS[kind]
    if ranks[new] != ranks[current]:
        return ranks[new] > ranks[current]
    if new == current or ranks[new] != NON_TERMINAL_RANK:
        return False
    return current_at is None or new_at is None or new_at > current_at


def change_of(row: Any, old_status: str | None) -> PaymentChange:
    return PaymentChange(payment_id=row["id"], partner_id=row["partner_id"], kind=row["kind"],
                         reference_type=row["reference_type"],
                         reference_id=row["reference_id"], old_status=old_status,
                         new_status=row["status"], amount=row["amount"],
                         amount_paid=row["amount_paid"], currency=row["currency"])


async def transition(conn: asyncpg.Connection, payment: Any, new_status: str, *,
                     amount_paid: int | None = None, event_at: datetime | None = None,
                     reason: str | None = None) -> tuple[str, int | None]:
    """Move the payment (a row locked FOR UPDATE) to `new_status` if it supersedes the
    current one. Returns (outcome, notification id): outcome is applied, unchanged (same
    status; amounts and the event time refreshed) or stale (an older or weaker state)."""
    status = payment["status"]
    if new_status == status:
        await conn.execute(
            "UPDATE settlement_payments SET amount_paid = coalesce($2, amount_paid),"
            " stripe_event_at = greatest(stripe_event_at, $3), updated_at = now()"
            " WHERE id = $1", payment["id"], amount_paid, event_at)
        return "unchanged", None
    if not supersedes(payment["kind"], status, payment["stripe_event_at"], new_status,
                      event_at):
        return "stale", None
    row = await conn.fetchrow(
        "UPDATE settlement_payments SET status = $2::text, amount_paid = coalesce($3, amount_paid),"
        " stripe_event_at = coalesce(greatest(stripe_event_at, $4), $4, stripe_event_at),"
        " failure_reason = CASE WHEN $2::text = ANY($6::text[]) THEN $5 ELSE failure_reason END,"
        " updated_at = now() WHERE id = $1 RETURNING *",
        payment["id"], new_status, amount_paid, event_at, reason, sorted(FAILURES))
    await run_hooks(conn, change_of(row, status))
    notification = None
    if new_status in FAILURES:
        notification = await notify_failure(conn, row, reason)
    return "applied", notification


async def notify_failure(conn: asyncpg.Connection, payment: Any, reason: str | None
                         ) -> int:
    partner = await conn.fetchval("SELECT name FROM partners WHERE id = $1",
                                  payment["partner_id"])
    what = {"payment_failed": "Payment failed", "failed": "Payout failed",
            "reversed": "Transfer reversed"}[payment["status"]]
    amount = payment["amount"]
    subject = (f"{what}: {partner}, {amount // 100}.{amount % 100:02d} {payment['currency']}"
               f" ({payment['reference_type']} {payment['reference_id']})")
    body = (f"{what} for {partner}.\n\nPayment #{payment['id']} ({payment['kind']}),"
            f" {payment['reference_type']} {payment['reference_id']}\n"
            f"Amount: {amount} minor units of {payment['currency']}\n"
            f"Stripe object: {payment['stripe_object_id'] or '-'}\n"
            f"Reason: {reason or 'not given'}\n\nSee /operator/payments.")
    return await conn.fetchval(
        "INSERT INTO operator_notifications (kind, partner_id, payment_id, subject, body)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING id", f"payment.{payment['status']}",
        payment["partner_id"], payment["id"], subject, body)


async def email_operators(pool: asyncpg.Pool, mailer: Any, notification_ids: list[int]
                          ) -> None:
    """Email each notification to every active operator, after the transaction that
    created them committed (a rolled-back failure is never announced)."""
    if not notification_ids:
        return
    async with pool.acquire() as conn:
        operators = [r["email"] for r in await conn.fetch(_OPERATORS)]
        notes = await conn.fetch(_NOTES, notification_ids)
    for note in notes:
        for email in operators:
            await mailer.send(email, note["subject"], note["body"])


async def announce(tx: Tx, mailer: Any, notification_ids: list[int]) -> None:
    """`email_operators` for notifications written in `tx`: read in it, emailed once it
    commits (a rolled-back failure is never announced)."""
    if not notification_ids or mailer is None:
        return
    operators = [r["email"] for r in await tx.conn.fetch(_OPERATORS)]
    notes = await tx.conn.fetch(_NOTES, notification_ids)

    async def send() -> None:
        for note in notes:
            for email in operators:
                await mailer.send(email, note["subject"], note["body"])

    tx.after_commit(send)
