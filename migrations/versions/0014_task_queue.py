"""task queue: procrastinate's schema for background and periodic jobs

Revision ID: 0014
Revises: 0013

procrastinate (a PostgreSQL-backed task queue, coalition/jobs.py) keeps its jobs, events
and periodic-defer bookkeeping in its own procrastinate_* tables and functions. Its
schema is applied from the installed package (pinned to 3.x in pyproject.toml); a
procrastinate upgrade that changes the schema gets its own migration here, from the
package's sql/migrations folder.
"""
from alembic import op
from procrastinate.schema import SchemaManager

from coalition.migrate import execute_sql_script

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_script(SchemaManager.get_schema())


def downgrade() -> None:
    for table in ("procrastinate_periodic_defers", "procrastinate_events",
                  "procrastinate_jobs", "procrastinate_workers"):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    op.execute("""DO $$
DECLARE f record;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS signature FROM pg_proc p
              JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public' AND p.proname LIKE 'procrastinate%' LOOP
        EXECUTE 'DROP FUNCTION IF EXISTS ' || f.signature || ' CASCADE';
    END LOOP;
END $$""")
    for kind in ("procrastinate_job_status", "procrastinate_job_event_type",
                 "procrastinate_job_to_defer_v1"):
        op.execute(f"DROP TYPE IF EXISTS {kind} CASCADE")
