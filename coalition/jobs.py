"""The periodic jobs' unit of work (their schedule is web/jobs.py).

A job's work is a function of a connection and its arguments (`lifecycle.activate_pending`,
`settlement.runs.draft_previous_month`, ...) that commits in steps of its own: batches
that each commit alone, so a long backlog never holds locks for long, and mail sent only
after what it reports is committed. `run_job` runs one on a Tx outside any transaction.
Every job is idempotent (a second run changes nothing), which is what lets a job run on
two workers at once, be retried, or be run once more on another connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from coalition.uow import Tx, own_transactions

R = TypeVar("R")


@own_transactions
async def run_job(tx: Tx, work: Callable[..., Awaitable[R]], *args: Any) -> R:
    """`work(connection, *args)` on the Tx's connection."""
    connection: asyncpg.Connection = tx.conn
    return await work(connection, *args)
