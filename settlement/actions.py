"""What the operator and the partners do to settlement from the consoles and the API,
each a use case: the change and its audit row are written in the caller's Tx, so they
commit together or not at all (issue 17). The actor is the Tx's (the signed-in user or
the API client); a partner's own actions act for the Tx's partner."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from coalition.config import Settings
from coalition.errors import DomainError, NotFound
from coalition.uow import Tx

from . import payout_details, prepaid, runs, sepa, statements, terms
from .payment_state import announce

RUN_ACTIONS = ("rerun", "review", "reopen", "finalize", "close")


def _own(tx: Tx) -> uuid.UUID:
    if tx.partner_id is None:
        raise ValueError("a partner's own settlement: act for the partner")
    return tx.partner_id


def whole_number(raw: object, field: str) -> int | None:
    """A form's optional whole number (empty: None)."""
    text = str(raw or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise DomainError("invalid-number", "Whole number required",
                          f"{field}: a whole number.", field=field) from None


# Rate cards, FX rates and prepaid blocks.

async def add_rate_card(tx: Tx, partner_id: uuid.UUID, form: Mapping[str, object]
                        ) -> terms.Terms:
    card = await terms.add_rate_card(tx.conn, partner_id, form, tx.actor.label)
    await tx.audit("rate_card.add", target=str(card.id), partner_id=partner_id,
                   effective_from=card.effective_from.isoformat(),
                   issue_price=str(card.issue_price), billing=card.billing)
    return card


async def add_fx_rate(tx: Tx, form: Mapping[str, object]) -> terms.FxRate:
    """A rate entered by hand names who entered it unless the form gives a source."""
    raw = {"source": f"manual:{tx.actor.label}", **form}
    rate = await terms.add_fx_rate(tx.conn, raw)
    await tx.audit("fx_rate.add", target=f"{rate.base}/{rate.quote}",
                   effective_from=rate.effective_from.isoformat(), rate=str(rate.rate))
    return rate


async def mark_block_paid(tx: Tx, block_id: int, amount_paid: int) -> prepaid.CreditResult:
    """A bank transfer arrived: the same idempotent credit a Stripe payment uses. A
    mismatching amount is no refusal: it is recorded on the block (and audited) for the
    operator to refund it or settle the difference, and credits nothing."""
    result = await prepaid.credit_paid_block(tx.conn, block_id, amount_paid,
                                             f"manual:{tx.actor.label}")
    await tx.audit("prepaid_block.paid", target=str(block_id),
                   partner_id=result.block.partner_id, amount_paid=amount_paid,
                   outcome=result.outcome)
    return result


async def cancel_block(tx: Tx, block_id: int) -> prepaid.Block:
    block = await prepaid.cancel_block(tx.conn, block_id)
    await tx.audit("prepaid_block.cancel", target=str(block_id), partner_id=block.partner_id)
    return block


async def request_block(tx: Tx, points: object) -> prepaid.Block:
    """A block for the Tx's partner, awaiting payment; its invoice goes out once this
    commits (`prepaid.invoice_block`)."""
    block = await prepaid.request_block(tx.conn, _own(tx), points, tx.actor.label)
    await tx.audit("prepaid_block.request", target=str(block.id), points=block.points,
                   price=block.price, currency=block.currency)
    return block


# Statements and runs.

async def dispute_line(tx: Tx, statement_id: int, line_id: int, comment: str) -> dict:
    """The Tx's partner disputes a line of one of its statements (a line of another
    statement is not found)."""
    owner = await tx.conn.fetchval("SELECT statement_id FROM settlement_lines WHERE id = $1",
                                   line_id)
    checked = line_id if owner == statement_id else -1
    dispute = await statements.dispute_line(tx.conn, _own(tx), checked, comment,
                                            tx.actor.label)
    await tx.audit("statement_line.dispute", target=str(dispute["id"]),
                   statement_id=statement_id, line_id=dispute["line_id"])
    return dispute


async def draft_run(tx: Tx, period: str, dispute_window_days: object = None
                    ) -> asyncpg.Record:
    """Draft a period, or re-run its draft (the same call)."""
    window = whole_number(dispute_window_days, "dispute_window_days")
    run = await runs.run_period(tx.conn, period.strip(), tx.actor.label,
                                dispute_window_days=window)
    await tx.audit("settlement_run.compute", target=str(run["id"]), period=run["period"])
    return run


async def move_run(tx: Tx, run_id: int, action: str, *, force: bool = False) -> str:
    """One lifecycle step of a run (RUN_ACTIONS); the run's period. Collecting is
    `collect.collect_run` (Stripe, outside any Tx), then `record_collection`."""
    period = (await runs.run_by_id(tx.conn, run_id))["period"]
    if action == "rerun":
        await runs.run_period(tx.conn, period, tx.actor.label)
    elif action == "review":
        await runs.start_review(tx.conn, period)
    elif action == "reopen":
        await runs.reopen(tx.conn, period)
    elif action == "finalize":
        await runs.finalize(tx.conn, period, tx.actor.label, force=force)
    elif action == "close":
        await runs.close(tx.conn, period)
    else:
        raise DomainError("invalid-action", "Unknown action",
                          "Choose rerun, review, reopen, finalize, collect or close.",
                          field="action")
    await tx.audit(f"settlement_run.{action}", target=str(run_id), period=period, force=force)
    return period


async def record_collection(tx: Tx, run_id: int, period: str, *, force: bool = False
                            ) -> None:
    """The audit row of a collected run. Collection moves money through Stripe, one
    payment at a time, which no database transaction can take back; each payment's row
    commits with its Stripe call (settlement/collect.py)."""
    await tx.audit("settlement_run.collect", target=str(run_id), period=period, force=force)


async def resolve_dispute(tx: Tx, run_id: int, dispute_id: int, decision: object,
                          resolution: str, adjustment: object = None) -> asyncpg.Record:
    """Accept (optionally with an adjustment in minor units) or reject a dispute of the
    run; NotFound for a dispute of another run."""
    if not await tx.conn.fetchval("SELECT 1 FROM settlement_disputes WHERE id = $1"
                                  " AND run_id = $2", dispute_id, run_id):
        raise NotFound("dispute-not-found", "No such dispute",
                       "No such dispute in this run.", field="dispute_id")
    if decision not in ("accept", "reject"):
        # Not "anything but accept rejects": a decision is one of the two buttons.
        raise DomainError("invalid-decision", "Accept or reject",
                          "The decision is accept or reject.", status=400, field="decision")
    amount = whole_number(adjustment, "adjustment")
    row = await statements.resolve_dispute(tx.conn, dispute_id, accept=decision == "accept",
                                           resolution=resolution, actor=tx.actor.label,
                                           adjustment=amount)
    await tx.audit("settlement_dispute.resolve", target=str(dispute_id),
                   partner_id=row["partner_id"], status=row["status"], adjustment=amount)
    return row


# Payments.

async def save_payout_details(tx: Tx, values: dict[str, Any]) -> None:
    """The Tx's partner's payout and billing details, checked by
    `payout_details.validate`."""
    partner_id = _own(tx)
    await payout_details.save(await tx.session(), partner_id, values, tx.actor.label)
    await tx.audit("payouts.details", method=values["method"])


async def acknowledge_notification(tx: Tx, notification_id: int) -> None:
    await tx.conn.execute(
        "UPDATE operator_notifications SET acknowledged_at = now(), acknowledged_by = $2"
        " WHERE id = $1 AND acknowledged_at IS NULL", notification_id, tx.actor.label)


async def export_sepa(tx: Tx, settings: Settings, currency: str) -> sepa.Batch:
    """Every ready SEPA payout of one currency in one pain.001 file."""
    batch = await sepa.export_ready_on(tx.conn, settings, currency, tx.actor.label)
    await tx.audit("sepa_batch.export", target=batch.message_id, currency=batch.currency,
                   total=batch.total, payments=batch.payments)
    return batch


async def mark_payout(tx: Tx, payment_id: int, status: str, reason: str | None,
                      mailer: Any = None) -> str:
    """The bank statement shows an exported SEPA payout paid or failed; a failure is
    emailed to the operators once this commits."""
    outcome, notification = await sepa.mark_on(tx.conn, payment_id, status, reason)
    await tx.audit(f"sepa_payout.{status}", target=str(payment_id), outcome=outcome,
                   reason=reason)
    await announce(tx, mailer, [notification] if notification else [])
    return outcome
