"""business time as a parameter: SQL functions take the platform clock's reading

Revision ID: 0031
Revises: 0030

sql/0031_business_clock.sql: ledger_withdraw, event_post and purchase_commit take the
posting moment (p_posted_at); ledger_hold, ledger_hold_close and ledger_hold_settle take
p_now; ledger_credit_lots decides "pending" against its entry's created_at, and
prepaid_draw takes the rate card in force when the entries were posted. None of them
calls now() for a business decision any more (coalition/clock.py). ledger_activate_due and
ledger_expire_due date their entries' created_at by p_now, and member_find_or_create takes
p_now for a new member's created_at.
"""
from pathlib import Path

from alembic import op

from coalition.migrate import execute_sql_file, execute_sql_script, split_sql_script

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

SQL = Path(__file__).parent.parent / "sql"


def upgrade() -> None:
    execute_sql_file(SQL / "0031_business_clock.sql")


def _previous(file: str, function: str) -> None:
    """The function's body as an earlier revision's SQL file created it."""
    body = next(s for s in split_sql_script((SQL / file).read_text())
                if s.lstrip().startswith((f"CREATE FUNCTION {function}(",
                                          f"CREATE OR REPLACE FUNCTION {function}(")))
    execute_sql_script(body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))


def downgrade() -> None:
    op.execute("DROP FUNCTION ledger_withdraw(uuid, uuid, bigint, text, text, jsonb, text,"
               " text, text, timestamptz)")
    op.execute("DROP FUNCTION ledger_hold(uuid, uuid, bigint, text, text, text, text, text,"
               " timestamptz, timestamptz)")
    op.execute("DROP FUNCTION ledger_hold_close(uuid, uuid, bigint, text, text, text,"
               " timestamptz)")
    op.execute("DROP FUNCTION ledger_hold_settle(uuid, bigint, text, text, text, timestamptz)")
    op.execute("DROP FUNCTION event_post(uuid, uuid, text, text, text, text, timestamptz,"
               " jsonb, jsonb, timestamptz)")
    op.execute("DROP FUNCTION member_find_or_create(text, text, text, date, text, text, text,"
               " timestamptz)")
    op.execute("DROP FUNCTION purchase_commit(uuid, text, text, uuid, text, text, text,"
               " uuid[], timestamptz, timestamptz, jsonb, text, timestamptz, text, bigint,"
               " text, text, jsonb, jsonb, jsonb, jsonb, jsonb, timestamptz)")
    _previous("0001_ledger.sql", "ledger_withdraw")
    _previous("0013_points_lifecycle.sql", "ledger_credit_lots")
    _previous("0013_points_lifecycle.sql", "ledger_hold")
    _previous("0013_points_lifecycle.sql", "ledger_hold_close")
    _previous("0013_points_lifecycle.sql", "ledger_expire_holds")
    _previous("0030_restored_points_reopen_lots.sql", "ledger_hold_settle")
    _previous("0028_event_referral_limits.sql", "event_post")
    _previous("0026_purchase_plans.sql", "purchase_commit")
    _previous("0016_prepaid.sql", "prepaid_draw")
    _previous("0013_points_lifecycle.sql", "ledger_activate_due")
    _previous("0013_points_lifecycle.sql", "ledger_expire_due")
    _previous("0011_member_door.sql", "member_find_or_create")
    op.execute("REVOKE ALL ON FUNCTION member_find_or_create(text, text, text, date, text,"
               " text, text) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION member_find_or_create(text, text, text, date, text,"
               " text, text) TO coalition_tenant")
