"""What a server process opens at start and closes at stop: the database resources
(coalition/resources.py) and the services built on them, kept on `app.state`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
from litestar import Litestar

from coalition.affiliates.tracking import ClickRecorder
from coalition.config import Settings
from coalition.db import DatabaseUrl, resolve_database_url
from coalition.resources import Resources, open_resources
from coalition.rules.service import CACHE as RULES_CACHE
from settlement.stripe_gateway import StripeConfig, StripeGateway
from tenants.auth import TokenVerifier
from tenants.keys import SecretBox, ensure_signing_key
from tenants.mail import Mailer
from tenants.oauth_server import CoalitionAuthorizationServer

Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]


def lifespan(settings: Settings, database_url: DatabaseUrl | None) -> Lifespan:
    """The app's lifespan: everything opened before the first request, closed after the
    last (the in-process job worker, with `COALITION_IN_PROCESS_WORKER`, too)."""

    @asynccontextmanager
    async def run(app: Litestar) -> AsyncGenerator[None, None]:
        url = database_url or resolve_database_url(settings.database_url, settings.data_dir)
        resources = await open_resources(settings, url)
        owns_rules_listener = await _start(app, settings, resources)
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
            await resources.close()

    return run


async def _start(app: Litestar, settings: Settings, resources: Resources) -> bool:
    """Fill `app.state`; whether this app started the process's rules listener."""
    state, pool, url = app.state, resources.pool, resources.url
    state.sessionmaker = resources.sessionmaker
    state.mailer = Mailer(settings)
    state.settings = settings
    state.pool = pool
    state.db = resources.db
    # Stripe: built even with no key configured; payment actions then answer a
    # problem naming COALITION_STRIPE_SECRET_KEY (settlement/stripe_gateway.py).
    state.stripe = StripeGateway(StripeConfig.from_settings(settings), pool, state.mailer)
    # Tracking-link clicks, written in batches (coalition/affiliates/tracking.py).
    state.click_recorder = ClickRecorder(pool, settings.resolved_secret_key(),
                                         interval=settings.click_flush_seconds)
    state.click_recorder.start()
    state.token_verifier = TokenVerifier(pool, settings.token_cache_seconds)
    await state.token_verifier.listen(url.asyncpg_dsn)
    # Earning-rule edits reach every process's rule cache (coalition/rules/service.py).
    # The cache is per process: a second app in the same process (the tests' live
    # servers run on their own event loop) must neither replace nor close the first
    # app's listener connection, which belongs to the first app's loop.
    owns_rules_listener = not RULES_CACHE.listener.started  # (even if reconnecting)
    if owns_rules_listener:
        await RULES_CACHE.listen(url.asyncpg_dsn)
    box = SecretBox(settings.resolved_secret_key())
    state.oauth_server = CoalitionAuthorizationServer(
        resources.sync_sessions, settings.access_token_ttl_seconds, box,
        issuer=settings.public_url.rstrip("/"),
    )
    state.oauth_server.on_tokens_revoked = state.token_verifier.forget_all
    await anyio.to_thread.run_sync(ensure_signing_key, resources.sync_sessions, box)
    return owns_rules_listener
