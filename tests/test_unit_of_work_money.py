"""A money change and its audit row commit together or not at all (issue 17): marking a
prepaid block paid, forced to fail between the credit and its audit row, leaves the
block unpaid, the balance untouched and no audit row; through the use case and through
the operator's page."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from litestar import Litestar

from coalition.uow import Actor, Database, Tx
from settlement import actions, prepaid
from settlement.terms import add_rate_card
from tests.helpers import PartnerClient
from tests.portal import csrf_of
from tests.test_rules_console import operator_browser

OPERATOR = Actor("money-op@coalition.example")


class AuditFailed(RuntimeError):
    pass


async def _awaiting_block(db: asyncpg.Pool, partner_id: uuid.UUID, points: int = 1000
                          ) -> prepaid.Block:
    async with db.acquire() as conn:
        await add_rate_card(conn, partner_id, {
            "issue_price": "1.2", "reimbursement": "1.0", "billing": "prepaid"}, "test")
        return await prepaid.request_block(conn, partner_id, points, "test")


async def _state(db: asyncpg.Pool, block_id: int, partner_id: uuid.UUID
                 ) -> tuple[str, int, int]:
    """(block status, partner's available points, audit rows of the block's payment)."""
    status = await db.fetchval("SELECT status FROM prepaid_blocks WHERE id = $1", block_id)
    available = await db.fetchval("SELECT coalesce(sum(available), 0) FROM prepaid_balances"
                                  " WHERE partner_id = $1", partner_id)
    audited = await db.fetchval("SELECT count(*) FROM audit_log WHERE action ="
                                " 'prepaid_block.paid' AND target = $1", str(block_id))
    return status, available, audited


def _fail_the_audit(monkeypatch: pytest.MonkeyPatch, seen: list[str]) -> None:
    """Tx.audit raises for the block's payment, once it checked the credit was written
    in the same Tx (so the failure falls between the change and its audit row)."""
    real = Tx.audit

    async def audit(self: Tx, action: str, **kwargs: object) -> None:
        if action != "prepaid_block.paid":
            return await real(self, action, **kwargs)
        seen.append(await self.conn.fetchval("SELECT status FROM prepaid_blocks WHERE id = $1",
                                             int(str(kwargs["target"]))))
        raise AuditFailed("the audit row could not be written")

    monkeypatch.setattr(Tx, "audit", audit)


async def test_a_failed_audit_row_takes_the_credit_back(app: Litestar, db: asyncpg.Pool,
                                                        partner: PartnerClient,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    database: Database = app.state.db
    block = await _awaiting_block(db, partner.partner_id)
    seen: list[str] = []
    _fail_the_audit(monkeypatch, seen)
    with pytest.raises(AuditFailed):
        await database.acting(OPERATOR).run(actions.mark_block_paid, block.id, block.price)
    assert seen == ["paid"]                     # the credit was written, then rolled back
    assert await _state(db, block.id, partner.partner_id) == ("awaiting_payment", 0, 0)

    monkeypatch.undo()
    result = await database.acting(OPERATOR).run(actions.mark_block_paid, block.id,
                                                 block.price)
    assert result.outcome == "credited"
    assert await _state(db, block.id, partner.partner_id) == ("paid", 1000, 1)
    row = await db.fetchrow("SELECT actor, partner_id, details->>'outcome' AS outcome"
                            " FROM audit_log WHERE action = 'prepaid_block.paid'"
                            " AND target = $1", str(block.id))
    assert tuple(row) == (OPERATOR.label, partner.partner_id, "credited")


async def test_the_operator_page_commits_neither_when_the_audit_fails(
        app: Litestar, db: asyncpg.Pool, partner: PartnerClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    block = await _awaiting_block(db, partner.partner_id, points=500)
    browser = await operator_browser(app)
    async with browser:
        token = csrf_of(await browser.get("/operator/prepaid"))
        seen: list[str] = []
        _fail_the_audit(monkeypatch, seen)
        failed = await browser.post(f"/operator/prepaid/{block.id}/paid",
                                    data={"_csrf_token": token, "amount_paid": str(block.price)})
        assert failed.status_code == 500
        assert seen == ["paid"]
        assert await _state(db, block.id, partner.partner_id) == ("awaiting_payment", 0, 0)
        monkeypatch.undo()
        paid = await browser.post(f"/operator/prepaid/{block.id}/paid",
                                  data={"_csrf_token": token, "amount_paid": str(block.price)})
        assert paid.status_code == 303
    assert await _state(db, block.id, partner.partner_id) == ("paid", 500, 1)
