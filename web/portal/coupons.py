"""Operator console: cross-brand coupon offers ("a purchase at brand A of at least X
gives a coupon for reward R at brand B"). They bind two brands, so only the operator
sets them up; the purchase API grants the coupons (coalition/rewards/coupons.py)."""

from __future__ import annotations

import uuid
from zoneinfo import ZoneInfo

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.rewards.models import describe, money
from tenants import accounts
from tenants.models import User
from web.portal.common import operator, page
from web.portal.reward_forms import FormErrors, read_offer

Session = NamedDependency[AsyncSession]


async def _page(state: State, user: User, *, form: dict | None = None,
                errors: dict | None = None, status_code: int = 200) -> Template:
    async with state.pool.acquire() as conn:
        currency = await conn.fetchval("SELECT currency FROM coalition_settings")
        offers = await conn.fetch(
            "SELECT o.*, sp.name AS source_name, r.name AS reward_name, r.kind, r.value,"
            " r.currency, rp.name AS target_name,"
            " (SELECT count(*) FROM vouchers v WHERE v.offer_id = o.id) AS granted,"
            " (SELECT count(*) FROM vouchers v WHERE v.offer_id = o.id"
            "   AND v.status = 'used') AS used"
            " FROM coupon_offers o JOIN partners sp ON sp.id = o.source_partner_id"
            " JOIN rewards r ON r.id = o.reward_id JOIN partners rp ON rp.id = r.partner_id"
            " ORDER BY o.active DESC, o.created_at DESC")
        partners = await conn.fetch("SELECT id, name FROM partners WHERE status = 'active'"
                                    " ORDER BY name")
        rewards = await conn.fetch(
            "SELECT r.id, r.name, r.kind, r.value, r.currency, p.name AS partner_name"
            " FROM rewards r JOIN partners p ON p.id = r.partner_id"
            " WHERE r.active ORDER BY p.name, r.name")
    rows = [{**dict(o), "worth": describe(o["kind"], o["value"], o["currency"]),
             "threshold": money(o["min_total"], currency)} for o in offers]
    choices = [{"id": r["id"], "label": f"{r['partner_name']}: {r['name']} "
                f"({describe(r['kind'], r['value'], r['currency'])})"} for r in rewards]
    return page("rewards/operator_coupons.html", status_code=status_code, user=user,
                offers=rows, partners=partners, rewards=choices, currency=currency,
                form=form or {}, errors=errors or {})


class CouponPages(Controller):
    path = "/operator/coupons"
    include_in_schema = False

    @get("/")
    async def offers(self, request: Request, db_session: Session, state: State) -> Template:
        user = await operator(request, db_session)
        return await _page(state, user)

    @post("/")
    async def create(self, request: Request, db_session: Session, state: State) -> Response:
        user = await operator(request, db_session)
        form = await request.form()
        async with state.pool.acquire() as conn:
            zone = ZoneInfo(await conn.fetchval("SELECT timezone FROM coalition_settings"))
            try:
                fields = read_offer(form, zone)
                target = await conn.fetchval("SELECT partner_id FROM rewards WHERE id = $1",
                                             fields["reward_id"])
                if target is None:
                    raise FormErrors({"reward_id": "Choose one."})
                if not await conn.fetchval("SELECT 1 FROM partners WHERE id = $1",
                                           fields["source_partner_id"]):
                    raise FormErrors({"source_partner_id": "Choose one."})
                if target == fields["source_partner_id"]:
                    raise FormErrors({"reward_id": "Choose another brand's reward: a "
                                      "cross-brand coupon is used at a different brand."})
            except FormErrors as exc:
                return await _page(state, user, form=dict(form), errors=exc.errors,
                                   status_code=400)
            offer_id = await conn.fetchval(
                "INSERT INTO coupon_offers (name, source_partner_id, reward_id, min_total,"
                " starts_at, ends_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " RETURNING id", fields["name"], fields["source_partner_id"],
                fields["reward_id"], fields["min_total"], fields["starts_at"],
                fields["ends_at"], user.email)
        await accounts.audit(db_session, user, "coupon_offer.create", target=str(offer_id))
        await db_session.commit()
        return Redirect("/operator/coupons", status_code=303)

    @post("/{offer_id:uuid}/active")
    async def toggle(self, request: Request, db_session: Session, state: State,
                     offer_id: FromPath[uuid.UUID]) -> Response:
        user = await operator(request, db_session)
        active = (await request.form()).get("active") == "on"
        changed = await state.pool.fetchval(
            "UPDATE coupon_offers SET active = $2 WHERE id = $1 RETURNING id", offer_id, active)
        if changed is None:
            raise NotFoundException("No such offer.")
        await accounts.audit(db_session, user, "coupon_offer.activate" if active
                             else "coupon_offer.deactivate", target=str(offer_id))
        await db_session.commit()
        return Redirect("/operator/coupons", status_code=303)
