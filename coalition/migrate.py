"""Run Alembic migrations programmatically (CLI, tests, benchmarks)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from coalition.db import DatabaseUrl

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: DatabaseUrl) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.raw.replace("%", "%%"))
    return config


def upgrade(url: DatabaseUrl, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: DatabaseUrl, revision: str = "head") -> None:
    # env.py runs its own event loop, so it must not run inside the caller's.
    await asyncio.to_thread(upgrade, url, revision)


def split_sql_script(script: str) -> list[str]:
    """Split a SQL script into statements, keeping dollar-quoted bodies whole.

    asyncpg runs each statement as a prepared statement, which takes one command."""
    statements: list[str] = []
    current: list[str] = []
    in_body = False
    for line in script.splitlines():
        stripped = line.strip()
        if not in_body and (not stripped or stripped.startswith("--")):
            continue
        current.append(line)
        if line.count("$$") % 2 == 1:
            in_body = not in_body
        if not in_body and stripped.endswith(";"):
            statements.append("\n".join(current))
            current = []
    if current:
        statements.append("\n".join(current))
    return statements


def execute_sql_file(path: Path) -> None:
    """Run a SQL script from inside an Alembic migration."""
    execute_sql_script(path.read_text())


def execute_sql_script(script: str) -> None:
    from alembic import op

    for statement in split_sql_script(script):
        op.get_bind().exec_driver_sql(statement)


# The row-level-security wall of migration 0007, for the tables later migrations add.
TENANT_ROLE = "coalition_tenant"
CURRENT_PARTNER = "nullif(current_setting('coalition.partner_id', true), '')::uuid"


def wall_tables(policies: dict[str, tuple[str, str]]) -> None:
    """Grant the tenant role `privileges` on each table and let it see (and write) only
    the rows matching `condition`: {table: (privileges, condition)}."""
    from alembic import op

    for table, (privileges, condition) in policies.items():
        op.execute(f"GRANT {privileges} ON {table} TO {TENANT_ROLE}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_isolation ON {table} AS PERMISSIVE FOR ALL"
                   f" TO {TENANT_ROLE} USING ({condition}) WITH CHECK ({condition})")
