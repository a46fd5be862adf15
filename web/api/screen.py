"""What the partner API refuses before any handler runs, whatever the route: text that
PostgreSQL cannot store, JSON nested too deep to decode and store, and a body that is
not JSON. Each is a 400 problem naming where it is, where it would otherwise surface
as a database error or a RecursionError (a 500)."""

from __future__ import annotations

from litestar import Request
from litestar.exceptions import ClientException, SerializationException, ValidationException

NUL = "\x00"
NUL_MESSAGE = "must not contain the NUL character (U+0000)"
# Bodies are flat records with small annotations (`metadata`); a document nested deeper
# than this is no partner's data, and near Python's recursion limit every decoder and
# encoder on the way to the database would fail on it.
MAX_DEPTH = 32
TOO_DEEP = f"is nested more than {MAX_DEPTH} levels deep"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _refuse(message: str, field: str, source: str) -> ValidationException:
    return ValidationException(f"{field}: {message}",
                               extra=[{"message": message, "key": field, "source": source}])


def refusal(value: object) -> tuple[str, str] | None:
    """Something in decoded JSON the API refuses, as (field, message): text holding NUL
    (in a value or an object key), which PostgreSQL text and jsonb cannot store, or
    nesting beyond MAX_DEPTH. Paths read like msgspec's (`lines[0].sku`). Walked with a
    stack, not recursion, so no body can exhaust Python's recursion limit here."""
    stack: list[tuple[object, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str) and NUL in item:
            return path or "data", NUL_MESSAGE
        if isinstance(item, dict | list):
            if depth == MAX_DEPTH:
                return path or "data", TOO_DEEP
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, inner in pairs:
                inner_path = (f"{path}[{key}]" if isinstance(item, list)
                              else f"{path}.{key}" if path else str(key))
                if isinstance(key, str) and NUL in key:
                    return inner_path, NUL_MESSAGE
                stack.append((inner, inner_path, depth + 1))
    return None


async def screen_request(request: Request) -> None:
    """before_request of the API."""
    for source, params in (("path", request.path_params.items()),
                           ("query", request.query_params.multi_items())):
        for name, value in params:
            if isinstance(value, str) and NUL in value:
                raise _refuse(NUL_MESSAGE, name, source)
    if request.method not in BODY_METHODS:
        return
    body = await request.body()
    if not body.strip():
        return
    try:
        # Decoded once here; Litestar reuses it for the handler's `data`.
        decoded = await request.json()
    except SerializationException as exc:
        raise ClientException(str(exc), extra={"slug": "malformed-json"}) from exc
    except RecursionError as exc:
        raise _refuse(TOO_DEEP, "data", "body") from exc
    if not _may_be_refused(body):
        return
    if (refused := refusal(decoded)) is not None:
        raise _refuse(refused[1], refused[0], "body")


def _may_be_refused(body: bytes) -> bool:
    """Whether the walk in `refusal` is needed: NUL reaches a decoded string only as the
    escape \\u0000 (or raw, if a decoder let it through), and no document nests deeper
    than its count of opening brackets. A purchase of twenty lines passes both tests in
    microseconds instead of a walk of every value."""
    return (b"\\u0000" in body or b"\x00" in body
            or body.count(b"{") + body.count(b"[") > MAX_DEPTH)
