"""Settlement statements in the consoles (settlement/runs.py, settlement/statements.py).

Partner: its own statements (list, detail with lines and disputes, CSV, a printable
view) and a form to dispute a line while the run is in review. The tenant role cannot
read runs, and the integrity check hashes the whole run, so the reads run on the login
role with the logged-in staff member's partner as the filter, like the API's; a
statement must first be visible through a tenant-scoped Tx (row-level
security), so a filter mistake still shows nothing of another partner's.

Operator: every run, a form to draft or re-run a period, and per run the statements,
the multilateral netting, the flow matrix, lifecycle buttons and the disputes to
resolve. The CSV is at /partner/statements/{id}/csv (a route cannot end in `.csv`
after a path parameter in Litestar)."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template

from coalition import clock
from coalition.errors import DomainError, NotFound
from coalition.uow import Database
from settlement import actions, queries
from settlement import statements as service
from settlement.collect import collect_run
from tenants.models import User
from web.portal.common import acting, operator, page, row_id
from web.portal.partners.console import staff


def own_flow_grid(flows: list, partner_id) -> dict:
    """The partner's own row and column of the flow matrix as a grid: its row (its
    points spent at each brand) first, then one row per brand whose points were spent at
    it, with values in its own column only; every other cell is another pair of brands
    and stays blank (`flows` holds only the partner's row and column anyway). Cells sum
    the fundings, as the operator's matrix does. Keys are partner ids (None: the
    coalition), names are for display."""
    names: dict = {}
    cells: dict[tuple, dict[str, int]] = {}
    for f in flows:
        names[f["issuer_partner_id"]] = f["issuer"]
        names[f["redeemer_partner_id"]] = f["redeemer"]
        cell = cells.setdefault((f["issuer_partner_id"], f["redeemer_partner_id"]),
                                {"points": 0, "value": 0})
        cell["points"] += f["points"]
        cell["value"] += f["value"]
    def by_name(key) -> tuple[str, str]:
        return names[key], str(key)

    spent_at = {r for i, r in cells if i == partner_id and r != partner_id}
    issued_by = {i for i, r in cells if r == partner_id and i != partner_id}
    columns = [partner_id, *sorted(spent_at, key=by_name)]
    rows = [partner_id, *sorted(issued_by, key=by_name)]

    def total(keys: list[tuple]) -> dict[str, int]:
        found = [cells[k] for k in keys if k in cells]
        return {"points": sum(c["points"] for c in found),
                "value": sum(c["value"] for c in found)}

    return {"own": partner_id, "names": names, "rows": rows, "columns": columns,
            "cells": cells,
            "row_total": total([(partner_id, c) for c in columns]),
            "column_total": total([(r, partner_id) for r in rows])}


class PartnerStatementPages(Controller):
    path = "/partner/statements"
    include_in_schema = False

    @get("/")
    async def list_(self, request: Request, db: Database) -> Template:
        user = await staff(request, db, "settlement.view")
        rows, integrity = await acting(db, user).run(queries.own_statements_checked)
        return page("settlement/partner_statements.html", user=user, statements=rows,
                    integrity=integrity)

    async def _detail(self, db: Database, user: User, statement_id: int) -> dict:
        # The wall first: a statement the scoped Tx cannot see is not found.
        if not await acting(db, user, scoped=True).run(queries.statement_visible,
                                                       statement_id):
            raise NotFoundException("No such statement.")
        try:
            return await acting(db, user).run(queries.own_statement, statement_id, flows=True)
        except DomainError:
            raise NotFoundException("No such statement.") from None

    async def _detail_page(self, db: Database, user: User, statement_id: int, *,
                           errors: dict | None = None, form: dict | None = None,
                           status_code: int = 200) -> Template:
        found = await self._detail(db, user, statement_id)
        s = found["statement"]
        open_lines = {d["line_id"] for d in found["disputes"] if d["status"] == "open"}
        can_dispute = (s["run_status"] == "in_review" and s["dispute_deadline"] is not None
                       and s["dispute_deadline"] > clock.now()
                       and user.role in ("owner", "admin"))
        return page("settlement/partner_statement.html", status_code=status_code, user=user,
                    s=s, lines=found["lines"], disputes=found["disputes"],
                    integrity=found["integrity"], flows=found["flows"],
                    grid=own_flow_grid(found["flows"], user.partner_id),
                    open_lines=open_lines, can_dispute=can_dispute,
                    errors=errors or {}, form=form or {})

    @get("/{statement_id:int}")
    async def detail(self, request: Request, db: Database,
                     statement_id: FromPath[int]) -> Template:
        user = await staff(request, db, "settlement.view")
        return await self._detail_page(db, user, statement_id)

    @get("/{statement_id:int}/csv")
    async def csv(self, request: Request, db: Database,
                  statement_id: FromPath[int]) -> Response:
        user = await staff(request, db, "settlement.view")
        found = await self._detail(db, user, statement_id)
        name = f"statement-{found['statement']['period']}-{statement_id}.csv"
        return Response(service.statement_csv(found), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @get("/{statement_id:int}/print")
    async def printable(self, request: Request, db: Database,
                        statement_id: FromPath[int]) -> Template:
        user = await staff(request, db, "settlement.view")
        found = await self._detail(db, user, statement_id)
        return page("settlement/statement_print.html", user=user, s=found["statement"],
                    lines=found["lines"], disputes=found["disputes"],
                    integrity=found["integrity"])

    @post("/{statement_id:int}/disputes")
    async def dispute(self, request: Request, db: Database,
                      statement_id: FromPath[int]) -> Response:
        user = await staff(request, db, "settlement.manage")
        form = dict(await request.form())
        await self._detail(db, user, statement_id)      # 404 unless the partner's own
        raw = str(form.get("line_id") or "").strip()
        try:
            if not raw.isdigit():
                raise DomainError("invalid-line", "Line required",
                                  "Choose the line you dispute.", field="line_id")
            await acting(db, user).run(actions.dispute_line, statement_id, int(raw),
                                       str(form.get("comment") or ""))
        except DomainError as exc:
            message = f"{exc.title}: {exc.detail}"
            return await self._detail_page(db, user, statement_id, form=form,
                                           errors={exc.field or "form": message},
                                           status_code=exc.status)
        return Redirect(f"/partner/statements/{statement_id}", status_code=303)


class OperatorSettlementPages(Controller):
    path = "/operator/settlement"
    include_in_schema = False

    async def _runs_page(self, db: Database, user: User, *, form: dict | None = None,
                         errors: dict | None = None, status_code: int = 200) -> Template:
        found = await acting(db, user).run(queries.runs_overview)
        return page("settlement/operator_runs.html", status_code=status_code, user=user,
                    runs=found.runs, currency=found.currency, suggested=found.suggested,
                    form=form or {}, errors=errors or {})

    @get("/")
    async def list_(self, request: Request, db: Database) -> Template:
        return await self._runs_page(db, await operator(request, db))

    @post("/")
    async def draft(self, request: Request, db: Database) -> Response:
        """Draft a period, or re-run its draft (the same call)."""
        user = await operator(request, db)
        form = dict(await request.form())
        try:
            run = await acting(db, user).run(actions.draft_run, str(form.get("period") or ""),
                                             form.get("dispute_window_days"))
        except DomainError as exc:
            return await self._runs_page(db, user, form=form, status_code=exc.status,
                                         errors={exc.field or "form": exc.detail})
        return Redirect(f"/operator/settlement/{run['id']}", status_code=303)

    async def _run_page(self, db: Database, user: User, run_id: int, *,
                        errors: dict | None = None, status_code: int = 200) -> Template:
        try:
            found = await acting(db, user).run(queries.run_overview, run_id)
        except DomainError:
            raise NotFoundException("No such run.") from None
        flows = found.flows
        issuers = sorted({f["issuer"] for f in flows})
        redeemers = sorted({f["redeemer"] for f in flows})
        cells: dict[tuple[str, str], dict[str, int]] = {}
        for f in flows:
            cell = cells.setdefault((f["issuer"], f["redeemer"]), {"points": 0, "value": 0})
            cell["points"] += f["points"]
            cell["value"] += f["value"]
        return page("settlement/operator_run.html", status_code=status_code, user=user,
                    run=found.run, statements=found.statements, netting=found.netting,
                    flows=flows, issuers=issuers, redeemers=redeemers, cells=cells,
                    disputes=found.disputes, problems=found.problems, errors=errors or {},
                    max_adjustment=service.MAX_ADJUSTMENT)

    @get("/{run_id:int}")
    async def run(self, request: Request, db: Database, run_id: FromPath[int]) -> Template:
        return await self._run_page(db, await operator(request, db), run_id)

    @post("/{run_id:int}")
    async def lifecycle(self, request: Request, db: Database, state: State,
                        run_id: FromPath[int]) -> Response:
        """One form per button; `action` is rerun, review, reopen, finalize, collect
        (invoice and pay out, settlement/collect.py) or close."""
        user = await operator(request, db)
        form = dict(await request.form())
        action = str(form.get("action") or "")
        force = bool(form.get("force"))
        runner = acting(db, user)
        try:
            if action != "collect":
                await runner.run(actions.move_run, run_id, action, force=force)
            else:
                try:
                    period = (await runner.run(queries.run_by_id, run_id))["period"]
                except DomainError:
                    raise NotFoundException("No such run.") from None
                done = await collect_run(state.stripe, period)
                if done.failed:
                    raise DomainError("collection-incomplete", "Not every partner was paid",
                                      "; ".join(done.failed), status=409, field="run")
                await runner.run(actions.record_collection, run_id, period, force=force)
        except DomainError as exc:
            return await self._run_page(db, user, run_id, status_code=exc.status,
                                        errors={"run": f"{exc.title}: {exc.detail}"})
        return Redirect(f"/operator/settlement/{run_id}", status_code=303)

    @post("/{run_id:int}/disputes")
    async def resolve(self, request: Request, db: Database, run_id: FromPath[int]
                      ) -> Response:
        """Accept (optionally with an adjustment in minor units) or reject a dispute."""
        user = await operator(request, db)
        form = dict(await request.form())
        key = row_id(form.get("dispute_id")) or 0
        try:
            await acting(db, user).run(actions.resolve_dispute, run_id, key,
                                       form.get("decision"),
                                       str(form.get("resolution") or ""),
                                       form.get("adjustment"))
        except NotFound:
            raise NotFoundException("No such dispute in this run.") from None
        except DomainError as exc:
            return await self._run_page(db, user, run_id, status_code=exc.status,
                                        errors={key: f"{exc.field or 'form'}: {exc.detail}"})
        return Redirect(f"/operator/settlement/{run_id}", status_code=303)


ROUTES = [OperatorSettlementPages, PartnerStatementPages]
