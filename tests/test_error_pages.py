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
