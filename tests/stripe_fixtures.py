"""Fixtures for the payment tests: a real localstripe server process, the local HTTP
double for Connect transfers (the one Stripe endpoint localstripe lacks), an app
configured for both, and webhooks signed the way Stripe signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import stripe
from aiohttp import web
from asgi_lifespan import LifespanManager

from settlement import stripe_sandbox
from web.app import create_app

SECRET_KEY = "sk_test_coalition"
WEBHOOK_SECRET = "whsec_test_coalition_signing_secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def localstripe() -> Iterator[str]:
    """The Stripe sandbox (localstripe) on a free port for the whole session, from
    scratch, stopped at the end."""
    sandbox = stripe_sandbox.start(free_port(), key=SECRET_KEY)
    try:
        yield sandbox.url
    finally:
        sandbox.stop()


class ConnectDouble:
    """POST /v1/transfers answered like Stripe does (an idempotency key replays the
    first answer; an unknown destination is a 400 invalid_request_error). A local test
    double because localstripe has no Connect; nothing else goes here."""

    def __init__(self) -> None:
        self.transfers: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.accounts: set[str] = set()

    async def create(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {SECRET_KEY}":
            return web.json_response({"error": {"type": "invalid_request_error",
                                                "message": "Invalid API Key"}}, status=401)
        key = request.headers.get("Idempotency-Key")
        if key and key in self.by_key:
            return web.json_response(self.by_key[key])
        form = await request.post()
        destination = form.get("destination", "")
        if destination not in self.accounts:
            return web.json_response({"error": {
                "type": "invalid_request_error", "param": "destination",
                "message": f"No such destination: '{destination}'"}}, status=400)
        metadata = {k[len("metadata["):-1]: v for k, v in form.items()
                    if k.startswith("metadata[")}
        transfer = {"id": f"tr_{uuid.uuid4().hex[:14]}", "object": "transfer",
                    "amount": int(form["amount"]), "amount_reversed": 0,
                    "currency": form["currency"], "destination": destination,
                    "transfer_group": form.get("transfer_group"), "metadata": metadata,
                    "reversed": False, "created": stripe_time(), "livemode": False}
        self.transfers[transfer["id"]] = transfer
        if key:
            self.by_key[key] = transfer
        return web.json_response(transfer)


@pytest.fixture(scope="session")
async def connect_double() -> AsyncIterator[tuple[str, ConnectDouble]]:
    double = ConnectDouble()
    application = web.Application()
    application.router.add_post("/v1/transfers", double.create)
    runner = web.AppRunner(application)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}", double
    await runner.cleanup()


@pytest.fixture(scope="session")
async def stripe_app(settings, database_url, localstripe, connect_double):
    """The app with Stripe pointed at localstripe and Connect at the double."""
    configured = settings.model_copy(update={
        "stripe_secret_key": SECRET_KEY, "stripe_api_base": localstripe,
        "stripe_connect_base": connect_double[0], "stripe_webhook_secret": WEBHOOK_SECRET,
        "sepa_debtor_name": "Coalition Operator Sp. z o.o.",
        "sepa_debtor_iban": "DE89370400440532013000", "sepa_debtor_bic": "COBADEFFXXX"})
    application = create_app(configured, database_url)
    async with LifespanManager(application):
        yield application


@pytest.fixture(scope="session")
async def stripe_client(stripe_app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=stripe_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as c:
        c.app = stripe_app
        yield c


@pytest.fixture(scope="session")
def stripe_api(localstripe) -> stripe.StripeClient:
    """The test's own client to localstripe: acts as the partner entering a card."""
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe},
                               http_client=stripe.HTTPXClient(allow_sync_methods=False))


async def give_card(api: stripe.StripeClient, customer: str, number: str = "4242424242424242"
                    ) -> str:
    method = await api.v1.payment_methods.create_async(
        {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034,
                                  "cvc": "123"}})
    await api.v1.payment_methods.attach_async(method.id, {"customer": customer})
    await api.v1.customers.update_async(
        customer, {"invoice_settings": {"default_payment_method": method.id}})
    return method.id


def stripe_time() -> int:
    """Stripe's own clock: event and object times, and the signature timestamp the stripe
    library checks against the wall clock (its tolerance), not against the platform's."""
    return int(time.time())  # noqa: TID251 - the other side of the protocol reads it


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """Stripe's scheme: HMAC-SHA256 over "{t}.{payload}", header "t=…,v1=…"."""
    t = stripe_time() if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def event(type_: str, obj: dict[str, Any], created: int | None = None,
          event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or f"evt_{uuid.uuid4().hex[:20]}", "object": "event",
            "type": type_, "created": created or stripe_time(), "livemode": False,
            "api_version": "2026-10-28.endive", "data": {"object": obj}}


async def post_event(client: httpx.AsyncClient, body: dict[str, Any] | bytes,
                     signature: str | None = None) -> httpx.Response:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json",
               "Stripe-Signature": signature if signature is not None else sign(payload)}
    return await client.post("/webhooks/stripe", content=payload, headers=headers)
