"""The partner API's interactive docs (/schema, web/api_docs.py): Swagger UI served by the
app itself from an installed package, under a Content-Security-Policy of 'self' alone.

Over HTTP: the docs pages name no URL outside the app, and every file they load is served
by it. In headless Chromium with every request to another host refused (as on a machine
with no internet): the viewer renders the API's operations from the app alone, breaks no
part of the policy, and no request leaves the app."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.browser import LiveServer, Screenshots
from web.headers import DOCS_CSP

DOCS = ("/schema", "/schema/swagger")
ANY_URL = re.compile(r"https?://[^\s\"'<>)]+", re.IGNORECASE)


class Refs(HTMLParser):
    """Every URL an HTML page names in an attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []           # (tag, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend((tag, v) for k, v in attrs
                         if v and k in ("src", "href", "data-schema", "data-oauth2-redirect"))


async def test_docs_pages_name_nothing_outside_the_app(client: httpx.AsyncClient) -> None:
    origin = str(client.base_url).rstrip("/")
    for path in DOCS:
        page = await client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert csp == DOCS_CSP, (path, csp)
        sources = dict(d.strip().partition(" ")[::2] for d in csp.split(";"))
        assert sources["default-src"] == "'none'", csp
        for directive in ("script-src", "style-src", "connect-src", "font-src"):
            assert sources[directive] == "'self'", (path, directive)
        assert sources["img-src"] == "'self' data:", csp     # Swagger UI's CSS icons
        assert "http" not in csp and "unsafe" not in csp and "*" not in csp, csp
        outside = [u for u in ANY_URL.findall(page.text) if not u.startswith(origin + "/")]
        assert not outside, (path, outside)
        # No inline code: the policy would refuse it.
        assert "<style" not in page.text and " style=" not in page.text
        assert re.findall(r"<script(?![^>]*\ssrc=)", page.text) == [], page.text
        refs = Refs()
        refs.feed(page.text)
        assert {tag for tag, _ in refs.urls} >= {"script", "link"}
        for tag, url in refs.urls:
            target = urljoin(origin + path, url)
            assert target.startswith(origin + "/"), (path, url)
            answer = await client.get(target)
            assert answer.status_code == 200, (path, tag, url, answer.status_code)
            if tag == "script":
                assert "javascript" in answer.headers["content-type"], (url, answer.headers)
    # Only the viewer's own files are served from the package, not its demo page.
    bundle = next(u for _, u in refs.urls if u.endswith("/swagger-ui-bundle.js"))
    assert (await client.get(bundle.replace("swagger-ui-bundle.js", "index.html"))
            ).status_code == 404


# Reports to the test what breaks the policy; the event bubbles to the document.
WATCH_CSP = """
document.addEventListener("securitypolicyviolation", function (event) {
  window.__cspViolation(event.violatedDirective + " refused "
                        + (event.blockedURI || "inline code") + " at " + event.sourceFile);
});
"""


@pytest.mark.slow
async def test_docs_render_the_operations_with_no_internet(chromium,
                                                           live_server: LiveServer) -> None:
    origin = live_server.url
    left: list[str] = []
    problems: list[str] = []

    async def only_the_app(route) -> None:
        url = route.request.url
        if url.startswith(origin + "/"):
            await route.continue_()
        else:
            left.append(url)
            await route.abort("internetdisconnected")

    context = await chromium.new_context(base_url=origin, viewport={"width": 1100,
                                                                     "height": 900})
    context.set_default_timeout(15_000)
    try:
        await context.route("**/*", only_the_app)
        await context.expose_binding("__cspViolation",
                                     lambda source, text: problems.append(f"CSP {text}"))
        await context.add_init_script(WATCH_CSP)
        page = await context.new_page()
        page.on("console", lambda m: m.type == "error" and problems.append(f"console {m.text}"))
        page.on("pageerror", lambda e: problems.append(f"page error {e}"))
        served: list[str] = []
        page.on("requestfinished", lambda r: served.append(r.url))

        await page.goto("/schema")
        earn = page.locator('.opblock-summary-path[data-path="/api/v1/earn"]')
        await earn.wait_for()
        assert await page.locator(".opblock").count() >= 20
        # An operation opens to its parameters, read from the app's schema.
        await earn.click()
        await page.locator(".opblock.is-open .parameters").get_by_text(
            "Idempotency-Key").first.wait_for()
        # For a person to look at (tests/output/api_docs/): the opened operation.
        await page.screenshot(path=str(Screenshots("api_docs").folder / "earn.png"))
    finally:
        await context.close()
    assert not left, f"requests left the app: {left}"
    assert not problems, "\n".join(problems)
    assert f"{origin}/schema/openapi.json" in served
    assert all(urlsplit(u).netloc == urlsplit(origin).netloc for u in served), served
