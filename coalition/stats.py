"""How big the platform is: the counts the front page and `coalition ledger verify` show.
Each is one statement (one snapshot, one round trip)."""

from __future__ import annotations

from coalition.uow import Tx, one_statement

_FRONT_PAGE = ("SELECT (SELECT count(*) FROM partners) AS partners,"
               " (SELECT count(*) FROM members) AS members,"
               " (SELECT count(*) FROM journal_entries) AS entries")
_LEDGER = ("SELECT (SELECT count(*) FROM journal_entries) AS entries,"
           " (SELECT count(*) FROM postings) AS postings,"
           " (SELECT count(*) FROM lots) AS lots,"
           " (SELECT count(*) FROM accounts) AS accounts")


@one_statement
async def front_page_counts(tx: Tx) -> dict[str, int]:
    """Partners, members and journal entries."""
    return dict(await tx.conn.fetchrow(_FRONT_PAGE))


@one_statement
async def ledger_counts(tx: Tx) -> dict[str, int]:
    """Journal entries, postings, lots and accounts (in that order)."""
    return dict(await tx.conn.fetchrow(_LEDGER))
