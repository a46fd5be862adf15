"""points lifecycle: pending points, expiry, negative balances, checkout holds, purchases

Revision ID: 0013
Revises: 0012

The SQL functions in migrations/sql/0013_points_lifecycle.sql: purchase and event
posting in two steps (begin: idempotency, member, locks and what the rules need; post:
entries, lots, rule hits), proportional returns under the coalition's return policy,
activation of pending lots, expiry into breakage, and hold/capture/void.
"""
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from coalition.migrate import execute_sql_file

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

FUNCTIONS = [
    "ledger_partner_account(uuid, text)", "ledger_operator_account(text)",
    "ledger_lot_expiry(timestamptz)", "ledger_find_member(uuid, uuid, text, text)", "ledger_repay_debt(uuid, bigint, bigint, bigint)",
    "purchase_begin(uuid, text, text, uuid, text, text, text, uuid[], timestamptz, timestamptz)",
    "ledger_credit_lots(bigint, uuid, uuid, bigint, bigint, timestamptz, timestamptz)",
    "purchase_post(uuid, uuid, text, text, text, timestamptz, text, bigint, text, text, jsonb,"
    " jsonb, jsonb, jsonb, timestamptz)",
    "purchase_return(uuid, text, bigint, jsonb, text, text, text, timestamptz)",
    "ledger_activate_due(timestamptz, int)", "ledger_expire_due(timestamptz, int)",
    "ledger_hold(uuid, uuid, bigint, text, text, text, text, text, timestamptz)",
    "ledger_hold_body(uuid, bigint)", "ledger_hold_settle(uuid, bigint, text, text, text)",
    "ledger_hold_close(uuid, uuid, bigint, text, text, text)",
    "ledger_expire_holds(timestamptz, int)",
    "event_begin(uuid, text, text, uuid, text, text, text, text, timestamptz, timestamptz,"
    " timestamptz)",
    "event_post(uuid, uuid, text, text, text, text, timestamptz, jsonb, jsonb)",
    "member_referral_record(uuid, text, uuid)",
]


def upgrade() -> None:
    op.add_column("purchase_returns",
                  sa.Column("debt", sa.BigInteger(), server_default="0", nullable=False))
    op.create_index("ix_purchase_returns_entry", "purchase_returns", ["entry_id"])
    execute_sql_file(Path(__file__).parent.parent / "sql" / "0013_points_lifecycle.sql")


def downgrade() -> None:
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    # ledger_earn and ledger_take_from_lots go back to their 0001 bodies only with a
    # rebuild; their 0013 bodies behave the same on data without debts or holds.
    op.drop_index("ix_purchase_returns_entry", "purchase_returns")
    op.drop_column("purchase_returns", "debt")
