"""Member enrolment and lookup. A member is one coalition-wide identity; partners see
only the members linked to them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.cards import new_card_number
from coalition.errors import Conflict, DomainError
from coalition.models import Member, MemberLink


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
