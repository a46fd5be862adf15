"""The demo coalition's earning rules and campaign calendar (called by tenants/demo.py)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from coalition.rules.service import create_rule
from coalition.rules.validation import RuleSpec
from coalition.settings import coalition_settings


def _month(year: int, month: int, tz: ZoneInfo) -> tuple[datetime, datetime]:
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=tz)
    return datetime(year, month, 1, tzinfo=tz), end


async def seed_rules(session: AsyncSession, partners: dict[str, uuid.UUID],
                     now: datetime) -> None:
    """Every partner earns 1 pt per 1 PLN (Hurtownia Budowlana 10 pts per full 100 PLN);
    Moda Centrum adds a 50 PLN minimum and +30 above 200 PLN; the coalition runs the
    event, referral and VIP rules and this year's campaign calendar."""
    for slug, partner_id in partners.items():
        base = (RuleSpec("10 pts per 100 PLN", "per_amount", {"points": 10, "per": 10_000},
                         priority=10) if slug == "hurtownia" else
                RuleSpec("1 pt per 1 PLN", "per_amount", {"points": 1, "per": 100},
                         priority=10))
        await create_rule(session, partner_id, base.checked(), None)
    moda = partners["moda"]
    await create_rule(session, moda, RuleSpec("Minimum spend 50 PLN", "min_spend",
                                              {"amount": 5_000}, priority=0).checked(), None)
    await create_rule(session, moda, RuleSpec("Order above 200 PLN: +30", "threshold_bonus",
                                              {"above": 20_000, "points": 30},
                                              priority=20).checked(), None)
    # The session's own connection: the settings row as this transaction sees it.
    raw = await (await session.connection()).get_raw_connection()
    tz = (await coalition_settings(raw.driver_connection)).zone
    year = now.astimezone(tz).year
    july, april, november, january = (_month(year, m, tz) for m in (7, 4, 11, 1))
    await create_rule(session, partners["hurtownia"], RuleSpec(
        "July: triple points on selected products", "product",
        {"skus": ["FARBA-10L", "KLEJ-25KG"], "categories": ["narzedzia"],
         "mode": "multiplier", "multiplier": "3"}, priority=30, starts_at=july[0],
        ends_at=july[1]).checked(), None)
    coalition = [
        RuleSpec("Sign-up bonus", "event", {"event_type": "signup", "points": 50,
                                            "frequency": "once"}),
        RuleSpec("Webinar or event attendance", "event",
                 {"event_type": "webinar", "points": 20, "frequency": "unlimited"}),
        RuleSpec("Survey completed", "event",
                 {"event_type": "survey", "points": 30, "frequency": "unlimited"},
                 per_member_month_cap=90),
        RuleSpec("Birthday", "event", {"event_type": "birthday", "points": 100,
                                       "frequency": "yearly"}),
        RuleSpec("Refer a friend", "referral", {"points": 100, "welcome_points": 50,
                                                 "min_amount": 5_000, "monthly_limit": 10}),
        RuleSpec("VIP x1.5", "multiplier", {"multiplier": "1.5"}, tiers=("vip",),
                 priority=900),
        RuleSpec("January cashback for regular customers", "cashback", {"basis_points": 200},
                 priority=500, starts_at=january[0], ends_at=january[1],
                 per_member_month_cap=2_000),
        RuleSpec("Spring campaign: double points", "multiplier", {"multiplier": "2"},
                 priority=800, starts_at=april[0], ends_at=april[1], per_order_cap=500),
        RuleSpec("Pre-holiday campaign: +50 above 300 PLN", "threshold_bonus",
                 {"above": 30_000, "points": 50}, priority=500, starts_at=november[0],
                 ends_at=november[1], budget=100_000),
    ]
    for spec in coalition:
        await create_rule(session, None,
                          dataclasses.replace(spec, funding="coalition").checked(), None)
