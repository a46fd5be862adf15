"""A member's "Connected brands": the partner apps the member consented to, and the
switch that disconnects one (every token that partner holds for the member dies)."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template

from coalition.errors import NotFound
from coalition.uow import Database
from tenants import consents
from tenants.service import MEMBER_SCOPES
from web.portal.common import acting, current_user, page, require


class ConnectionPages(Controller):
    path = "/member/connections"
    include_in_schema = False

    @get("/")
    async def list_connections(self, request: Request, db: Database) -> Template:
        user = require(request, await current_user(request, db), "member")
        brands: dict[uuid.UUID, dict] = {}
        for row in await acting(db, user).run(consents.connections, user.member_id):
            brand = brands.setdefault(row.partner_id, {"id": row.partner_id,
                                                       "name": row.partner_name, "apps": []})
            brand["apps"].append({
                "name": row.app_name, "granted_at": row.granted_at,
                "scopes": [MEMBER_SCOPES[s].format(partner=row.partner_name)
                           for s in row.scope.split() if s in MEMBER_SCOPES]})
        return page("accounts/connections.html", user=user, brands=list(brands.values()))

    @post("/{partner_id:uuid}/revoke")
    async def revoke(self, request: Request, db: Database,
                     partner_id: FromPath[uuid.UUID]) -> Redirect:
        user = require(request, await current_user(request, db), "member")
        assert user.member_id is not None
        try:
            await acting(db, user).run(consents.disconnect, partner_id, user.member_id)
        except NotFound as exc:
            raise NotFoundException(exc.detail) from None
        # This process forgets at once; the others hear the database's NOTIFY.
        request.app.state.token_verifier.forget_all()
        return Redirect("/member/connections")
