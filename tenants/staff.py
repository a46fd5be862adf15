"""A partner's staff in the console: the list, invitations, role changes and removals.
Each runs in the acting staff member's Tx, scoped to their partner (tenants/scope.py),
and writes its audit row there. The role rules (tenants/roles.py): only an owner grants,
changes or removes the owner role, and a partner always keeps an owner."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from coalition import clock
from coalition.errors import DomainError, NotFound
from coalition.uow import Tx
from tenants import accounts
from tenants.models import STAFF_ROLES, Partner, User


class NoSuchRole(DomainError):
    """A role the form does not offer: a mistake in the form, not a permission."""

    status = 400

    def __init__(self) -> None:
        super().__init__("validation-error", "No such role",
                         f"Choose one of the roles: {', '.join(STAFF_ROLES)}.", field="role")


class NotAllowed(DomainError):
    """The acting staff member's role does not allow this (a 403 page)."""

    status = 403

    def __init__(self, detail: str) -> None:
        super().__init__("forbidden", "Not allowed", detail)


async def staff(tx: Tx) -> list[User]:
    """Everyone of the Tx's partner, in the order they joined."""
    return list((await (await tx.session()).scalars(select(User).where(
        User.partner_id == tx.partner_id).order_by(User.created_at))).all())


async def _own_staff(tx: Tx, staff_id: uuid.UUID) -> User:
    member = await (await tx.session()).scalar(select(User).where(
        User.id == staff_id, User.partner_id == tx.partner_id, User.kind == "partner_staff"))
    if member is None:
        raise NotFound("not-found", "No such staff member", "No such staff member.")
    return member


async def invite(tx: Tx, email: str, name: str | None, role: str) -> tuple[str, str]:
    """A new staff login of the Tx's partner (no password yet): the invitation token and
    the partner's name, for the email."""
    session = await tx.session()
    invited = await accounts.create_user(session, email, "partner_staff", name=name,
                                         partner_id=tx.partner_id, role=role)
    token = await accounts.issue_token(session, invited, "invite")
    partner = await session.get_one(Partner, tx.partner_id)
    await tx.audit("staff.invite", target=email, role=role)
    return token, partner.name


async def change_role(tx: Tx, actor_role: str | None, staff_id: uuid.UUID, role: str) -> None:
    """Give a staff member `role`, as someone of `actor_role`; NotFound, NoSuchRole or
    NotAllowed."""
    target = await _own_staff(tx, staff_id)
    if role not in STAFF_ROLES:
        raise NoSuchRole()
    if actor_role != "owner" and "owner" in (role, target.role):
        raise NotAllowed("You cannot grant or change this role.")
    await _keep_an_owner(tx, target, leaving_owner=role != "owner")
    target.role = role
    await tx.audit("staff.role", target=target.email, role=role)


async def remove(tx: Tx, actor_role: str | None, staff_id: uuid.UUID) -> None:
    """Disable a staff member's login, as someone of `actor_role`; NotFound or
    NotAllowed."""
    target = await _own_staff(tx, staff_id)
    if actor_role != "owner" and target.role == "owner":
        raise NotAllowed("Only an owner can remove an owner.")
    await _keep_an_owner(tx, target, leaving_owner=True)
    target.disabled_at = clock.now()
    await tx.audit("staff.remove", target=target.email)


async def _keep_an_owner(tx: Tx, target: User, leaving_owner: bool) -> None:
    if target.role != "owner" or not leaving_owner:
        return
    owners = await (await tx.session()).scalar(select(func.count()).select_from(User).where(
        User.partner_id == target.partner_id, User.role == "owner",
        User.disabled_at.is_(None)))
    if owners <= 1:
        raise NotAllowed("A partner must keep at least one owner.")
