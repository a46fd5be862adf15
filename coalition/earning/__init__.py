"""Earning points by purchases, returns and events.

- service.py: the use cases (`purchase`, `simulate`, `event`, `purchase_return`).
- posting.py: the ledger side of a purchase or event, the locked and the fast path.
- statements.py: the SQL those paths run, with their parameters, built in one place.
- evaluation.py: what the rules need around a purchase, and their answer as recorded.
- queries.py: reads (a posted purchase as the API shows it)."""

from coalition.earning.posting import Decision, MemberRef, Order
from coalition.earning.queries import purchase_detail
from coalition.earning.service import (
    check_moment,
    event,
    purchase,
    purchase_return,
    simulate,
)

__all__ = ["Decision", "MemberRef", "Order", "check_moment", "event", "purchase",
           "purchase_detail", "purchase_return", "simulate"]
