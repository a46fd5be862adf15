"""Earning rules in the consoles: list, editor with version history, live simulation
preview against a sample basket, and the campaign calendar.

Partner console (/partner/rules): the partner's own rules, editable by rules.manage
(owner, admin) and visible to rules.view (analyst too); the coalition's rules are shown
read-only, since they apply at every partner. Operator console (/operator/rules): the
coalition-wide rules (partner_id NULL). Both run the same code through a `Scope`.

The preview evaluates the rules exactly as a posting would (coalition/rules/engine.py),
including the rule being edited as drafted in the form, unsaved. web/static/rules.js
posts the form on every change with the header X-Preview: fragment and swaps in the
returned HTML; without JavaScript the Preview button posts the same form and gets the
whole page back with the result.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template

from coalition import clock
from coalition.commerce import CHANNELS
from coalition.errors import DomainError
from coalition.rules import console, queries, service
from coalition.rules.engine import (
    FREQUENCIES,
    Basket,
    Line,
    RuleVersion,
    Shopper,
    describe,
    evaluate,
    money,
)
from coalition.rules.models import EarningRule
from coalition.rules.validation import TYPE_LABELS, form_of, parse_money, spec_from_form
from coalition.settings import current_settings
from coalition.uow import Database, Runner
from tenants.models import User
from web.portal.common import acting, operator, page
from web.portal.partners.console import staff

SAMPLE_LINES = 5
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass
class Scope:
    user: User
    partner_id: uuid.UUID | None      # None: the operator, managing coalition rules
    base: str
    can_manage: bool
    tz: ZoneInfo
    currency: str
    point_value: Fraction
    runner: Runner                    # the user's Tx: a partner's under row-level security

    def owns(self, rule: EarningRule) -> bool:
        return rule.partner_id == self.partner_id


async def _scope(user: User, runner: Runner, base: str, can_manage: bool) -> Scope:
    settings = await runner.run(current_settings)
    return Scope(user, user.partner_id, base, can_manage, settings.zone, settings.currency,
                 settings.point_value, runner)


async def partner_scope(request: Request, db: Database, manage: bool) -> Scope:
    user = await staff(request, db, "rules.manage" if manage else "rules.view")
    return await _scope(user, acting(db, user, scoped=True), "/partner/rules",
                        user.role in ("owner", "admin"))


async def operator_scope(request: Request, db: Database, manage: bool) -> Scope:
    user = await operator(request, db)
    return await _scope(user, acting(db, user), "/operator/rules", True)


def _context(scope: Scope, **extra: Any) -> dict[str, Any]:
    return {"user": scope.user, "base": scope.base, "can_manage": scope.can_manage,
            "operator": scope.partner_id is None, "types": TYPE_LABELS,
            "channels": CHANNELS, "frequencies": FREQUENCIES, "currency": scope.currency,
            "months": MONTHS, **extra}


def window_text(version: Any, tz: ZoneInfo) -> str:
    """The active window as dates in the coalition timezone, the end date inclusive."""
    if version.starts_at is None and version.ends_at is None:
        return "always"
    first = version.starts_at.astimezone(tz).date().isoformat() if version.starts_at else "…"
    last = ((version.ends_at - timedelta(microseconds=1)).astimezone(tz).date().isoformat()
            if version.ends_at else "…")
    return f"{first} to {last}"


# --- pages -----------------------------------------------------------------------------------

# The rules list shows what each rule awarded over this many days.
PERFORMANCE_DAYS = 30


async def list_page(scope: Scope) -> Template:
    listed, awarded = await scope.runner.run(
        queries.rules_with_performance,
        clock.now().astimezone(scope.tz) - timedelta(days=PERFORMANCE_DAYS))
    rows = [(rule, version, describe(service.from_record(version), scope.currency),
             window_text(version, scope.tz), awarded.get(rule.id, service.Performance()))
            for rule, version in listed]
    return page("rules/rules.html", **_context(scope, rows=rows, tz=scope.tz,
                                         performance_days=PERFORMANCE_DAYS))


def _blank_basket(scope: Scope) -> dict[str, Any]:
    return {"channel": "store", "tier": "", "first_purchase": False,
            "occurred_on": clock.today(scope.tz).isoformat(),
            "lines": [{"sku": "SKU-1", "category": "general", "quantity": "1",
                       "unit_price": "120.00"}] + [{"sku": "", "category": "", "quantity": "",
                                                    "unit_price": ""}] * (SAMPLE_LINES - 1)}


async def editor_page(scope: Scope, rule: EarningRule | None,
                      form: dict[str, Any] | None = None, error: DomainError | None = None,
                      basket: dict[str, Any] | None = None, result: Any = None,
                      status_code: int = 200) -> Template:
    history = await scope.runner.run(queries.rule_versions, rule) if rule is not None else []
    if form is None:
        form = form_of(history[0], scope.tz) if history else {
            "type": "per_amount", "funding": "coalition" if scope.partner_id is None
            else "partner", "priority": 100, "mode": "multiplier", "frequency": "unlimited",
            "channels": []}
    editable = scope.can_manage and (rule is None or (scope.owns(rule)
                                                     and rule.archived_at is None))
    described = [(v, describe(service.from_record(v), scope.currency),
                  window_text(v, scope.tz)) for v in history]
    return page("rules/rule_edit.html", status_code=status_code, **_context(
        scope, rule=rule, form=form, error=error, history=described, editable=editable,
        basket=basket or _blank_basket(scope), result=result, tz=scope.tz))


async def save_rule(request: Request, scope: Scope, rule_id: uuid.UUID | None) -> Response:
    raw = await request.form()
    form = {**dict(raw), "channels": raw.getall("channels", [])}
    rule = await _owned(scope, rule_id) if rule_id else None
    try:
        spec = spec_from_form(raw, scope.tz)
        rule = await scope.runner.run(console.save_rule, rule_id, spec)
    except DomainError as exc:
        # Nothing was written (the use case's Tx rolled back): the page shows the form.
        return await editor_page(scope, rule, form=form, error=exc,
                                 status_code=exc.status if exc.status < 500 else 400)
    return Redirect(f"{scope.base}/{rule.id}")


async def _owned(scope: Scope, rule_id: uuid.UUID) -> EarningRule:
    rule = await scope.runner.run(queries.owned_rule, rule_id)
    if rule is None:
        raise NotFoundException("No such rule.")
    return rule


async def _visible(scope: Scope, rule_id: uuid.UUID) -> EarningRule:
    """Own rules, and for a partner the coalition's rules too (read-only)."""
    rule = await scope.runner.run(queries.visible_rule, rule_id)
    if rule is None:
        raise NotFoundException("No such rule.")
    return rule


# What the purchases API takes for a line's unit price (minor units): a sample basket is
# one the API could be sent.
MAX_UNIT_PRICE = 10**13


def _sample(form: Any, scope: Scope) -> tuple[dict[str, Any], Basket, Shopper]:
    """The sample basket as the form shows it, and as the engine takes it."""
    shown: dict[str, Any] = {
        "channel": form.get("sample_channel") or "store",
        "tier": (form.get("sample_tier") or "").strip().lower(),
        "first_purchase": form.get("sample_first_purchase") == "on",
        "occurred_on": form.get("sample_date") or clock.today(scope.tz).isoformat(),
        "lines": []}
    if shown["channel"] not in CHANNELS:
        raise DomainError("invalid-basket", "Invalid sample basket", "Unknown channel.",
                          field="sample_channel")
    skus, cats = form.getall("line_sku", []), form.getall("line_category", [])
    qtys, prices = form.getall("line_quantity", []), form.getall("line_unit_price", [])
    lines = []
    for i, sku in enumerate(skus):
        row = {"sku": sku.strip(), "category": (cats[i] if i < len(cats) else "").strip(),
               "quantity": (qtys[i] if i < len(qtys) else "").strip(),
               "unit_price": (prices[i] if i < len(prices) else "").strip()}
        shown["lines"].append(row)
        if not row["sku"] and not row["unit_price"]:
            continue
        quantity = int(row["quantity"]) if row["quantity"].isdigit() else 0
        if not row["sku"] or not 0 < quantity <= 10_000:
            raise DomainError("invalid-basket", "Invalid sample basket",
                              f"Line {i + 1} needs a SKU and a quantity from 1 to 10000.",
                              field="line_quantity")
        price = parse_money(row["unit_price"] or "0", "line_unit_price")
        if not 0 <= price <= MAX_UNIT_PRICE:
            raise DomainError("invalid-basket", "Invalid sample basket",
                              f"Line {i + 1} needs a unit price from 0 to"
                              f" {MAX_UNIT_PRICE // 100}.", field="line_unit_price")
        lines.append(Line(row["sku"], row["category"] or None, quantity, price,
                          price * quantity))
    while len(shown["lines"]) < SAMPLE_LINES:
        shown["lines"].append({"sku": "", "category": "", "quantity": "", "unit_price": ""})
    try:
        day = date.fromisoformat(shown["occurred_on"])
    except ValueError:
        raise DomainError("invalid-basket", "Invalid sample basket", "Give a date.",
                          field="sample_date") from None
    at = datetime.combine(day, time(12), scope.tz).astimezone(UTC)
    basket = Basket(at, sum(ln.amount for ln in lines), scope.currency, shown["channel"],
                    None, tuple(lines))
    shopper = Shopper(tier=shown["tier"] or None, segments=frozenset(),
                      first_purchase=shown["first_purchase"])
    return shown, basket, shopper


async def run_preview(request: Request, scope: Scope) -> Response:
    form = await request.form()
    fragment = request.headers.get("x-preview") == "fragment"
    rules: list[RuleVersion] = [service.from_record(v) for r, v in
                                await scope.runner.run(queries.rules_listed)
                                if r.archived_at is None]
    draft_form: dict[str, Any] | None = None
    rule = None
    error: DomainError | None = None
    result = None
    total = ""
    basket_shown = _blank_basket(scope)
    try:
        basket_shown, basket, shopper = _sample(form, scope)
        if form.get("type"):
            draft_form = {**dict(form), "channels": form.getall("channels", [])}
            raw_id = form.get("rule_id") or ""
            rule = await _visible(scope, uuid.UUID(raw_id)) if raw_id else None
            spec = spec_from_form(form, scope.tz)
            draft_id = rule.id if rule is not None else uuid.UUID(int=0)
            draft = RuleVersion(
                rule_id=draft_id, version=(rule.current_version + 1) if rule else 1,
                partner_id=scope.partner_id, name=f"{spec.name} (draft)", type=spec.type,
                params=spec.params, starts_at=spec.starts_at, ends_at=spec.ends_at,
                channels=frozenset(spec.channels), tiers=frozenset(spec.tiers),
                segments=frozenset(spec.segments), per_order_cap=spec.per_order_cap,
                per_member_day_cap=spec.per_member_day_cap,
                per_member_month_cap=spec.per_member_month_cap, budget=spec.budget,
                funding=spec.funding, priority=spec.priority,
                stops_later_rules=spec.stops_later_rules)
            rules = [r for r in rules if r.rule_id != draft_id] + [draft]
        result = evaluate(rules, basket, shopper, budget_left={}, point_value=scope.point_value)
        total = money(basket.total, scope.currency)
    except (DomainError, ValueError) as exc:
        error = exc if isinstance(exc, DomainError) else DomainError(
            "invalid-basket", "Invalid preview", "The rule id is not valid.", field="rule_id")
    context = _context(scope, result=result, error=error, basket=basket_shown, total=total)
    # A preview that could not run is a refusal, shown where the preview would be. Not
    # for the live fragment: the editor's script asks for it at every keystroke, while
    # the draft is still being typed, and shows the explanation it holds.
    status = 200 if error is None else error.status if error.status < 500 else 400
    if fragment:
        return page("rules/rule_preview_result.html", **context)
    if draft_form is not None:
        return await editor_page(scope, rule, form=draft_form, basket=basket_shown,
                                 result=result, error=error, status_code=status)
    return page("rules/rule_preview.html", status_code=status, **context)


async def calendar_page(scope: Scope, year: int | None) -> Template:
    year = year or clock.now().astimezone(scope.tz).year
    starts = [datetime(year, m, 1, tzinfo=scope.tz) for m in range(1, 13)]
    ends = [*starts[1:], datetime(year + 1, 1, 1, tzinfo=scope.tz)]
    rows = []
    for rule, version in await scope.runner.run(queries.rules_listed):
        if rule.archived_at is not None or (version.starts_at is None
                                            and version.ends_at is None):
            continue   # always-on rules are not campaigns
        cells = [(version.starts_at is None or version.starts_at < end)
                 and (version.ends_at is None or version.ends_at > start)
                 for start, end in zip(starts, ends, strict=True)]
        if any(cells):
            rows.append({"rule": rule, "version": version, "cells": cells,
                         "window": window_text(version, scope.tz),
                         "summary": describe(service.from_record(version), scope.currency)})
    rows.sort(key=lambda r: (r["cells"].index(True), r["version"].name))
    return page("rules/rule_calendar.html", **_context(scope, year=year, rows=rows, tz=scope.tz))


async def archive_action(scope: Scope, rule_id: uuid.UUID) -> Redirect:
    await _owned(scope, rule_id)
    rule = await scope.runner.run(console.archive_rule, rule_id)
    return Redirect(f"{scope.base}/{rule.id}")


async def show_rule(scope: Scope, rule_id: uuid.UUID) -> Template:
    return await editor_page(scope, await _visible(scope, rule_id))


# --- controllers -----------------------------------------------------------------------------

def _year(request: Request) -> int | None:
    raw = request.query_params.get("year", "")
    return int(raw) if raw.isdigit() and 2000 <= int(raw) <= 2100 else None


class PartnerRulePages(Controller):
    path = "/partner/rules"
    include_in_schema = False

    @get("/")
    async def index(self, request: Request, db: Database) -> Template:
        return await list_page(await partner_scope(request, db, False))

    @get("/new")
    async def new(self, request: Request, db: Database) -> Template:
        return await editor_page(await partner_scope(request, db, True), None)

    @post("/")
    async def create(self, request: Request, db: Database) -> Response:
        return await save_rule(request, await partner_scope(request, db, True), None)

    @get("/calendar")
    async def calendar(self, request: Request, db: Database) -> Template:
        scope = await partner_scope(request, db, False)
        return await calendar_page(scope, _year(request))

    @get("/preview")
    async def preview_page(self, request: Request, db: Database) -> Template:
        scope = await partner_scope(request, db, False)
        return page("rules/rule_preview.html", **_context(scope, basket=_blank_basket(scope),
                                                    result=None, error=None))

    @post("/preview")
    async def preview(self, request: Request, db: Database) -> Response:
        return await run_preview(request, await partner_scope(request, db, False))

    @get("/{rule_id:uuid}")
    async def show(self, request: Request, db: Database,
                   rule_id: FromPath[uuid.UUID]) -> Template:
        return await show_rule(await partner_scope(request, db, False), rule_id)

    @post("/{rule_id:uuid}")
    async def edit(self, request: Request, db: Database,
                   rule_id: FromPath[uuid.UUID]) -> Response:
        return await save_rule(request, await partner_scope(request, db, True), rule_id)

    @post("/{rule_id:uuid}/archive")
    async def archive(self, request: Request, db: Database,
                      rule_id: FromPath[uuid.UUID]) -> Redirect:
        return await archive_action(await partner_scope(request, db, True), rule_id)


class OperatorRulePages(Controller):
    path = "/operator/rules"
    include_in_schema = False

    @get("/")
    async def index(self, request: Request, db: Database) -> Template:
        return await list_page(await operator_scope(request, db, False))

    @get("/new")
    async def new(self, request: Request, db: Database) -> Template:
        return await editor_page(await operator_scope(request, db, True), None)

    @post("/")
    async def create(self, request: Request, db: Database) -> Response:
        return await save_rule(request, await operator_scope(request, db, True), None)

    @get("/calendar")
    async def calendar(self, request: Request, db: Database) -> Template:
        scope = await operator_scope(request, db, False)
        return await calendar_page(scope, _year(request))

    @get("/preview")
    async def preview_page(self, request: Request, db: Database) -> Template:
        scope = await operator_scope(request, db, False)
        return page("rules/rule_preview.html", **_context(scope, basket=_blank_basket(scope),
                                                    result=None, error=None))

    @post("/preview")
    async def preview(self, request: Request, db: Database) -> Response:
        return await run_preview(request, await operator_scope(request, db, False))

    @get("/{rule_id:uuid}")
    async def show(self, request: Request, db: Database,
                   rule_id: FromPath[uuid.UUID]) -> Template:
        return await show_rule(await operator_scope(request, db, False), rule_id)

    @post("/{rule_id:uuid}")
    async def edit(self, request: Request, db: Database,
                   rule_id: FromPath[uuid.UUID]) -> Response:
        return await save_rule(request, await operator_scope(request, db, True), rule_id)

    @post("/{rule_id:uuid}/archive")
    async def archive(self, request: Request, db: Database,
                      rule_id: FromPath[uuid.UUID]) -> Redirect:
        return await archive_action(await operator_scope(request, db, True), rule_id)


ROUTES = [PartnerRulePages, OperatorRulePages]
