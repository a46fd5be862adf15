"""Login, logout, member sign-up, email verification and password reset."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from coalition import clock, referrals
from coalition.errors import DomainError
from coalition.uow import Database
from tenants import accounts, logins
from tenants.accounts import LoginFailed, TooManyAttempts, TooSoon
from tenants.mail import Mailer
from tenants.models import User
from tenants.passwords import PasswordWorkBusy
from tenants.throttle import RateLimited
from web.conversions import CLICK_COOKIE, click_flush, cookie_click
from web.portal.accounts.authorize import login_policy
from web.portal.common import (
    HOME,
    acting,
    base_url,
    busy,
    client_ip,
    current_user,
    page,
    require,
    safe_next,
)
from web.sessions import current_session_id, renew_session_id, start_session


def email_limits(request: Request) -> tuple[str, int]:
    """Who a request that emails someone is counted against, and the per-address limit
    (tenants/throttle.py's email-request throttle)."""
    return client_ip(request), request.app.state.settings.email_requests_per_address


def wait_page(exc: RateLimited, **context: object) -> Template:
    """429 with Retry-After and a page saying how long to wait."""
    return busy(page("message.html", status_code=429, title="Please wait",
                     message=exc.detail, **context), exc)


async def mail_verification(request: Request, user: User, token: str) -> None:
    mailer: Mailer = request.app.state.mailer
    await mailer.send(user.email, "Confirm your Coalition account",
                      f"Hello{' ' + user.name if user.name else ''},\n\nconfirm your email "
                      f"address to activate your account:\n\n"
                      f"{base_url(request)}/verify-email?token={token}\n\n"
                      "The link works once and expires in 2 days.\n")


class AuthPages(Controller):
    include_in_schema = False

    @get("/login")
    async def login_form(self, db: Database, next: FromQuery[str | None] = None) -> Template:
        return page("accounts/login.html", headers=await login_policy(db, next), next=next or "")

    @post("/login")
    async def login(self, request: Request, db: Database) -> Response:
        form = await request.form()
        email, password = form.get("email", "").strip(), form.get("password", "")
        try:
            # A refusal is returned: the judged attempt commits, for the throttle.
            user = await db.run(logins.log_in, email, password, client_ip(request))
        except TooManyAttempts as exc:
            return busy(page("accounts/login.html", status_code=429, error=exc.detail, email=email,
                             next=form.get("next", ""),
                             headers=await login_policy(db, form.get("next"))), exc)
        except PasswordWorkBusy as exc:
            return busy(page("accounts/login.html", status_code=503, error=exc.detail, email=email,
                             next=form.get("next", ""),
                             headers=await login_policy(db, form.get("next"))), exc)
        if isinstance(user, LoginFailed):
            # Only after the right password: offer a new confirmation link at once.
            return page("accounts/login.html", status_code=401, error=user.detail, email=email,
                        next=form.get("next", ""),
                        headers=await login_policy(db, form.get("next")),
                        unverified=user.slug == "email-not-verified")
        # A new session id: one planted in the browser before the login is worth nothing.
        start_session(request, {"user_id": str(user.id), "auth_time": clock.timestamp()})
        return Redirect(safe_next(form.get("next"), HOME[user.kind]))

    @post("/logout")
    async def logout(self, request: Request) -> Redirect:
        request.clear_session()
        return Redirect("/login")

    @get("/portal")
    async def portal(self, request: Request, db: Database) -> Redirect:
        user = await current_user(request, db)
        return Redirect(HOME[user.kind] if user else "/login")

    @get("/register")
    async def register_form(self) -> Template:
        return page("accounts/register.html")

    @get("/join/{code:str}")
    async def join(self, db: Database, code: str) -> Template:
        """A member's referral link: the sign-up form carrying the code. An unknown code
        still shows the form, saying the invitation is not valid, and binds nothing."""
        known = await db.run(logins.referrer_known, code)
        return page("accounts/register.html",
                    referral_code=referrals.normalized(code) if known else "",
                    referral_invalid=not known)

    @post("/register")
    async def register(self, request: Request, db: Database, state: State) -> Template:
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
            return busy(page("accounts/register.html", status_code=503, error=exc.detail,
                             email=email, name=name,
                             referral_code=form.get("referral_code", "")), exc)
        except DomainError as exc:
            errors["password"] = exc.detail
        raw_code = form.get("referral_code", "").strip()
        if raw_code or not errors:
            errors.update(await db.run(logins.registration_problems,
                                       None if errors else email, raw_code))
        if errors:
            return page("accounts/register.html", status_code=400, errors=errors, email=email,
                        name=name, referral_code=raw_code)
        ip, per_address = email_limits(request)
        try:  # counted only when an email goes out: a refused form is rolled back
            user, token = await db.run(
                logins.register_member, email, name, password, raw_code or None,
                cookie_click(request.cookies.get(CLICK_COOKIE)), click_flush(state),
                ip, per_address)
        except (RateLimited, PasswordWorkBusy) as exc:
            # Nothing of the sign-up stays: not the member, not the count.
            return busy(page("accounts/register.html",
                             status_code=429 if isinstance(exc, RateLimited) else 503,
                             error=exc.detail, email=email, name=name,
                             referral_code=raw_code), exc)
        await mail_verification(request, user, token)
        return page("message.html", title="Check your email",
                    message=f"We sent a confirmation link to {email}.")

    @get("/verify-email")
    async def verify_email(self, request: Request, db: Database,
                           token: FromQuery[str] = "") -> Template:
        user = await db.run(logins.verify_email, token)
        if user is None:
            return page("message.html", status_code=400, title="Link not valid",
                        message="This confirmation link is invalid, used or expired.")
        # A confirmed address is a privilege change for a session logged in meanwhile.
        renew_session_id(request)
        return page("message.html", title="Email confirmed",
                    message="Your email address is confirmed. You can log in now.",
                    link="/login")

    @get("/resend-verification")
    async def resend_form(self, email: FromQuery[str] = "") -> Template:
        return page("accounts/resend.html", email=email)

    @post("/resend-verification")
    async def resend_by_email(self, request: Request, db: Database) -> Template:
        """For people who cannot log in yet. The answer never tells whether the address
        has an account, nor whether a link went out (throttled requests send nothing)."""
        email = ((await request.form()).get("email") or "").strip()
        try:
            found = await db.run(logins.resend_verification, email, *email_limits(request))
        except RateLimited as exc:
            return wait_page(exc, link="/login")
        if found is not None:
            await mail_verification(request, *found)
        return page("message.html", title="Check your email",
                    message="If an account with this address is waiting for confirmation, "
                    "we sent it a new link. Earlier links no longer work.", link="/login")

    @post("/account/resend-verification")
    async def resend_for_user(self, request: Request, db: Database) -> Template:
        user = require(request, await current_user(request, db))
        if user.email_verified_at is not None:
            return page("message.html", user=user, title="Email already confirmed",
                        message=f"{user.email} is already confirmed.", link=HOME[user.kind])
        try:
            token = await acting(db, user).run(logins.resend_for_user, user.id,
                                               *email_limits(request))
        except RateLimited as exc:
            return wait_page(exc, user=user, link=HOME[user.kind])
        except TooSoon as exc:  # nothing was written, nor counted
            template = page("message.html", status_code=429, user=user,
                            title="Please wait a moment", message=exc.detail,
                            link=HOME[user.kind])
            template.headers["Retry-After"] = str(exc.retry_after)
            return template
        await mail_verification(request, user, token)
        return page("message.html", user=user, title="Check your email",
                    message=f"We sent a new confirmation link to {user.email}. "
                    "Earlier links no longer work.", link=HOME[user.kind])

    @get("/forgot-password")
    async def forgot_form(self) -> Template:
        return page("accounts/forgot.html")

    @post("/forgot-password")
    async def forgot(self, request: Request, db: Database) -> Template:
        form = await request.form()
        email = form.get("email", "").strip()
        try:
            found = await db.run(logins.request_password_reset, email, *email_limits(request))
        except RateLimited as exc:
            return wait_page(exc, link="/forgot-password")
        if found is not None:
            user, token = found
            mailer: Mailer = request.app.state.mailer
            await mailer.send(user.email, "Reset your Coalition password",
                              f"Set a new password here:\n\n{base_url(request)}/reset-password"
                              f"?token={token}\n\nThe link works once and expires in 1 hour. "
                              "If you did not ask for it, ignore this email.\n")
        # The same answer whether or not the address has an account.
        return page("message.html", title="Check your email",
                    message="If an account exists for this address, we sent a link to set a "
                    "new password.")

    @get("/reset-password")
    async def reset_form(self, token: FromQuery[str] = "") -> Template:
        return page("accounts/reset.html", token=token)

    @post("/reset-password")
    async def reset(self, request: Request, db: Database) -> Response:
        form = await request.form()
        password = form.get("password", "")
        try:
            await accounts.check_password_rules(password)
        except PasswordWorkBusy as exc:
            return busy(page("accounts/reset.html", status_code=503, token=form.get("token", ""),
                             error=exc.detail), exc)
        except DomainError as exc:
            return page("accounts/reset.html", status_code=400, token=form.get("token", ""),
                        error=exc.detail)
        try:
            # Whoever used the old password is out; this browser stays, under a new id.
            user = await db.run(logins.reset_password, form.get("token", ""), password,
                                current_session_id(request))
        except DomainError as exc:  # the rules with the email known, or a full queue
            # Rolled back: the link stays unused, to try again.
            template = page("accounts/reset.html", status_code=exc.status,
                            token=form.get("token", ""), error=exc.detail)
            return busy(template, exc) if isinstance(exc, PasswordWorkBusy) else template
        if user is None:
            return page("message.html", status_code=400, title="Link not valid",
                        message="This link is invalid, used or expired. Ask for a new one.",
                        link="/forgot-password")
        renew_session_id(request)
        return Redirect("/login")
