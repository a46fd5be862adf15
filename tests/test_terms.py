"""Rate cards and FX rates: effective-dated look-ups, validation naming each field,
append-only storage, exact conversion, the partner API and both consoles."""

from __future__ import annotations

import re
import uuid
from datetime import date, timedelta
from decimal import Decimal

import asyncpg
import pytest

from coalition import clock
from coalition.errors import Conflict, DomainError
from settlement import prepaid
from settlement.terms import (
    Invalid,
    add_fx_rate,
    add_rate_card,
    convert,
    fx_rate_at,
    round_minor,
    terms_at,
    terms_history,
)
from tests.helpers import new_partner
from tests.portal import csrf_of, owner_browser
from tests.test_prepaid import make_prepaid
from tests.test_rules_console import operator_browser, post_form

CARD = {"issue_price": "1.2", "reimbursement": "1.0", "fee_percent": "2"}


def quote_code() -> str:
    """A currency code of this test's own, so FX rates never collide across tests."""
    letters = uuid.uuid4().hex.upper()
    return "Q" + "".join(chr(65 + int(c, 16) % 26) for c in letters[:2])


async def test_a_price_change_mid_period_applies_from_its_date(db, partner):
    now = clock.now()
    later = now + timedelta(days=10)
    async with db.acquire() as conn:
        first = await add_rate_card(conn, partner.partner_id, CARD, "op", now=now)
        second = await add_rate_card(conn, partner.partner_id, {
            **CARD, "issue_price": "1.35", "effective_from": later.isoformat()}, "op", now=now)
        assert await terms_at(conn, partner.partner_id, now - timedelta(seconds=1)) is None
        assert (await terms_at(conn, partner.partner_id, now)).id == first.id
        assert (await terms_at(conn, partner.partner_id, later - timedelta(microseconds=1))
                ).issue_price == Decimal("1.2")
        assert (await terms_at(conn, partner.partner_id, later)).id == second.id
        assert (await terms_at(conn, partner.partner_id, later + timedelta(days=40))
                ).issue_price == Decimal("1.35")
        assert [t.id for t in await terms_history(conn, partner.partner_id)] == \
            [second.id, first.id]
        assert first.fee_percent == Decimal(2) and first.billing == "postpaid"
        assert first.public()["issue_price"] == "1.2"


async def test_every_invalid_field_is_named(db, partner):
    async with db.acquire() as conn, conn.transaction():
        with pytest.raises(Invalid) as caught:
            await add_rate_card(conn, partner.partner_id, {
                "effective_from": "2020-01-01", "issue_price": "-1",
                "reimbursement": "1.1234567", "fee_percent": "101", "fee_fixed": "x",
                "billing": "monthly", "cycle": "daily", "currency": "E1",
                "credit_limit": "-3", "low_balance_alert": "1.5"}, "op")
        assert set(caught.value.errors) == {
            "effective_from", "issue_price", "reimbursement", "fee_percent", "fee_fixed",
            "billing", "cycle", "currency", "credit_limit", "low_balance_alert"}
        assert caught.value.status == 422 and caught.value.extra["errors"][0]["field"]
        assert "6 decimal places" in caught.value.errors["reimbursement"]
        assert "past" in caught.value.errors["effective_from"]
        for raw, field in (({"issue_price": 1.2, "reimbursement": "1"}, "issue_price"),
                           ({**CARD, "currency": quote_code()}, "currency"),
                           ({**CARD, "credit_limit": "100"}, "credit_limit"),
                           ({**CARD, "low_balance_alert": "10"}, "low_balance_alert"),
                           ({"reimbursement": "1"}, "issue_price")):
            with pytest.raises(Invalid) as one:
                await add_rate_card(conn, partner.partner_id, raw, "op")
            assert list(one.value.errors) == [field], one.value.errors
        with pytest.raises(Invalid) as bad_fx:
            await add_fx_rate(conn, {"base": "PLN", "quote": "PLN", "rate": "0",
                                     "effective_from": "yesterday"})
        assert set(bad_fx.value.errors) == {"quote", "rate", "effective_from"}
        with pytest.raises(Invalid) as long_rate:
            await add_fx_rate(conn, {"base": "PLN", "quote": quote_code(),
                                     "rate": "0.123456789", "effective_from": "2026-01-01"})
        assert list(long_rate.value.errors) == ["rate"]
    assert await db.fetchval("SELECT count(*) FROM settlement_terms WHERE partner_id = $1",
                             partner.partner_id) == 0


async def test_rate_cards_and_fx_rates_are_never_rewritten(db, partner):
    now = clock.now()
    code = quote_code()
    async with db.acquire() as conn:
        card = await add_rate_card(conn, partner.partner_id, CARD, "op", now=now)
        with pytest.raises(Conflict) as twice:
            await add_rate_card(conn, partner.partner_id, {
                **CARD, "effective_from": now.isoformat()}, "op", now=now)
        assert twice.value.field == "effective_from"
        await add_fx_rate(conn, {"base": "PLN", "quote": code, "rate": "4.1",
                                 "effective_from": "2026-01-01"})
        with pytest.raises(Conflict):
            await add_fx_rate(conn, {"base": "PLN", "quote": code, "rate": "4.2",
                                     "effective_from": "2026-01-01"})
        for statement in (f"UPDATE settlement_terms SET issue_price = 9 WHERE id = {card.id}",
                          f"DELETE FROM settlement_terms WHERE id = {card.id}",
                          f"UPDATE fx_rates SET rate = 9 WHERE quote = '{code}'",
                          f"DELETE FROM fx_rates WHERE quote = '{code}'"):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="append-only"):
                await conn.execute(statement)
        assert (await terms_at(conn, partner.partner_id)).issue_price == Decimal("1.2")


async def test_fx_lookup_takes_the_latest_rate_on_or_before_the_day_and_converts_exactly(db):
    code = quote_code()
    async with db.acquire() as conn:
        for day, rate in (("2026-01-01", "0.23"), ("2026-02-01", "0.23456789")):
            await add_fx_rate(conn, {"base": "PLN", "quote": code, "rate": rate,
                                     "effective_from": day})
        assert await fx_rate_at(conn, "PLN", code, date(2025, 12, 31)) is None
        assert (await fx_rate_at(conn, "PLN", code, date(2026, 1, 31))).rate == Decimal("0.23")
        assert (await fx_rate_at(conn, "PLN", code, date(2026, 2, 1))).rate == \
            Decimal("0.23456789")
        converted = await convert(conn, Decimal("1235.801567"), "PLN", code, date(2026, 3, 1))
        assert converted.amount == Decimal("1235.801567") * Decimal("0.23456789")
        assert converted.amount == Decimal("289.87936602988363")
        assert (converted.rate, converted.rate_date) == (Decimal("0.23456789"), date(2026, 2, 1))
        assert round_minor(converted.amount) == 290
        same = await convert(conn, Decimal("1.5"), "PLN", "PLN", date(2026, 3, 1))
        assert (same.amount, same.rate, same.rate_date) == (Decimal("1.5"), 1, None)
        with pytest.raises(DomainError) as missing:
            await convert(conn, Decimal(1), code, "PLN", date(2026, 3, 1))
        assert missing.value.slug == "fx-rate-missing"
    assert (round_minor(Decimal("2.5")), round_minor(Decimal("2.4999")),
            round_minor(Decimal("3.5"))) == (3, 2, 4)


async def test_a_settlement_currency_needs_a_rate_in_force_at_the_card_date(db, partner):
    code = quote_code()
    soon = clock.now() + timedelta(days=5)
    async with db.acquire() as conn:
        await add_fx_rate(conn, {"base": "PLN", "quote": code, "rate": "0.25",
                                 "effective_from": (soon + timedelta(days=3)).date()})
        with pytest.raises(Invalid) as early:
            await add_rate_card(conn, partner.partner_id, {
                **CARD, "currency": code, "effective_from": soon.isoformat()}, "op")
        assert list(early.value.errors) == ["currency"]
        card = await add_rate_card(conn, partner.partner_id, {
            **CARD, "currency": code.lower(),
            "effective_from": (soon + timedelta(days=4)).isoformat()}, "op")
        assert card.currency == code


async def test_the_api_shows_the_partner_its_own_terms_and_balance_only(client, db, partner,
                                                                        other_partner):
    await make_prepaid(db, partner.partner_id, block=500, credit_limit=100, alert=50)
    await partner.earn(await partner.enroll(), 20)
    response = await partner.get("/api/v1/settlement/terms")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["current"]["issue_price"] == "1.2" and body["current"]["billing"] == "prepaid"
    assert len(body["history"]) == 1
    assert {k: body["prepaid"][k] for k in ("available", "credit_limit", "can_issue",
                                            "low_balance")} == \
        {"available": 480, "credit_limit": 100, "can_issue": 580, "low_balance": False}
    assert body["prepaid"]["blocks"][0]["status"] == "paid"
    other = (await other_partner.get("/api/v1/settlement/terms")).json()
    assert other == {"partner_id": str(other_partner.partner_id), "current": None,
                     "history": [], "prepaid": None}
    narrow = await new_partner(client, "Narrow", scopes=["members:read"])
    refused = await narrow.get("/api/v1/settlement/terms")
    assert refused.status_code == 403 and refused.json()["type"] == "/problems/insufficient-scope"


async def test_operator_adds_rate_cards_and_fx_rates_in_the_console(app, client, db):
    browser = await operator_browser(app)
    target = await new_partner(client, "Console Terms Brand")
    code = quote_code()
    async with browser:
        page = f"/operator/rate-cards/{target.partner_id}"
        bad = await post_form(browser, page, page, {"issue_price": "1.2345678",
                                                     "reimbursement": "x"})
        assert bad.status_code == 422
        assert "issue_price" in bad.text and "reimbursement" in bad.text
        done = await post_form(browser, page, page, {**CARD, "billing": "prepaid",
                                                     "credit_limit": "1000"})
        assert done.status_code == 303
        shown = await browser.get(page)
        assert "1.2" in shown.text and "in force" in shown.text and "prepaid" in shown.text
        assert "Console Terms Brand" in (await browser.get("/operator/rate-cards")).text
        fx = await post_form(browser, "/operator/fx-rates", "/operator/fx-rates",
                             {"base": "PLN", "quote": code, "rate": "0.2345",
                              "effective_from": "2026-01-01"})
        assert fx.status_code == 303
        assert code in (await browser.get("/operator/fx-rates")).text
        again = await post_form(browser, "/operator/fx-rates", "/operator/fx-rates",
                                {"base": "PLN", "quote": code, "rate": "0.3",
                                 "effective_from": "2026-01-01"})
        assert again.status_code == 409 and "effective_from" in again.text

        # A block requested by the partner, paid by bank transfer: marked here.
        async with db.acquire() as conn:
            block = await prepaid.request_block(conn, target.partner_id, 1000, "test")
        assert block.price == 1200
        listing = await browser.get("/operator/prepaid")
        assert "Console Terms Brand" in listing.text and "12.00 PLN" in listing.text
        token = csrf_of(listing)
        # A transfer of another amount did arrive: it is recorded on the block and audited
        # (not refused: a refusal writes nothing, and this money must stay traceable), and
        # the page it leads to says it did not match and credited nothing.
        short = await browser.post(f"/operator/prepaid/{block.id}/paid",
                                   data={"_csrf_token": token, "amount_paid": "1100"})
        assert short.status_code == 303, (short.status_code, short.text[:300])
        shown = await browser.get(short.headers["location"])
        notice = re.search(r'id="payment-not-credited">(.*?)</p>', shown.text, re.S)
        assert notice, shown.text[:1000]
        said = " ".join(notice.group(1).split())
        assert "11.00 PLN" in said and "12.00 PLN" in said and "does not match" in said \
            and "no points were credited" in said and "still awaits" in said, said
        recorded = await db.fetchrow("SELECT status, mismatch_amount FROM prepaid_blocks"
                                     " WHERE id = $1", block.id)
        assert tuple(recorded) == ("awaiting_payment", 1100)
        assert await db.fetchval(
            "SELECT details->>'outcome' FROM audit_log WHERE action = 'prepaid_block.paid'"
            " AND target = $1", str(block.id)) == "mismatch"
        assert await db.fetchval("SELECT coalesce(sum(available), 0) FROM prepaid_balances"
                                 " WHERE partner_id = $1", target.partner_id) == 0
        # Another block's page says nothing of it.
        assert "payment-not-credited" not in (await browser.get("/operator/prepaid")).text
        paid = await browser.post(f"/operator/prepaid/{block.id}/paid",
                                  data={"_csrf_token": token, "amount_paid": "1200"})
        assert paid.status_code == 303 and paid.headers["location"] == "/operator/prepaid"
    assert await db.fetchval("SELECT available FROM prepaid_balances WHERE partner_id = $1",
                             target.partner_id) == 1000


async def test_partner_console_shows_terms_and_requests_blocks(app, client, db, smtp):
    browser, partner_id = await owner_browser(app, client, name="Prepaid Console Brand")
    async with browser:
        assert "not billed prepaid" in (await browser.get("/partner/prepaid")).text
        assert "No rate card yet" in (await browser.get("/partner/terms")).text
        refused = await post_form(browser, "/partner/prepaid", "/partner/prepaid",
                                  {"points": "100"})
        assert refused.status_code == 422 and "prepaid" in refused.text
        await make_prepaid(db, partner_id, alert=500)
        bad = await post_form(browser, "/partner/prepaid", "/partner/prepaid",
                              {"points": "-4"})
        assert bad.status_code == 422 and "points" in bad.text
        ok = await post_form(browser, "/partner/prepaid", "/partner/prepaid",
                             {"points": "2500"})
        assert ok.status_code == 303
        shown = await browser.get("/partner/prepaid")
        assert "30.00 PLN" in shown.text and "awaiting payment" in shown.text
        terms = await browser.get("/partner/terms")
        assert "1.2" in terms.text and "prepaid" in terms.text
        # The flag the draw trigger sets (test_prepaid covers when) shows on both pages.
        await db.execute("UPDATE prepaid_balances SET low_since = $2 WHERE partner_id = $1",
                         partner_id, clock.now())
        assert "Low balance" in (await browser.get("/partner/prepaid")).text
        assert "Low prepaid points balance" in (await browser.get("/partner")).text
