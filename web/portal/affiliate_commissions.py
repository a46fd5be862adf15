"""Affiliate commissions in the partner console (`/partner/affiliates/commissions`) and
for the operator (`/operator/affiliates/commissions`): the list with filters (status,
affiliate; the operator also by partner), and the decision on a fraud hold: release
(back to pending, or approved if its hold period has passed) or reject. The partner's
page runs in its tenant-scoped session, so row-level security keeps other partners'
commissions out even if a filter were forgotten."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.affiliates import commissions
from coalition.affiliates.models import COMMISSION_STATUSES
from tenants import accounts
from tenants.models import User
from web.conversions import session_connection
from web.portal.common import operator, page
from web.portal.console import provide_console_session, staff

Session = NamedDependency[AsyncSession]

_LIST = """
SELECT c.id, c.kind, c.order_id, c.amount_minor, c.sale_minor, c.refunded_minor,
       c.currency, c.status, c.fraud_reasons, c.explanation, c.occurred_at, c.hold_until,
       c.decided_at, c.decided_by, c.reverses_id, a.name AS affiliate, a.id AS affiliate_id,
       p.name AS program, pa.name AS partner
  FROM affiliate_commissions c JOIN affiliates a ON a.id = c.affiliate_id
  JOIN affiliate_programs p ON p.id = c.program_id JOIN partners pa ON pa.id = c.partner_id
 WHERE (CAST(:partner AS uuid) IS NULL OR c.partner_id = :partner)
   AND (CAST(:status AS text) IS NULL OR c.status = :status)
   AND (CAST(:affiliate AS uuid) IS NULL OR c.affiliate_id = :affiliate)
 ORDER BY (c.status = 'hold') DESC, c.occurred_at DESC, c.id DESC LIMIT 200
"""

_AFFILIATES = """
SELECT DISTINCT a.id, a.name FROM affiliate_commissions c
  JOIN affiliates a ON a.id = c.affiliate_id
 WHERE CAST(:partner AS uuid) IS NULL OR c.partner_id = :partner ORDER BY a.name
"""


def _uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


async def _listing(db_session: AsyncSession, user: User, base: str,
                   partner_id: uuid.UUID | None, status: str | None,
                   affiliate: str | None, partners: list | None = None) -> Template:
    status = status if status in COMMISSION_STATUSES else None
    args = {"partner": partner_id, "status": status, "affiliate": _uuid(affiliate)}
    rows = (await db_session.execute(text(_LIST), args)).mappings().all()
    choices = (await db_session.execute(text(_AFFILIATES), {"partner": partner_id})
               ).mappings().all()
    return page("affiliate_commissions.html", user=user, base=base, rows=rows,
                statuses=COMMISSION_STATUSES, affiliates=choices, partners=partners,
                chosen={"status": status or "", "affiliate": affiliate or "",
                        "partner": str(partner_id) if partner_id else ""})


async def _decide(db_session: AsyncSession, user: User, commission_id: int, release: bool,
                  partner_id: uuid.UUID | None) -> None:
    conn = await session_connection(db_session)
    status = await commissions.decide(conn, commission_id, release=release, actor=user.email,
                                      now=clock.now(), partner_id=partner_id)
    if status is None:
        raise NotFoundException("No such held commission.")
    await accounts.audit(db_session, user, "affiliate_commission.release" if release
                         else "affiliate_commission.reject", target=str(commission_id),
                         partner_id=partner_id, status=status)
    await db_session.commit()


class PartnerCommissionPages(Controller):
    path = "/partner/affiliates/commissions"
    include_in_schema = False
    dependencies = {"db_session": Provide(provide_console_session)}

    @get("/")
    async def list_commissions(self, request: Request, db_session: Session,
                               status: FromQuery[str | None] = None,
                               affiliate: FromQuery[str | None] = None) -> Template:
        user = await staff(request, db_session, "affiliates.review")
        return await _listing(db_session, user, self.path, user.partner_id, status,
                              affiliate)

    @post("/{commission_id:int}/release")
    async def release(self, request: Request, db_session: Session,
                      commission_id: FromPath[int]) -> Response:
        user = await staff(request, db_session, "affiliates.review")
        await _decide(db_session, user, commission_id, True, user.partner_id)
        return Redirect(f"{self.path}?status=hold", status_code=303)

    @post("/{commission_id:int}/reject")
    async def reject(self, request: Request, db_session: Session,
                     commission_id: FromPath[int]) -> Response:
        user = await staff(request, db_session, "affiliates.review")
        await _decide(db_session, user, commission_id, False, user.partner_id)
        return Redirect(f"{self.path}?status=hold", status_code=303)


class OperatorCommissionPages(Controller):
    path = "/operator/affiliates/commissions"
    include_in_schema = False

    @get("/")
    async def list_commissions(self, request: Request, db_session: Session,
                               status: FromQuery[str | None] = None,
                               affiliate: FromQuery[str | None] = None,
                               partner: FromQuery[str | None] = None) -> Template:
        user = await operator(request, db_session)
        partners = (await db_session.execute(text(
            "SELECT id, name FROM partners ORDER BY name"))).mappings().all()
        return await _listing(db_session, user, self.path, _uuid(partner), status,
                              affiliate, partners)

    @post("/{commission_id:int}/release")
    async def release(self, request: Request, db_session: Session,
                      commission_id: FromPath[int]) -> Response:
        user = await operator(request, db_session)
        await _decide(db_session, user, commission_id, True, None)
        return Redirect(f"{self.path}?status=hold", status_code=303)

    @post("/{commission_id:int}/reject")
    async def reject(self, request: Request, db_session: Session,
                     commission_id: FromPath[int]) -> Response:
        user = await operator(request, db_session)
        await _decide(db_session, user, commission_id, False, None)
        return Redirect(f"{self.path}?status=hold", status_code=303)
