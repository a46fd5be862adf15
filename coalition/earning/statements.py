"""The purchase path's SQL and its parameters, built in one place.

Each statement is a frozen dataclass whose fields are its parameters. `@statement`
numbers the template's `{field}` placeholders $1, $2, ... in the order the fields are
declared, once, when this module is imported, and `args()` gives the values in that
same order: nobody counts positions. A placeholder that names no field, or a field the
template never uses, fails the import. The SQL functions (migrations/sql) are called
with named arguments (`p_partner => $1`), which PostgreSQL checks against their
signatures as well.

The joins fold into the statements the purchase runs anyway what it needs to know
besides the posting function's answer, so the hot path pays no round trip for them:
the member's targeting context (coalition.audience), the tier program and, on the fast
path, the member's tier facts (coalition.tiers), and whether the member has a stored
affiliate attribution at the partner (only then does a purchase without a click id or
code pay for attribution)."""

# ruff: noqa: S608 (every statement here is constant text: its values are parameters)
from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from operator import attrgetter
from typing import Any, ClassVar, TypeVar, dataclass_transform

from coalition.audience import context_join
from coalition.tiers.service import PROGRAM_COLUMNS, facts_join, lock_sql

Json = str  # JSON text for a jsonb parameter
S = TypeVar("S", bound="Statement")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class Statement:
    """A statement with its parameters; `sql` is set by `@statement`."""

    sql: ClassVar[str]
    _values: ClassVar[Callable[[Any], tuple[Any, ...]]]

    def args(self) -> tuple[Any, ...]:
        """The parameters, in the order of their $n in `sql`."""
        return self._values(self)


def _render(template: str, names: Sequence[str]) -> str:
    number = {name: f"${n}" for n, name in enumerate(names, 1)}
    used: set[str] = set()

    def place(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in number:
            raise TypeError(f"{{{name}}} is not a parameter of this statement")
        used.add(name)
        return number[name]

    sql = _PLACEHOLDER.sub(place, template)
    if unused := [name for name in names if name not in used]:
        raise TypeError(f"parameters the statement never uses: {unused}")
    return sql


@dataclass_transform(frozen_default=True)
def statement(template: str) -> Callable[[type[S]], type[S]]:
    """Make the class a frozen dataclass whose `sql` is `template` with each
    `{field}` replaced by its parameter number."""
    def make(cls: type[S]) -> type[S]:
        made = dataclass(frozen=True, slots=True)(cls)
        names = [f.name for f in fields(made)]
        made.sql = _render(template, names)
        getter = attrgetter(*names)
        made._values = staticmethod(getter if len(names) > 1 else lambda s: (getter(s),))
        return made
    return make


def named(*names: str) -> str:
    """Named arguments `p_name => {name}` for a SQL function (their parameters are
    all called p_...)."""
    return ", ".join(f"p_{name} => {{{name}}}" for name in names)


def _attributed(member_column: str) -> str:
    return (" LEFT JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM affiliate_attributions aa"
            f" WHERE aa.member_id = {member_column} AND aa.partner_id = {{partner}})"
            " AS affiliate_attributed) af ON true")


_MEMBER_FACTS = ("capped_rules", "day_start", "month_start")


@dataclass(frozen=True, slots=True)
class _PurchaseClaim(Statement):
    """What both postings of a purchase begin with, in this order: the idempotency
    claim, the member reference, the order, and the capped rules' usage periods."""

    partner: uuid.UUID
    idem_key: str | None
    request_hash: str | None
    member: uuid.UUID | None
    card: str | None
    customer: str | None
    order_id: str
    capped_rules: list[uuid.UUID]
    day_start: datetime
    month_start: datetime


@statement(
    "SELECT * FROM purchase_begin("
    + named("partner", "idem_key", "request_hash", "member", "card", "customer",
            "order_id", *_MEMBER_FACTS) + ") b"
    + context_join("b.member_id")
    # The tier ladder, and the member's tier lock, which the re-evaluation after posting
    # needs (taken after the wallet lock, the order every path uses).
    + f" LEFT JOIN LATERAL (SELECT {PROGRAM_COLUMNS}, {lock_sql('b.member_id')}"
    " AS tier_lock WHERE b.proceed) tp ON true"
    + _attributed("b.member_id"))
class PurchaseBegin(_PurchaseClaim):
    """The locked path's first step (coalition/earning/posting.py)."""


_ORDER = ("order_id", "occurred_at", "currency", "total", "channel", "store", "lines",
          "hits", "skipped", "referral")


@statement("SELECT status, body FROM purchase_post("
           + named("partner", "member", "idem_key", "actor", *_ORDER, "posted_at") + ")")
class PurchasePost(Statement):
    """The locked path's last step."""

    partner: uuid.UUID
    member: uuid.UUID
    idem_key: str | None
    actor: str
    order_id: str
    occurred_at: datetime
    currency: str
    total: int
    channel: str
    store: str | None
    lines: Json
    hits: Json
    skipped: Json
    referral: Json | None
    posted_at: datetime


@statement(
    "SELECT * FROM purchase_facts("
    + named("partner", "member", "card", "customer", *_MEMBER_FACTS) + ") f"
    + context_join("f.member_id")
    + facts_join("f.member_id", named("basis", "start", "earlier", "currency", "now"))
    + _attributed("f.member_id"))
class PurchaseFacts(Statement):
    """The fast path's read, without a lock (purchase_commit takes it and checks)."""

    partner: uuid.UUID
    member: uuid.UUID | None
    card: str | None
    customer: str | None
    capped_rules: list[uuid.UUID]
    day_start: datetime
    month_start: datetime
    # tier_qualifying_value's window (coalition.tiers.QualifyingWindow)
    basis: str
    start: datetime
    earlier: datetime
    currency: str
    now: datetime


@statement("SELECT status, body FROM purchase_commit("
           + named("partner", "idem_key", "request_hash", "member", "card", "customer",
                   "order_id", *_MEMBER_FACTS, "expected", "actor", "occurred_at",
                   "currency", "total", "channel", "store", "lines", "hits", "skipped",
                   "referral", "tier", "posted_at") + ")")
class PurchaseCommit(_PurchaseClaim):
    """The fast path's posting: claims, locks, checks the facts in `expected` (and the
    tier facts in `tier`) and posts, or raises STALE_FACTS having written nothing."""

    expected: Json
    actor: str
    occurred_at: datetime
    currency: str
    total: int
    channel: str
    store: str | None
    lines: Json
    hits: Json
    skipped: Json
    referral: Json | None
    tier: Json | None
    posted_at: datetime


@statement("UPDATE idempotency_keys SET response = {response}"
           " WHERE partner_id = {partner} AND key = {key}")
class AmendResponse(Statement):
    """The stored copy of a posted response, with what followed the posting added."""

    partner: uuid.UUID
    key: str
    response: Json


@statement("SELECT * FROM event_begin("
           + named("partner", "idem_key", "request_hash", "member", "card", "customer",
                   "event_type", "reference", "day_start", "month_start", "year_start",
                   "capped_rules") + ")")
class EventBegin(Statement):
    partner: uuid.UUID
    idem_key: str | None
    request_hash: str | None
    member: uuid.UUID | None
    card: str | None
    customer: str | None
    event_type: str
    reference: str
    day_start: datetime
    month_start: datetime
    year_start: datetime
    capped_rules: list[uuid.UUID]


@statement("SELECT status, body FROM event_post("
           + named("partner", "member", "idem_key", "actor", "event_type", "reference",
                   "occurred_at", "hits", "skipped", "posted_at") + ")")
class EventPost(Statement):
    partner: uuid.UUID
    member: uuid.UUID
    idem_key: str | None
    actor: str
    event_type: str
    reference: str
    occurred_at: datetime
    hits: Json
    skipped: Json
    posted_at: datetime
