"""returns release rule usage: per-member caps and campaign budgets

Revision ID: 0027
Revises: 0026

A trigger on purchase_returns (sql/0027_returns_release_rules.sql) writes negative rule
hits for the returned part of the order and gives the budget back, so a member whose
capped bonus was returned can earn it again and a campaign's budget is not spent on
orders that came back.
"""
from pathlib import Path

from alembic import op

from coalition.migrate import execute_sql_file

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

SQL = Path(__file__).parent.parent / "sql"


def upgrade() -> None:
    execute_sql_file(SQL / "0027_returns_release_rules.sql")


def downgrade() -> None:
    op.execute("DROP TRIGGER purchase_returns_release_rules ON purchase_returns")
    op.execute("DROP FUNCTION purchase_return_release_rules()")
