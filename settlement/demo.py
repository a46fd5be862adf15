"""Commercial terms of the demo coalition (PRODUCT.md, "Coalition economics").

Every demo partner pays 1.2 grosz for each point its customers earn and receives 1.0 grosz
for each point spent with it, plus a 2 % platform fee on issuance, monthly, in PLN, from
before the six months of demo history, so statements have a price for every lot. The
hair salon turns prepaid from `now`, after the history (whose back-dated postings
therefore draw nothing), with a paid block of 5,000 points and a second one awaiting
payment. An EUR rate is in the FX table for a partner that would settle in euros.

`settle_demo` then settles the history as the operator would: every complete month but
the last reviewed and finalized (forced, as nobody disputes in a demo), the last
complete month left as a draft to review in the console.

`pay_demo` then collects the finalized months through a Stripe *sandbox* (the local
localstripe server `coalition run` starts, settlement/stripe_sandbox.py; never real
Stripe): every partner has a test card; the hair salon is paid by SEPA credit transfer
and the others by Connect transfer. Partners who owe are invoiced and charged, partners
owed are paid, each month's SEPA file is exported and marked paid as the bank statement
would show, and the month is closed. Without a sandbox the statements stay `pending`."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from coalition.config import Settings
from coalition.settings import coalition_settings
from coalition.uow import Tx
from settlement import prepaid, runs, sepa
from settlement.collect import collect_run
from settlement.stripe_gateway import StripeConfig, StripeGateway
from settlement.terms import add_fx_rate, add_rate_card

CARD = {"issue_price": "1.2", "reimbursement": "1.0", "fee_percent": "2", "cycle": "monthly"}
PREPAID_SLUG = "salon"
SEPA_SLUG = "salon"
SEPA_ACCOUNT = ("Salon Fryzjerski Anna", "PL27114020040000300201355387", "BREXPLPW")


async def seed_terms(conn: asyncpg.Connection, partners: dict[str, uuid.UUID],
                     now: datetime) -> None:
    start = (now - timedelta(days=400)).replace(day=1, hour=0, minute=0, second=0,
                                                 microsecond=0)
    await add_fx_rate(conn, {"base": "PLN", "quote": "EUR", "rate": "0.2345",
                             "effective_from": start.date(), "source": "demo"})
    for partner_id in partners.values():
        # Back-dated like the demo's postings: `now` is the loader's start of history.
        await add_rate_card(conn, partner_id, {**CARD, "note": "Demo rate card"}, "demo",
                            now=start)
    salon = partners[PREPAID_SLUG]
    await add_rate_card(conn, salon, {
        **CARD, "billing": "prepaid", "credit_limit": 1000, "low_balance_alert": 1000,
        "note": "Prepaid from today: blocks of points bought in advance"}, "demo", now=now)
    block = await prepaid.request_block(conn, salon, 5000, "demo", now=now)
    await prepaid.credit_paid_block(conn, block.id, block.price, "manual:demo bank transfer")
    await prepaid.request_block(conn, salon, 2000, "demo", now=now)


def _next_month(label: str) -> str:
    year, month = map(int, label.split("-"))
    return f"{year + month // 12}-{month % 12 + 1:02d}"


async def settle_demo(conn: asyncpg.Connection, now: datetime) -> list[str]:
    """Finalize the complete months of the history before the last one; draft the last.
    Returns the periods touched, oldest first."""
    tz = (await coalition_settings(conn)).timezone
    last = runs.previous_period(now, tz)
    first = await conn.fetchval("SELECT min(occurred_at) FROM journal_entries")
    if first is None:
        return []
    period = first.astimezone(ZoneInfo(tz)).strftime("%Y-%m")
    done: list[str] = []
    while period < last:
        await runs.run_period(conn, period, "demo", now=now)
        await runs.start_review(conn, period, now=now)
        await runs.finalize(conn, period, "demo", now=now, force=True)
        done.append(period)
        period = _next_month(period)
    run = await runs.run_period(conn, last, "demo", now=now)
    if await conn.fetchval("SELECT count(*) FROM settlement_statements WHERE run_id = $1",
                           run["id"]):
        done.append(last)
    else:
        await runs.discard(conn, last)
    return done


async def pay_demo(pool: asyncpg.Pool, settings: Settings, periods: list[str],
                   now: datetime) -> None:
    """Collect, pay out and close the finalized `periods` through the Stripe sandbox
    `settings` point at (see the module docstring)."""
    gateway = StripeGateway(StripeConfig.from_settings(settings), pool)
    partners = dict(await pool.fetch("SELECT slug, id FROM partners"))
    for slug, partner_id in partners.items():
        if slug == SEPA_SLUG:
            holder, iban, bic = SEPA_ACCOUNT
            await pool.execute(
                "INSERT INTO partner_payout_details (partner_id, method, account_holder, iban,"
                " bic) VALUES ($1, 'sepa', $2, $3, $4)", partner_id, holder, iban, bic)
        else:
            await pool.execute(
                "INSERT INTO partner_payout_details (partner_id, method, stripe_account_id)"
                " VALUES ($1, 'stripe_connect', $2)", partner_id, f"acct_demo{slug}")
        await _test_card(gateway, await gateway.ensure_customer(partner_id))
    for period in periods:
        async with pool.acquire() as conn:
            if (await runs.get_run(conn, period))["status"] != "finalized":
                continue
        await collect_run(gateway, period)
        ready = [r["id"] for r in await pool.fetch(
            "SELECT p.id FROM settlement_payments p JOIN settlement_statements s"
            " ON p.reference_type = 'statement' AND p.reference_id = s.id::text"
            " JOIN settlement_runs r ON r.id = s.run_id"
            " WHERE r.period = $1 AND p.kind = 'sepa_credit' AND p.status = 'ready'", period)]
        if ready:
            await sepa.export_batch(pool, settings, ready, now.date(), "demo")
            for payment_id in ready:
                await sepa.mark(pool, payment_id, "paid")
        async with pool.acquire() as conn:
            await runs.close(conn, period, now=now)


async def _test_card(gateway: StripeGateway, customer: str) -> None:
    """Stripe's test card as the customer's default payment method (sandbox only)."""
    client = gateway.client("The demo's test cards")
    method = await client.v1.payment_methods.create_async(
        {"type": "card", "card": {"number": "4242424242424242", "exp_month": 12,
                                  "exp_year": 2034, "cvc": "123"}})
    await client.v1.payment_methods.attach_async(method.id, {"customer": customer})
    await client.v1.customers.update_async(
        customer, {"invoice_settings": {"default_payment_method": method.id}})


async def seed_and_settle(tx: Tx, partners: dict[str, uuid.UUID], now: datetime) -> list[str]:
    """Rate cards, the EUR rate and the prepaid hair salon, then the history settled:
    past months finalized, the last one a draft (`settle_demo`'s periods)."""
    await seed_terms(tx.conn, partners, now)
    return await settle_demo(tx.conn, now)
