"""The settlement runs' use cases for `coalition settle` (README "Settlement"): each a
Tx of its own; the run functions (settlement/runs.py) keep their own transactions,
savepoints inside it. (`settle reconcile` reads settlement/queries.py `reconciliation`.)
Unlike the console's actions (settlement/actions.py), these write no audit row, as the
command never did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coalition.uow import Tx
from settlement import runs, statements


@dataclass(frozen=True)
class RunReport:
    run: Any
    statements: list[Any]
    netting: list[dict]


async def run_period(tx: Tx, period: str, actor: str, *,
                     dispute_window_days: int | None = None) -> RunReport:
    """Create the period's draft run, or re-run it; with its statements and netting."""
    run = await runs.run_period(tx.conn, period, actor,
                                dispute_window_days=dispute_window_days)
    return RunReport(run, list(await statements.run_statements(tx.conn, run["id"])),
                     await statements.netting(tx.conn, run["id"]))


async def move_run(tx: Tx, action: str, period: str, actor: str, *,
                   force: bool = False) -> Any:
    """review, reopen, finalize, close or discard the period's run; the run after it
    (None once discarded)."""
    if action == "review":
        return await runs.start_review(tx.conn, period)
    if action == "reopen":
        return await runs.reopen(tx.conn, period)
    if action == "finalize":
        return await runs.finalize(tx.conn, period, actor, force=force)
    if action == "close":
        return await runs.close(tx.conn, period)
    if action == "discard":
        await runs.discard(tx.conn, period)
        return None
    raise ValueError(f"no run action {action!r}")


async def verify_period(tx: Tx, period: str) -> list[str]:
    """What differs between the period's statements, their lines and stored hash."""
    run = await runs.get_run(tx.conn, period)
    return await runs.verify(tx.conn, run["id"])

