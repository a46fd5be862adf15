"""A safety net over the whole server-rendered portal. With the demo coalition loaded
(a copy of its own, tests/portal_demo.py), every kind of user (the operator; Hurtownia's
owner, admin, analyst and cashier; Moda Centrum's owner; a member; a company account's
admin; an affiliate; nobody) starts at their home page and follows every same-origin
link, and submits every GET form (filters, the link builder), breadth-first:
- no page fails (5xx), no link is dead (404) or refused (401/403/other 4xx) to the
  user it is shown to, and no signed-in user is sent to the login page;
- every HTML page has a <title> and shows no template source ("{{", "{%", a None);
- no page carries inline code the Content-Security-Policy refuses: no <script> without
  src, no <style>, no style="" or on…="" attribute, no javascript: link;
- every stylesheet, script and image a page references loads;
- browsing changes nothing in the database (a GET that writes is a bug).
Then every page any user reached is asked for by every user who did not: another kind
of user's page is a 403 (the login page for nobody), never a failure, and another
brand's page never shows that brand. Every portal page is reached by some link, but
those listed in NOT_LINKED with their reason. Last, headless Chromium opens one page of
each route the crawl reached, in the session of a role that reached it, and no page breaks
the app's Content-Security-Policy; a statement's Print button opens the print dialog."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import asyncpg
import httpx
import pytest
from litestar import Litestar

from coalition.config import Settings
from tests.browser import LiveServer
from tests.portal_demo import ORIGIN, ROLES, Demo, Role, database_fingerprint, signed_in
from web.app import create_app
from web.demo import PARTNERS

pytestmark = pytest.mark.slow

MAX_PAGES = 300
# Pages of one shape (the same route with other ids: /operator/partners/{id}) after
# which further ones add time, not coverage: a list of 40 members' pages is sampled.
PER_SHAPE = 4
# Links the crawler does not follow, each for its reason.
NOT_CRAWLED = [
    # Affiliate tracking links are public redirects to the partner's shop that record a
    # click on purpose: following them is a visit, not browsing (tests/test_affiliate_
    # tracking.py covers them).
    re.compile(r"^/r/"),
    # The OpenAPI viewer is a generated page, not a portal template: tests/test_api_docs.py
    # checks it, in a browser too.
    re.compile(r"^/schema(/|$)"),
]

# Generated pages that are not HTML documents of the portal.
NOT_HTML = ("text/csv", "application/json", "application/xml", "text/plain", "image/")

# Template source that reached the page: Jinja delimiters, or a Python None printed
# where a value belongs (a whole table cell or a "label: None").
LEAKS = [re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}"),
         re.compile(r">\s*None\s*<"), re.compile(r":\s*None\b")]
IDS = re.compile(r"(?<=/)(\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                 r"(?=/|$)")


class Page(HTMLParser):
    """The links, assets and title of one HTML page, and what its GET forms (filters,
    the link builder) submit: with the first option of every menu, and once with each
    other option of each menu. (Not what the page has selected: a filtered page would
    then offer every combination of filters.)"""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.assets: list[str] = []
        self.title: str | None = None
        self.inline: list[str] = []       # code the Content-Security-Policy refuses
        self._in_title = False
        self._form: tuple[str, list[tuple[str, str]], list[tuple[str, list[str]]]] | None = None
        self._select: tuple[str, list[str]] | None = None
        self._option: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.inline.extend(f'<{tag} {k}="{v}">' for k, v in values.items()
                           if k == "style" or k.startswith("on")
                           or (k in ("href", "src", "action", "formaction")
                               and v.strip().lower().startswith("javascript:")))
        if tag == "style" or (tag == "script" and not values.get("src")):
            self.inline.append(f"<{tag}> without src")
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        elif tag == "link" and values.get("href"):
            self.assets.append(values["href"])
        elif tag in ("script", "img") and values.get("src"):
            self.assets.append(values["src"])
        elif tag == "title":
            self._in_title, self.title = True, ""
        elif tag == "form" and values.get("method", "get").lower() == "get":
            self._form = (values.get("action", ""), [], [])
        elif self._form is not None and tag == "input" and values.get("name"):
            kind = values.get("type", "text").lower()
            if (kind in ("checkbox", "radio") and "checked" not in values) \
                    or kind in ("submit", "button", "image", "file", "reset"):
                return
            if "required" in values and not values.get("value"):
                # A browser does not submit it either (the login page's SSO form: what
                # the user types there, tests/test_sso.py does).
                self._form = None
                return
            self._form[1].append((values["name"], values.get("value", "")))
        elif self._form is not None and tag == "select" and values.get("name"):
            self._select = (values["name"], [])
            self._form[2].append(self._select)
        elif self._select is not None and tag == "option":
            if "value" in values:
                self._add_option(values["value"])
            else:
                self._option = ""

    def _add_option(self, value: str) -> None:
        assert self._select is not None
        self._select[1].append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "select":
            self._select = None
        elif tag == "form" and self._form is not None:
            action, fields, selects = self._form
            action = action.split("#")[0]
            menus = [(name, options) for name, options in selects if options]
            chosen = [(name, options[0]) for name, options in menus]
            self.links.append(f"{action}?{urlencode(fields + chosen)}")
            for index, (name, options) in enumerate(menus):
                for option in options[1:]:
                    other = [*chosen[:index], (name, option), *chosen[index + 1:]]
                    self.links.append(f"{action}?{urlencode(fields + other)}")
            self._form = None

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = (self.title or "") + data
        elif self._option == "" and data.strip():
            # An <option> with no value attribute submits its text.
            self._add_option(data.strip())
            self._option = None


def internal(href: str, base: str) -> str | None:
    """The same-origin path and normalised query a link points at, or None for another
    origin, a fragment, mailto: and the like."""
    absolute = urljoin(ORIGIN + base, href.strip())
    parts = urlsplit(absolute)
    if parts.scheme not in ("http", "https") or f"{parts.scheme}://{parts.netloc}" != ORIGIN:
        return None
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return parts.path + (f"?{query}" if query else "")


def shape(url: str) -> str:
    """The URL with its ids, in the path and the query, as {id}: a filter's other
    status is another page, another program's the same one."""
    path, _, query = url.partition("?")
    pairs = sorted((k, IDS.sub("{id}", "/" + v)[1:]) for k, v in
                   parse_qsl(query, keep_blank_values=True))
    return IDS.sub("{id}", path) + ("?" + urlencode(pairs) if pairs else "")


@dataclass
class Crawl:
    role: Role
    visited: dict[str, int] = field(default_factory=dict)   # url -> status
    problems: list[str] = field(default_factory=list)
    assets: set[str] = field(default_factory=set)
    html: list[str] = field(default_factory=list)           # the HTML pages, in order
    cookies: dict[str, str] = field(default_factory=dict)   # the signed-in session's


def read_html(where: str, response: httpx.Response, problems: list[str]) -> Page:
    """The page parsed; what is wrong with it added to `problems`."""
    parsed = Page()
    parsed.feed(response.text)
    if not (parsed.title or "").strip():
        problems.append(f"{where} has no <title>")
    for pattern in LEAKS:
        if match := pattern.search(response.text):
            shown = response.text[max(match.start() - 80, 0):match.end() + 40]
            problems.append(f"{where} shows template source: {shown!r}")
    if parsed.inline:
        problems.append(f"{where} has inline code the CSP refuses: {parsed.inline}")
    return parsed


def is_html(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/html")


async def crawl(browser: httpx.AsyncClient, role: Role,
                on_page: Callable[[str, httpx.Response], None] | None = None) -> Crawl:
    """Browse as `role` from its start pages; `on_page` is shown every HTML page read."""
    result = Crawl(role)
    queue: deque[tuple[str, str]] = deque((url, "(start)") for url in role.start)
    queued = set(role.start)
    shapes: dict[str, int] = {}
    while queue and len(result.visited) < MAX_PAGES:
        url, source = queue.popleft()
        response = await browser.get(url)
        status = response.status_code
        result.visited[url] = status
        where = f"{role.name}: GET {url} (linked from {source})"
        targets: list[str] = []
        if status >= 500:
            result.problems.append(f"{where} answered {status}")
        elif status == 404:
            result.problems.append(f"{where} is a dead link (404)")
        elif status >= 400:
            # The role's own pages offered it: a link it may not follow (403), or a
            # filter choice the page itself rejects (400), is a broken page.
            result.problems.append(f"{where} answered {status} to a link shown to this role")
        elif 300 <= status < 400:
            target = internal(response.headers.get("location", ""), url)
            if target is not None and role.kind is not None and target.startswith("/login"):
                result.problems.append(f"{where} sent a signed-in user to {target}")
            elif target is not None:
                targets.append(target)
        elif is_html(response):
            parsed = read_html(where, response, result.problems)
            result.html.append(url)
            if on_page is not None:
                on_page(url, response)
            result.assets.update(filter(None, (internal(a, url) for a in parsed.assets
                                               if not a.startswith("data:"))))
            targets.extend(filter(None, (internal(h, url) for h in parsed.links)))
        elif not response.headers.get("content-type", "").startswith(NOT_HTML):
            result.problems.append(f"{where} answered {response.headers.get('content-type')}")
        for target in targets:
            if target in queued or any(p.search(target) for p in NOT_CRAWLED):
                continue
            queued.add(target)
            key = shape(target)
            if shapes.get(key, 0) >= PER_SHAPE:
                continue
            shapes[key] = shapes.get(key, 0) + 1
            queue.append((target, url))
    if queue:
        result.problems.append(f"{role.name}: the crawl stopped at {MAX_PAGES} pages with"
                               f" {len(queue)} links left; raise MAX_PAGES")
    return result


MEMBER_FIRST_VISIT = "/member"
# Whose pages live under a first path segment; PUBLIC ones there are for anybody.
AREAS = {"operator": "operator", "partner": "partner_staff", "member": "member",
         "affiliate": "affiliate"}
PUBLIC = {"/affiliate/signup"}


async def crawl_as(app: Litestar, conn: asyncpg.Connection, role: Role) -> Crawl:
    browser = await signed_in(app, role)
    try:
        if role.kind == "member":
            # A member's first look at their home draws their referral code, once and by
            # design (coalition/referrals.py ensure_code); from then on, browsing reads.
            await browser.get(MEMBER_FIRST_VISIT)
        before = await database_fingerprint(conn)
        result = await crawl(browser, role)
        after = await database_fingerprint(conn)
        changed = sorted(t for t in after if after[t] != before.get(t))
        if changed:
            result.problems.append(f"{role.name}: browsing {len(result.visited)} pages"
                                   f" changed the tables {changed}")
        for asset in sorted(result.assets):
            answer = await browser.get(asset)
            if answer.status_code != 200:
                result.problems.append(f"{role.name}: asset {asset} answered"
                                       f" {answer.status_code}")
        result.cookies = {cookie.name: cookie.value or "" for cookie in browser.cookies.jar}
    finally:
        await browser.aclose()
    return result


@pytest.fixture(scope="module")
async def crawls(portal_demo: Demo) -> dict[str, Crawl]:
    conn = await asyncpg.connect(portal_demo.url.asyncpg_dsn)
    try:
        return {role.name: await crawl_as(portal_demo.app, conn, role) for role in ROLES}
    finally:
        await conn.close()


async def test_every_role_crawls_the_portal_without_a_broken_page(
        crawls: dict[str, Crawl]) -> None:
    for role in ROLES:
        visited = crawls[role.name].visited
        # The crawl reached the role's pages, not just its home.
        assert len(visited) >= (5 if role.kind in (None, "affiliate") or role.name == "cashier"
                                else 10), (role.name, sorted(visited))
    problems = [p for role in ROLES for p in crawls[role.name].problems]
    assert not problems, "\n".join(problems)


def area(path: str) -> str | None:
    """The kind of user a page is for, or None for a public page."""
    if path.split("?")[0] in PUBLIC:
        return None
    return AREAS.get(path.split("/")[1].split("?")[0])


def brand(role: Role) -> str | None:
    """The partner a staff member works for, by name (the demo's staff are named
    role@slug.example)."""
    if role.kind != "partner_staff" or role.email is None:
        return None
    return dict(PARTNERS)[role.email.partition("@")[2].split(".")[0]]


async def check_error_page(browser: httpx.AsyncClient, where: str,
                           response: httpx.Response, problems: list[str],
                           followed: set[str]) -> None:
    """A refusal is a page too: titled, and its ways out ("Your portal", the home page)
    lead somewhere (`followed`: the links already tried for this user)."""
    for link in read_html(f"{where} (the refusal)", response, problems).links:
        target = internal(link, "/")
        if target is None or target in followed:
            continue
        followed.add(target)
        answer = await browser.get(target, follow_redirects=True)
        if answer.status_code != 200:
            problems.append(f"{where}: the refusal's link {target} answered"
                            f" {answer.status_code}")


async def test_pages_of_others_are_refused_never_failed(portal_demo: Demo,
                                                         crawls: dict[str, Crawl]) -> None:
    """Every page any role reached, asked for by every role that did not reach it: a
    page of another kind of user is a 403 (the login page for nobody); one of the same
    kind is shown, refused or not found, and another brand's is never shown with that
    brand's name in it."""
    reached: dict[str, set[str]] = {}
    for name, result in crawls.items():
        for url, status in result.visited.items():
            if status == 200:
                reached.setdefault(url, set()).add(name)
    roles = {role.name: role for role in ROLES}
    problems = []
    for role in ROLES:
        browser = await signed_in(portal_demo.app, role)
        followed: set[str] = set()
        try:
            for url in sorted(reached):
                if url in crawls[role.name].visited:
                    continue
                response = await browser.get(url)
                status, owner = response.status_code, area(url)
                where = f"{role.name}: GET {url} (reached by {sorted(reached[url])})"
                if status >= 500:
                    problems.append(f"{where} answered {status}")
                elif owner is None:
                    continue
                elif role.kind is None:
                    if status not in (302, 303) or not response.headers.get(
                            "location", "").startswith("/login?next="):
                        problems.append(f"{where} answered {status}, not the login page")
                elif role.kind != owner:
                    if status != 403:
                        problems.append(f"{where} answered {status}, not 403")
                    elif is_html(response):
                        await check_error_page(browser, where, response, problems,
                                               followed)
                elif status not in (200, 403, 404):
                    problems.append(f"{where} answered {status}")
                elif status == 200 and (mine := brand(role)):
                    # Reached only by another brand's staff: that brand's own page.
                    seen = {brand(roles[n]) for n in reached[url]} - {None}
                    leaked = [b for b in seen if mine not in seen and b in response.text]
                    if leaked:
                        problems.append(f"{where} shows {leaked}'s page to {mine}")
        finally:
            await browser.aclose()
    assert not problems, "\n".join(problems)


# Portal pages no page links to, each for its reason; the coverage test below fails on
# any other page the crawl does not reach (an orphan page, or a link gone missing).
NOT_LINKED = {
    "/verify-email": "the link in the confirmation email",
    "/reset-password": "the link in the password-reset email",
    "/set-password": "the link in a new partner owner's or staff member's invitation",
    "/join/{id}": "a member's referral link, shown as text to share",
    "/oauth/authorize": "where a partner's app sends the member (OAuth)",
    "/sso/start": "the login page's single sign-on form (GET, the partner's domain)",
    "/sso/callback": "where the partner's identity provider sends the staff member back",
    "/portal": "the error pages' way home (the refusals test follows it)",
    "/operator/payments/{id}/mark": "a SEPA credit once in a bank file (a POST the crawl"
                                    " does not make)",
}
# Not portal pages: the API, OAuth and OpenID endpoints, problem type documentation, the
# OpenAPI viewer, static files and the affiliate tracking redirects.
NOT_PORTAL = re.compile(r"^/(api|oauth|\.well-known|problems|schema|static|r)(/|$)")


async def test_every_portal_page_is_linked_from_another(portal_demo: Demo,
                                                        crawls: dict[str, Crawl]) -> None:
    reached = {shape(url).split("?")[0] for c in crawls.values() for url in c.visited}
    pages = {re.sub(r"\{[^}]+\}", "{id}", route.path) for route in portal_demo.app.routes
             if "GET" in getattr(route, "methods", ())}
    missing = sorted(p for p in pages - reached - set(NOT_LINKED)
                     if not NOT_PORTAL.match(p))
    assert not missing, f"no page links to {missing}"


# Each page reports to the test what breaks the policy (the event fires on the element or
# document and bubbles); print() is stubbed to count its calls instead of opening a dialog.
WATCH_CSP = """
document.addEventListener("securitypolicyviolation", function (event) {
  window.__cspViolation(event.violatedDirective + " refused "
                        + (event.blockedURI || "inline code") + " at "
                        + event.sourceFile + ":" + event.lineNumber);
});
window.print = function () { window.__printed = (window.__printed || 0) + 1; };
"""
PRINT_PAGE = re.compile(r"^/partner/statements/\d+/print$")


@pytest.fixture(scope="module")
def portal_server(portal_demo: Demo, settings: Settings) -> Iterator[LiveServer]:
    """The module's demo copy over real HTTP, for the browser."""
    server = LiveServer(create_app(settings.model_copy(
        update={"database_url": portal_demo.url.raw}), portal_demo.url)).start()
    yield server
    server.stop()


async def signed_in_page(chromium, base_url: str, crawled: Crawl, problems: list[str]) -> Any:
    """A page in a browser context of its own, in the session the role's crawl signed in
    with (no second login: password hashing is the dearest thing a page view can cost);
    what breaks the policy on it goes to `problems`."""
    role = crawled.role
    context = await chromium.new_context(base_url=base_url)
    context.set_default_timeout(15_000)
    await context.add_cookies([{"name": name, "value": value, "url": base_url}
                               for name, value in crawled.cookies.items()])
    await context.expose_binding(
        "__cspViolation",
        lambda source, text: problems.append(f"{role.name}: {source['page'].url}: CSP {text}"))
    await context.add_init_script(WATCH_CSP)
    page = await context.new_page()
    page.on("console", lambda m: m.type == "error" and problems.append(
        f"{role.name}: {m.location.get('url')}: console error {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"{role.name}: {page.url}: {e}"))
    return page


async def browse(page: Any, role: Role, pages: list[str]) -> int:
    """Open `pages` in turn; on a statement's printable view, click Print. Returns how many
    times print() was called."""
    printed = 0
    for url in pages:
        response = await page.goto(url)
        assert response is not None and response.status == 200, (role.name, url)
        if PRINT_PAGE.match(url):
            await page.get_by_role("button", name="Print").click()
            printed += await page.evaluate("window.__printed || 0")
    return printed


async def test_no_portal_page_breaks_the_content_security_policy(
        chromium, portal_server: LiveServer, crawls: dict[str, Crawl]) -> None:
    """One page of each route (path shape) the crawl reached, opened in Chromium by the
    first role that reached it, in that role's session: no CSP violation (an inline
    script, style or handler the policy refuses), no console error. The Print button of a
    statement calls window.print()."""
    seen: set[str] = set()
    problems: list[str] = []
    plan: list[tuple[Role, list[str]]] = []
    for role in ROLES:
        pages = []
        for url in crawls[role.name].html:
            if (key := shape(url).split("?")[0]) not in seen:
                seen.add(key)
                pages.append(url)
        if pages:
            plan.append((role, pages))
    # The roles browse at the same time: the server's and the browser's waits overlap.
    opened = await asyncio.gather(*(signed_in_page(chromium, portal_server.url,
                                                   crawls[role.name], problems)
                                    for role, _ in plan))
    try:
        printed = await asyncio.gather(*(browse(page, role, pages)
                                         for page, (role, pages) in zip(opened, plan, strict=True)))
    finally:
        await asyncio.gather(*(page.context.close() for page in opened))
    assert not problems, "\n".join(problems)
    assert len(seen) >= 60 and sum(printed) == 1, (sorted(seen), printed)
