"""B2B company accounts (P11): one company member, one wallet, several person logins.

A company is a member of kind "company" with its name and tax id (Polish NIP or EU VAT
id, checked with python-stdnum). Its people are portal logins (users of kind member)
attached to the company's member id, each with a company_role: "buyer" sees the balance
and history and spends the shared points; "admin" also invites, re-roles and removes
people. A company always keeps at least one active admin. Companies are created by a
partner through the enrol API (kind "company") or by an operator on /operator/companies,
who also invites the first admin."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from stdnum.eu import vat
from stdnum.pl import nip

from coalition import clock
from coalition.errors import DomainError, NotFound
from coalition.members import Profile, find_or_create_id
from tenants.models import User

COMPANY_ROLES = ("buyer", "admin")


def normalize_tax_id(value: str) -> str | None:
    """A valid Polish NIP (10 digits) or EU VAT id (country prefix), compacted."""
    compact = re.sub(r"[\s.-]", "", value).upper()
    if compact.isdigit() and nip.is_valid(compact):
        return nip.compact(compact)
    if compact.startswith("PL") and nip.is_valid(compact[2:]):
        return nip.compact(compact[2:])
    if len(compact) > 2 and compact[:2].isalpha() and vat.is_valid(compact):
        return vat.compact(compact)
    return None


def company_profile(company_name: str | None, tax_id: str | None) -> Profile:
    """The enrolment profile of a company, or a 400 naming the bad field."""
    name = (company_name or "").strip()
    if not name or len(name) > 200:
        raise DomainError("validation-error", "Company name needed",
                          "A company member needs its company name (at most 200 characters).",
                          status=400, field="company_name")
    compact = normalize_tax_id(tax_id or "")
    if compact is None:
        raise DomainError("validation-error", "Invalid tax id",
                          "Give a valid Polish NIP (10 digits) or an EU VAT id such as"
                          " DE136695976.", status=400, field="tax_id")
    return Profile(kind="company", company_name=name, tax_id=compact)


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
    from tenants import accounts

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
