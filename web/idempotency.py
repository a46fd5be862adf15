"""Idempotency-Key, the HTTP side: the request's fingerprint and the stored answer as a
response. The key's claim, the use case's writes and the stored answer share one Tx
(coalition/idempotency.py `idempotent`; the ledger's posting functions record their own
key): a retry with the same key and body replays the stored response, a different body
is a 409, and a failed request stores nothing."""

from __future__ import annotations

import hashlib

import msgspec
from litestar import Request, Response

from web.problems import PROBLEM_MEDIA_TYPE


def request_hash(request: Request, body: object) -> str:
    canonical = f"{request.method} {request.url.path}\n".encode() + msgspec.json.encode(body)
    return hashlib.sha256(canonical).hexdigest()


def stored_response(status: int, body: str) -> Response:
    media_type = PROBLEM_MEDIA_TYPE if status >= 400 else "application/json"
    return Response(content=body.encode(), status_code=status, media_type=media_type)
