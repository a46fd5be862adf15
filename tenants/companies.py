"""A B2B company's people (P11): portal logins (users of kind member) attached to the
company's member id, each with a company_role: "buyer" sees the balance and history and
spends the shared points; "admin" also invites, re-roles and removes people. A company
always keeps at least one active admin. The company member itself and its profile are
coalition/companies.py."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.companies import COMPANY_ROLES, company_profile
from coalition.errors import DomainError, NotFound
from coalition.members import find_or_create_id
from coalition.models import Member
from coalition.uow import Tx
from tenants import accounts
from tenants.models import User

__all__ = ["COMPANY_ROLES", "change_role", "create_company", "invite", "people", "person",
           "remove"]


async def people(session: AsyncSession, member_id: uuid.UUID) -> list:
    return list((await session.scalars(select(User).where(
        User.member_id == member_id, User.company_role.is_not(None))
        .order_by(User.created_at))).all())


async def _admins_left(session: AsyncSession, member_id: uuid.UUID,
                       without: uuid.UUID) -> int:
    # Serialise changes to one company's people, so two admins cannot demote each
    # other at the same moment and leave none.
    await session.execute(select(User.id).where(User.member_id == member_id)
                          .with_for_update())
    return await session.scalar(select(func.count()).select_from(User).where(
        User.member_id == member_id, User.company_role == "admin",
        User.disabled_at.is_(None), User.id != without)) or 0


async def person(session: AsyncSession, member_id: uuid.UUID, user_id: uuid.UUID):
    found = await session.scalar(select(User).where(
        User.id == user_id, User.member_id == member_id, User.company_role.is_not(None)))
    if found is None:
        raise NotFound("not-found", "No such person", "This person is not in your company.")
    return found


async def change_role(session: AsyncSession, member_id: uuid.UUID, user_id: uuid.UUID,
                      role: str) -> None:
    if role not in COMPANY_ROLES:
        raise DomainError("validation-error", "Invalid role", "A role is buyer or admin.",
                          status=400, field="role")
    target = await person(session, member_id, user_id)
    if target.company_role == "admin" and role != "admin" \
            and await _admins_left(session, member_id, target.id) == 0:
        raise DomainError("last-admin", "Last admin",
                          "A company keeps at least one admin: make someone else admin first.",
                          status=409, field="role")
    target.company_role = role
    await session.flush()


async def remove(session: AsyncSession, member_id: uuid.UUID, user_id: uuid.UUID) -> None:
    target = await person(session, member_id, user_id)
    if target.company_role == "admin" and await _admins_left(session, member_id,
                                                             target.id) == 0:
        raise DomainError("last-admin", "Last admin",
                          "A company keeps at least one admin: make someone else admin first.",
                          status=409)
    target.disabled_at = target.disabled_at or clock.now()
    await session.flush()


async def invite(session: AsyncSession, member_id: uuid.UUID, email: str, name: str | None,
                 role: str) -> tuple[User, str]:
    """A new login for the company with an emailed invitation token (set password)."""
    if role not in COMPANY_ROLES:
        raise DomainError("validation-error", "Invalid role", "A role is buyer or admin.",
                          status=400, field="role")
    email = (email or "").strip()
    if "@" not in email or "." not in email.split("@")[-1] or len(email) > 320:
        raise DomainError("validation-error", "Invalid email", "Enter a valid email address.",
                          status=400, field="email")
    user = await accounts.create_user(session, email, "member", name=name or None,
                                      member_id=member_id)
    user.company_role = role
    await session.flush()
    return user, await accounts.issue_token(session, user, "invite")


async def create_company(session: AsyncSession, email: str, company_name: str, tax_id: str,
                         admin_email: str, admin_name: str | None
                         ) -> tuple[uuid.UUID, User, str]:
    """An operator creates a company member (or finds it by its email) and invites its
    first admin; returns the member id, the admin login and the invitation token."""
    profile = company_profile(company_name, tax_id)
    email = (email or "").strip()
    if "@" not in email or "." not in email.split("@")[-1] or len(email) > 320:
        raise DomainError("validation-error", "Invalid email", "Enter the company's email"
                          " address.", status=400, field="email")
    member_id, _ = await find_or_create_id(session, email, profile.company_name, profile)
    try:
        user, token = await invite(session, member_id, admin_email, admin_name, "admin")
    except DomainError as exc:
        # The admin's login, not the company's: the form's fields are admin_email and
        # admin_name.
        if exc.field in ("email", "name"):
            exc.field = f"admin_{exc.field}"
        raise
    return member_id, user, token


# The portal's use cases (web/portal/partners/company.py): a company's admins manage its people,
# the operator lists and creates companies. Each writes its audit row in its Tx.

async def company(tx: Tx, member_id: uuid.UUID | None) -> Member | None:
    """The company member a login belongs to (None: none, or a person's wallet)."""
    found = await (await tx.session()).get(Member, member_id) if member_id else None
    return found if found is not None and found.kind == "company" else None


async def people_of(tx: Tx, member_id: uuid.UUID) -> list[User]:
    return await people(await tx.session(), member_id)


async def invite_person(tx: Tx, member_id: uuid.UUID, email: str, name: str | None,
                        role: str) -> tuple[User, str]:
    """invite(), audited as the Tx's admin."""
    invited, token = await invite(await tx.session(), member_id, email, name, role)
    await tx.audit("company.invite", target=invited.email, role=invited.company_role,
                   company=str(member_id))
    return invited, token


async def set_role(tx: Tx, member_id: uuid.UUID, person_id: uuid.UUID, role: str) -> None:
    await change_role(await tx.session(), member_id, person_id, role)
    await tx.audit("company.role", target=str(person_id), role=role, company=str(member_id))


async def remove_person(tx: Tx, member_id: uuid.UUID, person_id: uuid.UUID) -> None:
    await remove(await tx.session(), member_id, person_id)
    await tx.audit("company.remove", target=str(person_id), company=str(member_id))


async def companies(tx: Tx) -> list[Any]:
    """Every company with its wallet's balance and its active people, by name."""
    return await tx.conn.fetch(
        "SELECT m.id, m.company_name, m.tax_id, m.email, m.card_number, a.balance,"
        " (SELECT count(*) FROM users u WHERE u.member_id = m.id AND u.disabled_at IS NULL)"
        " AS people FROM members m JOIN accounts a ON a.member_id = m.id"
        " WHERE m.kind = 'company' ORDER BY m.company_name")


async def open_company(tx: Tx, email: str, company_name: str, tax_id: str, admin_email: str,
                       admin_name: str | None) -> tuple[User, str]:
    """create_company(), audited as the Tx's operator: the first admin's login and its
    invitation token."""
    _, admin, token = await create_company(await tx.session(), email, company_name, tax_id,
                                           admin_email, admin_name)
    await tx.audit("company.create", target=email, admin=admin.email)
    return admin, token
