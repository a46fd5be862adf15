"""What the affiliate area's pages read (web/portal/affiliates/), each in the caller's Tx:
the affiliate's dashboard, the programs it may join and its payout details; the partner
console's programs, affiliates and creatives; the commissions under review. The
affiliate's reads are keyed by its own id; the console's run in a tenant-scoped Tx, so
row-level security hides another partner's rows even where a filter were forgotten."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import select

from coalition.affiliates import dashboard, programs
from coalition.affiliates.attribution import from_json
from coalition.affiliates.models import (
    Affiliate,
    AffiliateProgram,
    Creative,
    Enrollment,
    ProgramTerms,
)
from coalition.models import Member
from coalition.uow import Tx

# ---- the affiliate's own pages ----


@dataclass
class Home:
    enrollments: list[dict[str, Any]]
    months: list[dict[str, Any]]
    creatives: list[asyncpg.Record]


async def dashboard_home(tx: Tx, affiliate_id: uuid.UUID, now: datetime) -> Home:
    """Figures per program, commissions by month and status, and the creatives."""
    return Home(await dashboard.enrollments(tx.conn, affiliate_id, now),
                await dashboard.months(tx.conn, affiliate_id, now),
                await dashboard.creatives(tx.conn, affiliate_id))


async def enrolled_programs(tx: Tx, affiliate_id: uuid.UUID) -> list[asyncpg.Record]:
    """The programs the affiliate joined or applied to (the commission filter's choice)."""
    return await tx.conn.fetch(
        "SELECT p.id, p.name FROM affiliate_enrollments e JOIN affiliate_programs p"
        " ON p.id = e.program_id WHERE e.affiliate_id = $1 ORDER BY p.name", affiliate_id)


async def affiliate_commissions(tx: Tx, affiliate_id: uuid.UUID,
                                chosen: dashboard.CommissionFilter) -> list[asyncpg.Record]:
    return await dashboard.commissions(tx.conn, affiliate_id, chosen)


async def affiliate_payouts(tx: Tx, affiliate_id: uuid.UUID) -> list[asyncpg.Record]:
    return await dashboard.payouts(tx.conn, affiliate_id)


async def payout_statement(tx: Tx, affiliate_id: uuid.UUID, payout_id: int
                           ) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
    return await dashboard.statement(tx.conn, affiliate_id, payout_id)


async def affiliate_creative(tx: Tx, affiliate_id: uuid.UUID, creative_id: int
                             ) -> asyncpg.Record | None:
    return await dashboard.creative(tx.conn, affiliate_id, creative_id)


async def _affiliate(tx: Tx, affiliate_id: uuid.UUID) -> Affiliate:
    affiliate = await (await tx.session()).get(Affiliate, affiliate_id)
    assert affiliate is not None  # users.affiliate_id is a foreign key
    return affiliate


@dataclass
class Joinable:
    affiliate: Affiliate
    joined: list[tuple[Enrollment, AffiliateProgram]]
    available: list[tuple[AffiliateProgram, ProgramTerms]]
    partners: dict[uuid.UUID, str]


async def programs_to_join(tx: Tx, affiliate_id: uuid.UUID) -> Joinable:
    """The affiliate's enrollments, and the active programs with terms in force it has
    not joined yet."""
    session = await tx.session()
    joined = await programs.affiliate_enrollments(session, affiliate_id)
    joined_ids = {p.id for _, p in joined}
    partners = {r["id"]: r["name"] for r in await tx.conn.fetch(
        "SELECT id, name FROM partners")}
    available = []
    for program in await programs.active_programs(session):
        if program.id in joined_ids:
            continue
        terms = await programs.terms_in_force(session, program.id)
        if terms is not None:
            available.append((program, terms))
    return Joinable(await _affiliate(tx, affiliate_id), joined, available, partners)


async def payout_details(tx: Tx, affiliate_id: uuid.UUID) -> tuple[Affiliate, dict[str, str]]:
    """The affiliate and its payout details as the profile form shows them."""
    affiliate = await _affiliate(tx, affiliate_id)
    card = await (await tx.session()).scalar(select(Member.card_number).where(
        Member.id == affiliate.payout_member_id)) if affiliate.payout_member_id else ""
    return affiliate, {"payout_method": affiliate.payout_method or "",
                       "stripe_account_id": affiliate.stripe_account_id or "",
                       "iban": affiliate.iban or "", "bic": affiliate.bic or "",
                       "account_holder": affiliate.account_holder or "", "card_number": card}


# ---- the partner console ----


async def _enrolled(tx: Tx, partner_id: uuid.UUID, program_id: uuid.UUID | None = None
                    ) -> list[tuple[Enrollment, Affiliate]]:
    """The partner's affiliates, applications waiting first."""
    query = select(Enrollment, Affiliate).join(Affiliate, Affiliate.id == Enrollment.affiliate_id
                                               ).where(Enrollment.partner_id == partner_id)
    if program_id is not None:
        query = query.where(Enrollment.program_id == program_id)
    rows = await (await tx.session()).execute(query.order_by(
        (Enrollment.status == "pending").desc(), Enrollment.created_at.desc()))
    return [(e, a) for e, a in rows.all()]


@dataclass
class Console:
    programs: list[AffiliateProgram]
    affiliates: list[tuple[Enrollment, Affiliate]]


async def console(tx: Tx, partner_id: uuid.UUID) -> Console:
    return Console(await programs.partner_programs(await tx.session(), partner_id),
                   await _enrolled(tx, partner_id))


@dataclass
class ProgramPage:
    program: AffiliateProgram
    history: list[ProgramTerms]
    affiliates: list[tuple[Enrollment, Affiliate]]
    creatives: list[Creative]


async def program_page(tx: Tx, partner_id: uuid.UUID, program_id: uuid.UUID) -> ProgramPage:
    """One of the partner's programs (404 for any other) with its terms versions,
    affiliates and creatives."""
    session = await tx.session()
    program = await programs.own_program(session, partner_id, program_id)
    return ProgramPage(program, await programs.terms_history(session, program.id),
                       await _enrolled(tx, partner_id, program.id),
                       await programs.program_creatives(session, program.id))


async def enrollment_program(tx: Tx, partner_id: uuid.UUID, enrollment_id: uuid.UUID
                             ) -> uuid.UUID:
    """The program of one of the partner's enrollments (404 for any other)."""
    return (await programs.own_enrollment(await tx.session(), partner_id,
                                          enrollment_id)).program_id


async def own_creative(tx: Tx, partner_id: uuid.UUID, creative_id: int) -> Creative:
    return await programs.own_creative(await tx.session(), partner_id, creative_id)


# ---- commissions under review (partner console and operator) ----

_REVIEW = """
SELECT c.id, c.kind, c.order_id, c.amount_minor, c.sale_minor, c.refunded_minor,
       c.currency, c.status, c.fraud_reasons, c.explanation, c.occurred_at, c.hold_until,
       c.decided_at, c.decided_by, c.reverses_id, a.name AS affiliate, a.id AS affiliate_id,
       p.name AS program, pa.name AS partner
  FROM affiliate_commissions c JOIN affiliates a ON a.id = c.affiliate_id
  JOIN affiliate_programs p ON p.id = c.program_id JOIN partners pa ON pa.id = c.partner_id
 WHERE ($1::uuid IS NULL OR c.partner_id = $1)
   AND ($2::text IS NULL OR c.status = $2)
   AND ($3::uuid IS NULL OR c.affiliate_id = $3)
 ORDER BY (c.status = 'hold') DESC, c.occurred_at DESC, c.id DESC LIMIT 200
"""

_COMMISSION_AFFILIATES = """
SELECT DISTINCT a.id, a.name FROM affiliate_commissions c
  JOIN affiliates a ON a.id = c.affiliate_id
 WHERE $1::uuid IS NULL OR c.partner_id = $1 ORDER BY a.name
"""


@dataclass
class Review:
    rows: list[dict[str, Any]]
    affiliates: list[asyncpg.Record]     # those with commissions: the filter's choice


async def commissions_to_review(tx: Tx, partner_id: uuid.UUID | None, status: str | None,
                                affiliate_id: uuid.UUID | None) -> Review:
    """The latest 200 commissions (held ones first) of one partner (None: all)."""
    rows = [{**r, "explanation": from_json(r["explanation"]) or {}}
            for r in await tx.conn.fetch(_REVIEW, partner_id, status, affiliate_id)]
    return Review(rows, await tx.conn.fetch(_COMMISSION_AFFILIATES, partner_id))


async def partner_names(tx: Tx) -> list[asyncpg.Record]:
    """Every partner, by name (the operator's filter)."""
    return await tx.conn.fetch("SELECT id, name FROM partners ORDER BY name")

