"""prepaid blocks and balances

Revision ID: 0016
Revises: 0018

Prepaid partners buy point blocks; their balance is drawn down by the points their
customers earn (partner-funded lots) and credited back by cancellations, all by triggers
(migrations/sql/0016_prepaid.sql), so every earning path is covered and an issuance
beyond the balance plus the credit limit is refused inside the posting's own transaction.
A partner reads its own blocks and balance under row-level security; writes go through
settlement/prepaid.py on the login role.
"""
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from coalition.migrate import CURRENT_PARTNER, execute_sql_file, wall_tables

SQL = Path(__file__).parent.parent / "sql"

revision = '0016'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('prepaid_balances',
    sa.Column('partner_id', sa.UUID(), nullable=False),
    sa.Column('available', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('paid', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('drawn', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('credited', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('low_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('alert_sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('available = paid - drawn + credited', name=op.f('ck_prepaid_balances_sum')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_prepaid_balances_partner_id_partners')),
    sa.PrimaryKeyConstraint('partner_id', name=op.f('pk_prepaid_balances'))
    )
    op.create_table('prepaid_blocks',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('partner_id', sa.UUID(), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('price', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('issue_price', sa.Numeric(precision=14, scale=6), nullable=False),
    sa.Column('terms_id', sa.BigInteger(), nullable=False),
    sa.Column('fx_rate', sa.Numeric(precision=18, scale=8), nullable=True),
    sa.Column('fx_date', sa.Date(), nullable=True),
    sa.Column('status', sa.String(length=20), server_default='awaiting_payment', nullable=False),
    sa.Column('requested_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('amount_paid', sa.BigInteger(), nullable=True),
    sa.Column('paid_via', sa.String(length=200), nullable=True),
    sa.Column('mismatch_amount', sa.BigInteger(), nullable=True),
    sa.Column('mismatch_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("(status = 'paid') = (paid_at IS NOT NULL AND amount_paid IS NOT NULL)", name=op.f('ck_prepaid_blocks_paid')),
    sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f('ck_prepaid_blocks_currency')),
    sa.CheckConstraint("status IN ('awaiting_payment', 'paid', 'cancelled')", name=op.f('ck_prepaid_blocks_status')),
    sa.CheckConstraint('points > 0', name=op.f('ck_prepaid_blocks_points_positive')),
    sa.CheckConstraint('price >= 0', name=op.f('ck_prepaid_blocks_price')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_prepaid_blocks_partner_id_partners')),
    sa.ForeignKeyConstraint(['terms_id'], ['settlement_terms.id'], name=op.f('fk_prepaid_blocks_terms_id_settlement_terms')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prepaid_blocks'))
    )
    op.create_index(op.f('ix_prepaid_blocks_partner_id'), 'prepaid_blocks', ['partner_id'], unique=False)
    execute_sql_file(SQL / "0016_prepaid.sql")
    wall_tables({"prepaid_blocks": ("SELECT", f"partner_id = {CURRENT_PARTNER}"),
                 "prepaid_balances": ("SELECT", f"partner_id = {CURRENT_PARTNER}")})


def downgrade() -> None:
    execute_sql_file(SQL / "0016_prepaid_down.sql")
    op.drop_index(op.f('ix_prepaid_blocks_partner_id'), table_name='prepaid_blocks')
    op.drop_table('prepaid_blocks')
    op.drop_table('prepaid_balances')
