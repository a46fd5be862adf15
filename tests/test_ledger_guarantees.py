"""What the database itself guarantees, and what `ledger verify` detects."""

import asyncio
import time
import uuid

import asyncpg
import psycopg
import pytest

from coalition.db import create_ledger_pool
from coalition.ledger import Ledger, PostingRequest
from coalition.verify import verify_ledger


async def test_postings_and_entries_refuse_update_delete_truncate(partner, db):
    member = await partner.enroll()
    await partner.earn(member, 10)
    entry = (await partner.redeem(member, 4)).json()["id"]  # has postings and lot movements
    statements = [
        "UPDATE postings SET amount = amount * 2 WHERE entry_id = $1",
        "DELETE FROM postings WHERE entry_id = $1",
        "UPDATE journal_entries SET order_id = 'x' WHERE id = $1",
        "DELETE FROM journal_entries WHERE id = $1",
        "DELETE FROM lot_movements WHERE entry_id = $1",
    ]
    for statement in statements:
        with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="append-only"):
            await db.execute(statement, entry)
    for table in ("postings", "journal_entries", "lot_movements"):
        with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="append-only"):
            await db.execute(f"TRUNCATE {table} CASCADE")
    assert await db.fetchval("SELECT sum(amount) FROM postings WHERE entry_id = $1", entry) == 0


async def test_unbalanced_entry_is_refused(partner, db):
    member = await partner.enroll()
    wallet = await db.fetchval("SELECT id FROM accounts WHERE member_id = $1", member)
    async with db.acquire() as conn:
        entry = await conn.fetchval(
            "INSERT INTO journal_entries (kind, member_id, actor, occurred_at)"
            " VALUES ('adjust', $1, 'test', now()) RETURNING id", member)
        with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
            await conn.execute("INSERT INTO postings (entry_id, account_id, amount)"
                               " VALUES ($1, $2, 5)", entry, wallet)
        with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
            await conn.execute(
                "INSERT INTO postings (entry_id, account_id, amount) VALUES ($1, $2, 5),"
                " ($1, (SELECT id FROM accounts WHERE code = 'operator:adjustments'), -4)",
                entry, wallet)
    # The stray entry row with no postings is what verify reports.
    found = await _verify(db)
    assert any(d.check == "unbalanced entry" and f"entry {entry}:" in d.detail for d in found)
    await _exempt_entry(db, entry)


async def _exempt_entry(db, entry_id):
    # Test-only repair of the deliberately broken entry so later checks stay clean:
    # balance it with two offsetting postings against operator accounts.
    await db.execute(
        "INSERT INTO postings (entry_id, account_id, amount) VALUES"
        " ($1, (SELECT id FROM accounts WHERE code = 'operator:adjustments'), 1),"
        " ($1, (SELECT id FROM accounts WHERE code = 'operator:breakage'), -1)", entry_id)


async def _verify(db):
    async with db.acquire() as conn:
        return await verify_ledger(conn)


async def test_wallet_cannot_go_negative_even_behind_the_api(partner, db):
    member = await partner.enroll()
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE accounts SET balance = -1 WHERE member_id = $1", member)


async def test_hundred_concurrent_redemptions_never_overdraw(partner, db):
    member = await partner.enroll()
    await partner.earn(member, 500)
    responses = await asyncio.gather(*[partner.redeem(member, 10) for _ in range(100)])
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 50
    assert statuses.count(422) == 50
    assert all(r.json()["type"].endswith("insufficient-points")
               for r in responses if r.status_code == 422)
    assert (await partner.balance(member))["available"] == 0
    assert await _verify(db) == []


async def test_concurrent_mixed_traffic_keeps_ledger_consistent(partner, other_partner, db):
    emails = [f"mix{i}-{partner.partner_id}@example.com" for i in range(5)]
    members = [await partner.enroll(email=e) for e in emails]
    for address, m in zip(emails, members, strict=True):
        await other_partner.enroll(email=address)
        await partner.earn(m, 100)
    ops = []
    for i in range(120):
        m = members[i % 5]
        actor = partner if i % 2 else other_partner
        ops.append(actor.earn(m, 7) if i % 3 == 0 else actor.redeem(m, 11))
    results = await asyncio.gather(*ops)
    assert {r.status_code for r in results} <= {201, 422}
    assert await _verify(db) == []


async def test_verify_reports_tampering(partner, db):
    member = await partner.enroll()
    await partner.earn(member, 40)
    await db.execute("UPDATE accounts SET balance = balance + 5 WHERE member_id = $1", member)
    try:
        found = await _verify(db)
        checks = {d.check for d in found}
        assert "cached balance" in checks
        assert any(member in d.detail for d in found)
    finally:
        await db.execute("UPDATE accounts SET balance = balance - 5 WHERE member_id = $1", member)
    lot = await db.fetchval("SELECT id FROM lots WHERE member_id = $1", member)
    await db.execute("UPDATE lots SET remaining = remaining - 1 WHERE id = $1", lot)
    try:
        checks = {d.check for d in await _verify(db)}
        assert {"lot remaining", "wallet vs lots"} <= checks
    finally:
        await db.execute("UPDATE lots SET remaining = remaining + 1 WHERE id = $1", lot)
    assert await _verify(db) == []


async def test_a_write_on_a_pooled_connection_the_server_dropped_posts_once(
        database_url, partner, db):
    """Issue 16 (8): when the server ends an idle pooled connection (a restart, an
    administrator, idle_session_timeout), asyncpg may read the server's FATAL goodbye
    before the socket's end; the connection then still looks open, is handed out, and
    refuses its next statement before sending any of it. That request failed; now the
    pool runs it once more on a fresh connection (safe for a write: nothing was sent),
    and the broken connection is discarded."""
    member = uuid.UUID(await partner.enroll())
    pool = await create_ledger_pool(database_url, 1, server_settings={"timezone": "UTC"})
    try:
        async with pool.acquire() as conn:
            doomed = conn.get_server_pid()
        # Terminated while this event loop is busy (blocking calls on purpose), as a
        # loaded API process would be; then three turns of the loop: the goodbye is read,
        # the end of the socket not yet.
        with psycopg.connect(database_url.raw, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (doomed,))
            time.sleep(0.2)
        for _ in range(3):
            await asyncio.sleep(0)
        key = uuid.uuid4().hex
        request = PostingRequest(partner_id=partner.partner_id, member_id=member, points=7,
                                 actor="test", idempotency_key=key, request_hash="h")
        posted = await Ledger(pool).earn(request)
        assert posted.status == 201, posted.body
        async with pool.acquire() as conn:
            assert conn.get_server_pid() != doomed
        again = await Ledger(pool).earn(request)  # a client's retry with the same key
        assert (again.status, again.json()) == (201, posted.json())
    finally:
        await pool.close()
    assert await db.fetchval("SELECT count(*) FROM journal_entries WHERE partner_id = $1"
                             " AND idempotency_key = $2", partner.partner_id, key) == 1
