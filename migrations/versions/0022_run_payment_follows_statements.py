"""a paid settlement run goes back to invoiced

Revision ID: 0022
Revises: 0021

A statement of a paid run whose payment fails or is reversed afterwards (a reversed
transfer, a late payment failure) sends the run back to `invoiced`, so the run's state
follows its statements and `close` keeps refusing until everything is settled again.
The run trigger of 0017 gains the one transition ('paid', 'invoiced'); nothing else of
it changes.
"""
from alembic import op

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None

_TRANSITIONS = (
    "('draft', 'in_review'), ('in_review', 'draft'), ('in_review', 'finalized'),"
    " ('finalized', 'invoiced'), ('finalized', 'paid'), ('finalized', 'closed'),"
    " ('invoiced', 'paid'), ('invoiced', 'closed'), ('paid', 'closed')")


def _guard(transitions: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION settlement_guard_run() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'a % settlement run cannot be deleted', OLD.status
                USING ERRCODE = 'SE010';
        END IF;
        RETURN OLD;
    END IF;
    IF NEW.status <> OLD.status AND NOT (OLD.status, NEW.status) IN ({transitions}) THEN
        RAISE EXCEPTION 'a settlement run cannot go from % to %', OLD.status, NEW.status
            USING ERRCODE = 'SE001';
    END IF;
    IF OLD.status NOT IN ('draft', 'in_review')
       AND ((NEW.period, NEW.cycle, NEW.period_start, NEW.period_end, NEW.currency,
             NEW.computed_at, NEW.content_hash, NEW.finalized_at)
            IS DISTINCT FROM
            (OLD.period, OLD.cycle, OLD.period_start, OLD.period_end, OLD.currency,
             OLD.computed_at, OLD.content_hash, OLD.finalized_at)) THEN
        RAISE EXCEPTION 'a finalized settlement run cannot change' USING ERRCODE = 'SE010';
    END IF;
    IF OLD.status = 'in_review' AND NEW.status = 'finalized'
       AND NEW.content_hash IS DISTINCT FROM settlement_content_hash(NEW.id) THEN
        RAISE EXCEPTION 'finalizing needs the content hash of the run'
            USING ERRCODE = 'SE010';
    END IF;
    IF NEW.status IN ('draft', 'in_review') AND NEW.content_hash IS NOT NULL THEN
        RAISE EXCEPTION 'only a finalized run has a content hash' USING ERRCODE = 'SE010';
    END IF;
    RETURN NEW;
END $$
"""


def upgrade() -> None:
    op.execute(_guard(_TRANSITIONS + ", ('paid', 'invoiced')"))


def downgrade() -> None:
    op.execute(_guard(_TRANSITIONS))
