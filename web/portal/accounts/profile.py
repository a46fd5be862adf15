"""The partner's profile in the console: company details, status and the history of
partner-terms acceptances, with acceptance of a newer version by an owner."""

from __future__ import annotations

from litestar import Controller, Request, get, post
from litestar.response import Redirect, Template

from coalition.uow import Database
from tenants import onboarding, queries
from web.portal.common import PageForbidden, acting, page
from web.portal.partners.console import staff


class ProfilePages(Controller):
    path = "/partner/profile"
    include_in_schema = False

    @get("/")
    async def show(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "profile.view")
        found = await acting(db, user, scoped=True).run(queries.profile)
        return page("accounts/profile.html", user=user, partner=found.partner,
                    history=found.history, terms=found.terms,
                    needs_acceptance=found.needs_acceptance)

    @post("/terms")
    async def accept_terms(self, request: Request, db: Database) -> Redirect | Template:
        user = await staff(request, db, "profile.view")
        if user.role != "owner":
            raise PageForbidden("Only an owner can accept the partner terms.")
        console = acting(db, user, scoped=True)
        terms = await console.run(onboarding.terms)
        form = await request.form()
        if form.get("version") != terms.version:
            # The owner may act, just not on terms that are no longer current: a conflict.
            return page("message.html", status_code=409, title="Terms changed",
                        message="These terms are no longer the current version: read the"
                                " current ones before accepting.", field="version",
                        link="/partner/profile")
        await console.run(onboarding.accept_terms, terms.version, user.email)
        return Redirect("/partner/profile")
