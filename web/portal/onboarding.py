"""Becoming a partner: the public application, the operator's queue and decisions, and
the owner's invitation."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.errors import DomainError
from tenants import accounts, onboarding, sessions
from tenants.mail import Mailer
from tenants.models import AuditEntry, Partner, TermsAcceptance, User
from tenants.passwords import PasswordWorkBusy
from web.portal.auth import base_url, busy
from web.portal.common import operator, page
from web.sessions import current_session_id, renew_session_id

Session = NamedDependency[AsyncSession]
CHOICES = {"legal_forms": onboarding.LEGAL_FORMS, "industries": onboarding.INDUSTRIES,
           "currencies": onboarding.CURRENCIES}
DECISION_MAILS = {
    "reject": ("Your Coalition partner application",
               "We are sorry: your application was not accepted.\n\nReason: {note}\n"),
    "request_info": ("Coalition partner application: more information needed",
                     "We need more information about your application:\n\n{note}\n\n"
                     "Reply to this email with the details.\n"),
    "suspend": ("Your Coalition partner account is suspended",
                "Your partner account and its API access are suspended.\n\nReason: {note}\n"),
    "reactivate": ("Your Coalition partner account is active again",
                   "Your partner account and its API access are active again.\n"),
    "offboard": ("Your Coalition partnership has ended",
                 "Your partner account has been offboarded.\n\nReason: {note}\n"),
}


class OnboardingPages(Controller):
    include_in_schema = False

    @get("/partners/apply")
    async def apply_form(self, request: Request, db_session: Session) -> Template:
        terms = await onboarding.current_terms(db_session)
        return page("apply.html", app=onboarding.Application(), terms=terms, **CHOICES)

    @post("/partners/apply")
    async def apply(self, request: Request, db_session: Session) -> Template:
        application = onboarding.Application.from_form(dict(await request.form()))
        try:
            partner = await onboarding.submit_application(db_session, application)
        except DomainError:
            await db_session.rollback()
            terms = await onboarding.current_terms(db_session)
            return page("apply.html", status_code=400, app=application, terms=terms, **CHOICES)
        await db_session.commit()
        mailer: Mailer = request.app.state.mailer
        await mailer.send(application.contact_email, "We received your partner application",
                          f"Thank you for applying to join the coalition as {partner.name}. "
                          "The operator reviews applications within a few working days and "
                          "will email you the decision.\n")
        return page("message.html", title="Application received",
                    message=f"Thank you. We will review the application of {partner.name} and "
                    f"email {application.contact_email} with the decision.")

    @get("/partners/terms")
    async def terms(self, db_session: Session) -> Template:
        return page("terms.html", terms=await onboarding.current_terms(db_session))

    @get("/operator/partners")
    async def queue(self, request: Request, db_session: Session) -> Template:
        user = await operator(request, db_session)
        partners = (await db_session.scalars(
            select(Partner).order_by(Partner.created_at.desc()))).all()
        waiting = [p for p in partners if p.status in ("applied", "under_review")]
        return page("applications.html", user=user, waiting=waiting, partners=partners)

    @get("/operator/partners/{partner_id:uuid}")
    async def detail(self, request: Request, db_session: Session,
                     partner_id: FromPath[uuid.UUID]) -> Template:
        user = await operator(request, db_session)
        partner = await db_session.get(Partner, partner_id)
        if partner is None:
            return page("message.html", status_code=404, user=user, title="Not found",
                        message="No such partner.")
        return await self._detail(db_session, user, partner)

    @staticmethod
    async def _detail(db_session: AsyncSession, user: User, partner: Partner,
                      refused: DomainError | None = None) -> Template:
        """The partner's page; with the decision it refused, shown above its forms."""
        history = (await db_session.scalars(
            select(AuditEntry).where(AuditEntry.partner_id == partner.id)
            .order_by(AuditEntry.id.desc()))).all()
        acceptances = (await db_session.scalars(
            select(TermsAcceptance).where(TermsAcceptance.partner_id == partner.id)
            .order_by(TermsAcceptance.id))).all()
        actions = [d for d, (origin, _) in onboarding.DECISIONS.items()
                   if partner.status in origin]
        return page("partner_detail.html", status_code=refused.status if refused else 200,
                    user=user, partner=partner, history=history, acceptances=acceptances,
                    actions=actions, error=refused.detail if refused else None,
                    error_field=refused.field if refused else None)

    @post("/operator/partners/{partner_id:uuid}/decision")
    async def decision(self, request: Request, db_session: Session,
                       partner_id: FromPath[uuid.UUID]) -> Response:
        user = await operator(request, db_session)
        form = await request.form()
        decision, note = form.get("decision", ""), form.get("note", "")
        partner = await db_session.get(Partner, partner_id, with_for_update=True)
        if partner is None or decision not in onboarding.DECISIONS:
            return page("message.html", status_code=404, user=user, title="Not found",
                        message="No such partner or decision.")
        try:
            owner = await onboarding.decide(db_session, user, partner, decision, note)
        except DomainError as exc:
            # decide() refuses before it changes anything, and the session rolls back
            # when it closes (a rollback now would expire what the page shows).
            return await self._detail(db_session, user, partner, refused=exc)
        mailer: Mailer = request.app.state.mailer
        if owner is not None:
            token = await accounts.issue_token(db_session, owner, "invite")
            await db_session.commit()
            await mailer.send(owner.email, f"{partner.name} is now a Coalition partner",
                              "Your application is approved. Set your password to open the "
                              f"partner console:\n\n{base_url(request)}/set-password?token="
                              f"{token}\n\nThe link works once and expires in 7 days.\n")
        else:
            await db_session.commit()
            if decision in DECISION_MAILS and partner.contact_email:
                subject, text = DECISION_MAILS[decision]
                await mailer.send(partner.contact_email, subject, text.format(note=note))
        # Other processes drop their cached tokens on NOTIFY coalition_auth, which reaches
        # this one's listener a moment later; forget now, so a suspension stops the very
        # next API call here.
        request.app.state.token_verifier.forget_all()
        return Redirect(f"/operator/partners/{partner_id}")

    @get("/set-password")
    async def set_password_form(self, token: FromQuery[str] = "") -> Template:
        return page("reset.html", token=token, action="/set-password",
                    heading="Set your password")

    @post("/set-password")
    async def set_password(self, request: Request, db_session: Session) -> Response:
        form = await request.form()
        password, token = form.get("password", ""), form.get("token", "")

        def refused(exc: DomainError) -> Template:
            template = page("reset.html", status_code=exc.status, token=token,
                            error=exc.detail, action="/set-password",
                            heading="Set your password")
            return busy(template, exc) if isinstance(exc, PasswordWorkBusy) else template

        try:
            await accounts.check_password_rules(password)
        except DomainError as exc:
            return refused(exc)
        user = await accounts.consume_token(db_session, token, "invite")
        if user is None:
            return page("message.html", status_code=400, title="Link not valid",
                        message="This invitation link is invalid, used or expired. Ask the "
                        "person who invited you for a new one.")
        try:
            await accounts.set_password(db_session, user, password)
        except DomainError as exc:  # the rules with the email known, or a full queue
            await db_session.rollback()  # the invitation stays unused, to try again
            return refused(exc)
        # As after a reset: a password set by link ends the account's other sessions.
        await sessions.password_changed(db_session, user.id, current_session_id(request))
        await accounts.audit(db_session, user, "user.invite_accepted", target=user.email,
                             partner_id=user.partner_id)
        await db_session.commit()
        renew_session_id(request)
        return Redirect("/login")
