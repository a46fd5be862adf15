"""Errors are pages for people and RFC 9457 documents for programs: a browser (Accept:
text/html) asking a portal address gets the site's HTML error page with the right status;
the API, OAuth endpoints and clients asking for JSON (or anything) get problem JSON."""

import uuid

import pytest

from tests.portal import csrf_of, submit
from tests.test_console import owner_browser
from tests.test_portal_accounts import address, register

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def assert_error_page(response, status: int, title: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
    assert f'<h1 id="error-title">{title}</h1>' in response.text
    assert '<nav class="top">' in response.text and "/static/app.css" in response.text
    assert "<script" not in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]


def assert_problem(response, status: int) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == status
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_unknown_page_is_an_html_404_for_browsers(browser):
    assert_error_page(await browser.get("/nope", headers=HTML), 404, "Page not found")
    assert_error_page(await browser.get(f"/partner/clients/{uuid.uuid4()}", headers=HTML), 404,
                      "Page not found")
    assert_error_page(await browser.get("/problems/nope", headers=HTML), 404, "Page not found")


@pytest.mark.parametrize("accept", ["application/json", "application/problem+json", "*/*",
                                    "application/json, text/html;q=0.5"])
async def test_programs_keep_problem_json_on_portal_paths(browser, accept):
    assert_problem(await browser.get("/nope", headers={"Accept": accept}), 404)


@pytest.mark.parametrize("path", ["/api/v1/nothing-here", "/oauth/nothing", "/api/v1/members"])
async def test_api_and_oauth_always_answer_problem_json(browser, path):
    response = await browser.get(path, headers=HTML)
    assert_problem(response, 401 if path == "/api/v1/members" else 404)


async def test_missing_resource_in_the_console_is_an_html_404(app, client):
    owner, _ = await owner_browser(app, client)
    async with owner:
        page = await owner.get("/partner/clients")
        missing = await owner.post(f"/partner/clients/{uuid.uuid4()}/rotate",
                                   data={"_csrf_token": csrf_of(page)}, headers=HTML)
        assert_error_page(missing, 404, "Page not found")
        assert "No such client." in missing.text
        as_program = await owner.post(f"/partner/clients/{uuid.uuid4()}/rotate",
                                      data={"_csrf_token": csrf_of(page)})
        assert_problem(as_program, 404)
        wrong_method = await owner.get(f"/partner/clients/{uuid.uuid4()}/rotate", headers=HTML)
        assert_error_page(wrong_method, 405, "Not available")


async def test_forbidden_pages_are_html_403(app, client, browser, smtp):
    analyst, _ = await owner_browser(app, client, role="analyst")
    async with analyst:
        refused = await analyst.get("/partner/clients", headers=HTML)
        assert_error_page(refused, 403, "Not allowed")
        assert "Your role (analyst) does not allow this." in refused.text
        assert_problem(await analyst.get("/partner/clients", headers={"Accept": "*/*"}), 403)

    email = address()
    await register(browser, email)
    await browser.get(smtp.link_to(email, "/verify-email"))
    await submit(browser, "/login", "/login", email=email, password="correct horse battery")
    assert_error_page(await browser.get("/operator", headers=HTML), 403, "Not allowed")
    # A form posted without its CSRF token.
    no_csrf = await browser.post("/logout", headers=HTML)
    assert_error_page(no_csrf, 403, "Not allowed")


async def test_an_id_beyond_any_row_in_a_portal_address_is_a_404(app, client, db):
    """Every portal route with a numeric id, given one larger than a bigint by a user the
    page is for (the operator, a partner's owner, an affiliate), answers 404; the database
    driver would otherwise refuse the number with an error (a 500)."""
    from tests.affiliate_c_helpers import new_affiliate
    from tests.test_affiliate_dashboard import affiliate_browser
    from tests.test_rules_console import operator_browser

    huge = str(10**20)
    routes = sorted((route.path, method) for route in app.routes
                    if ":int}" in route.path and not route.path.startswith("/api/")
                    for method in route.methods - {"HEAD", "OPTIONS"})
    assert len(routes) >= 20
    owner, _ = await owner_browser(app, client)
    users = {"/operator": await operator_browser(app), "/partner": owner,
             "/affiliate": await affiliate_browser(app, await new_affiliate(db, "sepa"))}
    tokens = {section: csrf_of(await user.get(section)) for section, user in users.items()}
    for path, method in routes:
        section = next(s for s in users if path.startswith(s + "/"))
        address = "/".join(huge if part.endswith(":int}") else part for part in path.split("/"))
        answer = await users[section].request(method, address, headers=HTML,
                                              data=None if method == "GET"
                                              else {"_csrf_token": tokens[section]})
        assert answer.status_code == 404, (method, address, answer.status_code)
        assert_error_page(answer, 404, "Page not found")
    for user in users.values():
        await user.aclose()
