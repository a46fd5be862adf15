"""Affiliate sign-up and payout details.

An affiliate is a person or a company (the NIP is optional, and checked when given). It
signs up with a password, must confirm its email through the same single-use token and
mail as members (tenants/accounts.py; the web layer sends the link), and accepts the
affiliate agreement, whose version and time are recorded. This module makes the
affiliate; its portal login is the accounts' business (tenants/affiliate_signup.py).
Payouts go by Stripe Connect (a connected account id), SEPA transfer (IBAN and BIC,
checked with schwifty) or as points to a member wallet named by its card number; that
wallet must be the affiliate's own, which we take as the member having the affiliate's
email address.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.pl import nip as pl_nip

from coalition import clock
from coalition.affiliates.models import AFFILIATE_KINDS, PAYOUT_METHODS, Affiliate
from coalition.bank import check_account
from coalition.errors import Conflict, DomainError
from coalition.models import Member

# The affiliate agreement in force; accepting records this version and the time.
AGREEMENT_VERSION = "2026-11"
STRIPE_ACCOUNT = re.compile(r"^acct_[A-Za-z0-9]{6,60}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def invalid(field_name: str, detail: str) -> DomainError:
    return DomainError("invalid-affiliate", "Invalid affiliate details", detail, status=422,
                       field=field_name)


def check_nip(value: str) -> str | None:
    """The NIP in compact form (ten digits), None when not given."""
    if not value.strip():
        return None
    try:
        return pl_nip.validate(value)
    except StdnumError:
        raise invalid("nip", "This is not a valid NIP (ten digits with a check digit, "
                      "e.g. 123-456-32-18).") from None


@dataclass(frozen=True)
class PayoutSpec:
    method: str = ""
    stripe_account_id: str = ""
    iban: str = ""
    bic: str = ""
    account_holder: str = ""
    card_number: str = ""


async def payout_values(session: AsyncSession, email: str, spec: PayoutSpec
                        ) -> dict[str, Any]:
    """The affiliates columns for this payout method, checked."""
    values: dict[str, Any] = {"payout_method": spec.method or None, "stripe_account_id": None,
                              "iban": None, "bic": None, "account_holder": None,
                              "payout_member_id": None}
    if not spec.method:
        return values                      # may be set later in the profile
    if spec.method not in PAYOUT_METHODS:
        raise invalid("payout_method", "Choose Stripe Connect, bank transfer (SEPA) or points.")
    if spec.method == "stripe_connect":
        account_id = spec.stripe_account_id.strip()
        if not STRIPE_ACCOUNT.match(account_id):
            raise invalid("stripe_account_id", "Enter your Stripe connected account id, such "
                          "as acct_1A2b3C4d5E6f7G8h.")
        values["stripe_account_id"] = account_id
    elif spec.method == "sepa":
        try:
            account = check_account(spec.account_holder, spec.iban, spec.bic)
        except DomainError as exc:
            raise invalid(exc.field or "iban", exc.detail) from None
        values.update(account_holder=account.holder, iban=account.iban, bic=account.bic)
    else:
        card = re.sub(r"[\s-]", "", spec.card_number)
        member = await session.scalar(select(Member).where(Member.card_number == card)) \
            if card else None
        if member is None:
            raise invalid("card_number", "No member card with this number.")
        if member.email.lower() != email.lower():
            raise invalid("card_number", "This card belongs to a member with another email "
                          "address. Points are paid only to your own card: the member account "
                          "must use the email you sign up with.")
        if member.status != "active":
            raise invalid("card_number", "This member account is not active.")
        values["payout_member_id"] = member.id
    return values


@dataclass(frozen=True)
class SignupSpec:
    kind: str
    name: str
    email: str
    password: str
    accepts_agreement: bool
    company_name: str = ""
    nip: str = ""
    website: str = ""
    payout: PayoutSpec = PayoutSpec()

    def checked(self) -> SignupSpec:
        if self.kind not in AFFILIATE_KINDS:
            raise invalid("kind", "Sign up as a person or as a company.")
        name = " ".join(self.name.split())
        if not name or len(name) > 200:
            raise invalid("name", "Enter your name (at most 200 characters).")
        email = self.email.strip()
        if not EMAIL.match(email) or len(email) > 320:
            raise invalid("email", "Enter a valid email address.")
        company = " ".join(self.company_name.split())
        if self.kind == "company" and not company:
            raise invalid("company_name", "Enter the company's name.")
        if len(company) > 200:
            raise invalid("company_name", "The company name is at most 200 characters.")
        website = self.website.strip()
        if website and (len(website) > 500 or not website.startswith(("https://", "http://"))):
            raise invalid("website", "Enter the site's full address, e.g. https://blog.example.")
        if not self.accepts_agreement:
            raise invalid("accept_terms", "Accept the affiliate agreement to sign up.")
        return replace(self, name=name, email=email, company_name=company, website=website,
                       nip=check_nip(self.nip) or "")


async def add_affiliate(session: AsyncSession, spec: SignupSpec) -> Affiliate:
    """The affiliate of a checked sign-up (tenants/affiliate_signup.py makes its login).
    Raises DomainError naming the field; 409 account-exists for an email that already
    has an affiliate."""
    payout = await payout_values(session, spec.email, spec.payout)
    # The affiliate's own member account, if any: commissions on its own purchases are
    # self-referrals.
    own_member = await session.scalar(select(Member.id).where(
        func.lower(Member.email) == spec.email.lower()))
    affiliate = Affiliate(kind=spec.kind, name=spec.name, company_name=spec.company_name or None,
                          nip=spec.nip or None, email=spec.email, website=spec.website or None,
                          terms_version=AGREEMENT_VERSION, terms_accepted_at=clock.now(),
                          member_id=own_member, **payout)
    try:
        async with session.begin_nested():
            session.add(affiliate)
            await session.flush()
    except IntegrityError as exc:
        if "uq_affiliates_email_lower" not in str(exc.orig):
            raise
        raise Conflict("account-exists", "Account exists",
                       "An affiliate with this email address already exists.",
                       field="email") from None
    return affiliate


async def update_payout(session: AsyncSession, affiliate_id: uuid.UUID, spec: PayoutSpec
                        ) -> Affiliate:
    affiliate = await session.get(Affiliate, affiliate_id, with_for_update=True)
    if affiliate is None:
        raise DomainError("not-found", "Not found", "No such affiliate.", status=404)
    if not spec.method:
        raise invalid("payout_method", "Choose Stripe Connect, bank transfer (SEPA) or points.")
    for column, value in (await payout_values(session, affiliate.email, spec)).items():
        setattr(affiliate, column, value)
    await session.flush()
    return affiliate
