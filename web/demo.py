"""The demo coalition loaded by `coalition run` on first start (PRODUCT.md, "Demo
coalition"): five Polish partners, named members with known balances, and six months of
purchases, returns, events and redemptions posted through the same functions as the API
(web/demo_history.py), ending with a checkout whose points are still held.

Each package seeds its part, each step a Tx of its own (tenants/demo.py: partners,
members, logins; web/demo_history.py: the history, tiers and segments; rewards,
affiliates, settlement); this module only runs them in order."""

from __future__ import annotations

import random
from datetime import datetime

from coalition import clock, demo
from coalition.affiliates.demo import seed_affiliates
from coalition.config import Settings
from coalition.db import DatabaseUrl
from coalition.resources import open_database
from coalition.rewards.demo import seed_rewards
from settlement.demo import pay_demo, seed_and_settle
from tenants.affiliate_signup import sign_up as sign_up_affiliate
from tenants.demo import DEMO_LOGINS, PARTNERS, demo_credentials, seed_accounts
from web.demo_history import load_history

__all__ = ["DEMO_LOGINS", "PARTNERS", "demo_credentials", "load_demo"]


async def load_demo(url: DatabaseUrl, *, now: datetime | None = None, seed: int = 2026,
                    extra_members: int = 40, stripe: Settings | None = None) -> list[dict]:
    """Load the demo coalition unless partners already exist; return the demo credentials.
    The history ends at the platform clock's reading, or at `now`: then the clock itself
    is moved there while the demo loads (and runs on from there), so what the loader
    back-dates and what the platform stamps along the way agree.
    `stripe`: settings pointing at a Stripe sandbox, through which the finalized months
    are collected, paid out and closed (settlement/demo.py `pay_demo`)."""
    if now is None:
        return await _load_demo(url, clock.now(), seed, extra_members, stripe)
    with clock.travel(now):
        return await _load_demo(url, now, seed, extra_members, stripe)


async def _load_demo(url: DatabaseUrl, now: datetime, seed: int, extra_members: int,
                     stripe: Settings | None) -> list[dict]:
    async with open_database(url) as db:
        if await db.run(demo.loaded):
            return demo_credentials()
        rng = random.Random(seed)
        partners, members, company = await db.run(seed_accounts, now, rng, extra_members)
        await db.run(load_history, partners, members, company, now, rng)
        await seed_rewards(db.pool, partners, members, now)
        # Affiliate programs at 5 %, 6 % and tiered, with clicks and commissions.
        await db.run(seed_affiliates, partners, now, rng, sign_up_affiliate)
        # Rate cards, the EUR rate and the prepaid hair salon; the history settled.
        periods = await db.run(seed_and_settle, partners, now)
        if stripe is not None:
            await pay_demo(db.pool, stripe, periods, now)
        await db.run(demo.open_checkout, partners, now)
    return demo_credentials()
