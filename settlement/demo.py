"""Commercial terms of the demo coalition (PRODUCT.md, "Coalition economics").

Every demo partner pays 1.2 grosz for each point its customers earn and receives 1.0 grosz
for each point spent with it, plus a 2 % platform fee on issuance, monthly, in PLN, from
before the six months of demo history, so statements have a price for every lot. The
hair salon turns prepaid from `now`, after the history (whose back-dated postings
therefore draw nothing), with a paid block of 5,000 points and a second one awaiting
payment. An EUR rate is in the FX table for a partner that would settle in euros.

`settle_demo` then settles the history as the operator would: every complete month but
the last reviewed and finalized (forced, as nobody disputes in a demo), the last
complete month left as a draft to review in the console. No payment is collected: the
statements stay `pending` (Stripe is not configured in the demo)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from settlement import prepaid, runs
from settlement.terms import add_fx_rate, add_rate_card

CARD = {"issue_price": "1.2", "reimbursement": "1.0", "fee_percent": "2", "cycle": "monthly"}
PREPAID_SLUG = "salon"


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
    tz = await conn.fetchval("SELECT timezone FROM coalition_settings WHERE id = 1")
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
