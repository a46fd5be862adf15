"""Members as a partner sees them: enrol/link, look up, balance, history."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coalition import clock, members, referrals
from coalition.affiliates.attribution import Touch
from coalition.companies import company_profile
from coalition.errors import DomainError, NotFound
from coalition.ledger import Ledger
from coalition.members import LinkedMember
from tenants.auth import PartnerPrincipal
from web.api.pagination import decode_cursor, encode_cursor
from web.api.schemas import (
    BalanceOut,
    EnrollMember,
    IdempotencyHeader,
    MemberOut,
    MemberPage,
    TransactionOut,
    TransactionPage,
    strict_body,
)
from web.conversions import signup_lead
from web.idempotency import request_hash, run_idempotent
from web.security import ensure_acting_for, requires_scope

Limit = Annotated[int, QueryParameter(ge=1, le=200, description="Page size")]
Query = Annotated[str | None, QueryParameter(min_length=1, max_length=400)]
Session = NamedDependency[AsyncSession]
LedgerDep = NamedDependency[Ledger]


def member_out(linked: LinkedMember) -> MemberOut:
    m = linked.member
    return MemberOut(
        id=m.id, email=m.email, name=m.name, status=m.status, card_number=m.card_number,
        partner_customer_id=linked.customer_id, linked_at=linked.linked_at,
        created_at=m.created_at, kind=m.kind, birth_date=m.birth_date,
        company_name=m.company_name, tax_id=m.tax_id,
    )


def _member_not_found() -> NotFound:
    return NotFound("member-not-found", "Member not found",
                    "No member with this id is linked to your partner account.",
                    field="member_id")


async def require_visible(
    session: AsyncSession, principal: PartnerPrincipal, member_id: uuid.UUID
) -> LinkedMember:
    ensure_acting_for(principal, member_id)
    linked = await members.get_visible(session, principal.partner_id, member_id)
    if linked is None:
        raise _member_not_found()
    return linked


_REFERRAL_REFUSALS = {
    "unknown_card": ("referrer_card_number", "No other active member has this card number."),
    "unknown_code": ("referral_code", "No active member has this referral code."),
    "mismatch": ("referral_code", "The referral code and referrer_card_number name"
                                  " different members."),
}


async def _bind_referral(session: AsyncSession, member_id: uuid.UUID, data: EnrollMember,
                         partner_id: uuid.UUID) -> None:
    """Binds the new member to its referrer; a refusal is a 422 naming the field, and
    the enrolment rolls back with it."""
    code = data.referral_code
    if code is not None:
        code = referrals.normalized(code)
        if code is None:
            raise DomainError("validation-error", "Invalid request",
                              "A referral code is 8 letters and digits.", status=422,
                              field="referral_code")
    outcome = await session.scalar(text("SELECT member_referral_bind(:m, :c, :r, :p)"),
                                   {"m": member_id, "c": data.referrer_card_number,
                                    "r": code, "p": partner_id})
    if outcome == "ok":
        return
    field, detail = _REFERRAL_REFUSALS.get(outcome, (
        "referral_code" if code else "referrer_card_number",
        "A member cannot refer themselves."))
    raise DomainError("validation-error", "Invalid request", detail, status=422, field=field)


class MemberController(Controller):
    path = "/members"
    tags = ["Members"]
    guards = [requires_scope]

    @post(
        "/",
        opt={"scopes": ["members:write"]},
        summary="Enrol a member or link an existing one",
        description="201 when a new member is created; 200 when a member with this email "
        "already exists and is now linked to your brand. `kind: \"company\"` enrols a B2B "
        "company account (company_name and tax_id required) whose people share one wallet; "
        "the coalition operator invites its logins. An optional birth_date feeds birthday "
        "segments; it fills in a missing birth date of an existing member.",
        responses={},
    )
    async def enroll(
        self,
        request: Request,
        data: JSONBody[EnrollMember],
        db_session: Session,
        state: State,
        idempotency_key: IdempotencyHeader,
    ) -> Response[MemberOut]:
        principal: PartnerPrincipal = request.user
        data = await strict_body(request, EnrollMember)
        members.check_birth_date(data.birth_date, clock.now().date())
        if data.kind == "company":
            if data.birth_date is not None:
                raise DomainError("validation-error", "Invalid request",
                                  "A company has no birth date.", status=400,
                                  field="birth_date")
            profile = company_profile(data.company_name, data.tax_id)
        elif data.company_name is not None or data.tax_id is not None:
            raise DomainError("validation-error", "Invalid request",
                              'company_name and tax_id are for kind "company".', status=400,
                              field="kind")
        else:
            profile = members.Profile(birth_date=data.birth_date)

        async def action() -> tuple[int, MemberOut]:
            linked, created = await members.enroll(
                db_session, principal.partner_id, data.email.strip(), data.name,
                data.partner_customer_id, profile,
            )
            if created and (data.referrer_card_number or data.referral_code) is not None:
                await _bind_referral(db_session, linked.member.id, data, principal.partner_id)
            # An affiliate's lead: attribution stored, per-lead commission (same transaction).
            await signup_lead(db_session, state, linked.member.id,
                              Touch(data.click_id, data.affiliate_code), principal.partner_id)
            return (201 if created else 200), member_out(linked)

        return await run_idempotent(
            db_session, principal, idempotency_key, request_hash(request, data), action
        )

    @get("/", opt={"scopes": ["members:read"]}, summary="List or look up your members")
    async def list_members(
        self,
        request: Request,
        db_session: Session,
        partner_customer_id: Query = None,
        card_number: Query = None,
        cursor: Query = None,
        limit: Limit = 50,
    ) -> MemberPage:
        after = decode_cursor(cursor, uuid.UUID)
        found = await members.list_visible(
            db_session, request.user.partner_id, customer_id=partner_customer_id,
            card_number=card_number, after=after, limit=limit,
        )
        next_cursor = encode_cursor(found[-1].member.id) if len(found) == limit else None
        return MemberPage(items=[member_out(m) for m in found], next_cursor=next_cursor)

    @get("/{member_id:uuid}", opt={"scopes": ["members:read"], "member_scopes": ["profile"]},
         summary="Get a member")
    async def get_member(
        self, request: Request, db_session: Session, member_id: FromPath[uuid.UUID]
    ) -> MemberOut:
        return member_out(await require_visible(db_session, request.user, member_id))

    @get(
        "/{member_id:uuid}/balance",
        opt={"scopes": ["members:read"], "member_scopes": ["points:read"]},
        summary="A member's coalition-wide balance",
    )
    async def balance(
        self, request: Request, db_session: Session, ledger: LedgerDep,
        member_id: FromPath[uuid.UUID],
    ) -> BalanceOut:
        await require_visible(db_session, request.user, member_id)
        figures = await ledger.balance(member_id)
        return BalanceOut(member_id=member_id, **figures)

    @get(
        "/{member_id:uuid}/transactions",
        opt={"scopes": ["members:read"], "member_scopes": ["points:read"]},
        summary="A member's transactions across brands, newest first",
        description="Your own transactions in full; other brands' show only brand name, "
        "kind, points and date.",
    )
    async def transactions(
        self,
        request: Request,
        db_session: Session,
        ledger: LedgerDep,
        member_id: FromPath[uuid.UUID],
        cursor: Query = None,
        limit: Limit = 50,
    ) -> TransactionPage:
        await require_visible(db_session, request.user, member_id)
        before = decode_cursor(cursor, int)
        rows, last_id = await ledger.transactions(request.user.partner_id, member_id, before, limit)
        next_cursor = encode_cursor(last_id) if len(rows) == limit else None
        items = msgspec.convert(rows, list[TransactionOut])
        return TransactionPage(items=items, next_cursor=next_cursor)
