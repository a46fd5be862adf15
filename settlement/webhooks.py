"""Stripe webhook events: verified with Stripe's own scheme, stored once by id, applied in
whatever order they arrive (precedence in payment_state.py).

Outcomes stored on each event: applied (the payment moved), unchanged (same state; the
amount paid and event time refreshed), stale (older or weaker than the payment's state),
ignored (a type we do not act on), unmatched (no payment of ours for the object, yet:
kept unprocessed and replayed when the gateway commits the payment, see
`replay_waiting_events`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import stripe

from coalition.errors import DomainError
from coalition.uow import Tx
from settlement.payment_state import announce, transition

# event type -> (payment kinds it concerns, the status it means)
INVOICE_KINDS = ("invoice", "prepaid_block")
EVENTS: dict[str, tuple[tuple[str, ...], str]] = {
    "invoice.finalized": (INVOICE_KINDS, "open"),
    "invoice.paid": (INVOICE_KINDS, "paid"),
    # Sent with invoice.paid by Stripe, and alone by localstripe.
    "invoice.payment_succeeded": (INVOICE_KINDS, "paid"),
    "invoice.payment_failed": (INVOICE_KINDS, "payment_failed"),
    "invoice.voided": (INVOICE_KINDS, "voided"),
    "invoice.marked_uncollectible": (INVOICE_KINDS, "uncollectible"),
    "transfer.created": (("transfer",), "created"),
    # transfer.paid and transfer.failed exist on older API versions only.
    "transfer.paid": (("transfer",), "paid"),
    "transfer.failed": (("transfer",), "failed"),
    "transfer.reversed": (("transfer",), "reversed"),
}


class BadSignature(DomainError):
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__("invalid-signature", "Invalid Stripe signature", detail,
                         field="Stripe-Signature")


def verify(payload: bytes, signature: str | None, secret: str, tolerance: int
           ) -> dict[str, Any]:
    """The event, if `Stripe-Signature` signs this payload with our secret within the
    timestamp tolerance (stripe.Webhook.construct_event: HMAC-SHA256 of "{t}.{payload}")."""
    if not signature:
        raise BadSignature("The Stripe-Signature header is missing.")
    try:
        stripe.Webhook.construct_event(payload, signature, secret, tolerance=tolerance)
    except stripe.SignatureVerificationError as exc:
        raise BadSignature(f"The signature does not verify: {exc.user_message or exc}") \
            from exc
    except ValueError as exc:
        raise BadSignature("The payload is not a JSON event.") from exc
    event = json.loads(payload)
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) \
            or not isinstance(event.get("type"), str) \
            or not isinstance(event.get("created"), int) \
            or not isinstance((event.get("data") or {}).get("object"), dict):
        raise DomainError("validation-error", "Not a Stripe event",
                          "An event has a string id and type, an integer created time and"
                          " data.object.", status=400, field="body")
    return event


@dataclass
class Received:
    duplicate: bool
    outcome: str
    payment_id: int | None = None
    notifications: list[int] = field(default_factory=list)


async def _lock_object(conn: asyncpg.Connection, object_id: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", object_id)


def _object_id(event: dict[str, Any]) -> str | None:
    obj = event["data"]["object"]
    return obj.get("id") if isinstance(obj.get("id"), str) else None


async def _apply(conn: asyncpg.Connection, event: dict[str, Any]
                 ) -> tuple[str, int | None, int | None]:
    """(outcome, payment id, notification id) for one stored event."""
    handled = EVENTS.get(event["type"])
    object_id = _object_id(event)
    if handled is None or object_id is None:
        return "ignored", None, None
    kinds, status = handled
    payment = await conn.fetchrow(
        "SELECT * FROM settlement_payments WHERE stripe_object_id = $1"
        " AND kind = ANY($2::text[]) FOR UPDATE", object_id, list(kinds))
    if payment is None:
        return "unmatched", None, None
    obj = event["data"]["object"]
    if payment["kind"] == "transfer":
        amount_paid = 0 if status == "failed" else \
            payment["amount"] - int(obj.get("amount_reversed") or 0)
        reason = (f"{obj.get('amount_reversed')} reversed" if status == "reversed"
                  else obj.get("failure_message"))
    else:
        amount_paid = int(obj.get("amount_paid") or 0) if "amount_paid" in obj else None
        error = (obj.get("last_finalization_error") or {}).get("message") \
            if isinstance(obj.get("last_finalization_error"), dict) else None
        reason = error or ("The charge was declined or could not be made."
                           if status == "payment_failed" else None)
    at = datetime.fromtimestamp(event["created"], UTC)
    outcome, notification = await transition(conn, payment, status, amount_paid=amount_paid,
                                             event_at=at, reason=reason)
    return outcome, payment["id"], notification


async def _record(conn: asyncpg.Connection, event_id: str, outcome: str,
                  payment_id: int | None) -> None:
    await conn.execute(
        "UPDATE stripe_events SET outcome = $2::text, payment_id = $3, error = NULL,"
        " processed_at = CASE WHEN $2::text = 'unmatched' THEN NULL ELSE now() END WHERE id = $1",
        event_id, outcome, payment_id)


async def receive(tx: Tx, event: dict[str, Any], mailer: Any = None) -> Received:
    """Store the event once and apply it; the operators hear of a failure it reports
    once the Tx commits. A replay of a processed event changes nothing. If applying
    raises (a hook failed), the Tx rolls back and the exception propagates: the caller
    keeps the event with the error (`record_failure`, in a Tx of its own) and the
    webhook answers 500, so Stripe tries again."""
    conn = tx.conn
    object_id = _object_id(event)
    if object_id:
        await _lock_object(conn, object_id)
    await conn.execute(
        "INSERT INTO stripe_events (id, type, created, payload) VALUES ($1, $2, $3,"
        " $4::jsonb) ON CONFLICT (id) DO NOTHING", event["id"], event["type"],
        datetime.fromtimestamp(event["created"], UTC), json.dumps(event))
    stored = await conn.fetchrow("SELECT processed_at, outcome, payment_id"
                                 " FROM stripe_events WHERE id = $1 FOR UPDATE", event["id"])
    if stored["processed_at"] is not None:
        return Received(True, stored["outcome"], stored["payment_id"])
    outcome, payment_id, notification = await _apply(conn, event)
    await _record(conn, event["id"], outcome, payment_id)
    notifications = [notification] if notification else []
    await announce(tx, mailer, notifications)
    return Received(False, outcome, payment_id, notifications)


async def record_failure(tx: Tx, event: dict[str, Any], exc: BaseException) -> None:
    """Keep an event whose `receive` raised, with the error (Stripe sends it again)."""
    await tx.conn.execute(
        "INSERT INTO stripe_events (id, type, created, payload, outcome, error)"
        " VALUES ($1, $2, $3, $4::jsonb, 'error', $5) ON CONFLICT (id) DO UPDATE"
        " SET outcome = 'error', error = EXCLUDED.error", event["id"], event["type"],
        datetime.fromtimestamp(event["created"], UTC), json.dumps(event),
        f"{type(exc).__name__}: {exc}")


async def replay_waiting_events(conn: asyncpg.Connection, object_id: str) -> list[int]:
    """Apply the events about `object_id` that arrived before its payment row was
    committed (the caller holds the object's advisory lock). Notification ids."""
    notifications = []
    waiting = await conn.fetch(
        "SELECT id, payload FROM stripe_events WHERE processed_at IS NULL"
        " AND payload->'data'->'object'->>'id' = $1 ORDER BY created, received_at", object_id)
    for row in waiting:
        event = json.loads(row["payload"])
        outcome, payment_id, notification = await _apply(conn, event)
        await _record(conn, row["id"], outcome, payment_id)
        if notification:
            notifications.append(notification)
    return notifications
