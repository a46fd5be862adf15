"""POST /webhooks/stripe: Stripe's events about our invoices and transfers. Outside the
partner API (no bearer token) and the portal (no session, no CSRF): the Stripe signature
is the authentication. Configure the endpoint in Stripe with this URL and put its
signing secret in COALITION_STRIPE_WEBHOOK_SECRET."""

from __future__ import annotations

from litestar import Request, Response, post
from litestar.datastructures import State

from coalition.uow import Database
from settlement import webhooks
from settlement.stripe_gateway import NotConfigured


@post("/webhooks/stripe", include_in_schema=False, status_code=200)
async def stripe_webhook(request: Request, state: State, db: Database) -> Response:
    settings = state.settings
    if not settings.stripe_webhook_secret:
        raise NotConfigured("stripe_webhook_secret", "Receiving Stripe webhooks")
    payload = await request.body()
    event = webhooks.verify(payload, request.headers.get("stripe-signature"),
                            settings.stripe_webhook_secret,
                            settings.stripe_webhook_tolerance_seconds)
    try:
        received = await db.run(webhooks.receive, event, state.mailer)
    except Exception as exc:
        # Kept with the error, outside the rolled-back Tx; Stripe delivers it again.
        await db.run(webhooks.record_failure, event, exc)
        raise
    return Response({"received": True, "duplicate": received.duplicate,
                     "outcome": received.outcome})
