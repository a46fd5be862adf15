"""Partner API v1: one controller per resource, under /api/v1, bearer tokens only."""

from __future__ import annotations

from litestar import Router
from litestar.middleware import DefineMiddleware


def router() -> Router:
    """/api/v1: every controller behind the bearer-token middleware and the request
    screen (web/api/screen.py); OAuth 2.0 is the one security scheme."""
    from web.api.checkout import CheckoutController
    from web.api.members import MemberController
    from web.api.payments import PaymentController
    from web.api.points import PointsController
    from web.api.policies import PolicyController
    from web.api.purchases import EventController, PurchaseController
    from web.api.rewards import RewardController
    from web.api.screen import screen_request
    from web.api.settlement import SettlementController
    from web.api.statements import StatementController
    from web.api.tiers import TierController
    from web.security import BearerTokenMiddleware

    return Router(
        path="/api/v1",
        route_handlers=[MemberController, PointsController, PurchaseController,
                        EventController, CheckoutController, RewardController, TierController,
                        PaymentController, SettlementController, StatementController,
                        PolicyController],
        middleware=[DefineMiddleware(BearerTokenMiddleware)],
        before_request=screen_request,
        security=[{"partner": []}],
    )
