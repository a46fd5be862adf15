"""A member's consents to partners' apps: the consent screen of /oauth/authorize, the
"Connected brands" page and its disconnect switch, and the claims of /oauth/userinfo."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert

from coalition import clock
from coalition.errors import NotFound
from coalition.models import Member, MemberLink
from coalition.uow import Tx
from tenants.models import MemberConsent, OAuthClient, OAuthToken, Partner, User


async def app_redirect_uris(tx: Tx, client_id: str) -> list[str] | None:
    """The redirect URIs of a live app client (None: no such app)."""
    return await (await tx.session()).scalar(select(OAuthClient.redirect_uris).where(
        OAuthClient.client_id == client_id, OAuthClient.client_type == "app",
        OAuthClient.revoked_at.is_(None)))


async def member_card(tx: Tx, member_id: uuid.UUID | None) -> str | None:
    return await (await tx.session()).scalar(
        select(Member.card_number).where(Member.id == member_id))


async def remembered_scope(tx: Tx, client_pk: uuid.UUID, member_id: uuid.UUID) -> str | None:
    """The scope the member consented to for this app and has not withdrawn."""
    return await (await tx.session()).scalar(
        select(MemberConsent.scope).where(MemberConsent.client_pk == client_pk,
                                          MemberConsent.member_id == member_id,
                                          MemberConsent.revoked_at.is_(None)))


async def record_consent(tx: Tx, member_id: uuid.UUID, partner_id: uuid.UUID,
                         client_pk: uuid.UUID, client_id: str, scope: str) -> None:
    """Remember the consent (what "Connected brands" lists) and link the member to the
    brand, as enrolling there would; audited as the Tx's user."""
    session = await tx.session()
    await session.execute(
        insert(MemberConsent)
        .values(partner_id=partner_id, client_pk=client_pk, member_id=member_id, scope=scope)
        .on_conflict_do_update(index_elements=["client_pk", "member_id"],
                               set_={"scope": scope, "revoked_at": None,
                                     "granted_at": clock.now()}))
    await session.execute(
        insert(MemberLink).values(partner_id=partner_id, member_id=member_id)
        .on_conflict_do_nothing())
    await tx.audit("member.consent", target=client_id, partner_id=partner_id, scope=scope)


@dataclass(frozen=True)
class Connection:
    partner_id: uuid.UUID
    partner_name: str
    app_name: str
    scope: str
    granted_at: datetime


async def connections(tx: Tx, member_id: uuid.UUID) -> list[Connection]:
    """The apps the member consented to and has not disconnected, by brand then app."""
    rows = (await (await tx.session()).execute(
        select(Partner.id, Partner.name, OAuthClient.name, MemberConsent.scope,
               MemberConsent.granted_at)
        .join(OAuthClient, OAuthClient.id == MemberConsent.client_pk)
        .join(Partner, Partner.id == MemberConsent.partner_id)
        .where(MemberConsent.member_id == member_id, MemberConsent.revoked_at.is_(None))
        .order_by(Partner.name, OAuthClient.name))).all()
    return [Connection(*row) for row in rows]


async def disconnect(tx: Tx, partner_id: uuid.UUID, member_id: uuid.UUID) -> int:
    """Withdraw every consent the member gave the partner's apps and revoke every token
    the partner holds for the member; NotFound (and nothing changed) when there was no
    consent to withdraw. The revoked_at trigger makes every API process forget those
    tokens at once. Returns how many consents."""
    session = await tx.session()
    now = clock.now()
    withdrawn = await session.execute(
        update(MemberConsent)
        .where(MemberConsent.partner_id == partner_id, MemberConsent.member_id == member_id,
               MemberConsent.revoked_at.is_(None))
        .values(revoked_at=now))
    if not withdrawn.rowcount:
        raise NotFound("not-found", "No connection", "You have no connection with this brand.")
    await session.execute(
        update(OAuthToken)
        .where(OAuthToken.partner_id == partner_id, OAuthToken.member_id == member_id,
               OAuthToken.revoked_at.is_(None))
        .values(revoked_at=now))
    await tx.audit("member.disconnect", target=str(partner_id), partner_id=partner_id)
    return withdrawn.rowcount


async def member_login(tx: Tx, user_id: uuid.UUID) -> tuple[User, str] | None:
    """A member login and its card number (None: the account no longer exists)."""
    found = (await (await tx.session()).execute(
        select(User, Member.card_number).join(Member, Member.id == User.member_id)
        .where(User.id == user_id))).first()
    return (found[0], found[1]) if found else None
