"""What the rule pages read, for the Tx's partner (None: the operator and the coalition's
rules). A partner's pages run tenant-scoped: row-level security hides other partners'
rules and hits whatever the filters say."""

from __future__ import annotations

import uuid
from datetime import datetime

from coalition.errors import NotFound
from coalition.rules import service
from coalition.rules.models import EarningRule, EarningRuleVersion
from coalition.uow import Tx

Listing = list[tuple[EarningRule, EarningRuleVersion]]


async def rules_listed(tx: Tx) -> Listing:
    """The partner's rules and the coalition's (read-only for a partner), each with its
    current version; for the operator the coalition's."""
    return await service.listing(await tx.session(), tx.partner_id, with_coalition=True)


async def rules_with_performance(tx: Tx, since: datetime
                                 ) -> tuple[Listing, dict[uuid.UUID, service.Performance]]:
    """The listing and what each rule awarded since `since` (at the partner's brand
    only, for a partner)."""
    listed = await rules_listed(tx)
    awarded = await service.performance(await tx.session(), [rule.id for rule, _ in listed],
                                        since, tx.partner_id)
    return listed, awarded


async def owned_rule(tx: Tx, rule_id: uuid.UUID) -> EarningRule | None:
    """The rule if the Tx's partner owns it (the operator: a coalition rule)."""
    try:
        return await service.get_rule(await tx.session(), rule_id, tx.partner_id)
    except NotFound:
        return None


async def visible_rule(tx: Tx, rule_id: uuid.UUID) -> EarningRule | None:
    """Own rules, and for a partner the coalition's rules too (read-only)."""
    rule = await (await tx.session()).get(EarningRule, rule_id)
    if rule is None or (rule.partner_id is not None and rule.partner_id != tx.partner_id):
        return None
    return rule


async def rule_versions(tx: Tx, rule: EarningRule) -> list[EarningRuleVersion]:
    """Every version of the rule, newest first."""
    return await service.versions(await tx.session(), rule)
