"""Partner applications and the operator's decisions on them."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from schwifty import IBAN
from schwifty.exceptions import SchwiftyException
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.companies import normalize_tax_id
from coalition.errors import Conflict, DomainError
from coalition.uow import Tx
from tenants import accounts
from tenants.models import AuditEntry, Partner, PartnerTerms, TermsAcceptance, User
from tenants.service import create_partner, slugify

LEGAL_FORMS = ("sp. z o.o.", "S.A.", "sp. j.", "sp. k.", "JDG (sole trader)", "other")
INDUSTRIES = ("wholesale", "retail", "fuel", "pharmacy", "beauty and services", "e-commerce",
              "B2B e-commerce", "other")
CURRENCIES = ("PLN", "EUR", "CZK")
# Where a decision may be taken from.
DECISIONS = {
    "approve": ({"applied", "under_review"}, "active"),
    "reject": ({"applied", "under_review"}, "rejected"),
    "request_info": ({"applied", "under_review"}, "under_review"),
    "suspend": ({"active"}, "suspended"),
    "reactivate": ({"suspended"}, "active"),
    "offboard": ({"active", "suspended"}, "offboarded"),
}


@dataclass
class Application:
    company_name: str = ""
    legal_form: str = ""
    tax_id: str = ""
    address: str = ""
    website: str = ""
    industry: str = ""
    contact_name: str = ""
    contact_email: str = ""
    settlement_currency: str = "PLN"
    iban: str = ""
    terms_version: str = ""
    accept_terms: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: dict) -> Application:
        names = [f for f in cls.__dataclass_fields__ if f not in ("errors", "accept_terms")]
        values = {name: str(form.get(name, "")).strip() for name in names}
        return cls(**values, accept_terms=form.get("accept_terms") == "yes")


async def current_terms(session: AsyncSession) -> PartnerTerms:
    return (await session.scalars(
        select(PartnerTerms).order_by(PartnerTerms.published_at.desc()).limit(1))).one()


async def terms(tx: Tx) -> PartnerTerms:
    """The partner terms in force (the latest published)."""
    return await current_terms(await tx.session())


async def validate(session: AsyncSession, app: Application) -> Application:
    errors = app.errors
    if not 2 <= len(app.company_name) <= 200:
        errors["company_name"] = "Enter the company name."
    if app.legal_form not in LEGAL_FORMS:
        errors["legal_form"] = "Choose a legal form."
    tax_id = normalize_tax_id(app.tax_id)
    if tax_id is None:
        errors["tax_id"] = ("Enter a valid Polish NIP (10 digits) or an EU VAT id such as "
                            "DE136695976.")
    else:
        app.tax_id = tax_id
    if len(app.address) < 5:
        errors["address"] = "Enter the registered address."
    if app.website and (not re.fullmatch(r"https?://[^\s/$.?#].[^\s]*", app.website)
                        or len(app.website) > 300):
        errors["website"] = "Enter a full address starting with https://"
    if app.industry not in INDUSTRIES:
        errors["industry"] = "Choose an industry."
    if not app.contact_name or len(app.contact_name) > 200:
        errors["contact_name"] = "Enter the contact person (at most 200 characters)."
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", app.contact_email) \
            or len(app.contact_email) > accounts.MAX_EMAIL_LENGTH:
        errors["contact_email"] = "Enter a valid email address."
    elif await accounts.find_user(session, app.contact_email) is not None:
        errors["contact_email"] = "This email already has an account; use another one."
    if app.settlement_currency not in CURRENCIES:
        errors["settlement_currency"] = "Choose a settlement currency."
    try:
        app.iban = IBAN(app.iban).compact
    except (SchwiftyException, ValueError):
        errors["iban"] = "Enter a valid IBAN, such as PL61 1090 1014 0000 0712 1981 2874."
    terms = await current_terms(session)
    if not app.accept_terms or app.terms_version != terms.version:
        errors["accept_terms"] = f"Accept the current partner terms ({terms.version})."
    if tax_id and await session.scalar(select(Partner.id).where(
            Partner.tax_id == tax_id, Partner.status.not_in(("rejected", "offboarded")))):
        errors["tax_id"] = "A partner with this tax id already exists or has applied."
    return app


async def submit_application(tx: Tx, app: Application) -> Partner:
    """Save a validated application as a partner in status `applied`. Raises
    DomainError, the form's errors left in `app.errors`, when it does not validate."""
    session = await tx.session()
    await validate(session, app)
    if app.errors:
        raise DomainError("validation-error", "Invalid application",
                          "; ".join(app.errors.values()), status=400,
                          field=next(iter(app.errors)))
    slug = slugify(app.company_name)
    while await session.scalar(select(Partner.id).where(Partner.slug == slug)):
        slug = f"{slugify(app.company_name)[:50]}-{uuid.uuid4().hex[:6]}"
    partner = await create_partner(session, app.company_name, slug=slug,
                                   settlement_currency=app.settlement_currency,
                                   status="applied")
    for name in ("legal_form", "tax_id", "address", "website", "industry", "contact_name",
                 "contact_email", "iban"):
        setattr(partner, name, getattr(app, name) or None)
    session.add(TermsAcceptance(partner_id=partner.id, version=app.terms_version,
                                accepted_by=app.contact_email))
    await session.flush()
    await tx.audit("partner.applied", target=partner.slug, partner_id=partner.id,
                   contact=app.contact_email)
    return partner


async def accept_terms(tx: Tx, version: str, accepted_by: str) -> None:
    """The Tx's partner accepts the terms of `version` (once: accepting again records
    nothing)."""
    session = await tx.session()
    already = await session.scalar(select(TermsAcceptance.id).where(
        TermsAcceptance.partner_id == tx.partner_id, TermsAcceptance.version == version))
    if already is None:
        session.add(TermsAcceptance(partner_id=tx.partner_id, version=version,
                                    accepted_by=accepted_by))
        await session.flush()
        await tx.audit("terms.accept", target=version)


async def partners(tx: Tx) -> list[Partner]:
    """Every partner, newest application first."""
    return list((await (await tx.session()).scalars(
        select(Partner).order_by(Partner.created_at.desc()))).all())


@dataclass(frozen=True)
class PartnerFile:
    """What the operator sees of a partner: its audit history (newest first) and its
    terms acceptances, and the decisions its status allows."""

    partner: Partner
    history: list[AuditEntry]
    acceptances: list[TermsAcceptance]

    @property
    def actions(self) -> list[str]:
        return [d for d, (origin, _) in DECISIONS.items() if self.partner.status in origin]


async def partner_file(tx: Tx, partner_id: uuid.UUID) -> PartnerFile | None:
    session = await tx.session()
    partner = await session.get(Partner, partner_id)
    if partner is None:
        return None
    history = (await session.scalars(
        select(AuditEntry).where(AuditEntry.partner_id == partner.id)
        .order_by(AuditEntry.id.desc()))).all()
    acceptances = (await session.scalars(
        select(TermsAcceptance).where(TermsAcceptance.partner_id == partner.id)
        .order_by(TermsAcceptance.id))).all()
    return PartnerFile(partner, list(history), list(acceptances))


@dataclass(frozen=True)
class Decided:
    """A decision taken: the partner, and on an approval the owner's account and its
    invitation token, for the caller to email."""

    partner: Partner
    owner: User | None
    invitation: str | None


async def decide(tx: Tx, partner_id: uuid.UUID, decision: str, note: str = ""
                 ) -> Decided | None:
    """Apply an operator decision (None: no such partner or decision), audited as the
    Tx's operator. Approval creates the owner's account (no password yet) with an
    invitation token. Refuses (Conflict, DomainError) before it changes anything."""
    session = await tx.session()
    partner = await session.get(Partner, partner_id, with_for_update=True)
    if partner is None or decision not in DECISIONS:
        return None
    allowed_from, new_status = DECISIONS[decision]
    if partner.status not in allowed_from:
        raise Conflict("invalid-transition", "Decision not possible",
                       f"This decision ({decision}) is not possible for a partner that is "
                       f"{partner.status}.")
    if decision in ("reject", "request_info", "suspend", "offboard") and len(note.strip()) < 3:
        raise DomainError("validation-error", "Reason required", "Give a reason.", status=400,
                          field="note")
    partner.status = new_status
    partner.status_reason = note.strip() or None
    partner.decided_at = clock.now()
    owner = None
    if decision == "approve" and partner.contact_email:
        owner = await accounts.find_user(session, partner.contact_email)
        if owner is None:
            owner = await accounts.create_user(session, partner.contact_email, "partner_staff",
                                               name=partner.contact_name, partner_id=partner.id,
                                               role="owner")
    await session.flush()
    await tx.audit(f"partner.{decision}", target=partner.slug, partner_id=partner.id,
                   note=note.strip() or None, status=new_status)
    token = await accounts.issue_token(session, owner, "invite") if owner else None
    return Decided(partner, owner, token)
