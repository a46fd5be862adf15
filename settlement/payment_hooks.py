"""What else happens when a payment changes state, registered by the code that owns the
payment's reference: statements move to paid, a prepaid block is credited when its
invoice is paid. Registered at import time, e.g.

    @on_payment_change("statement")
    async def statement_paid(conn, change):
        if change.new_status == "paid": ...

Hooks run on the same connection and in the same transaction as the state change (a
webhook's, or the gateway's): if a hook raises, the change is rolled back too and the
webhook answers 500, so Stripe delivers the event again. Hooks must therefore be
idempotent per (payment_id, new_status), which they are naturally since they run once
per transition. This module imports nothing of web/.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class PaymentChange:
    payment_id: int
    partner_id: uuid.UUID
    kind: str                 # invoice | transfer | sepa_credit | prepaid_block
    reference_type: str       # e.g. statement, prepaid_block
    reference_id: str
    old_status: str | None    # None when the payment was just created
    new_status: str
    amount: int               # minor units of currency
    amount_paid: int
    currency: str


Hook = Callable[[asyncpg.Connection, PaymentChange], Awaitable[None]]
_HOOKS: dict[str, list[Hook]] = {}


def on_payment_change(reference_type: str) -> Callable[[Hook], Hook]:
    """Decorator: call the hook for every state change of a payment whose reference is
    of this type ("*" for every payment)."""

    def register(hook: Hook) -> Hook:
        _HOOKS.setdefault(reference_type, []).append(hook)
        return hook

    return register


def remove_hook(reference_type: str, hook: Hook) -> None:
    _HOOKS.get(reference_type, []).remove(hook)


async def run_hooks(conn: asyncpg.Connection, change: PaymentChange) -> None:
    for hook in [*_HOOKS.get(change.reference_type, ()), *_HOOKS.get("*", ())]:
        await hook(conn, change)
