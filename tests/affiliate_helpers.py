"""Shared fixtures for affiliate tests: an affiliate with a login, a partner's program
with terms, an enrollment (approved or not), a logged-in affiliate browser, a click.

Everything goes through the domain functions (coalition/affiliates/programs.py and
signup.py), so what the tests build is what the pages and APIs build."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from coalition.affiliates import programs
from coalition.affiliates.models import Enrollment
from coalition.affiliates.programs import ProgramSpec, TermsSpec
from coalition.affiliates.signup import PayoutSpec, SignupSpec
from tenants import accounts
from tenants.affiliate_signup import sign_up
from tenants.service import create_partner
from tests.portal import Browser, submit

AFFILIATE_PASSWORD = "affiliate secret 12"
PERCENT_5 = TermsSpec(model="percent", rate_bp=500)


@dataclass
class AffiliateAccount:
    id: uuid.UUID
    user_id: uuid.UUID
    email: str
    name: str


@dataclass
class ProgramRef:
    id: uuid.UUID
    partner_id: uuid.UUID
    name: str
    landing_url: str
    terms_id: int | None


@dataclass
class EnrollmentRef:
    id: uuid.UUID
    program_id: uuid.UUID
    partner_id: uuid.UUID
    affiliate_id: uuid.UUID
    code: str
    status: str


async def make_partner(app, name: str = "Affiliate Brand") -> uuid.UUID:
    async with app.state.sessionmaker() as session:
        partner = await create_partner(session, name, slug=f"af-{uuid.uuid4().hex[:10]}")
        await session.commit()
    return partner.id


async def make_affiliate(app, *, name: str = "Anna Blogerka", email: str | None = None,
                         kind: str = "person", verified: bool = True,
                         payout: PayoutSpec | None = None, **extra: str) -> AffiliateAccount:
    email = email or f"affiliate-{uuid.uuid4().hex[:10]}@example.com"
    async with app.state.sessionmaker() as session:
        affiliate, user = await sign_up(session, SignupSpec(
            kind=kind, name=name, email=email, password=AFFILIATE_PASSWORD,
            accepts_agreement=True, payout=payout or PayoutSpec(), **extra))
        if verified:
            accounts.mark_verified(user)
        await session.commit()
    return AffiliateAccount(affiliate.id, user.id, email, name)


async def make_program(app, partner_id: uuid.UUID, *, name: str | None = None,
                       enrollment: str = "auto",
                       landing_url: str = "https://shop.example/landing?src=aff",
                       currency: str = "PLN", status: str = "active",
                       terms: TermsSpec | None = PERCENT_5) -> ProgramRef:
    name = name or f"Program {uuid.uuid4().hex[:8]}"
    async with app.state.sessionmaker() as session:
        program = await programs.create_program(session, partner_id, ProgramSpec(
            name=name, landing_url=landing_url, currency=currency, enrollment=enrollment,
            status=status))
        terms_row = (await programs.add_terms(session, partner_id, program.id, terms, "test")
                     if terms is not None else None)
        await session.commit()
    return ProgramRef(program.id, partner_id, name, landing_url,
                      terms_row.id if terms_row else None)


async def make_enrollment(app, affiliate_id: uuid.UUID, program: ProgramRef, *,
                          status: str = "approved", note: str | None = None) -> EnrollmentRef:
    """Join the program, then move the enrollment to `status` as the partner would."""
    async with app.state.sessionmaker() as session:
        enrollment = await programs.join_program(session, affiliate_id, program.id, note)
        path = {"approved": ["approve"], "rejected": ["reject"], "banned": ["approve", "ban"],
                "pending": []}[status]
        if enrollment.status == "approved" and path and path[0] == "approve":
            path = path[1:]
        for action in path:
            await programs.decide_enrollment(session, program.partner_id, enrollment.id,
                                             action, "test", "test reason")
        await session.commit()
        row = await session.get(Enrollment, enrollment.id)
    return EnrollmentRef(row.id, row.program_id, row.partner_id, row.affiliate_id, row.code,
                         row.status)


async def setup_enrollment(app, *, enrollment: str = "auto", status: str = "approved",
                           terms: TermsSpec | None = PERCENT_5,
                           landing_url: str = "https://shop.example/landing?src=aff"
                           ) -> tuple[AffiliateAccount, ProgramRef, EnrollmentRef]:
    """A fresh partner, program (with terms), affiliate and enrollment in one call."""
    partner_id = await make_partner(app)
    program = await make_program(app, partner_id, enrollment=enrollment, terms=terms,
                                 landing_url=landing_url)
    affiliate = await make_affiliate(app)
    joined = await make_enrollment(app, affiliate.id, program, status=status)
    return affiliate, program, joined


async def affiliate_browser(app, affiliate: AffiliateAccount) -> Browser:
    browser = Browser(app)
    login = await submit(browser, "/login", "/login", email=affiliate.email,
                         password=AFFILIATE_PASSWORD)
    assert login.status_code == 302 and login.headers["location"] == "/affiliate", login.text
    return browser


async def click(client, code: str, **headers: str) -> uuid.UUID:
    """Follow a tracking link once; returns the click id it carried."""
    response = await client.get(f"/r/{code}", headers=headers or None)
    assert response.status_code == 302, response.text
    return uuid.UUID(response.headers["location"].split("click_id=")[1][:36])


async def staff_browser(app, partner_id: uuid.UUID, role: str) -> Browser:
    """A logged-in browser for a new staff member of this partner with this role."""
    email = f"{role}-{uuid.uuid4().hex[:8]}@brand.example"
    async with app.state.sessionmaker() as session:
        await accounts.create_user(session, email, "partner_staff", partner_id=partner_id,
                                   role=role, password="staff secret 12", verified=True)
        await session.commit()
    browser = Browser(app)
    login = await submit(browser, "/login", "/login", email=email, password="staff secret 12")
    assert login.status_code == 302
    return browser
