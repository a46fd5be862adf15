"""Background and periodic jobs on procrastinate, a task queue kept in PostgreSQL.

`coalition run` starts a worker inside the server process; `coalition worker` runs one
on its own (several may run at once: procrastinate hands each job to one worker, and
every job here is idempotent anyway, so a job run twice changes nothing the second time).

Periodic jobs (times are UTC):
| job               | when            | what                                              |
|-------------------|-----------------|---------------------------------------------------|
| activate_pending  | every minute    | pending points whose return window ended          |
| expire_holds      | every minute    | checkout holds past their timeout give points back |
| expire_points     | hourly at :05   | expired remainders move to breakage               |
| maintenance       | every 10 min    | purge old idempotency keys, tokens, codes,        |
|                   |                 | expired portal sessions, old login attempts       |
| reevaluate_tiers  | daily at 01:30  | downgrades and lapsed manual tiers (upgrades are   |
|                   |                 | immediate, at the purchase)                       |
| refresh_segments  | hourly at :20   | RFM scores, then every segment's members          |
| prepaid_alerts    | every minute    | mail low prepaid balances (once per crossing)     |
| approve_commis-   | every 10 min    | affiliate commissions past their hold period      |
|   sions           |                 | become approved (held ones wait for a person)     |
| draft_settlement  | 1st, 02:10      | drafts the previous month's settlement run (once:  |
|                   |                 | an existing run is left as it is)                 |
| pay_affiliates    | daily at 03:40  | affiliate payouts whose approved net reached the  |
|                   |                 | program's minimum (settlement/affiliate_payouts)  |
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import procrastinate

from coalition import clock, lifecycle
from coalition.affiliates.commissions import approve_due
from coalition.config import get_settings
from coalition.db import DatabaseUrl
from coalition.jobs import run_job
from coalition.resources import open_database
from coalition.segments.service import refresh_all
from coalition.tiers import reevaluate_all
from settlement.affiliate_payouts import run_payouts
from settlement.prepaid import send_low_balance_alerts
from settlement.runs import draft_previous_month
from settlement.stripe_gateway import StripeConfig, StripeGateway
from tenants.mail import Mailer
from tenants.maintenance import maintenance_pass

log = logging.getLogger(__name__)

app = procrastinate.App(connector=procrastinate.PsycopgConnector())
_database: dict[str, str] = {}


def _at(timestamp: int) -> datetime:
    """The moment a periodic job judges what is due by: the moment it was scheduled for,
    on the platform's clock (procrastinate stamps its schedule by the wall clock, which
    differs from the platform's under COALITION_NOW)."""
    return clock.at_wall(timestamp)


async def _run(name: str, work: Callable[..., Awaitable[object]], *args: Any) -> object:
    """`work(connection, *args)` as a use case (coalition/jobs.py `run_job`), on a
    connection of its own."""
    async with open_database(DatabaseUrl(_database["dsn"]), size=1) as db:
        result = await db.run(run_job, work, *args)
    log.info("job %s: %s", name, result)
    return result


@app.periodic(cron="* * * * *")
@app.task(name="activate_pending", queueing_lock="activate_pending")
async def activate_pending(timestamp: int) -> object:
    return await _run("activate_pending", lifecycle.activate_pending, _at(timestamp))


@app.periodic(cron="* * * * *")
@app.task(name="expire_holds", queueing_lock="expire_holds")
async def expire_holds(timestamp: int) -> object:
    return await _run("expire_holds", lifecycle.expire_holds, _at(timestamp))


@app.periodic(cron="5 * * * *")
@app.task(name="expire_points", queueing_lock="expire_points")
async def expire_points(timestamp: int) -> object:
    return await _run("expire_points", lifecycle.expire_points, _at(timestamp))


@app.periodic(cron="*/10 * * * *")
@app.task(name="maintenance", queueing_lock="maintenance")
async def maintenance(timestamp: int) -> object:
    return await _run("maintenance", maintenance_pass, get_settings())


@app.periodic(cron="30 1 * * *")
@app.task(name="reevaluate_tiers", queueing_lock="reevaluate_tiers")
async def reevaluate_tiers(timestamp: int) -> object:
    return await _run("reevaluate_tiers", reevaluate_all, _at(timestamp))


@app.periodic(cron="20 * * * *")
@app.task(name="refresh_segments", queueing_lock="refresh_segments")
async def refresh_segments(timestamp: int) -> object:
    return await _run("refresh_segments", refresh_all, _at(timestamp))


async def _prepaid_alerts(conn: Any, _now: datetime) -> int:
    """The draw trigger flags a crossing inside the posting; mailing waits for this job,
    outside any posting's transaction. (`conn`: the job's connection, coalition/jobs.py.)"""
    return await send_low_balance_alerts(conn, Mailer(get_settings()))


@app.periodic(cron="* * * * *")
@app.task(name="prepaid_alerts", queueing_lock="prepaid_alerts")
async def prepaid_alerts(timestamp: int) -> object:
    return await _run("prepaid_alerts", _prepaid_alerts, _at(timestamp))


@app.periodic(cron="*/10 * * * *")
@app.task(name="approve_commissions", queueing_lock="approve_commissions")
async def approve_commissions(timestamp: int) -> object:
    return await _run("approve_commissions", approve_due, _at(timestamp))


@app.periodic(cron="10 2 1 * *")
@app.task(name="draft_settlement", queueing_lock="draft_settlement")
async def draft_settlement(timestamp: int) -> object:
    return await _run("draft_settlement", draft_previous_month, _at(timestamp))


async def _pay_affiliates(_conn: Any, now: datetime) -> dict[str, int]:
    """Payouts need the Stripe gateway, which works on a pool of its own."""
    settings = get_settings()
    async with open_database(DatabaseUrl(_database["dsn"])) as db:
        gateway = StripeGateway(StripeConfig.from_settings(settings), db.pool,
                                Mailer(settings))
        run = await run_payouts(gateway, now=now)
    return {s: len(run.by_status(s)) for s in ("paid", "pending", "carried", "failed")}


@app.periodic(cron="40 3 * * *")
@app.task(name="pay_affiliates", queueing_lock="pay_affiliates")
async def pay_affiliates(timestamp: int) -> object:
    return await _run("pay_affiliates", _pay_affiliates, _at(timestamp))


@asynccontextmanager
async def opened(url: DatabaseUrl) -> AsyncIterator[procrastinate.App]:
    """The job app connected to this database (jobs use it for their own work too)."""
    _database["dsn"] = url.asyncpg_dsn
    connector = procrastinate.PsycopgConnector(conninfo=url.asyncpg_dsn, min_size=1,
                                               max_size=2)
    with app.replace_connector(connector):
        async with app.open_async():
            yield app


PERIODIC = {"activate_pending": lifecycle.activate_pending,
            "expire_holds": lifecycle.expire_holds,
            "expire_points": lifecycle.expire_points,
            "reevaluate_tiers": reevaluate_all,
            "refresh_segments": refresh_all,
            "prepaid_alerts": _prepaid_alerts,
            "pay_affiliates": _pay_affiliates,
            "approve_commissions": approve_due}


async def run_once(url: DatabaseUrl, now: datetime) -> dict[str, object]:
    """Every periodic job once, now, in this process (`coalition worker --once`)."""
    _database["dsn"] = url.asyncpg_dsn
    results: dict[str, object] = {}
    for name, work in PERIODIC.items():
        results[name] = await _run(name, work, now)
    results["maintenance"] = await _run("maintenance", maintenance_pass, get_settings())
    return results


async def run_worker(url: DatabaseUrl, *, wait: bool = True,
                     install_signal_handlers: bool = True) -> None:
    async with opened(url) as jobs:
        await jobs.run_worker_async(wait=wait, install_signal_handlers=install_signal_handlers,
                                    concurrency=2, delete_jobs="successful")
