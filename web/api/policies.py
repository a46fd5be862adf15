"""The points policies a partner's integration (or a member's app) shows members: when
points expire, how returns treat spent points, how long checkout holds last, and the
brand's own return window. Read-only: the operator sets the coalition's policies and the
partner's owner its return window, in the portal (web/portal/policies.py)."""

from __future__ import annotations

import uuid
from datetime import datetime

from litestar import Controller, Request, get
from msgspec import Struct

from coalition import policies
from coalition.uow import Database
from tenants.auth import PartnerPrincipal
from web.security import as_client, requires_scope


class ExpiryOut(Struct):
    policy: str                 # rolling, end_of_month, end_of_year, fixed_date or never
    validity_months: int | None
    fixed_month: int | None     # fixed_date only
    fixed_day: int | None
    timezone: str               # month and year ends and fixed dates are taken here
    points_earned_now_expire_at: datetime | None


class ReturnsOut(Struct):
    window_days: int            # your brand's: a purchase's points stay pending this long
    policy: str                 # clawback or negative_floor
    negative_balance_floor: int


class HoldsOut(Struct):
    timeout_seconds: int


class PoliciesOut(Struct):
    partner_id: uuid.UUID
    expiry: ExpiryOut
    returns: ReturnsOut
    holds: HoldsOut


class PolicyController(Controller):
    path = "/policies"
    tags = ["Points"]
    guards = [requires_scope]

    @get("/", opt={"scopes": [], "member_scopes": []},
         summary="The points policies in force",
         description="The coalition's expiry policy (with the date points earned now would "
         "expire), its return policy and negative-balance floor, the default checkout-hold "
         "timeout, and your brand's return window (`returns.window_days`: a purchase's "
         "points stay pending that many days). Each lot's dates are fixed when it is "
         "earned, so a policy change applies to points earned from then on. Any token of "
         "your brand may read this.")
    async def show(self, request: Request, db: Database) -> PoliciesOut:
        principal: PartnerPrincipal = request.user
        read = await as_client(db, principal, scoped=True).run(policies.partner_policies)
        current = read.policies
        never = current.effective_expiry == "never"
        fixed = current.effective_expiry == "fixed_date"
        return PoliciesOut(
            partner_id=principal.partner_id,
            expiry=ExpiryOut(current.effective_expiry,
                             None if never else current.points_validity_months,
                             current.expiry_fixed_month if fixed else None,
                             current.expiry_fixed_day if fixed else None,
                             read.timezone, read.expires_now),
            returns=ReturnsOut(read.return_window_days, current.return_policy,
                               current.negative_balance_floor),
            holds=HoldsOut(current.hold_timeout_seconds))
