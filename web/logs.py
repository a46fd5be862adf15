"""Keep secrets out of the logs.

Links in emails carry single-use tokens in their query string (`/verify-email?token=…`,
`/reset-password?token=…`, `/set-password?token=…`), and the OAuth library logs the
token it issues at DEBUG. `install()` puts a log-record factory in front of every logger
of the process, so whatever handler a deployment configures (uvicorn's access log, a log
shipper) only ever sees `token=[redacted]`.

A record is rewritten only when its message would contain something secret-looking:
secret-named query or cookie parameters (`token=`, `code=`, `client_secret=`,
`password=`, `session=`, `csrftoken=`…), quoted secret fields of a dict or JSON
(`'access_token': '…'`), `Bearer …`/`Basic …` credentials and passwords in URLs
(`postgresql://user:…@host`). Identifiers that act as keys or single out a customer go
too: card numbers, customer ids and codes as query parameters (`card_number=`,
`partner_customer_id=`, `referral_code=`…), and the path segment of a route whose path
holds one (`/api/v1/vouchers/{code}`, `/join/{code}`, `/r/{code}`), which keeps the route
readable: `GET /api/v1/vouchers/[redacted]/consume`. Arguments are cleaned one by one
when that suffices, so formatters that read `record.args` (uvicorn's access log) keep
working."""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"

_SENSITIVE_NAMES = (
    r"[\w.\-]*(?:token|secret|passw(?:or)?d|session|csrf|verifier|api_?key)[\w.\-]*"
    r"|code|auth(?:orization)?_code"
    # A voucher code spends the voucher; a card number or customer id singles out a member.
    r"|(?:voucher|referral|affiliate|coupon|promo)_?code"
    r"|[\w.\-]*card_?(?:number|no)|[\w.\-]*customer_?id")
_PARAMETER = re.compile(
    rf"(?i)\b((?:{_SENSITIVE_NAMES})=)(?!\[redacted\])[^&\s;,'\"<>]+")
_QUOTED_FIELD = re.compile(
    r"(?i)(['\"](?:access_token|refresh_token|id_token|client_secret|password|new_password"
    r"|token|code|code_verifier|secret|session|session_id)['\"]\s*:\s*)(['\"])"
    r"(?!\[redacted\])[^'\"]*\2")
_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\[redacted\])[A-Za-z0-9._~+/=\-]{12,}")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]+:)(?!\[redacted\])[^\s@/]+@")
# Routes whose path segment is a code: a voucher's (anyone holding it can spend it), a
# member's referral code, an affiliate's tracking code. Matched only where a path starts
# (the start of the text, after a space, quote, `=`, or a URL's host), so `/partner/vouchers`
# and file paths are left alone.
_SECRET_SEGMENT = re.compile(
    r"((?:^|(?<=[\s\"'(<=])|//[^/\s\"'<>]*)(?:/api/v\d+/vouchers|/join|/r)/)"
    r"(?!\[redacted\])[^/?#\s\"'<>]+")


def redact(text: str) -> str:
    """The text with every secret-looking value replaced by `[redacted]`."""
    text = _PARAMETER.sub(rf"\1{REDACTED}", text)
    text = _QUOTED_FIELD.sub(rf"\1\2{REDACTED}\2", text)
    text = _CREDENTIALS.sub(rf"\1\2{REDACTED}", text)
    text = _SECRET_SEGMENT.sub(rf"\1{REDACTED}", text)
    return _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)


def _clean(value: Any) -> Any:
    if value is None or isinstance(value, int | float):
        return value
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:
        return value
    cleaned = redact(text)
    return value if cleaned == text else cleaned


def scrub(record: logging.LogRecord) -> None:
    """Rewrite the record in place so that its message holds no secret."""
    try:
        message = record.getMessage()
    except Exception:
        return  # a broken record: logging reports it; nothing of ours to add
    cleaned = redact(message)
    if cleaned == message:
        return
    if record.args:
        if isinstance(record.args, dict):
            args: Any = {key: _clean(value) for key, value in record.args.items()}
        else:
            args = tuple(_clean(value) for value in record.args)
        try:
            candidate = str(record.msg) % args
        except Exception:
            candidate = None
        if candidate is not None and redact(candidate) == candidate:
            record.args = args
            return
    # The secret is in the format string itself, or split across arguments.
    record.msg, record.args = cleaned, ()


_installed = False


def install() -> None:
    """Redact every log record this process creates, whatever logger or handler."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scrub(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
