"""The affiliate's own pages: sign-up, browsing and joining programs, payout details.
(The dashboard at /affiliate is built separately.) Affiliates are not
tenants: these pages use the plain session and filter by the logged-in affiliate."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.affiliates import programs
from coalition.affiliates.models import Affiliate
from coalition.affiliates.signup import (
    AGREEMENT_VERSION,
    PayoutSpec,
    SignupSpec,
    sign_up,
    update_payout,
)
from coalition.errors import DomainError
from coalition.models import Member
from tenants.models import Partner, User
from tenants.passwords import PasswordWorkBusy
from web.portal.auth import base_url, send_verification
from web.portal.common import current_user, page, require

Session = NamedDependency[AsyncSession]
PAYOUT_FIELDS = ("payout_method", "stripe_account_id", "iban", "bic", "account_holder",
                 "card_number")


def payout_spec(form) -> PayoutSpec:
    return PayoutSpec(method=(form.get("payout_method") or "").strip(),
                      stripe_account_id=form.get("stripe_account_id") or "",
                      iban=form.get("iban") or "", bic=form.get("bic") or "",
                      account_holder=form.get("account_holder") or "",
                      card_number=form.get("card_number") or "")


async def signed_in_affiliate(request: Request, db_session: AsyncSession
                              ) -> tuple[User, Affiliate]:
    user = require(request, await current_user(request, db_session), "affiliate")
    affiliate = await db_session.get(Affiliate, user.affiliate_id)
    assert affiliate is not None  # users.affiliate_id is a foreign key
    return user, affiliate


class AffiliatePages(Controller):
    path = "/affiliate"
    include_in_schema = False

    @get("/signup")
    async def signup_form(self) -> Template:
        return page("affiliates/signup.html", form={"kind": "person"}, errors={},
                    agreement=AGREEMENT_VERSION)

    @post("/signup")
    async def signup(self, request: Request, db_session: Session) -> Template:
        form = await request.form()
        spec = SignupSpec(kind=form.get("kind", ""), name=form.get("name", ""),
                          email=form.get("email", ""), password=form.get("password", ""),
                          accepts_agreement=form.get("accept_terms") == "on",
                          company_name=form.get("company_name", ""), nip=form.get("nip", ""),
                          website=form.get("website", ""), payout=payout_spec(form))
        try:
            _, user = await sign_up(db_session, spec)
        except DomainError as exc:
            await db_session.rollback()
            shown = {k: v for k, v in form.items() if k != "password"}
            template = page("affiliates/signup.html", status_code=exc.status, form=shown,
                            errors={exc.field or "form": exc.detail},
                            agreement=AGREEMENT_VERSION)
            if isinstance(exc, PasswordWorkBusy):  # 503: say when to send the form again
                template.headers["Retry-After"] = str(exc.retry_after)
            return template
        await send_verification(request, db_session, user)
        await db_session.commit()
        return page("message.html", title="Check your email",
                    message=f"We sent a confirmation link to {user.email}. Confirm it, then "
                    "log in to browse programs.")

    async def _programs(self, request: Request, db_session: AsyncSession, user: User,
                        affiliate: Affiliate, *, error: str | None = None,
                        status_code: int = 200) -> Template:
        joined = await programs.affiliate_enrollments(db_session, affiliate.id)
        joined_ids = {p.id for _, p in joined}
        partner_names = dict((await db_session.execute(select(Partner.id, Partner.name))).all())
        available = []
        for program in await programs.active_programs(db_session):
            if program.id in joined_ids:
                continue
            terms = await programs.terms_in_force(db_session, program.id)
            if terms is not None:
                available.append((program, terms))
        return page("affiliates/programs.html", status_code=status_code, user=user,
                    affiliate=affiliate, joined=joined, available=available,
                    partners=partner_names, link_base=base_url(request) + "/r/", error=error)

    @get("/programs")
    async def browse(self, request: Request, db_session: Session) -> Template:
        user, affiliate = await signed_in_affiliate(request, db_session)
        return await self._programs(request, db_session, user, affiliate)

    @post("/programs/{program_id:uuid}/join")
    async def join(self, request: Request, db_session: Session,
                   program_id: FromPath[uuid.UUID]) -> Response:
        user, affiliate = await signed_in_affiliate(request, db_session)
        note = (await request.form()).get("note")
        try:
            await programs.join_program(db_session, affiliate.id, program_id, note)
        except DomainError as exc:
            await db_session.rollback()
            if exc.status == 404:
                raise
            user, affiliate = await signed_in_affiliate(request, db_session)
            return await self._programs(request, db_session, user, affiliate,
                                        error=exc.detail, status_code=exc.status)
        await db_session.commit()
        return Redirect("/affiliate/programs", status_code=303)

    async def _profile(self, db_session: AsyncSession, user: User, affiliate: Affiliate, *,
                       form: dict | None = None, errors: dict | None = None,
                       saved: bool = False, status_code: int = 200) -> Template:
        if form is None:
            card = await db_session.scalar(select(Member.card_number).where(
                Member.id == affiliate.payout_member_id)) if affiliate.payout_member_id else ""
            form = {"payout_method": affiliate.payout_method or "",
                    "stripe_account_id": affiliate.stripe_account_id or "",
                    "iban": affiliate.iban or "", "bic": affiliate.bic or "",
                    "account_holder": affiliate.account_holder or "", "card_number": card}
        return page("affiliates/profile.html", status_code=status_code, user=user,
                    affiliate=affiliate, form=form, errors=errors or {}, saved=saved)

    @get("/profile")
    async def profile(self, request: Request, db_session: Session) -> Template:
        user, affiliate = await signed_in_affiliate(request, db_session)
        return await self._profile(db_session, user, affiliate)

    @post("/profile")
    async def save_profile(self, request: Request, db_session: Session) -> Template:
        user, affiliate = await signed_in_affiliate(request, db_session)
        form = await request.form()
        try:
            await update_payout(db_session, affiliate.id, payout_spec(form))
        except DomainError as exc:
            await db_session.rollback()
            user, affiliate = await signed_in_affiliate(request, db_session)
            return await self._profile(db_session, user, affiliate,
                                       form={k: form.get(k, "") for k in PAYOUT_FIELDS},
                                       errors={exc.field or "form": exc.detail},
                                       status_code=exc.status)
        await db_session.commit()
        return await self._profile(db_session, user, affiliate, saved=True)
