"""Portal pages for people: operators, partner staff, members, affiliates.

One module (or package) per area; each lists its controllers in `ROUTES`, and `routes()`
is what the app registers."""

from __future__ import annotations


def routes() -> list:
    """Every portal page, area by area (imported here, not at the top: the area modules
    import web.portal.common, a module of this package)."""
    from web.portal import (
        affiliates,
        auth,
        authorize,
        company,
        connections,
        console,
        coupons,
        finance,
        home,
        onboarding,
        payments,
        policies,
        profile,
        rewards,
        rewards_console,
        rules,
        segments,
        settlement_terms,
        sso,
        statements,
        tiers,
    )

    areas = [auth, authorize, sso, profile, connections, home, onboarding, console, company,
             rules, segments, tiers, policies, rewards, rewards_console, coupons,
             settlement_terms, statements, payments, finance, affiliates]
    return [handler for area in areas for handler in area.ROUTES]
