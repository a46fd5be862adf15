"""Security headers on every response."""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The interactive API docs (Swagger UI served from the installed package, web/api_docs.py):
# scripts, styles, images and the schema fetch from the app itself, nothing else (data:
# images are the icons inside Swagger UI's own stylesheet: they load nothing).
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def csp_with_form_targets(origins: list[str]) -> str:
    """The strict policy, with form-action widened to the given origins. Browsers apply
    form-action to the redirects that follow a form submission, so a page whose form
    ends in a redirect to a partner app (consent, or login on the way to it) must name
    the app's registered origin."""
    return STRICT_CSP.replace("form-action 'self'",
                              " ".join(["form-action 'self'", *sorted(set(origins))]))


def security_headers(hsts: bool):
    """A `before_send` hook: it sees every response the app sends, including the ones
    no route middleware wraps (unknown paths, wrong methods, CSRF refusals)."""

    async def add_headers(message: Message, scope: Scope) -> None:
        if scope["type"] != "http" or message["type"] != "http.response.start":
            return
        docs = scope["path"].rstrip("/") in ("/schema", "/schema/swagger")
        headers = MutableScopeHeaders.from_message(message)
        if "Content-Security-Policy" not in headers:   # a page may set its own
            headers["Content-Security-Policy"] = DOCS_CSP if docs else STRICT_CSP
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if hsts:
            headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"

    return add_headers
