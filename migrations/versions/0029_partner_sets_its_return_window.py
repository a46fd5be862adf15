"""a partner's owner sets its return window from the console

Revision ID: 0029
Revises: 0028

The partner console runs as coalition_tenant under row-level security (0007), which
could only read the partner's own row. The return window (`partners.pending_days`) is
the partner's to set, so the tenant may now update that one column, of its own row only
(the policy's USING/WITH CHECK), within the column's check (0..365). Status, slug and
every other column stay the operator's.
"""
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

ROLE = "coalition_tenant"


def upgrade() -> None:
    op.execute(f"GRANT UPDATE (pending_days) ON partners TO {ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE UPDATE (pending_days) ON partners FROM {ROLE}")
