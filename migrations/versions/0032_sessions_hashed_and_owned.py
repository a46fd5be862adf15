"""portal sessions: keyed by the SHA-256 of their id, owned by their user

Revision ID: 0032
Revises: 0031

`web_sessions.key` held the raw session id, the very value of the browser's cookie: a
copy of the table (a backup, a replica, a read-only leak) logged anyone in. The store now
keeps only `key_hash`, the hex SHA-256 of the id (web/sessions.py). `user_id` names the
user a logged-in session belongs to, so that a password reset can end every other
session of that user (tenants/sessions.py); it goes with the user.

A hash cannot be turned back into the id the browser holds, so the existing rows are
deleted, both ways: everyone is logged out once and logs in again.

`ix_login_attempts_created_at` serves the maintenance pass, which now purges old login
attempts (and expired sessions, by `ix_web_sessions_expires_at`).
"""
import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM web_sessions")
    op.alter_column("web_sessions", "key", new_column_name="key_hash",
                    type_=sa.String(length=64), existing_nullable=False)
    op.add_column("web_sessions", sa.Column("user_id", sa.UUID(), nullable=True))
    op.create_foreign_key(op.f("fk_web_sessions_user_id_users"), "web_sessions", "users",
                          ["user_id"], ["id"], ondelete="CASCADE")
    op.create_index(op.f("ix_web_sessions_user_id"), "web_sessions", ["user_id"])
    op.create_index(op.f("ix_login_attempts_created_at"), "login_attempts", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_login_attempts_created_at"), table_name="login_attempts")
    op.execute("DELETE FROM web_sessions")
    op.drop_index(op.f("ix_web_sessions_user_id"), table_name="web_sessions")
    op.drop_constraint(op.f("fk_web_sessions_user_id_users"), "web_sessions",
                       type_="foreignkey")
    op.drop_column("web_sessions", "user_id")
    op.alter_column("web_sessions", "key_hash", new_column_name="key",
                    type_=sa.String(length=200), existing_nullable=False)
