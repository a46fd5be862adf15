"""Security headers on every response."""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send

STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The interactive API docs (Scalar) load from a CDN and bootstrap with an inline script;
# this one page gets a policy that allows exactly that.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' data: https://fonts.gstatic.com https://cdn.jsdelivr.net; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def security_headers_middleware(hsts: bool):
    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            docs = scope["path"].rstrip("/") in ("/schema", "/schema/elements",
                                                 "/schema/swagger", "/schema/redoc")

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = MutableScopeHeaders.from_message(message)
                    headers["Content-Security-Policy"] = DOCS_CSP if docs else STRICT_CSP
                    headers["X-Content-Type-Options"] = "nosniff"
                    headers["X-Frame-Options"] = "DENY"
                    headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
                    headers["Cross-Origin-Opener-Policy"] = "same-origin"
                    if hsts:
                        headers["Strict-Transport-Security"] = (
                            "max-age=63072000; includeSubDomains")
                await send(message)

            await app(scope, receive, send_with_headers)

        return middleware

    return factory
