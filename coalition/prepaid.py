"""A prepaid partner's refusal, as the ledger's callers see it.

Issuance beyond a prepaid partner's balance plus the credit limit of its terms fails
inside the posting with SQLSTATE CPB01 (the draw trigger of
migrations/sql/0016_prepaid.sql); `refusal` turns that into the 422 problem
`prepaid-balance-exhausted`, and the posting's transaction has written nothing. Here,
in coalition, because every path that issues points (the importer, affiliate payouts
in points, the API) meets it; the blocks themselves are settlement's (settlement/prepaid.py).
"""

from __future__ import annotations

import json

from coalition.errors import DomainError

PREPAID_SQLSTATE = "CPB01"


def refusal(exc: BaseException) -> DomainError | None:
    """The problem for the draw trigger's refusal, however the error arrives (asyncpg
    directly, or wrapped by SQLAlchemy); None for any other error."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        if getattr(seen, "sqlstate", None) == PREPAID_SQLSTATE:
            break
        seen = getattr(seen, "orig", None) or seen.__cause__
    else:
        return None
    try:
        facts = json.loads(getattr(seen, "detail", None) or "{}")
    except ValueError:
        facts = {}
    available, limit = facts.get("available"), facts.get("credit_limit", 0)
    requested = facts.get("requested")
    return DomainError(
        "prepaid-balance-exhausted", "Prepaid balance exhausted",
        f"Your prepaid balance has {available} points left and your credit limit is {limit}"
        f" points; this posting would issue {requested}. Buy a block of points in the "
        "partner console (Prepaid points) to go on issuing.",
        field="points", available=available, credit_limit=limit, requested=requested)
