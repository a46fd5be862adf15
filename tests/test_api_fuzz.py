"""Property-based fuzzing of the partner API with schemathesis, against the app served
over real HTTP (uvicorn, as the `live_server` fixture does) on a PostgreSQL database
of its own.

The rule it enforces: whatever a partner's server sends under /api/v1, bad input gets a
4xx RFC 9457 problem document and writes nothing, and nothing is ever a 500. Cases come
from the OpenAPI schema the app serves, both conforming ones and deliberately broken
ones (schemathesis' negative mode); some of them are pointed at the partner's real
members, orders, holds, rewards, vouchers and transactions, and most carry a fresh valid
Idempotency-Key, so that bodies are exercised past the lookup and header checks.

Generation is deterministic (`derandomize`), so a run is the same run every time; the
ledger must verify clean after it."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import json
import os
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import psycopg
import pytest
import schemathesis
from asgi_lifespan import LifespanManager

from coalition.config import Settings
from coalition.db import DatabaseUrl, drop_database, ensure_database
from coalition.migrate import upgrade
from coalition.rules.service import create_rule
from coalition.rules.validation import RuleSpec
from coalition.verify import verify_ledger
from settlement.terms import add_rate_card
from tests.browser import LiveServer
from tests.helpers import PartnerClient, new_partner
from tests.rewards_helpers import make_reward
from web.app import create_app

PROBLEM_JSON = "application/problem+json"
VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
# Everything a partner API write can touch. A refused request leaves every count as it
# was: idempotency keys included, since a failed request frees its key.
WRITTEN_TABLES = (
    "journal_entries", "postings", "lots", "lot_movements", "accounts", "members",
    "member_links", "member_events", "member_referrals", "member_tiers", "tier_history",
    "purchases", "purchase_returns", "rule_hits", "point_holds", "vouchers",
    "idempotency_keys", "prepaid_blocks", "settlement_disputes", "affiliate_attributions",
    "affiliate_commissions",
)
FOOTPRINT = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in WRITTEN_TABLES) + \
    ", (SELECT coalesce(sum(balance), 0) FROM accounts WHERE balance IS NOT NULL)" \
    ", (SELECT coalesce(sum(issued), 0) FROM rewards)"


def _served_schema() -> dict[str, Any]:
    """The OpenAPI document the app factory builds (and serves at /schema/openapi.json:
    test_the_fuzzed_schema_is_the_served_one holds the two together). Building the
    app touches no database; the key only keeps it from creating a secret-key file."""
    from litestar.serialization import decode_json, encode_json

    app = create_app(Settings(env="test", secret_key="schema-only-" + "x" * 32))
    document = decode_json(encode_json(app.openapi_schema.to_schema()))
    # Litestar makes up response examples at random for each app it builds; left out, the
    # fuzzed document is the same in every run.
    document["components"]["schemas"] = _without_examples(document["components"]["schemas"])
    return document


def _without_examples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_examples(v) for k, v in value.items() if k != "examples"}
    if isinstance(value, list):
        return [_without_examples(v) for v in value]
    return value


SCHEMA = _served_schema()
# A deeper local run explores other cases, still reproducibly:
#   COALITION_FUZZ_EXAMPLES=200 COALITION_FUZZ_SEED=7 pytest tests/test_api_fuzz.py
SEED = os.environ.get("COALITION_FUZZ_SEED")
CONFIG = schemathesis.Config.from_dict({
    **({"seed": int(SEED)} if SEED else {}),
    "generation": {
        # A modest budget per operation keeps the module well under a minute; the coverage
        # phase adds its boundary cases (missing fields, limits +/- 1, wrong types) on top.
        "max-examples": int(os.environ.get("COALITION_FUZZ_EXAMPLES", "20")),
        # Without a seed, Hypothesis derives one per test: the same cases on every run.
        "deterministic": SEED is None,
        "database": "none",
        # Like most HTTP APIs it ignores query parameters it does not define (Litestar has no
        # strict mode for them), so an undeclared one is no bad input. Bodies are strict:
        # an unknown field is a 400 (forbid_unknown_fields), which positive cases exercise.
        "allow-extra-parameters": False,
    },
    # Cases come from the schema and the seed alone: nothing learnt from responses (their
    # ids and messages differ from run to run), so every run sends the same cases.
    "phases": {
        "stateful": {"enabled": False},
        "examples": {"extra-data-sources": {"responses": False}},
        "coverage": {"extra-data-sources": {"responses": False}},
        "fuzzing": {"extra-data-sources": {"responses": False},
                    "error-feedback": {"enabled": False}},
    },
    "checks": {
        # The schema documents Litestar's 400 only; the problem types and their statuses
        # are documented at /problems/ and in the operations' descriptions, and
        # problem_document below holds every 4xx to RFC 9457 instead.
        "status_code_conformance": {"enabled": False},
        "content_type_conformance": {"enabled": False},
        # Schema-valid is not acceptable: an unknown member, a spent balance, the wrong
        # currency, an opaque cursor it did not issue are refused by rules no schema says.
        "positive_data_acceptance": {"enabled": False},
        # Litestar 2 answers OPTIONS with the methods of the handler registered first on a
        # path (litestar-org/litestar#4169, fixed in 3.x only).
        "allow_header_conformance": {"enabled": False},
    },
})
schema = schemathesis.openapi.from_dict(SCHEMA, config=CONFIG).include(path_regex=r"^/api/v1/")


def problem_document(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                     case: schemathesis.Case) -> bool | None:
    """Every 4xx is an RFC 9457 problem: its media type, and a body whose `status` is the
    response's and which has a `title`; a validation error also names its field."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    assert content_type == PROBLEM_JSON, (
        f"{response.status_code} answered with content-type {content_type!r}, not {PROBLEM_JSON}")
    body = response.json()
    assert isinstance(body, dict), f"the problem body is not an object: {body!r}"
    assert body.get("status") == response.status_code, (
        f"problem status {body.get('status')!r} is not the response's {response.status_code}")
    assert isinstance(body.get("title"), str) and body["title"], "the problem has no title"
    assert isinstance(body.get("type"), str), "the problem has no type"
    if body["type"] == "/problems/validation-error":
        assert isinstance(body.get("field"), str) and body["field"], (
            f"a validation error names no field: {body!r}")
    return True


@dataclass
class World:
    """The fuzzing partner and real things of its own for cases to point at."""

    partner: PartnerClient
    currency: str
    path_values: dict[str, list[Any]] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    card_numbers: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def fuzz_database(server_url: DatabaseUrl) -> Iterator[DatabaseUrl]:
    """A database of the module's own. The fuzzer enrols members with whatever emails
    and customer ids it makes up and posts at any moment since 1970; in the shared
    database that would land in other tests' lookups and settlement periods."""
    url = server_url.with_database(f"coalition_fuzz_{uuid.uuid4().hex[:10]}")
    asyncio.run(ensure_database(url))
    upgrade(url)
    yield url
    asyncio.run(drop_database(url))


@pytest.fixture(scope="module")
def fuzz_settings(fuzz_database: DatabaseUrl, smtp: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(database_url=fuzz_database.raw, env="test", smtp_host="127.0.0.1",
                    smtp_port=smtp.port, data_dir=tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
async def fuzz_client(fuzz_settings: Settings, fuzz_database: DatabaseUrl
                      ) -> AsyncIterator[httpx.AsyncClient]:
    """The app in the test's own event loop, for setting up and for reading back."""
    application = create_app(fuzz_settings, fuzz_database)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local"
                                     ) as client:
            client.app = application
            yield client


@pytest.fixture(scope="module")
def fuzz_server(fuzz_settings: Settings, fuzz_database: DatabaseUrl) -> Iterator[LiveServer]:
    """The same app over real HTTP, where schemathesis sends its cases."""
    server = LiveServer(create_app(fuzz_settings, fuzz_database)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def fuzz_db(fuzz_database: DatabaseUrl) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(fuzz_database.asyncpg_dsn, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def world(fuzz_client: httpx.AsyncClient, fuzz_db: asyncpg.Pool) -> World:
    """A prepaid partner (so point blocks can be requested, and its issuance can run out
    of credit) with an earning rule, members with points, orders, holds and a voucher."""
    client, db = fuzz_client, fuzz_db
    partner = await new_partner(client, "Fuzz Brand")
    async with client.app.state.pool.acquire() as conn:
        await add_rate_card(conn, partner.partner_id, {
            "issue_price": "1.2", "reimbursement": "1.0", "billing": "prepaid",
            "credit_limit": 10**12}, "test")
    async with client.app.state.sessionmaker() as session:
        await create_rule(session, partner.partner_id, RuleSpec(
            "1 pt per 1 PLN", "per_amount", {"points": 1, "per": 100}).checked(), None)
        await session.commit()
    members = [await partner.enroll() for _ in range(3)]
    cards = [(await partner.get(f"/api/v1/members/{m}")).json()["card_number"] for m in members]
    for member in members:
        assert (await partner.earn(member, 100_000)).status_code == 201
    earned = await partner.earn(members[0], 500)
    redeemed = await partner.redeem(members[0], 100)
    currency = await db.fetchval("SELECT currency FROM coalition_settings WHERE id = 1")
    orders = []
    for number, member in enumerate(members[:2]):
        order_id = f"fuzz-order-{number}"
        order = await partner.post("/api/v1/purchases", {
            "member": {"id": member}, "order_id": order_id,
            "occurred_at": datetime.now(UTC).isoformat(), "total": 25_000,
            "currency": currency, "channel": "store",
            "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": 12_500, "amount": 25_000}]})
        assert order.status_code == 201, order.text
        orders.append(order_id)
    holds = []
    for member in members[1:]:
        hold = await partner.post("/api/v1/redemptions/authorizations",
                                  {"member_id": member, "points": 300})
        assert hold.status_code == 201, hold.text
        holds.append(hold.json()["id"])
    reward = await make_reward(db, partner.partner_id, price_points=100)
    voucher = await partner.post(f"/api/v1/rewards/{reward}/redemptions",
                                 {"member_id": members[0]})
    assert voucher.status_code == 201, voucher.text
    block = await partner.post("/api/v1/settlement/prepaid-blocks", {"points": 1000})
    assert block.status_code == 201, block.text
    return World(
        partner=partner, currency=currency, members=members, card_numbers=cards,
        path_values={
            "member_id": members,
            "order_id": orders,
            "authorization_id": holds,
            "reward_id": [str(reward)],
            "code": [voucher.json()["voucher"]["code"]],
            "transaction_id": [earned.json()["id"], redeemed.json()["id"]],
            "block_id": [block.json()["id"]],
        })


_keys = itertools.count()


def _chooser(case: schemathesis.Case) -> random.Random:
    """Choices seeded by the case's own content: the same case is aimed the same way in
    every run and every phase (the coverage phase takes no extra Hypothesis strategies)."""
    # Not repr(): a missing body is a NotSet object, whose repr holds its memory address.
    content = json.dumps([case.method, case.path, case.path_parameters, case.query, case.body],
                         sort_keys=True, default=lambda value: type(value).__name__)
    return random.Random(hashlib.sha256(content.encode()).digest())


def _aim(case: schemathesis.Case, world: World) -> None:
    """Point some cases at the partner's real things and give most writes a fresh valid
    Idempotency-Key (a random one would mostly fail the header check or collide)."""
    choose = _chooser(case)
    # Edits go to copies: the coverage phase's cases share their containers, and an edit
    # made in place would leak into the cases after it.
    if case.path_parameters:
        case.path_parameters = dict(case.path_parameters)
    for name, values in world.path_values.items():
        if name in (case.path_parameters or {}) and choose.random() < 0.5:
            case.path_parameters[name] = choose.choice(values)
    if isinstance(case.body, dict) and choose.random() < 0.6:
        # Whatever else the body holds, a real member, the coalition's currency, a fresh
        # order id and a recent moment take it past the lookups and envelope checks.
        case.body = body = copy.deepcopy(case.body)
        if "member_id" in body:
            body["member_id"] = choose.choice(world.members)
        if "member" in body:
            body["member"] = choose.choice([{"id": m} for m in world.members] +
                                           [{"card_number": c} for c in world.card_numbers])
        if "currency" in body:
            body["currency"] = world.currency
        if "order_id" in body:
            body["order_id"] = f"fuzz-order-{uuid.uuid4().hex}"
        if "occurred_at" in body:
            moment = datetime.now(UTC) - timedelta(minutes=choose.randrange(1, 60 * 24 * 60))
            body["occurred_at"] = moment.isoformat()
    if case.headers is not None and "Idempotency-Key" in case.headers:
        key = case.headers["Idempotency-Key"]
        valid = isinstance(key, str) and VALID_KEY.match(key) is not None
        if valid or choose.random() < 0.5:
            case.headers = {**case.headers,
                            "Idempotency-Key": f"fuzz-{uuid.uuid4().hex}-{next(_keys)}"}
    # Reading `meta` re-judges the edited parts: a negative case whose broken member_id
    # was replaced by a real one is positive now, and no check expects a 4xx for it.
    _ = case.meta


@pytest.fixture(scope="module")
def footprint(fuzz_database: DatabaseUrl) -> Iterator[Callable[[], tuple]]:
    """Counts of everything a write touches, read straight from the database."""
    with psycopg.connect(fuzz_database.asyncpg_dsn, autocommit=True) as conn:
        def take() -> tuple:
            return conn.execute(FOOTPRINT).fetchone()
        yield take


@schema.parametrize()
def test_partner_api_answers_bad_input_with_problems_never_500s(
        case: schemathesis.Case, world: World, fuzz_server: LiveServer,
        footprint: Callable[[], tuple]) -> None:
    _aim(case, world)
    before = footprint() if case.method.upper() == "POST" else None
    response = case.call_and_validate(base_url=fuzz_server.url, headers=world.partner.auth,
                                      additional_checks=[problem_document], timeout=30)
    if before is not None and 400 <= response.status_code < 500:
        assert footprint() == before, (
            f"{case.method} {case.formatted_path} answered {response.status_code} but wrote:"
            f" {response.text}")


async def test_the_fuzzed_schema_is_the_served_one(fuzz_client: httpx.AsyncClient) -> None:
    served = (await fuzz_client.get("/schema/openapi.json")).json()
    assert served["paths"] == SCHEMA["paths"]
    assert _without_examples(served["components"]) == SCHEMA["components"]
    assert len(schema) > 0


async def test_the_ledger_still_verifies_after_fuzzing(fuzz_db: asyncpg.Pool, world: World
                                                       ) -> None:
    async with fuzz_db.acquire() as conn:
        problems = await verify_ledger(conn)
    assert not problems, [f"{p.check}: {p.detail}" for p in problems]
