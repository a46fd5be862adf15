"""A member's "Connected brands": the partner apps the member consented to, and the
switch that disconnects one (every token that partner holds for the member dies)."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from tenants import accounts
from tenants.models import MemberConsent, OAuthClient, OAuthToken, Partner
from tenants.service import MEMBER_SCOPES
from web.portal.common import current_user, page, require

Session = NamedDependency[AsyncSession]


async def disconnect(db_session: AsyncSession, partner_id: uuid.UUID,
                     member_id: uuid.UUID) -> int:
    """Withdraw every consent the member gave the partner's apps and revoke every token
    the partner holds for the member. The revoked_at trigger makes every API process
    forget those tokens at once."""
    now = clock.now()
    withdrawn = await db_session.execute(
        update(MemberConsent)
        .where(MemberConsent.partner_id == partner_id, MemberConsent.member_id == member_id,
               MemberConsent.revoked_at.is_(None))
        .values(revoked_at=now))
    await db_session.execute(
        update(OAuthToken)
        .where(OAuthToken.partner_id == partner_id, OAuthToken.member_id == member_id,
               OAuthToken.revoked_at.is_(None))
        .values(revoked_at=now))
    return withdrawn.rowcount


class ConnectionPages(Controller):
    path = "/member/connections"
    include_in_schema = False

    @get("/")
    async def list_connections(self, request: Request, db_session: Session) -> Template:
        user = require(request, await current_user(request, db_session), "member")
        rows = (await db_session.execute(
            select(Partner.id, Partner.name, OAuthClient.name, MemberConsent.scope,
                   MemberConsent.granted_at)
            .join(OAuthClient, OAuthClient.id == MemberConsent.client_pk)
            .join(Partner, Partner.id == MemberConsent.partner_id)
            .where(MemberConsent.member_id == user.member_id,
                   MemberConsent.revoked_at.is_(None))
            .order_by(Partner.name, OAuthClient.name))).all()
        brands: dict[uuid.UUID, dict] = {}
        for partner_id, partner_name, app_name, scope, granted_at in rows:
            brand = brands.setdefault(partner_id, {"id": partner_id, "name": partner_name,
                                                   "apps": []})
            brand["apps"].append({
                "name": app_name, "granted_at": granted_at,
                "scopes": [MEMBER_SCOPES[s].format(partner=partner_name)
                           for s in scope.split() if s in MEMBER_SCOPES]})
        return page("connections.html", user=user, brands=list(brands.values()))

    @post("/{partner_id:uuid}/revoke")
    async def revoke(self, request: Request, db_session: Session,
                     partner_id: FromPath[uuid.UUID]) -> Redirect:
        user = require(request, await current_user(request, db_session), "member")
        assert user.member_id is not None
        if not await disconnect(db_session, partner_id, user.member_id):
            raise NotFoundException("You have no connection with this brand.")
        await accounts.audit(db_session, user, "member.disconnect", target=str(partner_id),
                             partner_id=partner_id)
        await db_session.commit()
        # This process forgets at once; the others hear the database's NOTIFY.
        request.app.state.token_verifier.forget_all()
        return Redirect("/member/connections")
