"""The member's and the operator's home pages (the partner's is in partners/console.py);
the three home pages' templates are in web/templates/home/."""

from __future__ import annotations

from litestar import Controller, Request, get
from litestar.response import Template

from coalition import members
from coalition.uow import Database
from tenants import queries
from web.portal.common import acting, current_user, operator, page, require


class HomePages(Controller):
    include_in_schema = False

    @get("/member")
    async def member_home(self, request: Request, db: Database) -> Template:
        user = require(request, await current_user(request, db), "member")
        me = acting(db, user)
        home = await me.run(members.home, user.member_id)
        code = await me.run(members.referral_code, user.member_id)
        return page("home/member_home.html", user=user, balance=home.balance, history=home.history,
                    purchases=home.purchases, brands=home.brands,
                    card=home.member["card_number"], member=home.member, tier=home.tier,
                    tier_history=home.tier_history, referral_code=code,
                    referral_link=f"{str(request.base_url).rstrip('/')}/join/{code}")

    @get("/operator")
    async def operator_home(self, request: Request, db: Database) -> Template:
        user = await operator(request, db)
        home = await acting(db, user).run(queries.operator_home)
        return page("home/operator_home.html", user=user, partners=home.partners,
                    totals=home.totals, referral_figures=home.referral_figures)


ROUTES = [HomePages]
