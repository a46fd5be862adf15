"""Application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import anyio
import sqlalchemy
from litestar import Litestar, Request, Response, Router, get
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import NotFoundException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme
from litestar.params import FromPath
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import sessionmaker

import coalition.affiliates.payouts  # noqa: F401  (registers the affiliate payout hook)
import settlement.collect  # noqa: F401  (registers the statement payment hook)
from coalition.affiliates.tracking import ClickRecorder
from coalition.config import Settings, get_settings
from coalition.db import (
    DatabaseUrl,
    create_engine,
    create_ledger_pool,
    create_sessionmaker,
    resolve_database_url,
)
from coalition.ledger import Ledger
from coalition.rules.service import CACHE as RULES_CACHE
from coalition.uow import Database
from settlement.stripe_gateway import StripeConfig, StripeGateway
from tenants import passwords
from tenants.auth import PartnerPrincipal, TokenVerifier
from tenants.keys import SecretBox, current_signing_key
from tenants.mail import Mailer
from tenants.oauth_server import CoalitionAuthorizationServer
from tenants.roles import can
from tenants.scope import TENANT_LOGIN_ROLE, tenant_session
from tenants.service import MEMBER_SCOPES, PARTNER_SCOPES
from web import logs
from web.api.checkout import CheckoutController
from web.api.members import MemberController
from web.api.payments import PaymentController
from web.api.points import PointsController
from web.api.policies import PolicyController
from web.api.purchases import EventController, PurchaseController
from web.api.rewards import RewardController
from web.api.screen import screen_request
from web.api.settlement import SettlementController
from web.api.statements import StatementController
from web.api.tiers import TierController
from web.api_docs import SwaggerDocs
from web.headers import security_headers
from web.oauth import OAUTH_HANDLERS
from web.portal.affiliate import AffiliateDashboardPages
from web.portal.affiliate_commissions import OperatorCommissionPages, PartnerCommissionPages
from web.portal.affiliate_console import AffiliateConsolePages
from web.portal.affiliate_operator import OperatorAffiliatePayoutPages
from web.portal.affiliates import AffiliatePages
from web.portal.auth import AuthPages
from web.portal.authorize import AuthorizePages
from web.portal.common import LoginRequired, login_redirect, path_ids_in_range
from web.portal.company import CompanyPages
from web.portal.connections import ConnectionPages
from web.portal.console import ConsolePages
from web.portal.coupons import CouponPages
from web.portal.finance import OperatorFinancePages
from web.portal.home import HomePages
from web.portal.onboarding import OnboardingPages
from web.portal.payments import OperatorPaymentPages, PartnerPayoutPages
from web.portal.policies import OperatorPolicyPages, PartnerPolicyPages
from web.portal.profile import ProfilePages
from web.portal.rewards import MemberRewardPages
from web.portal.rewards_console import RewardConsolePages
from web.portal.rules import OperatorRulePages, PartnerRulePages
from web.portal.segments import OperatorSegmentPages, PartnerSegmentPages
from web.portal.settlement_terms import OperatorTermsPages, PartnerTermsPages
from web.portal.sso import SsoLoginPages, SsoSettingsPages
from web.portal.statements import OperatorSettlementPages, PartnerStatementPages
from web.portal.tiers import OperatorTierPages
from web.problems import EXCEPTION_HANDLERS, PROBLEM_TYPES, RETRY_AFTER_SECONDS, problem
from web.security import BearerTokenMiddleware
from web.sessions import PortalSessionConfig, PostgresSessionStore
from web.tracking import TRACKING_HANDLERS
from web.webhooks import stripe_webhook

log = logging.getLogger(__name__)
HERE = os.path.dirname(__file__)
UTC_SESSION = {"timezone": "UTC"}


async def provide_db_session(state: State) -> AsyncGenerator[AsyncSession, None]:
    async with state.sessionmaker() as session:
        yield session


async def provide_api_session(request: Request, state: State
                              ) -> AsyncGenerator[AsyncSession, None]:
    """The partner API's session: every query runs as coalition_tenant for the partner
    of the bearer token (tenants/scope.py)."""
    principal: PartnerPrincipal = request.user
    async with tenant_session(state.tenant_sessionmaker, principal.partner_id) as session:
        yield session


def provide_db(state: State) -> Database:
    return state.db


def provide_ledger(state: State) -> Ledger:
    return state.ledger


@get("/health", tags=["Operations"], summary="Liveness and database check")
async def health(state: State) -> Response:
    try:
        with anyio.fail_after(2):
            await state.pool.fetchval("SELECT 1")
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

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        url = database_url or resolve_database_url(settings.database_url, settings.data_dir)
        engine = create_engine(url, settings.orm_pool_size, server_settings=UTC_SESSION)
        pool = await create_ledger_pool(url, settings.ledger_pool_size, server_settings=UTC_SESSION)
        sync_engine = sqlalchemy.create_engine(url.sqlalchemy_sync, pool_size=2,
                                               pool_pre_ping=True,  # survives a DB restart
                                               connect_args={"options": "-c timezone=UTC"})
        app.state.sessionmaker = create_sessionmaker(engine)
        # Tenant sessions log in as coalition_tenant_login: under row-level security
        # whatever the SQL does, RESET ROLE included (tenants/scope.py).
        tenant_url = (DatabaseUrl(settings.tenant_database_url) if settings.tenant_database_url
                      else url.with_user(TENANT_LOGIN_ROLE))
        tenant_engine = create_engine(tenant_url, settings.orm_pool_size,
                                      server_settings=UTC_SESSION)
        app.state.tenant_sessionmaker = create_sessionmaker(tenant_engine)
        app.state.mailer = Mailer(settings)
        app.state.settings = settings
        app.state.pool = pool
        tenant_pool = await create_ledger_pool(tenant_url, settings.ledger_pool_size,
                                               server_settings=UTC_SESSION)
        # Every use case runs in one Tx on these (coalition/uow.py).
        app.state.db = Database(pool, tenant_pool=tenant_pool, orm_url=url.sqlalchemy_async)
        # Stripe: built even with no key configured; payment actions then answer a
        # problem naming COALITION_STRIPE_SECRET_KEY (settlement/stripe_gateway.py).
        app.state.stripe = StripeGateway(StripeConfig.from_settings(settings), pool,
                                         app.state.mailer)
        app.state.ledger = Ledger(pool)
        # Tracking-link clicks, written in batches (coalition/affiliates/tracking.py).
        app.state.click_recorder = ClickRecorder(pool, settings.resolved_secret_key(),
                                                 interval=settings.click_flush_seconds)
        app.state.click_recorder.start()
        app.state.token_verifier = TokenVerifier(pool, settings.token_cache_seconds)
        await app.state.token_verifier.listen(url.asyncpg_dsn)
        # Earning-rule edits reach every process's rule cache (coalition/rules/service.py).
        # The cache is per process: a second app in the same process (the tests' live
        # servers run on their own event loop) must neither replace nor close the first
        # app's listener connection, which belongs to the first app's loop.
        owns_rules_listener = not RULES_CACHE.listener.started  # (even if reconnecting)
        if owns_rules_listener:
            await RULES_CACHE.listen(url.asyncpg_dsn)
        sync_sessions = sessionmaker(sync_engine, expire_on_commit=False)
        box = SecretBox(settings.resolved_secret_key())
        app.state.oauth_server = CoalitionAuthorizationServer(
            sync_sessions, settings.access_token_ttl_seconds, box,
            issuer=settings.public_url.rstrip("/"),
        )
        app.state.oauth_server.on_tokens_revoked = app.state.token_verifier.forget_all

        def ensure_signing_key() -> None:
            with sync_sessions() as session, session.begin():
                current_signing_key(session, box)
        await anyio.to_thread.run_sync(ensure_signing_key)
        worker = None
        if settings.in_process_worker:
            from web.jobs import run_worker

            worker = asyncio.create_task(run_worker(url, install_signal_handlers=False))
        try:
            yield
        finally:
            if worker is not None:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            # No click is lost on a clean stop: what is buffered is written now.
            await app.state.click_recorder.close()
            await app.state.token_verifier.close()
            if owns_rules_listener:
                await RULES_CACHE.close()
            await app.state.db.close()
            await tenant_pool.close()
            await pool.close()
            await engine.dispose()
            await tenant_engine.dispose()
            sync_engine.dispose()

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

    api = Router(
        path="/api/v1",
        route_handlers=[MemberController, PointsController, PurchaseController,
                        EventController, CheckoutController, RewardController, TierController,
                        PaymentController, SettlementController, StatementController,
                        PolicyController],
        middleware=[DefineMiddleware(BearerTokenMiddleware)],
        before_request=screen_request,
        security=[{"partner": []}],
        dependencies={"db_session": Provide(provide_api_session)},
    )
    app = Litestar(
        route_handlers=[health, *OAUTH_HANDLERS, problem_type, index, api, AuthPages,
                        AuthorizePages, ConnectionPages, HomePages, OnboardingPages,
                        ConsolePages, SsoSettingsPages, SsoLoginPages,
                        ProfilePages, MemberRewardPages, RewardConsolePages, CouponPages,
                        PartnerRulePages, OperatorRulePages,
                        CompanyPages, PartnerSegmentPages, OperatorSegmentPages,
                        OperatorTierPages, PartnerPayoutPages, OperatorPaymentPages,
                        OperatorPolicyPages, PartnerPolicyPages,
                        OperatorFinancePages,
                        stripe_webhook,
                        OperatorTermsPages, PartnerTermsPages,
                        OperatorSettlementPages, PartnerStatementPages,
                        *TRACKING_HANDLERS, AffiliatePages, AffiliateConsolePages,
                        AffiliateDashboardPages, OperatorAffiliatePayoutPages,
                        PartnerCommissionPages, OperatorCommissionPages,
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
