"""Collecting and paying a finalized run: each partner's one net amount moves through
its payment route, and the payments' state changes move the statements and the run.

- net > 0 (the partner owes): a Stripe invoice, one item per statement line that has an
  amount, charged to the partner's saved payment method or sent (`collection`);
  payment status `invoiced`.
- net < 0 (the partner is owed): by the partner's payout method, a Stripe Connect
  transfer to its connected account (`transferred` once Stripe created it: a transfer
  moves the money at once), or a SEPA credit in the next bank file (`transfer_pending`
  until the bank statement shows it paid).
- net = 0: `nothing_due`.

Every payment is keyed by ('statement', statement id), so collecting a run again (after
an interrupted attempt) reuses the payments already made and never charges twice. When
a payment changes state (a webhook, the bank file), the hook below moves its statement;
the run follows its statements: `paid` when every one is settled, back to `invoiced`
when one of a paid run stops being settled (a reversed transfer, a late failure). Both
moves are written to the audit log (actor `payments`)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from coalition.errors import DomainError

from . import runs, sepa
from .payment_hooks import PaymentChange, on_payment_change

# Payment state -> statement payment status.
_INVOICE = {"paid": "paid", "payment_failed": "payment_failed", "voided": "void",
            "uncollectible": "payment_failed", "open": "invoiced"}
_PAYOUT = {"paid": "transferred", "created": "transferred", "ready": "transfer_pending",
           "exported": "transfer_pending", "failed": "payment_failed",
           "reversed": "payment_failed"}


class Payments(Protocol):
    """What collection needs of settlement.stripe_gateway.StripeGateway."""

    pool: asyncpg.Pool

    async def invoice_partner(self, partner_id: uuid.UUID, reference: tuple[str, str],
                              lines: list[tuple[str, int]], currency: str, *,
                              collection: str, description: str | None) -> dict: ...

    async def transfer_to_partner(self, partner_id: uuid.UUID, reference: tuple[str, str],
                                  amount: int, currency: str) -> dict: ...


@dataclass
class Collection:
    period: str
    invoiced: list[dict[str, Any]] = field(default_factory=list)
    paid_out: list[dict[str, Any]] = field(default_factory=list)
    nothing_due: int = 0
    failed: list[str] = field(default_factory=list)


async def collect_run(gateway: Payments, period: str, *,
                      collection: str = "charge_automatically") -> Collection:
    """Invoice, transfer or queue every statement of the finalized run. A partner whose
    payment cannot be made (no payout details, Stripe refusing) is listed in `failed`
    and the rest go on; run it again once fixed."""
    pool = gateway.pool
    async with pool.acquire() as conn:
        run = await runs.get_run(conn, period)
        if run["status"] not in ("finalized", "invoiced", "paid"):
            raise DomainError("run-not-finalized", "Run not finalized",
                              f"The run for {period} is {run['status']}: only a finalized run"
                              " is collected.", status=409, field="period")
        statements = await conn.fetch(
            "SELECT s.*, p.slug, d.method FROM settlement_statements s"
            " JOIN partners p ON p.id = s.partner_id"
            " LEFT JOIN partner_payout_details d ON d.partner_id = s.partner_id"
            " WHERE s.run_id = $1 ORDER BY p.slug", run["id"])
    result = Collection(period)
    for statement in statements:
        reference = ("statement", str(statement["id"]))
        try:
            if statement["net"] == 0:
                await _set(pool, statement["id"], "nothing_due")
                result.nothing_due += 1
            elif statement["net"] > 0:
                async with pool.acquire() as conn:
                    lines = [(f"{line['description']}", line["amount"]) for line in
                             await conn.fetch("SELECT description, amount FROM settlement_lines"
                                              " WHERE statement_id = $1 AND amount <> 0"
                                              " ORDER BY line_no", statement["id"])]
                payment = await gateway.invoice_partner(
                    statement["partner_id"], reference, lines, statement["currency"],
                    collection=collection,
                    description=f"Coalition settlement {period}, {statement['slug']}")
                result.invoiced.append(payment)
                await _apply(pool, statement["id"], _INVOICE, payment["status"])
            else:
                if statement["method"] == "sepa":
                    payment = await sepa.queue_payout(pool, statement["partner_id"], reference,
                                                      -statement["net"], statement["currency"])
                else:
                    payment = await gateway.transfer_to_partner(
                        statement["partner_id"], reference, -statement["net"],
                        statement["currency"])
                result.paid_out.append(payment)
                await _apply(pool, statement["id"], _PAYOUT, payment["status"])
        except DomainError as exc:
            result.failed.append(f"{statement['slug']}: {exc.detail}")
    async with pool.acquire() as conn, conn.transaction():
        run = await runs.get_run(conn, period)
        if run["status"] == "finalized":
            await runs.advance(conn, period, "invoiced")
        await _maybe_paid(conn, run["id"])
    return result


async def _set(pool: asyncpg.Pool, statement_id: int, status: str) -> None:
    async with pool.acquire() as conn:
        await runs.set_payment_status(conn, statement_id, status)


async def _apply(pool: asyncpg.Pool, statement_id: int, mapping: dict[str, str],
                 payment_status: str) -> None:
    if payment_status in mapping:
        await _set(pool, statement_id, mapping[payment_status])


async def _maybe_paid(conn: asyncpg.Connection, run_id: int) -> None:
    """A run whose every statement is settled becomes paid."""
    row = await conn.fetchrow(
        "SELECT r.period, r.status, bool_and(s.payment_status = ANY($2::text[])) AS settled"
        " FROM settlement_runs r JOIN settlement_statements s ON s.run_id = r.id"
        " WHERE r.id = $1 GROUP BY r.period, r.status", run_id, list(runs.SETTLED_PAYMENTS))
    if row and row["settled"] and row["status"] == "invoiced":
        await runs.advance(conn, row["period"], "paid")
        await _record(conn, run_id, "settlement_run.paid",
                      {"period": row["period"], "from": "invoiced"})


async def _maybe_unpaid(conn: asyncpg.Connection, run_id: int, statement_id: int,
                        change: PaymentChange, status: str) -> None:
    """A paid run one of whose statements is no longer settled goes back to invoiced."""
    run = await runs.run_by_id(conn, run_id)
    if run["status"] == "paid" and status not in runs.SETTLED_PAYMENTS:
        await runs.payment_undone(conn, run["period"])
        await _record(conn, run_id, "settlement_run.payment_undone", {
            "period": run["period"], "from": "paid", "to": "invoiced",
            "statement_id": statement_id, "payment_id": change.payment_id,
            "payment_kind": change.kind, "payment_status": change.new_status,
            "statement_status": status})


async def _record(conn: asyncpg.Connection, run_id: int, action: str,
                  details: dict[str, Any]) -> None:
    """The run's history: the audit log the consoles' actions write to as well."""
    await conn.execute("INSERT INTO audit_log (actor, action, target, details)"
                       " VALUES ('payments', $1, $2, $3::jsonb)", action, str(run_id),
                       json.dumps(details))


@on_payment_change("statement")
async def _statement_payment_changed(conn: asyncpg.Connection, change: PaymentChange
                                     ) -> None:
    """A webhook (or the bank file) moved a statement's payment: move the statement, and
    the run once all its statements are settled."""
    mapping = _INVOICE if change.kind == "invoice" else _PAYOUT
    status = mapping.get(change.new_status)
    if status is None or not change.reference_id.isdigit():
        return   # not a state a statement shows, or no statement of ours (a foreign id)
    if change.kind == "invoice" and status == "paid" and change.amount_paid != change.amount:
        # Paid, but not the amount invoiced: reconciliation reports it; the statement is
        # not settled by it.
        status = "payment_failed"
    run_id = await conn.fetchval("SELECT run_id FROM settlement_statements WHERE id = $1",
                                 int(change.reference_id))
    if run_id is None:
        return
    await runs.set_payment_status(conn, int(change.reference_id), status)
    await _maybe_unpaid(conn, run_id, int(change.reference_id), change, status)
    await _maybe_paid(conn, run_id)
