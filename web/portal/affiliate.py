"""The affiliate's dashboard (/affiliate): figures per program, commissions by status
over the last 12 months, the link builder, commissions with filters and CSV, payouts
and their statements, terms in force, creatives. Only logins of kind 'affiliate'; every
query is keyed by the login's affiliate, and another affiliate's ids answer 404."""

from __future__ import annotations

import re
import uuid
from datetime import date

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.affiliates import dashboard
from coalition.affiliates.models import COMMISSION_STATUSES
from tenants.models import User
from web.portal.common import current_user, page, require
from web.portal.payments import money

Session = NamedDependency[AsyncSession]
BAR_WIDTH = 300   # pixels of the widest bar in the monthly chart
SUB_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


async def affiliate(request: Request, db_session: AsyncSession) -> User:
    return require(request, await current_user(request, db_session), "affiliate")


def _filters(program: str | None, status: str | None, date_from: str | None,
             date_to: str | None, programs: set[uuid.UUID]
             ) -> tuple[dashboard.CommissionFilter, dict[str, str]]:
    errors: dict[str, str] = {}
    program_id = None
    if program:
        try:
            program_id = uuid.UUID(program)
        except ValueError:
            program_id = None
        if program_id not in programs:
            errors["program"] = "Choose one of your programs."
    if status and status not in COMMISSION_STATUSES:
        errors["status"] = "Choose one of: " + ", ".join(COMMISSION_STATUSES) + "."
    days: dict[str, date | None] = {}
    for name, raw in (("date_from", date_from), ("date_to", date_to)):
        try:
            days[name] = date.fromisoformat(raw) if raw else None
        except ValueError:
            errors[name] = "A date is YYYY-MM-DD."
            days[name] = None
    if days["date_from"] and days["date_to"] and days["date_from"] > days["date_to"]:
        errors["date_to"] = "The end date is before the start date."
    return dashboard.CommissionFilter(program_id, status or None, days["date_from"],
                                      days["date_to"]), errors


class AffiliateDashboardPages(Controller):
    path = "/affiliate"
    include_in_schema = False

    @get("/")
    async def home(self, request: Request, db_session: Session, state: State,
                   enrollment: str | None = None, sub: str | None = None) -> Template:
        user = await affiliate(request, db_session)
        now = clock.now()
        async with state.pool.acquire() as conn:
            rows = await dashboard.enrollments(conn, user.affiliate_id, now)
            by_month = await dashboard.months(conn, user.affiliate_id, now)
            creatives = await dashboard.creatives(conn, user.affiliate_id)
        peak = max([abs(v) for m in by_month for v in m["amounts"].values()] or [0]) or 1
        link, link_error = None, None
        if enrollment is not None:
            chosen = next((r for r in rows if str(r["id"]) == enrollment
                           and r["status"] == "approved"), None)
            if chosen is None:
                link_error = ("enrollment", "Choose one of your approved programs.")
            elif sub and not SUB_ID.match(sub):
                link_error = ("sub", "A sub-id is 1 to 100 letters, digits, - or _.")
            else:
                base = (state.settings.public_url or str(request.base_url)).rstrip("/")
                link = f"{base}/r/{chosen['code']}" + (f"/{sub}" if sub else "")
        return page("affiliate/home.html", status_code=400 if link_error else 200, user=user,
                    rows=rows, totals=dashboard.totals(rows), months=by_month,
                    statuses=dashboard.CHART_STATUSES, creatives=creatives, money=money,
                    percent=dashboard.percent, bar=lambda v: abs(v) * BAR_WIDTH // peak,
                    link=link, link_error=link_error, chosen=enrollment or "", sub=sub or "")

    async def _commissions(self, request: Request, db_session: AsyncSession, state: State,
                           program: str | None, status: str | None, date_from: str | None,
                           date_to: str | None):
        user = await affiliate(request, db_session)
        async with state.pool.acquire() as conn:
            programs = await conn.fetch(
                "SELECT p.id, p.name FROM affiliate_enrollments e JOIN affiliate_programs p"
                " ON p.id = e.program_id WHERE e.affiliate_id = $1 ORDER BY p.name",
                user.affiliate_id)
            chosen, errors = _filters(program, status, date_from, date_to,
                                      {p["id"] for p in programs})
            rows = [] if errors else await dashboard.commissions(conn, user.affiliate_id,
                                                                 chosen)
        return user, programs, rows, errors

    @get("/commissions")
    async def commissions(self, request: Request, db_session: Session, state: State,
                          program: str | None = None, status: str | None = None,
                          date_from: str | None = None, date_to: str | None = None
                          ) -> Template:
        user, programs, rows, errors = await self._commissions(
            request, db_session, state, program, status, date_from, date_to)
        query = request.url.query or ""
        return page("affiliate/commissions.html", status_code=400 if errors else 200,
                    user=user, programs=programs, rows=rows, errors=errors, money=money,
                    statuses=COMMISSION_STATUSES, query=query,
                    form={"program": program or "", "status": status or "",
                          "date_from": date_from or "", "date_to": date_to or ""})

    @get("/commissions.csv")
    async def commissions_csv(self, request: Request, db_session: Session, state: State,
                              program: str | None = None, status: str | None = None,
                              date_from: str | None = None, date_to: str | None = None
                              ) -> Response:
        _, _, rows, errors = await self._commissions(request, db_session, state, program,
                                                     status, date_from, date_to)
        if errors:
            field, message = next(iter(errors.items()))
            return Response({"type": "/problems/validation-error", "title": "Invalid filter",
                             "status": 400, "detail": message, "field": field},
                            status_code=400, media_type="application/problem+json")
        return Response(dashboard.commissions_csv(rows), media_type="text/csv", headers={
            "Content-Disposition": 'attachment; filename="commissions.csv"'})

    @get("/payouts")
    async def payouts(self, request: Request, db_session: Session, state: State
                      ) -> Template:
        user = await affiliate(request, db_session)
        async with state.pool.acquire() as conn:
            rows = await dashboard.payouts(conn, user.affiliate_id)
        return page("affiliate/payouts.html", user=user, rows=rows, money=money)

    async def _statement(self, request: Request, db_session: AsyncSession, state: State,
                         payout_id: int):
        user = await affiliate(request, db_session)
        async with state.pool.acquire() as conn:
            found = await dashboard.statement(conn, user.affiliate_id, payout_id)
        if found is None:
            raise NotFoundException("No such payout.")
        return user, *found

    @get("/payouts/{payout_id:int}")
    async def statement(self, request: Request, db_session: Session, state: State,
                        payout_id: int) -> Template:
        user, payout, lines = await self._statement(request, db_session, state, payout_id)
        return page("affiliate/statement.html", user=user, payout=payout, lines=lines,
                    money=money, sales=sum(c["amount_minor"] for c in lines
                                           if c["amount_minor"] > 0),
                    clawbacks=sum(c["amount_minor"] for c in lines if c["amount_minor"] < 0))

    @get("/payouts/{payout_id:int}/statement.csv")
    async def statement_csv(self, request: Request, db_session: Session, state: State,
                            payout_id: int) -> Response:
        _, payout, lines = await self._statement(request, db_session, state, payout_id)
        return Response(dashboard.commissions_csv(lines), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="payout-{payout["id"]}.csv"'})

    @get("/creatives/{creative_id:int}")
    async def creative(self, request: Request, db_session: Session, state: State,
                       creative_id: int) -> Response:
        user = await affiliate(request, db_session)
        async with state.pool.acquire() as conn:
            row = await dashboard.creative(conn, user.affiliate_id, creative_id)
        if row is None:
            raise NotFoundException("No such creative.")
        name = re.sub(r"[^A-Za-z0-9._-]", "_", row["filename"]) or "creative"
        return Response(row["content"], media_type=row["content_type"], headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Content-Type-Options": "nosniff"})
