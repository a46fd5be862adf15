"""The demo coalition loaded on the days a calendar makes awkward: month and year ends,
29 February, both summer-time changes in Europe/Warsaw (02:30 that does not exist, and
02:30 that happens twice), Christmas Eve and New Year's Eve a minute before midnight.

For each instant the platform's clock (coalition/clock.py) is moved there, the demo is
loaded as the portal tests load it (tests/portal_demo.py), and then:
- Jan Kowalski, Maria Nowak and Krzysztof Wiśniewski hold the balances PRODUCT.md
  promises (150, 200, 95);
- `coalition ledger verify` finds nothing;
- the last closed month (in the coalition's time zone) has its run, every entry before
  its end is claimed by a run, and every run reconciles with the ledger;
- the states the portal form tests build on the demo (tests/portal_states.py) can be
  built: the draft to review and dispute, a fraud-held commission, vouchers at the till,
  a bank file, a connected app.

The instants share one migrated template database; each gets a copy of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from asgi_lifespan import LifespanManager
from click.testing import CliRunner

from coalition import clock
from coalition.config import Settings
from coalition.db import DatabaseUrl, drop_database
from coalition.verify import verify_ledger
from settlement import runs
from settlement.reconcile import reconcile
from tests.helpers import migrated_database
from tests.portal_demo import Demo, prepare_demo
from tests.portal_states import set_up
from web.app import create_app
from web.cli import main as cli
from web.demo_history import JAN, KRZYSZTOF, MARIA

pytestmark = pytest.mark.slow

WARSAW = ZoneInfo("Europe/Warsaw")
INSTANTS = [
    "2027-01-01T00:30+01:00",   # half an hour into a new year (still 31 December in UTC)
    "2027-01-31T23:59+01:00",   # a minute before February (already 22:59 UTC)
    "2028-02-28T12:00+01:00",
    "2028-02-29T12:00+01:00",   # a leap day
    "2027-03-28T01:30+01:00",   # half an hour before the clocks go forward
    "2027-03-28T03:30+02:00",   # an hour after: 02:30 did not exist that night
    "2027-10-31T02:30+02:00",   # the first 02:30 of the night the clocks go back...
    "2027-10-31T02:30+01:00",   # ...and the second
    "2027-06-30T12:00+02:00",
    "2027-09-30T23:59+02:00",
    "2027-11-01T00:00+01:00",   # midnight exactly: a month that has only begun
    "2027-11-30T23:59+01:00",
    "2027-12-24T23:59+01:00",
    "2027-12-31T23:59+01:00",
]
PROMISED = {JAN: 150, MARIA: 200, KRZYSZTOF: 95}
LEDGER_KINDS = ("hash_mismatch", "statement_total_mismatch", "ledger_changed")


@pytest.fixture(scope="module")
def calendar_template(server_url: DatabaseUrl) -> Iterator[DatabaseUrl]:
    """Migrated once; every instant loads the demo into a copy of it."""
    with migrated_database(server_url, "coalition_calendar") as url:
        yield url


async def _copy(template: DatabaseUrl) -> DatabaseUrl:
    url = template.with_database(f"coalition_calendar_{uuid.uuid4().hex[:8]}")
    admin = await asyncpg.connect(url.with_database("postgres").asyncpg_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{url.database}" TEMPLATE "{template.database}"')
    finally:
        await admin.close()
    return url


@pytest.mark.parametrize("instant", INSTANTS)
async def test_the_demo_holds_on_awkward_days(instant: str, calendar_template: DatabaseUrl,
                                               settings: Settings) -> None:
    moment = clock.parse_instant(instant)
    url = await _copy(calendar_template)
    try:
        with clock.travel(moment):
            app = create_app(settings.model_copy(update={"database_url": url.raw}), url)
            async with LifespanManager(app):
                await prepare_demo(url, app)
                conn = await asyncpg.connect(url.asyncpg_dsn)
                try:
                    await _check_balances_ledger_and_statements(conn, moment)
                finally:
                    await conn.close()
                await set_up(Demo(app, url))
                assert await asyncio.to_thread(_cli_verify, url) == 0
    finally:
        await drop_database(url)


async def _check_balances_ledger_and_statements(conn: asyncpg.Connection, moment) -> None:
    balances = dict(await conn.fetch(
        "SELECT m.email, a.balance FROM members m JOIN accounts a ON a.member_id = m.id"
        " WHERE m.email = ANY($1::text[])", list(PROMISED)))
    assert balances == PROMISED

    assert [(p.check, p.detail) for p in await verify_ledger(conn)] == []

    last = runs.previous_period(moment, "Europe/Warsaw")
    period = runs.parse_period(last, "Europe/Warsaw")
    assert moment.astimezone(WARSAW) >= period.end > period.start
    run = await conn.fetchrow("SELECT id, status FROM settlement_runs WHERE period = $1",
                              last)
    assert run is not None, f"no settlement run for {last}, the last closed month"
    assert run["status"] == "draft", "the demo leaves the last closed month as a draft"
    unclaimed = await conn.fetchval(
        "SELECT count(*) FROM journal_entries e WHERE e.occurred_at < $1"
        " AND NOT EXISTS (SELECT 1 FROM settlement_entries s WHERE s.entry_id = e.id)",
        period.end)
    assert unclaimed == 0, f"{unclaimed} entries before {period.end} are in no statement"
    claimed_late = await conn.fetchval(
        "SELECT count(*) FROM settlement_entries s JOIN journal_entries e ON e.id = s.entry_id"
        " JOIN settlement_runs r ON r.id = s.run_id"
        " WHERE e.occurred_at >= r.period_end")
    assert claimed_late == 0, "a run claimed entries from after its period"
    # Run, statements and ledger agree; the money is not asked after: the portal demo
    # runs without a Stripe sandbox, so its finalized months are left unpaid.
    for run_id, label in await conn.fetch("SELECT id, period FROM settlement_runs"
                                          " ORDER BY period"):
        found = [d for d in await reconcile(conn, run_id) if d.kind in LEDGER_KINDS]
        assert found == [], (label, [d.as_dict() for d in found])


def _cli_verify(url: DatabaseUrl) -> int:
    """`coalition ledger verify` as an operator runs it."""
    result = CliRunner().invoke(cli, ["ledger", "verify"],
                                env={"COALITION_DATABASE_URL": url.raw})
    assert result.exit_code == 0, result.output
    return result.exit_code
