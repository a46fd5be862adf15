"""member-get-member referrals: codes, configurable bonuses, qualification, figures

Revision ID: 0021
Revises: 0020

Members get a referral code (drawn lazily, coalition/referrals.py). A referral stays
open until the referee's first qualifying purchase, which closes it once (qualified_at,
purchase_id, outcome, the welcome entry). The SQL in migrations/sql/0021_referrals.sql:
purchase_post and purchase_member_facts replaced (bonuses by the rule's funding, the
referee's welcome bonus, the referrer's monthly limit counted under the referrer's
wallet lock), member_referral_bind (by card number or code) in place of
member_referral_record, and the referral figures for analytics.
"""
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from coalition.migrate import execute_sql_file, execute_sql_script, split_sql_script

revision = "0021"
down_revision = '0020'
branch_labels = None
depends_on = None

SQL = Path(__file__).parent.parent / "sql"


def upgrade() -> None:
    op.add_column("members", sa.Column("referral_code", sa.String(length=8), nullable=True))
    op.create_unique_constraint(op.f("uq_members_referral_code"), "members", ["referral_code"])
    op.create_check_constraint(op.f("ck_members_referral_code"), "members",
                               "referral_code ~ '^[2-9A-HJKMNP-Z]{8}$'")
    op.add_column("purchases", sa.Column("referral", postgresql.JSONB(astext_type=sa.Text()),
                                         nullable=True))
    op.add_column("member_referrals", sa.Column("welcome_entry_id", sa.BigInteger(),
                                                nullable=True))
    op.add_column("member_referrals", sa.Column("purchase_id", sa.BigInteger(), nullable=True))
    op.add_column("member_referrals", sa.Column("qualified_at", sa.DateTime(timezone=True),
                                                nullable=True))
    op.add_column("member_referrals", sa.Column("outcome", sa.String(length=10),
                                                nullable=True))
    op.create_foreign_key(op.f("fk_member_referrals_welcome_entry_id_journal_entries"),
                          "member_referrals", "journal_entries", ["welcome_entry_id"], ["id"])
    op.create_foreign_key(op.f("fk_member_referrals_purchase_id_purchases"),
                          "member_referrals", "purchases", ["purchase_id"], ["id"])
    # Referrals rewarded before this revision were closed by that reward.
    op.execute("UPDATE member_referrals r SET qualified_at = e.occurred_at,"
               " outcome = 'rewarded' FROM journal_entries e WHERE e.id = r.rewarded_entry_id")
    op.create_check_constraint(op.f("ck_member_referrals_outcome"), "member_referrals",
                               "outcome IN ('rewarded', 'limit')")
    op.create_check_constraint(op.f("ck_member_referrals_closed"), "member_referrals",
                               "(qualified_at IS NULL) = (outcome IS NULL)")
    execute_sql_file(SQL / "0021_referrals.sql")


def _previous(file: str, head: str) -> None:
    """Re-create one function from an earlier revision's SQL file."""
    body = next(s for s in split_sql_script((SQL / file).read_text())
                if s.lstrip().startswith(head))
    execute_sql_script(body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))


def downgrade() -> None:
    op.execute("DROP FUNCTION referral_figures_mine(timestamptz, timestamptz)")
    op.execute("DROP FUNCTION referral_figures(uuid, timestamptz, timestamptz)")
    op.execute("DROP FUNCTION member_referral_bind(uuid, text, text, uuid)")
    _previous("0013_points_lifecycle.sql", "CREATE FUNCTION member_referral_record(")
    _previous("0013_points_lifecycle.sql", "CREATE FUNCTION purchase_post(")
    op.execute("DROP FUNCTION referral_reward(uuid, uuid, bigint, text, timestamptz,"
               " timestamptz, jsonb)")
    _previous("0019_purchase_fast_path.sql", "CREATE FUNCTION purchase_member_facts(")
    op.drop_constraint(op.f("ck_member_referrals_closed"), "member_referrals", type_="check")
    op.drop_constraint(op.f("ck_member_referrals_outcome"), "member_referrals", type_="check")
    op.drop_constraint(op.f("fk_member_referrals_purchase_id_purchases"), "member_referrals",
                       type_="foreignkey")
    op.drop_constraint(op.f("fk_member_referrals_welcome_entry_id_journal_entries"),
                       "member_referrals", type_="foreignkey")
    for column in ("outcome", "qualified_at", "purchase_id", "welcome_entry_id"):
        op.drop_column("member_referrals", column)
    op.drop_constraint(op.f("ck_members_referral_code"), "members", type_="check")
    op.drop_constraint(op.f("uq_members_referral_code"), "members", type_="unique")
    op.drop_column("members", "referral_code")
    op.drop_column("purchases", "referral")
