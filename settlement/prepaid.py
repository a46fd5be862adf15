"""Prepaid point blocks: a prepaid partner buys points in advance, its customers' earning
draws them down, cancellations credit them back (the triggers of
migrations/sql/0016_prepaid.sql keep `prepaid_balances`).

Pricing. A block of N points costs N times the issue price of the rate card in force when it
is requested (minor units of the coalition currency per point), converted at the FX rate
in force that day when the partner settles in another currency, then rounded once, half
up, to the settlement currency's minor unit (`terms.round_minor`). The block records the
price per point, the rate and its date.

Payment. `request_block` creates a block awaiting payment; whoever collects the money (a
Stripe invoice paid, or the operator marking a bank transfer) calls `credit_paid_block`,
which is idempotent: the first matching payment credits the points, a repeat changes
nothing, a payment of another amount is recorded on the block and credits nothing.

Refusal. Issuance beyond the balance plus the credit limit of the terms in force fails
inside the posting with SQLSTATE CPB01; `refusal` turns that into the 422 problem
`prepaid-balance-exhausted`, and the posting's transaction has written nothing.

Low balance. When the balance falls to or below the rate card's `low_balance_alert`, the
trigger flags it once (`low_since`); `send_low_balance_alerts` (the prepaid_alerts job)
mails the operators and the partner's owners outside the posting's transaction. The next
paid block that lifts the balance above the threshold re-arms the alert.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

import asyncpg

from coalition import clock
from coalition.errors import DomainError, NotFound
from coalition.prepaid import PREPAID_SQLSTATE, refusal  # noqa: F401  (named here too)

from .payment_hooks import PaymentChange, on_payment_change
from .terms import Invalid, convert, round_minor, settings, terms_at

log = logging.getLogger(__name__)

MAX_BLOCK_POINTS = 10**12
MAX_AMOUNT_MINOR = 2**63 - 1      # prepaid_blocks.amount_paid, mismatch_amount (bigint)


@dataclass(frozen=True)
class Block:
    id: int
    partner_id: uuid.UUID
    points: int
    price: int
    currency: str
    issue_price: Decimal
    terms_id: int
    fx_rate: Decimal | None
    fx_date: object
    status: str
    requested_by: str
    created_at: datetime
    paid_at: datetime | None
    amount_paid: int | None
    paid_via: str | None
    mismatch_amount: int | None
    mismatch_at: datetime | None
    cancelled_at: datetime | None


@dataclass(frozen=True)
class Balance:
    partner_id: uuid.UUID
    available: int
    paid: int
    drawn: int
    credited: int
    low_since: datetime | None
    alert_sent_at: datetime | None
    billing: str | None           # of the rate card in force now
    credit_limit: int
    low_balance_alert: int | None

    @property
    def can_issue(self) -> int:
        """Points the partner may still issue: balance plus credit limit."""
        return self.available + self.credit_limit if self.billing == "prepaid" else 0


@dataclass(frozen=True)
class CreditResult:
    outcome: str     # credited | already_paid | mismatch | cancelled
    block: Block


def _block(row: asyncpg.Record) -> Block:
    return Block(**{field: row[field] for field in Block.__dataclass_fields__})


async def balance(conn: asyncpg.Connection, partner_id: uuid.UUID) -> Balance | None:
    row = await conn.fetchrow("SELECT * FROM prepaid_balances WHERE partner_id = $1",
                              partner_id)
    if row is None:
        return None
    terms = await terms_at(conn, partner_id)
    return Balance(partner_id, row["available"], row["paid"], row["drawn"], row["credited"],
                   row["low_since"], row["alert_sent_at"],
                   terms.billing if terms else None, terms.credit_limit if terms else 0,
                   terms.low_balance_alert if terms else None)


async def blocks(conn: asyncpg.Connection, partner_id: uuid.UUID | None = None
                 ) -> list[asyncpg.Record]:
    """Blocks, newest first, with the partner's name; every partner's when None."""
    return await conn.fetch(
        "SELECT b.*, p.name AS partner_name FROM prepaid_blocks b JOIN partners p"
        " ON p.id = b.partner_id WHERE $1::uuid IS NULL OR b.partner_id = $1"
        " ORDER BY b.created_at DESC, b.id DESC", partner_id)


async def get_block(conn: asyncpg.Connection, block_id: int, partner_id: uuid.UUID
                    ) -> Block | None:
    """One block of the partner's (None for another partner's)."""
    row = await conn.fetchrow("SELECT * FROM prepaid_blocks WHERE id = $1 AND partner_id = $2",
                              block_id, partner_id)
    return _block(row) if row else None


async def request_block(conn: asyncpg.Connection, partner_id: uuid.UUID, points: object,
                        requested_by: str, now: datetime | None = None) -> Block:
    """A block awaiting payment, priced at the issue price in force now (module doc)."""
    now = now or clock.now()
    text = str(points).strip() if points is not None and not isinstance(points, bool) else ""
    if isinstance(points, float) or not text.isdigit() or not 0 < int(text) <= MAX_BLOCK_POINTS:
        raise Invalid({"points": f"must be a whole number from 1 to {MAX_BLOCK_POINTS}"},
                      "Invalid block")
    count = int(text)
    terms = await terms_at(conn, partner_id, now)
    if terms is None or terms.billing != "prepaid":
        raise DomainError("not-prepaid", "Not a prepaid partner",
                          "Point blocks are for partners billed prepaid; the rate card in "
                          "force says otherwise.", field="points")
    coalition_currency, zone = await settings(conn)
    exact = count * terms.issue_price
    conversion = await convert(conn, exact, coalition_currency, terms.currency,
                               now.astimezone(zone).date())
    row = await conn.fetchrow(
        "INSERT INTO prepaid_blocks (partner_id, points, price, currency, issue_price,"
        " terms_id, fx_rate, fx_date, requested_by, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
        partner_id, count, round_minor(conversion.amount), terms.currency, terms.issue_price,
        terms.id, conversion.rate if conversion.rate_date else None, conversion.rate_date,
        requested_by, now)
    return _block(row)


async def credit_paid_block(conn: asyncpg.Connection, block_id: int, amount_paid: int,
                            paid_via: str = "manual") -> CreditResult:
    """Credit a paid block's points, once. Idempotent: a block already paid stays as it
    is (`already_paid`). A payment of any amount other than the price credits nothing and
    is recorded on the block (`mismatch`), as is a payment for a cancelled block."""
    if isinstance(amount_paid, bool) or not isinstance(amount_paid, int) \
            or not 0 <= amount_paid <= MAX_AMOUNT_MINOR:
        raise Invalid({"amount_paid": "must be a whole, non-negative number of minor units,"
                                      f" at most {MAX_AMOUNT_MINOR}"})
    async with conn.transaction():
        row = await conn.fetchrow("SELECT * FROM prepaid_blocks WHERE id = $1 FOR UPDATE",
                                  block_id)
        if row is None:
            raise NotFound("block-not-found", "Block not found", "No such prepaid block.")
        if row["status"] == "paid":
            return CreditResult("already_paid", _block(row))
        if row["status"] == "cancelled" or amount_paid != row["price"]:
            row = await conn.fetchrow(
                "UPDATE prepaid_blocks SET mismatch_amount = $2, mismatch_at = $3"
                " WHERE id = $1 RETURNING *", block_id, amount_paid, clock.now())
            log.warning("prepaid block %s: payment of %s for a %s block priced %s",
                        block_id, amount_paid, row["status"], row["price"])
            return CreditResult("cancelled" if row["status"] == "cancelled" else "mismatch",
                                _block(row))
        row = await conn.fetchrow(
            "UPDATE prepaid_blocks SET status = 'paid', paid_at = $4, amount_paid = $2,"
            " paid_via = $3 WHERE id = $1 RETURNING *", block_id, amount_paid, paid_via[:200],
            clock.now())
        terms = await terms_at(conn, row["partner_id"])
        threshold = terms.low_balance_alert if terms else None
        await conn.execute("INSERT INTO prepaid_balances (partner_id) VALUES ($1)"
                           " ON CONFLICT DO NOTHING", row["partner_id"])
        # A block that lifts the balance above the threshold re-arms the alert.
        await conn.execute(
            "UPDATE prepaid_balances SET available = available + $2, paid = paid + $2,"
            " updated_at = now(),"
            " low_since = CASE WHEN $3::bigint IS NULL OR available + $2 > $3 THEN NULL"
            "                  ELSE low_since END,"
            " alert_sent_at = CASE WHEN $3::bigint IS NULL OR available + $2 > $3 THEN NULL"
            "                      ELSE alert_sent_at END"
            " WHERE partner_id = $1", row["partner_id"], row["points"], threshold)
        return CreditResult("credited", _block(row))


async def cancel_block(conn: asyncpg.Connection, block_id: int) -> Block:
    """Cancel a block nobody paid for. A paid block is never cancelled."""
    row = await conn.fetchrow(
        "UPDATE prepaid_blocks SET status = 'cancelled', cancelled_at = $2"
        " WHERE id = $1 AND status = 'awaiting_payment' RETURNING *", block_id, clock.now())
    if row is None:
        raise DomainError("block-not-open", "Block not awaiting payment",
                          "Only a block awaiting payment can be cancelled.", status=409,
                          field="block_id")
    return _block(row)


class Mailer(Protocol):
    async def send(self, to: str, subject: str, text: str) -> None: ...


async def send_low_balance_alerts(conn: asyncpg.Connection, mailer: Mailer) -> int:
    """Mail each flagged, not yet mailed low balance to the operators and the partner's
    owners. The claim (alert_sent_at) is taken before sending, so two workers never mail
    the same crossing twice; a failed send releases it for the next run."""
    claimed = await conn.fetch(
        "UPDATE prepaid_balances b SET alert_sent_at = $1 FROM partners p"
        " WHERE p.id = b.partner_id AND b.low_since IS NOT NULL AND b.alert_sent_at IS NULL"
        " RETURNING b.partner_id, b.available, p.name", clock.now())
    sent = 0
    for row in claimed:
        recipients = [r["email"] for r in await conn.fetch(
            "SELECT email FROM users WHERE disabled_at IS NULL AND (kind = 'operator'"
            " OR (kind = 'partner_staff' AND role = 'owner' AND partner_id = $1))"
            " ORDER BY kind, email", row["partner_id"])]
        terms = await terms_at(conn, row["partner_id"])
        limit = terms.credit_limit if terms else 0
        text = (f"The prepaid points balance of {row['name']} is down to {row['available']} "
                f"points (alert threshold {terms.low_balance_alert if terms else '-'}; credit "
                f"limit {limit}). Once it reaches -{limit}, points earned at {row['name']} "
                "are refused. Buy a block of points in the partner console, Prepaid points.\n")
        try:
            for email in recipients:
                await mailer.send(email, f"Low prepaid points balance: {row['name']}", text)
        except Exception:
            log.exception("low-balance alert for %s not sent", row["partner_id"])
            await conn.execute("UPDATE prepaid_balances SET alert_sent_at = NULL"
                               " WHERE partner_id = $1", row["partner_id"])
            continue
        sent += 1
    return sent


@on_payment_change("prepaid_block")
async def _credit_when_paid(conn: asyncpg.Connection, change: PaymentChange) -> None:
    """A block's Stripe invoice was paid: credit the block (settlement.payment_hooks)."""
    if change.new_status == "paid":
        await credit_paid_block(conn, int(change.reference_id), change.amount_paid,
                                paid_via=f"stripe:payment {change.payment_id}")


async def invoice_block(gateway: BlockInvoicer, block: Block) -> bool:
    """Send the block's invoice through Stripe when payments are configured (the partner
    pays it, the webhook credits the block); without Stripe the block waits for the
    operator to record a bank transfer. True when an invoice went out."""
    if not gateway.configured:
        return False
    await gateway.invoice_partner(
        block.partner_id, ("prepaid_block", str(block.id)),
        [(f"Prepaid block of {block.points:,} points", block.price)], block.currency,
        collection="send_invoice", kind="prepaid_block",
        description=f"Coalition points, prepaid block {block.id}")
    return True


class BlockInvoicer(Protocol):
    """What invoice_block needs of settlement.stripe_gateway.StripeGateway."""

    @property
    def configured(self) -> bool: ...

    async def invoice_partner(self, partner_id: uuid.UUID, reference: tuple[str, str],
                              lines: list[tuple[str, int]], currency: str, *,
                              collection: str, kind: str, description: str | None
                              ) -> dict: ...
