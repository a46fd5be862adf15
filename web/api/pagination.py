"""Opaque cursors for keyset pagination."""

from __future__ import annotations

import base64

from coalition.errors import DomainError

PageSize = int


def encode_cursor(value: object) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, parse: type) -> object | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return parse(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DomainError(
            "validation-error", "Invalid cursor", "The cursor is not one this API returned.",
            status=400, field="cursor",
        ) from exc
