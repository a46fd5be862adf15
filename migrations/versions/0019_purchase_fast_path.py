"""purchase fast path: facts read first, then one verified posting statement

Revision ID: 0019
Revises: 0015

The SQL functions in migrations/sql/0019_purchase_fast_path.sql (purchase_facts,
purchase_commit, tier_qualifying_value, and purchase_member_facts, which purchase_begin
now shares): a purchase costs two round trips instead of five; see coalition/purchases.py.
"""
from pathlib import Path

from alembic import op

from coalition.migrate import execute_sql_file, execute_sql_script, split_sql_script

revision = "0019"
down_revision = "0015"
branch_labels = None
depends_on = None

SQL = Path(__file__).parent.parent / "sql"
FUNCTIONS = [
    "purchase_commit(uuid, text, text, uuid, text, text, text, uuid[], timestamptz,"
    " timestamptz, jsonb, text, timestamptz, text, bigint, text, text, jsonb, jsonb, jsonb,"
    " jsonb, jsonb)",
    "tier_qualifying_value(uuid, text, timestamptz, timestamptz, text, timestamptz)",
    "purchase_facts(uuid, uuid, text, text, uuid[], timestamptz, timestamptz)",
]


def upgrade() -> None:
    execute_sql_file(SQL / "0019_purchase_fast_path.sql")


def downgrade() -> None:
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature}")
    # purchase_begin goes back to its 0013 body, which has the facts inline.
    begin = next(s for s in split_sql_script((SQL / "0013_points_lifecycle.sql").read_text())
                 if s.lstrip().startswith("CREATE FUNCTION purchase_begin("))
    execute_sql_script(begin.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute("DROP FUNCTION purchase_member_facts(uuid, uuid, uuid[], timestamptz,"
               " timestamptz)")
