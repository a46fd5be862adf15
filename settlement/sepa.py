"""Partners paid by bank: SEPA credit transfers, exported as one pain.001.001.03 batch
(sepaxml, validated against the XSD) for the operator to upload to its bank.

A payout is queued as a `sepa_credit` payment in status ready; a batch takes ready
payouts of one currency, checks the operator's debtor account and each creditor's IBAN
and BIC again (schwifty: the partner's own account, or the affiliate's copied onto the
payment when it was queued on the partner's behalf), writes the XML, stores it in
`sepa_batches` and marks the payouts exported, all in one transaction. The operator
marks them paid or failed from the bank statement (`mark`). Amounts are integer minor
units; sepaxml writes them as decimal strings (12345 -> 123.45), never through a float.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any
from xml.etree import ElementTree

import asyncpg
from sepaxml import SepaTransfer

from coalition import clock
from coalition.bank import BankAccount, check_account
from coalition.config import Settings
from coalition.errors import Conflict, DomainError
from settlement.payment_state import transition
from settlement.stripe_gateway import check_currency, check_reference

NS = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"}


@dataclass(frozen=True)
class Batch:
    message_id: str
    currency: str
    total: int
    payments: list[int]
    xml: str


def debtor(settings: Settings) -> BankAccount:
    for name in ("sepa_debtor_name", "sepa_debtor_iban"):
        if not getattr(settings, name):
            raise DomainError("payments-not-configured", "Payments not configured",
                              f"SEPA batches need the setting COALITION_{name.upper()}.",
                              status=409, field=name)
    return check_account(settings.sepa_debtor_name, settings.sepa_debtor_iban,
                         settings.sepa_debtor_bic, prefix="sepa_debtor_")


async def queue_payout(pool: asyncpg.Pool, partner_id: uuid.UUID, reference: tuple[str, str],
                       amount: int, currency: str) -> dict[str, Any]:
    """A ready SEPA credit to the partner's bank account (its payout method must be
    sepa). Queuing the same reference again returns the first payout."""
    async with pool.acquire() as conn, conn.transaction():
        return await queue_credit(conn, partner_id, reference, amount, currency)


async def queue_credit(conn: asyncpg.Connection, partner_id: uuid.UUID,
                       reference: tuple[str, str], amount: int, currency: str,
                       creditor: BankAccount | None = None) -> dict[str, Any]:
    """`queue_payout` in the caller's transaction. With `creditor`, the credit pays that
    account on the partner's behalf (an affiliate the partner owes) instead of the
    partner's own; the account is checked again and copied onto the payment."""
    reference = check_reference(reference)
    currency = check_currency(currency)
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise DomainError("validation-error", "Invalid payment", "A payout is a positive"
                          " integer in minor units.", status=400, field="amount")
    if creditor is None:
        details = await conn.fetchrow("SELECT * FROM partner_payout_details WHERE"
                                      " partner_id = $1 AND method = 'sepa'", partner_id)
        if details is None:
            raise DomainError("payout-details-missing", "No bank account",
                              "The partner has no bank account as its payout method.",
                              status=409, field="iban")
        check_account(details["account_holder"], details["iban"], details["bic"] or "")
    else:
        creditor = check_account(creditor.holder, creditor.iban, creditor.bic)
    row = await conn.fetchrow(
        "INSERT INTO settlement_payments (partner_id, kind, reference_type, reference_id,"
        " amount, currency, status, creditor_name, creditor_iban, creditor_bic)"
        " VALUES ($1, 'sepa_credit', $2, $3, $4, $5, 'ready', $6, $7, $8)"
        " ON CONFLICT (kind, reference_type, reference_id) DO NOTHING RETURNING *",
        partner_id, reference[0], reference[1], amount, currency,
        creditor and creditor.holder, creditor and creditor.iban,
        creditor and (creditor.bic or None))
    if row is None:
        row = await conn.fetchrow(
            "SELECT * FROM settlement_payments WHERE kind = 'sepa_credit' AND"
            " reference_type = $1 AND reference_id = $2", *reference)
        if (row["partner_id"], row["amount"], row["currency"]) != (partner_id, amount,
                                                                   currency):
            raise Conflict("payment-reference-taken", "Reference already paid differently",
                           f"{reference[0]} {reference[1]} already has a payout of"
                           f" {row['amount']} {row['currency']}.", field="reference")
    return dict(row)


async def export_batch(pool: asyncpg.Pool, settings: Settings, payment_ids: list[int],
                       execution_date: date, actor: str) -> Batch:
    """One pain.001 file paying the given ready SEPA payouts (one currency)."""
    async with pool.acquire() as conn, conn.transaction():
        return await export_batch_on(conn, settings, payment_ids, execution_date, actor)


async def export_batch_on(conn: asyncpg.Connection, settings: Settings,
                          payment_ids: list[int], execution_date: date, actor: str) -> Batch:
    """`export_batch` in the caller's transaction."""
    account = debtor(settings)
    if not payment_ids:
        raise DomainError("validation-error", "Nothing to pay", "Choose at least one ready"
                          " SEPA payout.", status=400, field="payment_ids")
    rows = await conn.fetch(
        "SELECT p.*, coalesce(p.creditor_name, d.account_holder) AS account_holder,"
        " coalesce(p.creditor_iban, d.iban) AS iban,"
        " CASE WHEN p.creditor_iban IS NULL THEN d.bic ELSE p.creditor_bic END AS bic,"
        " pr.name AS partner_name"
        " FROM settlement_payments p JOIN partners pr ON pr.id = p.partner_id"
        " LEFT JOIN partner_payout_details d ON d.partner_id = p.partner_id"
        " WHERE p.id = ANY($1::bigint[]) ORDER BY p.id FOR UPDATE OF p",
        sorted(set(payment_ids)))
    found = {r["id"] for r in rows}
    for n, pid in enumerate(sorted(set(payment_ids))):
        if pid not in found:
            raise DomainError("validation-error", "Unknown payout", f"No payment {pid}.",
                              status=400, field=f"payment_ids[{n}]")
    bad = [r["id"] for r in rows if r["kind"] != "sepa_credit" or r["status"] != "ready"]
    if bad:
        raise Conflict("payout-not-ready", "Payout not ready", f"Payments {bad} are not"
                       " ready SEPA payouts.", field="payment_ids")
    currencies = {r["currency"] for r in rows}
    if len(currencies) != 1:
        raise DomainError("validation-error", "Mixed currencies", "A batch pays one"
                          " currency.", status=400, field="payment_ids")
    currency = currencies.pop()
    sepa = SepaTransfer({"name": account.holder, "IBAN": account.iban, "BIC": account.bic,
                         "batch": True, "currency": currency}, clean=True)
    for r in rows:
        creditor = check_account(r["account_holder"] or "", r["iban"] or "",
                                 r["bic"] or "", prefix=f"payment {r['id']}: ")
        sepa.add_payment({
            "name": creditor.holder, "IBAN": creditor.iban, "BIC": creditor.bic,
            "amount": r["amount"], "execution_date": execution_date,
            "description": f"{r['reference_type']} {r['reference_id']}"[:140],
            "endtoend_id": f"COAL-{r['id']}"})
    xml = sepa.export(validate=True).decode()
    # Our own output, just written by sepaxml: not untrusted input.
    document = ElementTree.fromstring(xml)  # noqa: S314
    message_id = document.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:MsgId", namespaces=NS)
    total = sum(r["amount"] for r in rows)
    await conn.execute("INSERT INTO sepa_batches (message_id, currency, total, payments,"
                       " xml, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
                       message_id, currency, total, len(rows), xml, actor)
    for r in rows:
        await conn.execute("UPDATE settlement_payments SET sepa_message_id = $2"
                           " WHERE id = $1", r["id"], message_id)
        await transition(conn, r, "exported")
    return Batch(message_id, currency, total, [r["id"] for r in rows], xml)


async def export_ready(pool: asyncpg.Pool, settings: Settings, currency: str, actor: str,
                       *, reference_type: str | None = None) -> Batch:
    """Every ready SEPA credit of one currency (only those of `reference_type`, e.g. the
    affiliate payouts, when given) in one pain.001 file, executed today."""
    async with pool.acquire() as conn, conn.transaction():
        return await export_ready_on(conn, settings, currency, actor,
                                     reference_type=reference_type)


async def export_ready_on(conn: asyncpg.Connection, settings: Settings, currency: str,
                          actor: str, *, reference_type: str | None = None) -> Batch:
    """`export_ready` in the caller's transaction."""
    ids = [r["id"] for r in await conn.fetch(
        "SELECT id FROM settlement_payments WHERE kind = 'sepa_credit' AND status = 'ready'"
        " AND currency = $1 AND ($2::text IS NULL OR reference_type = $2)",
        currency.upper(), reference_type)]
    return await export_batch_on(conn, settings, ids, clock.now().date(), actor)


async def mark(pool: asyncpg.Pool, payment_id: int, status: str, reason: str | None = None
               ) -> tuple[str, int | None]:
    """The bank statement says an exported payout was paid (or bounced: failed)."""
    async with pool.acquire() as conn, conn.transaction():
        return await mark_on(conn, payment_id, status, reason)


async def mark_on(conn: asyncpg.Connection, payment_id: int, status: str,
                  reason: str | None = None) -> tuple[str, int | None]:
    """`mark` in the caller's transaction: (outcome, failure notification id)."""
    if status not in ("paid", "failed"):
        raise DomainError("validation-error", "Invalid status", "A payout is marked paid or"
                          " failed.", status=400, field="status")
    row = await conn.fetchrow("SELECT * FROM settlement_payments WHERE id = $1 AND"
                              " kind = 'sepa_credit' FOR UPDATE", payment_id)
    if row is None or row["status"] not in ("exported", status):
        raise Conflict("payout-not-exported", "Payout not exported",
                       "Only an exported SEPA payout can be marked.", field="payment_id")
    return await transition(conn, row, status, reason=reason,
                            amount_paid=row["amount"] if status == "paid" else 0)
