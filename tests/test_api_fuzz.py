"""Property-based fuzzing of the partner API with schemathesis, against the app served
over real HTTP (uvicorn, as the `live_server` fixture does) on a PostgreSQL database
of its own.

The rule it enforces: whatever a partner's server sends under /api/v1, bad input gets a
4xx RFC 9457 problem document and writes nothing, and nothing is ever a 500. Cases come
from the OpenAPI schema the app serves, both conforming ones and deliberately broken
ones (schemathesis' negative mode); some of them are pointed at the partner's real
members, orders, holds, rewards, vouchers and transactions, and most carry a fresh valid
Idempotency-Key, so that bodies are exercised past the lookup and header checks.

A second pass sends every operation again with a member-delegated token (a partner app
acting for one member, with all the member scopes): the routes open to members must
answer about that member alone, never about a second member of the same brand whose
secrets are known, and every other route must refuse with a 403 problem and write
nothing. The OAuth endpoints' own fuzzing is tests/test_oauth_fuzz.py.

Generation is deterministic (`derandomize`), so a run is the same run every time; the
ledger must verify clean after it."""

from __future__ import annotations

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
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import psycopg
import pytest
import schemathesis
from asgi_lifespan import LifespanManager
from authlib.common.security import generate_token

from coalition import clock
from coalition.config import Settings
from coalition.db import DatabaseUrl
from coalition.rules.service import create_rule
from coalition.rules.validation import RuleSpec
from coalition.verify import verify_ledger
from settlement.terms import add_rate_card
from tests.browser import LiveServer
from tests.helpers import PartnerClient, migrated_database, new_partner
from tests.rewards_helpers import make_reward
from tests.test_oauth_apps import BASE, authorize, log_in, new_app, new_member_login
from tests.tiering import set_program
from web.app import create_app

pytestmark = pytest.mark.slow

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
    with migrated_database(server_url, "coalition_fuzz") as url:
        yield url


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
            "occurred_at": clock.now().isoformat(), "total": 25_000,
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
            moment = clock.now() - timedelta(minutes=choose.randrange(1, 60 * 24 * 60))
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


# What a member-delegated token may call: the handlers whose opt names member_scopes
# (test_member_operations_are_the_routes_open_to_members holds the two together). Every
# other operation refuses such a token with 403 insufficient-scope, before it reads or
# writes anything.
MEMBER_OPERATIONS = frozenset({
    ("GET", "/api/v1/members/{member_id}"),
    ("GET", "/api/v1/members/{member_id}/balance"),
    ("GET", "/api/v1/members/{member_id}/transactions"),
    ("GET", "/api/v1/members/{member_id}/tier"),
    ("POST", "/api/v1/redemptions"),
    ("POST", "/api/v1/redemptions/authorizations"),
    ("GET", "/api/v1/redemptions/authorizations/{authorization_id}"),
    ("POST", "/api/v1/redemptions/authorizations/{authorization_id}/capture"),
    ("POST", "/api/v1/redemptions/authorizations/{authorization_id}/void"),
    ("GET", "/api/v1/rewards"),
    ("POST", "/api/v1/rewards/{reward_id}/redemptions"),
    ("GET", "/api/v1/policies"),
})
# Everything the other member has that a member token could touch.
OTHER_MEMBER_STATE = """
SELECT m.email, m.name, m.status, m.card_number,
       (SELECT array_agg(balance ORDER BY id) FROM accounts WHERE member_id = m.id),
       (SELECT count(*) FROM postings p JOIN accounts a ON a.id = p.account_id
         WHERE a.member_id = m.id),
       (SELECT coalesce(sum(remaining), 0) FROM lots WHERE member_id = m.id),
       (SELECT array_agg(status || ':' || captured ORDER BY id) FROM point_holds
         WHERE member_id = m.id),
       (SELECT array_agg(status ORDER BY id) FROM vouchers WHERE member_id = m.id),
       (SELECT array_agg(coalesce(customer_id, '') ORDER BY partner_id) FROM member_links
         WHERE member_id = m.id),
       (SELECT count(*) FROM purchases WHERE member_id = m.id),
       (SELECT count(*) FROM member_events WHERE member_id = m.id)
  FROM members m WHERE m.id = %s
"""


@dataclass
class MemberWorld:
    """A partner app's token acting for one member, and a second member of the same brand
    whose every identifier and figure is a secret from that token. `aimed` points cases at
    both members' things: the token's own, and the other's, which it must never reach."""

    member_id: str
    auth: dict[str, str]
    other_id: str
    secrets: list[str]
    figures: list[int]
    aimed: World


async def _own_things(partner: PartnerClient, member: str, points: int, currency: str,
                      reward: uuid.UUID, label: str) -> dict[str, str]:
    """An earn, a purchase, a held checkout and a voucher of one member at the brand."""
    earned = await partner.earn(member, points)
    assert earned.status_code == 201, earned.text
    order_id = f"{label}-order-{uuid.uuid4().hex[:12]}"
    order = await partner.post("/api/v1/purchases", {
        "member": {"id": member}, "order_id": order_id,
        "occurred_at": clock.now().isoformat(), "total": 40_000, "currency": currency,
        "channel": "store",
        "lines": [{"sku": "SKU-9", "quantity": 1, "unit_price": 40_000, "amount": 40_000}]})
    assert order.status_code == 201, order.text
    hold = await partner.post("/api/v1/redemptions/authorizations",
                              {"member_id": member, "points": 1_234})
    assert hold.status_code == 201, hold.text
    voucher = await partner.post(f"/api/v1/rewards/{reward}/redemptions", {"member_id": member})
    assert voucher.status_code == 201, voucher.text
    return {"transaction_id": str(earned.json()["id"]), "order_id": order_id,
            "authorization_id": hold.json()["id"], "code": voucher.json()["voucher"]["code"]}


@pytest.fixture(scope="module")
async def member_world(fuzz_client: httpx.AsyncClient, fuzz_db: asyncpg.Pool, world: World
                       ) -> MemberWorld:
    """The member consents in the portal (authorization code with PKCE) to an app of the
    fuzzing partner; the other member is enrolled by the partner's server with a name, a
    customer id and a balance no test data shares."""
    client, partner = fuzz_client, world.partner
    # A tier ladder, so that a member's tier is an answer about the member, not a 404.
    await set_program(fuzz_db, clock.now())
    login = await new_member_login(client)
    app = await new_app(client, partner)
    transport = httpx.ASGITransport(app=client.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as browser, app:
        await log_in(browser, login)
        verifier = generate_token(48)
        back = await authorize(browser, app, verifier)
        token = await app.fetch_token(f"{BASE}/oauth/token", authorization_response=back,
                                      code_verifier=verifier)
    assert set(token["scope"].split()) == {"openid", "profile", "email", "points:read",
                                           "points:redeem"}
    own, other_tag = login.member_id, uuid.uuid4().hex[:10]
    other = await partner.enroll(f"secret-{other_tag}@example.com",
                                 name=f"Zofia Tajna {other_tag}",
                                 partner_customer_id=f"secret-customer-{other_tag}")
    reward = uuid.UUID(world.path_values["reward_id"][0])
    mine = await _own_things(partner, own, 50_000, world.currency, reward, "own")
    theirs = await _own_things(partner, other, 7_346_291, world.currency, reward, "other")
    async with fuzz_db.acquire() as conn:
        cards = {str(r["id"]): r["card_number"] for r in await conn.fetch(
            "SELECT id, card_number FROM members WHERE id = ANY($1::uuid[])", [own, other])}
        referral = await conn.fetchval("SELECT referral_code FROM members WHERE id = $1",
                                       uuid.UUID(other))
    balance = await partner.balance(other)
    # Its balance figures are millions, where the token's own member has thousands.
    figures = sorted({v for v in balance.values() if isinstance(v, int) and v > 1_000_000})
    assert figures, balance
    secrets = [other, f"secret-{other_tag}@example.com", f"Zofia Tajna {other_tag}",
               f"secret-customer-{other_tag}", cards[other], theirs["order_id"],
               theirs["authorization_id"], theirs["code"], *([referral] if referral else [])]
    path_values = {name: [mine[name], theirs[name]] for name in mine}
    return MemberWorld(
        member_id=own, auth={"Authorization": f"Bearer {token['access_token']}"},
        other_id=other, secrets=secrets,
        figures=figures,
        aimed=World(partner=partner, currency=world.currency, members=[own, other],
                    card_numbers=[cards[own], cards[other]],
                    path_values={**world.path_values, "member_id": [own, other],
                                 **path_values}))


@pytest.fixture(scope="module")
def other_member_state(fuzz_database: DatabaseUrl, member_world: MemberWorld
                       ) -> Iterator[Callable[[], tuple]]:
    with psycopg.connect(fuzz_database.asyncpg_dsn, autocommit=True) as conn:
        def take() -> tuple:
            return conn.execute(OTHER_MEMBER_STATE, (member_world.other_id,)).fetchone()
        yield take


def _member_ids(value: Any) -> Iterator[str]:
    """Every `member_id` anywhere in a decoded body."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "member_id" in item:
                yield str(item["member_id"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _sent(case: schemathesis.Case) -> str:
    return json.dumps([case.path_parameters, case.query, case.body, case.headers],
                      default=str, ensure_ascii=False)


def assert_about_own_member(case: schemathesis.Case, response: schemathesis.Response,
                            member: MemberWorld) -> None:
    """A member token learns nothing of any other member: no answer holds the other
    member's secrets (a refusal may repeat what the request itself sent), and every
    member a successful answer names is the token's own."""
    text, sent = response.text, _sent(case)
    success = 200 <= response.status_code < 300
    leaked = [s for s in member.secrets if s in text and (success or s not in sent)]
    leaked += [str(n) for n in member.figures if re.search(rf"\b{n}\b", text)
               and (success or str(n) not in sent)]
    assert not leaked, (f"{case.method} {case.formatted_path} answered"
                        f" {response.status_code} with the other member's {leaked}: {text}")
    if success and "json" in response.headers.get("content-type", [""])[0]:
        body = response.json()
        named = set(_member_ids(body))
        if case.operation.path == "/api/v1/members/{member_id}":
            named.add(str(body["id"]))
        assert named <= {member.member_id}, (
            f"{case.method} {case.formatted_path} answered about members {named}: {text}")


@schema.parametrize()
def test_member_token_acts_for_its_member_only(
        case: schemathesis.Case, member_world: MemberWorld, fuzz_server: LiveServer,
        footprint: Callable[[], tuple], other_member_state: Callable[[], tuple]) -> None:
    _aim(case, member_world.aimed)
    writes = case.method.upper() == "POST"
    before, others = (footprint() if writes else None), other_member_state()
    response = case.call_and_validate(base_url=fuzz_server.url, headers=member_world.auth,
                                      additional_checks=[problem_document], timeout=30)
    where = f"{case.method} {case.formatted_path} answered {response.status_code}"
    # The coverage phase also sends methods the path does not have: a 405 whatever the token.
    operation = (case.operation.method.upper(), case.operation.path)
    if case.method.upper() == operation[0] and operation not in MEMBER_OPERATIONS:
        # A path parameter of the wrong type (a word for an int or uuid) matches no route,
        # so it is the router's plain 404 before any handler or guard, whatever the token.
        refusal = (403, "/problems/insufficient-scope")
        unrouted = (404, "/problems/not-found")
        assert (response.status_code, response.json()["type"]) in (refusal, unrouted), (
            f"{where} to a member token: {response.text}")
    if before is not None and 400 <= response.status_code < 500:
        assert footprint() == before, f"{where} but wrote: {response.text}"
    assert other_member_state() == others, f"{where} and changed the other member"
    assert_about_own_member(case, response, member_world)


def test_member_operations_are_the_routes_open_to_members(fuzz_client: httpx.AsyncClient
                                                          ) -> None:
    open_to_members = {
        (method, re.sub(r":\w+\}", "}", route.path))
        for route in fuzz_client.app.routes if route.path.startswith("/api/v1/")
        for handler in getattr(route, "route_handlers", [])
        if "member_scopes" in handler.opt for method in handler.http_methods}
    assert open_to_members == MEMBER_OPERATIONS


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
