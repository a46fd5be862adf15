"""The operator's side of tiers: validating and saving the ladder and its policy, and
the demo ladder. Thresholds are minor units of the coalition currency (spend) or
points, depending on the qualification basis."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from coalition.errors import Conflict, DomainError
from coalition.tiers.ladder import Policy
from coalition.tiers.models import DOWNGRADES, QUALIFICATIONS, WINDOWS
from coalition.tiers.service import reevaluate_all

CODE = re.compile(r"^[a-z][a-z0-9_]{0,29}$")
MAX_TIERS = 10
MAX_BENEFITS = 20


@dataclass
class TierInput:
    code: str
    name: str
    threshold: int
    benefits: list[str] = field(default_factory=list)


def _invalid(detail: str, field_name: str) -> DomainError:
    return DomainError("validation-error", "Invalid tier ladder", detail, status=400,
                       field=field_name)


def validate(tiers: list[TierInput], policy: Policy) -> list[TierInput]:
    """The ladder ordered by threshold, or a 400 naming the field. The lowest tier must
    start at 0 (everyone holds it) and thresholds must rise strictly."""
    if policy.qualification not in QUALIFICATIONS:
        raise _invalid("Qualification is spend or points.", "qualification")
    if policy.window_kind not in WINDOWS:
        raise _invalid("The window is rolling or calendar_year.", "window_kind")
    if not 1 <= policy.window_months <= 60:
        raise _invalid("A rolling window is 1 to 60 months.", "window_months")
    if policy.downgrade not in DOWNGRADES:
        raise _invalid("Downgrade is never, anniversary or rolling.", "downgrade")
    if not 1 <= len(tiers) <= MAX_TIERS:
        raise _invalid(f"A ladder has 1 to {MAX_TIERS} tiers.", "tiers")
    for i, tier in enumerate(tiers):
        if not CODE.match(tier.code):
            raise _invalid("A code is lower-case letters, digits and _, starting with a letter"
                           " (at most 30).", f"tiers[{i}].code")
        if not tier.name.strip() or len(tier.name) > 100:
            raise _invalid("Each tier needs a name of at most 100 characters.",
                           f"tiers[{i}].name")
        if not isinstance(tier.threshold, int) or not 0 <= tier.threshold <= 10**15:
            raise _invalid("A threshold is a whole number, 0 or more.", f"tiers[{i}].threshold")
        tier.benefits = [b.strip() for b in tier.benefits if b.strip()]
        if len(tier.benefits) > MAX_BENEFITS or any(len(b) > 200 for b in tier.benefits):
            raise _invalid(f"At most {MAX_BENEFITS} benefits of 200 characters each.",
                           f"tiers[{i}].benefits")
    if len({t.code for t in tiers}) != len(tiers):
        raise _invalid("Tier codes must be unique.", "tiers")
    ordered = sorted(tiers, key=lambda t: t.threshold)
    if ordered[0].threshold != 0:
        raise _invalid("The lowest tier's threshold must be 0: every member holds it.",
                       "tiers[0].threshold")
    if len({t.threshold for t in tiers}) != len(tiers):
        raise _invalid("Thresholds must differ: each tier needs more than the one below.",
                       "tiers")
    return ordered


async def save_program(conn: asyncpg.Connection, tiers: list[TierInput], policy: Policy,
                       actor: str, now: datetime, *, reevaluate: bool = True) -> int:
    """Replace the ladder and policy; returns how many members' tiers changed when
    everyone is re-evaluated under the new ladder (0 with reevaluate=False)."""
    ordered = validate(tiers, policy)
    async with conn.transaction():
        held = await conn.fetch(
            "SELECT DISTINCT code FROM (SELECT tier_code AS code FROM member_tiers UNION ALL"
            " SELECT earned_code FROM member_tiers UNION ALL"
            " SELECT manual_code FROM member_tiers) x WHERE code <> ALL($1::text[])",
            [t.code for t in ordered])
        if held:
            raise Conflict("tier-in-use", "Tier in use",
                           f"Members hold {', '.join(r['code'] for r in held)}: keep the tier"
                           " (you may rename it or change its threshold).", field="tiers")
        await conn.execute("DELETE FROM tiers WHERE code <> ALL($1::text[])",
                           [t.code for t in ordered])
        await conn.execute("UPDATE tiers SET rank = rank + 1000")   # free the ranks
        for rank, tier in enumerate(ordered):
            await conn.execute(
                "INSERT INTO tiers (code, name, rank, threshold, benefits)"
                " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (code) DO UPDATE SET"
                " name = excluded.name, rank = excluded.rank, threshold = excluded.threshold,"
                " benefits = excluded.benefits", tier.code, tier.name.strip(), rank,
                tier.threshold, _json(tier.benefits))
        await conn.execute(
            "UPDATE tier_settings SET qualification = $1, window_kind = $2, window_months = $3,"
            " downgrade = $4, updated_at = $5, updated_by = $6 WHERE id = 1",
            policy.qualification, policy.window_kind, policy.window_months, policy.downgrade,
            now, actor)
        return await reevaluate_all(conn, now) if reevaluate else 0


def _json(values: list[str]) -> str:
    return json.dumps(values)


DEMO_LADDER = [
    TierInput("standard", "Standard", 0, ["Collect points at every partner brand",
                                           "Birthday bonus"]),
    TierInput("vip", "VIP", 100_000, ["Double points on selected campaigns",
                                      "VIP-only rewards and early access",
                                      "Dedicated account manager for companies"]),
]


async def seed_tiers(conn: asyncpg.Connection, now: datetime) -> int:
    """The demo ladder: Standard, and VIP at 1,000 PLN qualifying spend in a rolling 12
    months (anniversary downgrade); then one evaluation pass. Returns the changes."""
    policy = Policy(qualification="spend", window_kind="rolling", window_months=12,
                    downgrade="anniversary")
    return await save_program(conn, DEMO_LADDER, policy, "demo", now)
