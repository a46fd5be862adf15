"""Member enrolment and lookup. A member is one coalition-wide identity; partners see
only the members linked to them."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock, ledger, referrals
from coalition.affiliates import commissions
from coalition.affiliates.attribution import Flush, Touch
from coalition.cards import new_card_number
from coalition.errors import Conflict, DomainError
from coalition.models import Member, MemberLink
from coalition.tiers import history as tier_history
from coalition.tiers import member_status
from coalition.uow import Tx, one_statement


@dataclass(frozen=True)
class Profile:
    """What enrolment may set on a new member besides email and name. A company member
    (kind "company") needs its company name and a valid tax id (coalition/companies.py)."""

    birth_date: date | None = None
    kind: str = "person"
    company_name: str | None = None
    tax_id: str | None = None


@dataclass(frozen=True)
class LinkedMember:
    member: Member
    customer_id: str | None
    linked_at: datetime


async def find_or_create_id(
    session: AsyncSession, email: str, name: str | None, profile: Profile | None = None
) -> tuple[uuid.UUID, bool]:
    """The id of the coalition member with this email, created (with its wallet) if none
    exists; and whether this call created it.

    Goes through the SQL function member_find_or_create (SECURITY DEFINER): a partner's
    tenant-scoped session can neither see nor insert a member that is not linked to it
    yet, so this is the one door to the coalition-wide identity (see migrations 0007 and
    0011). An existing member of another kind (a person where a company was asked for,
    or the reverse) is a conflict."""
    profile = profile or Profile()
    for _ in range(5):
        try:
            async with session.begin_nested():
                row = (await session.execute(
                    text("SELECT member_id, created, kind FROM member_find_or_create("
                         ":e, :n, :c, :b, :k, :cn, :t, :now)"),
                    {"e": email, "n": name, "c": new_card_number(), "b": profile.birth_date,
                     "k": profile.kind, "cn": profile.company_name, "t": profile.tax_id,
                     "now": clock.now()})).one()
        except IntegrityError as exc:  # a card number collision: draw another one
            if "card_number" not in str(exc.orig):
                raise
            continue
        if row.kind != profile.kind:
            raise Conflict("member-kind-mismatch", "Member is of another kind",
                           f"A member with this email exists as a {row.kind}.", field="kind")
        return row.member_id, row.created
    raise RuntimeError("could not allocate a unique card number")


def check_birth_date(value: date | None, today: date) -> None:
    if value is not None and not date(1900, 1, 1) <= value <= today:
        raise DomainError("validation-error", "Invalid birth date",
                          "A birth date lies between 1900-01-01 and today.", status=400,
                          field="birth_date")


async def find_or_create(
    session: AsyncSession, email: str, name: str | None
) -> tuple[Member, bool]:
    """The coalition member with this email, created (with its wallet) if none exists;
    and whether this call created it. Not for tenant sessions: they see a member only
    once it is linked to them (use find_or_create_id, then link)."""
    member_id, created = await find_or_create_id(session, email, name)
    return await session.get_one(Member, member_id), created


async def enroll(
    session: AsyncSession,
    partner_id: uuid.UUID,
    email: str,
    name: str | None,
    customer_id: str | None,
    profile: Profile | None = None,
) -> tuple[LinkedMember, bool]:
    """Create the member, or link the existing member with this email to the partner.
    Returns the member as the partner sees it and whether it was newly created."""
    member_id, created = await find_or_create_id(session, email, name, profile)

    if customer_id is not None:
        holder = await session.scalar(
            select(MemberLink.member_id).where(
                MemberLink.partner_id == partner_id, MemberLink.customer_id == customer_id
            )
        )
        if holder is not None and holder != member_id:
            raise Conflict(
                "customer-id-taken",
                "Customer id already linked",
                "Another member is already linked to your partner account with this customer id.",
                field="partner_customer_id",
            )

    await session.execute(
        insert(MemberLink)
        .values(partner_id=partner_id, member_id=member_id, customer_id=customer_id,
                created_at=clock.now())
        .on_conflict_do_nothing()
    )
    link = await session.get_one(MemberLink, (partner_id, member_id))
    if customer_id is not None and link.customer_id != customer_id:
        if link.customer_id is not None:
            raise Conflict(
                "member-already-linked",
                "Member already linked with another customer id",
                f"This member is linked to your account as customer {link.customer_id!r}.",
                field="partner_customer_id",
            )
        link.customer_id = customer_id
        await session.flush()
    # Linked now, so a tenant-scoped session can load it.
    member = await session.get_one(Member, member_id)
    return LinkedMember(member, link.customer_id, link.created_at), created


def _visible_members(partner_id: uuid.UUID):
    return (
        select(Member, MemberLink.customer_id, MemberLink.created_at)
        .join(MemberLink, MemberLink.member_id == Member.id)
        .where(MemberLink.partner_id == partner_id)
    )


async def get_visible(
    session: AsyncSession, partner_id: uuid.UUID, member_id: uuid.UUID
) -> LinkedMember | None:
    query = _visible_members(partner_id).where(Member.id == member_id)
    row = (await session.execute(query)).first()
    return LinkedMember(*row) if row else None


async def list_visible(
    session: AsyncSession,
    partner_id: uuid.UUID,
    *,
    customer_id: str | None = None,
    card_number: str | None = None,
    after: uuid.UUID | None = None,
    limit: int = 50,
) -> list[LinkedMember]:
    query = _visible_members(partner_id).order_by(Member.id).limit(limit)
    if customer_id is not None:
        query = query.where(MemberLink.customer_id == customer_id)
    if card_number is not None:
        query = query.where(Member.card_number == card_number)
    if after is not None:
        query = query.where(Member.id > after)
    return [LinkedMember(*row) for row in (await session.execute(query)).all()]


# The partner API's use cases (web/api/members.py). They run scoped to the client's
# partner (tenants/scope.py): the partner is the Tx's.

async def visible(tx: Tx, member_id: uuid.UUID) -> LinkedMember | None:
    """The member as the Tx's partner sees it (None: not linked to it)."""
    return await get_visible(await tx.session(), tx.partner_id, member_id)


async def listed(tx: Tx, *, customer_id: str | None = None, card_number: str | None = None,
                 after: uuid.UUID | None = None, limit: int = 50) -> list[LinkedMember]:
    return await list_visible(await tx.session(), tx.partner_id, customer_id=customer_id,
                              card_number=card_number, after=after, limit=limit)


@dataclass(frozen=True)
class Referral:
    """Who referred a member enrolled through the API: a card number, a referral code, or
    both (they must name one member)."""

    card_number: str | None = None
    code: str | None = None


_REFERRAL_REFUSALS = {
    "unknown_card": ("referrer_card_number", "No other active member has this card number."),
    "unknown_code": ("referral_code", "No active member has this referral code."),
    "mismatch": ("referral_code", "The referral code and referrer_card_number name"
                                  " different members."),
}


async def enroll_member(tx: Tx, email: str, name: str | None, customer_id: str | None,
                        profile: Profile, referral: Referral, touch: Touch,
                        flush: Flush | None = None) -> tuple[LinkedMember, bool]:
    """enroll() for the Tx's partner; a new member is bound to its referrer (a refusal
    is a 422 naming the field, and the enrolment rolls back with it), and a sign-up
    through an affiliate's link is that affiliate's lead (same transaction)."""
    session = await tx.session()
    linked, created = await enroll(session, tx.partner_id, email, name, customer_id, profile)
    if created and (referral.card_number or referral.code) is not None:
        await _bind_referral(tx, linked.member.id, referral)
    if touch:
        await commissions.for_signup(tx.conn, member_id=linked.member.id, at=clock.now(),
                                     touch=touch, partner_id=tx.partner_id, flush=flush)
    return linked, created


async def _bind_referral(tx: Tx, member_id: uuid.UUID, referral: Referral) -> None:
    code = referral.code
    if code is not None:
        code = referrals.normalized(code)
        if code is None:
            raise DomainError("validation-error", "Invalid request",
                              "A referral code is 8 letters and digits.", status=422,
                              field="referral_code")
    outcome = await tx.conn.fetchval("SELECT member_referral_bind($1, $2, $3, $4)",
                                     member_id, referral.card_number, code, tx.partner_id)
    if outcome == "ok":
        return
    field, detail = _REFERRAL_REFUSALS.get(outcome, (
        "referral_code" if code else "referrer_card_number",
        "A member cannot refer themselves."))
    raise DomainError("validation-error", "Invalid request", detail, status=422, field=field)


# The member's own home page (web/portal/home.py).

async def history(tx: Tx, member_id: uuid.UUID, limit: int = 50) -> list[dict[str, Any]]:
    """The member's ledger lines across brands, newest first: the ledger's own history
    query (coalition/ledger.py), with the brand's name ("Coalition" for none)."""
    rows = await ledger.member_history(tx.conn, member_id, None, limit)
    return [{"created_at": row["created_at"], "kind": row["kind"],
             "brand": row["partner_name"] or "Coalition", "description": row["description"],
             "points": row["points"]} for row in rows]


_PURCHASES = """
SELECT pu.occurred_at, p.name AS brand, pu.order_id, pu.total, pu.currency,
       pu.points, pu.returned_points, pu.breakdown::text AS breakdown,
       (SELECT max(l.available_at) FROM lots l
         WHERE l.entry_id = pu.entry_id AND l.status = 'pending') AS pending_until
  FROM purchases pu JOIN partners p ON p.id = pu.partner_id
 WHERE pu.member_id = $1 ORDER BY pu.occurred_at DESC, pu.id DESC LIMIT 20
"""


@dataclass(frozen=True)
class Home:
    balance: dict[str, int]
    history: list[dict[str, Any]]
    # Purchases with the rules that priced them (how the points were earned, which the
    # ledger lines alone do not say), and points still waiting out a return window.
    purchases: list[dict[str, Any]]
    brands: list[Any]
    member: Any
    tier: Any
    tier_history: list[Any]


async def home(tx: Tx, member_id: uuid.UUID) -> Home:
    """What the member's home page shows: balance, history, purchases, brands, tier."""
    conn, now = tx.conn, clock.now()
    balance = await ledger.member_balance(conn, member_id)
    purchases = [{**row, "rules": json.loads(row["breakdown"])}
                 for row in await conn.fetch(_PURCHASES, member_id)]
    brands = await conn.fetch(
        "SELECT p.name, l.created_at FROM member_links l JOIN partners p"
        " ON p.id = l.partner_id WHERE l.member_id = $1 ORDER BY p.name", member_id)
    member = await conn.fetchrow("SELECT card_number, kind, company_name FROM members"
                                 " WHERE id = $1", member_id)
    return Home(balance, await history(tx, member_id), purchases, list(brands), member,
                await member_status(conn, member_id, now),
                await tier_history(conn, member_id, 10))


@one_statement
async def referral_code(tx: Tx, member_id: uuid.UUID) -> str:
    """The member's referral code, drawn now if it has none. Outside a transaction, as
    referrals.ensure_code expects: a drawn code that collides is drawn again."""
    return await referrals.ensure_code(tx.conn, member_id)
