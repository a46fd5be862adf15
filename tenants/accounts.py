"""People who log in: passwords (argon2id), login throttling, emailed single-use tokens,
and the audit log."""

from __future__ import annotations

import contextlib
import re
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.errors import Conflict, DomainError
from coalition.uow import Tx
from tenants import passwords
from tenants.models import AuditEntry, User, UserToken
from tenants.service import hash_secret
from tenants.throttle import RateLimited, login_allowed_at, record_login, seconds_until

MAX_EMAIL_LENGTH = 320          # users.email, login_attempts.email
MAX_NAME_LENGTH = 200           # users.name
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
TOKEN_LIFETIMES = {
    "verify_email": timedelta(days=2),
    "reset_password": timedelta(hours=1),
    "invite": timedelta(days=7),
}
# A new verification link at most this often per account.
VERIFICATION_RESEND_INTERVAL = timedelta(minutes=1)
# Verifying against this keeps a login for an unknown email as slow as a real one.
_DUMMY_HASH = passwords.HASHER.hash(secrets.token_urlsafe(16))


class LoginFailed(DomainError):
    status = 401


class TooManyAttempts(RateLimited):
    """Too many failed logins for the email or from the address: 429, Retry-After."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after, "too-many-attempts", "Too many failed logins",
                         "Too many failed attempts. You can reset your password meanwhile")


class TooSoon(DomainError):
    status = 429

    def __init__(self, seconds: int) -> None:
        super().__init__("too-soon", "Too soon",
                         f"We sent you a link less than a minute ago. Wait {seconds} seconds "
                         "and ask again, and check your spam folder meanwhile.",
                         retry_after=seconds)
        self.retry_after = seconds


async def check_password_rules(password: str, email: str | None = None) -> None:
    """Raises DomainError naming `password` unless it may be set for the account `email`:
    at least 12 characters, not the email nor its part before the @, and zxcvbn score 3 or
    more. The estimate is CPU work, so it runs off the event loop (tenants/passwords.py)."""
    await passwords.check_strength(password, email)


def check_email(email: str) -> str:
    """The address, trimmed: it must look like one and fit the column."""
    email = email.strip()
    if not EMAIL.fullmatch(email) or len(email) > MAX_EMAIL_LENGTH:
        raise DomainError("validation-error", "Invalid email", "Enter a valid email address.",
                          status=400, field="email")
    return email


async def find_user(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(func.lower(User.email) == email.lower()))


async def create_user(
    session: AsyncSession,
    email: str,
    kind: str,
    *,
    name: str | None = None,
    password: str | None = None,
    partner_id: uuid.UUID | None = None,
    role: str | None = None,
    member_id: uuid.UUID | None = None,
    affiliate_id: uuid.UUID | None = None,
    verified: bool = False,
) -> User:
    # Every way in (an invitation, a sign-up, the operator) stops here: a malformed
    # address or an over-long name is the person's mistake, never a database error.
    email = check_email(email)
    if name is not None and len(name) > MAX_NAME_LENGTH:
        raise DomainError("validation-error", "Name too long",
                          f"Use at most {MAX_NAME_LENGTH} characters.", status=400, field="name")
    if await find_user(session, email) is not None:
        raise _account_exists()
    password_hash = (await passwords.hash_new_password(password, email)
                     if password is not None else None)
    user = User(email=email, name=name, kind=kind, partner_id=partner_id, role=role,
                member_id=member_id, affiliate_id=affiliate_id, password_hash=password_hash,
                email_verified_at=clock.now() if verified else None)
    # A partner's tenant-scoped session sees only its own staff, so find_user misses
    # other people's accounts; the unique index still refuses the email.
    try:
        async with session.begin_nested():
            session.add(user)
            await session.flush()
    except IntegrityError as exc:
        if "uq_users_email_lower" not in str(exc.orig):
            raise
        raise _account_exists() from None
    return user


def _account_exists() -> Conflict:
    return Conflict("account-exists", "Account exists",
                    "An account with this email address already exists.", field="email")


async def authenticate(session: AsyncSession, email: str, password: str, ip: str) -> User:
    """The user for these credentials; raises TooManyAttempts or LoginFailed. Every
    judged attempt is recorded (committed by the caller) so throttling survives restarts.
    The throttle's advisory locks (tenants/throttle.py) are held from the count to the
    caller's commit, so parallel guesses for one email or from one address are judged one
    after the other, each counting the failures before it."""
    allowed_at = await login_allowed_at(session, email, ip)
    if allowed_at is not None:
        raise TooManyAttempts(seconds_until(allowed_at))
    user = await find_user(session, email)
    # PasswordWorkBusy (503) leaves before the attempt is recorded: no guess was judged.
    ok = await passwords.verify_password(
        user.password_hash if user and user.password_hash else _DUMMY_HASH, password)
    ok = ok and user is not None and user.password_hash is not None
    # No account has a longer address; its first characters still count for throttling.
    record_login(session, email, ip, ok)
    if not ok or user is None:
        raise LoginFailed("login-failed", "Login failed", "Wrong email address or password.")
    if user.disabled_at is not None:
        raise LoginFailed("account-disabled", "Account disabled", "This account is disabled.")
    if user.email_verified_at is None:
        raise LoginFailed("email-not-verified", "Email not verified",
                          "Confirm your email address first: follow the link we sent you.")
    if passwords.needs_rehash(user.password_hash):
        # An upgrade can wait for a quieter login; refusing this one for it would not.
        with contextlib.suppress(passwords.PasswordWorkBusy):
            user.password_hash = await passwords.hash_password(password)
    return user


async def issue_token(session: AsyncSession, user: User, purpose: str) -> str:
    token = secrets.token_urlsafe(32)
    session.add(UserToken(token_hash=hash_secret(token), user_id=user.id, purpose=purpose,
                          expires_at=clock.now() + TOKEN_LIFETIMES[purpose]))
    await session.flush()
    return token


async def consume_token(session: AsyncSession, token: str, purpose: str) -> User | None:
    """The token's user if the token is valid, unused and unexpired; marks it used."""
    row = await session.get(UserToken, hash_secret(token), with_for_update=True)
    now = clock.now()
    if row is None or row.purpose != purpose or row.used_at is not None or row.expires_at < now:
        return None
    row.used_at = now
    return await session.get(User, row.user_id)


async def reissue_verification(session: AsyncSession, user: User) -> str:
    """A fresh email-verification token for the user. Earlier unused ones stop working.
    Raises TooSoon when the previous one was issued less than
    VERIFICATION_RESEND_INTERVAL ago."""
    # One resend at a time per account: the check and the new token are serialised.
    await session.execute(select(User.id).where(User.id == user.id).with_for_update())
    lifetime = TOKEN_LIFETIMES["verify_email"]
    latest_expiry = await session.scalar(
        select(func.max(UserToken.expires_at)).where(UserToken.user_id == user.id,
                                                     UserToken.purpose == "verify_email"))
    if latest_expiry is not None:
        # Tokens of one purpose share a lifetime, so the expiry tells when it was issued.
        wait = latest_expiry - lifetime + VERIFICATION_RESEND_INTERVAL - clock.now()
        if wait.total_seconds() > 0:
            raise TooSoon(max(1, int(wait.total_seconds() + 0.999)))
    await session.execute(delete(UserToken).where(
        UserToken.user_id == user.id, UserToken.purpose == "verify_email",
        UserToken.used_at.is_(None)))
    return await issue_token(session, user, "verify_email")


def mark_verified(user: User) -> None:
    user.email_verified_at = user.email_verified_at or clock.now()


async def set_password(session: AsyncSession, user: User, password: str) -> None:
    user.password_hash = await passwords.hash_new_password(password, user.email)
    mark_verified(user)  # a password set through an emailed link proves the address
    await session.flush()


async def user_by_id(tx: Tx, user_id: uuid.UUID) -> User | None:
    """The account a portal session names (None if it no longer exists)."""
    return await (await tx.session()).get(User, user_id)


async def audit(session: AsyncSession, actor: User | None, action: str, *,
                target: str | None = None, partner_id: uuid.UUID | None = None,
                **details: object) -> None:
    session.add(AuditEntry(actor_user_id=actor.id if actor else None,
                           actor=actor.email if actor else "system", action=action,
                           target=target, partner_id=partner_id, details=details))
