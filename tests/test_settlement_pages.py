"""Settlement in the consoles: the operator drafts, reviews, resolves disputes, finalizes
and closes runs through its pages; partners read, download, print and dispute their own
statements, and never another partner's."""

from __future__ import annotations

import re
import uuid

from settlement import runs
from tests.portal import csrf_of, owner_browser
from tests.settlement_helpers import add_terms, earn, new_member, redeem
from tests.test_rules_console import operator_browser, post_form

MAY, JUNE = "2018-05", "2018-06"


async def _statement_id(db, partner: uuid.UUID, period: str) -> int:
    return await db.fetchval(
        "SELECT s.id FROM settlement_statements s JOIN settlement_runs r ON r.id = s.run_id"
        " WHERE s.partner_id = $1 AND r.period = $2", partner, period)


async def _act(op, run_id: int, action: str, **extra: str):
    return await post_form(op, f"/operator/settlement/{run_id}",
                           f"/operator/settlement/{run_id}", {"action": action, **extra})


async def test_operator_and_partners_settle_a_period_through_the_pages(app, client, db):
    mark = uuid.uuid4().hex[:6]
    a, a_id = await owner_browser(app, client, name=f"Pages Alpha {mark}")
    b, b_id = await owner_browser(app, client, name=f"Pages Beta {mark}")
    op = await operator_browser(app)
    for partner in (a_id, b_id):
        await add_terms(db, partner, "2018-01-01", "1.2", "1.0")
    member = await new_member(db, [a_id, b_id])
    await earn(db, a_id, member, 1000, "2018-05-03")
    await redeem(db, b_id, member, 400, "2018-05-04")
    await earn(db, a_id, member, 50, "2018-06-10")

    # The operator drafts May; a bad period is refused with the field named.
    bad = await post_form(op, "/operator/settlement", "/operator/settlement",
                          {"period": "2018-13"})
    assert bad.status_code == 422 and "period" in bad.text and "YYYY-MM" in bad.text
    drafted = await post_form(op, "/operator/settlement", "/operator/settlement",
                              {"period": MAY})
    assert drafted.status_code == 303, drafted.text
    run_id = int(drafted.headers["location"].rsplit("/", 1)[1])
    page = (await op.get(f"/operator/settlement/{run_id}")).text
    assert f"Pages Alpha {mark}" in page and "12.00 PLN" in page and "-4.00 PLN" in page
    # Netting: A pays 12.00, the operator pays B 4.00, its balance is 8.00.
    netting = page.split('class="netting"')[1].split("</table>")[0]
    assert re.search(r"12\.00 PLN.*4\.00 PLN.*operator-net\">8\.00 PLN", netting, re.S)
    matrix = page.split('class="flow-matrix"')[1].split("</table>")[0]
    assert "400 pts<br>4.00 PLN" in matrix and f"Pages Beta {mark}" in matrix
    assert "8.00 PLN" in (await op.get("/operator/settlement")).text

    a_statement = await _statement_id(db, a_id, MAY)
    detail_url = f"/partner/statements/{a_statement}"
    # A draft is the operator's only.
    assert MAY not in (await a.get("/partner/statements")).text
    assert (await a.get(detail_url)).status_code == 404
    assert (await _act(op, run_id, "review")).status_code == 303

    listed = (await a.get("/partner/statements")).text
    assert MAY in listed and "12.00 PLN" in listed and "not finalized" in listed
    detail = await a.get(detail_url)
    assert detail.status_code == 200
    assert re.search(r"issuance</td><td>Points issued to members</td>\s*<td class=\"num\">1000"
                     r"</td>\s*<td class=\"num\">1\.2</td>", detail.text), detail.text
    assert f"Pages Beta {mark}" in detail.text     # its column of the flow matrix
    csv = await a.get(f"{detail_url}/csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.rstrip().endswith("net,,,,,,,1200")
    printed = await a.get(f"{detail_url}/print")
    assert "/static/statement-print.css" in printed.text and "12.00 PLN" in printed.text
    assert f"Pages Alpha {mark}" in printed.text

    # B sees none of A's statement pages, nor can it dispute A's line.
    line = await db.fetchval("SELECT id FROM settlement_lines WHERE statement_id = $1",
                             a_statement)
    for path in (detail_url, f"{detail_url}/csv", f"{detail_url}/print"):
        assert (await b.get(path)).status_code == 404, path
    b_csrf = csrf_of(await b.get("/partner/statements"))
    stolen = await b.post(f"{detail_url}/disputes", data={
        "_csrf_token": b_csrf, "line_id": str(line), "comment": "B tries"})
    assert stolen.status_code == 404
    assert "-4.00 PLN" in (await b.get("/partner/statements")).text

    # A disputes its line: an empty comment is refused with the error shown.
    empty = await post_form(a, detail_url, f"{detail_url}/disputes",
                            {"line_id": str(line), "comment": " "})
    assert empty.status_code == 422 and "comment" in empty.text and 'role="alert"' in empty.text
    disputed = await post_form(a, detail_url, f"{detail_url}/disputes",
                               {"line_id": str(line), "comment": "We issued 990"})
    assert disputed.status_code == 303
    assert "We issued 990" in (await a.get(detail_url)).text

    # The operator cannot finalize over an open dispute; accepts it with a credit.
    refused = await _act(op, run_id, "finalize", force="1")
    assert refused.status_code == 409 and "Disputes open" in refused.text
    dispute = await db.fetchval("SELECT id FROM settlement_disputes WHERE line_id = $1", line)
    run_page = f"/operator/settlement/{run_id}"
    assert "We issued 990" in (await op.get(run_page)).text
    bad_adj = await post_form(op, run_page, f"{run_page}/disputes", {
        "dispute_id": str(dispute), "decision": "accept", "resolution": "ok",
        "adjustment": "1.5"})
    assert bad_adj.status_code == 422 and "adjustment" in bad_adj.text
    accepted = await post_form(op, run_page, f"{run_page}/disputes", {
        "dispute_id": str(dispute), "decision": "accept", "resolution": "10 points credited",
        "adjustment": "-12"})
    assert accepted.status_code == 303
    window = await _act(op, run_id, "finalize")
    assert window.status_code == 409 and "Dispute window still open" in window.text
    for action in ("reopen", "rerun", "review"):
        assert (await _act(op, run_id, action)).status_code == 303, action
    assert (await _act(op, run_id, "finalize", force="1")).status_code == 303
    page = (await op.get(run_page)).text
    assert "finalized" in page and "Integrity: ok" in page and "11.88 PLN" in page

    detail = (await a.get(detail_url)).text
    assert "11.88 PLN" in detail and "10 points credited" in detail and ">ok<" in detail
    # The re-run replaced the lines.
    line = await db.fetchval("SELECT id FROM settlement_lines WHERE statement_id = $1"
                             " AND type = 'issuance'", a_statement)
    late = await post_form(a, f"/partner/statements/{a_statement}",
                           f"{detail_url}/disputes", {"line_id": str(line), "comment": "Late"})
    assert late.status_code == 409 and "Dispute window closed" in late.text

    # Collecting without Stripe configured: each partner's failure is named, nothing paid.
    collect = await _act(op, run_id, "collect")
    assert collect.status_code == 409 and "Not every partner was paid" in collect.text
    assert "COALITION_STRIPE_SECRET_KEY" in collect.text
    assert await db.fetchval("SELECT count(*) FROM settlement_payments WHERE reference_id = ANY"
                             "($1)", [str(await _statement_id(db, p, MAY))
                                      for p in (a_id, b_id)]) == 0
    # Close: refused until the payments settled, then closed.
    unpaid = await _act(op, run_id, "close")
    assert unpaid.status_code == 409 and "Payments outstanding" in unpaid.text
    async with db.acquire() as conn:
        for partner in (a_id, b_id):
            await runs.set_payment_status(conn, await _statement_id(db, partner, MAY),
                                          "paid" if partner == a_id else "transferred")
    assert (await _act(op, run_id, "close")).status_code == 303
    assert "closed" in (await a.get("/partner/statements")).text

    # June with a zero-day window: the window is closed from the start of review.
    june = await post_form(op, "/operator/settlement", "/operator/settlement",
                           {"period": JUNE, "dispute_window_days": "0"})
    june_id = int(june.headers["location"].rsplit("/", 1)[1])
    assert (await _act(op, june_id, "review")).status_code == 303
    june_statement = await _statement_id(db, a_id, JUNE)
    june_line = await db.fetchval("SELECT id FROM settlement_lines WHERE statement_id = $1",
                                  june_statement)
    closed = await post_form(a, f"/partner/statements/{june_statement}",
                             f"/partner/statements/{june_statement}/disputes",
                             {"line_id": str(june_line), "comment": "Too late"})
    assert closed.status_code == 409 and "Dispute window closed" in closed.text
    assert (await _act(op, june_id, "finalize")).status_code == 303   # window over
    assert await db.fetchval("SELECT count(*) FROM settlement_disputes WHERE run_id = $1",
                             june_id) == 0

    # Neither partner reaches the operator's pages; the operator is no partner.
    for browser in (a, b):
        assert (await browser.get("/operator/settlement")).status_code == 403
        assert (await browser.get(run_page)).status_code == 403
        token = csrf_of(await browser.get("/partner/statements"))
        assert (await browser.post(run_page, data={"_csrf_token": token,
                                                   "action": "reopen"})).status_code == 403
    assert (await op.get("/partner/statements")).status_code == 403
    for browser in (a, b, op):
        await browser.aclose()


async def test_analyst_reads_statements_but_cannot_dispute(app, client):
    analyst, _ = await owner_browser(app, client, role="analyst", name="Pages Analyst")
    async with analyst:
        page = await analyst.get("/partner/statements")
        assert page.status_code == 200 and "No statements yet" in page.text
        refused = await analyst.post("/partner/statements/1/disputes", data={
            "_csrf_token": csrf_of(page), "line_id": "1", "comment": "x"})
        assert refused.status_code == 403


async def test_partner_flow_grid_shows_its_own_row_and_column_only(app, client, db):
    """2012-08: P's points spent at A, B and P; A's at P; A's at B (not P's to see)."""
    period, mark = "2012-08", uuid.uuid4().hex[:6]
    viewer, p_id = await owner_browser(app, client, name=f"Grid Own {mark}")
    _, a_id = await owner_browser(app, client, name=f"Grid Alpha {mark}")
    _, b_id = await owner_browser(app, client, name=f"Grid Beta {mark}")
    for partner in (p_id, a_id, b_id):
        await add_terms(db, partner, "2012-01-01", "1.2", "1.0")
    everyone = [p_id, a_id, b_id]
    m1, m2, m3, m4 = [await new_member(db, everyone) for _ in range(4)]
    await earn(db, p_id, m1, 1000, "2012-08-02")
    await redeem(db, a_id, m1, 300, "2012-08-03")       # P -> A 300
    await redeem(db, b_id, m1, 200, "2012-08-04")       # P -> B 200
    await earn(db, a_id, m2, 700, "2012-08-02")
    await redeem(db, p_id, m2, 70, "2012-08-05")        # A -> P 70
    await earn(db, a_id, m3, 5000, "2012-08-02")
    await redeem(db, b_id, m3, 4447, "2012-08-06")      # A -> B: another pair
    await earn(db, p_id, m4, 50, "2012-08-02")
    await redeem(db, p_id, m4, 11, "2012-08-07")        # P -> P 11
    async with db.acquire() as conn:
        run = await runs.run_period(conn, period, "op@test")
        await runs.start_review(conn, period)
    try:
        assert await db.fetchval("SELECT points FROM settlement_flows WHERE run_id = $1 AND"
                                 " issuer_partner_id = $2 AND redeemer_partner_id = $3",
                                 run["id"], a_id, b_id) == 4447    # in the operator's matrix
        async with viewer:
            page = await viewer.get(f"/partner/statements/{await _statement_id(db, p_id, period)}")
        assert page.status_code == 200
        grid = page.text.split('class="flow-matrix own-flows"')[1].split("</table>")[0]
        rows = re.findall(r"<tr[^>]*>(.*?)</tr>", grid, re.S)
        header = re.findall(r"<th[^>]*>(.*?)</th>", rows[0])
        assert header == ["Issued by \\ spent at", f"Grid Own {mark} (you)",
                          f"Grid Alpha {mark}", f"Grid Beta {mark}", "Total"]

        def cells(row: str) -> list[str]:
            return [" ".join(re.sub(r"<[^>]+>", " ", c).split())
                    for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]

        assert re.search(rf"<th>Grid Own {mark} \(you\)</th>", rows[1])
        assert cells(rows[1]) == ["11 pts 0.11 PLN", "300 pts 3.00 PLN", "200 pts 2.00 PLN",
                                  "511 pts 5.11 PLN"]
        assert re.search(rf"<th>Grid Alpha {mark}</th>", rows[2])
        assert cells(rows[2]) == ["70 pts 0.70 PLN", "", "", ""]   # A -> A, A -> B blank
        assert rows[2].count('class="blank"') == 2
        assert cells(rows[3]) == ["81 pts 0.81 PLN", "", "", ""]   # P's column total
        assert len(rows) == 4
        assert "4447" not in page.text and "44.47" not in page.text
    finally:
        async with db.acquire() as conn:
            await runs.finalize(conn, period, "op@test", force=True)
