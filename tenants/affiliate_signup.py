"""An affiliate's sign-up: the affiliate (coalition/affiliates/signup.py) and its portal
login of kind 'affiliate', which must confirm its email like a member's
(tenants/accounts.py). The accounts are this package's business, so the sign-up that
makes both is here, above coalition."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from coalition.affiliates.models import Affiliate
from coalition.affiliates.signup import SignupSpec, add_affiliate
from coalition.errors import Conflict
from coalition.uow import Tx
from tenants import accounts
from tenants.models import User


async def sign_up(session: AsyncSession, spec: SignupSpec) -> tuple[Affiliate, User]:
    """The affiliate and its (unverified) login. The caller sends the verification link
    and commits. Raises DomainError naming the field; 409 account-exists for an email
    that already has an account."""
    spec = spec.checked()
    # Before anything is written; async, as the strength estimate runs off the loop.
    await accounts.check_password_rules(spec.password, spec.email)
    if await accounts.find_user(session, spec.email) is not None:
        raise Conflict("account-exists", "Account exists",
                       "An account with this email address already exists.", field="email")
    affiliate = await add_affiliate(session, spec)
    user = await accounts.create_user(session, spec.email, "affiliate", name=spec.name,
                                      password=spec.password, affiliate_id=affiliate.id)
    return affiliate, user


async def sign_up_affiliate(tx: Tx, spec: SignupSpec) -> tuple[User, str]:
    """The portal's sign-up form: the affiliate, its login and the email-verification
    token, which the caller mails once this Tx committed."""
    session = await tx.session()
    _, user = await sign_up(session, spec)
    return user, await accounts.issue_token(session, user, "verify_email")
