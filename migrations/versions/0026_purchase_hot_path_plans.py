"""purchase hot path: plan-stable lookups, an index per fact, no GIN on order lines

Revision ID: 0026
Revises: 0024

Measured with pg_stat_statements on the ledger benchmark (README, "Measured"):
- "first purchase at this partner" ANDed a bitmap of the whole partner's purchases
  with the member's; (member_id, partner_id) answers it from one member's entries;
- ledger_find_member, tier_qualifying_value, ledger_operator_account, the usage sum of
  purchase_member_facts and purchase_commit's tier-state check were planned afresh on
  every call
  (sql/0026_purchase_plans.sql gives each a plan that stays cached);
- order lines, breakdowns and stored responses are compressed with LZ4 where the server
  has it;
- the GIN index on purchases.lines served no query (segments read lines with
  jsonb_array_elements) and cost every purchase twenty lines' worth of index entries.
"""
from pathlib import Path

from alembic import op

from coalition.migrate import execute_sql_file, execute_sql_script, split_sql_script

revision = "0026"
down_revision = "0024"
branch_labels = None
depends_on = None

SQL = Path(__file__).parent.parent / "sql"


def upgrade() -> None:
    execute_sql_file(SQL / "0026_purchase_plans.sql")
    op.create_index("ix_purchases_member_partner", "purchases", ["member_id", "partner_id"])
    op.drop_index("ix_purchases_lines", table_name="purchases")


def _restore(file: str, function: str) -> None:
    """The function's body as the earlier migration's file created it."""
    body = next(s for s in split_sql_script((SQL / file).read_text())
                if s.lstrip().startswith(f"CREATE FUNCTION {function}("))
    execute_sql_script(body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))


def downgrade() -> None:
    op.execute("ALTER TABLE purchases ALTER COLUMN lines SET COMPRESSION DEFAULT,"
               " ALTER COLUMN breakdown SET COMPRESSION DEFAULT")
    op.execute("ALTER TABLE idempotency_keys ALTER COLUMN response SET COMPRESSION DEFAULT")
    op.create_index("ix_purchases_lines", "purchases", ["lines"], postgresql_using="gin",
                    postgresql_ops={"lines": "jsonb_path_ops"})
    op.drop_index("ix_purchases_member_partner", table_name="purchases")
    op.execute("ALTER FUNCTION purchase_member_facts(uuid, uuid, uuid[], timestamptz,"
               " timestamptz) RESET ALL")
    _restore("0013_points_lifecycle.sql", "ledger_operator_account")
    _restore("0013_points_lifecycle.sql", "ledger_find_member")
    _restore("0019_purchase_fast_path.sql", "tier_qualifying_value")
    _restore("0019_purchase_fast_path.sql", "purchase_commit")
