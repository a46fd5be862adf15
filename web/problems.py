"""RFC 9457 problem documents for every error the HTTP API returns."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.response import Template

from coalition.db import database_unreachable
from coalition.errors import DomainError
from settlement.prepaid import refusal as prepaid_refusal

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

# slug -> (title, explanation). Served as documentation at /problems/{slug}.
PROBLEM_TYPES: dict[str, tuple[str, str]] = {
    "validation-error": ("Invalid request", "A field is missing, malformed, out of range or unknown. `errors` names each field."),
    "malformed-json": ("Malformed JSON", "The request body is not valid JSON."),
    "unauthorized": ("Authentication required", "Send `Authorization: Bearer <token>` with a token from POST /oauth/token."),
    "forbidden": ("Forbidden", "The credentials are valid but do not allow this action."),
    "insufficient-scope": ("Insufficient scope", "The access token lacks the OAuth scope this route requires."),
    "partner-not-active": ("Partner not active", "The partner account is suspended or not yet active; its API access is blocked."),
    "not-found": ("Not found", "No such resource, or it belongs to another partner."),
    "member-not-found": ("Member not found", "No member with this id is linked to your partner account."),
    "member-not-active": ("Member is not active", "The member's account is blocked or closed."),
    "transaction-not-found": ("Transaction not found", "No transaction with this id was posted by your partner account."),
    "insufficient-points": ("Insufficient points", "The member's available balance is lower than the points requested."),
    "not-reversible": ("Transaction cannot be reversed", "Only earn and redeem transactions can be reversed."),
    "already-reversed": ("Transaction already reversed", "The transaction has been reversed in full."),
    "reversal-exceeds-original": ("Reversal exceeds the original", "The points to reverse exceed what remains of the transaction."),
    "points-already-spent": ("Points already spent", "The member already spent the earned points, so they cannot be taken back."),
    "idempotency-key-mismatch": ("Idempotency key reused with a different request", "Each Idempotency-Key belongs to one request body; use a new key for a new request."),
    "idempotency-key-reused": ("Idempotency key already used", "The key was used for an earlier write whose stored response expired."),
    "customer-id-taken": ("Customer id already linked", "Another member uses this customer id at your brand."),
    "member-already-linked": ("Member already linked with another customer id", "The member is linked to your brand under a different customer id."),
    "order-already-posted": ("Order already posted", "A purchase with this order_id exists; post a return to change it."),
    "order-not-found": ("Order not found", "No purchase with this order_id was posted by your partner account."),
    "order-fully-returned": ("Order already returned", "Everything in the order has been returned."),
    "return-exceeds-order": ("Return exceeds the order", "The amount is more than what remains unreturned on the order."),
    "return-exceeds-line": ("Return exceeds the line", "More units than remain unreturned on that line."),
    "line-not-in-order": ("Line not in the order", "The order has no line with that sku."),
    "return-amount-zero": ("Nothing to return", "The returned lines are worth nothing."),
    "currency-not-supported": ("Currency not supported", "Purchases are accepted in the coalition's currency only."),
    "use-returns": ("Use the returns endpoint", "Points of a purchase are taken back by POST /api/v1/purchases/{order_id}/returns."),
    "event-already-recorded": ("Event already recorded", "The member already has an event of this type with this reference."),
    "authorization-not-found": ("Authorization not found", "No checkout authorization with this id was made by your partner account."),
    "authorization-expired": ("Authorization expired", "The hold lapsed and its points went back to the member."),
    "authorization-closed": ("Authorization already closed", "The authorization was already captured, voided or expired."),
    "capture-exceeds-authorization": ("Capture exceeds the authorization", "At most the authorized points can be captured."),
    "reward-not-found": ("Reward not found", "No such reward in your catalogue (or in the coalition's, for a member)."),
    "reward-not-available": ("Reward not available", "The reward is inactive, outside its validity window, or only given as a coupon."),
    "reward-out-of-stock": ("Reward out of stock", "Every unit of the reward has been issued."),
    "reward-not-eligible": ("Not eligible for this reward", "The reward is reserved for certain tiers or segments, and the member is in none of them."),
    "reward-limit-reached": ("Per-member limit reached", "The member already holds or used as many vouchers of this reward as one member may."),
    "request-already-used": ("Form already used", "This one-time form token already redeemed a different reward."),
    "voucher-not-found": ("Voucher not found", "No voucher with this code is usable at your brand."),
    "voucher-already-used": ("Voucher already used", "A voucher is used once; this one already was."),
    "voucher-expired": ("Voucher expired", "The voucher's validity ended before it was used."),
    "voucher-cancelled": ("Voucher cancelled", "The voucher was cancelled and cannot be used."),
    "no-tier-ladder": ("No tier ladder", "The coalition has not set up tiers."),
    "tier-already-held": ("Tier already held", "The member has earned this tier or a higher one; a manual assignment can only lift a member above it."),
    "tier-in-use": ("Tier in use", "Members hold the tier, so it cannot be removed from the ladder."),
    "member-kind-mismatch": ("Member is of another kind", "A member with this email exists as a person (or a company); enrol it as what it is."),
    "last-admin": ("Last admin", "A company account keeps at least one admin."),
    "payments-not-configured": ("Payments not configured", "A payment setting is missing (`field` names it, e.g. stripe_secret_key for COALITION_STRIPE_SECRET_KEY)."),
    "stripe-error": ("Stripe refused the request", "Stripe answered with an error; nothing was recorded, and a retry uses the same idempotency keys."),
    "invalid-signature": ("Invalid Stripe signature", "The Stripe-Signature header is missing, does not sign this payload with the endpoint's secret, or its timestamp is outside the tolerance."),
    "payment-reference-taken": ("Reference already paid differently", "A payment of this kind already exists for the reference with another partner, amount or currency."),
    "payout-details-missing": ("Payout details missing", "The partner has not set up the payout method this needs (a Stripe connected account or a bank account)."),
    "payout-not-ready": ("Payout not ready", "Only ready SEPA payouts go into a batch."),
    "payout-not-exported": ("Payout not exported", "Only an exported SEPA payout can be marked paid or failed."),
    "partner-not-found": ("Partner not found", "No partner with this id."),
    "prepaid-balance-exhausted": ("Prepaid balance exhausted", "Your brand is billed prepaid and its paid point blocks, plus its credit limit, do not cover these points. Nothing was posted; buy a block in the partner console. `available`, `credit_limit` and `requested` are in points."),
    "not-prepaid": ("Not a prepaid partner", "Point blocks are for partners whose rate card in force says prepaid billing."),
    "fx-rate-missing": ("No FX rate", "No exchange rate from the coalition currency to the partner's settlement currency is in force on the day that needs it."),
    "block-not-found": ("Block not found", "No such prepaid point block."),
    "block-not-open": ("Block not awaiting payment", "Only a block awaiting payment can be cancelled."),
    "method-not-allowed": ("Method not allowed", "The route exists but not for this HTTP method."),
    "service-unavailable": ("Service unavailable", "A dependency (the database) is not answering. Retry after the Retry-After header's seconds; a write retried with the same Idempotency-Key never posts twice."),
    "password-work-busy": ("Too busy", "Too many logins or password changes are waiting for their turn (tenants/passwords.py). Nothing was done; retry after `retry_after` seconds (the Retry-After header)."),
    "internal-error": ("Internal error", "An unexpected error; it has been logged."),
    # Settlement (settlement/runs.py, settlement/statements.py)
    "invalid-period": ("Invalid period", "Periods are YYYY-MM (monthly) or YYYY-Www (ISO week, weekly)."),
    "period-not-ended": ("Period not over", "A period is settled after it ends."),
    "invalid-dispute-window": ("Invalid dispute window", "The dispute window is 0 to 90 days."),
    "run-open": ("Another run is open", "One run per cycle may be in draft or review at a time: finalize or discard it first."),
    "run-not-draft": ("Run not a draft", "Only a draft run is computed or re-run."),
    "run-wrong-state": ("Run not in that state", "The run's lifecycle does not allow this step now."),
    "run-not-found": ("No such run", "No settlement run for that period."),
    "run-not-finalized": ("Run not finalized", "Only a finalized run is invoiced and paid out."),
    "collection-incomplete": ("Not every partner was paid", "Some statements could not be invoiced or paid out (missing payout details, Stripe refusing); the detail names them. Fix them and collect again: nothing is paid twice."),
    "run-immutable": ("Finalized run cannot change", "Statements of a run out of draft are immutable."),
    "rate-card-missing": ("No rate card in force", "A partner has activity before its first rate card: add one effective earlier."),
    "disputes-open": ("Disputes open", "Resolve every disputed line before finalizing."),
    "dispute-window-open": ("Dispute window still open", "Partners may still dispute lines; finalize after the deadline or force it."),
    "invalid-status": ("Invalid status", "A run advances to invoiced or paid."),
    "payments-outstanding": ("Payments outstanding", "A run closes once every statement is paid, transferred or owes nothing."),
    "statement-not-found": ("No such statement", "No statement with this id is yours (statements appear once their run is in review)."),
    "line-not-found": ("No such line", "No line with this id on your statement."),
    "dispute-window-closed": ("Dispute window closed", "Lines can be disputed only while the run is in review, until its deadline."),
    "dispute-already-open": ("Line already disputed", "The line has an open dispute."),
    "invalid-comment": ("Comment required", "Say what is wrong with the line (1 to 2000 characters)."),
    "invalid-resolution": ("Resolution required", "Explain the decision to the partner."),
    "invalid-adjustment": ("Invalid adjustment", "An adjustment is a non-zero amount on an accepted dispute."),
    "dispute-not-found": ("No such dispute", "No dispute with this id."),
    "dispute-resolved": ("Already resolved", "The dispute was already accepted or rejected."),
}


# Machine clients always get problem documents here, whatever they accept.
API_PREFIXES = ("/api/", "/oauth/", "/.well-known/", "/health", "/schema")
_OFFERED = ["application/problem+json", "application/json", "text/html"]
# status -> (page title, what a person is told)
PAGE_ERRORS: dict[int, tuple[str, str]] = {
    400: ("Bad request", "The request could not be understood."),
    401: ("Log in required", "Log in to see this page."),
    403: ("Not allowed", "This page is not available to your account."),
    404: ("Page not found", "There is no page at this address, or it is not yours to see."),
    405: ("Not available", "This address does not answer to that kind of request."),
    429: ("Too many requests", "Wait a moment and try again."),
    500: ("Something went wrong", "An unexpected error occurred; it has been logged."),
    503: ("Service unavailable", "The service is not answering right now; try again soon."),
}


def wants_html(request: Request) -> bool:
    """A person's browser asking for a portal page: it prefers text/html to JSON. API
    routes, and clients that accept anything (*/*), get RFC 9457 JSON."""
    if request.url.path.startswith(API_PREFIXES):
        return False
    return request.accept.best_match(_OFFERED) == "text/html"


def error_page(status: int, detail: str | None = None, headers: dict[str, str] | None = None,
               field: str | None = None) -> Template:
    """The site's HTML error page. `detail` is shown when it says more than the status;
    `field` names the form field it is about."""
    title, message = PAGE_ERRORS.get(status, ("Error", "The request failed."))
    return Template("error.html", status_code=status, media_type=MediaType.HTML,
                    headers=headers, context={"status": status, "title": title,
                                              "message": message, "field": field,
                                              "detail": detail if detail != message else None})


def problem(
    status: int,
    slug: str,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = {
        "type": f"/problems/{slug}",
        "title": title or PROBLEM_TYPES.get(slug, ("Error", ""))[0],
        "status": status,
        "detail": detail,
        **{key: value for key, value in extra.items() if value is not None},
    }
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")
_AT_PATH = re.compile(r"at `\$\.?([^`]*)`")
_MISSING_PARAMETER = re.compile(r"Missing required (\w+) parameter '([^']+)'")


def _field_errors(exc: ValidationException) -> list[dict[str, str]]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        message = str(item.get("message", ""))
        field = item.get("key") or ""
        if match := _NAMED_FIELD.search(message):
            prefix = _AT_PATH.search(message)
            field = ".".join(part for part in ((prefix.group(1) if prefix else ""), match.group(1)) if part)
        elif not field and (match := _AT_PATH.search(message)):
            field = match.group(1)
        if item.get("source") == "header":
            # Litestar names a header by its handler parameter (idempotency_key); the
            # client knows it by its own name, as a missing header is reported.
            field = "-".join(word.capitalize() for word in field.split("_"))
        errors.append({"field": field, "message": message, "in": item.get("source", "body")})
    return errors


def handle_validation(request: Request, exc: ValidationException) -> Response:
    if wants_html(request):
        return error_page(400)
    errors = _field_errors(exc)
    if not errors and (match := _MISSING_PARAMETER.search(str(exc.detail))):
        errors = [{"field": match.group(2), "message": str(exc.detail), "in": match.group(1)}]
    if not errors and "json" in str(exc.detail).lower():
        return problem(400, "malformed-json", str(exc.detail))
    detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors) or str(exc.detail)
    return problem(
        400, "validation-error", detail,
        field=errors[0]["field"] if errors else None, errors=errors or None,
    )


def handle_domain_error(request: Request, exc: DomainError) -> Response:
    # A refusal that says when to come back (a queue that is full) says it to HTTP too.
    retry = exc.extra.get("retry_after")
    headers = {"Retry-After": str(retry)} if retry is not None else None
    if wants_html(request):
        return error_page(exc.status, exc.detail, field=exc.field, headers=headers)
    return problem(exc.status, exc.slug, exc.detail, title=exc.title, field=exc.field,
                   headers=headers, **exc.extra)


_STATUS_SLUGS = {401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
                 503: "service-unavailable"}


def _default_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if status >= 500:
        log.error("HTTP %s on %s %s: %s", status, request.method, request.url.path, exc.detail)
    headers = dict(exc.headers or {})
    if isinstance(exc, NotAuthorizedException):
        headers.setdefault("WWW-Authenticate", 'Bearer realm="coalition"')
    if wants_html(request):
        # The detail of a bare status ("Not Found") adds nothing to the page's own words.
        detail = str(exc.detail)
        own = detail not in (_default_phrase(status), "") and status < 500
        return error_page(status, detail if own else None, headers or None)
    slug = (exc.extra or {}).get("slug") if isinstance(exc.extra, dict) else None
    return problem(status, slug or _STATUS_SLUGS.get(status, "error"), str(exc.detail),
                   headers=headers or None)


# What a 503 tells clients to wait before retrying while the database is unreachable.
RETRY_AFTER_SECONDS = 2


def database_unavailable(request: Request) -> Response:
    """503 with Retry-After: the database is down, restarting or the connection was lost.
    A retry is safe: a write whose commit may have happened before the connection broke
    is replayed from its stored answer when retried with the same Idempotency-Key."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if wants_html(request):
        return error_page(503, headers=headers)
    return problem(503, "service-unavailable",
                   "The database is not answering; retry in a moment (writes with the same "
                   "Idempotency-Key).", headers=headers, retry_after=RETRY_AFTER_SECONDS)


def handle_unexpected(request: Request, exc: Exception) -> Response:
    # A prepaid partner's issuance refused by the ledger's draw trigger (SQLSTATE CPB01)
    # surfaces as a database error from whichever earning path posted it.
    if (refused := prepaid_refusal(exc)) is not None:
        return handle_domain_error(request, refused)
    if database_unreachable(exc):
        # An outage, not a bug: one line per request, no traceback.
        log.warning("database unreachable on %s %s: %s: %s", request.method,
                    request.url.path, type(exc).__name__, str(exc).partition("\n")[0][:200])
        return database_unavailable(request)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    if wants_html(request):
        return error_page(500)
    return problem(500, "internal-error", "An unexpected error occurred; it has been logged.")


EXCEPTION_HANDLERS = {
    ValidationException: handle_validation,
    DomainError: handle_domain_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
