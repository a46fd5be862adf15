"""affiliate commissions: settlement line, tenant writes for leads

Revision ID: 0024
Revises: 0025

settlement_compute() gains the `affiliate_commission` line
(sql/0024_settlement_affiliate_commissions.sql): approved commissions not yet on a
statement are claimed by the run (affiliate_commissions.settlement_run_id) and owed by
the program's partner. The tenant role may now store a member's attribution and a lead
commission (member enrolment over the API runs under the partner's row-level security).
"""
from pathlib import Path

from alembic import op

from coalition.migrate import TENANT_ROLE, execute_sql_file, execute_sql_script, split_sql_script

revision = "0024"
down_revision = "0025"
branch_labels = None
depends_on = None

SQL = Path(__file__).parent.parent / "sql"


def upgrade() -> None:
    execute_sql_file(SQL / "0024_settlement_affiliate_commissions.sql")
    op.execute(f"GRANT INSERT, UPDATE ON affiliate_attributions TO {TENANT_ROLE}")
    op.execute(f"GRANT INSERT ON affiliate_commissions TO {TENANT_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE INSERT ON affiliate_commissions FROM {TENANT_ROLE}")
    op.execute(f"REVOKE INSERT, UPDATE ON affiliate_attributions FROM {TENANT_ROLE}")
    op.execute("UPDATE affiliate_commissions SET settlement_run_id = NULL")
    compute = next(s for s in split_sql_script((SQL / "0017_settlement.sql").read_text())
                   if s.lstrip().startswith("CREATE FUNCTION settlement_compute("))
    execute_sql_script(compute.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
