"""The demo coalition's six months of history (web/demo.py), posted through the same
functions as the API: purchases by coalition/earning `purchase`, so the partners' and the
coalition's rules, with whichever campaign ran that day, decide every purchase's points
and its rule hits and breakdown are real; returns by the SQL `purchase_return`; events
(sign-up, webinar, survey, birthday) by `event`; redemptions by the ledger. Each posting
is back-dated to when it happened (`posted_at`, as the ledger allows the demo only) and
they are posted in that order, so caps, budgets and first purchases are as on the day.

Events take no `posted_at` (their entries are dated by `occurred_at` only, which is what
settlement reads). The named members' purchases are priced to give the balances the
product brief promises; one a campaign would change is moved a week earlier until none
does."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from coalition import demo, earning
from coalition.audience_demo import seed_birth_dates, seed_segments
from coalition.demo import JAN, KRZYSZTOF, MARIA, PENDING_DAYS, PENDING_SLUG
from coalition.earning import MemberRef, Order
from coalition.ledger import PostingRequest, post_return, redeem_on
from coalition.lifecycle import activate_pending
from coalition.settings import coalition_settings
from coalition.tiers.admin import seed_tiers
from coalition.uow import Actor, Tx
from web.demo_catalogue import basket, lines_of

__all__ = ["JAN", "KRZYSZTOF", "MARIA", "PENDING_DAYS", "PENDING_SLUG", "load_history"]
HISTORY_DAYS = 180
COMPANY_ORDERS = [  # the B2B company's wholesale orders at TechnoB2B: (days ago, lines)
    (150, (("MONITOR-24", 2), ("ROUTER-WIFI6", 1), ("MYSZ-BT", 1))),
    (75, (("TONER-HP", 5), ("MONITOR-24", 1), ("KABEL-HDMI-2M", 10))),
    (12, (("SSD-1TB", 2), ("KLAWIATURA-MECH", 2), ("MYSZ-BT", 1))),
]
Members = dict[str, tuple[uuid.UUID, list[str]]]


@dataclass
class History:
    tx: Tx
    partners: dict[str, uuid.UUID]
    members: Members
    now: datetime
    rng: random.Random
    steps: list[tuple[datetime, int, Callable[..., Awaitable[Any]], tuple]] = field(
        default_factory=list)
    first: dict[uuid.UUID, tuple[datetime, str]] = field(default_factory=dict)

    @property
    def conn(self) -> Any:
        """The Tx's connection (what the posting functions take)."""
        return self.tx.conn

    def at(self, days_ago: float) -> datetime:
        return self.now - timedelta(days=days_ago)

    def plan(self, when: datetime, action: Callable[..., Awaitable[Any]], *args: Any
             ) -> None:
        """`action(when, *args)`, in its turn when the history runs."""
        self.steps.append((when, len(self.steps), action, args))

    def plan_purchase(self, when: datetime, slug: str, member_id: uuid.UUID, order_id: str,
                      lines: list[dict]) -> None:
        """A purchase, remembered as the member's first (when, brand) if it is."""
        self.plan(when, self.buy, slug, member_id, order_id, lines)
        self.first[member_id] = min(self.first.get(member_id, (when, slug)), (when, slug))

    async def run(self) -> None:
        """Everything planned, in the order it happened; then the points whose return
        window has ended by now become available."""
        for when, _, action, args in sorted(self.steps, key=lambda step: step[:2]):
            await action(when, *args)
        self.steps.clear()
        await activate_pending(self.conn, self.now)

    async def as_of(self, when: datetime) -> None:
        """Pending points whose return window had ended by `when` become available, as
        the periodic job would have made them by then (a posting decides "pending" as
        of its own moment): every step calls this first."""
        await activate_pending(self.conn, when)

    async def buy(self, when: datetime, slug: str, member_id: uuid.UUID, order_id: str,
                  lines: list[dict]) -> dict:
        await self.as_of(when)
        order = Order(order_id, when, "PLN", sum(item["amount"] for item in lines), "store",
                      None, lines)
        result = await earning.purchase(
            Tx(self.conn, self.partners[slug], Actor("demo")),
            member=MemberRef(id=member_id), order=order, idempotency_key=None,
            request_hash=None, posted_at=when)
        if not result.ok:
            raise RuntimeError(f"demo purchase {order_id}: {result.body}")
        return result.json()

    async def give_back(self, when: datetime, slug: str, order_id: str,
                        lines: list[dict] | None = None) -> None:
        """A return of the whole order, or of `lines` ({sku, quantity})."""
        await self.as_of(when)
        result = await post_return(
            self.conn, partner_id=self.partners[slug], order_id=order_id, amount=None,
            lines=lines, actor="demo", posted_at=when)
        if not result.ok:
            raise RuntimeError(f"demo return on {order_id}: {result.body}")

    async def redeem(self, when: datetime, slug: str, member_id: uuid.UUID, points: int,
                     order_id: str) -> bool:
        """False when the member has too few points (the demo then skips it)."""
        await self.as_of(when)
        return (await redeem_on(self.conn, PostingRequest(
            partner_id=self.partners[slug], member_id=member_id, points=points, actor="demo",
            order_id=order_id, description="Demo reward", posted_at=when))).ok

    async def event(self, when: datetime, slug: str, member_id: uuid.UUID, event_type: str,
                    reference: str) -> None:
        await self.as_of(when)
        result = await earning.event(
            Tx(self.conn, self.partners[slug], Actor("demo")),
            member=MemberRef(id=member_id), event_type=event_type, reference=reference,
            occurred_at=when, idempotency_key=None, request_hash=None)
        if not result.ok:
            raise RuntimeError(f"demo {event_type} event: {result.body}")

    async def promised(self, slug: str, email: str, order_id: str,
                       items: tuple[tuple[str, int], ...], days_ago: float, points: int
                       ) -> datetime:
        """A named member's purchase that earns exactly `points`, a week earlier while
        the rules of its day (a campaign) would give another number; when it was made."""
        member_id, when, lines = self.members[email][0], self.at(days_ago), lines_of(
            slug, *items)
        for _ in range(20):
            order = Order(order_id, when, "PLN", sum(item["amount"] for item in lines),
                          "store", None, lines)
            priced = await earning.simulate(Tx(self.conn, self.partners[slug], Actor("demo")),
                                            member=MemberRef(id=member_id), order=order)
            if priced["points"] == points:
                await self.buy(when, slug, member_id, order_id, lines)
                return when
            when -= timedelta(days=7)
        raise RuntimeError(f"no day without a campaign for demo order {order_id}")


async def load_history(tx: Tx, partners: dict[str, uuid.UUID], members: Members,
                       company: uuid.UUID, now: datetime, rng: random.Random) -> None:
    """The members' birth dates, the six months of history, then the tiers and segments
    over it (coalition/audience_demo.py), in one Tx: each posting's own transaction is a
    savepoint in it, so the history commits (and waits for its WAL flush) once, not once
    a posting."""
    await seed_birth_dates(tx.conn, now)
    await post_history(tx, partners, members, company, now, rng)
    await seed_tiers(tx.conn, now)
    await seed_segments(tx.conn, partners, now)


async def post_history(tx: Tx, partners: dict[str, uuid.UUID], members: Members,
                       company: uuid.UUID, now: datetime, rng: random.Random) -> None:
    history = History(tx, partners, members, now, rng)
    await _named(history)
    others = [email for email in members if email not in (JAN, MARIA, KRZYSZTOF)]
    _everyone_else(history, others)
    await _campaigns(history, others)
    for n, (days_ago, items) in enumerate(COMPANY_ORDERS):
        history.plan(history.at(days_ago), history.buy, "b2b", company,
                     f"TB-K-{n + 1:03d}", lines_of("b2b", *items))
    await _events(history, others)
    await history.run()
    await _reward_weekends(history, others)


async def _named(history: History) -> None:
    """The balances the product brief promises: Jan 150, Maria 200, Krzysztof 95."""
    members, at = history.members, history.at
    jan, maria, krzysztof = (members[email][0] for email in (JAN, MARIA, KRZYSZTOF))
    await history.promised("hurtownia", JAN, "HB-5001",   # 1,200 PLN at 10 pts per 100
                           (("PANEL-DAB-M2", 20), ("KLEJ-25KG", 2), ("CEMENT-25KG", 1)),
                           110, 120)
    await history.promised("moda", JAN, "MC-7001", (("T-SHIRT-BASIC", 2),), 70, 80)
    await history.redeem(at(30), "salon", jan, 50, "SA-R-101")                  # Jan: 150
    await history.promised("moda", MARIA, "MC-7002",      # 220 PLN, +30 above 200 PLN
                           (("JEANSY-SLIM", 1), ("T-SHIRT-BASIC", 2)), 140, 250)
    bought = await history.promised("akcesoria", MARIA, "AN-3001", (("BRELOK-SKORA", 2),),
                                    100, 60)
    await history.give_back(bought + timedelta(days=5), "akcesoria", "AN-3001",
                            [{"sku": "BRELOK-SKORA", "quantity": 1}])          # half back
    await history.redeem(at(45), "akcesoria", maria, 80, "AN-R-201")          # Maria: 200
    await history.promised("b2b", KRZYSZTOF, "TB-9001",
                           (("MYSZ-BT", 1), ("KABEL-HDMI-2M", 1)), 120, 95)
    await history.promised("salon", KRZYSZTOF, "SA-1001", (("STRZYZENIE-MESKIE", 1),),
                           60, 40)
    await history.redeem(at(20), "salon", krzysztof, 40, "SA-R-102")      # Krzysztof: 95


def _everyone_else(history: History, others: list[str]) -> None:
    """Purchases over six months, some returned (whole, or one line) within ten days,
    rewards redeemed in the last two months, and recent purchases at the brand with a
    return window."""
    rng, members = history.rng, history.members

    def purchase(email: str, slug: str, days_ago: float, order_id: str, above: int = 0
                 ) -> None:
        lines = basket(rng, slug, above=above)
        when = history.at(days_ago)
        history.plan_purchase(when, slug, members[email][0], order_id, lines)
        if rng.random() < 0.08:
            back = history.at(max(days_ago - rng.uniform(1, 10), 0.5))
            line = rng.choice(lines)
            returned = ([{"sku": line["sku"], "quantity": line["quantity"]}]
                        if len(lines) > 1 and rng.random() < 0.5 else None)
            history.plan(back, history.give_back, slug, order_id, returned)

    for n in range(len(others) * 6):
        email = rng.choice(others)
        purchase(email, rng.choice(members[email][1]), rng.uniform(1, HISTORY_DAYS),
                 f"D-{n:05d}")
    # Above Moda's 50 PLN minimum spend, so these earn, and stay pending.
    recent = [email for email in others if PENDING_SLUG in members[email][1]][:3]
    for n, email in enumerate(recent):
        purchase(email, PENDING_SLUG, rng.uniform(1, PENDING_DAYS - 2), f"D-P-{n:03d}",
                 above=10_000)
    for n in range(len(others) * 2):
        email = rng.choice(others)
        history.plan(history.at(rng.uniform(1, 60)), history.redeem,
                     rng.choice(members[email][1]), members[email][0],
                     rng.choice([50, 100, 200]), f"R-{n:05d}")


async def _campaigns(history: History, others: list[str]) -> None:
    """Three purchases in each campaign's days that fall in the history, with what
    the campaign asks for (its products, more than its threshold), so every campaign
    the history spans shows in use whatever the date of loading."""
    rng, members = history.rng, history.members
    slugs = {partner_id: slug for slug, partner_id in history.partners.items()}
    # Up to a minute ago: on 1 January the year's first campaign has only just begun.
    start, end = history.at(HISTORY_DAYS), history.at(1 / 1440)
    for c, rule in enumerate(await demo.campaigns(history.conn)):
        first, last = max(rule["starts_at"], start), min(rule["ends_at"] or end, end)
        if first >= last:
            continue
        params = json.loads(rule["params"])
        featured = {*params.get("skus", ()), *params.get("categories", ())}
        slug = slugs.get(rule["partner_id"])
        shoppers = [email for email in others if slug is None or slug in members[email][1]]
        for n in range(3 if shoppers else 0):
            email = rng.choice(shoppers)
            brand = slug or rng.choice(members[email][1])
            lines = basket(rng, brand, above=max(params.get("above", 0), 10_000),
                           featured=featured)
            history.plan_purchase(first + (last - first) * rng.random(), brand,
                                  members[email][0], f"C-{c}-{n}", lines)


async def _events(history: History, others: list[str]) -> None:
    """Sign-up bonuses before each member's first purchase, a webinar at the salon, a
    survey at Moda Centrum, and the birthdays the history spans."""
    rng, members = history.rng, history.members
    for email in others:
        if members[email][0] in history.first:
            when, slug = history.first[members[email][0]]
            history.plan(when - timedelta(days=rng.uniform(0.5, 3)), history.event, slug,
                         members[email][0], "signup", "demo-signup")
    webinar = history.at(24).replace(hour=17, minute=0, second=0, microsecond=0)
    for email in [email for email in others if "salon" in members[email][1]][:5]:
        history.plan(webinar, history.event, "salon", members[email][0], "webinar",
                     f"webinar-{webinar:%Y-%m-%d}")
    for email in [email for email in others if "moda" in members[email][1]][:6]:
        when = history.at(rng.uniform(5, 50))
        history.plan(when, history.event, "moda", members[email][0], "survey",
                     f"ankieta-{when:%Y-%m}")
    born = await demo.birth_dates(history.conn, [members[email][0] for email in others])
    start = history.at(HISTORY_DAYS)
    for email in others:
        member_id, slugs = members[email]
        for year in (history.now.year - 1, history.now.year):
            day = datetime.combine(date(year, born[member_id].month, born[member_id].day),
                                   time(9), UTC)
            if start <= day < history.now:
                history.plan(day, history.event, slugs[0], member_id, "birthday",
                             f"birthday-{year}")


async def _reward_weekends(history: History, others: list[str]) -> None:
    """Reward weekends at the salon and the accessories brand in the middle of the last
    two complete months: members spend there twice what the brand issued that month and
    more (a point issued costs it 1.2 grosz, a point spent earns it 1.0), so in those
    months the operator owes them (paid by SEPA credit and by Connect transfer,
    settlement/demo.py). The older month first, each member what they can afford."""
    now, members = history.now, history.members
    tz = (await coalition_settings(history.conn)).zone
    month_start = now.replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    for months_back in (2, 1):
        weekend = month_start - timedelta(days=30 * months_back - 15)
        first = weekend.astimezone(tz).replace(day=1, hour=0, minute=0, second=0,
                                               microsecond=0)
        after = (first + timedelta(days=32)).replace(day=1)
        for slug in ("salon", "akcesoria"):
            target = 2 * await demo.issued(history.conn, history.partners[slug], first,
                                           after) + 300
            spent = 0
            for n, email in enumerate(e for e in others if slug in members[e][1]):
                if spent > target:
                    break
                for points in (600, 300, 100):
                    if await history.redeem(weekend - timedelta(minutes=15 * n), slug,
                                            members[email][0], points,
                                            f"W-{slug}-{months_back}-{n}"):
                        spent += points
                        break
