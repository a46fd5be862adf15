"""The demo coalition, the OpenAPI contract and the landing pages."""

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import asyncpg

from coalition import clock
from coalition.rules.engine import Basket, Shopper, evaluate
from coalition.rules.service import active_rules
from coalition.verify import verify_ledger
from settlement.runs import previous_period, verify
from settlement.statements import flow_matrix, netting
from tests.test_cli import coalition
from web.demo import load_demo


async def _demo_history_is_settled(conn: asyncpg.Connection) -> None:
    """Past months finalized with statements that reconcile: the partners' nets sum to
    the operator's balancing figure and every statement to its lines; the last complete
    month is a draft."""
    rows = await conn.fetch("SELECT id, period, status FROM settlement_runs"
                            " ORDER BY period_start")
    assert rows and rows[-1]["status"] == "draft"
    tz = await conn.fetchval("SELECT timezone FROM coalition_settings")
    assert rows[-1]["period"] == previous_period(clock.now(), tz)
    finalized = [r for r in rows if r["status"] == "finalized"]
    assert len(finalized) >= 4 and len(finalized) == len(rows) - 1
    last = finalized[-1]["id"]
    nets = await conn.fetch("SELECT partner_id, net FROM settlement_statements"
                            " WHERE run_id = $1", last)
    assert len(nets) == 5 and any(r["net"] != 0 for r in nets)
    (figure,) = await netting(conn, last)
    assert figure["operator_net"] == sum(r["net"] for r in nets) == \
        figure["collections"] - figure["payouts"]
    assert await flow_matrix(conn, last)
    for run in finalized:
        assert await verify(conn, run["id"]) == []


def test_demo_coalition_loads_once_with_promised_balances(demo_database):
    async def scenario() -> None:
        credentials = await load_demo(demo_database, extra_members=10)
        assert [c["client_id"] for c in credentials][:2] == ["demo-hurtownia", "demo-moda"]
        conn = await asyncpg.connect(demo_database.asyncpg_dsn)
        try:
            balances = dict(await conn.fetch(
                "SELECT m.name, a.balance FROM members m JOIN accounts a ON a.member_id = m.id"))
            assert balances["Jan Kowalski"] == 150
            assert balances["Maria Nowak"] == 200
            assert balances["Krzysztof Wiśniewski"] == 95
            assert await conn.fetchval("SELECT count(*) FROM partners") == 5
            months = await conn.fetchval(
                "SELECT count(DISTINCT date_trunc('month', created_at)) FROM journal_entries")
            assert months >= 5
            kinds = {r[0] for r in await conn.fetch("SELECT DISTINCT kind FROM journal_entries")}
            # 'activate': Moda's pending points, made available as the history goes on.
            assert kinds == {"earn", "redeem", "reverse", "hold", "activate"}
            rewards = dict(await conn.fetch(
                "SELECT name, price_points FROM rewards WHERE listed"))
            assert rewards["Zniżka 10% na kolejne zakupy"] == 100
            assert rewards["Dostęp do webinaru: pielęgnacja włosów"] == 200
            assert rewards["Ekskluzywny produkt"] == 500
            vouchers = dict(await conn.fetch(
                "SELECT source || ':' || status, count(*) FROM vouchers GROUP BY 1"))
            assert vouchers.get("redemption:used") and vouchers.get("redemption:issued")
            assert vouchers.get("coupon:issued")
            assert await verify_ledger(conn) == []
            # Rate cards in force for every partner since before the history; the salon
            # prepaid from now with a paid block the history did not draw.
            cards = await conn.fetch(
                "SELECT p.slug, t.issue_price, t.reimbursement, t.fee_percent, t.billing"
                " FROM partners p, settlement_terms_at(p.id, $1) t", clock.now())
            assert {(r["issue_price"], r["reimbursement"], r["fee_percent"])
                    for r in cards} == {(Decimal("1.2"), Decimal("1.0"), Decimal("2"))}
            assert {r["slug"] for r in cards if r["billing"] == "prepaid"} == {"salon"}
            assert await conn.fetchval(
                "SELECT count(*) FROM partners p, settlement_terms_at(p.id,"
                " (SELECT min(created_at) FROM journal_entries)) t WHERE t.id IS NULL") == 0
            assert tuple(await conn.fetchrow("SELECT available, paid FROM prepaid_balances"
                                             " b JOIN partners p ON p.id = b.partner_id"
                                             " WHERE p.slug = 'salon'")) == (5000, 5000)
            assert await conn.fetchval("SELECT rate FROM fx_rates WHERE quote = 'EUR'")
            await _demo_rules_earn_as_promised(conn)
            await _demo_history_went_through_the_rules(conn)
            await _demo_history_is_settled(conn)
            entries = await conn.fetchval("SELECT count(*) FROM journal_entries")
            runs_before = await conn.fetchval("SELECT count(*) FROM settlement_runs")
            await load_demo(demo_database, extra_members=10)   # second start: nothing new
            assert await conn.fetchval("SELECT count(*) FROM journal_entries") == entries
            assert await conn.fetchval("SELECT count(*) FROM settlement_runs") == runs_before
        finally:
            await conn.close()

    asyncio.run(scenario())
    verified = coalition(demo_database, "ledger", "verify")
    assert verified.returncode == 0 and "ledger verify: clean" in verified.stdout, \
        verified.stdout + verified.stderr


async def _demo_history_went_through_the_rules(conn) -> None:
    """Purchases with order lines priced by the partners' and the coalition's rules (a
    campaign among them, in its own days), returns through the returns path, events,
    points pending in Moda Centrum's return window, and a checkout hold still open."""
    owners = dict(await conn.fetch(
        "SELECT r.partner_id IS NULL, sum(h.points) FROM rule_hits h"
        " JOIN earning_rules r ON r.id = h.rule_id WHERE h.points > 0 GROUP BY 1"))
    assert owners.get(False, 0) > 0 and owners.get(True, 0) > 0
    assert await conn.fetchval(
        "SELECT count(*) FROM rule_hits h JOIN earning_rule_versions v ON v.rule_id ="
        " h.rule_id AND v.version = h.rule_version WHERE v.starts_at IS NOT NULL"
        " AND h.occurred_at >= v.starts_at AND h.occurred_at < v.ends_at"
        " AND h.points > 0") > 0
    purchases = await conn.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE jsonb_array_length(lines) = 0)"
        " AS no_lines, count(*) FILTER (WHERE points > 0) AS earning,"
        " count(*) FILTER (WHERE points <> (SELECT coalesce(sum((h ->> 'points')::int), 0)"
        " FROM jsonb_array_elements(breakdown) h)) AS off FROM purchases")
    assert purchases["n"] > 50 and purchases["no_lines"] == purchases["off"] == 0
    assert purchases["earning"] > purchases["n"] * 0.9   # some are below Moda's minimum
    # Each purchase's rule hits are its points (returns write their own negative hits).
    assert await conn.fetchval(
        "SELECT count(*) FROM purchases p WHERE p.entry_id IS NOT NULL AND p.points <>"
        " (SELECT sum(h.points) FROM rule_hits h WHERE h.entry_id = p.entry_id"
        " AND h.points > 0)") == 0
    assert await conn.fetchval(
        "SELECT count(*) FROM journal_entries e WHERE e.kind = 'reverse' AND NOT EXISTS"
        " (SELECT 1 FROM purchase_returns r WHERE r.entry_id = e.id)") == 0
    assert await conn.fetchval("SELECT count(*) FROM purchase_returns") > 0
    pending = await conn.fetch(
        "SELECT p.slug, p.pending_days, sum(l.remaining) AS points FROM lots l"
        " JOIN partners p ON p.id = l.partner_id WHERE l.status = 'pending'"
        " GROUP BY 1, 2")
    assert [(r["slug"], r["pending_days"]) for r in pending] == [("moda", 14)]
    assert pending[0]["points"] > 0
    events = dict(await conn.fetch(
        "SELECT event_type, count(*) FROM member_events WHERE points > 0 GROUP BY 1"))
    assert {"signup", "webinar", "survey"} <= set(events)
    holds = await conn.fetch("SELECT status, points FROM point_holds"
                             " WHERE expires_at > $1", clock.now())
    assert [(r["status"], r["points"]) for r in holds] == [("held", 300)]


async def _demo_rules_earn_as_promised(conn) -> None:
    """Moda Centrum in April, a VIP buying for 250 PLN: 250 (1 pt per PLN) + 30 (above
    200 PLN) doubled by the spring campaign (+280), then VIP x1.5 on 560 (+280)."""
    moda = await conn.fetchval("SELECT id FROM partners WHERE slug = 'moda'")
    year = clock.now().astimezone(ZoneInfo("Europe/Warsaw")).year   # the demo's calendar
    april = datetime(year, 4, 15, 12, tzinfo=UTC)
    rules = await active_rules(conn, moda, april)
    vip = Shopper(tier="vip", segments=frozenset(), first_purchase=False)
    basket = Basket(april, 25_000, "PLN", "store", None, ())
    result = evaluate(rules, basket, vip, budget_left={}, point_value=Fraction(1, 100))
    assert [(h.name, h.points) for h in result.hits] == [
        ("1 pt per 1 PLN", 250), ("Order above 200 PLN: +30", 30),
        ("Spring campaign: double points", 280), ("VIP x1.5", 280)]
    small = evaluate(rules, Basket(april, 4_000, "PLN", "store", None, ()), vip,
                     budget_left={}, point_value=Fraction(1, 100))
    assert small.points == 0                       # below Moda's 50 PLN minimum spend
    names = {r["name"] for r in await conn.fetch(
        "SELECT name FROM earning_rules WHERE partner_id IS NULL")}
    assert {"Sign-up bonus", "Refer a friend", "January cashback for regular customers",
            "Pre-holiday campaign: +50 above 300 PLN"} <= names
    assert await conn.fetchval("SELECT count(*) FROM earning_rules WHERE name ="
                               " 'July: triple points on selected products'") == 1


async def test_openapi_document_lists_the_contract(client):
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/oauth/token", "/api/v1/members", "/api/v1/members/{member_id}",
                 "/api/v1/members/{member_id}/balance", "/api/v1/members/{member_id}/transactions",
                 "/api/v1/earn", "/api/v1/redemptions",
                 "/api/v1/transactions/{transaction_id}/reversal", "/health"):
        assert path in paths, path
    earn = paths["/api/v1/earn"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in earn["parameters"])
    assert "requestBody" in earn and earn["requestBody"]["required"]
    # Bodies a partner may leave out are documented so, not as Litestar's default.
    for path in ("/api/v1/transactions/{transaction_id}/reversal",
                 "/api/v1/purchases/{order_id}/returns",
                 "/api/v1/redemptions/authorizations/{authorization_id}/capture",
                 "/api/v1/vouchers/{code}/consume"):
        assert paths[path]["post"]["requestBody"]["required"] is False, path
    docs = await client.get("/schema")
    assert docs.status_code == 200 and "html" in docs.headers["content-type"]


async def test_landing_page_and_problem_type_docs(client):
    index = await client.get("/")
    assert index.status_code == 200 and "Coalition" in index.text
    doc = await client.get("/problems/insufficient-points")
    assert doc.status_code == 200 and "Insufficient points" in doc.text
    missing = await client.get("/problems/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


async def test_unknown_route_and_method_are_problems(client, partner):
    unknown = await client.get("/api/v1/nothing-here", headers=partner.auth)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    wrong = await partner.client.delete("/api/v1/earn", headers=partner.auth)
    assert wrong.status_code == 405
    assert wrong.json()["type"] == "/problems/method-not-allowed"


async def test_options_on_api_routes_lists_the_methods_with_or_without_a_token(client, partner):
    # The auth middleware skips OPTIONS; the scope guard once read the missing principal
    # and answered 500 (found by tests/test_api_fuzz.py).
    member = await partner.enroll()
    for path in ("/api/v1/members", f"/api/v1/members/{member}/balance", "/api/v1/earn"):
        for headers in (partner.auth, {}):
            response = await client.options(path, headers=headers)
            assert response.status_code == 204, (path, response.text)
            assert "OPTIONS" in response.headers["allow"]


async def test_security_headers_on_every_kind_of_response(client, partner):
    for path in ("/", "/health", "/problems/not-found", "/schema/openapi.json",
                 "/api/v1/members", "/static/app.css"):
        response = await client.get(path, headers=partner.auth)
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp, path
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp, path
        assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert response.headers["x-content-type-options"] == "nosniff"
    page = await client.get("/")
    assert "<script" not in page.text and "<style" not in page.text
    assert "strict-transport-security" not in page.headers  # not in development/test


def test_hsts_outside_development(settings, database_url):
    import asyncio

    import httpx
    from asgi_lifespan import LifespanManager

    from web.app import create_app

    async def fetch() -> httpx.Response:
        app = create_app(settings.model_copy(update={"env": "production"}), database_url)
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="https://c.example") as c:
                return await c.get("/health")

    response = asyncio.run(fetch())
    assert response.headers["strict-transport-security"].startswith("max-age=")
