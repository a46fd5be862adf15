"""Member-get-member referrals.

Codes. Every member can have one referral code: 8 characters from an alphabet without
the look-alikes 0/O, 1/I/L (31 symbols, about 8.5 x 10^11 codes), drawn with `secrets`
the first time the member's home page shows it, unique (a collision draws again). The
shareable link is `/join/{code}`. Codes are read case-insensitively.

Binding. A member created with a referrer's code (the portal's /join link, or the
enrolment API's `referral_code`) or card number (`referrer_card_number`) is bound to
that referrer, once: never to themselves, and an existing member is never re-bound
(SQL member_referral_bind).

Qualification. The referral stays open until the referee's **first qualifying
purchase**: the referee's earliest purchase, at any partner, posted while the referral
is open, for which one of the `referral` rules active for that purchase (the buying
partner's own and the coalition's, in the engine's order, targeted at the referrer)
applies and whose total is at least the rule's `min_amount` (minor units of the
coalition currency; a purchase in another currency qualifies only for a rule without a
minimum). Purchases that do not qualify (below the minimum, or while no referral rule
applies) leave the referral open; the first that qualifies closes it, exactly once,
in the purchase's own transaction (SQL referral_reward): the referrer earns the rule's
`points` and the referee its `welcome_points`, funded by the buying partner or by the
coalition as the rule's `funding` says, each recorded as a rule hit of the rule version.
When the referrer already has `monthly_limit` rewarded referrals in that calendar month
(coalition time zone, by the purchase's time) the referral still closes: the referee
gets the welcome bonus, the referrer nothing (outcome `limit`). The rule's per-member
caps are the referrer's: its usage is read under the referrer's wallet lock, held until
the purchase commits (coalition/earning), so they are exact when referees of one referrer
qualify at once. A campaign budget pays the referrer's bonus, then the welcome bonus,
taken under the rule's row lock; a rule whose budget or referrer's cap is used up does
not apply, and a budget that ran out between the decision and the posting pays what is
left (a referrer left with nothing: outcome `limit`). Returns of the qualifying
purchase do not take the bonuses back."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalized(raw: str | None) -> str | None:
    """The code as stored (upper case, spaces and dashes dropped), or None when it
    cannot be a code at all."""
    if raw is None:
        return None
    code = raw.strip().upper().replace("-", "").replace(" ", "")
    if len(code) != CODE_LENGTH or any(c not in ALPHABET for c in code):
        return None
    return code


async def ensure_code(conn: Any, member_id: uuid.UUID) -> str:
    """The member's code, drawn now if it has none (`conn`: an asyncpg connection or
    pool). Concurrent calls agree: the row lock makes the second keep the first's."""
    # Read first: the member's home shows the code on every visit, and a GET must not
    # rewrite (and lock) the member row each time once the code is drawn.
    if code := await conn.fetchval("SELECT referral_code FROM members WHERE id = $1",
                                   member_id):
        return code
    for _ in range(10):
        try:
            return await conn.fetchval(
                "UPDATE members SET referral_code = coalesce(referral_code, $2)"
                " WHERE id = $1 RETURNING referral_code", member_id, new_code())
        except asyncpg.UniqueViolationError:
            continue
    raise RuntimeError("could not draw a unique referral code")


@dataclass(frozen=True)
class Figures:
    """Referral figures of one period (SQL referral_figures); rates in tenths of a
    percent, rounded down, None when there is nothing to divide by."""

    label: str
    new_members: int
    referred: int
    qualified: int
    rewarded: int
    referrers: int

    @staticmethod
    def _rate(part: int, whole: int) -> str | None:
        if not whole:
            return None
        tenths = part * 1000 // whole
        return f"{tenths // 10}.{tenths % 10}%"

    @property
    def referral_rate(self) -> str | None:
        """Share of the period's new members who were referred."""
        return self._rate(self.referred, self.new_members)

    @property
    def qualification_rate(self) -> str | None:
        """Share of the referred who made their qualifying purchase."""
        return self._rate(self.qualified, self.referred)


def figures_of(label: str, row: Any) -> Figures:
    return Figures(label, row["new_members"], row["referred"], row["qualified"],
                   row["rewarded"], row["referrers"])


async def figures(conn: Any, periods: list[tuple[str, datetime, datetime]],
                  partner_id: uuid.UUID | None = None) -> list[Figures]:
    """Coalition-wide (`partner_id` None; the login role) or one partner's members."""
    return [figures_of(label, await conn.fetchrow(
        "SELECT * FROM referral_figures($1, $2, $3)", partner_id, start, end))
        for label, start, end in periods]


def report_periods(now: datetime, timezone: str) -> list[tuple[str, datetime, datetime]]:
    """This calendar month so far, the last one, and the twelve months before this one
    (coalition time zone)."""
    tz = ZoneInfo(timezone)
    month = now.astimezone(tz).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last = month.replace(year=month.year - (month.month == 1),
                         month=(month.month - 2) % 12 + 1)
    year_ago = month.replace(year=month.year - 1)
    return [("This month", month, now), ("Last month", last, month),
            ("Last 12 months", year_ago, month)]
