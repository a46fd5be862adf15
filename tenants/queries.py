"""Reads of the portal's partner and operator pages: the partner console's home, the
partner's profile, and the operator's home. Each takes the Tx its page runs in; the
console's run scoped to the staff member's partner (tenants/scope.py), so row-level
security stands behind every partner filter here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from coalition import clock, referrals
from coalition.settings import coalition_settings
from coalition.uow import Tx
from tenants.models import Partner, PartnerTerms, TermsAcceptance
from tenants.onboarding import current_terms


async def partner(tx: Tx, partner_id: uuid.UUID | None = None) -> Partner:
    """The partner (by default the Tx's)."""
    return await (await tx.session()).get_one(Partner, partner_id or tx.partner_id)


@dataclass(frozen=True)
class PartnerHome:
    partner: Partner
    figures: Any
    recent: list[Any]
    prepaid_low: Any
    referral_figures: list[referrals.Figures]


_PARTNER_FIGURES = """
SELECT (SELECT count(*) FROM member_links WHERE partner_id = $1) AS members,
       coalesce((SELECT -sum(p.amount) FROM postings p JOIN accounts a
                  ON a.id = p.account_id
                 WHERE a.partner_id = $1 AND a.kind = 'partner_issuance'), 0)
           AS points_outstanding_issued,
       coalesce((SELECT sum(p.amount) FROM postings p JOIN accounts a
                  ON a.id = p.account_id
                 WHERE a.partner_id = $1 AND a.kind = 'partner_redemption'), 0)
           AS points_redeemed
"""


async def partner_home(tx: Tx) -> PartnerHome:
    """The console's home for the Tx's partner: members, points, its latest entries, a
    low prepaid balance, and the referral figures of the members who joined it."""
    found = await partner(tx)
    conn, partner_id = tx.conn, found.id
    timezone = (await coalition_settings(conn)).timezone
    return PartnerHome(
        partner=found,
        figures=await conn.fetchrow(_PARTNER_FIGURES, partner_id),
        recent=await conn.fetch(
            "SELECT id, kind, order_id, created_at FROM journal_entries WHERE partner_id = $1"
            " ORDER BY id DESC LIMIT 20", partner_id),
        prepaid_low=await conn.fetchrow(
            "SELECT available FROM prepaid_balances WHERE partner_id = $1"
            " AND low_since IS NOT NULL", partner_id),
        referral_figures=[
            referrals.figures_of(label, await conn.fetchrow(
                "SELECT * FROM referral_figures_mine($1, $2)", start, end))
            for label, start, end in referrals.report_periods(clock.now(), timezone)])


@dataclass(frozen=True)
class Profile:
    partner: Partner
    history: list[TermsAcceptance]
    terms: PartnerTerms

    @property
    def needs_acceptance(self) -> bool:
        return not any(row.version == self.terms.version for row in self.history)


async def profile(tx: Tx) -> Profile:
    """The Tx's partner, its acceptances of the partner terms (newest first) and the
    current terms."""
    session = await tx.session()
    history = (await session.scalars(
        select(TermsAcceptance).where(TermsAcceptance.partner_id == tx.partner_id)
        .order_by(TermsAcceptance.accepted_at.desc()))).all()
    return Profile(await partner(tx), list(history), await current_terms(session))


@dataclass(frozen=True)
class OperatorHome:
    partners: list[Any]
    totals: dict[str, Any]
    referral_figures: list[referrals.Figures]


async def operator_home(tx: Tx) -> OperatorHome:
    """Every partner with its linked members, the members' outstanding points and their
    value, and the coalition-wide referral figures."""
    conn = tx.conn
    settings = await coalition_settings(conn)
    partners = await conn.fetch(
        """
        SELECT p.name, p.slug, p.status, p.created_at,
               (SELECT count(*) FROM member_links l WHERE l.partner_id = p.id) AS members
          FROM partners p ORDER BY p.created_at
        """)
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM members) AS members,"
        " (SELECT coalesce(sum(balance), 0) FROM accounts WHERE kind = 'member_wallet')"
        " AS outstanding")
    # The sum is numeric (a Decimal), the point value a Fraction: the liability is their
    # exact product as an int times a Fraction.
    totals = {"members": row["members"], "outstanding": int(row["outstanding"]),
              "face_value": settings.point_value, "currency": settings.currency}
    figures = await referrals.figures(
        conn, referrals.report_periods(clock.now(), settings.timezone))
    return OperatorHome(list(partners), totals, figures)
