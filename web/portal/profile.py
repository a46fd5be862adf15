"""The partner's profile in the console: company details, status and the history of
partner-terms acceptances, with acceptance of a newer version by an owner."""

from __future__ import annotations

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.response import Redirect, Template
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenants import accounts
from tenants.models import Partner, TermsAcceptance
from tenants.onboarding import current_terms
from web.portal.common import PageForbidden, page
from web.portal.console import provide_console_session, staff

Session = NamedDependency[AsyncSession]


class ProfilePages(Controller):
    path = "/partner/profile"
    include_in_schema = False
    dependencies = {"db_session": Provide(provide_console_session)}

    @get("/")
    async def show(self, request: Request, db_session: Session) -> Template:
        user = await staff(request, db_session, "profile.view")
        partner = await db_session.get_one(Partner, user.partner_id)
        history = (await db_session.scalars(
            select(TermsAcceptance).where(TermsAcceptance.partner_id == user.partner_id)
            .order_by(TermsAcceptance.accepted_at.desc()))).all()
        terms = await current_terms(db_session)
        accepted = any(row.version == terms.version for row in history)
        return page("profile.html", user=user, partner=partner, history=history, terms=terms,
                    needs_acceptance=not accepted)

    @post("/terms")
    async def accept_terms(self, request: Request, db_session: Session) -> Redirect | Template:
        user = await staff(request, db_session, "profile.view")
        if user.role != "owner":
            raise PageForbidden("Only an owner can accept the partner terms.")
        terms = await current_terms(db_session)
        form = await request.form()
        if form.get("version") != terms.version:
            # The owner may act, just not on terms that are no longer current: a conflict.
            return page("message.html", status_code=409, title="Terms changed",
                        message="These terms are no longer the current version: read the"
                                " current ones before accepting.", field="version",
                        link="/partner/profile")
        already = await db_session.scalar(select(TermsAcceptance.id).where(
            TermsAcceptance.partner_id == user.partner_id,
            TermsAcceptance.version == terms.version))
        if already is None:
            db_session.add(TermsAcceptance(partner_id=user.partner_id, version=terms.version,
                                           accepted_by=user.email))
            await accounts.audit(db_session, user, "terms.accept", target=terms.version,
                                 partner_id=user.partner_id)
            await db_session.commit()
        return Redirect("/partner/profile")
