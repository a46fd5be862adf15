"""Eligibility, redemption of a reward into a voucher, and voucher use.

A redemption is one transaction on one asyncpg connection: lock the member's wallet
(serializing everything that touches this member's points, so the per-member limit and
a portal form's one-time token are checked race-free), take one unit of stock with a
conditional UPDATE (concurrent redemptions never oversell), link the member to the
reward's brand, burn the points with the ledger's own SQL function and insert the
voucher. Any refusal raises a DomainError and the transaction rolls back: nothing is
written. Lock order is always wallet, then reward row, so redemptions cannot deadlock.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

import asyncpg

from coalition import clock
from coalition.audience import MemberContext, member_context
from coalition.errors import Conflict, DomainError, NotFound
from coalition.ledger import Ledger, PostingRequest
from coalition.rewards.models import Reward
from coalition.uow import Tx

# Crockford's base32: no I, L, O or U, so a code read aloud or typed is unambiguous.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_CHARS = 16                       # 16 x 5 bits = 80 bits from `secrets`
_TYPOS = str.maketrans({"O": "0", "I": "1", "L": "1"})


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))
    return "-".join(raw[i:i + 4] for i in range(0, CODE_CHARS, 4))


def normalize_code(code: str) -> str | None:
    """The stored form of a code as a person typed it (any case, spaces or dashes,
    O for 0, I or L for 1), or None when it cannot be a code."""
    raw = "".join(code.split()).replace("-", "").upper().translate(_TYPOS)
    if len(raw) != CODE_CHARS or any(c not in ALPHABET for c in raw):
        return None
    return "-".join(raw[i:i + 4] for i in range(0, CODE_CHARS, 4))


def reward_of(row: asyncpg.Record | dict) -> Reward:
    """A detached Reward built from a row (for eligible() and the pages)."""
    columns = Reward.__table__.columns.keys()
    return Reward(**{k: row[k] for k in columns if k in row})


def _refusal(reward: Reward, context: MemberContext | None, at: datetime
             ) -> tuple[str, str] | None:
    """(problem slug, reason) when the reward cannot be redeemed now, else None."""
    if not reward.active:
        return "reward-not-available", "This reward is no longer offered."
    if reward.valid_from is not None and at < reward.valid_from:
        return "reward-not-available", f"Available from {reward.valid_from:%Y-%m-%d}."
    if reward.valid_until is not None and at >= reward.valid_until:
        return "reward-not-available", f"The offer ended on {reward.valid_until:%Y-%m-%d}."
    if reward.stock is not None and reward.stock <= 0:
        return "reward-out-of-stock", "Out of stock."
    if context is not None and reward.tiers and context.tier not in reward.tiers:
        names = " or ".join(t.upper() if len(t) <= 3 else t.title() for t in reward.tiers)
        return "reward-not-eligible", f"For {names} members only."
    if context is not None and reward.segments and not (
            context.segments & frozenset(reward.segments)):
        return "reward-not-eligible", "Reserved for selected members."
    return None


def eligible(reward: Reward, context: MemberContext, *, at: datetime | None = None
             ) -> str | None:
    """None when the member may redeem the reward now (active, inside its validity window,
    in stock, tier and segment gates passed); else the reason, in words for the member.
    The per-member limit and the balance need the database: redeem() checks those."""
    refusal = _refusal(reward, context, at or clock.now())
    return refusal[1] if refusal else None


_VOUCHER = """
SELECT v.*, r.name AS reward_name, r.kind, r.value, r.currency, r.category,
       r.description AS reward_description, p.name AS partner_name,
       ip.name AS issuer_name
  FROM vouchers v JOIN rewards r ON r.id = v.reward_id
  JOIN partners p ON p.id = v.partner_id
  JOIN partners ip ON ip.id = v.issuer_partner_id
"""


def present_voucher(row: asyncpg.Record, at: datetime | None = None) -> dict:
    at = at or clock.now()
    expired = row["expires_at"] is not None and row["expires_at"] <= at
    state = "expired" if row["status"] == "issued" and expired else row["status"]
    return {
        "code": row["code"],
        "status": state,
        "usable": state == "issued",
        "source": row["source"],
        "reward": {"id": row["reward_id"], "name": row["reward_name"], "kind": row["kind"],
                   "value": row["value"], "currency": row["currency"],
                   "category": row["category"]},
        "partner": {"id": row["partner_id"], "name": row["partner_name"]},
        "issuer": {"id": row["issuer_partner_id"], "name": row["issuer_name"]},
        "points": row["points"],
        "issued_at": row["issued_at"],
        "expires_at": row["expires_at"],
        "used_at": row["used_at"],
        "used_order_id": row["used_order_id"],
    }


async def _voucher(conn: asyncpg.Connection, voucher_id: uuid.UUID) -> asyncpg.Record:
    return await conn.fetchrow(_VOUCHER + " WHERE v.id = $1", voucher_id)


async def insert_voucher(conn: asyncpg.Connection, reward: Reward, member_id: uuid.UUID, *,
                         issuer: uuid.UUID, source: str, points: int = 0,
                         entry_id: int | None = None, offer_id: uuid.UUID | None = None,
                         order_id: str | None = None, request_key: str | None = None
                         ) -> uuid.UUID:
    """Insert a voucher with a fresh code; a code collision (2^-80 odds) draws again."""
    for _ in range(5):
        try:
            async with conn.transaction():
                return await conn.fetchval(
                    "INSERT INTO vouchers (code, reward_id, member_id, partner_id,"
                    " issuer_partner_id, source, points, entry_id, offer_id, order_id,"
                    " request_key, issued_at, expires_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13::timestamptz,"
                    " $13::timestamptz + make_interval(days => $12::int)) RETURNING id",
                    new_code(), reward.id, member_id, reward.partner_id, issuer, source,
                    points, entry_id, offer_id, order_id, request_key, reward.voucher_days,
                    clock.now())
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != "uq_vouchers_code":
                raise
    raise RuntimeError("could not draw an unused voucher code")


async def lock_wallet(conn: asyncpg.Connection, member_id: uuid.UUID) -> asyncpg.Record:
    wallet = await conn.fetchrow(
        "SELECT a.balance, m.status FROM accounts a JOIN members m ON m.id = a.member_id"
        " WHERE a.member_id = $1 AND a.kind = 'member_wallet' FOR NO KEY UPDATE OF a",
        member_id)
    if wallet is None:
        raise NotFound("member-not-found", "Member not found", "No such member.",
                       field="member_id")
    return wallet


async def used_count(conn: asyncpg.Connection, reward_id: uuid.UUID, member_id: uuid.UUID
                     ) -> int:
    """Vouchers of this reward the member holds or has used (cancelled ones don't count)."""
    return await conn.fetchval(
        "SELECT count(*) FROM vouchers WHERE reward_id = $1 AND member_id = $2"
        " AND status <> 'cancelled'", reward_id, member_id)


async def take_stock(conn: asyncpg.Connection, reward_id: uuid.UUID) -> bool:
    """One unit of the reward's stock, or False when none is left. The conditional UPDATE
    re-checks the stock after any concurrent taker commits, so stock never goes below 0."""
    return await conn.fetchval(
        "UPDATE rewards SET stock = stock - 1, issued = issued + 1"
        " WHERE id = $1 AND (stock IS NULL OR stock > 0) RETURNING true", reward_id) or False


async def redeem(conn: asyncpg.Connection, *, reward_id: uuid.UUID, member_id: uuid.UUID,
                 actor: str, partner_id: uuid.UUID | None = None,
                 request_key: str | None = None, at: datetime | None = None) -> dict:
    """Burn the reward's price at its partner and issue a voucher, all or nothing.

    `partner_id` (the API's partner) restricts the reward to that partner's catalogue
    and the member to that partner's members; the member portal passes None, and the
    member becomes a customer of the reward's brand if they were not yet. `request_key`
    (the portal form's one-time token) returns the voucher the same form already
    produced instead of redeeming twice.
    Runs in the caller's transaction when there is one, else in its own."""
    at = at or clock.now()
    async with conn.transaction():
        if partner_id is not None and not await conn.fetchval(
                "SELECT 1 FROM member_links WHERE partner_id = $1 AND member_id = $2",
                partner_id, member_id):
            # A partner acts only for its own members; it never links new ones here.
            raise NotFound("member-not-found", "Member not found",
                           "No member with this id is linked to your partner account.",
                           field="member_id")
        wallet = await lock_wallet(conn, member_id)
        if request_key is not None:
            done = await conn.fetchrow(_VOUCHER + " WHERE v.member_id = $1"
                                       " AND v.request_key = $2", member_id, request_key)
            if done is not None:
                if done["reward_id"] != reward_id:
                    raise Conflict("request-already-used", "Form already used",
                                   "This form was already used for another reward.")
                return {"voucher": present_voucher(done, at), "replayed": True,
                        "balance": {"available": wallet["balance"]}}
        row = await conn.fetchrow(
            "SELECT * FROM rewards WHERE id = $1 AND ($2::uuid IS NULL OR partner_id = $2)",
            reward_id, partner_id)
        if row is None:
            raise NotFound("reward-not-found", "Reward not found",
                           "No such reward in the catalogue.", field="reward_id")
        reward = reward_of(row)
        if not reward.listed:
            raise DomainError("reward-not-available", "Reward not available",
                              "This reward is only given as a coupon; it cannot be bought "
                              "with points.", field="reward_id")
        refusal = _refusal(reward, await member_context(conn, member_id), at)
        if refusal is not None:
            raise DomainError(refusal[0], _TITLES[refusal[0]], refusal[1], field="reward_id")
        limit = reward.per_member_limit
        if limit is not None and await used_count(conn, reward.id, member_id) >= limit:
            raise DomainError("reward-limit-reached", _TITLES["reward-limit-reached"],
                              f"This reward can be redeemed {limit} time(s) per member.",
                              field="reward_id", limit=limit)
        if wallet["status"] == "active" and wallet["balance"] < reward.price_points:
            raise _insufficient(wallet["balance"], reward.price_points)
        if not await take_stock(conn, reward.id):
            raise DomainError("reward-out-of-stock", _TITLES["reward-out-of-stock"],
                              "Out of stock.", field="reward_id")
        # The member chose this brand's reward: they become its customer too.
        await conn.execute("INSERT INTO member_links (partner_id, member_id) VALUES ($1, $2)"
                           " ON CONFLICT DO NOTHING", reward.partner_id, member_id)
        result = await Ledger.redeem_on(conn, PostingRequest(
            partner_id=reward.partner_id, member_id=member_id, points=reward.price_points,
            actor=actor, description=f"Reward: {reward.name}"[:500],
            metadata={"reward_id": str(reward.id)}))
        posted = result.json()
        if not result.ok:
            extra = {k: v for k, v in posted.items()
                     if k not in ("type", "title", "status", "detail", "field")}
            raise DomainError(posted["type"].rsplit("/", 1)[-1], posted["title"],
                              posted["detail"], status=posted["status"],
                              field=posted.get("field"), **extra)
        voucher_id = await insert_voucher(
            conn, reward, member_id, issuer=reward.partner_id, source="redemption",
            points=reward.price_points, entry_id=posted["id"], request_key=request_key)
        voucher = await _voucher(conn, voucher_id)
    return {"voucher": present_voucher(voucher, at), "replayed": False,
            "transaction_id": posted["id"], "member_id": member_id,
            "balance": {"available": posted["balance"]["available"]}}


def _insufficient(available: int, requested: int) -> DomainError:
    return DomainError("insufficient-points", "Insufficient points",
                       f"The member has {available} points available; {requested} are needed.",
                       field="points", available=available, requested=requested)


_TITLES = {
    "reward-not-available": "Reward not available",
    "reward-out-of-stock": "Reward out of stock",
    "reward-not-eligible": "Not eligible for this reward",
    "reward-limit-reached": "Per-member limit reached",
}


async def find_voucher(conn: asyncpg.Connection, partner_id: uuid.UUID, code: str) -> dict:
    """The voucher as the partner where it is usable sees it; any other partner, or a
    code that is no code at all, gets the same 404."""
    normal = normalize_code(code)
    row = None
    if normal is not None:
        row = await conn.fetchrow(_VOUCHER + " WHERE v.code = $1 AND v.partner_id = $2",
                                  normal, partner_id)
    if row is None:
        raise _voucher_not_found()
    return present_voucher(row)


def _voucher_not_found() -> NotFound:
    return NotFound("voucher-not-found", "Voucher not found",
                    "No voucher with this code is usable at your brand.", field="code")


async def consume(conn: asyncpg.Connection, *, partner_id: uuid.UUID, code: str, actor: str,
                  order_id: str | None = None) -> dict:
    """Use the voucher, exactly once. The conditional UPDATE is the whole race guard: a
    concurrent second consume waits for the first to commit, then finds the voucher no
    longer 'issued' and is refused with 409 voucher-already-used."""
    normal = normalize_code(code)
    if normal is None:
        raise _voucher_not_found()
    voucher_id = await conn.fetchval(
        "UPDATE vouchers SET status = 'used', used_at = $5, used_order_id = $3,"
        " used_by = $4 WHERE code = $1 AND partner_id = $2 AND status = 'issued'"
        " AND (expires_at IS NULL OR expires_at > $5) RETURNING id",
        normal, partner_id, order_id, actor, clock.now())
    if voucher_id is not None:
        return present_voucher(await _voucher(conn, voucher_id))
    row = await conn.fetchrow(_VOUCHER + " WHERE v.code = $1 AND v.partner_id = $2",
                              normal, partner_id)
    if row is None:
        raise _voucher_not_found()
    if row["status"] == "used":
        raise Conflict("voucher-already-used", "Voucher already used",
                       f"This voucher was already used on {row['used_at']:%Y-%m-%d %H:%M} UTC.",
                       field="code")
    if row["status"] == "cancelled":
        raise Conflict("voucher-cancelled", "Voucher cancelled",
                       "This voucher was cancelled.", field="code")
    raise DomainError("voucher-expired", "Voucher expired",
                      f"This voucher expired on {row['expires_at']:%Y-%m-%d %H:%M} UTC.",
                      field="code")


async def member_vouchers(conn: asyncpg.Connection, member_id: uuid.UUID) -> list[dict]:
    rows = await conn.fetch(_VOUCHER + " WHERE v.member_id = $1 ORDER BY v.issued_at DESC",
                            member_id)
    return [present_voucher(r) for r in rows]


async def member_catalogue(conn: asyncpg.Connection, member_id: uuid.UUID) -> list[dict]:
    """Every brand's listed, active rewards, each with why the member cannot redeem it
    yet (`locked`), or None. Not tenant data: a member browses all brands."""
    rows = await conn.fetch(
        "SELECT r.*, p.name AS partner_name,"
        " (SELECT count(*) FROM vouchers v WHERE v.reward_id = r.id AND v.member_id = $1"
        "   AND v.status <> 'cancelled') AS taken"
        " FROM rewards r JOIN partners p ON p.id = r.partner_id"
        " WHERE r.active AND r.listed AND p.status = 'active'"
        " AND (r.valid_until IS NULL OR r.valid_until > $2)"
        " ORDER BY r.price_points, p.name, r.name", member_id, clock.now())
    context = await member_context(conn, member_id)
    balance = await conn.fetchval("SELECT balance FROM accounts WHERE member_id = $1"
                                  " AND kind = 'member_wallet'", member_id) or 0
    items = []
    for row in rows:
        reward = reward_of(row)
        locked = eligible(reward, context)
        if locked is None and reward.per_member_limit is not None \
                and row["taken"] >= reward.per_member_limit:
            locked = "You have reached the limit for this reward."
        short = max(reward.price_points - balance, 0)
        items.append({"reward": reward, "partner_name": row["partner_name"],
                      "locked": locked, "short": short})
    return items


def reward_json(reward: Reward) -> dict:
    """A reward as the partner API shows it."""
    return {"id": reward.id, "name": reward.name, "description": reward.description,
            "kind": reward.kind, "value": reward.value, "currency": reward.currency,
            "category": reward.category, "price_points": reward.price_points,
            "stock": reward.stock, "issued": reward.issued, "valid_from": reward.valid_from,
            "valid_until": reward.valid_until, "voucher_days": reward.voucher_days,
            "per_member_limit": reward.per_member_limit, "tiers": list(reward.tiers or []),
            "segments": list(reward.segments or []), "listed": reward.listed,
            "active": reward.active}


# --- use cases: redeem and consume in the caller's Tx --------------------------------------

async def redeem_reward(tx: Tx, reward_id: uuid.UUID, member_id: uuid.UUID, actor: str, *,
                        request_key: str | None = None) -> dict:
    """redeem() in the Tx: for the Tx's partner's catalogue and members (the API), or
    any brand's reward (a member's own Tx, with no partner)."""
    return await redeem(tx.conn, reward_id=reward_id, member_id=member_id, actor=actor,
                        partner_id=tx.partner_id, request_key=request_key)


async def use_voucher(tx: Tx, code: str, actor: str, order_id: str | None = None) -> dict:
    """consume() at the Tx's partner."""
    return await consume(tx.conn, partner_id=tx.partner_id, code=code, actor=actor,
                         order_id=order_id)
