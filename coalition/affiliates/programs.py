"""A partner's affiliate programs, their versioned commission terms, and enrollments.

Terms are append-only (a database trigger refuses UPDATE and DELETE): a change is a new
version, and the highest version whose `effective_from` has come is in force. Every
refusal is a DomainError naming the field at fault, as earning rules do
(coalition/rules/validation.py).

Enrollment: joining an `auto` program approves at once; joining an `application` program
waits for the partner (pending -> approved | rejected). An approved affiliate can be
banned, with a reason; a banned code tracks nothing. Each enrollment gets its own
tracking code: a readable slug of the affiliate's name plus a random suffix.
"""

from __future__ import annotations

import itertools
import re
import secrets
import unicodedata
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock
from coalition.affiliates import tracking
from coalition.affiliates.models import (
    CLICK_MODELS,
    COMMISSION_MODELS,
    Affiliate,
    AffiliateProgram,
    Creative,
    Enrollment,
    ProgramTerms,
)
from coalition.errors import Conflict, DomainError, NotFound

ENROLLMENT_MODES = ("auto", "application")
PROGRAM_STATUSES = ("active", "paused", "archived")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_CATEGORY = re.compile(r"^[\w.-]{1,50}$")
MAX_MONEY_MINOR = 10**12
# Plain percent rates of 2-10 % are typical; anything from 0 to 100 % is accepted.
MAX_RATE_BP = 10_000


def invalid(field_name: str, detail: str, slug: str = "invalid-affiliate-terms") -> DomainError:
    title = "Invalid affiliate program" if slug == "invalid-affiliate-program" else \
        "Invalid affiliate terms"
    return DomainError(slug, title, detail, status=422, field=field_name)


def _program_error(field_name: str, detail: str) -> DomainError:
    return invalid(field_name, detail, "invalid-affiliate-program")


def check_landing_url(url: str) -> str:
    """https only; plain http only for this machine (local development)."""
    url = url.strip()
    parts = urlsplit(url)
    if len(url) > 1000 or not parts.hostname:
        raise _program_error("landing_url", "Give the full address of the landing page, "
                             "e.g. https://shop.example/promo (at most 1000 characters).")
    if parts.username or parts.password:
        raise _program_error("landing_url", "The landing URL must not carry a user name or "
                             "password.")
    if parts.scheme != "https" and not (parts.scheme == "http"
                                        and parts.hostname in LOCAL_HOSTS):
        raise _program_error("landing_url", "The landing URL must use https (plain http is "
                             "accepted only for localhost).")
    return url


@dataclass(frozen=True)
class ProgramSpec:
    name: str
    landing_url: str
    currency: str
    description: str = ""
    enrollment: str = "auto"
    status: str = "active"

    def checked(self) -> ProgramSpec:
        name = self.name.strip()
        if not name or len(name) > 200:
            raise _program_error("name", "Give the program a name of at most 200 characters.")
        if len(self.description) > 5000:
            raise _program_error("description", "Keep the description under 5000 characters.")
        landing = check_landing_url(self.landing_url)
        currency = self.currency.strip().upper()
        if not _CURRENCY.match(currency):
            raise _program_error("currency", "The currency is a three-letter ISO 4217 code, "
                                 "e.g. PLN or EUR.")
        if self.enrollment not in ENROLLMENT_MODES:
            raise _program_error("enrollment", "Enrollment is auto (anyone may join) or "
                                 "application (you approve each affiliate).")
        if self.status not in PROGRAM_STATUSES:
            raise _program_error("status", "Status is active, paused or archived.")
        return replace(self, name=name, landing_url=landing, currency=currency,
                       description=self.description.strip())


@dataclass(frozen=True)
class TermsSpec:
    """One terms version as the partner sets it. Money in minor units, rates in basis
    points; `tiers` are (monthly sales from, rate) pairs, ascending from 0."""

    model: str
    rate_bp: int | None = None
    tiers: tuple[tuple[int, int], ...] = ()
    flat_minor: int | None = None
    category_rates: dict[str, int] = field(default_factory=dict)
    recurring_months: int | None = None       # None: first purchase only
    attribution_window_days: int = 30
    click_model: str = "last_click"
    hold_days: int = 30
    min_payout_minor: int = 5000
    effective_from: datetime | None = None     # None: now

    def checked(self) -> TermsSpec:
        if self.model not in COMMISSION_MODELS:
            raise invalid("model", "The commission model is one of "
                          f"{', '.join(COMMISSION_MODELS)}.")
        if self.model == "percent":
            _check_rate("rate", self.rate_bp)
        elif self.rate_bp is not None:
            raise invalid("rate", "Only the percent model takes a single rate.")
        if self.model == "tiered_percent":
            _check_tiers(self.tiers)
        elif self.tiers:
            raise invalid("tiers", "Only the tiered percent model takes tiers.")
        if self.model in ("per_lead", "per_transaction"):
            if self.flat_minor is None or not 0 < self.flat_minor <= MAX_MONEY_MINOR:
                raise invalid("flat", "Give the flat commission, more than 0.")
        elif self.flat_minor is not None:
            raise invalid("flat", "Only the per-lead and per-transaction models take a flat "
                          "amount.")
        if self.category_rates and self.model not in ("percent", "tiered_percent"):
            raise invalid("category_rates", "Category rates apply to percent models only.")
        for category, rate in self.category_rates.items():
            if not _CATEGORY.match(category):
                raise invalid("category_rates", f"{category!r} is not a category code "
                              "(letters, digits, _ . -, at most 50).")
            _check_rate("category_rates", rate)
        if self.recurring_months is not None and not 1 <= self.recurring_months <= 120:
            raise invalid("recurring_months", "Recurring commissions last 1 to 120 months.")
        if not 1 <= self.attribution_window_days <= 365:
            raise invalid("attribution_window_days", "The attribution window is 1 to 365 days.")
        if self.click_model not in CLICK_MODELS:
            raise invalid("click_model", "The click model is last_click or first_click.")
        if not 0 <= self.hold_days <= 365:
            raise invalid("hold_days", "The hold period is 0 to 365 days.")
        if not 0 <= self.min_payout_minor <= MAX_MONEY_MINOR:
            raise invalid("min_payout", "The minimum payout is 0 or more.")
        return self


def _check_rate(field_name: str, rate_bp: int | None) -> None:
    if rate_bp is None or not 0 <= rate_bp <= MAX_RATE_BP:
        raise invalid(field_name, "A rate is a percentage from 0 to 100 (2 to 10 is typical).")


def _check_tiers(tiers: tuple[tuple[int, int], ...]) -> None:
    if not tiers:
        raise invalid("tiers", "Give at least one tier, starting at 0.")
    if tiers[0][0] != 0:
        raise invalid("tiers", "The first tier starts at monthly sales of 0.")
    for (low, _), (high, _) in itertools.pairwise(tiers):
        if high <= low:
            raise invalid("tiers", "Tier thresholds must ascend.")
    for threshold, rate in tiers:
        if not 0 <= threshold <= MAX_MONEY_MINOR:
            raise invalid("tiers", "A tier threshold is an amount of 0 or more.")
        _check_rate("tiers", rate)


# ---- parsing what a person types (the console's forms) ----

def parse_money(text: str, field_name: str) -> int:
    """'50', '50.5', '1 234,56' in major units -> minor units (two decimals)."""
    cleaned = text.strip().replace(" ", "").replace(",", ".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise invalid(field_name, f"{text!r} is not an amount (e.g. 50 or 49.99).") from None
    if not value.is_finite() or value < 0 or value > MAX_MONEY_MINOR // 100:
        raise invalid(field_name, "An amount is 0 or more, up to 10,000,000,000.")
    if value != value.quantize(Decimal("0.01")):
        raise invalid(field_name, "An amount is 0 or more, with at most two decimals.")
    return int(value * 100)


def parse_percent(text: str, field_name: str) -> int:
    """'2', '2.5', '7,25' percent -> basis points."""
    cleaned = text.strip().rstrip("%").strip().replace(",", ".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise invalid(field_name, f"{text!r} is not a percentage (e.g. 5 or 2.5).") from None
    if not value.is_finite() or not 0 <= value <= 100:
        raise invalid(field_name, "A rate is a percentage from 0 to 100 (2 to 10 is typical).")
    if value != value.quantize(Decimal("0.01")):
        raise invalid(field_name, "A percentage has at most two decimals.")
    rate = int(value * 100)
    _check_rate(field_name, rate)
    return rate


def parse_int(text: str, field_name: str, default: int | None) -> int | None:
    text = text.strip()
    if not text:
        return default
    if not text.isdigit():
        raise invalid(field_name, f"{text!r} is not a whole number.")
    return int(text)


def _pairs(text: str, field_name: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise invalid(field_name, f"Write one 'key = percent' per line; {line!r} has no '='.")
        pairs.append((key.strip(), value.strip()))
    return pairs


def terms_from_form(form: dict[str, str]) -> TermsSpec:
    """The terms editor's fields: money in major units, rates in percent; tiers and
    category rates one per line as `monthly sales from = percent`, `category = percent`."""
    model = form.get("model", "").strip()
    # Only the fields of the chosen model count: the editor shows them all.
    percent_model = model in ("percent", "tiered_percent")
    flat = form.get("flat", "").strip()
    commission_on = form.get("recurring", "first")
    if commission_on not in ("first", "recurring"):
        raise invalid("recurring", "Choose the first purchase only or every purchase for"
                                   " N months.")
    recurring = commission_on == "recurring"
    return TermsSpec(
        model=model,
        rate_bp=parse_percent(form.get("rate", ""), "rate") if model == "percent" else None,
        tiers=tuple((parse_money(k, "tiers"), parse_percent(v, "tiers"))
                    for k, v in _pairs(form.get("tiers", ""), "tiers"))
        if model == "tiered_percent" else (),
        flat_minor=parse_money(flat or "0", "flat")
        if model in ("per_lead", "per_transaction") else None,
        category_rates={k: parse_percent(v, "category_rates")
                        for k, v in _pairs(form.get("category_rates", ""), "category_rates")}
        if percent_model else {},
        recurring_months=(parse_int(form.get("recurring_months", ""), "recurring_months", None)
                          or -1) if recurring else None,
        attribution_window_days=parse_int(form.get("attribution_window_days", ""),
                                          "attribution_window_days", 30),
        click_model=form.get("click_model", "last_click"),
        hold_days=parse_int(form.get("hold_days", ""), "hold_days", 30),
        min_payout_minor=parse_money(form.get("min_payout") or "50", "min_payout"),
    ).checked()


# ---- programs ----

async def create_program(session: AsyncSession, partner_id: uuid.UUID, spec: ProgramSpec
                         ) -> AffiliateProgram:
    spec = spec.checked()
    program = AffiliateProgram(partner_id=partner_id, name=spec.name,
                               description=spec.description, landing_url=spec.landing_url,
                               enrollment=spec.enrollment, currency=spec.currency,
                               status=spec.status)
    try:
        async with session.begin_nested():
            session.add(program)
            await session.flush()
    except IntegrityError as exc:
        if "uq_affiliate_programs_name" not in str(exc.orig):
            raise
        raise _name_taken() from None
    return program


def _name_taken() -> Conflict:
    return Conflict("affiliate-program-name-taken", "Program name taken",
                    "You already run a program with this name.", field="name")


async def own_program(session: AsyncSession, partner_id: uuid.UUID, program_id: uuid.UUID
                      ) -> AffiliateProgram:
    program = await session.scalar(select(AffiliateProgram).where(
        AffiliateProgram.id == program_id, AffiliateProgram.partner_id == partner_id))
    if program is None:
        raise NotFound("affiliate-program-not-found", "Program not found",
                       "No such affiliate program of yours.")
    return program


async def update_program(session: AsyncSession, partner_id: uuid.UUID,
                         program_id: uuid.UUID, spec: ProgramSpec) -> AffiliateProgram:
    program = await own_program(session, partner_id, program_id)
    spec = spec.checked()
    try:
        async with session.begin_nested():
            for name in ("name", "description", "landing_url", "enrollment", "currency",
                         "status"):
                setattr(program, name, getattr(spec, name))
            await session.flush()
    except IntegrityError as exc:
        if "uq_affiliate_programs_name" not in str(exc.orig):
            raise
        raise _name_taken() from None
    # Landing URL and status are in every cached code of the program.
    _forget_after_commit(session, None)
    return program


async def partner_programs(session: AsyncSession, partner_id: uuid.UUID
                           ) -> list[AffiliateProgram]:
    return list((await session.scalars(select(AffiliateProgram).where(
        AffiliateProgram.partner_id == partner_id).order_by(AffiliateProgram.name))).all())


async def active_programs(session: AsyncSession) -> list[AffiliateProgram]:
    """Every active program of every partner: what an affiliate may browse and join."""
    return list((await session.scalars(select(AffiliateProgram).where(
        AffiliateProgram.status == "active").order_by(AffiliateProgram.name))).all())


# ---- terms ----

async def add_terms(session: AsyncSession, partner_id: uuid.UUID, program_id: uuid.UUID,
                    spec: TermsSpec, actor: str) -> ProgramTerms:
    """A new terms version (the previous ones stay as they were)."""
    program = await own_program(session, partner_id, program_id)
    spec = spec.checked()
    # Versions of one program are numbered one at a time.
    await session.execute(select(AffiliateProgram.id).where(
        AffiliateProgram.id == program.id).with_for_update())
    latest = await session.scalar(select(func.max(ProgramTerms.version)).where(
        ProgramTerms.program_id == program.id)) or 0
    terms = ProgramTerms(
        program_id=program.id, partner_id=partner_id, version=latest + 1, model=spec.model,
        rate_bp=spec.rate_bp,
        tiers=[{"from_minor": low, "rate_bp": rate} for low, rate in spec.tiers] or None,
        flat_minor=spec.flat_minor, category_rates=dict(spec.category_rates),
        recurring_months=spec.recurring_months,
        attribution_window_days=spec.attribution_window_days, click_model=spec.click_model,
        hold_days=spec.hold_days, min_payout_minor=spec.min_payout_minor,
        effective_from=spec.effective_from or clock.now(), created_by=actor)
    session.add(terms)
    await session.flush()
    _forget_after_commit(session, None)   # the attribution window is in the cached codes
    return terms


async def terms_history(session: AsyncSession, program_id: uuid.UUID) -> list[ProgramTerms]:
    return list((await session.scalars(select(ProgramTerms).where(
        ProgramTerms.program_id == program_id).order_by(ProgramTerms.version.desc()))).all())


async def terms_in_force(session: AsyncSession, program_id: uuid.UUID,
                         at: datetime | None = None) -> ProgramTerms | None:
    """The highest version whose effective_from is at or before `at` (now)."""
    return await session.scalar(select(ProgramTerms).where(
        ProgramTerms.program_id == program_id,
        ProgramTerms.effective_from <= (at or clock.now())).order_by(
        ProgramTerms.version.desc()).limit(1))


# ---- enrollments ----

def tracking_code(affiliate_name: str) -> str:
    """'Anna Kowalska' -> 'anna-kowalska-7kq2m9xd': readable, and 40 random bits."""
    ascii_name = unicodedata.normalize("NFKD", affiliate_name.replace("ł", "l").replace(
        "Ł", "L")).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:24].rstrip("-")
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"   # no 0/o, 1/l look-alikes
    suffix = "".join(secrets.choice(alphabet) for _ in range(8))
    return f"{slug or 'aff'}-{suffix}"


async def join_program(session: AsyncSession, affiliate_id: uuid.UUID,
                       program_id: uuid.UUID, note: str | None = None) -> Enrollment:
    """Join (auto programs: approved at once) or apply (application programs: pending)."""
    affiliate = await session.get(Affiliate, affiliate_id)
    program = await session.get(AffiliateProgram, program_id)
    if program is None or program.status != "active":
        raise NotFound("affiliate-program-not-found", "Program not found",
                       "No such active affiliate program.")
    if affiliate is None or affiliate.status != "active":
        raise DomainError("affiliate-not-active", "Affiliate not active",
                          "Your affiliate account is suspended.", status=403)
    if await terms_in_force(session, program.id) is None:
        raise Conflict("affiliate-program-not-ready", "Program not open yet",
                       "The program has no commission terms yet; try again later.")
    note = (note or "").strip()[:2000] or None
    now = clock.now()
    auto = program.enrollment == "auto"
    for _ in range(5):
        enrollment = Enrollment(
            program_id=program.id, partner_id=program.partner_id, affiliate_id=affiliate.id,
            code=tracking_code(affiliate.name), status="approved" if auto else "pending",
            application_note=note, decided_at=now if auto else None,
            decided_by="auto" if auto else None)
        try:
            async with session.begin_nested():
                session.add(enrollment)
                await session.flush()
            return enrollment
        except IntegrityError as exc:
            if "uq_affiliate_enrollments_member" in str(exc.orig):
                raise Conflict("already-enrolled", "Already joined",
                               "You have already joined or applied to this program.") from None
            if "uq_affiliate_enrollments_code" not in str(exc.orig):
                raise
    raise RuntimeError("no free tracking code after 5 draws")  # 2^-40 each: not expected


async def affiliate_enrollments(session: AsyncSession, affiliate_id: uuid.UUID
                                ) -> list[tuple[Enrollment, AffiliateProgram]]:
    rows = await session.execute(select(Enrollment, AffiliateProgram).join(
        AffiliateProgram, AffiliateProgram.id == Enrollment.program_id).where(
        Enrollment.affiliate_id == affiliate_id).order_by(AffiliateProgram.name))
    return [(e, p) for e, p in rows.all()]


async def own_enrollment(session: AsyncSession, partner_id: uuid.UUID,
                         enrollment_id: uuid.UUID) -> Enrollment:
    enrollment = await session.scalar(select(Enrollment).where(
        Enrollment.id == enrollment_id, Enrollment.partner_id == partner_id))
    if enrollment is None:
        raise NotFound("enrollment-not-found", "Enrollment not found",
                       "No such affiliate in your programs.")
    return enrollment


# status -> the statuses a partner may move it to
TRANSITIONS = {"pending": ("approved", "rejected"), "approved": ("banned",),
               "rejected": (), "banned": ()}
ACTIONS = {"approve": "approved", "reject": "rejected", "ban": "banned"}


async def decide_enrollment(session: AsyncSession, partner_id: uuid.UUID,
                            enrollment_id: uuid.UUID, action: str, actor: str,
                            reason: str | None = None) -> Enrollment:
    """approve / reject a pending application; ban an approved affiliate (reason
    required). Refuses any other move with 409 enrollment-wrong-state."""
    if action not in ACTIONS:
        raise DomainError("validation-error", "Invalid request",
                          "The action is approve, reject or ban.", status=400, field="action")
    enrollment = await own_enrollment(session, partner_id, enrollment_id)
    await session.refresh(enrollment, with_for_update=True)
    target = ACTIONS[action]
    reason = (reason or "").strip()[:2000] or None
    if target == "banned" and not reason:
        raise DomainError("validation-error", "Reason required",
                          "Say why the affiliate is banned; they will see it.", status=422,
                          field="reason")
    if target not in TRANSITIONS[enrollment.status]:
        raise Conflict("enrollment-wrong-state", "Not possible in this state",
                       f"An enrollment that is {enrollment.status} cannot be {target}.")
    enrollment.status = target
    enrollment.status_reason = reason
    enrollment.decided_at = clock.now()
    enrollment.decided_by = actor
    await session.flush()
    _forget_after_commit(session, enrollment.code)
    return enrollment


def _forget_after_commit(session: AsyncSession, code: str | None) -> None:
    """Drop the code (None: every code) from this process's tracking cache once the
    change is committed, and now, so no request caches the old state in between."""
    tracking.CODES.forget(code)
    event.listen(session.sync_session, "after_commit",
                 lambda _session: tracking.CODES.forget(code), once=True)


# ---- creatives ----

MAX_CREATIVE_BYTES = 512 * 1024
MAX_TEXT_CREATIVE = 5000
# Content types a creative may have, and how an image file of each type starts. SVG is
# not accepted: it can carry script.
IMAGE_SIGNATURES = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",),
                    "image/gif": (b"GIF87a", b"GIF89a"), "image/webp": (b"RIFF",)}


def _creative_error(field_name: str, detail: str) -> DomainError:
    return DomainError("invalid-creative", "Invalid creative", detail, status=422,
                       field=field_name)


async def add_creative(session: AsyncSession, partner_id: uuid.UUID, program_id: uuid.UUID,
                       title: str, *, text: str = "", filename: str = "",
                       content_type: str = "", content: bytes = b"") -> Creative:
    """An image banner (PNG, JPEG, GIF, WebP up to 512 KB, its bytes must match its type)
    or a text creative (up to 5000 characters)."""
    program = await own_program(session, partner_id, program_id)
    title = " ".join(title.split())
    if not title or len(title) > 200:
        raise _creative_error("title", "Give the creative a title of at most 200 characters.")
    if content:
        if len(content) > MAX_CREATIVE_BYTES:
            raise _creative_error("file", f"The image is larger than "
                                  f"{MAX_CREATIVE_BYTES // 1024} KB.")
        content_type = content_type.split(";")[0].strip().lower()
        signatures = IMAGE_SIGNATURES.get(content_type)
        if signatures is None:
            raise _creative_error("file", "Upload a PNG, JPEG, GIF or WebP image.")
        if not content.startswith(signatures) or (content_type == "image/webp"
                                                  and content[8:12] != b"WEBP"):
            raise _creative_error("file", f"The file is not a {content_type} image.")
        name = re.sub(r"[^\w.-]", "_", filename.rsplit("/", 1)[-1])[:200] or "creative"
    else:
        text = text.strip()
        if not text:
            raise _creative_error("file", "Upload an image or write a text creative.")
        if len(text) > MAX_TEXT_CREATIVE:
            raise _creative_error("text", f"A text creative is at most {MAX_TEXT_CREATIVE} "
                                  "characters.")
        content, content_type, name = text.encode(), "text/plain", "creative.txt"
    creative = Creative(program_id=program.id, partner_id=partner_id, title=title,
                        filename=name, content_type=content_type, content=content)
    session.add(creative)
    await session.flush()
    return creative


async def own_creative(session: AsyncSession, partner_id: uuid.UUID, creative_id: int
                       ) -> Creative:
    creative = await session.scalar(select(Creative).where(
        Creative.id == creative_id, Creative.partner_id == partner_id))
    if creative is None:
        raise NotFound("creative-not-found", "Creative not found", "No such creative of yours.")
    return creative


async def program_creatives(session: AsyncSession, program_id: uuid.UUID) -> list[Creative]:
    return list((await session.scalars(select(Creative).where(
        Creative.program_id == program_id).order_by(Creative.created_at.desc()))).all())
