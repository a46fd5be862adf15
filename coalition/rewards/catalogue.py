"""A partner's changes to its own rewards catalogue (the console), each with its audit
entry in one Tx. The partner is the Tx's; the console runs it under row-level security."""

from __future__ import annotations

import uuid
from typing import Any

from coalition import clock
from coalition.errors import DomainError, NotFound
from coalition.rewards.models import Reward
from coalition.rewards.queries import partner_reward
from coalition.segments.targets import unknown_segments
from coalition.uow import Tx


async def _check_segments(tx: Tx, fields: dict[str, Any]) -> None:
    """Target segments must be the partner's own."""
    unknown = await unknown_segments(await tx.session(), tx.partner_id, fields["segments"])
    if unknown:
        raise DomainError("validation-error", "Invalid reward",
                          f"{unknown[0]} is not one of your segments.", status=400,
                          field="segments")


async def _own(tx: Tx, reward_id: uuid.UUID) -> Reward:
    reward = await partner_reward(tx, reward_id)
    if reward is None:
        raise NotFound("reward-not-found", "Reward not found", "No such reward.",
                       field="reward_id")
    return reward


async def create_reward(tx: Tx, fields: dict[str, Any]) -> uuid.UUID:
    """A new reward of the partner's from the form's columns."""
    await _check_segments(tx, fields)
    session = await tx.session()
    reward = Reward(partner_id=tx.partner_id, **fields)
    session.add(reward)
    await session.flush()
    await tx.audit("reward.create", target=str(reward.id), name=reward.name)
    return reward.id


async def update_reward(tx: Tx, reward_id: uuid.UUID, fields: dict[str, Any]) -> None:
    reward = await _own(tx, reward_id)
    await _check_segments(tx, fields)
    for name, value in fields.items():
        setattr(reward, name, value)
    reward.updated_at = clock.now()
    await (await tx.session()).flush()
    await tx.audit("reward.update", target=str(reward.id))


async def set_reward_active(tx: Tx, reward_id: uuid.UUID, active: bool) -> None:
    reward = await _own(tx, reward_id)
    reward.active = active
    reward.updated_at = clock.now()
    await (await tx.session()).flush()
    await tx.audit("reward.activate" if active else "reward.deactivate",
                   target=str(reward.id))
