"""Request and response bodies of the partner API (msgspec structs).

Requests reject unknown fields; points are positive integers up to 10^12."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from litestar import Request as HttpRequest
from litestar.exceptions import ValidationException
from litestar.openapi.spec import Operation
from litestar.params import HeaderParameter, PathParameter
from msgspec import Meta, Struct

T = TypeVar("T")

MAX_POINTS = 10**12
# Lower bounds are written ge=1, not gt=0: the same for integers, but Litestar's schema
# drops an exclusiveMinimum of 0 on an optional field, and clients would not see it.
Points = Annotated[int, Meta(ge=1, le=MAX_POINTS, description="Whole points, 1 to 10^12")]
OrderId = Annotated[str, Meta(min_length=1, max_length=200)]
Description = Annotated[str, Meta(max_length=500)]
Email = Annotated[str, Meta(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
CustomerId = Annotated[str, Meta(min_length=1, max_length=200)]
# Constraints on a header or path parameter go in its Parameter: Litestar neither
# enforces nor documents a msgspec Meta wrapped in one (a 300-character key reached the
# varchar(255) column as a 500; an empty one was taken as a key).
IdempotencyHeader = Annotated[
    str,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Unique per write (1 to 255 visible ASCII characters); a retry with the "
        "same key and body replays the first response.",
    ),
]
OrderPath = Annotated[str, PathParameter(min_length=1, max_length=200,
                                         description="Your order id")]


# A row id in a path is a PostgreSQL bigint: a larger number cannot name a row, and
# passed on to a query it would fail there as a server error rather than not be found.
RowId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]


# A posting's `metadata` is the partner's own annotation, stored with the journal entry and
# echoed by every read of it (the response, replays, the member's history). Unbounded, one
# request stored and echoed 9 MB; the cap is on the compact JSON (UTF-8, no spaces), the
# form it travels in, as the schema's maxProperties could only count keys.
MAX_METADATA_BYTES = 16_384
Metadata = Annotated[dict[str, Any], Meta(
    description="Your own annotations, stored with the entry and echoed back: a JSON object "
    f"of at most {MAX_METADATA_BYTES:,} bytes ({MAX_METADATA_BYTES // 1024} KB) written as "
    "compact JSON (UTF-8, no spaces); a larger one is a 400 validation-error naming "
    "`metadata`, and nothing is posted.")]


ClickId = Annotated[uuid.UUID, Meta(description="The click id an affiliate link added to"
                                             " your landing URL")]
AffiliateCode = Annotated[str, Meta(min_length=1, max_length=40,
                                    description="An affiliate's tracking code")]


class Request(Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class EnrollMember(Request):
    email: Email
    name: Name | None = None
    partner_customer_id: CustomerId | None = None
    birth_date: date | None = None
    # A company member: one wallet shared by the company's people (buyer/admin logins);
    # needs company_name and a valid tax_id (Polish NIP or EU VAT id).
    kind: Literal["person", "company"] = "person"
    company_name: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    tax_id: Annotated[str, Meta(min_length=1, max_length=30)] | None = None
    # Who recommended this member (member-get-member), by card number or referral code
    # (both: they must name the same member). Binds a newly created member only; the
    # bonuses follow at its first qualifying purchase (coalition/referrals.py).
    referrer_card_number: Annotated[str, Meta(min_length=1, max_length=16)] | None = None
    referral_code: Annotated[str, Meta(min_length=1, max_length=20)] | None = None
    # The affiliate that brought the sign-up (a lead): click id or affiliate code.
    click_id: ClickId | None = None
    affiliate_code: AffiliateCode | None = None


class EarnPoints(Request):
    member_id: uuid.UUID
    points: Points
    order_id: OrderId | None = None
    description: Description | None = None
    metadata: Metadata | None = None


class RedeemPoints(EarnPoints):
    pass


class AdjustPoints(Request):
    member_id: uuid.UUID
    points: Annotated[
        int,
        Meta(ge=-MAX_POINTS, le=MAX_POINTS,
             description="Signed: positive credits the member, negative takes points back"),
    ]
    reason: Annotated[str, Meta(min_length=3, max_length=500)]
    order_id: OrderId | None = None
    metadata: Metadata | None = None


class ReverseTransaction(Request):
    points: Points | None = None
    description: Description | None = None


class Authorize(Request):
    member_id: uuid.UUID
    points: Points
    order_id: OrderId | None = None
    description: Description | None = None
    expires_in_seconds: Annotated[
        int, Meta(ge=10, le=7 * 86400,
                  description="How long the hold lives; the coalition's default if omitted")
    ] | None = None


class Capture(Request):
    points: Points | None = None


Minor = Annotated[int, Meta(ge=0, le=10**13, description="Minor currency units (grosz)")]


class MemberReference(Request):
    """Exactly one of: the coalition member id, the card number, your customer id."""

    id: uuid.UUID | None = None
    card_number: Annotated[str, Meta(min_length=1, max_length=16)] | None = None
    customer_id: CustomerId | None = None


class PurchaseLine(Request):
    sku: Annotated[str, Meta(min_length=1, max_length=100)]
    quantity: Annotated[int, Meta(ge=1, le=10**6)]
    unit_price: Minor
    amount: Minor
    category: Annotated[str, Meta(min_length=1, max_length=100)] | None = None


Channel = Literal["online", "store", "mobile"]


class PostPurchase(Request):
    member: MemberReference
    order_id: OrderId
    occurred_at: datetime
    total: Minor
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}$")]
    channel: Channel
    lines: Annotated[list[PurchaseLine], Meta(max_length=500)] = []
    store_id: Annotated[str, Meta(min_length=1, max_length=100)] | None = None
    # The affiliate that brought the sale, if you know it: the click id your landing
    # page received (`click_id` query parameter) or an affiliate's code.
    click_id: ClickId | None = None
    affiliate_code: AffiliateCode | None = None


class SimulatePurchase(Request):
    """A purchase to evaluate without posting; `member` and `order_id` are optional."""

    occurred_at: datetime
    total: Minor
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}$")]
    channel: Channel
    lines: Annotated[list[PurchaseLine], Meta(max_length=500)] = []
    store_id: Annotated[str, Meta(min_length=1, max_length=100)] | None = None
    member: MemberReference | None = None
    order_id: OrderId | None = None


class PostEvent(Request):
    member: MemberReference
    event_type: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,49}$",
                                    description="e.g. signup, webinar, survey, birthday")]
    reference: Annotated[str, Meta(min_length=1, max_length=200,
                                   description="Your id of the occurrence; counted once")]
    occurred_at: datetime | None = None


class ReturnLine(Request):
    sku: Annotated[str, Meta(min_length=1, max_length=100)]
    quantity: Annotated[int, Meta(ge=1, le=10**6)]


class PostReturn(Request):
    """Omit both `amount` and `lines` to return the whole (remaining) order."""

    amount: Annotated[int, Meta(ge=1, le=10**13, description="Minor currency units")] | None = None
    lines: Annotated[list[ReturnLine], Meta(min_length=1, max_length=500)] | None = None


class MemberOut(Struct):
    id: uuid.UUID
    email: str
    name: str | None
    status: str
    card_number: str
    partner_customer_id: str | None
    linked_at: datetime
    created_at: datetime
    kind: str = "person"
    birth_date: date | None = None
    company_name: str | None = None
    tax_id: str | None = None


class MemberPage(Struct):
    items: list[MemberOut]
    next_cursor: str | None


class BalanceOut(Struct):
    member_id: uuid.UUID
    available: int
    pending: int
    held: int
    expiring_within_30_days: int
    lifetime_earned: int
    lifetime_redeemed: int


class BalanceSnapshot(Struct):
    available: int


class PostingOut(Struct):
    id: int
    kind: str
    member_id: uuid.UUID
    points: int
    order_id: str | None
    description: str | None
    created_at: datetime
    balance: BalanceSnapshot
    metadata: dict[str, Any] | None = None
    expires_at: datetime | None = None
    reverses: int | None = None


class PartnerRef(Struct):
    name: str
    id: uuid.UUID | None = None


class TransactionOut(Struct):
    """A member's transaction. Another brand's appear with `own: false` and only
    brand name, kind, points and date."""

    own: bool
    kind: str
    points: int
    partner: PartnerRef
    created_at: datetime
    id: int | None = None
    order_id: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    reverses: int | None = None
    occurred_at: datetime | None = None


class TransactionPage(Struct):
    items: list[TransactionOut]
    next_cursor: str | None


@dataclass
class OptionalBodyOperation(Operation):
    """The OpenAPI operation of a route whose body may be left out (a reversal, a return,
    a capture, a voucher use): Litestar marks every request body required, so generated
    clients would always send one."""

    def __post_init__(self) -> None:
        if self.request_body is not None:
            self.request_body.required = False


async def strict_body(request: HttpRequest, schema: type[T], default: T | None = None) -> T:
    """Decode the (cached) request body strictly. Litestar converts bodies leniently,
    which would accept "10" or 10.0 as points; money and points must be exact integers.
    With a `default` the body is optional: none at all, or JSON null, gives the default."""
    raw = await request.body()
    if default is not None and not raw.strip():
        return default
    try:
        decoded = msgspec.json.decode(raw, type=schema if default is None else schema | None,
                                      strict=True)
    except msgspec.ValidationError as exc:
        raise ValidationException(
            str(exc), extra=[{"message": str(exc), "key": "", "source": "body"}]
        ) from exc
    check_metadata(decoded)
    return default if decoded is None else decoded


def check_metadata(body: object) -> None:
    """Refuse a body whose `metadata` exceeds MAX_METADATA_BYTES as compact JSON. Checked
    here, where every route that takes `metadata` decodes its body, so no route can store
    one unchecked; msgspec's constraints cannot bound an object by its size."""
    metadata = getattr(body, "metadata", None)
    if metadata is None:
        return
    size = len(msgspec.json.encode(metadata))
    if size > MAX_METADATA_BYTES:
        message = (f"must be at most {MAX_METADATA_BYTES} bytes as compact JSON"
                   f" (this one is {size})")
        raise ValidationException(f"metadata: {message}", extra=[
            {"message": message, "key": "metadata", "source": "body"}])
