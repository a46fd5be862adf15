"""Real-browser test support: the app served over real HTTP by uvicorn, Debian's Chromium
driven by Playwright (never a downloaded browser), and small helpers for journeys:
one browser context per person, "log in as", numbered screenshots.

`make test` installs Debian's `chromium` package when /usr/bin/chromium is missing and
it runs as root with apt-get; elsewhere the browser tests skip and say why."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync"]
OUTPUT = Path(__file__).parent / "output"


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return (f"Debian's Chromium is not installed at {CHROMIUM}: `make test` installs the "
                "'chromium' package when run as root with apt-get; otherwise install it")
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[dev]'"
    return None


class LiveServer:
    """The app served by uvicorn on a free loopback port, in a thread with its own event
    loop, so a real browser (and real HTTP clients) can reach it. Its log records,
    uvicorn's access log included, go through the test process's logging."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        host, port = self.socket.getsockname()
        self.url = f"http://{host}:{port}"
        # log_config=None: uvicorn leaves logging alone (its default config would stop the
        # access log from reaching the root logger and so the tests' log capture).
        config = uvicorn.Config(app, log_config=None, access_log=True, lifespan="on",
                                loop="asyncio", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="live-server", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.socket]))
        except BaseException as exc:  # reported by start()
            self.error = exc

    def start(self, timeout: float = 30) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if self.error is not None or not self.thread.is_alive():
                raise RuntimeError(f"the live server did not start: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("the live server did not start in time")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.socket.close()


class Screenshots:
    """PNG files named in step order (01-apply.png, 02-…) in one folder per journey."""

    def __init__(self, journey: str) -> None:
        self.folder = OUTPUT / journey
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.taken: list[Path] = []

    async def take(self, page: Any, name: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


@dataclass
class Journey:
    """What every step of a browser journey needs: a browser, the live server, the mail
    inbox, screenshots. Each person gets a page in a browser context of their own (own
    cookies), created with `person()`. Console errors (a CSP violation shows up as one)
    and uncaught page errors are collected in `problems`."""

    browser: Any
    base_url: str
    inbox: Any
    shots: Screenshots
    contexts: list[Any] = field(default_factory=list)
    pages: dict[str, Any] = field(default_factory=dict)     # pages steps hand on, by role
    problems: list[str] = field(default_factory=list)

    async def person(self) -> Any:
        context = await self.browser.new_context(base_url=self.base_url,
                                                 viewport={"width": 1100, "height": 800})
        context.set_default_timeout(15_000)
        self.contexts.append(context)
        page = await context.new_page()

        def on_console(message: Any) -> None:
            if message.type == "error":
                where = message.location.get("url") or page.url
                self.problems.append(f"console error at {where}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.problems.append(f"error on {page.url}: {error}"))
        return page

    async def shot(self, page: Any, name: str) -> Path:
        return await self.shots.take(page, name)

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()

    def mail_link(self, address: str, path: str) -> str:
        """The path and query of the last emailed link to `path` (it points at the live
        server, since the app builds links from the request's own URL)."""
        return self.inbox.link_to(address, path)


async def submit(page: Any, button: str) -> None:
    """Click a form's submit button by its label and wait for the page it leads to."""
    async with page.expect_navigation():
        await page.get_by_role("button", name=button, exact=True).click()


async def fill_form(page: Any, fields: dict[str, str], within: str | None = None) -> None:
    """Fill inputs and selects by their `name` attribute (inside the element matching
    `within` when a page has several forms)."""
    scope = page.locator(within) if within else page
    for name, value in fields.items():
        element = scope.locator(f'[name="{name}"]')
        tag = await element.evaluate("e => e.tagName")
        if tag == "SELECT":
            await element.select_option(value)
        else:
            await element.fill(value)


async def log_in(page: Any, email: str, password: str, expect_path: str | None = None) -> None:
    """Log in through the login form as a person would; optionally check where it lands."""
    await page.goto("/login")
    await fill_form(page, {"email": email, "password": password})
    await submit(page, "Log in")
    if expect_path is not None:
        assert urlsplit(page.url).path == expect_path, f"{email} landed on {page.url}"


async def link_existing_member(server: Any, client_id: str, client_secret: str,
                               email: str) -> tuple[dict[str, str], str]:
    """As a partner's server (an httpx client on the live app): a token by client
    credentials, then the member who signed up with `email` linked to the brand. Returns
    the bearer header and the member id."""
    token = await server.post("/oauth/token", data={"grant_type": "client_credentials"},
                              auth=(client_id, client_secret))
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    linked = await server.post("/api/v1/members", json={"email": email},
                               headers={**bearer, "Idempotency-Key": uuid.uuid4().hex})
    assert linked.status_code == 200, linked.text          # the member existed
    return bearer, linked.json()["id"]
