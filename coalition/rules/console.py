"""Rule changes from the consoles: create, edit (a new version) and archive, each with
its audit entry in one Tx, for the Tx's partner (None: a coalition rule, the operator).
The rules cache of this process is dropped once the change commits; other processes
hear of it through the database's notification (service.py)."""

from __future__ import annotations

import uuid

from coalition import clock
from coalition.rules import service
from coalition.rules.models import EarningRule
from coalition.rules.validation import RuleSpec
from coalition.uow import Tx


async def save_rule(tx: Tx, rule_id: uuid.UUID | None, spec: RuleSpec) -> EarningRule:
    """A new rule (`rule_id` None) or a new version of the partner's rule. The service
    validates everything before it adds a row; a refusal rolls the Tx back."""
    session = await tx.session()
    if rule_id is None:
        rule = await service.create_rule(session, tx.partner_id, spec, tx.actor.user_id)
        action = "rule.create"
    else:
        rule = await service.get_rule(session, rule_id, tx.partner_id)
        await service.edit_rule(session, rule, spec, tx.actor.user_id)
        action = "rule.edit"
    await tx.audit(action, target=str(rule.id), version=rule.current_version)
    tx.after_commit(service.CACHE.forget_all)
    return rule


async def archive_rule(tx: Tx, rule_id: uuid.UUID) -> EarningRule:
    """Archive the partner's rule (404 when it owns no such rule)."""
    rule = await service.get_rule(await tx.session(), rule_id, tx.partner_id)
    await service.archive_rule(await tx.session(), rule, clock.now())
    await tx.audit("rule.archive", target=str(rule.id))
    tx.after_commit(service.CACHE.forget_all)
    return rule
