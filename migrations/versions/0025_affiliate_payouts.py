"""affiliate payouts: the settlement payment of each payout, SEPA credits to a third party

Revision ID: 0025
Revises: 0022

An affiliate payout by Stripe Connect or SEPA is a settlement payment with reference
('affiliate_payout', id), linked from the payout (`payment_id`, replacing the unused
`sepa_batch_id`: a batch is the payment's `sepa_message_id`). A SEPA credit to an
affiliate pays the affiliate's account, not the funding partner's, so the payment
carries the creditor account it was queued with.
"""
import sqlalchemy as sa
from alembic import op

revision = '0025'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('affiliate_payouts', sa.Column('payment_id', sa.BigInteger(), nullable=True))
    op.create_foreign_key(op.f('fk_affiliate_payouts_payment_id_settlement_payments'),
                          'affiliate_payouts', 'settlement_payments', ['payment_id'], ['id'])
    op.drop_column('affiliate_payouts', 'sepa_batch_id')
    op.add_column('settlement_payments', sa.Column('creditor_name', sa.String(length=140),
                                                   nullable=True))
    op.add_column('settlement_payments', sa.Column('creditor_iban', sa.String(length=34),
                                                   nullable=True))
    op.add_column('settlement_payments', sa.Column('creditor_bic', sa.String(length=11),
                                                   nullable=True))


def downgrade() -> None:
    op.drop_column('settlement_payments', 'creditor_bic')
    op.drop_column('settlement_payments', 'creditor_iban')
    op.drop_column('settlement_payments', 'creditor_name')
    op.add_column('affiliate_payouts', sa.Column('sepa_batch_id', sa.BigInteger(),
                                                 nullable=True))
    op.drop_constraint(op.f('fk_affiliate_payouts_payment_id_settlement_payments'),
                       'affiliate_payouts', type_='foreignkey')
    op.drop_column('affiliate_payouts', 'payment_id')
