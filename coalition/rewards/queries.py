"""What the reward pages and endpoints read. A member browses every brand's catalogue
(plain Tx); a partner's console and API read its own rewards in its tenant-scoped Tx;
vouchers are looked up by code with the partner in the filter, on a plain Tx, since a
voucher names the brand that issued it too."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg
from sqlalchemy import select

from coalition.audience import member_context
from coalition.rewards import service
from coalition.rewards.models import Reward
from coalition.uow import Tx

_BALANCE = "SELECT balance FROM accounts WHERE member_id = $1 AND kind = 'member_wallet'"


async def member_catalogue(tx: Tx, member_id: uuid.UUID) -> tuple[list[dict], int | None]:
    """Every brand's listed rewards as the member may redeem them, and their balance."""
    items = await service.member_catalogue(tx.conn, member_id)
    return items, await tx.conn.fetchval(_BALANCE, member_id)


@dataclass(frozen=True)
class Confirmation:
    """The redeem confirmation: the reward, and why the member cannot have it (None: they
    can)."""

    reward: Reward
    partner_name: str
    balance: int
    locked: str | None


async def confirmation(tx: Tx, reward_id: uuid.UUID, member_id: uuid.UUID
                       ) -> Confirmation | None:
    """None when no listed reward has this id."""
    row = await tx.conn.fetchrow(
        "SELECT r.*, p.name AS partner_name FROM rewards r JOIN partners p"
        " ON p.id = r.partner_id WHERE r.id = $1 AND r.listed", reward_id)
    if row is None:
        return None
    reward = service.reward_of(row)
    locked = service.eligible(reward, await member_context(tx.conn, member_id))
    taken = await service.used_count(tx.conn, reward.id, member_id)
    balance = await tx.conn.fetchval(_BALANCE, member_id)
    if locked is None and reward.per_member_limit is not None \
            and taken >= reward.per_member_limit:
        locked = "You have reached the limit for this reward."
    if locked is None and balance < reward.price_points:
        locked = f"You need {reward.price_points - balance} more points."
    return Confirmation(reward, row["partner_name"], balance, locked)


async def member_vouchers(tx: Tx, member_id: uuid.UUID) -> list[dict]:
    return await service.member_vouchers(tx.conn, member_id)


async def partner_rewards(tx: Tx, *, active_first: bool = False) -> list[Reward]:
    """The Tx's partner's rewards, cheapest first (the console: active ones first)."""
    order = (Reward.active.desc(),) if active_first else ()
    session = await tx.session()
    return list((await session.scalars(select(Reward).where(
        Reward.partner_id == tx.partner_id).order_by(
        *order, Reward.price_points, Reward.name))).all())


async def partner_reward(tx: Tx, reward_id: uuid.UUID) -> Reward | None:
    """The reward if the Tx's partner owns it."""
    session = await tx.session()
    return await session.scalar(select(Reward).where(
        Reward.id == reward_id, Reward.partner_id == tx.partner_id))


async def recently_used_vouchers(tx: Tx) -> list[asyncpg.Record]:
    """The till's history: the partner's last used vouchers, codes masked (the till
    needs the history, not the codes)."""
    return await tx.conn.fetch(
        "SELECT '…' || right(v.code, 4) AS code, r.name, v.used_at, v.used_order_id"
        " FROM vouchers v JOIN rewards r ON r.id = v.reward_id"
        " WHERE v.partner_id = $1 AND v.status = 'used'"
        " ORDER BY v.used_at DESC LIMIT 20", tx.partner_id)


async def voucher(tx: Tx, code: str) -> dict:
    """The voucher as the Tx's partner, where it is usable, sees it (else a 404)."""
    return await service.find_voucher(tx.conn, tx.partner_id, code)
