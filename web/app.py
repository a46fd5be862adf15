"""Application factory."""

from __future__ import annotations

import logging
import os

import anyio
from litestar import Litestar, Response, get
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme
from litestar.params import FromPath
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

import settlement.affiliate_payouts  # registers the affiliate payout hook
import settlement.collect  # noqa: F401  (registers the statement payment hook)
from coalition.config import Settings, get_settings
from coalition.db import DatabaseUrl
from coalition.resources import ping
from coalition.stats import front_page_counts
from coalition.uow import Database
from tenants import passwords
from tenants.roles import can
from tenants.service import MEMBER_SCOPES, PARTNER_SCOPES
from web import api, logs, portal
from web.api_docs import SwaggerDocs
from web.headers import security_headers
from web.lifespan import lifespan
from web.oauth import OAUTH_HANDLERS
from web.portal.common import LoginRequired, login_redirect, path_ids_in_range
from web.problems import EXCEPTION_HANDLERS, PROBLEM_TYPES, RETRY_AFTER_SECONDS, problem
from web.sessions import PortalSessionConfig, PostgresSessionStore
from web.tracking import TRACKING_HANDLERS
from web.webhooks import stripe_webhook

log = logging.getLogger(__name__)
HERE = os.path.dirname(__file__)


def provide_db(state: State) -> Database:
    return state.db


@get("/health", tags=["Operations"], summary="Liveness and database check")
async def health(db: Database) -> Response:
    try:
        with anyio.fail_after(2):
            await db.run(ping)
    except Exception:
        return problem(503, "service-unavailable", "The database is not answering.",
                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return Response({"status": "ok", "database": "ok"})


@get("/problems/{slug:str}", include_in_schema=False)
async def problem_type(slug: FromPath[str]) -> Template:
    if slug not in PROBLEM_TYPES:
        raise NotFoundException(f"No problem type {slug!r}.")
    title, explanation = PROBLEM_TYPES[slug]
    return Template("problem.html", context={"slug": slug, "title": title,
                                             "explanation": explanation})


@get("/", include_in_schema=False)
async def index(db: Database) -> Template:
    counts = await db.run(front_page_counts)
    return Template("index.html", context={"counts": counts, "scopes": PARTNER_SCOPES})


def _openapi() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Coalition partner API",
        version="1",
        description="Issue, redeem and reverse coalition points; enrol and look up members. "
        "Every POST under /api/v1 takes an Idempotency-Key header. Errors are RFC 9457 "
        "problem documents.",
        path="/schema",
        render_plugins=[SwaggerDocs()],
        components=Components(
            security_schemes={
                "partner": SecurityScheme(
                    type="oauth2",
                    flows=OAuthFlows(
                        client_credentials=OAuthFlow(token_url="/oauth/token",  # noqa: S106
                                                     scopes=PARTNER_SCOPES),
                        authorization_code=OAuthFlow(
                            authorization_url="/oauth/authorize",
                            token_url="/oauth/token",  # noqa: S106
                            refresh_url="/oauth/token",
                            scopes={k: v.format(partner="the partner")
                                    for k, v in MEMBER_SCOPES.items()}),
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
    passwords.configure(settings.password_hash_concurrency,
                        settings.password_hash_max_wait_seconds,
                        settings.password_hash_memory_kib, settings.password_hash_time_cost)
    if settings.env != "production":
        # Authlib refuses plain http outside loopback; production runs behind TLS.
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

    secure_cookies = settings.env not in ("development", "test")
    # The partner API authenticates with bearer tokens: no session cookie, no CSRF there.
    # /oauth/authorize is a portal page (login, consent); the other /oauth/ endpoints are
    # called by servers and apps.
    # /webhooks/ authenticate by signature (Stripe's), never by a cookie.
    # /r/ tracking links are public redirects: no session look-up, no CSRF cookie.
    cookie_free = ["^/api/", "^/oauth/(?!authorize)", "^/health", "^/schema", "^/static/",
                   "^/problems/", "^/.well-known/", "^/webhooks/", "^/r/"]
    # New ids at login, no rows for anonymous visitors, ids stored hashed (web/sessions.py).
    sessions = PortalSessionConfig(store="sessions", secure=secure_cookies, httponly=True,
                                   samesite="lax", max_age=8 * 3600, exclude=cookie_free)
    csrf = CSRFConfig(secret=settings.resolved_secret_key(), cookie_secure=secure_cookies,
                      cookie_samesite="lax", exclude=cookie_free)
    state_holder: dict[str, Litestar] = {}

    app = Litestar(
        route_handlers=[health, problem_type, index, stripe_webhook, *TRACKING_HANDLERS,
                        *OAUTH_HANDLERS, api.router(), *portal.routes(),
                        create_static_files_router(path="/static",
                                                   directories=[os.path.join(HERE, "static")],
                                                   include_in_schema=False)],
        middleware=[sessions.middleware],
        before_send=[security_headers(hsts=secure_cookies)],
        csrf_config=csrf,
        stores={"sessions": PostgresSessionStore(lambda: state_holder["app"].state.db)},
        lifespan=[lifespan(settings, database_url)],
        dependencies={
            "db": Provide(provide_db, sync_to_thread=False),
        },
        exception_handlers={**EXCEPTION_HANDLERS, LoginRequired: login_redirect},
        before_request=path_ids_in_range,
        openapi_config=_openapi(),
        template_config=TemplateConfig(directory=os.path.join(HERE, "templates"),
                                       engine=JinjaTemplateEngine,
                                       engine_callback=_template_globals),
        debug=False,
    )
    state_holder["app"] = app
    return app


def _template_globals(engine: JinjaTemplateEngine) -> None:
    # Pages offer a link only where the role table (tenants/roles.py) lets the user
    # follow it, so a page never lists what answers 403.
    engine.engine.globals["can"] = can
