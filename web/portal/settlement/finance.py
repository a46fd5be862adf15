"""Operator finance pages: a run's three-way reconciliation (/operator/reconciliation)
and the points liability, breakage and margin (/operator/liability, with a CSV)."""

from __future__ import annotations

from litestar import Controller, Request, Response, get
from litestar.response import Template

from coalition.errors import DomainError
from coalition.uow import Database
from settlement import liability, queries
from web.portal.common import acting, operator, page
from web.portal.settlement.payments import money

BAR_WIDTH = 300   # pixels of the widest bar in the monthly chart


class OperatorFinancePages(Controller):
    path = "/operator"
    include_in_schema = False

    @get("/reconciliation")
    async def reconciliation(self, request: Request, db: Database,
                             period: str | None = None) -> Template:
        user = await operator(request, db)
        all_runs = await acting(db, user).run(queries.all_runs)
        if not period:
            return page("settlement/operator_reconciliation.html", user=user,
                        runs=all_runs, period="", run=None, found=[])
        try:
            run, found = await acting(db, user).run(queries.reconciliation, period)
        except DomainError as exc:
            return page("settlement/operator_reconciliation.html",
                        status_code=exc.status, user=user, runs=all_runs,
                        period=period, run=None, found=[],
                        error=f"{exc.field}: {exc.detail}")
        return page("settlement/operator_reconciliation.html", user=user, runs=all_runs,
                    period=period, run=run, found=found)

    @get("/liability")
    async def liability_page(self, request: Request, db: Database) -> Template:
        user = await operator(request, db)
        report = await acting(db, user).run(queries.liability_report)
        rows, by_month = report.outstanding, report.months
        # Bars scaled to the largest absolute monthly figure (integers, no float money:
        # only the pixel width is a ratio).
        peak = max([abs(v) for m in by_month
                    for v in (m.spread, m.breakage_margin, m.fees, m.margin)]
                   or [0]) or 1
        return page("settlement/operator_liability.html", user=user, rows=rows,
                    months=by_month, currency=report.currency, money=money,
                    bar=lambda v: abs(v) * BAR_WIDTH // peak,
                    total_points=sum(r.points for r in rows),
                    total_value=sum(r.value for r in rows))

    @get("/liability.csv")
    async def liability_csv(self, request: Request, db: Database) -> Response:
        user = await operator(request, db)
        report = await acting(db, user).run(queries.liability_report)
        body = liability.report_csv(report.currency, report.outstanding, report.months)
        return Response(body, media_type="text/csv", headers={
            "Content-Disposition": 'attachment; filename="liability.csv"'})


ROUTES = [OperatorFinancePages]
