"""login_attempts count every throttled request: a `kind` column

Revision ID: 0033
Revises: 0032

Sign-ups, password-reset and verification emails and the OAuth client authentications
are limited too (tenants/throttle.py), and counted in the table the login throttle
already keeps, purged by the same maintenance pass: `kind` says which limit a row
counts towards ("login" for every row written so far).
"""
import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("login_attempts", sa.Column("kind", sa.String(length=32), nullable=False,
                                              server_default="login"))


def downgrade() -> None:
    # Rows of the other kinds are no failed logins: kept, they would throttle logins.
    op.execute("DELETE FROM login_attempts WHERE kind <> 'login'")
    op.drop_column("login_attempts", "kind")
