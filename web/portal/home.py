"""The member's and the operator's home pages (the partner's is in console.py)."""

from __future__ import annotations

import json

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock, referrals
from coalition.tiers import history as tier_history
from coalition.tiers import member_status
from web.portal.common import current_user, operator, page, require

Session = NamedDependency[AsyncSession]


class HomePages(Controller):
    include_in_schema = False

    @get("/member")
    async def member_home(self, request: Request, db_session: Session, state: State) -> Template:
        user = require(request, await current_user(request, db_session), "member")
        balance = await state.ledger.balance(user.member_id)
        history = await state.pool.fetch(
            """
            SELECT e.created_at, e.kind, coalesce(p.name, 'Coalition') AS brand, e.description,
                   po.amount AS points
              FROM journal_entries e
              JOIN accounts w ON w.member_id = $1
              JOIN postings po ON po.entry_id = e.id AND po.account_id = w.id
              LEFT JOIN partners p ON p.id = e.partner_id
             WHERE e.member_id = $1 ORDER BY e.id DESC LIMIT 50
            """, user.member_id)
        # Purchases with the rules that priced them (how the points were earned, which
        # the ledger lines alone do not say), and points still waiting out a return window.
        purchases = await state.pool.fetch(
            """
            SELECT pu.occurred_at, p.name AS brand, pu.order_id, pu.total, pu.currency,
                   pu.points, pu.returned_points, pu.breakdown::text AS breakdown,
                   (SELECT max(l.available_at) FROM lots l
                     WHERE l.entry_id = pu.entry_id AND l.status = 'pending') AS pending_until
              FROM purchases pu JOIN partners p ON p.id = pu.partner_id
             WHERE pu.member_id = $1 ORDER BY pu.occurred_at DESC, pu.id DESC LIMIT 20
            """, user.member_id)
        brands = await state.pool.fetch(
            "SELECT p.name, l.created_at FROM member_links l JOIN partners p"
            " ON p.id = l.partner_id WHERE l.member_id = $1 ORDER BY p.name", user.member_id)
        me = await state.pool.fetchrow("SELECT card_number, kind, company_name FROM members"
                                       " WHERE id = $1", user.member_id)
        async with state.pool.acquire() as conn:
            tier = await member_status(conn, user.member_id, clock.now())
            tiers = await tier_history(conn, user.member_id, 10)
            code = await referrals.ensure_code(conn, user.member_id)
        return page("member_home.html", user=user, balance=balance, history=history,
                    purchases=[{**row, "rules": json.loads(row["breakdown"])}
                               for row in purchases],
                    brands=brands, card=me["card_number"], member=me, tier=tier,
                    tier_history=tiers, referral_code=code,
                    referral_link=f"{str(request.base_url).rstrip('/')}/join/{code}")

    @get("/operator")
    async def operator_home(self, request: Request, db_session: Session, state: State
                            ) -> Template:
        user = await operator(request, db_session)
        partners = await state.pool.fetch(
            """
            SELECT p.name, p.slug, p.status, p.created_at,
                   (SELECT count(*) FROM member_links l WHERE l.partner_id = p.id) AS members
              FROM partners p ORDER BY p.created_at
            """)
        totals = await state.pool.fetchrow(
            "SELECT (SELECT count(*) FROM members) AS members,"
            " (SELECT coalesce(sum(balance), 0) FROM accounts WHERE kind = 'member_wallet')"
            " AS outstanding, (SELECT point_face_value FROM coalition_settings) AS face_value,"
            " (SELECT currency FROM coalition_settings) AS currency")
        timezone = await state.pool.fetchval("SELECT timezone FROM coalition_settings")
        figures = await referrals.figures(
            state.pool, referrals.report_periods(clock.now(), timezone))
        return page("operator_home.html", user=user, partners=partners, totals=totals,
                    referral_figures=figures)
