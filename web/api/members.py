"""Members as a partner sees them: enrol/link, look up, balance, history."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter

from coalition import clock, ledger, members
from coalition.affiliates.attribution import Touch
from coalition.companies import company_profile
from coalition.errors import DomainError, NotFound
from coalition.idempotency import Once, idempotent
from coalition.members import LinkedMember
from coalition.uow import Database
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
from web.conversions import click_flush
from web.idempotency import request_hash, stored_response
from web.security import as_client, ensure_acting_for, requires_scope

Limit = Annotated[int, QueryParameter(ge=1, le=200, description="Page size")]
Query = Annotated[str | None, QueryParameter(min_length=1, max_length=400)]


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


async def require_visible(db: Database, principal: PartnerPrincipal, member_id: uuid.UUID
                          ) -> LinkedMember:
    """The member as the token's partner sees it (under its row-level security), or 404."""
    ensure_acting_for(principal, member_id)
    linked = await as_client(db, principal, scoped=True).run(members.visible, member_id)
    if linked is None:
        raise _member_not_found()
    return linked


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
        db: Database,
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

        def present(enrolled: tuple[LinkedMember, bool]) -> tuple[int, object]:
            linked, created = enrolled
            return (201 if created else 200), member_out(linked)

        done = await as_client(db, principal, scoped=True).run(
            idempotent, Once(idempotency_key, request_hash(request, data)),
            members.enroll_member, data.email.strip(), data.name, data.partner_customer_id,
            profile, members.Referral(data.referrer_card_number, data.referral_code),
            Touch(data.click_id, data.affiliate_code), click_flush(state), present=present)
        return stored_response(done.status, done.body)

    @get("/", opt={"scopes": ["members:read"]}, summary="List or look up your members")
    async def list_members(
        self,
        request: Request,
        db: Database,
        partner_customer_id: Query = None,
        card_number: Query = None,
        cursor: Query = None,
        limit: Limit = 50,
    ) -> MemberPage:
        after = decode_cursor(cursor, uuid.UUID)
        found = await as_client(db, request.user, scoped=True).run(
            members.listed, customer_id=partner_customer_id, card_number=card_number,
            after=after, limit=limit,
        )
        next_cursor = encode_cursor(found[-1].member.id) if len(found) == limit else None
        return MemberPage(items=[member_out(m) for m in found], next_cursor=next_cursor)

    @get("/{member_id:uuid}", opt={"scopes": ["members:read"], "member_scopes": ["profile"]},
         summary="Get a member")
    async def get_member(
        self, request: Request, db: Database, member_id: FromPath[uuid.UUID]
    ) -> MemberOut:
        return member_out(await require_visible(db, request.user, member_id))

    @get(
        "/{member_id:uuid}/balance",
        opt={"scopes": ["members:read"], "member_scopes": ["points:read"]},
        summary="A member's coalition-wide balance",
    )
    async def balance(
        self, request: Request, db: Database, member_id: FromPath[uuid.UUID],
    ) -> BalanceOut:
        await require_visible(db, request.user, member_id)
        figures = await as_client(db, request.user).run(ledger.balance, member_id)
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
        db: Database,
        member_id: FromPath[uuid.UUID],
        cursor: Query = None,
        limit: Limit = 50,
    ) -> TransactionPage:
        await require_visible(db, request.user, member_id)
        before = decode_cursor(cursor, int)
        rows, last_id = await as_client(db, request.user).run(
            ledger.transactions, request.user.partner_id, member_id, before, limit)
        next_cursor = encode_cursor(last_id) if len(rows) == limit else None
        items = msgspec.convert(rows, list[TransactionOut])
        return TransactionPage(items=items, next_cursor=next_cursor)
