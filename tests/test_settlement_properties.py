"""Property: over random activity and random exact prices, rounding loses and creates
nothing. Every line is its exact amount rounded once, half away from zero; every
statement's net is the sum of its lines; each partner's exact total equals the exact
value of its activity recomputed here independently; the points on the lines are the
points posted; the partners' nets sum to the operator's balancing figure; the flow
matrix holds every redeemed point. Each example runs in a transaction rolled back."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settlement import runs, statements
from tests.helpers import new_partner
from tests.settlement_helpers import new_member

PERIOD_START = datetime(2018, 10, 1, 12, tzinfo=UTC)
price = st.decimals(min_value=0, max_value=5, places=6)
terms = st.tuples(price, price, st.decimals(min_value=0, max_value=10, places=4),
                  st.integers(0, 999), st.one_of(st.none(), st.integers(2, 27)),
                  price, price)
operation = st.tuples(st.sampled_from(["earn", "redeem", "reverse", "bonus"]),
                      st.integers(0, 2), st.integers(1, 500), st.integers(1, 29))


@pytest.fixture(scope="module")
async def partners(client) -> list[uuid.UUID]:
    return [(await new_partner(client, f"Property Brand {i}")).partner_id for i in range(3)]


def _day(day: int) -> datetime:
    return PERIOD_START.replace(day=day)


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def _example(dsn: str, partners: list[uuid.UUID], cards: list[tuple],
                   ops: list[tuple]) -> None:
    conn = await asyncpg.connect(dsn)
    transaction = conn.transaction()
    await transaction.start()
    try:
        prices: dict[uuid.UUID, list[tuple[datetime, tuple]]] = {}
        for partner, (issue, reimb, fee, fixed, change_day, issue2, reimb2) in zip(
                partners, cards, strict=True):
            prices[partner] = [(datetime(2018, 1, 1, tzinfo=UTC), (issue, reimb, fee))]
            if change_day:
                prices[partner].append((_day(change_day), (issue2, reimb2, fee)))
            for since, (i, r, f) in prices[partner]:
                await conn.execute(
                    "INSERT INTO settlement_terms (partner_id, effective_from, issue_price,"
                    " reimbursement, fee_percent, fee_fixed, created_by)"
                    " VALUES ($1, $2, $3, $4, $5, $6, 'property')", partner, since, i, r, f,
                    fixed)

        def card(partner: uuid.UUID, when: datetime) -> tuple:
            return [c for since, c in prices[partner] if since <= when][-1]

        member = await new_member(conn, partners)
        exact = dict.fromkeys(partners, Decimal(0))
        fee_base: dict[tuple, Decimal] = {}
        points = {p: {"issued": 0, "redeemed": 0} for p in partners}
        earns: list[tuple[int, uuid.UUID, datetime]] = []
        for kind, who, amount, day in sorted(ops, key=lambda o: o[3]):
            partner, when = partners[who], _day(day)
            key = uuid.uuid4().hex
            if kind in ("earn", "redeem"):
                row = await conn.fetchrow(
                    f"SELECT * FROM ledger_{kind}($1, $2, $3, NULL, NULL, NULL, $4, 'h',"
                    " 'p', $5, $5)", partner, member, amount, key, when)
                if row["status"] != 201:
                    continue
                issue, reimb, fee = card(partner, when)
                if kind == "earn":
                    earns.append((json.loads(row["body"])["id"], partner, when))
                    exact[partner] += amount * issue
                    fee_base[(partner, fee)] = fee_base.get((partner, fee), 0) + amount * issue
                    points[partner]["issued"] += amount
                else:
                    exact[partner] -= amount * reimb
                    points[partner]["redeemed"] += amount
            elif kind == "reverse" and earns:
                entry, issuer, earned_at = earns[amount % len(earns)]
                row = await conn.fetchrow(
                    "SELECT * FROM ledger_reverse($1, $2, $3, NULL, $4, 'h', 'p',"
                    " ARRAY['earn'], $5)", issuer, entry, amount // 5 + 1, key, when)
                if row["status"] != 201:
                    continue
                taken = json.loads(row["body"])["points"]
                issue, _, fee = card(issuer, earned_at)
                exact[issuer] -= taken * issue
                fee_base[(issuer, fee)] -= taken * issue
                points[issuer]["issued"] -= taken
            elif kind == "bonus":
                entry = await conn.fetchval(
                    "INSERT INTO journal_entries (kind, partner_id, member_id, actor,"
                    " occurred_at, created_at) VALUES ('earn', $1, $2, 'p', $3, $3)"
                    " RETURNING id", partner, member, when)
                await conn.execute("SELECT ledger_credit_lots($1, $2, $3, 0, $4, $5, NULL)",
                                   entry, partner, member, amount, when)
        for (partner, fee), base in fee_base.items():
            exact[partner] += base * fee / 100
        for partner, (_, _, _, fixed, *_) in zip(partners, cards, strict=True):
            exact[partner] += fixed

        run = await runs.run_period(conn, "2018-10", "property",
                                    now=datetime(2026, 1, 1, tzinfo=UTC))
        lines = await conn.fetch("SELECT * FROM settlement_lines WHERE run_id = $1", run["id"])
        for line in lines:
            assert line["amount"] == _round(line["amount_exact"])
            assert abs(line["amount"] - line["amount_exact"]) <= Decimal("0.5")
        nets = []
        for s in await conn.fetch("SELECT * FROM settlement_statements WHERE run_id = $1",
                                  run["id"]):
            own = [line for line in lines if line["statement_id"] == s["id"]]
            assert s["net"] == sum(line["amount"] for line in own)
            assert s["total_debit"] == sum(line["amount"] for line in own if line["amount"] > 0)
            nets.append(s["net"])
            partner = s["partner_id"]
            if partner in exact:
                assert sum(line["amount_exact"] for line in own) == exact[partner]
                assert abs(s["net"] - exact[partner]) <= Decimal("0.5") * len(own)
                kinds = {t: sum(line["points"] for line in own if line["type"] == t)
                         for t in ("issuance", "reversal", "reimbursement")}
                assert kinds["issuance"] + sum(
                    line["points"] for line in own if line["type"] == "reversal"
                    and line["unit_price"] is not None and line["description"].startswith(
                        "Points returned")) == points[partner]["issued"]
                assert kinds["reimbursement"] == points[partner]["redeemed"]
        for netted in await statements.netting(conn, run["id"]):   # one currency here
            assert netted["operator_net"] == sum(nets) == (netted["collections"]
                                                           - netted["payouts"])
        for partner in partners:
            flowed = await conn.fetchval(
                "SELECT coalesce(sum(points), 0) FROM settlement_flows WHERE run_id = $1"
                " AND redeemer_partner_id = $2", run["id"], partner)
            assert flowed == points[partner]["redeemed"]
    finally:
        await transaction.rollback()
        await conn.close()


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cards=st.lists(terms, min_size=3, max_size=3),
       ops=st.lists(operation, min_size=1, max_size=25))
def test_rounding_loses_and_creates_nothing(database_url, partners, cards, ops):
    with localcontext() as context:
        context.prec = 60
        asyncio.run(_example(database_url.asyncpg_dsn, partners, cards, ops))
