"""Idempotency-Key for use cases that are not one posting function (those record their
own key in the same statement). The key's claim, the use case's writes and the stored
response share the caller's Tx: a retry with the same key and body replays the stored
response, a different body under the same key is a 409 (idempotency_claim, SQL), and a
use case that raises stores nothing, leaving the key free for a retry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from coalition.ledger import PostingResult
from coalition.uow import Tx

_CLAIM = "SELECT claimed, status, body FROM idempotency_claim($1, $2, $3)"
_FINISH = "SELECT idempotency_finish($1, $2, $3, $4)"


@dataclass(frozen=True)
class Once:
    """The caller's Idempotency-Key and a fingerprint of the request it came with."""

    key: str
    fingerprint: str


async def idempotent(tx: Tx, once: Once, use_case: Callable[..., Awaitable[Any]], *args: Any,
                     present: Callable[[Any], tuple[int, object]], **kwargs: Any
                     ) -> PostingResult:
    """Run `use_case(tx, *args, **kwargs)` once per key of the Tx's partner; `present`
    turns its result into the status and body stored and answered (a pure function:
    the caller's serialisation)."""
    if tx.partner_id is None:
        raise ValueError("an idempotency key belongs to a partner: act for one")
    claim = await tx.conn.fetchrow(_CLAIM, tx.partner_id, once.key, once.fingerprint)
    if not claim["claimed"]:
        return PostingResult(claim["status"], claim["body"])
    status, payload = present(await use_case(tx, *args, **kwargs))
    body = msgspec.json.encode(payload).decode()
    await tx.conn.execute(_FINISH, tx.partner_id, once.key, status, body)
    return PostingResult(status, body)
