"""Liability, breakage and margin over real ledger activity and finalized runs, with
hand-computed figures. Its own partners, rate cards from 2016 and the 2016-02 and
2016-03 periods (no other test settles them)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from coalition import settings
from settlement import liability, runs
from tests.helpers import new_partner
from tests.settlement_helpers import add_terms, at, earn, new_member, redeem
from tests.test_rules_console import operator_browser

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class _Undo(Exception):
    pass


async def _settle(conn, period: str) -> None:
    await runs.run_period(conn, period, "op@test", now=NOW)
    await runs.start_review(conn, period, now=NOW)
    await runs.finalize(conn, period, "op@test", now=NOW, force=True)


async def test_liability_breakage_and_margin_hand_computed(app, client, db):
    assert await db.fetchval("SELECT (currency, point_face_value)::text FROM"
                             " coalition_settings") == "(PLN,0.010000)"   # 1 grosz a point
    tag = uuid.uuid4().hex[:6]
    issuer = await new_partner(client, f"Liability L {tag}")
    redeemer = await new_partner(client, f"Liability M {tag}")
    await add_terms(db, issuer.partner_id, "2016-01-01", "1.255", "0.8", fee_percent="2")
    await add_terms(db, redeemer.partner_id, "2016-01-01", "1.5", "0.9")
    # The expiry job is global: other tests' older lots, due long ago, expire now, in
    # January, rather than in the March measured below.
    await db.fetchval("SELECT ledger_expire_due($1)", at("2016-01-15T00:00"))
    m = await new_member(db, [issuer.partner_id, redeemer.partner_id])
    await earn(db, issuer.partner_id, m, 1000, "2016-02-03")
    await redeem(db, redeemer.partner_id, m, 300, "2016-02-10")   # from L's lot
    await redeem(db, redeemer.partner_id, m, 100, "2016-03-05")   # from L's lot
    await earn(db, redeemer.partner_id, m, 100, "2016-03-06")
    # L's lot (600 left) runs out on 2016-03-20; the expiry job moves it to breakage.
    await db.execute("UPDATE lots SET expires_at = $2 WHERE member_id = $1"
                     " AND partner_id = $3", m, at("2016-03-20T00:00"), issuer.partner_id)
    await db.execute("UPDATE lots SET expires_at = NULL WHERE member_id = $1"
                     " AND partner_id = $2", m, redeemer.partner_id)
    assert await db.fetchval("SELECT ledger_expire_due($1)", at("2016-03-20T00:00")) >= 1
    async with db.acquire() as conn:
        await _settle(conn, "2016-02")
        await _settle(conn, "2016-03")
        by_month = {x.month: x for x in await liability.months(conn)}
        rows = [o for o in await liability.outstanding(conn)
                if o.partner_id in (issuer.partner_id, redeemer.partner_id)]

    feb, mar = by_month["2016-02"], by_month["2016-03"]
    # Margin = redemption spread + breakage at issue price + fees; issuance is no term.
    # February: 300 of L's points (issued at 1.255) redeemed at M (reimbursed at 0.9):
    # 376.5 -> 377 at issue price, 270 reimbursed, spread 107; L's fee 2 % of
    # 1000 x 1.255 = 25.1 -> 25. Margin 107 + 0 + 25 = 132.
    assert (feb.redeemed, feb.expired, feb.breakage_rate, feb.breakage_value) == (
        300, 0, Decimal("0.0000"), 0)
    assert (feb.redeemed_value, feb.reimbursements, feb.spread, feb.breakage_margin,
            feb.fees, feb.margin) == (377, 270, 107, 0, 25, 132)
    # March: 100 more of L's points redeemed at M: 125.5 -> 126 - 90 = 36. 600 of L's
    # points expire: 600 gr at face value (liability released; rate 600 / 700 =
    # 0.857142… -> 0.8571) and 600 x 1.255 = 753 of breakage at the price L paid. M's
    # own 100 points (issued at 1.5) are neither redeemed nor expired: still liability,
    # no margin yet. Margin 36 + 753 + 0 = 789: the expired points count once (the old
    # formula added their issuance, 1250 in February, and their breakage again).
    assert (mar.redeemed, mar.expired, mar.breakage_rate, mar.breakage_value) == (
        100, 600, Decimal("0.8571"), 600)
    assert (mar.redeemed_value, mar.reimbursements, mar.spread, mar.breakage_margin,
            mar.fees, mar.margin) == (126, 90, 36, 753, 0, 789)
    assert mar.breakage_percent == "85.71 %"
    # Outstanding: only M's 100 points are left (L's lot is spent and expired).
    assert [(o.partner_id, o.funding, o.points, o.value) for o in rows] == [
        (redeemer.partner_id, "partner", 100, 100)]

    # Rounding: at 0.00125 PLN a point (0.125 gr), 100 points are 12.5 gr -> 13 (half
    # away from zero), 600 expired points 75 gr. Rolled back: the setting is global.
    async with db.acquire() as conn:
        with pytest.raises(_Undo):
            async with conn.transaction():
                await conn.execute("UPDATE coalition_settings SET point_face_value = 0.00125")
                settings.forget()   # the cached settings (coalition/settings.py)
                rows = [o for o in await liability.outstanding(conn)
                        if o.partner_id == redeemer.partner_id]
                assert [(o.points, o.value) for o in rows] == [(100, 13)]
                mar = {x.month: x for x in await liability.months(conn)}["2016-03"]
                assert (mar.breakage_value, mar.margin) == (75, 789)   # margin: no face
                raise _Undo
    settings.forget()   # the rolled-back value must not stay cached

    browser = await operator_browser(app)
    async with browser:
        page = await browser.get("/operator/liability")
        assert page.status_code == 200
        assert "2016-03" in page.text and "85.71 %" in page.text and "<svg" in page.text
        assert "Margin = redemption spread + breakage + platform fees" in page.text
        assert f"Liability M {tag}" in page.text
        exported = await browser.get("/operator/liability.csv")
        assert exported.headers["content-type"].startswith("text/csv")
        table = list(csv.reader(io.StringIO(exported.text)))
        assert list(liability.MONTH_COLUMNS) in table
        assert ["2016-03", "100", "600", "0.8571", "600", "126", "90", "36", "753", "0",
                "789"] in table
        assert [f"Liability M {tag}", "partner", "100", "100"] in table
        assert (await client.get("/operator/liability")).status_code in (302, 303, 401)
