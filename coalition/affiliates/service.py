"""The affiliate area's changes, each a use case in the caller's Tx (coalition/uow.py)
with its audit row: a partner's programs, terms, creatives and enrollment decisions
(the console runs them tenant-scoped), the decision on a held commission (partner or
operator), and the affiliate's own joining of a program and payout details.

Who acts is the Tx's actor: the partner's decisions are recorded as `staff:<email>`,
as the console always recorded them. A change to a program, its terms or an
enrollment drops the tracking-code cache (coalition/affiliates/tracking.py) now and
again once the Tx committed, so no request caches the old state in between."""

from __future__ import annotations

import uuid

from coalition import clock
from coalition.affiliates import commissions, programs, tracking
from coalition.affiliates.models import AffiliateProgram, Creative, Enrollment, ProgramTerms
from coalition.affiliates.programs import ProgramSpec, TermsSpec
from coalition.affiliates.signup import PayoutSpec, update_payout
from coalition.uow import Tx


def _forget_codes(tx: Tx, code: str | None) -> None:
    tx.after_commit(lambda: tracking.CODES.forget(code))


def _staff(tx: Tx) -> str:
    return f"staff:{tx.actor.label}"


# ---- the partner's programs ----

async def create_program(tx: Tx, partner_id: uuid.UUID, spec: ProgramSpec
                         ) -> AffiliateProgram:
    program = await programs.create_program(await tx.session(), partner_id, spec)
    await tx.audit("affiliate_program.create", target=str(program.id), partner_id=partner_id,
                   name=program.name)
    return program


async def update_program(tx: Tx, partner_id: uuid.UUID, program_id: uuid.UUID,
                         spec: ProgramSpec) -> AffiliateProgram:
    program = await programs.update_program(await tx.session(), partner_id, program_id, spec)
    _forget_codes(tx, None)
    await tx.audit("affiliate_program.update", target=str(program_id), partner_id=partner_id)
    return program


async def add_terms(tx: Tx, partner_id: uuid.UUID, program_id: uuid.UUID, spec: TermsSpec
                    ) -> ProgramTerms:
    """A new terms version (programs.add_terms), by the acting staff member."""
    terms = await programs.add_terms(await tx.session(), partner_id, program_id, spec,
                                     _staff(tx))
    _forget_codes(tx, None)
    await tx.audit("affiliate_terms.create", target=str(program_id), partner_id=partner_id,
                   version=terms.version)
    return terms


async def add_creative(tx: Tx, partner_id: uuid.UUID, program_id: uuid.UUID, title: str, *,
                       text: str = "", filename: str = "", content_type: str = "",
                       content: bytes = b"") -> Creative:
    creative = await programs.add_creative(await tx.session(), partner_id, program_id, title,
                                           text=text, filename=filename,
                                           content_type=content_type, content=content)
    await tx.audit("affiliate_creative.create", target=str(creative.id), partner_id=partner_id)
    return creative


async def set_creative_active(tx: Tx, partner_id: uuid.UUID, creative_id: int, active: bool
                              ) -> Creative:
    session = await tx.session()
    creative = await programs.own_creative(session, partner_id, creative_id)
    creative.active = active
    await session.flush()
    await tx.audit("affiliate_creative.active", target=str(creative.id), partner_id=partner_id,
                   active=creative.active)
    return creative


async def decide_enrollment(tx: Tx, partner_id: uuid.UUID, enrollment_id: uuid.UUID,
                            action: str, reason: str | None = None) -> Enrollment:
    """approve / reject / ban (programs.decide_enrollment), by the acting staff member."""
    enrollment = await programs.decide_enrollment(await tx.session(), partner_id,
                                                  enrollment_id, action, _staff(tx), reason)
    _forget_codes(tx, enrollment.code)
    await tx.audit(f"affiliate_enrollment.{action}", target=str(enrollment_id),
                   partner_id=partner_id, reason=reason or None)
    return enrollment


# ---- held commissions ----

async def decide_commission(tx: Tx, commission_id: int, release: bool,
                            partner_id: uuid.UUID | None) -> str | None:
    """Release or reject a held commission (commissions.decide); `partner_id` limits it
    to that partner's, None is the operator. None when there is no such held
    commission (nothing changed, nothing audited)."""
    status = await commissions.decide(tx.conn, commission_id, release=release,
                                      actor=tx.actor.label, now=clock.now(),
                                      partner_id=partner_id)
    if status is not None:
        await tx.audit("affiliate_commission.release" if release
                       else "affiliate_commission.reject", target=str(commission_id),
                       partner_id=partner_id, status=status)
    return status


# ---- the affiliate's own ----

async def join_program(tx: Tx, affiliate_id: uuid.UUID, program_id: uuid.UUID,
                       note: str | None = None) -> Enrollment:
    """Join (auto programs) or apply (application programs): programs.join_program."""
    return await programs.join_program(await tx.session(), affiliate_id, program_id, note)


async def save_payout(tx: Tx, affiliate_id: uuid.UUID, spec: PayoutSpec) -> None:
    """The affiliate's payout details, checked (signup.update_payout)."""
    await update_payout(await tx.session(), affiliate_id, spec)
