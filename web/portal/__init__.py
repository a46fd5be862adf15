"""Portal pages for people: operators, partner staff, members, affiliates.

One module (or package) per area; each lists its controllers in `ROUTES`, and `routes()`
is what the app registers."""

from __future__ import annotations


def routes() -> list:
    """Every portal page, area by area (imported here, not at the top: the area modules
    import web.portal.common, a module of this package)."""
    from web.portal import (
        accounts,
        affiliates,
        home,
        partners,
        policies,
        rewards,
        rules,
        segments,
        settlement,
        tiers,
    )

    areas = [accounts, home, partners,
             rules, segments, tiers, policies, rewards,
             settlement, affiliates]
    return [handler for area in areas for handler in area.ROUTES]
