"""auth notify: revocations and partner status changes invalidate token caches at once

Revision ID: 0002
Revises: 0001
"""
from pathlib import Path

from alembic import op

from coalition.migrate import execute_sql_file

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file(Path(__file__).parent.parent / "sql" / "0002_auth_notify.sql")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS partners_status_changed ON partners")
    op.execute("DROP TRIGGER IF EXISTS oauth_clients_revoked ON oauth_clients")
    op.execute("DROP TRIGGER IF EXISTS oauth_tokens_revoked ON oauth_tokens")
    op.execute("DROP FUNCTION IF EXISTS auth_notify_change")
