"""Settlement statements as a partner's server reads them, and line disputes.

A partner sees its own statements once their run is in review; amounts are integers in
minor units of the statement currency (positive: the partner owes the operator)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from msgspec import Meta, Struct

from coalition.idempotency import Once, idempotent
from coalition.uow import Database
from settlement import actions, queries
from settlement import statements as service
from tenants.auth import PartnerPrincipal
from web.api.schemas import IdempotencyHeader, RowId, strict_body
from web.idempotency import request_hash, stored_response
from web.security import as_client, requires_scope


class StatementSummary(Struct):
    id: int
    period: str
    cycle: str
    run_status: str
    currency: str
    net: int
    total_debit: int
    total_credit: int
    line_count: int
    late_lines: int
    payment_status: str
    dispute_deadline: datetime | None


class StatementPage(Struct):
    items: list[StatementSummary]


class LineOut(Struct):
    id: int
    line_no: int
    type: str
    description: str
    late: bool
    points: int | None
    unit_price: str | None      # exact decimal, minor units of the coalition currency
    fx_rate: str | None
    amount_exact: str
    amount: int


class DisputeOut(Struct):
    id: int
    line_id: int | None
    statement_id: int | None
    status: str
    comment: str
    line_summary: str
    created_at: datetime
    resolution: str | None
    resolved_at: datetime | None
    adjustment_id: int | None


class StatementOut(StatementSummary, kw_only=True):
    fx_rate: str | None
    integrity: str               # ok | mismatch | not_finalized
    lines: list[LineOut]
    disputes: list[DisputeOut]


class DisputeLine(Struct, forbid_unknown_fields=True):
    comment: Annotated[str, Meta(min_length=1, max_length=2000)]


def _summary(row) -> dict:
    return {k: row[k] for k in StatementSummary.__struct_fields__}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


class StatementController(Controller):
    path = "/statements"
    tags = ["Settlement"]
    guards = [requires_scope]

    @get("/", opt={"scopes": ["settlement:read"]}, summary="Your settlement statements")
    async def list_(self, request: Request, db: Database) -> StatementPage:
        rows = await as_client(db, request.user).run(queries.own_statements)
        return StatementPage(items=[StatementSummary(**_summary(r)) for r in rows])

    @get("/{statement_id:int}", opt={"scopes": ["settlement:read"]},
         summary="A statement with its lines",
         description="`integrity` is `mismatch` when the finalized run's stored content "
         "hash no longer matches its lines (tell the operator).")
    async def detail(self, request: Request, db: Database, statement_id: RowId) -> StatementOut:
        found = await as_client(db, request.user).run(queries.own_statement, statement_id)
        s = found["statement"]
        return StatementOut(
            **_summary(s), fx_rate=_text(s["fx_rate"]), integrity=found["integrity"],
            lines=[LineOut(id=r["id"], line_no=r["line_no"], type=r["type"],
                           description=r["description"], late=r["late"], points=r["points"],
                           unit_price=_text(r["unit_price"]), fx_rate=_text(r["fx_rate"]),
                           amount_exact=str(r["amount_exact"]), amount=r["amount"])
                   for r in found["lines"]],
            disputes=[DisputeOut(**service.dispute_json(d)) for d in found["disputes"]])

    @get("/{statement_id:int}/csv", opt={"scopes": ["settlement:read"]},
         summary="A statement's lines as CSV", media_type="text/csv")
    async def csv(self, request: Request, db: Database, statement_id: RowId) -> Response:
        found = await as_client(db, request.user).run(queries.own_statement, statement_id)
        name = f"statement-{found['statement']['period']}-{statement_id}.csv"
        return Response(service.statement_csv(found), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @post("/{statement_id:int}/lines/{line_id:int}/disputes",
          opt={"scopes": ["settlement:dispute"]}, status_code=201,
          responses={201: ResponseSpec(data_container=DisputeOut, description="Disputed")},
          summary="Dispute a statement line",
          description="While the run is in review and before its dispute deadline. "
          "Refusals: 404 line-not-found, 409 dispute-window-closed, 409 "
          "dispute-already-open.")
    async def dispute(self, request: Request, db: Database, statement_id: RowId, line_id: RowId,
                      data: JSONBody[DisputeLine], idempotency_key: IdempotencyHeader
                      ) -> Response:
        principal: PartnerPrincipal = request.user
        data = await strict_body(request, DisputeLine)
        result = await as_client(db, principal).run(
            idempotent, Once(idempotency_key, request_hash(request, data)),
            actions.dispute_line, statement_id, line_id, data.comment,
            present=lambda found: (201, msgspec.to_builtins(DisputeOut(**found))))
        return stored_response(result.status, result.body)
