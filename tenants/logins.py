"""The use cases of the pages around a login (web/portal/accounts/auth.py, the invitation's
set-password page): logging in, a member's sign-up, confirming the email address, new
confirmation links, password resets and accepted invitations.

Each runs in one Tx. The throttles (tenants/throttle.py) count in the same Tx as what
they guard, so a refused request records nothing and a counted one commits with its
token. A use case returns the emailed token; the caller sends the email once the Tx
committed, so no link goes out for a change that did not happen."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from coalition import clock, members, referrals
from coalition.affiliates import commissions
from coalition.affiliates.attribution import Flush, Touch
from coalition.uow import Actor, Tx
from tenants import accounts, sessions, throttle
from tenants.accounts import LoginFailed, TooSoon
from tenants.models import User


async def log_in(tx: Tx, email: str, password: str, ip: str) -> User | LoginFailed:
    """The user these credentials name, or the refusal. A refusal is returned, not
    raised: the judged attempt it recorded must commit, or the throttle would never see
    it. Raises TooManyAttempts (nothing judged, nothing written) and PasswordWorkBusy."""
    try:
        return await accounts.authenticate(await tx.session(), email, password, ip)
    except LoginFailed as refused:
        return refused


async def referrer_known(tx: Tx, raw: str) -> bool:
    """Whether an active member has this referral code (a sign-up link's or the form's)."""
    code = referrals.normalized(raw)
    return code is not None and bool(await tx.conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM members WHERE referral_code = $1"
        " AND status = 'active')", code))


async def registration_problems(tx: Tx, email: str | None, raw_code: str) -> dict[str, str]:
    """What the sign-up form gets wrong that only the database knows: an account with
    this email (asked only for a well-formed `email`), an unknown referral code."""
    errors: dict[str, str] = {}
    if email is not None and await accounts.find_user(await tx.session(), email) is not None:
        errors["email"] = "An account with this email exists: log in or reset the password."
    if raw_code and not await referrer_known(tx, raw_code):
        errors["referral_code"] = ("No member has this referral code: check it, or leave"
                                   " the field empty.")
    return errors


async def register_member(tx: Tx, email: str, name: str | None, password: str,
                          referral_code: str | None, touch: Touch, flush: Flush | None,
                          ip: str, per_address: int) -> tuple[User, str]:
    """A member's own sign-up: the coalition member (found or created), bound to its
    referrer when new, the login, the affiliate's lead when the person came through a
    tracking link, and the email-confirmation token. Counted against the email
    throttle (RateLimited); anything raised (a full password queue) undoes all of it."""
    session = await tx.session()
    await throttle.count_email_request(session, "register", email, ip, per_address)
    member, created = await members.find_or_create(session, email, name)
    code = referrals.normalized(referral_code) if referral_code else None
    if created and code is not None:
        # An existing member (say, enrolled by a shop) is never re-bound.
        await session.execute(text("SELECT member_referral_bind(:m, NULL, :c, NULL)"),
                              {"m": member.id, "c": code})
    user = await accounts.create_user(session, email, "member", name=name, password=password,
                                      member_id=member.id)
    if touch:
        # Arrived through an affiliate's link: the sign-up is that affiliate's lead.
        await commissions.for_signup(tx.conn, member_id=member.id, at=clock.now(),
                                     touch=touch, partner_id=None, flush=flush)
    return user, await accounts.issue_token(session, user, "verify_email")


async def verify_email(tx: Tx, token: str) -> User | None:
    """The user whose address the link confirms (None: invalid, used or expired)."""
    user = await accounts.consume_token(await tx.session(), token, "verify_email")
    if user is not None:
        accounts.mark_verified(user)
    return user


async def resend_verification(tx: Tx, email: str, ip: str, per_address: int
                              ) -> tuple[User, str] | None:
    """A new confirmation link for whoever cannot log in yet: the user and the token, or
    None when nothing is to be sent (no such account waiting, or one sent too recently).
    The request is counted whether or not the address has an account (RateLimited past
    the limit), or the refusal would tell."""
    if not email:
        return None
    session = await tx.session()
    await throttle.count_email_request(session, "resend", email, ip, per_address)
    user = await accounts.find_user(session, email)
    if (user is None or user.disabled_at is not None or user.email_verified_at is not None
            or user.password_hash is None):
        return None
    try:
        return user, await accounts.reissue_verification(session, user)
    except TooSoon:
        return None  # it wrote nothing; the request is still counted


async def resend_for_user(tx: Tx, user_id: uuid.UUID, ip: str, per_address: int) -> str:
    """A new confirmation link for a logged-in user; raises RateLimited or TooSoon, and
    then nothing is counted nor written."""
    session = await tx.session()
    user = await session.get_one(User, user_id)
    await throttle.count_email_request(session, "resend", user.email, ip, per_address)
    return await accounts.reissue_verification(session, user)


async def request_password_reset(tx: Tx, email: str, ip: str, per_address: int
                                 ) -> tuple[User, str] | None:
    """The user and a password-reset token, or None when the address has no (enabled)
    account; counted either way (RateLimited), so the answer tells nothing."""
    if not email:
        return None
    session = await tx.session()
    await throttle.count_email_request(session, "forgot", email, ip, per_address)
    user = await accounts.find_user(session, email)
    if user is None or user.disabled_at is not None:
        return None
    return user, await accounts.issue_token(session, user, "reset_password")


async def reset_password(tx: Tx, token: str, password: str, keep_session_id: str | None
                         ) -> User | None:
    """Set the password a reset link is for (None: the link is invalid, used or
    expired). Raises DomainError (the rules with the email known, a full queue), and
    the link stays unused."""
    return await _password_by_link(tx, token, "reset_password", password, keep_session_id,
                                   "password.reset")


async def accept_invitation(tx: Tx, token: str, password: str, keep_session_id: str | None
                            ) -> User | None:
    """The invited person's first password, as reset_password."""
    return await _password_by_link(tx, token, "invite", password, keep_session_id,
                                   "user.invite_accepted")


async def _password_by_link(tx: Tx, token: str, purpose: str, password: str,
                            keep_session_id: str | None, action: str) -> User | None:
    session = await tx.session()
    user = await accounts.consume_token(session, token, purpose)
    if user is None:
        return None
    await accounts.set_password(session, user, password)
    # Whoever used the old password is out; the browser that set it stays (under a new
    # id, which the caller issues).
    await sessions.password_changed(session, user.id, keep_session_id)
    await tx.audit(action, target=user.email, partner_id=user.partner_id,
                   actor=Actor(user.email, user.id))
    return user
