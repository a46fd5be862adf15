"""Application factory."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import anyio
import msgspec
import sqlalchemy
from litestar import Litestar, Request, Response, Router, get, post
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import NotFoundException
from litestar.middleware import DefineMiddleware
from litestar.middleware.session.server_side import ServerSideSessionConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme
from litestar.params import FromPath
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import sessionmaker

from coalition.config import Settings, get_settings
from coalition.db import (
    DatabaseUrl,
    create_engine,
    create_ledger_pool,
    create_sessionmaker,
    resolve_database_url,
)
from coalition.ledger import Ledger
from tenants.auth import TokenVerifier
from tenants.mail import Mailer
from tenants.oauth import CoalitionAuthorizationServer, FormRequest
from tenants.service import PARTNER_SCOPES
from web import logs
from web.api.members import MemberController
from web.api.points import PointsController
from web.headers import security_headers
from web.portal.auth import AuthPages
from web.portal.common import LoginRequired, login_redirect
from web.portal.console import ConsolePages
from web.portal.home import HomePages
from web.portal.onboarding import OnboardingPages
from web.problems import EXCEPTION_HANDLERS, PROBLEM_TYPES, problem
from web.security import BearerTokenMiddleware
from web.sessions import PostgresSessionStore

log = logging.getLogger(__name__)
HERE = os.path.dirname(__file__)
UTC_SESSION = {"timezone": "UTC"}


async def provide_db_session(state: State) -> AsyncGenerator[AsyncSession, None]:
    async with state.sessionmaker() as session:
        yield session


def provide_ledger(state: State) -> Ledger:
    return state.ledger


@get("/health", tags=["Operations"], summary="Liveness and database check")
async def health(state: State) -> Response:
    try:
        with anyio.fail_after(2):
            await state.pool.fetchval("SELECT 1")
    except Exception:
        return problem(503, "service-unavailable", "The database is not answering.")
    return Response({"status": "ok", "database": "ok"})


async def _oauth_endpoint(request: Request, state: State, name: str | None) -> Response:
    """Run one of Authlib's (synchronous) endpoints in a worker thread on the already
    read form. Errors follow RFC 6749 section 5.2, not RFC 9457."""
    form = await request.form()
    oauth_request = FormRequest(
        request.method, str(request.url), request.headers,
        list(form.multi_items()), list(request.query_params.multi_items()),
    )
    server: CoalitionAuthorizationServer = state.oauth_server
    if name is None:
        call = server.create_token_response
    else:
        def call(r: FormRequest) -> tuple:
            return server.create_endpoint_response(name, r)
    status, body, headers = await anyio.to_thread.run_sync(call, oauth_request)
    return Response(content=msgspec.json.encode(body), status_code=status,
                    headers=dict(headers), media_type="application/json")


@post("/oauth/token", tags=["OAuth 2.0"], status_code=200,
      summary="Issue an access token (client_credentials)",
      description="RFC 6749 section 4.4. Authenticate with client_secret_basic or "
      "client_secret_post. Errors follow RFC 6749 section 5.2.")
async def oauth_token(request: Request, state: State) -> Response:
    return await _oauth_endpoint(request, state, None)


@post("/oauth/revoke", tags=["OAuth 2.0"], status_code=200,
      summary="Revoke an access token (RFC 7009)",
      description="The client the token was issued to authenticates and sends `token`. "
      "Answers 200 whether or not the token was known; the token stops working at once.")
async def oauth_revoke(request: Request, state: State) -> Response:
    response = await _oauth_endpoint(request, state, "revocation")
    # This process forgets at once; the others hear the database's NOTIFY.
    state.token_verifier.forget_all()
    return response


@post("/oauth/introspect", tags=["OAuth 2.0"], status_code=200,
      summary="Introspect an access token (RFC 7662)",
      description="Any client of the token's partner may ask; tokens of other partners, "
      "unknown, expired or revoked tokens are reported as {\"active\": false}.")
async def oauth_introspect(request: Request, state: State) -> Response:
    return await _oauth_endpoint(request, state, "introspection")


@get("/.well-known/oauth-authorization-server", tags=["OAuth 2.0"],
     summary="Authorization server metadata (RFC 8414)")
async def oauth_metadata(request: Request, state: State) -> dict:
    return state.oauth_server.metadata(str(request.base_url).rstrip("/"))


@get("/problems/{slug:str}", include_in_schema=False)
async def problem_type(slug: FromPath[str]) -> Template:
    if slug not in PROBLEM_TYPES:
        raise NotFoundException(f"No problem type {slug!r}.")
    title, explanation = PROBLEM_TYPES[slug]
    return Template("problem.html", context={"slug": slug, "title": title,
                                             "explanation": explanation})


@get("/", include_in_schema=False)
async def index(state: State) -> Template:
    counts = await state.pool.fetchrow(
        "SELECT (SELECT count(*) FROM partners) AS partners,"
        " (SELECT count(*) FROM members) AS members,"
        " (SELECT count(*) FROM journal_entries) AS entries"
    )
    return Template("index.html", context={"counts": dict(counts), "scopes": PARTNER_SCOPES})


def _openapi() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Coalition partner API",
        version="1",
        description="Issue, redeem and reverse coalition points; enrol and look up members. "
        "Every POST under /api/v1 takes an Idempotency-Key header. Errors are RFC 9457 "
        "problem documents.",
        path="/schema",
        render_plugins=[ScalarRenderPlugin()],
        components=Components(
            security_schemes={
                "partner": SecurityScheme(
                    type="oauth2",
                    flows=OAuthFlows(
                        client_credentials=OAuthFlow(token_url="/oauth/token",  # noqa: S106
                                                     scopes=PARTNER_SCOPES)
                    ),
                )
            }
        ),
    )


def create_app(
    settings: Settings | None = None, database_url: DatabaseUrl | None = None
) -> Litestar:
    settings = settings or get_settings()
    logs.install()  # no token, secret or session id reaches any log handler
    if settings.env != "production":
        # Authlib refuses plain http outside loopback; production runs behind TLS.
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        url = database_url or resolve_database_url(settings.database_url, settings.data_dir)
        engine = create_engine(url, settings.orm_pool_size, server_settings=UTC_SESSION)
        pool = await create_ledger_pool(url, settings.ledger_pool_size, server_settings=UTC_SESSION)
        sync_engine = sqlalchemy.create_engine(url.sqlalchemy_sync, pool_size=2,
                                               connect_args={"options": "-c timezone=UTC"})
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.mailer = Mailer(settings)
        app.state.pool = pool
        app.state.ledger = Ledger(pool)
        app.state.token_verifier = TokenVerifier(pool, settings.token_cache_seconds)
        await app.state.token_verifier.listen(url.asyncpg_dsn)
        app.state.oauth_server = CoalitionAuthorizationServer(
            sessionmaker(sync_engine, expire_on_commit=False), settings.access_token_ttl_seconds,
            issuer=settings.public_url.rstrip("/"),
        )
        try:
            yield
        finally:
            await app.state.token_verifier.close()
            await pool.close()
            await engine.dispose()
            sync_engine.dispose()

    secure_cookies = settings.env not in ("development", "test")
    # The partner API authenticates with bearer tokens: no session cookie, no CSRF there.
    cookie_free = ["^/api/", "^/oauth/", "^/health", "^/schema", "^/static/", "^/problems/"]
    sessions = ServerSideSessionConfig(store="sessions", secure=secure_cookies, httponly=True,
                                       samesite="lax", max_age=8 * 3600, exclude=cookie_free)
    csrf = CSRFConfig(secret=settings.resolved_secret_key(), cookie_secure=secure_cookies,
                      cookie_samesite="lax", exclude=cookie_free)
    state_holder: dict[str, Litestar] = {}

    api = Router(
        path="/api/v1",
        route_handlers=[MemberController, PointsController],
        middleware=[DefineMiddleware(BearerTokenMiddleware)],
        security=[{"partner": []}],
    )
    app = Litestar(
        route_handlers=[health, oauth_token, oauth_revoke, oauth_introspect, oauth_metadata,
                        problem_type, index, api, AuthPages, HomePages, OnboardingPages,
                        ConsolePages,
                        create_static_files_router(path="/static",
                                                   directories=[os.path.join(HERE, "static")],
                                                   include_in_schema=False)],
        middleware=[sessions.middleware],
        before_send=[security_headers(hsts=secure_cookies)],
        csrf_config=csrf,
        stores={"sessions": PostgresSessionStore(lambda: state_holder["app"].state.pool)},
        lifespan=[lifespan],
        dependencies={
            "db_session": Provide(provide_db_session),
            "ledger": Provide(provide_ledger, sync_to_thread=False),
        },
        exception_handlers={**EXCEPTION_HANDLERS, LoginRequired: login_redirect},
        openapi_config=_openapi(),
        template_config=TemplateConfig(directory=os.path.join(HERE, "templates"),
                                       engine=JinjaTemplateEngine),
        debug=False,
    )
    state_holder["app"] = app
    return app
