"""Login, logout, member sign-up, email verification and password reset."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Redirect, Template
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock, members, referrals
from coalition.errors import DomainError
from tenants import accounts, sessions, throttle
from tenants.accounts import LoginFailed, TooManyAttempts, TooSoon
from tenants.mail import Mailer
from tenants.models import User
from tenants.passwords import PasswordWorkBusy
from tenants.throttle import RateLimited
from web.conversions import CLICK_COOKIE, cookie_click, signup_lead
from web.portal.authorize import login_policy
from web.portal.common import HOME, client_ip, current_user, page, require, safe_next
from web.sessions import current_session_id, renew_session_id, start_session

Session = NamedDependency[AsyncSession]


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def busy(template: Template, exc: PasswordWorkBusy | RateLimited) -> Template:
    """The page with Retry-After: the password work queue was full (503), or a throttle
    refused the request (429); nothing was judged or sent, and the same submission will do
    after the seconds the header (and the page) says."""
    template.headers["Retry-After"] = str(exc.retry_after)
    return template


async def count_email_request(request: Request, session: AsyncSession, kind: str,
                              email: str) -> None:
    """tenants/throttle.py's limit on requests that email `email`; raises RateLimited."""
    await throttle.count_email_request(
        session, kind, email, client_ip(request),
        request.app.state.settings.email_requests_per_address)


def wait_page(exc: RateLimited, **context: object) -> Template:
    """429 with Retry-After and a page saying how long to wait."""
    return busy(page("message.html", status_code=429, title="Please wait",
                     message=exc.detail, **context), exc)


async def refused_email_request(request: Request, session: AsyncSession, kind: str,
                                email: str, link: str) -> Template | None:
    """The wait page when a form that emails `email` is over its limit, else None. Counted
    whether or not the address has an account, or the 429 would tell."""
    if not email:
        return None
    try:
        await count_email_request(request, session, kind, email)
    except RateLimited as exc:
        await session.rollback()
        return wait_page(exc, link=link)
    return None


async def send_verification(request: Request, session: AsyncSession, user: User,
                            token: str | None = None) -> None:
    token = token or await accounts.issue_token(session, user, "verify_email")
    mailer: Mailer = request.app.state.mailer
    await mailer.send(user.email, "Confirm your Coalition account",
                      f"Hello{' ' + user.name if user.name else ''},\n\nconfirm your email "
                      f"address to activate your account:\n\n"
                      f"{base_url(request)}/verify-email?token={token}\n\n"
                      "The link works once and expires in 2 days.\n")


async def _referrer_known(session: AsyncSession, raw: str) -> bool:
    code = referrals.normalized(raw)
    return code is not None and bool(await session.scalar(
        text("SELECT EXISTS (SELECT 1 FROM members WHERE referral_code = :c"
             " AND status = 'active')"), {"c": code}))


class AuthPages(Controller):
    include_in_schema = False

    @get("/login")
    async def login_form(self, db_session: Session,
                         next: FromQuery[str | None] = None) -> Template:
        return page("login.html", headers=await login_policy(db_session, next), next=next or "")

    @post("/login")
    async def login(self, request: Request, db_session: Session) -> Response:
        form = await request.form()
        email, password = form.get("email", "").strip(), form.get("password", "")
        try:
            user = await accounts.authenticate(db_session, email, password, client_ip(request))
        except TooManyAttempts as exc:
            await db_session.commit()
            return busy(page("login.html", status_code=429, error=exc.detail, email=email,
                             next=form.get("next", ""),
                             headers=await login_policy(db_session, form.get("next"))), exc)
        except LoginFailed as exc:
            await db_session.commit()  # keep the failed attempt for throttling
            # Only after the right password: offer a new confirmation link at once.
            return page("login.html", status_code=401, error=exc.detail, email=email,
                        next=form.get("next", ""),
                        headers=await login_policy(db_session, form.get("next")),
                        unverified=exc.slug == "email-not-verified")
        except PasswordWorkBusy as exc:
            return busy(page("login.html", status_code=503, error=exc.detail, email=email,
                             next=form.get("next", ""),
                             headers=await login_policy(db_session, form.get("next"))), exc)
        await db_session.commit()
        # A new session id: one planted in the browser before the login is worth nothing.
        start_session(request, {"user_id": str(user.id), "auth_time": clock.timestamp()})
        return Redirect(safe_next(form.get("next"), HOME[user.kind]))

    @post("/logout")
    async def logout(self, request: Request) -> Redirect:
        request.clear_session()
        return Redirect("/login")

    @get("/portal")
    async def portal(self, request: Request, db_session: Session) -> Redirect:
        user = await current_user(request, db_session)
        return Redirect(HOME[user.kind] if user else "/login")

    @get("/register")
    async def register_form(self) -> Template:
        return page("register.html")

    @get("/join/{code:str}")
    async def join(self, db_session: Session, code: str) -> Template:
        """A member's referral link: the sign-up form carrying the code. An unknown code
        still shows the form, saying the invitation is not valid, and binds nothing."""
        known = await _referrer_known(db_session, code)
        return page("register.html", referral_code=referrals.normalized(code) if known else "",
                    referral_invalid=not known)

    @post("/register")
    async def register(self, request: Request, db_session: Session, state: State
                       ) -> Template:
        form = await request.form()
        email, name = form.get("email", "").strip(), form.get("name", "").strip() or None
        password = form.get("password", "")
        errors: dict[str, str] = {}
        if not accounts.EMAIL.fullmatch(email) or len(email) > accounts.MAX_EMAIL_LENGTH:
            errors["email"] = "Enter a valid email address."
        if name and len(name) > accounts.MAX_NAME_LENGTH:
            errors["name"] = f"Use at most {accounts.MAX_NAME_LENGTH} characters."
        try:
            await accounts.check_password_rules(password, email)
        except PasswordWorkBusy as exc:
            return busy(page("register.html", status_code=503, error=exc.detail, email=email,
                             name=name, referral_code=form.get("referral_code", "")), exc)
        except DomainError as exc:
            errors["password"] = exc.detail
        if not errors and await accounts.find_user(db_session, email) is not None:
            errors["email"] = "An account with this email exists: log in or reset the password."
        raw_code = form.get("referral_code", "").strip()
        code = referrals.normalized(raw_code) if raw_code else None
        if raw_code and not await _referrer_known(db_session, raw_code):
            errors["referral_code"] = ("No member has this referral code: check it, or leave"
                                       " the field empty.")
        if errors:
            return page("register.html", status_code=400, errors=errors, email=email, name=name,
                        referral_code=raw_code)
        try:  # counted only when an email goes out: a refused form is rolled back
            await count_email_request(request, db_session, "register", email)
        except RateLimited as exc:
            await db_session.rollback()
            return busy(page("register.html", status_code=429, error=exc.detail, email=email,
                             name=name, referral_code=raw_code), exc)
        member, created = await members.find_or_create(db_session, email, name)
        if created and code is not None:
            # An existing member (say, enrolled by a shop) is never re-bound.
            await db_session.execute(text("SELECT member_referral_bind(:m, NULL, :c, NULL)"),
                                     {"m": member.id, "c": code})
        try:
            user = await accounts.create_user(db_session, email, "member", name=name,
                                              password=password, member_id=member.id)
        except PasswordWorkBusy as exc:
            await db_session.rollback()  # the member just found or created goes too
            return busy(page("register.html", status_code=503, error=exc.detail, email=email,
                             name=name, referral_code=raw_code), exc)
        # Arrived through an affiliate's link: the sign-up is that affiliate's lead.
        await signup_lead(db_session, state, member.id,
                          cookie_click(request.cookies.get(CLICK_COOKIE)))
        await send_verification(request, db_session, user)
        await db_session.commit()
        return page("message.html", title="Check your email",
                    message=f"We sent a confirmation link to {email}.")

    @get("/verify-email")
    async def verify_email(self, request: Request, db_session: Session,
                           token: FromQuery[str] = "") -> Template:
        user = await accounts.consume_token(db_session, token, "verify_email")
        if user is None:
            return page("message.html", status_code=400, title="Link not valid",
                        message="This confirmation link is invalid, used or expired.")
        accounts.mark_verified(user)
        await db_session.commit()
        # A confirmed address is a privilege change for a session logged in meanwhile.
        renew_session_id(request)
        return page("message.html", title="Email confirmed",
                    message="Your email address is confirmed. You can log in now.",
                    link="/login")

    @get("/resend-verification")
    async def resend_form(self, email: FromQuery[str] = "") -> Template:
        return page("resend.html", email=email)

    @post("/resend-verification")
    async def resend_by_email(self, request: Request, db_session: Session) -> Template:
        """For people who cannot log in yet. The answer never tells whether the address
        has an account, nor whether a link went out (throttled requests send nothing)."""
        email = ((await request.form()).get("email") or "").strip()
        refused = await refused_email_request(request, db_session, "resend", email, "/login")
        if refused is not None:
            return refused
        user = await accounts.find_user(db_session, email) if email else None
        if (user is not None and user.disabled_at is None and user.email_verified_at is None
                and user.password_hash is not None):
            try:
                token = await accounts.reissue_verification(db_session, user)
            except TooSoon:
                pass  # it wrote nothing; the request is still counted
            else:
                await send_verification(request, db_session, user, token)
        await db_session.commit()
        return page("message.html", title="Check your email",
                    message="If an account with this address is waiting for confirmation, "
                    "we sent it a new link. Earlier links no longer work.", link="/login")

    @post("/account/resend-verification")
    async def resend_for_user(self, request: Request, db_session: Session) -> Template:
        user = require(request, await current_user(request, db_session))
        if user.email_verified_at is not None:
            return page("message.html", user=user, title="Email already confirmed",
                        message=f"{user.email} is already confirmed.", link=HOME[user.kind])
        try:
            await count_email_request(request, db_session, "resend", user.email)
            token = await accounts.reissue_verification(db_session, user)
        except RateLimited as exc:
            return wait_page(exc, user=user, link=HOME[user.kind])
        except TooSoon as exc:  # nothing was written; the request's session rolls back
            template = page("message.html", status_code=429, user=user,
                            title="Please wait a moment", message=exc.detail,
                            link=HOME[user.kind])
            template.headers["Retry-After"] = str(exc.retry_after)
            return template
        await send_verification(request, db_session, user, token)
        await db_session.commit()
        return page("message.html", user=user, title="Check your email",
                    message=f"We sent a new confirmation link to {user.email}. "
                    "Earlier links no longer work.", link=HOME[user.kind])

    @get("/forgot-password")
    async def forgot_form(self) -> Template:
        return page("forgot.html")

    @post("/forgot-password")
    async def forgot(self, request: Request, db_session: Session) -> Template:
        form = await request.form()
        email = form.get("email", "").strip()
        refused = await refused_email_request(request, db_session, "forgot", email,
                                              "/forgot-password")
        if refused is not None:
            return refused
        user = await accounts.find_user(db_session, email) if email else None
        if user is not None and user.disabled_at is None:
            token = await accounts.issue_token(db_session, user, "reset_password")
            mailer: Mailer = request.app.state.mailer
            await mailer.send(user.email, "Reset your Coalition password",
                              f"Set a new password here:\n\n{base_url(request)}/reset-password"
                              f"?token={token}\n\nThe link works once and expires in 1 hour. "
                              "If you did not ask for it, ignore this email.\n")
        await db_session.commit()
        # The same answer whether or not the address has an account.
        return page("message.html", title="Check your email",
                    message="If an account exists for this address, we sent a link to set a "
                    "new password.")

    @get("/reset-password")
    async def reset_form(self, token: FromQuery[str] = "") -> Template:
        return page("reset.html", token=token)

    @post("/reset-password")
    async def reset(self, request: Request, db_session: Session, state: State) -> Response:
        form = await request.form()
        password = form.get("password", "")
        try:
            await accounts.check_password_rules(password)
        except PasswordWorkBusy as exc:
            return busy(page("reset.html", status_code=503, token=form.get("token", ""),
                             error=exc.detail), exc)
        except DomainError as exc:
            return page("reset.html", status_code=400, token=form.get("token", ""),
                        error=exc.detail)
        user = await accounts.consume_token(db_session, form.get("token", ""), "reset_password")
        if user is None:
            return page("message.html", status_code=400, title="Link not valid",
                        message="This link is invalid, used or expired. Ask for a new one.",
                        link="/forgot-password")
        try:
            await accounts.set_password(db_session, user, password)
        except DomainError as exc:  # the rules with the email known, or a full queue
            await db_session.rollback()  # the link stays unused, to try again
            template = page("reset.html", status_code=exc.status,
                            token=form.get("token", ""), error=exc.detail)
            return busy(template, exc) if isinstance(exc, PasswordWorkBusy) else template
        # Whoever used the old password is out; this browser stays, under a new id.
        await sessions.password_changed(db_session, user.id, current_session_id(request))
        await accounts.audit(db_session, user, "password.reset", target=user.email,
                             partner_id=user.partner_id)
        await db_session.commit()
        renew_session_id(request)
        return Redirect("/login")
