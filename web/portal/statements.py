"""Settlement statements in the consoles (settlement/runs.py, settlement/statements.py).

Partner: its own statements (list, detail with lines and disputes, CSV, a printable
view) and a form to dispute a line while the run is in review. The tenant role cannot
read runs, and the integrity check hashes the whole run, so the reads run on the login
role with the logged-in staff member's partner as the filter, like the API's; a
statement must first be visible through a tenant-scoped connection (row-level
security), so a filter mistake still shows nothing of another partner's.

Operator: every run, a form to draft or re-run a period, and per run the statements,
the multilateral netting, the flow matrix, lifecycle buttons and the disputes to
resolve. The CSV is at /partner/statements/{id}/csv (a route cannot end in `.csv`
after a path parameter in Litestar)."""

from __future__ import annotations

import asyncpg
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.errors import DomainError
from settlement import runs
from settlement import statements as service
from settlement.collect import collect_run
from tenants import accounts
from tenants.models import User
from tenants.scope import tenant_connection
from web.portal.common import operator, page, row_id
from web.portal.console import provide_console_session, staff

Session = NamedDependency[AsyncSession]


async def _integrity(pool: asyncpg.Pool, rows: list[asyncpg.Record]) -> dict[int, str]:
    """ok | mismatch | not_finalized per run of the listed statements."""
    found: dict[int, str] = {}
    async with pool.acquire() as conn:
        for row in rows:
            run_id = row["run_id"]
            if run_id in found:
                continue
            if row["run_status"] in ("in_review", "draft"):
                found[run_id] = "not_finalized"
            else:
                found[run_id] = "mismatch" if await runs.verify(conn, run_id) else "ok"
    return found


def own_flow_grid(flows: list[asyncpg.Record], partner_id) -> dict:
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
    dependencies = {"db_session": Provide(provide_console_session)}

    @get("/")
    async def list_(self, request: Request, db_session: Session, state: State) -> Template:
        user = await staff(request, db_session, "settlement.view")
        async with state.pool.acquire() as conn:
            rows = await service.list_statements(conn, user.partner_id)
        return page("settlement/partner_statements.html", user=user, statements=rows,
                    integrity=await _integrity(state.pool, rows))

    async def _detail(self, state: State, user: User, statement_id: int) -> dict:
        async with tenant_connection(state.pool, user.partner_id) as conn:
            # The wall first: a statement the scoped connection cannot see is not found.
            if not await conn.fetchval("SELECT 1 FROM settlement_statements WHERE id = $1",
                                       statement_id):
                raise NotFoundException("No such statement.")
        async with state.pool.acquire() as conn:
            try:
                found = await service.get_statement(conn, statement_id, user.partner_id)
            except DomainError:
                raise NotFoundException("No such statement.") from None
            found["flows"] = await service.flow_matrix(conn, found["statement"]["run_id"],
                                                       user.partner_id)
        return found

    async def _detail_page(self, state: State, user: User, statement_id: int, *,
                           errors: dict | None = None, form: dict | None = None,
                           status_code: int = 200) -> Template:
        found = await self._detail(state, user, statement_id)
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
    async def detail(self, request: Request, db_session: Session, state: State,
                     statement_id: FromPath[int]) -> Template:
        user = await staff(request, db_session, "settlement.view")
        return await self._detail_page(state, user, statement_id)

    @get("/{statement_id:int}/csv")
    async def csv(self, request: Request, db_session: Session, state: State,
                  statement_id: FromPath[int]) -> Response:
        user = await staff(request, db_session, "settlement.view")
        found = await self._detail(state, user, statement_id)
        name = f"statement-{found['statement']['period']}-{statement_id}.csv"
        return Response(service.statement_csv(found), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @get("/{statement_id:int}/print")
    async def printable(self, request: Request, db_session: Session, state: State,
                        statement_id: FromPath[int]) -> Template:
        user = await staff(request, db_session, "settlement.view")
        found = await self._detail(state, user, statement_id)
        return page("settlement/statement_print.html", user=user, s=found["statement"],
                    lines=found["lines"], disputes=found["disputes"],
                    integrity=found["integrity"])

    @post("/{statement_id:int}/disputes")
    async def dispute(self, request: Request, db_session: Session, state: State,
                      statement_id: FromPath[int]) -> Response:
        user = await staff(request, db_session, "settlement.manage")
        form = dict(await request.form())
        await self._detail(state, user, statement_id)      # 404 unless the partner's own
        raw = str(form.get("line_id") or "").strip()
        try:
            if not raw.isdigit():
                raise DomainError("invalid-line", "Line required",
                                  "Choose the line you dispute.", field="line_id")
            async with state.pool.acquire() as conn:
                owner = await conn.fetchval(
                    "SELECT statement_id FROM settlement_lines WHERE id = $1", int(raw))
                # A line of another statement is not found.
                line_id = int(raw) if owner == statement_id else -1
                dispute = await service.dispute_line(conn, user.partner_id, line_id,
                                                     str(form.get("comment") or ""),
                                                     user.email)
        except DomainError as exc:
            message = f"{exc.title}: {exc.detail}"
            return await self._detail_page(state, user, statement_id, form=form,
                                           errors={exc.field or "form": message},
                                           status_code=exc.status)
        await accounts.audit(db_session, user, "statement_line.dispute",
                             target=str(dispute["id"]), partner_id=user.partner_id,
                             statement_id=statement_id, line_id=dispute["line_id"])
        await db_session.commit()
        return Redirect(f"/partner/statements/{statement_id}", status_code=303)


def _int_or_none(raw: object, field: str) -> int | None:
    text = str(raw or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise DomainError("invalid-number", "Whole number required",
                          f"{field}: a whole number.", field=field) from None


class OperatorSettlementPages(Controller):
    path = "/operator/settlement"
    include_in_schema = False

    async def _runs_page(self, state: State, user: User, *, form: dict | None = None,
                         errors: dict | None = None, status_code: int = 200) -> Template:
        async with state.pool.acquire() as conn:
            rows = await runs.list_runs(conn)
            settings = await conn.fetchrow("SELECT currency, timezone FROM coalition_settings")
        suggested = runs.previous_period(clock.now(), settings["timezone"])
        return page("settlement/operator_runs.html", status_code=status_code, user=user,
                    runs=rows, currency=settings["currency"], suggested=suggested,
                    form=form or {}, errors=errors or {})

    @get("/")
    async def list_(self, request: Request, db_session: Session, state: State) -> Template:
        return await self._runs_page(state, await operator(request, db_session))

    @post("/")
    async def draft(self, request: Request, db_session: Session, state: State) -> Response:
        """Draft a period, or re-run its draft (the same call)."""
        user = await operator(request, db_session)
        form = dict(await request.form())
        try:
            window = _int_or_none(form.get("dispute_window_days"), "dispute_window_days")
            async with state.pool.acquire() as conn:
                run = await runs.run_period(conn, str(form.get("period") or "").strip(),
                                            user.email, dispute_window_days=window)
        except DomainError as exc:
            return await self._runs_page(state, user, form=form, status_code=exc.status,
                                         errors={exc.field or "form": exc.detail})
        await accounts.audit(db_session, user, "settlement_run.compute", target=str(run["id"]),
                             period=run["period"])
        await db_session.commit()
        return Redirect(f"/operator/settlement/{run['id']}", status_code=303)

    async def _run_page(self, state: State, user: User, run_id: int, *,
                        errors: dict | None = None, status_code: int = 200) -> Template:
        async with state.pool.acquire() as conn:
            try:
                run = await runs.run_by_id(conn, run_id)
            except DomainError:
                raise NotFoundException("No such run.") from None
            statements = await service.run_statements(conn, run_id)
            nets = await service.netting(conn, run_id)
            flows = await service.flow_matrix(conn, run_id)
            disputes = await service.run_disputes(conn, run_id)
            problems = await runs.verify(conn, run_id)
        issuers = sorted({f["issuer"] for f in flows})
        redeemers = sorted({f["redeemer"] for f in flows})
        cells: dict[tuple[str, str], dict[str, int]] = {}
        for f in flows:
            cell = cells.setdefault((f["issuer"], f["redeemer"]), {"points": 0, "value": 0})
            cell["points"] += f["points"]
            cell["value"] += f["value"]
        return page("settlement/operator_run.html", status_code=status_code, user=user,
                    run=run, statements=statements, netting=nets, flows=flows,
                    issuers=issuers, redeemers=redeemers, cells=cells, disputes=disputes,
                    problems=problems, errors=errors or {},
                    max_adjustment=service.MAX_ADJUSTMENT)

    @get("/{run_id:int}")
    async def run(self, request: Request, db_session: Session, state: State,
                  run_id: FromPath[int]) -> Template:
        return await self._run_page(state, await operator(request, db_session), run_id)

    @post("/{run_id:int}")
    async def lifecycle(self, request: Request, db_session: Session, state: State,
                        run_id: FromPath[int]) -> Response:
        """One form per button; `action` is rerun, review, reopen, finalize, collect
        (invoice and pay out, settlement/collect.py) or close."""
        user = await operator(request, db_session)
        form = dict(await request.form())
        action = str(form.get("action") or "")
        try:
            async with state.pool.acquire() as conn:
                try:
                    period = (await runs.run_by_id(conn, run_id))["period"]
                except DomainError:
                    raise NotFoundException("No such run.") from None
                if action == "rerun":
                    await runs.run_period(conn, period, user.email)
                elif action == "review":
                    await runs.start_review(conn, period)
                elif action == "reopen":
                    await runs.reopen(conn, period)
                elif action == "finalize":
                    await runs.finalize(conn, period, user.email, force=bool(form.get("force")))
                elif action == "close":
                    await runs.close(conn, period)
                elif action != "collect":
                    raise DomainError("invalid-action", "Unknown action",
                                      "Choose rerun, review, reopen, finalize, collect or"
                                      " close.", field="action")
            if action == "collect":
                done = await collect_run(state.stripe, period)
                if done.failed:
                    raise DomainError("collection-incomplete", "Not every partner was paid",
                                      "; ".join(done.failed), status=409, field="run")
        except DomainError as exc:
            return await self._run_page(state, user, run_id, status_code=exc.status,
                                        errors={"run": f"{exc.title}: {exc.detail}"})
        await accounts.audit(db_session, user, f"settlement_run.{action}", target=str(run_id),
                             period=period, force=bool(form.get("force")))
        await db_session.commit()
        return Redirect(f"/operator/settlement/{run_id}", status_code=303)

    @post("/{run_id:int}/disputes")
    async def resolve(self, request: Request, db_session: Session, state: State,
                      run_id: FromPath[int]) -> Response:
        """Accept (optionally with an adjustment in minor units) or reject a dispute."""
        user = await operator(request, db_session)
        form = dict(await request.form())
        key = row_id(form.get("dispute_id")) or 0
        try:
            if not await state.pool.fetchval(
                    "SELECT 1 FROM settlement_disputes WHERE id = $1 AND run_id = $2",
                    key, run_id):
                raise NotFoundException("No such dispute in this run.")
            decision = form.get("decision")
            if decision not in ("accept", "reject"):
                # Not "anything but accept rejects": a decision is one of the two buttons.
                raise DomainError("invalid-decision", "Accept or reject",
                                  "The decision is accept or reject.", status=400,
                                  field="decision")
            adjustment = _int_or_none(form.get("adjustment"), "adjustment")
            async with state.pool.acquire() as conn:
                row = await service.resolve_dispute(
                    conn, key, accept=decision == "accept",
                    resolution=str(form.get("resolution") or ""), actor=user.email,
                    adjustment=adjustment)
        except DomainError as exc:
            return await self._run_page(state, user, run_id, status_code=exc.status,
                                        errors={key: f"{exc.field or 'form'}: {exc.detail}"})
        await accounts.audit(db_session, user, "settlement_dispute.resolve", target=str(key),
                             partner_id=row["partner_id"], status=row["status"],
                             adjustment=adjustment)
        await db_session.commit()
        return Redirect(f"/operator/settlement/{run_id}", status_code=303)
