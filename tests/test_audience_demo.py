"""The demo coalition shows tiers, segments and a B2B company account in use."""

import asyncio

import asyncpg

from coalition.verify import verify_ledger
from web.demo import DEMO_LOGINS, load_demo


def test_demo_has_tiers_segments_and_a_company_account(demo_database):
    async def scenario() -> None:
        await load_demo(demo_database, extra_members=12)
        conn = await asyncpg.connect(demo_database.asyncpg_dsn)
        try:
            assert [r[0] for r in await conn.fetch("SELECT code FROM tiers ORDER BY rank")] \
                == ["standard", "vip"]
            assert await conn.fetchval("SELECT threshold FROM tiers WHERE code = 'vip'") \
                == 100_000
            company = await conn.fetchrow(
                "SELECT m.id, a.balance FROM members m JOIN accounts a ON a.member_id = m.id"
                " WHERE m.kind = 'company'")
            # Three wholesale orders priced by TechnoB2B's and the coalition's rules.
            orders = await conn.fetchrow("SELECT count(*), sum(total), sum(points)"
                                         " FROM purchases WHERE member_id = $1", company["id"])
            assert tuple(orders) == (3, 186_300 + 238_400 + 132_200, company["balance"])
            roles = dict(await conn.fetch("SELECT email, company_role FROM users"
                                          " WHERE member_id = $1", company["id"]))
            assert sorted(roles.values()) == ["admin", "buyer"]
            assert any(email in roles for email, _, _ in DEMO_LOGINS)
            assert await conn.fetchval("SELECT tier_code FROM member_tiers WHERE member_id"
                                       " = $1", company["id"]) == "vip"
            counts = dict(await conn.fetch("SELECT name, member_count FROM segments"))
            assert counts["Bought in the last 30 days"] > 0
            assert counts["RFM champions"] > 0
            jan = await conn.fetchval("SELECT id FROM members WHERE email ="
                                      " 'jan.kowalski@example.com'")
            assert await conn.fetchval(
                "SELECT count(*) FROM segment_members sm JOIN segments s ON s.id ="
                " sm.segment_id WHERE s.name = 'Birthday this month' AND sm.member_id = $1",
                jan) == 1
            balances = dict(await conn.fetch(
                "SELECT m.name, a.balance FROM members m JOIN accounts a ON a.member_id = m.id"
                " WHERE m.kind = 'person'"))
            assert (balances["Jan Kowalski"], balances["Maria Nowak"],
                    balances["Krzysztof Wiśniewski"]) == (150, 200, 95)
            # Every demo earning is a purchase's or an event's; the ledger is clean.
            assert await conn.fetchval(
                "SELECT count(*) FROM journal_entries e WHERE e.kind = 'earn' AND NOT EXISTS"
                " (SELECT 1 FROM purchases p WHERE p.entry_id = e.id) AND NOT EXISTS"
                " (SELECT 1 FROM member_events v WHERE v.entry_id = e.id)") == 0
            assert await verify_ledger(conn) == []
        finally:
            await conn.close()

    asyncio.run(scenario())
