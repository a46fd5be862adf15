"""points given back to a lot reopen it; a reversed redemption repays a debt

Revision ID: 0030
Revises: 0029

sql/0030_restored_points_reopen_lots.sql: ledger_reverse (a redemption's points back to
its lots) and ledger_hold_settle (a released hold's) make a lot active again whether it
was spent, cancelled by a partial earn reversal or expired meanwhile, so the points stay
spendable and `ledger verify` agrees; a reversed redemption repays a return's debt
first, as earns and released holds do. Lots already left closed with points reopen.
"""
from pathlib import Path

from coalition.migrate import execute_sql_file, execute_sql_script, split_sql_script

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None

SQL = Path(__file__).parent.parent / "sql"


def upgrade() -> None:
    execute_sql_file(SQL / "0030_restored_points_reopen_lots.sql")


def _previous(file: str, function: str) -> None:
    """The function's body as an earlier revision's SQL file created it."""
    body = next(s for s in split_sql_script((SQL / file).read_text())
                if s.lstrip().startswith(f"CREATE FUNCTION {function}("))
    execute_sql_script(body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))


def downgrade() -> None:
    # The lots reopened stay open: closing them again would hide spendable points.
    _previous("0001_ledger.sql", "ledger_reverse")
    _previous("0013_points_lifecycle.sql", "ledger_hold_settle")
