"""The affiliate's own pages (/affiliate). Sign-up, browsing and joining programs, payout
details; and the dashboard: figures per program, commissions by status over the last 12
months, the link builder, commissions with filters and CSV, payouts and their
statements, creatives. Only logins of kind 'affiliate' (sign-up aside); affiliates are
not tenants, so every read is keyed by the login's affiliate, and another affiliate's
ids answer 404."""

from __future__ import annotations

import re
import uuid
from datetime import date

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template

from coalition import clock
from coalition.affiliates import dashboard, queries, service
from coalition.affiliates.models import COMMISSION_STATUSES
from coalition.affiliates.signup import AGREEMENT_VERSION, PayoutSpec, SignupSpec
from coalition.errors import DomainError
from coalition.uow import Database
from tenants.affiliate_signup import sign_up_affiliate
from tenants.models import User
from tenants.passwords import PasswordWorkBusy
from web.portal.accounts.auth import mail_verification
from web.portal.common import acting, base_url, current_user, page, require
from web.portal.settlement.payments import money

BAR_WIDTH = 300   # pixels of the widest bar in the monthly chart
SUB_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
PAYOUT_FIELDS = ("payout_method", "stripe_account_id", "iban", "bic", "account_holder",
                 "card_number")


async def affiliate(request: Request, db: Database) -> User:
    return require(request, await current_user(request, db), "affiliate")


def payout_spec(form) -> PayoutSpec:
    return PayoutSpec(method=(form.get("payout_method") or "").strip(),
                      stripe_account_id=form.get("stripe_account_id") or "",
                      iban=form.get("iban") or "", bic=form.get("bic") or "",
                      account_holder=form.get("account_holder") or "",
                      card_number=form.get("card_number") or "")


def _filters(program: str | None, status: str | None, date_from: str | None,
             date_to: str | None, programs: set[uuid.UUID]
             ) -> tuple[dashboard.CommissionFilter, dict[str, str]]:
    errors: dict[str, str] = {}
    program_id = None
    if program:
        try:
            program_id = uuid.UUID(program)
        except ValueError:
            program_id = None
        if program_id not in programs:
            errors["program"] = "Choose one of your programs."
    if status and status not in COMMISSION_STATUSES:
        errors["status"] = "Choose one of: " + ", ".join(COMMISSION_STATUSES) + "."
    days: dict[str, date | None] = {}
    for name, raw in (("date_from", date_from), ("date_to", date_to)):
        try:
            days[name] = date.fromisoformat(raw) if raw else None
        except ValueError:
            errors[name] = "A date is YYYY-MM-DD."
            days[name] = None
    if days["date_from"] and days["date_to"] and days["date_from"] > days["date_to"]:
        errors["date_to"] = "The end date is before the start date."
    return dashboard.CommissionFilter(program_id, status or None, days["date_from"],
                                      days["date_to"]), errors


class AffiliatePages(Controller):
    """Sign-up, programs and payout details."""

    path = "/affiliate"
    include_in_schema = False

    @get("/signup")
    async def signup_form(self) -> Template:
        return page("affiliates/signup.html", form={"kind": "person"}, errors={},
                    agreement=AGREEMENT_VERSION)

    @post("/signup")
    async def signup(self, request: Request, db: Database) -> Template:
        form = await request.form()
        spec = SignupSpec(kind=form.get("kind", ""), name=form.get("name", ""),
                          email=form.get("email", ""), password=form.get("password", ""),
                          accepts_agreement=form.get("accept_terms") == "on",
                          company_name=form.get("company_name", ""), nip=form.get("nip", ""),
                          website=form.get("website", ""), payout=payout_spec(form))
        try:
            user, token = await db.run(sign_up_affiliate, spec)
        except DomainError as exc:
            shown = {k: v for k, v in form.items() if k != "password"}
            template = page("affiliates/signup.html", status_code=exc.status, form=shown,
                            errors={exc.field or "form": exc.detail},
                            agreement=AGREEMENT_VERSION)
            if isinstance(exc, PasswordWorkBusy):  # 503: say when to send the form again
                template.headers["Retry-After"] = str(exc.retry_after)
            return template
        await mail_verification(request, user, token)
        return page("message.html", title="Check your email",
                    message=f"We sent a confirmation link to {user.email}. Confirm it, then "
                    "log in to browse programs.")

    async def _programs(self, request: Request, db: Database, user: User, *,
                        error: str | None = None, status_code: int = 200) -> Template:
        found = await acting(db, user).run(queries.programs_to_join, user.affiliate_id)
        return page("affiliates/programs.html", status_code=status_code, user=user,
                    affiliate=found.affiliate, joined=found.joined, available=found.available,
                    partners=found.partners, link_base=base_url(request) + "/r/", error=error)

    @get("/programs")
    async def browse(self, request: Request, db: Database) -> Template:
        return await self._programs(request, db, await affiliate(request, db))

    @post("/programs/{program_id:uuid}/join")
    async def join(self, request: Request, db: Database,
                   program_id: FromPath[uuid.UUID]) -> Response:
        user = await affiliate(request, db)
        note = (await request.form()).get("note")
        try:
            await acting(db, user).run(service.join_program, user.affiliate_id, program_id,
                                       note)
        except DomainError as exc:
            if exc.status == 404:
                raise
            return await self._programs(request, db, user, error=exc.detail,
                                        status_code=exc.status)
        return Redirect("/affiliate/programs", status_code=303)

    async def _profile(self, db: Database, user: User, *, form: dict | None = None,
                       errors: dict | None = None, saved: bool = False,
                       status_code: int = 200) -> Template:
        found, stored = await acting(db, user).run(queries.payout_details, user.affiliate_id)
        return page("affiliates/profile.html", status_code=status_code, user=user,
                    affiliate=found, form=stored if form is None else form,
                    errors=errors or {}, saved=saved)

    @get("/profile")
    async def profile(self, request: Request, db: Database) -> Template:
        return await self._profile(db, await affiliate(request, db))

    @post("/profile")
    async def save_profile(self, request: Request, db: Database) -> Template:
        user = await affiliate(request, db)
        form = await request.form()
        try:
            await acting(db, user).run(service.save_payout, user.affiliate_id,
                                       payout_spec(form))
        except DomainError as exc:
            return await self._profile(db, user,
                                       form={k: form.get(k, "") for k in PAYOUT_FIELDS},
                                       errors={exc.field or "form": exc.detail},
                                       status_code=exc.status)
        return await self._profile(db, user, saved=True)


class AffiliateDashboardPages(Controller):
    """The dashboard: figures, commissions, payouts and statements, creatives."""

    path = "/affiliate"
    include_in_schema = False

    @get("/")
    async def home(self, request: Request, db: Database, state: State,
                   enrollment: str | None = None, sub: str | None = None) -> Template:
        user = await affiliate(request, db)
        found = await acting(db, user).run(queries.dashboard_home, user.affiliate_id,
                                           clock.now())
        rows, by_month = found.enrollments, found.months
        peak = max([abs(v) for m in by_month for v in m["amounts"].values()] or [0]) or 1
        link, link_error = None, None
        if enrollment is not None:
            chosen = next((r for r in rows if str(r["id"]) == enrollment
                           and r["status"] == "approved"), None)
            if chosen is None:
                link_error = ("enrollment", "Choose one of your approved programs.")
            elif sub and not SUB_ID.match(sub):
                link_error = ("sub", "A sub-id is 1 to 100 letters, digits, - or _.")
            else:
                base = (state.settings.public_url or str(request.base_url)).rstrip("/")
                link = f"{base}/r/{chosen['code']}" + (f"/{sub}" if sub else "")
        return page("affiliates/home.html", status_code=400 if link_error else 200, user=user,
                    rows=rows, totals=dashboard.totals(rows), months=by_month,
                    statuses=dashboard.CHART_STATUSES, creatives=found.creatives,
                    money=money, percent=dashboard.percent,
                    bar=lambda v: abs(v) * BAR_WIDTH // peak, link=link,
                    link_error=link_error, chosen=enrollment or "", sub=sub or "")

    async def _commissions(self, request: Request, db: Database, program: str | None,
                           status: str | None, date_from: str | None, date_to: str | None):
        user = await affiliate(request, db)
        runner = acting(db, user)
        programs = await runner.run(queries.enrolled_programs, user.affiliate_id)
        chosen, errors = _filters(program, status, date_from, date_to,
                                  {p["id"] for p in programs})
        rows = [] if errors else await runner.run(queries.affiliate_commissions,
                                                  user.affiliate_id, chosen)
        return user, programs, rows, errors

    @get("/commissions")
    async def commissions(self, request: Request, db: Database,
                          program: str | None = None, status: str | None = None,
                          date_from: str | None = None, date_to: str | None = None
                          ) -> Template:
        user, programs, rows, errors = await self._commissions(
            request, db, program, status, date_from, date_to)
        query = request.url.query or ""
        return page("affiliates/commissions.html", status_code=400 if errors else 200,
                    user=user, programs=programs, rows=rows, errors=errors, money=money,
                    statuses=COMMISSION_STATUSES, query=query,
                    form={"program": program or "", "status": status or "",
                          "date_from": date_from or "", "date_to": date_to or ""})

    @get("/commissions.csv")
    async def commissions_csv(self, request: Request, db: Database,
                              program: str | None = None, status: str | None = None,
                              date_from: str | None = None, date_to: str | None = None
                              ) -> Response:
        _, _, rows, errors = await self._commissions(request, db, program, status,
                                                     date_from, date_to)
        if errors:
            field, message = next(iter(errors.items()))
            return Response({"type": "/problems/validation-error", "title": "Invalid filter",
                             "status": 400, "detail": message, "field": field},
                            status_code=400, media_type="application/problem+json")
        return Response(dashboard.commissions_csv(rows), media_type="text/csv", headers={
            "Content-Disposition": 'attachment; filename="commissions.csv"'})

    @get("/payouts")
    async def payouts(self, request: Request, db: Database) -> Template:
        user = await affiliate(request, db)
        rows = await acting(db, user).run(queries.affiliate_payouts, user.affiliate_id)
        return page("affiliates/payouts.html", user=user, rows=rows, money=money)

    async def _statement(self, request: Request, db: Database, payout_id: int):
        user = await affiliate(request, db)
        found = await acting(db, user).run(queries.payout_statement, user.affiliate_id,
                                           payout_id)
        if found is None:
            raise NotFoundException("No such payout.")
        return user, *found

    @get("/payouts/{payout_id:int}")
    async def statement(self, request: Request, db: Database, payout_id: int) -> Template:
        user, payout, lines = await self._statement(request, db, payout_id)
        return page("affiliates/statement.html", user=user, payout=payout, lines=lines,
                    money=money, sales=sum(c["amount_minor"] for c in lines
                                           if c["amount_minor"] > 0),
                    clawbacks=sum(c["amount_minor"] for c in lines if c["amount_minor"] < 0))

    @get("/payouts/{payout_id:int}/statement.csv")
    async def statement_csv(self, request: Request, db: Database, payout_id: int
                            ) -> Response:
        _, payout, lines = await self._statement(request, db, payout_id)
        return Response(dashboard.commissions_csv(lines), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="payout-{payout["id"]}.csv"'})

    @get("/creatives/{creative_id:int}")
    async def creative(self, request: Request, db: Database, creative_id: int) -> Response:
        user = await affiliate(request, db)
        row = await acting(db, user).run(queries.affiliate_creative, user.affiliate_id,
                                         creative_id)
        if row is None:
            raise NotFoundException("No such creative.")
        name = re.sub(r"[^A-Za-z0-9._-]", "_", row["filename"]) or "creative"
        return Response(row["content"], media_type=row["content_type"], headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Content-Type-Options": "nosniff"})
