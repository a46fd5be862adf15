"""events and referral bonuses under their rules' per-member caps and campaign budgets

Revision ID: 0028
Revises: 0027

sql/0028_event_referral_limits.sql: event_begin also reads the member's usage of capped
rules under the wallet lock; event_post and referral_reward take their points from the
campaign budget under the rule's row lock (earning_rule_take_budget), trimming what it
no longer covers, as purchase_post does.
"""
from pathlib import Path

from alembic import op

from coalition.migrate import execute_sql_file, execute_sql_script, split_sql_script

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

SQL = Path(__file__).parent.parent / "sql"


def upgrade() -> None:
    execute_sql_file(SQL / "0028_event_referral_limits.sql")


def _previous(file: str, function: str) -> None:
    """The function's body as an earlier revision's SQL file created it."""
    body = next(s for s in split_sql_script((SQL / file).read_text())
                if s.lstrip().startswith(f"CREATE FUNCTION {function}("))
    execute_sql_script(body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))


def downgrade() -> None:
    op.execute("DROP FUNCTION event_begin(uuid, text, text, uuid, text, text, text, text,"
               " timestamptz, timestamptz, timestamptz, uuid[])")
    _previous("0013_points_lifecycle.sql", "event_begin")
    _previous("0013_points_lifecycle.sql", "event_post")
    _previous("0021_referrals.sql", "referral_reward")
    op.execute("DROP FUNCTION earning_rule_take_budget(uuid, bigint)")
