"""What each partner staff role may do. Enforced on every console page and action.

| permission        | owner | admin | analyst | cashier |
|-------------------|-------|-------|---------|---------|
| console.view      |   ✓   |   ✓   |    ✓    |    ✓    |
| members.view      |   ✓   |   ✓   |    ✓    |    ✓    |
| clients.manage    |   ✓   |   ✓   |         |         |
| staff.manage      |   ✓   |   ✓*  |         |         |
| profile.view      |   ✓   |   ✓   |    ✓    |         |
| sso.manage        |   ✓   |   ✓   |         |         |
| rewards.manage    |   ✓   |   ✓   |         |         |
| vouchers.validate |   ✓   |   ✓   |         |    ✓    |
| rules.view        |   ✓   |   ✓   |    ✓    |         |
| rules.manage      |   ✓   |   ✓   |         |         |
| segments.view     |   ✓   |   ✓   |    ✓    |         |
| segments.manage   |   ✓   |   ✓   |    ✓    |         |
| payouts.manage    |   ✓   |   ✓   |         |         |
| settlement.view   |   ✓   |   ✓   |    ✓    |         |
| settlement.manage |   ✓   |   ✓   |         |         |
| affiliates.view   |   ✓   |   ✓   |    ✓    |         |
| affiliates.manage |   ✓   |   ✓   |         |         |
| affiliates.review |   ✓   |   ✓   |         |         |
| policies.view     |   ✓   |   ✓   |    ✓    |         |
| policies.manage   |   ✓   |       |         |         |

* an admin cannot grant, change or remove the owner role.
"""

from __future__ import annotations

from tenants.models import User

PERMISSIONS: dict[str, frozenset[str]] = {
    "console.view": frozenset({"owner", "admin", "analyst", "cashier"}),
    "members.view": frozenset({"owner", "admin", "analyst", "cashier"}),
    "clients.manage": frozenset({"owner", "admin"}),
    "staff.manage": frozenset({"owner", "admin"}),
    "profile.view": frozenset({"owner", "admin", "analyst"}),
    "sso.manage": frozenset({"owner", "admin"}),
    "rewards.manage": frozenset({"owner", "admin"}),
    "vouchers.validate": frozenset({"owner", "admin", "cashier"}),
    # Earning rules, campaign calendar and the simulation preview (web/portal/rules.py).
    "rules.view": frozenset({"owner", "admin", "analyst"}),
    "rules.manage": frozenset({"owner", "admin"}),
    "segments.view": frozenset({"owner", "admin", "analyst"}),
    "segments.manage": frozenset({"owner", "admin", "analyst"}),
    # Payout and billing details, and the partner's payments (web/portal/settlement/payments.py).
    "payouts.manage": frozenset({"owner", "admin"}),
    # Rate cards (read-only), prepaid balance and blocks; requesting a block.
    "settlement.view": frozenset({"owner", "admin", "analyst"}),
    "settlement.manage": frozenset({"owner", "admin"}),
    # Affiliate programs, terms, affiliates and creatives (web/portal/affiliates/partner.py).
    "affiliates.view": frozenset({"owner", "admin", "analyst"}),
    "affiliates.manage": frozenset({"owner", "admin"}),
    # Affiliate commissions: the list, releasing or rejecting fraud holds.
    "affiliates.review": frozenset({"owner", "admin"}),
    # The coalition's points policies and the partner's return window (web/portal/
    # policies.py). The window decides when members may spend what they earned at the
    # brand and how long a return can take points back: the owner's decision.
    "policies.view": frozenset({"owner", "admin", "analyst"}),
    "policies.manage": frozenset({"owner"}),
}


def can(user: User, permission: str) -> bool:
    return user.kind == "partner_staff" and user.role in PERMISSIONS[permission]
