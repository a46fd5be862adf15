"""Operator finance pages: a run's three-way reconciliation (/operator/reconciliation)
and the points liability, breakage and margin (/operator/liability, with a CSV)."""

from __future__ import annotations

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.errors import DomainError
from settlement import liability, reconcile, runs
from web.portal.common import operator, page
from web.portal.payments import money

Session = NamedDependency[AsyncSession]
BAR_WIDTH = 300   # pixels of the widest bar in the monthly chart


class OperatorFinancePages(Controller):
    path = "/operator"
    include_in_schema = False

    @get("/reconciliation")
    async def reconciliation(self, request: Request, db_session: Session, state: State,
                             period: str | None = None) -> Template:
        user = await operator(request, db_session)
        async with state.pool.acquire() as conn:
            all_runs = await runs.list_runs(conn)
            if not period:
                return page("settlement/operator_reconciliation.html", user=user,
                            runs=all_runs, period="", run=None, found=[])
            try:
                run = await runs.get_run(conn, period)
                found = await reconcile.reconcile(conn, run["id"])
            except DomainError as exc:
                return page("settlement/operator_reconciliation.html",
                            status_code=exc.status, user=user, runs=all_runs,
                            period=period, run=None, found=[],
                            error=f"{exc.field}: {exc.detail}")
        return page("settlement/operator_reconciliation.html", user=user, runs=all_runs,
                    period=period, run=run, found=found)

    @get("/liability")
    async def liability_page(self, request: Request, db_session: Session, state: State
                             ) -> Template:
        user = await operator(request, db_session)
        async with state.pool.acquire() as conn:
            rows = await liability.outstanding(conn)
            by_month = await liability.months(conn)
            currency = await liability.coalition_currency(conn)
        # Bars scaled to the largest absolute monthly figure (integers, no float money:
        # only the pixel width is a ratio).
        peak = max([abs(v) for m in by_month
                    for v in (m.spread, m.breakage_margin, m.fees, m.margin)]
                   or [0]) or 1
        return page("settlement/operator_liability.html", user=user, rows=rows,
                    months=by_month, currency=currency, money=money,
                    bar=lambda v: abs(v) * BAR_WIDTH // peak,
                    total_points=sum(r.points for r in rows),
                    total_value=sum(r.value for r in rows))

    @get("/liability.csv")
    async def liability_csv(self, request: Request, db_session: Session, state: State
                            ) -> Response:
        await operator(request, db_session)
        async with state.pool.acquire() as conn:
            body = liability.report_csv(await liability.coalition_currency(conn),
                                        await liability.outstanding(conn),
                                        await liability.months(conn))
        return Response(body, media_type="text/csv", headers={
            "Content-Disposition": 'attachment; filename="liability.csv"'})
