"""Coalition-wide tiers: the ladder and its policy (ladder.py, pure), their tables
(models.py) and the database side (service.py). Seeding for the demo is in demo.py."""

from coalition.tiers.ladder import Change, Policy, TierDef, TierState
from coalition.tiers.service import (
    TierStatus,
    assign_manual,
    end_manual,
    history,
    load_program,
    member_status,
    reevaluate_all,
    reevaluate_member,
)

__all__ = ["Change", "Policy", "TierDef", "TierState", "TierStatus", "assign_manual",
           "end_manual", "history", "load_program", "member_status", "reevaluate_all",
           "reevaluate_member"]
