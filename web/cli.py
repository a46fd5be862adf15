"""The `coalition` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from coalition import clock
from coalition.config import get_settings
from coalition.db import DatabaseUrl, resolve_database_url
from coalition.resources import open_database
from web.demo import DEMO_LOGINS

console = Console(stderr=True)
R = TypeVar("R")


def database_url() -> DatabaseUrl:
    """The configured database, or the embedded one (started if needed)."""
    settings = get_settings()
    url = resolve_database_url(settings.database_url, settings.data_dir)
    # Child code (the app, Alembic) must reach the same server without starting another.
    os.environ["COALITION_DATABASE_URL"] = url.raw
    get_settings.cache_clear()
    return url


def _run(use_case: Callable[..., Awaitable[R]], *args: Any, **kwargs: Any) -> R:
    """`use_case` in one Tx on the configured database (coalition/uow.py)."""
    url = database_url()

    async def go() -> R:
        async with open_database(url) as db:
            return await db.run(use_case, *args, **kwargs)

    return asyncio.run(go())


@click.group()
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING…")
def main(log_level: str | None) -> None:
    """Coalition: a multi-tenant coalition loyalty platform."""
    from web import logs

    logs.install()
    logging.basicConfig(level=(log_level or get_settings().log_level).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for quiet in ("alembic", "httpx", "stripe"):
        logging.getLogger(quiet).setLevel(logging.WARNING)


@main.command()
@click.option("--host", default=None, help="Interface to bind (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default 8000).")
def run(host: str | None, port: int | None) -> None:
    """Set up everything and serve: database, migrations, demo data on first start."""
    from web.demo import load_demo

    url = database_url()
    _upgrade(url)
    _refuse_unless_checked(url)
    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    sandbox = _start_stripe_sandbox(f"http://{host}:{port}")
    credentials = asyncio.run(load_demo(url, stripe=get_settings() if sandbox else None))
    _print_welcome(f"http://{host}:{port}", credentials)
    if sandbox:
        click.echo(f"Payments go to a local Stripe sandbox (localstripe) at {sandbox}; its"
                   " webhooks come back to /webhooks/stripe.\n")
    # The background jobs (pending points, expiry, holds) run inside the server process.
    os.environ["COALITION_IN_PROCESS_WORKER"] = "1"
    get_settings.cache_clear()
    _serve(host, port)


@main.command()
@click.option("--host", default=None, help="Interface to bind (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default 8000).")
@click.option("--access-log/--no-access-log", default=False)
@click.option("--workers", default=1, show_default=True,
              help="Server processes; each keeps its own pools and token cache.")
def serve(host: str | None, port: int | None, access_log: bool, workers: int) -> None:
    """Serve the HTTP API and portal (migrations must be applied, `db check` clean)."""
    _refuse_unless_checked(database_url())
    settings = get_settings()
    _serve(host or settings.host, port or settings.port, access_log, workers)


def _serve(host: str, port: int, access_log: bool = False, workers: int = 1) -> None:
    """uvicorn with the configured limits: an idle keep-alive connection is closed after
    COALITION_KEEPALIVE_SECONDS, and past COALITION_MAX_CONCURRENCY connections or requests
    a process answers 503 instead of letting idle or slow clients hold it without bound."""
    import uvicorn

    settings = get_settings()
    # Forwarded headers only from COALITION_TRUSTED_PROXIES: uvicorn's default believes
    # any connection from loopback, so anything on the host could pick its address.
    trusted = [part.strip() for part in settings.trusted_proxies.split(",") if part.strip()]
    uvicorn.run("web.app:create_app", factory=True, host=host, port=port, workers=workers,
                proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None,
                access_log=access_log, log_level=settings.log_level.lower(),
                timeout_keep_alive=settings.keepalive_seconds,
                limit_concurrency=settings.max_concurrency)


@main.command()
@click.option("--once", is_flag=True, help="Run every periodic job once, now, and exit.")
def worker(once: bool) -> None:
    """Run background and periodic jobs (procrastinate); several workers may run at once."""

    from web.jobs import run_once, run_worker

    url = database_url()
    if once:
        console.print(asyncio.run(run_once(url, clock.now())))
        return
    asyncio.run(run_worker(url))


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations."""
    _upgrade(database_url(), revision)
    console.print(f"database at revision {revision}")


def _upgrade(url: DatabaseUrl, revision: str = "head") -> None:
    from coalition.migrate import upgrade

    upgrade(url, revision)


def _print_problems(problems: list, err: bool = False) -> None:
    from coalition.dbcheck import fixes

    for problem in problems:
        click.echo(f"  {problem}", err=err)
    for fix in fixes(problems):
        click.echo(f"To fix: {fix}.", err=err)


@db.command("check")
def db_check() -> None:
    """Compare roles, grants, row-level security, SQL functions, triggers and the version
    with what the migrations create; exit 1 naming each difference (README, "Backup and
    restore")."""
    from coalition.dbcheck import check_database

    result = asyncio.run(check_database(database_url()))
    if result.problems:
        _print_problems(result.problems)
        click.echo(f"db check: {len(result.problems)} problems", err=True)
        sys.exit(1)
    click.echo(f"db check: clean ({result.summary})")


@db.command("repair-roles")
def db_repair_roles() -> None:
    """Create missing tenant roles and memberships, re-grant, re-create row-level security
    policies and flags as the migrations make them; then check. Safe to repeat."""
    from coalition.dbcheck import repair_roles

    result = asyncio.run(repair_roles(database_url()))
    for action in result.actions:
        click.echo(action)
    if result.check.problems:
        _print_problems(result.check.problems)
        click.echo(f"db repair-roles: {len(result.actions)} changes; still"
                   f" {len(result.check.problems)} problems", err=True)
        sys.exit(1)
    click.echo(f"db repair-roles: {len(result.actions)} changes; db check: clean"
               f" ({result.check.summary})")


def _refuse_unless_checked(url: DatabaseUrl) -> None:
    """A database that lost its tenant roles, grants or policies (a restore without the
    global roles loses them all, and `db upgrade` sees nothing to do) fails every partner
    request at best and lets partners see each other at worst: refuse to serve it, and say
    what is wrong and how to fix it."""
    from coalition.dbcheck import check_database

    result = asyncio.run(check_database(url))
    if result.problems:
        click.echo(f"coalition: not starting, the database is not what the migrations make"
                   f" it ({len(result.problems)} problems; `coalition db check` lists them"
                   " again):", err=True)
        _print_problems(result.problems, err=True)
        sys.exit(1)


@main.group()
def demo() -> None:
    """The demo coalition."""


@demo.command("load")
def demo_load() -> None:
    """Load the demo coalition (partners, members, months of history) if the database is empty."""
    from web.demo import load_demo

    url = database_url()
    credentials = asyncio.run(load_demo(url))
    _print_welcome(None, credentials)


def _start_stripe_sandbox(address: str) -> str | None:
    """With no Stripe key configured, start the local Stripe sandbox for this process
    and point the settings at it; its state is kept in the data folder."""
    import atexit

    from settlement import stripe_sandbox

    settings = get_settings()
    if settings.stripe_secret_key or not settings.stripe_sandbox:
        return None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sandbox = stripe_sandbox.start(store=settings.data_dir / "stripe-sandbox.pickle",
                                   log=settings.data_dir / "stripe-sandbox.log")
    atexit.register(sandbox.stop)
    stripe_sandbox.deliver_webhooks(sandbox.url, f"{address}/webhooks/stripe")
    defaults = {"STRIPE_SECRET_KEY": stripe_sandbox.SANDBOX_KEY,
                "STRIPE_API_BASE": sandbox.url,
                "STRIPE_WEBHOOK_SECRET": stripe_sandbox.SANDBOX_WEBHOOK_SECRET,
                # The operator's (fictitious) account the demo's SEPA payouts leave from.
                "SEPA_DEBTOR_NAME": "Coalition Operator Sp. z o.o.",
                "SEPA_DEBTOR_IBAN": "PL61109010140000071219812874",
                "SEPA_DEBTOR_BIC": "WBKPPLPP"}
    for name, value in defaults.items():
        if not os.environ.get(f"COALITION_{name}"):
            os.environ[f"COALITION_{name}"] = value
    get_settings.cache_clear()
    return sandbox.url


def _print_welcome(address: str | None, credentials: list[dict]) -> None:
    if address:
        click.echo(f"\nCoalition is starting on {address}")
        click.echo(f"  API docs: {address}/schema   health: {address}/health")
    click.echo("\nDemo partner API credentials (client_credentials grant at /oauth/token):")
    for item in credentials:
        click.echo(f"  {item['name']:<26} client_id={item['client_id']:<16} "
                   f"client_secret={item['client_secret']}")
    click.echo("\nDemo portal logins (http://…/login):")
    for email, password, what in DEMO_LOGINS:
        click.echo(f"  {what:<26} {email:<34} password {password}")
    if address and credentials:
        first = credentials[0]
        click.echo(f"\n  Try: curl -s -u {first['client_id']}:{first['client_secret']} "
                   f"-d grant_type=client_credentials {address}/oauth/token\n")


@main.group()
def partners() -> None:
    """Partner tenants."""


@partners.command("create")
@click.option("--name", required=True)
@click.option("--slug", default=None)
@click.option("--currency", default="PLN", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def partners_create(name: str, slug: str | None, currency: str, as_json: bool) -> None:
    """Create an active partner with a server OAuth client (all partner scopes)."""
    from coalition.errors import DomainError
    from tenants.provisioning import create_partner_with_client

    try:
        made = _run(create_partner_with_client, name, slug, currency)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from exc
    if as_json:
        click.echo(json.dumps({"partner_id": made.partner_id, "client_id": made.client_id,
                               "client_secret": made.client_secret}))
    else:
        click.echo(f"partner {made.slug} ({made.partner_id})\n"
                   f"client_id     {made.client_id}\n"
                   f"client_secret {made.client_secret}  (shown once)")


@main.group()
def operators() -> None:
    """Operator staff accounts."""


@operators.command("create")
@click.option("--email", required=True)
@click.option("--name", default=None)
@click.option("--password", default=None,
              help="At least 12 characters, not the email, hard to guess (zxcvbn score 3+);"
                   " prompted for when omitted.")
def operators_create(email: str, name: str | None, password: str | None) -> None:
    """Create an operator account (email verified, ready to log in)."""
    from coalition.errors import DomainError
    from tenants.provisioning import create_operator

    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        _run(create_operator, email, name, password)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(f"operator {email} created")


@main.group()
def oidc() -> None:
    """OpenID Connect signing keys."""


@oidc.command("rotate-key")
def oidc_rotate_key() -> None:
    """Start signing ID tokens with a new key now (keys also rotate every 30 days by
    themselves). The old key stays in the JWKS for 7 days, so issued tokens verify."""
    from tenants.keys import SecretBox, rotate_signing_key

    url = database_url()
    kid = rotate_signing_key(url, SecretBox(get_settings().resolved_secret_key()))
    click.echo(f"new signing key {kid}")


@main.group()
def ledger() -> None:
    """The points ledger."""


@ledger.command("verify")
def ledger_verify() -> None:
    """Recompute balances and lots from postings; exit 1 and list any difference."""
    from coalition.stats import ledger_counts
    from coalition.verify import verify

    async def check() -> tuple[list, dict]:
        async with open_database(database_url()) as db:
            counts = await db.run(ledger_counts)
            return await db.run(verify), counts

    found, counts = asyncio.run(check())
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    if found:
        for discrepancy in found:
            click.echo(str(discrepancy))
        click.echo(f"ledger verify: {len(found)} differences ({summary})", err=True)
        sys.exit(1)
    click.echo(f"ledger verify: clean ({summary})")


@main.group("import")
def import_() -> None:
    """Bulk data import."""


@import_.command("transactions")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--partner", "partner_slug", required=True, help="Slug of the issuing partner.")
@click.option("--chunk-size", default=10_000, show_default=True)
@click.option("--workers", default=4, show_default=True, help="Parallel database connections.")
def import_transactions_command(file: Path, partner_slug: str, chunk_size: int,
                                workers: int) -> None:
    """Post earnings from a CSV file. Bad rows are listed by line; good rows post.
    Exit status 0 when every row posted or was already imported, 2 when rows were rejected."""
    import time

    from coalition.importer import import_transactions

    async def go() -> object:
        columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("rows"), TimeRemainingColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("rows", total=None)

            def advance(done: int, total: int | None) -> None:
                if total is not None:
                    bar.update(task, total=total)
                bar.update(task, advance=done)

            return await import_transactions(database_url().asyncpg_dsn, partner_slug, file,
                                             chunk_size=chunk_size, workers=workers,
                                             progress=advance)

    started = time.perf_counter()
    try:
        report = asyncio.run(go())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    elapsed = time.perf_counter() - started
    for line, reason in report.errors:
        click.echo(f"line {line}: {reason}")
    rows = report.posted + report.skipped + report.rejected
    click.echo(f"{report.posted:,} posted ({report.points:,} points), {report.skipped:,} already "
               f"imported, {report.rejected:,} rejected; {rows:,} rows in {elapsed:.1f} s "
               f"({rows / elapsed if elapsed else 0:,.0f} rows/s)")
    if report.rejected:
        sys.exit(2)


@main.group()
def settle() -> None:
    """Settlement runs: statements per partner for a period (README "Settlement")."""


def _settle(use_case: Callable[..., Awaitable[R]], *args: Any, **kwargs: Any) -> R:
    """`use_case` in one Tx; a refusal is printed and exits 1."""
    from coalition.errors import DomainError

    try:
        return _run(use_case, *args, **kwargs)
    except DomainError as exc:
        click.echo(f"settle: {exc.detail}", err=True)
        sys.exit(1)


def _print_run(run) -> None:
    click.echo(f"{run['period']} ({run['cycle']}): {run['status']}"
               + (f", hash {run['content_hash'][:16]}…" if run["content_hash"] else ""))
    if run["skipped_partners"]:
        click.echo("  not settled (no rate card): " + ", ".join(run["skipped_partners"]))


@settle.command("run")
@click.option("--period", required=True, help="2026-10 (monthly) or 2026-W43 (weekly).")
@click.option("--dispute-window-days", type=int, default=None)
def settle_run(period: str, dispute_window_days: int | None) -> None:
    """Create the period's draft run, or re-run it, and print its statements."""
    from settlement.commands import run_period

    report = _settle(run_period, period, "cli", dispute_window_days=dispute_window_days)
    _print_run(report.run)
    for s in report.statements:
        click.echo(f"  {s['partner_slug']:<24} {s['line_count']:>3} lines"
                   f" net {s['net']:>14} {s['currency']}")
    for n in report.netting:
        click.echo(f"  operator net {n['operator_net']} {n['currency']}: partners pay"
                   f" {n['collections']}, are paid {n['payouts']}")


def _lifecycle_command(name: str, doc: str) -> None:
    @settle.command(name, help=doc)
    @click.option("--period", required=True)
    @click.option("--force", is_flag=True, help="finalize: before the dispute window ends.")
    def command(period: str, force: bool) -> None:
        from settlement.commands import move_run

        run = _settle(move_run, name, period, "cli", force=force)
        if run is None:
            click.echo(f"{period}: draft discarded")
        else:
            _print_run(run)


for _name, _doc in (("review", "Show the draft to partners; the dispute window opens."),
                    ("reopen", "Back from review to draft (to re-run it)."),
                    ("finalize", "Freeze the run and store its content hash."),
                    ("close", "Close a finalized run once every statement is settled."),
                    ("discard", "Delete a draft run; its entries become unclaimed again.")):
    _lifecycle_command(_name, _doc)


@settle.command("verify")
@click.option("--period", required=True)
def settle_verify(period: str) -> None:
    """Check the run's content hash and statement totals; exit 1 on any difference."""
    from settlement.commands import verify_period

    problems = _settle(verify_period, period)
    for problem in problems:
        click.echo(problem)
    if problems:
        sys.exit(1)
    click.echo(f"{period}: statements match their lines and stored hash")


@settle.command("collect")
@click.option("--period", required=True)
@click.option("--send", is_flag=True,
              help="Email the invoices instead of charging the saved payment method.")
def settle_collect(period: str, send: bool) -> None:
    """Invoice the partners who owe, pay (Stripe Connect or SEPA) those owed: a finalized
    run. Safe to repeat: payments are keyed by statement and never made twice."""
    from coalition.errors import DomainError
    from settlement.collect import collect_run
    from settlement.stripe_gateway import StripeConfig, StripeGateway
    from tenants.mail import Mailer

    async def go() -> None:
        settings = get_settings()
        async with open_database(database_url()) as db:
            gateway = StripeGateway(StripeConfig.from_settings(settings), db.pool,
                                    Mailer(settings))
            done = await collect_run(gateway, period, collection=("send_invoice" if send
                                                                  else "charge_automatically"))
        click.echo(f"{period}: {len(done.invoiced)} invoiced, {len(done.paid_out)} paid out,"
                   f" {done.nothing_due} with nothing due")
        for failure in done.failed:
            click.echo(f"  not collected: {failure}", err=True)
        if done.failed:
            sys.exit(1)

    try:
        asyncio.run(go())
    except DomainError as exc:
        click.echo(f"settle: {exc.detail}", err=True)
        sys.exit(1)


@settle.command("reconcile")
@click.option("--period", required=True)
def settle_reconcile(period: str) -> None:
    """Reconcile the run with the ledger and the payments; exit 1 on any discrepancy."""
    from settlement.queries import reconciliation

    run, found = _settle(reconciliation, period)
    for d in found:
        click.echo(f"{d.kind:<26} {d.partner or '-':<20} statement {d.statement_id or '-'}:"
                   f" expected {d.expected}, actual {d.actual}. {d.cause}")
    if found:
        click.echo(f"{period}: {len(found)} discrepancy(ies)")
        sys.exit(1)
    click.echo(f"{period} ({run['status']}): ledger, statements and payments agree")


@main.group()
def affiliates() -> None:
    """Affiliate programs: payouts of approved commissions."""


@affiliates.command("payout")
@click.option("--dry-run", is_flag=True, help="Show what would be paid; change nothing.")
def affiliates_payout(dry_run: bool) -> None:
    """Pay every enrollment whose approved commissions, net of clawbacks, reach the
    program's minimum payout (Stripe Connect, SEPA credit or points). Safe to repeat."""
    from settlement.affiliate_payouts import run_payouts
    from settlement.stripe_gateway import StripeConfig, StripeGateway
    from tenants.mail import Mailer

    async def go():
        settings = get_settings()
        async with open_database(database_url()) as db:
            gateway = StripeGateway(StripeConfig.from_settings(settings), db.pool,
                                    Mailer(settings))
            return await run_payouts(gateway, dry_run=dry_run)

    done = asyncio.run(go())
    for o in done.outcomes:
        what = f"payout #{o.payout_id}" if o.payout_id else o.status
        click.echo(f"{o.affiliate or o.enrollment_id} / {o.program}: net {o.net} {o.currency}"
                   f" -> {what} ({o.status}{', ' + o.reason if o.reason else ''})")
    counts = {s: len(done.by_status(s)) for s in ("would_pay", "paid", "pending", "carried",
                                                   "failed")}
    click.echo(("dry run: " if dry_run else "") + ", ".join(
        f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n or s != "would_pay"))
    if counts["failed"]:
        sys.exit(1)
