"""Stripe: a Customer per partner, invoices the partner pays, Connect transfers it
receives.

Every call that creates something carries an idempotency key derived from the payment's
reference ("coalition:<kind>:<reference_type>:<reference_id>:<step>"), so a retry after a
timeout gets Stripe's first answer instead of a second charge. Our own row comes first:
one payment per (kind, reference), created in the same transaction as the Stripe calls,
so asking again for a reference that was invoiced returns the stored payment.

The invoice follows Stripe's one-off invoice flow: invoice items (one per line, pending
on the customer), an invoice that takes them (`pending_invoice_items_behavior=include`,
`auto_advance=false` so nothing happens behind our back), finalize, then `pay` (charge
the default payment method) or `send` (Stripe emails it, due in `days_until_due`).

A Connect transfer goes to the partner's own connected account, or, on the partner's
behalf, to someone it owes (an affiliate: `transfer_for_partner`). Connect transfers go
to `COALITION_STRIPE_CONNECT_BASE` (Stripe itself unless set). The
test suite points it at a small local HTTP double, because localstripe has no Connect.

Amounts are integers in minor units; currencies go to Stripe in lower case.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import stripe

from coalition.config import Settings
from coalition.errors import Conflict, DomainError, NotFound
from settlement.payment_hooks import run_hooks
from settlement.payment_state import change_of, email_operators, transition
from settlement.webhooks import replay_waiting_events

Reference = tuple[str, str]
COLLECTIONS = ("charge_automatically", "send_invoice")


class NotConfigured(DomainError):
    status = 409

    def __init__(self, setting: str, what: str) -> None:
        super().__init__("payments-not-configured", "Payments not configured",
                         f"{what} needs the setting COALITION_{setting.upper()}.",
                         field=setting)


def stripe_failure(exc: stripe.StripeError) -> DomainError:
    return DomainError("stripe-error", "Stripe refused the request",
                       f"Stripe answered: {exc.user_message or exc}", status=502)


def invalid(field: str, detail: str) -> DomainError:
    return DomainError("validation-error", "Invalid payment", detail, status=400, field=field)


@dataclass(frozen=True)
class StripeConfig:
    secret_key: str = ""
    api_base: str = ""
    connect_base: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeConfig:
        return cls(settings.stripe_secret_key, settings.stripe_api_base.rstrip("/"),
                   settings.stripe_connect_base.rstrip("/"))


def check_reference(reference: Reference) -> Reference:
    kind, ident = reference
    if not kind or not str(ident) or len(kind) > 40 or len(str(ident)) > 100:
        raise invalid("reference", "A reference is (type, id), at most 40 and 100 characters.")
    return kind, str(ident)


def check_currency(currency: str) -> str:
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
        raise invalid("currency", "A currency is a three-letter ISO 4217 code.")
    return currency.upper()


def check_lines(lines: Sequence[tuple[str, int]]) -> int:
    """The invoice total; each line's amount is an integer (a credit line may be
    negative), and the total must be positive."""
    if not lines:
        raise invalid("lines", "An invoice needs at least one line.")
    for n, (description, amount) in enumerate(lines):
        if not isinstance(description, str) or not description.strip():
            raise invalid(f"lines[{n}].description", "Each line needs a description.")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise invalid(f"lines[{n}].amount", "Amounts are integers in minor units.")
    total = sum(amount for _, amount in lines)
    if total <= 0:
        raise invalid("lines", "The invoice total must be positive.")
    return total


def key(kind: str, reference: Reference, step: str) -> str:
    return f"coalition:{kind}:{reference[0]}:{reference[1]}:{step}"


async def _lock_object(conn: asyncpg.Connection, stripe_object_id: str) -> None:
    """Serialises our write of a Stripe object with the webhooks about it
    (webhooks.receive takes the same lock), so an event that arrives before our row
    is committed is stored and replayed here instead of being lost."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                       stripe_object_id)


class StripeGateway:
    def __init__(self, config: StripeConfig, pool: asyncpg.Pool, mailer: Any = None) -> None:
        self.config = config
        self.pool = pool
        # tenants.mail.Mailer: failures seen in an API answer are emailed to operators.
        self.mailer = mailer
        self._clients: dict[str, stripe.StripeClient] = {}

    @property
    def configured(self) -> bool:
        return bool(self.config.secret_key)

    def client(self, what: str, connect: bool = False) -> stripe.StripeClient:
        if not self.config.secret_key:
            raise NotConfigured("stripe_secret_key", what)
        base = (self.config.connect_base or self.config.api_base) if connect \
            else self.config.api_base
        if base not in self._clients:
            self._clients[base] = stripe.StripeClient(
                self.config.secret_key,
                base_addresses={"api": base} if base else None,
                http_client=stripe.HTTPXClient(allow_sync_methods=False),
                max_network_retries=2)
        return self._clients[base]

    async def ensure_customer(self, partner_id: uuid.UUID) -> str:
        """The partner's Stripe Customer id, created once."""
        client = self.client("Billing a partner")
        async with self.pool.acquire() as conn, conn.transaction():
            partner = await conn.fetchrow(
                "SELECT p.name, coalesce(d.billing_email, p.contact_email) AS email"
                " FROM partners p LEFT JOIN partner_payout_details d ON d.partner_id = p.id"
                " WHERE p.id = $1", partner_id)
            if partner is None:
                raise NotFound("partner-not-found", "Partner not found",
                               "No partner with this id.", field="partner_id")
            await conn.execute("INSERT INTO partner_payout_details (partner_id) VALUES ($1)"
                               " ON CONFLICT DO NOTHING", partner_id)
            existing = await conn.fetchval(
                "SELECT stripe_customer_id FROM partner_payout_details WHERE partner_id = $1"
                " FOR UPDATE", partner_id)
            if existing:
                return existing
            params: dict[str, Any] = {"name": partner["name"],
                                      "metadata": {"partner_id": str(partner_id)}}
            if partner["email"]:
                params["email"] = partner["email"]
            try:
                customer = await client.v1.customers.create_async(
                    params, {"idempotency_key": f"coalition:customer:{partner_id}"})
            except stripe.StripeError as exc:
                raise stripe_failure(exc) from exc
            await conn.execute("UPDATE partner_payout_details SET stripe_customer_id = $2,"
                               " updated_at = now() WHERE partner_id = $1",
                               partner_id, customer.id)
            return customer.id

    async def _reserve(self, conn: asyncpg.Connection, partner_id: uuid.UUID, kind: str,
                       reference: Reference, amount: int, currency: str,
                       status: str, collection: str | None = None) -> tuple[Any, bool]:
        """(payment row, True if new). An existing payment for the reference is
        returned as it is, unless it differs in partner, amount or currency (409)."""
        row = await conn.fetchrow(
            "INSERT INTO settlement_payments (partner_id, kind, reference_type, reference_id,"
            " amount, currency, status, collection) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (kind, reference_type, reference_id) DO NOTHING RETURNING *",
            partner_id, kind, reference[0], reference[1], amount, currency, status,
            collection)
        if row is not None:
            return row, True
        row = await conn.fetchrow(
            "SELECT * FROM settlement_payments WHERE kind = $1 AND reference_type = $2"
            " AND reference_id = $3 FOR UPDATE", kind, reference[0], reference[1])
        if (row["partner_id"], row["amount"], row["currency"]) != (partner_id, amount,
                                                                   currency):
            raise Conflict("payment-reference-taken", "Reference already paid differently",
                           f"{reference[0]} {reference[1]} already has a {kind} of"
                           f" {row['amount']} {row['currency']}.", field="reference")
        return row, False

    async def invoice_partner(self, partner_id: uuid.UUID, reference: Reference,
                              lines: Sequence[tuple[str, int]], currency: str, *,
                              collection: str = "charge_automatically",
                              kind: str = "invoice", days_until_due: int = 14,
                              description: str | None = None) -> dict[str, Any]:
        """Invoice the partner: one item per line, finalized, then charged or sent.
        `kind` is "invoice" (a statement) or "prepaid_block" (a block of points)."""
        reference = check_reference(reference)
        currency = check_currency(currency)
        total = check_lines(lines)
        if collection not in COLLECTIONS:
            raise invalid("collection", f"collection is one of {', '.join(COLLECTIONS)}.")
        if kind not in ("invoice", "prepaid_block"):
            raise invalid("kind", "An invoice is of kind invoice or prepaid_block.")
        customer = await self.ensure_customer(partner_id)
        client = self.client("Invoicing a partner")
        async with self.pool.acquire() as conn, conn.transaction():
            payment, new = await self._reserve(conn, partner_id, kind, reference, total,
                                               currency, "open", collection)
            if not new:
                return dict(payment)
            metadata = {"coalition_kind": kind, "reference_type": reference[0],
                        "reference_id": reference[1], "payment_id": str(payment["id"])}
            reason = None
            try:
                for n, (text, amount) in enumerate(lines):
                    await client.v1.invoice_items.create_async(
                        {"customer": customer, "amount": amount, "currency": currency.lower(),
                         "description": text, "metadata": metadata},
                        {"idempotency_key": key(kind, reference, f"item:{n}")})
                params: dict[str, Any] = {
                    "customer": customer, "collection_method": collection,
                    "auto_advance": False, "pending_invoice_items_behavior": "include",
                    "description": description or f"{reference[0]} {reference[1]}",
                    "metadata": metadata}
                if collection == "send_invoice":
                    params["days_until_due"] = days_until_due
                invoice = await client.v1.invoices.create_async(
                    params, {"idempotency_key": key(kind, reference, "invoice")})
                await _lock_object(conn, invoice.id)
                invoice = await client.v1.invoices.finalize_invoice_async(
                    invoice.id, {"auto_advance": False},
                    {"idempotency_key": key(kind, reference, "finalize")})
                if collection == "charge_automatically":
                    try:
                        invoice = await client.v1.invoices.pay_async(
                            invoice.id, options={"idempotency_key": key(kind, reference, "pay")})
                    except stripe.CardError as exc:
                        reason = exc.user_message or str(exc)
                else:
                    invoice = await client.v1.invoices.send_invoice_async(
                        invoice.id, options={"idempotency_key": key(kind, reference, "send")})
            except stripe.StripeError as exc:
                raise stripe_failure(exc) from exc
            payment = await conn.fetchrow(
                "UPDATE settlement_payments SET stripe_object_id = $2, updated_at = now()"
                " WHERE id = $1 RETURNING *", payment["id"], invoice.id)
            await run_hooks(conn, change_of(payment, None))
            status = "payment_failed" if reason else \
                {"paid": "paid", "void": "voided", "uncollectible": "uncollectible"}.get(
                    invoice.status, "open")
            _, notification = await transition(conn, payment, status,
                                               amount_paid=invoice.amount_paid, reason=reason)
            notifications = [notification] if notification else []
            notifications += await replay_waiting_events(conn, invoice.id)
            result = dict(await conn.fetchrow("SELECT * FROM settlement_payments WHERE id = $1",
                                              payment["id"]))
        await self._announce(notifications)
        return result

    async def _announce(self, notifications: list[int]) -> None:
        if self.mailer is not None:
            await email_operators(self.pool, self.mailer, notifications)

    async def transfer_to_partner(self, partner_id: uuid.UUID, reference: Reference,
                                  amount: int, currency: str) -> dict[str, Any]:
        """A Stripe Connect transfer to the partner's connected account."""
        reference, currency = _check_transfer(reference, amount, currency)
        client = self.client("Paying a partner by Stripe Connect", connect=True)
        async with self.pool.acquire() as conn, conn.transaction():
            account = await conn.fetchval(
                "SELECT stripe_account_id FROM partner_payout_details WHERE partner_id = $1"
                " AND method = 'stripe_connect'", partner_id)
            if not account:
                raise DomainError("payout-details-missing", "No connected account",
                                  "The partner has no Stripe connected account as its payout"
                                  " method.", status=409, field="stripe_account_id")
            result, notifications = await self._transfer(conn, client, partner_id, reference,
                                                         amount, currency, account)
        await self._announce(notifications)
        return result

    async def transfer_for_partner(self, partner_id: uuid.UUID, reference: Reference,
                                   amount: int, currency: str, destination: str
                                   ) -> dict[str, Any]:
        """A Stripe Connect transfer to someone the partner owes (an affiliate's connected
        account `destination`); the payment is recorded under the funding partner."""
        reference, currency = _check_transfer(reference, amount, currency)
        if not isinstance(destination, str) or not destination.startswith("acct_"):
            raise invalid("stripe_account_id", "A connected account id starts with acct_.")
        client = self.client("Paying an affiliate by Stripe Connect", connect=True)
        async with self.pool.acquire() as conn, conn.transaction():
            result, notifications = await self._transfer(conn, client, partner_id, reference,
                                                         amount, currency, destination)
        await self._announce(notifications)
        return result

    async def _transfer(self, conn: asyncpg.Connection, client: stripe.StripeClient,
                        partner_id: uuid.UUID, reference: Reference, amount: int,
                        currency: str, account: str) -> tuple[dict[str, Any], list[int]]:
        payment, new = await self._reserve(conn, partner_id, "transfer", reference,
                                           amount, currency, "created")
        if not new:
            return dict(payment), []
        try:
            transfer = await client.v1.transfers.create_async(
                {"amount": amount, "currency": currency.lower(), "destination": account,
                 "transfer_group": f"{reference[0]}:{reference[1]}",
                 "metadata": {"coalition_kind": "transfer",
                              "reference_type": reference[0],
                              "reference_id": reference[1],
                              "payment_id": str(payment["id"])}},
                {"idempotency_key": key("transfer", reference, "transfer")})
        except stripe.StripeError as exc:
            raise stripe_failure(exc) from exc
        await _lock_object(conn, transfer.id)
        paid = amount - int(transfer.to_dict().get("amount_reversed") or 0)
        payment = await conn.fetchrow(
            "UPDATE settlement_payments SET stripe_object_id = $2, amount_paid = $3,"
            " updated_at = now() WHERE id = $1 RETURNING *", payment["id"], transfer.id,
            paid)
        await run_hooks(conn, change_of(payment, None))
        notifications = await replay_waiting_events(conn, transfer.id)
        result = dict(await conn.fetchrow("SELECT * FROM settlement_payments WHERE id = $1",
                                          payment["id"]))
        return result, notifications


def _check_transfer(reference: Reference, amount: int, currency: str) -> tuple[Reference, str]:
    reference, currency = check_reference(reference), check_currency(currency)
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise invalid("amount", "A transfer is a positive integer in minor units.")
    return reference, currency
