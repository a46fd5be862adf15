"""Becoming a partner: the public application, the operator's queue and decisions, and
the owner's invitation."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from coalition.errors import DomainError
from coalition.uow import Database
from tenants import accounts, logins, onboarding
from tenants.mail import Mailer
from tenants.models import User
from tenants.passwords import PasswordWorkBusy
from web.portal.common import acting, base_url, busy, operator, page
from web.sessions import current_session_id, renew_session_id

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
    async def apply_form(self, request: Request, db: Database) -> Template:
        terms = await db.run(onboarding.terms)
        return page("partners/apply.html", app=onboarding.Application(), terms=terms, **CHOICES)

    @post("/partners/apply")
    async def apply(self, request: Request, db: Database) -> Template:
        application = onboarding.Application.from_form(dict(await request.form()))
        try:
            partner = await db.run(onboarding.submit_application, application)
        except DomainError:   # the form's errors are in application.errors
            terms = await db.run(onboarding.terms)
            return page("partners/apply.html", status_code=400, app=application, terms=terms,
                        **CHOICES)
        mailer: Mailer = request.app.state.mailer
        await mailer.send(application.contact_email, "We received your partner application",
                          f"Thank you for applying to join the coalition as {partner.name}. "
                          "The operator reviews applications within a few working days and "
                          "will email you the decision.\n")
        return page("message.html", title="Application received",
                    message=f"Thank you. We will review the application of {partner.name} and "
                    f"email {application.contact_email} with the decision.")

    @get("/partners/terms")
    async def terms(self, db: Database) -> Template:
        return page("partners/terms.html", terms=await db.run(onboarding.terms))

    @get("/operator/partners")
    async def queue(self, request: Request, db: Database) -> Template:
        user = await operator(request, db)
        partners = await acting(db, user).run(onboarding.partners)
        waiting = [p for p in partners if p.status in ("applied", "under_review")]
        return page("partners/applications.html", user=user, waiting=waiting, partners=partners)

    @get("/operator/partners/{partner_id:uuid}")
    async def detail(self, request: Request, db: Database,
                     partner_id: FromPath[uuid.UUID]) -> Template:
        user = await operator(request, db)
        return await self._detail(db, user, partner_id)

    @staticmethod
    async def _detail(db: Database, user: User, partner_id: uuid.UUID,
                      refused: DomainError | None = None) -> Template:
        """The partner's page; with the decision it refused, shown above its forms."""
        found = await acting(db, user).run(onboarding.partner_file, partner_id)
        if found is None:
            return page("message.html", status_code=404, user=user, title="Not found",
                        message="No such partner.")
        return page("partners/partner_detail.html", status_code=refused.status if refused else 200,
                    user=user, partner=found.partner, history=found.history,
                    acceptances=found.acceptances, actions=found.actions,
                    error=refused.detail if refused else None,
                    error_field=refused.field if refused else None)

    @post("/operator/partners/{partner_id:uuid}/decision")
    async def decision(self, request: Request, db: Database,
                       partner_id: FromPath[uuid.UUID]) -> Response:
        user = await operator(request, db)
        form = await request.form()
        decision, note = form.get("decision", ""), form.get("note", "")
        try:
            decided = await acting(db, user).run(onboarding.decide, partner_id, decision, note)
        except DomainError as exc:   # refused before it changed anything
            return await self._detail(db, user, partner_id, refused=exc)
        if decided is None:
            return page("message.html", status_code=404, user=user, title="Not found",
                        message="No such partner or decision.")
        partner, owner = decided.partner, decided.owner
        mailer: Mailer = request.app.state.mailer
        if owner is not None:
            await mailer.send(owner.email, f"{partner.name} is now a Coalition partner",
                              "Your application is approved. Set your password to open the "
                              f"partner console:\n\n{base_url(request)}/set-password?token="
                              f"{decided.invitation}\n\nThe link works once and expires in "
                              "7 days.\n")
        elif decision in DECISION_MAILS and partner.contact_email:
            subject, text = DECISION_MAILS[decision]
            await mailer.send(partner.contact_email, subject, text.format(note=note))
        # Other processes drop their cached tokens on NOTIFY coalition_auth, which reaches
        # this one's listener a moment later; forget now, so a suspension stops the very
        # next API call here.
        request.app.state.token_verifier.forget_all()
        return Redirect(f"/operator/partners/{partner_id}")

    @get("/set-password")
    async def set_password_form(self, token: FromQuery[str] = "") -> Template:
        return page("accounts/reset.html", token=token, action="/set-password",
                    heading="Set your password")

    @post("/set-password")
    async def set_password(self, request: Request, db: Database) -> Response:
        form = await request.form()
        password, token = form.get("password", ""), form.get("token", "")

        def refused(exc: DomainError) -> Template:
            template = page("accounts/reset.html", status_code=exc.status, token=token,
                            error=exc.detail, action="/set-password",
                            heading="Set your password")
            return busy(template, exc) if isinstance(exc, PasswordWorkBusy) else template

        try:
            await accounts.check_password_rules(password)
        except DomainError as exc:
            return refused(exc)
        try:
            # As after a reset: a password set by link ends the account's other sessions.
            user = await db.run(logins.accept_invitation, token, password,
                                current_session_id(request))
        except DomainError as exc:  # the rules with the email known, or a full queue
            return refused(exc)     # rolled back: the invitation stays unused, to try again
        if user is None:
            return page("message.html", status_code=400, title="Link not valid",
                        message="This invitation link is invalid, used or expired. Ask the "
                        "person who invited you for a new one.")
        renew_session_id(request)
        return Redirect("/login")
