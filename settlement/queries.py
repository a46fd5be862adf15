"""What the consoles and the partner API show of settlement: rate cards, FX rates,
prepaid blocks, statements and runs, payments, reconciliation and liability. Each
takes the Tx first; a partner's own reads use the Tx's partner (run them scoped where
the page relies on row-level security)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from coalition import clock
from coalition.errors import NotFound
from coalition.settings import coalition_settings
from coalition.uow import Tx

from . import liability, payout_details, prepaid, reconcile, runs
from . import statements as service
from .terms import FxRate, Terms, fx_rates, terms_at, terms_history


def _own(tx: Tx) -> uuid.UUID:
    if tx.partner_id is None:
        raise ValueError("a partner's own settlement: act for the partner")
    return tx.partner_id


# Rate cards, FX rates and prepaid blocks.

@dataclass(frozen=True)
class RateCards:
    partner: asyncpg.Record
    history: list[Terms]
    currency: str


async def rate_card_partners(tx: Tx) -> list[asyncpg.Record]:
    """Every partner with its rate card in force and how many it has."""
    return await tx.conn.fetch(
        "SELECT p.id, p.name, p.status, t.issue_price, t.reimbursement, t.fee_percent,"
        " t.billing, t.currency, t.effective_from,"
        " (SELECT count(*) FROM settlement_terms s WHERE s.partner_id = p.id) AS cards"
        " FROM partners p LEFT JOIN LATERAL (SELECT * FROM settlement_terms s"
        "  WHERE s.partner_id = p.id AND s.effective_from <= now()"
        "  ORDER BY s.effective_from DESC LIMIT 1) t ON true ORDER BY p.name")


async def rate_cards(tx: Tx, partner_id: uuid.UUID) -> RateCards:
    """A partner's rate card history (NotFound for no such partner)."""
    partner = await tx.conn.fetchrow("SELECT id, name FROM partners WHERE id = $1", partner_id)
    if partner is None:
        raise NotFound("partner-not-found", "No such partner", "No such partner.")
    return RateCards(partner, await terms_history(tx.conn, partner_id),
                     (await coalition_settings(tx.conn)).currency)


async def own_rate_cards(tx: Tx) -> tuple[list[Terms], str]:
    """The Tx's partner's rate cards, latest first, and the coalition currency."""
    return (await terms_history(tx.conn, _own(tx)),
            (await coalition_settings(tx.conn)).currency)


async def fx_table(tx: Tx) -> tuple[list[FxRate], str]:
    return await fx_rates(tx.conn), (await coalition_settings(tx.conn)).currency


async def prepaid_overview(tx: Tx) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """Every partner's prepaid balance (with its rate card's limits) and every block."""
    balances = await tx.conn.fetch(
        "SELECT b.*, p.name, t.credit_limit, t.low_balance_alert, t.billing"
        " FROM prepaid_balances b JOIN partners p ON p.id = b.partner_id"
        " LEFT JOIN LATERAL settlement_terms_at(b.partner_id, now()) t ON true"
        " ORDER BY p.name")
    return balances, await prepaid.blocks(tx.conn)


async def _own_blocks(tx: Tx) -> list[asyncpg.Record]:
    return await tx.conn.fetch("SELECT * FROM prepaid_blocks WHERE partner_id = $1"
                               " ORDER BY id DESC", _own(tx))


async def own_prepaid(tx: Tx) -> tuple[prepaid.Balance | None, list[asyncpg.Record]]:
    """The Tx's partner's prepaid balance (None: never prepaid) and blocks, newest first."""
    return await prepaid.balance(tx.conn, _own(tx)), await _own_blocks(tx)


@dataclass(frozen=True)
class OwnTerms:
    current: Terms | None
    history: list[Terms]
    balance: prepaid.Balance | None
    blocks: list[asyncpg.Record]     # listed only with a balance


async def own_terms(tx: Tx) -> OwnTerms:
    partner_id = _own(tx)
    balance = await prepaid.balance(tx.conn, partner_id)
    return OwnTerms(await terms_at(tx.conn, partner_id),
                    await terms_history(tx.conn, partner_id), balance,
                    await _own_blocks(tx) if balance else [])


async def own_block(tx: Tx, block_id: int) -> asyncpg.Record | None:
    return await tx.conn.fetchrow("SELECT * FROM prepaid_blocks WHERE id = $1"
                                  " AND partner_id = $2", block_id, _own(tx))


async def block_to_invoice(tx: Tx, block_id: int) -> prepaid.Block | None:
    return await prepaid.get_block(tx.conn, block_id, _own(tx))


# Statements and runs.

async def own_statements(tx: Tx) -> list[asyncpg.Record]:
    """The Tx's partner's statements of runs in review or later."""
    return await service.list_statements(tx.conn, _own(tx))


async def own_statements_checked(tx: Tx) -> tuple[list[asyncpg.Record], dict[int, str]]:
    """`own_statements` and, per run, ok | mismatch | not_finalized."""
    rows = await own_statements(tx)
    found: dict[int, str] = {}
    for row in rows:
        run_id = row["run_id"]
        if run_id in found:
            continue
        if row["run_status"] in ("in_review", "draft"):
            found[run_id] = "not_finalized"
        else:
            found[run_id] = "mismatch" if await runs.verify(tx.conn, run_id) else "ok"
    return rows, found


async def statement_visible(tx: Tx, statement_id: int) -> bool:
    """Whether the statement shows through the Tx (scoped: row-level security's wall)."""
    return bool(await tx.conn.fetchval("SELECT 1 FROM settlement_statements WHERE id = $1",
                                       statement_id))


async def own_statement(tx: Tx, statement_id: int, *, flows: bool = False) -> dict:
    """A statement of the Tx's partner with its lines, disputes and integrity (and its
    own row and column of the flow matrix with `flows`); NotFound otherwise."""
    partner_id = _own(tx)
    found = await service.get_statement(tx.conn, statement_id, partner_id)
    if flows:
        found["flows"] = await service.flow_matrix(tx.conn, found["statement"]["run_id"],
                                                   partner_id)
    return found


@dataclass(frozen=True)
class RunsOverview:
    runs: list[asyncpg.Record]
    currency: str
    suggested: str          # the last complete month, to draft


async def runs_overview(tx: Tx) -> RunsOverview:
    settings = await coalition_settings(tx.conn)
    return RunsOverview(await runs.list_runs(tx.conn), settings.currency,
                        runs.previous_period(clock.now(), settings.timezone))


async def all_runs(tx: Tx) -> list[asyncpg.Record]:
    return await runs.list_runs(tx.conn)


@dataclass(frozen=True)
class RunOverview:
    run: asyncpg.Record
    statements: list[asyncpg.Record]
    netting: list[dict]
    flows: list[asyncpg.Record]
    disputes: list[asyncpg.Record]
    problems: list[str]


async def run_overview(tx: Tx, run_id: int) -> RunOverview:
    """One run for the operator (NotFound for no such run)."""
    run = await runs.run_by_id(tx.conn, run_id)
    return RunOverview(run, await service.run_statements(tx.conn, run_id),
                       await service.netting(tx.conn, run_id),
                       await service.flow_matrix(tx.conn, run_id),
                       await service.run_disputes(tx.conn, run_id),
                       await runs.verify(tx.conn, run_id))


async def run_by_id(tx: Tx, run_id: int) -> asyncpg.Record:
    return await runs.run_by_id(tx.conn, run_id)


async def reconciliation(tx: Tx, period: str) -> tuple[asyncpg.Record, list[Any]]:
    """The period's run and its discrepancies (DomainError for a bad or unknown period)."""
    run = await runs.get_run(tx.conn, period)
    return run, await reconcile.reconcile(tx.conn, run["id"])


@dataclass(frozen=True)
class Liability:
    currency: str
    outstanding: list[liability.Outstanding]
    months: list[liability.Month]


async def liability_report(tx: Tx) -> Liability:
    return Liability(await liability.coalition_currency(tx.conn),
                     await liability.outstanding(tx.conn), await liability.months(tx.conn))


# Payments.

async def own_payments(tx: Tx) -> list[asyncpg.Record]:
    """The Tx's partner's payments for its API, newest first (at most 500)."""
    return await tx.conn.fetch(
        "SELECT id, kind, reference_type, reference_id, amount, currency, status,"
        " amount_paid, stripe_object_id, failure_reason, created_at, updated_at"
        " FROM settlement_payments WHERE partner_id = $1 ORDER BY id DESC LIMIT 500",
        _own(tx))


@dataclass(frozen=True)
class OwnPayouts:
    partner: asyncpg.Record
    details: dict[str, Any] | None
    payments: list[asyncpg.Record]


async def own_payouts(tx: Tx) -> OwnPayouts:
    """The partner console's payout page: the partner, its payout details, its last 100
    payments."""
    partner_id = _own(tx)
    partner = await tx.conn.fetchrow("SELECT id, name FROM partners WHERE id = $1",
                                     partner_id)
    payments = await tx.conn.fetch("SELECT * FROM settlement_payments WHERE partner_id = $1"
                                   " ORDER BY id DESC LIMIT 100", partner_id)
    return OwnPayouts(partner, await payout_details.load(await tx.session(), partner_id),
                      payments)


@dataclass(frozen=True)
class OperatorPayments:
    payments: list[asyncpg.Record]
    notifications: list[asyncpg.Record]      # not yet acknowledged
    ready: int                               # SEPA payouts waiting for a bank file


async def operator_payments(tx: Tx) -> OperatorPayments:
    payments = await tx.conn.fetch(
        "SELECT p.*, pr.name AS partner_name FROM settlement_payments p"
        " JOIN partners pr ON pr.id = p.partner_id ORDER BY p.id DESC LIMIT 200")
    notes = await tx.conn.fetch(
        "SELECT n.*, pr.name AS partner_name FROM operator_notifications n"
        " LEFT JOIN partners pr ON pr.id = n.partner_id WHERE acknowledged_at IS NULL"
        " ORDER BY n.id DESC")
    ready = await tx.conn.fetchval("SELECT count(*) FROM settlement_payments"
                                   " WHERE kind = 'sepa_credit' AND status = 'ready'")
    return OperatorPayments(payments, notes, ready)


async def sepa_payout(tx: Tx, payment_id: int) -> asyncpg.Record | None:
    """A SEPA payout with its partner's name (None: no such payout)."""
    return await tx.conn.fetchrow(
        "SELECT p.*, pr.name AS partner_name FROM settlement_payments p"
        " JOIN partners pr ON pr.id = p.partner_id WHERE p.id = $1"
        " AND p.kind = 'sepa_credit'", payment_id)
