"""The affiliate dashboard through the portal: figures computed by hand, the chart, the
link builder, terms in force, commissions with filters and CSV, payout statements,
creatives, isolation between affiliates and from partner staff and members, and the
operator's affiliate payouts page marking a SEPA credit paid."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, timedelta

from coalition import clock
from settlement import sepa
from settlement.affiliate_payouts import run_payouts
from tests.affiliate_c_helpers import (
    PASSWORD,
    add_terms,
    affiliate_login,
    clicks,
    commission,
    enroll,
    new_affiliate,
    new_program,
    wallet_member,
)
from tests.helpers import new_partner
from tests.portal import Browser, csrf_of, owner_browser, submit
from tests.test_tier_pages import new_login


async def affiliate_browser(app, affiliate_id) -> Browser:
    browser = Browser(app)
    email = await affiliate_login(app, affiliate_id)
    response = await submit(browser, "/login", "/login", email=email, password=PASSWORD)
    assert response.status_code == 302, response.text
    return browser


# (status, amount, days ago) of the commissions `setup` makes that the chart shows.
CHART_FACTS = [("approved", 1000, 2), ("paid", 500, 3), ("pending", 300, 1),
               ("approved", -100, 1), ("approved", 50, 5)]


async def setup(client, db):
    """An affiliate in two programs of one partner, with clicks and commissions."""
    partner = await new_partner(client, "Dashboard Brand")
    affiliate = await new_affiliate(db, "sepa", iban="DE89370400440532013000",
                                    account_holder="Dash Blog")
    shoes, _ = await new_program(db, partner.partner_id, name="Shoes", rate_bp=750,
                                 category_rates={"electronics": 250, "books": 1000})
    bags, _ = await new_program(db, partner.partner_id, name="Bags")
    await add_terms(db, shoes, partner.partner_id, 2, min_payout=99999,
                    effective_from=clock.now() + timedelta(days=30))
    e_shoes, code = await enroll(db, shoes, affiliate)
    e_bags, _ = await enroll(db, bags, affiliate, status="pending")
    await clicks(db, e_shoes, 8)
    await clicks(db, e_shoes, 2, sub_id="blog")
    now = clock.now()
    ids = {
        "approved": await commission(db, e_shoes, 1000, sale=10000, order_id="ord-1",
                                     at=now - timedelta(days=2)),
        "paid": await commission(db, e_shoes, 500, status="paid", sale=5000,
                                 order_id="ord-2", at=now - timedelta(days=3)),
        "pending": await commission(db, e_shoes, 300, status="pending", sale=3000,
                                    order_id="ord-3", at=now - timedelta(days=1)),
        "voided": await commission(db, e_shoes, 200, status="voided", order_id="ord-4",
                                   at=now - timedelta(days=4)),
        "clawback": await commission(db, e_shoes, -100, order_id="ord-2",
                                     at=now - timedelta(days=1)),
        "lead": await commission(db, e_shoes, 50, kind="lead", at=now - timedelta(days=5)),
    }
    return partner, affiliate, (shoes, e_shoes, code), (bags, e_bags), ids


async def test_dashboard_figures_chart_terms_and_link_builder(client, db, app):
    _, affiliate, (_, e_shoes, code), _, _ = await setup(client, db)
    async with await affiliate_browser(app, affiliate) as browser:
        home = await browser.get("/affiliate")
        assert home.status_code == 200
        # 10 clicks; conversions: sales not voided = 3; rate 3/10 = 30.00 %;
        # earnings 1000 + 500 + 300 - 100 + 50 = 1750; per click 175 -> 1.75.
        row = home.text.split(f'id="program-{e_shoes}"')[1].split("</tr>")[0]
        for expected in (">10<", ">3<", "30.00 %", "17.50 PLN", "1.75 PLN"):
            assert expected in row, (expected, row)
        totals = home.text.split('id="totals"')[1].split("</table>")[0]
        assert "30.00 %" in totals and "17.50" in totals and "1.75" in totals
        # Bags: pending enrollment, no clicks: no rate.
        assert "Dashboard Brand: Bags" in home.text
        sums = {}
        for status, amount, days_ago in CHART_FACTS:
            month = f"{clock.now() - timedelta(days=days_ago):%Y-%m}"
            sums[(month, status)] = sums.get((month, status), 0) + amount
        for (month, status), amount in sums.items():
            shown = f"{amount // 100}.{amount % 100:02d}"
            assert f"<title>{month} {status} {shown} PLN</title>" in home.text
        assert home.text.count("</title></rect>") == 12 * 4   # 12 months x 4 statuses, one currency
        # The terms in force are version 1 (version 2 starts next month).
        terms = home.text.split(f'id="terms-{e_shoes}"')[1].split("</ul>")[0]
        assert "Version 1" in terms and "7.50 % of the sale" in terms
        assert "minimum payout 50.00 PLN" in terms
        assert "Category rates: books 10.00 %; electronics 2.50 %" in terms
        link = await browser.get("/affiliate", params={"enrollment": str(e_shoes),
                                                       "sub": "blog-1"})
        assert f"http://testserver.local/r/{code}/blog-1" in link.text
        bad = await browser.get("/affiliate", params={"enrollment": str(e_shoes),
                                                      "sub": "no spaces"})
        assert bad.status_code == 400 and 'data-field="sub"' in bad.text
        other = await browser.get("/affiliate", params={"enrollment": str(uuid.uuid4())})
        assert other.status_code == 400 and 'data-field="enrollment"' in other.text


async def test_commissions_list_filters_and_csv(client, db, app):
    _, affiliate, (shoes, _, _), (bags, _), ids = await setup(client, db)
    async with await affiliate_browser(app, affiliate) as browser:
        page = await browser.get("/affiliate/commissions")
        assert page.status_code == 200 and page.text.count("ord-") == 5
        approved = await browser.get("/affiliate/commissions",
                                     params={"status": "approved", "program": str(shoes)})
        assert "ord-1" in approved.text and "ord-3" not in approved.text
        export = await browser.get("/affiliate/commissions.csv",
                                   params={"status": "approved", "program": str(shoes)})
        assert export.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(export.text)))
        assert [(r["id"], r["kind"], r["order_id"], r["sale"], r["commission"])
                for r in rows] == [
            (str(ids["clawback"]), "clawback", "ord-2", "0.00", "-1.00"),
            (str(ids["approved"]), "sale", "ord-1", "100.00", "10.00"),
            (str(ids["lead"]), "lead", "", "0.00", "0.50")]
        today = clock.now().date()
        window = await browser.get("/affiliate/commissions.csv", params={
            "date_from": str(today - timedelta(days=3)),
            "date_to": str(today - timedelta(days=2))})
        assert sorted(r["order_id"] for r in csv.DictReader(io.StringIO(window.text))) == \
            ["ord-1", "ord-2"]
        assert (await browser.get("/affiliate/commissions.csv",
                                  params={"program": str(bags)})).text.count("\n") == 1
        bad = await browser.get("/affiliate/commissions", params={"date_from": "2024-13-01"})
        assert bad.status_code == 400 and 'data-field="date_from"' in bad.text
        foreign = await browser.get("/affiliate/commissions.csv",
                                    params={"program": str(uuid.uuid4())})
        assert foreign.status_code == 400 and foreign.json()["field"] == "program"
        status = await browser.get("/affiliate/commissions", params={"status": "nope"})
        assert status.status_code == 400 and 'data-field="status"' in status.text


async def test_payout_statement_and_isolation(client, db, app):
    partner, affiliate, (shoes, e_shoes, _), _, ids = await setup(client, db)
    payout = await db.fetchval(
        "INSERT INTO affiliate_payouts (enrollment_id, affiliate_id, program_id, partner_id,"
        " method, currency, amount_minor, status, paid_at) VALUES ($1, $2, $3, $4, 'sepa',"
        " 'PLN', 1400, 'paid', now()) RETURNING id", e_shoes, affiliate, shoes,
        partner.partner_id)
    await db.execute("UPDATE affiliate_commissions SET payout_id = $1 WHERE id ="
                     " ANY($2::bigint[])", payout, [ids["paid"], ids["clawback"],
                                                    ids["approved"]])
    creative = await db.fetchval(
        "INSERT INTO affiliate_creatives (program_id, partner_id, title, filename,"
        " content_type, content) VALUES ($1, $2, 'Banner', 'banner.svg', 'image/svg+xml',"
        " $3) RETURNING id", shoes, partner.partner_id, b"<svg/>")
    async with await affiliate_browser(app, affiliate) as browser:
        listing = await browser.get("/affiliate/payouts")
        assert f'href="/affiliate/payouts/{payout}"' in listing.text and "14.00 PLN" in listing.text
        statement = await browser.get(f"/affiliate/payouts/{payout}")
        assert statement.status_code == 200
        summary = statement.text.split('id="summary"')[1].split("</table>")[0]
        assert "15.00 PLN" in summary and "-1.00 PLN" in summary and "14.00 PLN" in summary
        assert statement.text.count("ord-") == 3
        export = await browser.get(f"/affiliate/payouts/{payout}/statement.csv")
        assert sorted(r["commission"] for r in csv.DictReader(io.StringIO(export.text))) == \
            ["-1.00", "10.00", "5.00"]
        home = await browser.get("/affiliate")
        assert f'href="/affiliate/creatives/{creative}"' in home.text
        download = await browser.get(f"/affiliate/creatives/{creative}")
        assert download.content == b"<svg/>"
        assert download.headers["content-type"].startswith("image/svg+xml")
    # Another affiliate, even one enrolled (pending) in the same program, sees none of it.
    stranger = await new_affiliate(db)
    await enroll(db, shoes, stranger, status="pending")
    async with await affiliate_browser(app, stranger) as browser:
        for path in (f"/affiliate/payouts/{payout}", f"/affiliate/payouts/{payout}/statement.csv",
                     f"/affiliate/creatives/{creative}"):
            assert (await browser.get(path)).status_code == 404, path
        assert "ord-1" not in (await browser.get("/affiliate/commissions")).text
        assert "ord-1" not in (await browser.get("/affiliate/commissions.csv")).text
        assert f"#{payout}" not in (await browser.get("/affiliate/payouts")).text
    # Partner staff (even of the program's partner) and members cannot open the pages.
    staff, _ = await owner_browser(app, client)
    member, _ = await new_login(app, "member", member_id=await wallet_member(db))
    for outsider in (staff, member):
        async with outsider:
            for path in ("/affiliate", "/affiliate/commissions", f"/affiliate/payouts/{payout}",
                         f"/affiliate/creatives/{creative}"):
                assert (await outsider.get(path)).status_code == 403, path
    async with Browser(app) as anonymous:
        response = await anonymous.get("/affiliate/payouts")
        assert response.status_code == 302 and response.headers["location"].startswith("/login")


async def test_operator_marks_an_affiliate_sepa_payout_paid(client, db, app):
    partner = await new_partner(client, "Operator View Brand")
    affiliate = await new_affiliate(db, "sepa", iban="DE89370400440532013000",
                                    account_holder="Op Blog")
    program, _ = await new_program(db, partner.partner_id, currency="EUR")
    enrollment, _ = await enroll(db, program, affiliate)
    due = await commission(db, enrollment, 7000)
    outcome = next(o for o in (await run_payouts(app.state.stripe)).outcomes
                   if o.enrollment_id == enrollment)
    payment = await db.fetchval("SELECT payment_id FROM affiliate_payouts WHERE id = $1",
                                outcome.payout_id)
    configured = app.state.settings.model_copy(update={
        "sepa_debtor_name": "Coalition Operator", "sepa_debtor_iban": "DE89370400440532013000",
        "sepa_debtor_bic": "COBADEFFXXX"})
    await sepa.export_batch(app.state.pool, configured, [payment], date(2026, 12, 1), "op")
    operator, _ = await new_login(app, "operator")
    async with operator:
        page = await operator.get("/operator/affiliate-payouts")
        assert page.status_code == 200 and f'id="payout-{outcome.payout_id}"' in page.text
        assert "Mark paid" in page.text
        bad = await operator.post("/operator/affiliate-payouts/mark", data={
            "_csrf_token": csrf_of(page), "payout_id": "x", "status": "paid"})
        assert bad.status_code == 400 and "payout_id" in bad.text
        done = await operator.post("/operator/affiliate-payouts/mark", data={
            "_csrf_token": csrf_of(page), "payout_id": str(outcome.payout_id),
            "status": "paid"})
        assert done.status_code == 302
    assert await db.fetchval("SELECT status FROM affiliate_payouts WHERE id = $1",
                             outcome.payout_id) == "paid"
    assert await db.fetchval("SELECT status FROM affiliate_commissions WHERE id = $1",
                             due) == "paid"
    staff, _ = await owner_browser(app, client)
    async with staff:
        assert (await staff.get("/operator/affiliate-payouts")).status_code == 403
