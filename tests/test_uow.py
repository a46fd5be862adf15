"""The unit of work (coalition/uow.py): raw SQL, the ORM session and the audit row of one
Tx commit together or not at all, on one connection."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from litestar import Litestar
from sqlalchemy import select

from coalition.uow import Actor, Database, OutsideTransaction, Tx, one_statement
from tenants.models import AuditEntry
from tests.helpers import PartnerClient


@pytest.fixture
def database(app: Litestar) -> Database:
    return app.state.db


async def _write_three_ways(tx: Tx, marker: str) -> None:
    session = await tx.session()
    session.add(AuditEntry(actor="test", action="uow.orm", target=marker, details={"n": 1}))
    await session.flush()
    await tx.conn.execute("INSERT INTO audit_log (actor, action, target) VALUES"
                          " ('test', 'uow.raw', $1)", marker)
    await tx.audit("uow.audit", target=marker, n=2)


async def _count(pool: asyncpg.Pool, marker: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM audit_log WHERE target = $1", marker)


async def test_everything_a_use_case_writes_commits_together(database: Database,
                                                             db: asyncpg.Pool) -> None:
    marker = str(uuid.uuid4())
    await database.acting(Actor("someone@example.com")).run(_write_three_ways, marker)
    assert await _count(db, marker) == 3
    actor = await db.fetchval("SELECT actor FROM audit_log WHERE action = 'uow.audit'"
                              " AND target = $1", marker)
    assert actor == "someone@example.com"


async def test_a_failure_after_the_writes_leaves_none_of_them(database: Database,
                                                               db: asyncpg.Pool) -> None:
    marker = str(uuid.uuid4())
    committed: list[bool] = []

    async def fails(tx: Tx) -> None:
        await _write_three_ways(tx, marker)
        tx.after_commit(lambda: committed.append(True))
        raise RuntimeError("between the change and the end of the Tx")

    with pytest.raises(RuntimeError):
        await database.run(fails)
    assert await _count(db, marker) == 0
    assert committed == []


async def test_raw_sql_reads_json_as_text_beside_the_orm(database: Database) -> None:
    async def read(tx: Tx) -> tuple[object, object]:
        await tx.session()
        raw = await tx.conn.fetchval("SELECT '{\"a\": 1}'::jsonb")
        orm = await (await tx.session()).scalar(
            select(AuditEntry.details).where(AuditEntry.details.is_not(None)).limit(1))
        return raw, orm

    raw, orm = await database.run(read)
    assert raw == '{"a": 1}'
    assert orm is None or isinstance(orm, dict)


async def test_a_one_statement_use_case_has_no_transaction_to_audit_in(
        database: Database) -> None:
    @one_statement
    async def posting(tx: Tx) -> bool:
        with pytest.raises(OutsideTransaction):
            await tx.audit("nope")
        with pytest.raises(OutsideTransaction):
            await tx.session()
        await tx.conn.fetchval("SELECT 1")
        return tx.conn.is_in_transaction()

    assert await database.run(posting) is False


async def test_a_scoped_tx_sees_only_its_partner(database: Database, partner: PartnerClient,
                                                 other_partner: PartnerClient) -> None:
    partners = [partner.partner_id, other_partner.partner_id]

    async def visible(tx: Tx) -> set[uuid.UUID]:
        return {row["id"] for row in await tx.conn.fetch("SELECT id FROM partners")}

    seen = await database.acting(Actor("t"), partner_id=partners[0], scoped=True).run(visible)
    assert partners[0] in seen and partners[1] not in seen
