"""Fault injection (issue 16, defect 8): the database crashes under load, then the app
process does, and nothing is lost, doubled or answered 500.

A PostgreSQL cluster of this module's own (tests/pgcluster.py; the shared server is
never touched) serves the real app while a few clients post earn, redeem and reverse
requests and read balances, as a partner's server would: each write carries its own
Idempotency-Key and is retried with the same key on a 503 or a broken connection until
it gets a definite answer. (The clients retry every 50 ms rather than after Retry-After,
so the test sees the moment the server recovers.)

1. Mid-run the postmaster is killed (-9) and started again: crash recovery, every pooled
   and listening connection gone. While it is down the API answers 503 problem+json and
   a page 503 HTML, both with Retry-After; once it is back the same app answers 2xx
   within 10 s, its stale ORM connections are replaced without one failed request, and
   the token cache's LISTEN connection (and the rules cache's) comes back by itself.
2. Mid-run the app process (a subprocess) is killed (-9) and another started: requests
   cut off in flight are retried with their keys, and every write the first process
   answered, sent again with its key, gets that first answer.

After each: every key answered 2xx has exactly one journal entry (the answered one) and
no entry lacks an answered key, each member's balance is what the answers add up to,
`ledger verify` is clean, and no 5xx but 503 was ever answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import psycopg
import pytest
import sqlalchemy.exc

from coalition.config import Settings
from coalition.db import (
    DatabaseUrl,
    create_engine,
    create_sessionmaker,
    database_unreachable,
    ensure_database,
)
from coalition.migrate import upgrade_async
from coalition.rules.service import CACHE as RULES_CACHE
from coalition.verify import verify_ledger
from tenants.service import create_partner, create_server_client
from tests.live import free_port, serve
from tests.pgcluster import PrivateCluster
from web.app import create_app

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
MEMBERS = 10
OPENING = 5_000
CLIENTS = 4
OK = (200, 201)


def test_connection_errors_are_told_apart_from_statement_errors() -> None:
    """What maps to 503 (the database unreachable, the connection lost) and what stays
    a 500 or a problem of its own (a statement that failed)."""
    unreachable = [
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 5432, 0, 0)"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.InterfaceError("connection is closed"),
        # A pooled connection that read the server's FATAL goodbye before its socket closed.
        asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in"
                                    " progress"),
        psycopg.OperationalError("connection failed: Connection refused"),
        sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("x")),
        sqlalchemy.exc.DBAPIError("SELECT 1", {}, Exception("x"), connection_invalidated=True),
    ]
    for exc in unreachable:
        assert database_unreachable(exc), exc
    try:  # the way a driver wraps the socket error it got
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as cause:
            raise RuntimeError("query failed") from cause
    except RuntimeError as wrapped:
        assert database_unreachable(wrapped)
        assert database_unreachable(ExceptionGroup("task group", [ValueError(), wrapped]))
    statement_errors = [
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        psycopg.errors.SerializationFailure("could not serialize access"),
        sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")),
        FileNotFoundError(2, "No such file or directory"),
        TimeoutError(),
        ValueError("bad"),
    ]
    for exc in statement_errors:
        assert not database_unreachable(exc), exc


@dataclass
class Call:
    """One write as a partner's server makes it: a key and a body, sent until the answer
    is definite (anything but a 503 or a broken connection)."""

    kind: str
    path: str
    body: dict
    member: str
    delta: int  # what a 2xx does to the member's balance
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: int | None = None
    answer: dict | None = None
    answered_at: float = 0.0
    attempts: int = 0
    server: int = 0  # which server process gave the answer


@dataclass
class Env:
    cluster: PrivateCluster
    url: DatabaseUrl
    settings: Settings
    partner_id: uuid.UUID
    token: str = ""
    members: list[str] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)  # every write of the module so far
    server: subprocess.Popen | None = None  # `coalition serve` on server_port
    server_port: int = 0
    server_log: Path = Path()

    @property
    def server_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def start_server(self) -> None:
        """`coalition serve` in a process of its own, as production runs it; returns once
        /health answers 200."""
        environment = {**os.environ, "COALITION_DATABASE_URL": self.url.raw,
                       "COALITION_DATA_DIR": str(self.settings.data_dir),
                       "COALITION_SECRET_KEY": self.settings.secret_key,
                       "COALITION_ENV": "test", "COALITION_LOG_LEVEL": "WARNING"}
        with self.server_log.open("ab") as output:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "web", "serve", "--port", str(self.server_port)],
                env=environment, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=output,
                stderr=output)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.server.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.server_url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop_server()
        raise RuntimeError("the API server did not start:\n" + self.server_log.read_text()[-3000:])

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()


class Traffic:
    """A few concurrent clients posting writes and reading balances until `stop`."""

    def __init__(self, base_url: str, env: Env, seed: int) -> None:
        self.base_url, self.env, self.seed = base_url, env, seed
        self.auth = {"Authorization": f"Bearer {env.token}"}
        self.calls: list[Call] = []
        self.statuses: Counter[int] = Counter()  # every response, retries included
        self.malformed_503: list[str] = []
        self.transport_errors = 0
        self.server = 1
        self.stop = False
        self._reversible: list[Call] = []

    def _answered(self, response: httpx.Response) -> bool:
        self.statuses[response.status_code] += 1
        if response.status_code != 503:
            return True
        if not (response.headers.get("retry-after", "").isdigit()
                and response.headers["content-type"].startswith("application/problem+json")
                and response.json()["type"] == "/problems/service-unavailable"):
            self.malformed_503.append(f"{response.headers} {response.text[:200]}")
        return False

    async def send(self, client: httpx.AsyncClient, call: Call) -> Call:
        headers = {**self.auth, "Idempotency-Key": call.key}
        while True:
            call.attempts += 1
            try:
                response = await client.post(call.path, json=call.body, headers=headers)
            except httpx.TransportError:
                # No server (part 2): wait a little longer, leaving the CPU to its start.
                self.transport_errors += 1
                await asyncio.sleep(0.1)
                continue
            if self._answered(response):
                call.status, call.answer = response.status_code, response.json()
                call.answered_at, call.server = time.monotonic(), self.server
                return call
            await asyncio.sleep(0.05)

    async def read(self, client: httpx.AsyncClient, member: str) -> None:
        """A balance: the tenant ORM session (row-level security) and the ledger pool."""
        while True:
            try:
                response = await client.get(f"/api/v1/members/{member}/balance",
                                            headers=self.auth)
            except httpx.TransportError:
                self.transport_errors += 1
                await asyncio.sleep(0.1)
                continue
            if self._answered(response):
                assert response.status_code == 200, response.text
                return
            await asyncio.sleep(0.05)

    def next_call(self, rng: random.Random) -> Call:
        member = rng.choice(self.env.members)
        roll = rng.random()
        if roll < 0.2 and self._reversible:
            original = self._reversible.pop(rng.randrange(len(self._reversible)))
            delta = -1 if original.kind == "earn" else 1
            return Call("reverse", f"/api/v1/transactions/{original.answer['id']}/reversal",
                        {"points": 1}, original.member, delta)
        points = rng.randint(1, 40)
        if roll < 0.6:
            return Call("earn", "/api/v1/earn", {"member_id": member, "points": points},
                        member, points)
        return Call("redeem", "/api/v1/redemptions", {"member_id": member, "points": points},
                    member, -points)

    async def client(self, index: int) -> None:
        rng = random.Random(self.seed * 100 + index)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=20) as client:
            while not self.stop:
                if rng.random() < 0.15:
                    await self.read(client, rng.choice(self.env.members))
                    continue
                call = self.next_call(rng)
                self.calls.append(call)
                await self.send(client, call)
                if call.status in OK and call.kind != "reverse":
                    self._reversible.append(call)

    def first_ok_after(self, moment: float) -> float | None:
        times = [c.answered_at for c in self.calls if c.status in OK and c.answered_at > moment]
        return min(times) if times else None

    def assert_no_5xx_but_503(self) -> None:
        assert not [s for s in self.statuses if s >= 500 and s != 503], self.statuses
        assert not self.malformed_503, self.malformed_503[:3]


async def until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def check_ledger(env: Env) -> None:
    """No lost or doubled posting, balances as the answers imply, `ledger verify` clean."""
    answered = {c.key: c for c in env.calls if c.status in OK}
    conn = await asyncpg.connect(env.url.asyncpg_dsn)
    try:
        entries = await conn.fetch("SELECT id, idempotency_key FROM journal_entries"
                                   " WHERE partner_id = $1", env.partner_id)
        per_key = Counter(e["idempotency_key"] for e in entries)
        assert {k: n for k, n in per_key.items() if n != 1} == {}, "doubled postings"
        assert set(answered) - set(per_key) == set(), "a 2xx answer without its entry"
        assert set(per_key) - set(answered) == set(), "an entry no answer reported"
        assert {e["id"] for e in entries} == {c.answer["id"] for c in answered.values()}
        expected: Counter[str] = Counter({m: 0 for m in env.members})
        for call in answered.values():
            expected[call.member] += call.delta
        rows = await conn.fetch("SELECT member_id::text AS member, balance FROM accounts"
                                " WHERE member_id = ANY($1::uuid[])", env.members)
        assert {r["member"]: r["balance"] for r in rows} == dict(expected)
        problems = await verify_ledger(conn)
        assert not problems, [f"{p.check}: {p.detail}" for p in problems]
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[Env]:
    """The private cluster, migrated, with a partner, its OAuth client and members who
    hold OPENING points each, posted through the API of a `coalition serve` process
    that part 2 kills (started here, so its start-up overlaps nothing that is timed)."""
    cluster = PrivateCluster()
    data_dir = Path(tempfile.mkdtemp(prefix="coalition-fault-data-"))
    env = None
    try:
        await asyncio.to_thread(lambda: cluster.init().start())
        url = cluster.url.with_database("coalition")
        await ensure_database(url)
        await upgrade_async(url)
        engine = create_engine(url)
        async with create_sessionmaker(engine)() as session:
            partner = await create_partner(session, "Fault Brand", slug="fault")
            oauth_client, secret = await create_server_client(session, partner.id, "server")
            await session.commit()
        await engine.dispose()
        settings = Settings(database_url=url.raw, env="test", data_dir=data_dir,
                            secret_key="fault-injection-" + uuid.uuid4().hex)
        env = Env(cluster, url, settings, partner.id, server_port=free_port(),
                  server_log=data_dir / "server.log")
        await asyncio.to_thread(env.start_server)
        async with httpx.AsyncClient(base_url=env.server_url, timeout=20) as http:
            granted = await http.post("/oauth/token", data={"grant_type": "client_credentials"},
                                      auth=(oauth_client.client_id, secret))
            env.token = granted.json()["access_token"]
            seeding = Traffic(env.server_url, env, seed=0)
            for i in range(MEMBERS):
                enrolled = await http.post(
                    "/api/v1/members", json={"email": f"fault{i}@example.com"},
                    headers={**seeding.auth, "Idempotency-Key": uuid.uuid4().hex})
                assert enrolled.status_code == 201, enrolled.text
                env.members.append(enrolled.json()["id"])
            for member in env.members:
                call = await seeding.send(http, Call("earn", "/api/v1/earn", {
                    "member_id": member, "points": OPENING}, member, OPENING))
                assert call.status == 201, call.answer
                env.calls.append(call)
        yield env
    finally:
        if env is not None:
            await asyncio.to_thread(env.stop_server)
        await asyncio.to_thread(cluster.stop)
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_database_crash_and_restart_mid_traffic(env: Env) -> None:
    # The rules cache is per process: it listens for the first app that started it.
    owns_rules_listener = not RULES_CACHE.listener.started
    app = create_app(env.settings, env.url)
    with serve(app) as base_url:
        verifier = app.state.token_verifier
        assert verifier.caching
        traffic = Traffic(base_url, env, seed=1)
        clients = [asyncio.create_task(traffic.client(i)) for i in range(CLIENTS)]
        try:
            await asyncio.sleep(1.2)
            await asyncio.to_thread(env.cluster.crash)
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as probe:
                page = await probe.get("/", headers={"Accept": "text/html"})
                assert page.status_code == 503, page.text
                assert page.headers["content-type"].startswith("text/html")
                assert page.headers["retry-after"].isdigit()
                assert "Service unavailable" in page.text
            assert await until(lambda: not verifier.caching, 5)
            await asyncio.sleep(1.0)
            outage = traffic.statuses[503]
            await asyncio.to_thread(env.cluster.start)
            back_at = time.monotonic()
            assert await until(lambda: traffic.first_ok_after(back_at) is not None, 10)
            await asyncio.sleep(1.0)
        finally:
            if not env.cluster.running:  # a failure above must not leave it down for part 2
                await asyncio.to_thread(env.cluster.start)
            traffic.stop = True
            await asyncio.gather(*clients)
        env.calls += traffic.calls
        recovered = traffic.first_ok_after(back_at)
        assert recovered is not None and recovered - back_at < 10
        assert outage > 0, "no request saw the outage"
        traffic.assert_no_5xx_but_503()
        # The LISTEN connections came back without restarting the app.
        assert await until(lambda: verifier.caching, 10), "the token cache stayed off"
        if owns_rules_listener:
            assert await until(lambda: RULES_CACHE.listening, 10), "the rules cache's stayed down"
        # And stale ORM connections were replaced, not reported: the reads above all
        # answered 200 or 503, and more now answer 200 at once.
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as reader:
            for member in env.members:
                balance = await reader.get(f"/api/v1/members/{member}/balance",
                                           headers=traffic.auth)
                assert balance.status_code == 200, balance.text
    await check_ledger(env)


async def test_app_process_killed_and_restarted_mid_traffic(env: Env) -> None:
    # This process went through part 1's database crash too, and is back by itself.
    assert httpx.get(f"{env.server_url}/health", timeout=10).status_code == 200
    traffic = Traffic(env.server_url, env, seed=2)
    clients = [asyncio.create_task(traffic.client(i)) for i in range(CLIENTS)]
    try:
        await asyncio.sleep(1.2)
        assert env.server is not None
        env.server.send_signal(signal.SIGKILL)
        env.server.wait()
        traffic.server = 2
        await asyncio.to_thread(env.start_server)
        restarted_at = time.monotonic()
        assert await until(lambda: traffic.first_ok_after(restarted_at) is not None, 10)
        await asyncio.sleep(0.5)
    finally:
        traffic.stop = True
        await asyncio.gather(*clients)
    env.calls += traffic.calls
    assert traffic.transport_errors > 0, "no request saw the process die"
    traffic.assert_no_5xx_but_503()
    # Every write the killed process answered, sent again with its key, gets that same
    # first answer from the new process, and posts nothing.
    first = [c for c in traffic.calls if c.server == 1 and c.status in OK]
    assert first, "the first process answered nothing"
    async with httpx.AsyncClient(base_url=env.server_url, timeout=20) as client:
        for batch in range(0, len(first), 40):
            calls = first[batch:batch + 40]
            replies = await asyncio.gather(*(client.post(
                c.path, json=c.body, headers={**traffic.auth, "Idempotency-Key": c.key})
                for c in calls))
            for call, reply in zip(calls, replies, strict=True):
                assert (reply.status_code, reply.json()) == (call.status, call.answer)
    await check_ledger(env)
