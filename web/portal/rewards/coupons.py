"""Operator console: cross-brand coupon offers ("a purchase at brand A of at least X
gives a coupon for reward R at brand B"). They bind two brands, so only the operator
sets them up; the purchase API grants the coupons (coalition/rewards/coupons.py)."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template

from coalition.errors import DomainError, NotFound
from coalition.rewards.offers import (
    OfferInput,
    coupon_offers,
    create_coupon_offer,
    set_coupon_offer_active,
)
from coalition.settings import current_settings
from coalition.uow import Database
from tenants.models import User
from web.portal.common import acting, operator, page
from web.portal.rewards.forms import FormErrors, read_offer


async def _page(db: Database, user: User, *, form: dict | None = None,
                errors: dict | None = None, status_code: int = 200) -> Template:
    shown = await acting(db, user).run(coupon_offers)
    return page("rewards/operator_coupons.html", status_code=status_code, user=user,
                offers=shown.offers, partners=shown.partners, rewards=shown.rewards,
                currency=shown.currency, form=form or {}, errors=errors or {})


class CouponPages(Controller):
    path = "/operator/coupons"
    include_in_schema = False

    @get("/")
    async def offers(self, request: Request, db: Database) -> Template:
        user = await operator(request, db)
        return await _page(db, user)

    @post("/")
    async def create(self, request: Request, db: Database) -> Response:
        user = await operator(request, db)
        form = await request.form()
        runner = acting(db, user)
        try:
            fields = read_offer(form, (await runner.run(current_settings)).zone)
            await runner.run(create_coupon_offer, OfferInput(**fields))
        except FormErrors as exc:
            return await _page(db, user, form=dict(form), errors=exc.errors, status_code=400)
        except DomainError as exc:
            return await _page(db, user, form=dict(form), errors={exc.field: exc.detail},
                               status_code=400)
        return Redirect("/operator/coupons", status_code=303)

    @post("/{offer_id:uuid}/active")
    async def toggle(self, request: Request, db: Database,
                     offer_id: FromPath[uuid.UUID]) -> Response:
        user = await operator(request, db)
        active = (await request.form()).get("active") == "on"
        try:
            await acting(db, user).run(set_coupon_offer_active, offer_id, active)
        except NotFound:
            raise NotFoundException("No such offer.") from None
        return Redirect("/operator/coupons", status_code=303)
