"""Affiliate commissions under review, for the partner console (partner.py, its own
commissions, tenant-scoped) and the operator (operator.py, every partner's): the list
with filters (status, affiliate; the operator also by partner), and the decision on a
fraud hold: release (back to pending, or approved if its hold period has passed) or
reject."""

from __future__ import annotations

import uuid

from litestar.exceptions import NotFoundException
from litestar.response import Template

from coalition.affiliates import queries, service
from coalition.affiliates.models import COMMISSION_STATUSES
from coalition.uow import Runner
from tenants.models import User
from web.portal.common import page


def parse_uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


async def listing(runner: Runner, user: User, base: str, partner_id: uuid.UUID | None,
                  status: str | None, affiliate: str | None, partners: list | None = None
                  ) -> Template:
    status = status if status in COMMISSION_STATUSES else None
    found = await runner.run(queries.commissions_to_review, partner_id, status,
                             parse_uuid(affiliate))
    return page("affiliates/review.html", user=user, base=base, rows=found.rows,
                statuses=COMMISSION_STATUSES, affiliates=found.affiliates, partners=partners,
                chosen={"status": status or "", "affiliate": affiliate or "",
                        "partner": str(partner_id) if partner_id else ""})


async def decide(runner: Runner, commission_id: int, release: bool,
                 partner_id: uuid.UUID | None) -> None:
    if await runner.run(service.decide_commission, commission_id, release,
                        partner_id) is None:
        raise NotFoundException("No such held commission.")
