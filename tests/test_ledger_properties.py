"""Property: any sequence of earn / redeem / reverse / adjust keeps the ledger consistent.

After every example: each entry balanced, trial balance zero, cached balances equal the
sum of postings, lots remaining equal the wallet, nothing negative (`verify_ledger`),
and each wallet equals the sum of the successful operations' effects."""

import asyncio
import uuid

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coalition.cards import new_card_number
from coalition.ledger import Ledger, PostingRequest
from coalition.verify import verify_ledger

operation = st.one_of(
    st.tuples(st.just("earn"), st.integers(0, 1), st.integers(0, 2), st.integers(1, 120)),
    st.tuples(st.just("redeem"), st.integers(0, 1), st.integers(0, 2), st.integers(1, 150)),
    st.tuples(st.just("reverse"), st.integers(0, 1), st.integers(0, 30),
              st.one_of(st.none(), st.integers(1, 80))),
    st.tuples(st.just("adjust"), st.integers(0, 1), st.integers(0, 2),
              st.integers(-60, 60).filter(bool)),
)


async def _new_member(conn: asyncpg.Connection, partners: list[uuid.UUID]) -> uuid.UUID:
    return await conn.fetchval(
        """
        WITH m AS (INSERT INTO members (email, card_number) VALUES ($1, $2) RETURNING id),
             w AS (INSERT INTO accounts (code, kind, member_id, balance, lower_bound)
                   SELECT 'member:' || id, 'member_wallet', id, 0, 0 FROM m)
        INSERT INTO member_links (partner_id, member_id)
        SELECT p, m.id FROM m, unnest($3::uuid[]) AS p RETURNING member_id
        """,
        f"{uuid.uuid4().hex}@prop.example", new_card_number(), partners,
    )


async def _scenario(dsn: str, partners: list[uuid.UUID], ops: list[tuple]) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        ledger = Ledger(pool)
        async with pool.acquire() as conn:
            members = [await _new_member(conn, partners) for _ in range(3)]
        expected = dict.fromkeys(members, 0)
        posted: list[tuple[int, uuid.UUID, uuid.UUID]] = []  # (entry, partner, member)
        for op in ops:
            kind, who, target, points = op
            partner = partners[who]
            if kind == "adjust":
                member = members[target]
                request = PostingRequest(partner_id=partner, member_id=member,
                                         points=abs(points), actor="property",
                                         description="property", idempotency_key=uuid.uuid4().hex,
                                         request_hash="h")
                result = await ledger.adjust(request, credit=points > 0)
                assert result.status in (201, 422), result.body
                if result.ok:
                    expected[member] += points
                    assert result.json()["balance"]["available"] == expected[member]
                continue
            if kind in ("earn", "redeem"):
                member = members[target]
                request = PostingRequest(partner_id=partner, member_id=member, points=points,
                                         actor="property", idempotency_key=uuid.uuid4().hex,
                                         request_hash="h")
                result = await (ledger.earn if kind == "earn" else ledger.redeem)(request)
                assert result.status in (201, 422), result.body
                if result.ok:
                    expected[member] += points if kind == "earn" else -points
                    posted.append((result.json()["id"], partner, member))
                    assert result.json()["balance"]["available"] == expected[member]
                continue
            if not posted:
                continue
            entry, owner, member = posted[target % len(posted)]
            result = await ledger.reverse(partner_id=partner, entry_id=entry, points=points,
                                          actor="property", allowed_kinds=["earn", "redeem"])
            if partner != owner:
                assert result.status == 404
                continue
            assert result.status in (201, 422), result.body
            if result.ok:
                body = result.json()
                original_kind = await pool.fetchval(
                    "SELECT kind FROM journal_entries WHERE id = $1", entry)
                expected[member] += -body["points"] if original_kind == "earn" else body["points"]
                assert body["balance"]["available"] == expected[member]
        for member, balance in expected.items():
            assert await pool.fetchval(
                "SELECT balance FROM accounts WHERE member_id = $1", member) == balance
        async with pool.acquire() as conn:
            assert await verify_ledger(conn) == []
    finally:
        await pool.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operation, min_size=1, max_size=40))
def test_random_sequences_keep_every_invariant(database_url, partner, other_partner, ops):
    asyncio.run(_scenario(database_url.asyncpg_dsn,
                          [partner.partner_id, other_partner.partner_id], ops))
