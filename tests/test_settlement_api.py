"""The partner API over settlement: own statements only, CSV, line disputes with
Idempotency-Key, the operator's resolution with an adjustment billed on the re-run."""

from __future__ import annotations

import pytest

from coalition.errors import Conflict
from settlement import runs, statements
from tests.helpers import new_key, new_partner
from tests.settlement_helpers import add_terms, earn, new_member, redeem

PERIOD = "2019-09"


async def test_statements_api_isolation_and_dispute_flow(client, db):
    a = await new_partner(client, "Api Settle Alpha")
    b = await new_partner(client, "Api Settle Beta")
    await add_terms(db, a.partner_id, "2019-01-01", "1.2", "1.0")
    await add_terms(db, b.partner_id, "2019-01-01", "1.2", "1.0")
    m = await new_member(db, [a.partner_id, b.partner_id])
    await earn(db, a.partner_id, m, 1000, "2019-09-03")
    await redeem(db, b.partner_id, m, 400, "2019-09-04")
    async with db.acquire() as conn:
        run = await runs.run_period(conn, PERIOD, "op@test")
    # A draft is the operator's only.
    assert all(s["period"] != PERIOD
               for s in (await a.get("/api/v1/statements")).json()["items"])
    async with db.acquire() as conn:
        await runs.start_review(conn, PERIOD)

    listed = (await a.get("/api/v1/statements")).json()["items"]
    (mine,) = [s for s in listed if s["period"] == PERIOD]
    assert (mine["net"], mine["currency"], mine["run_status"]) == (1200, "PLN", "in_review")
    detail = (await a.get(f"/api/v1/statements/{mine['id']}")).json()
    assert detail["integrity"] == "not_finalized"
    (line,) = detail["lines"]
    assert (line["type"], line["points"], line["unit_price"], line["amount"]) == (
        "issuance", 1000, "1.200000", 1200)
    csv = await a.get(f"/api/v1/statements/{mine['id']}/csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "issuance,Points issued to members" in csv.text and csv.text.rstrip().endswith(
        "net,,,,,,,1200")

    # B sees its own statement only, and nothing of A's.
    b_items = (await b.get("/api/v1/statements")).json()["items"]
    assert [s["net"] for s in b_items if s["period"] == PERIOD] == [-400]
    for path in (f"/api/v1/statements/{mine['id']}", f"/api/v1/statements/{mine['id']}/csv"):
        assert (await b.get(path)).status_code == 404
    stolen = await b.post(f"/api/v1/statements/{mine['id']}/lines/{line['id']}/disputes",
                          {"comment": "B tries"})
    assert stolen.status_code == 404

    url = f"/api/v1/statements/{mine['id']}/lines/{line['id']}/disputes"
    assert (await a.post(url, {"comment": ""})).status_code == 400
    key = new_key()
    first = await a.post(url, {"comment": "We issued 990, not 1000"}, key=key)
    assert first.status_code == 201, first.text
    replay = await a.post(url, {"comment": "We issued 990, not 1000"}, key=key)
    assert replay.json() == first.json()
    again = await a.post(url, {"comment": "Again"})
    assert again.status_code == 409 and again.json()["type"].endswith("dispute-already-open")

    async with db.acquire() as conn:
        with pytest.raises(Conflict) as refused:
            await runs.finalize(conn, PERIOD, "op@test", force=True)
        assert refused.value.slug == "disputes-open"
        await statements.resolve_dispute(conn, first.json()["id"], accept=True,
                                         resolution="10 points credited", actor="op@test",
                                         adjustment=-12)
        await runs.reopen(conn, PERIOD)
        await runs.run_period(conn, PERIOD, "op@test")
        await runs.start_review(conn, PERIOD)
        await runs.finalize(conn, PERIOD, "op@test", force=True)
    detail = (await a.get(f"/api/v1/statements/{mine['id']}")).json()
    assert "integrity" in detail, detail
    assert detail["integrity"] == "ok" and detail["net"] == 1188
    assert [(x["type"], x["amount"]) for x in detail["lines"]] == [
        ("issuance", 1200), ("adjustment", -12)]
    (dispute,) = detail["disputes"]
    assert dispute["status"] == "accepted" and dispute["adjustment_id"] is not None
    late = await a.post(f"/api/v1/statements/{mine['id']}/lines/"
                        f"{detail['lines'][0]['id']}/disputes", {"comment": "late"})
    assert late.status_code == 409
    assert run["id"] == (await db.fetchval("SELECT id FROM settlement_runs WHERE period = $1",
                                           PERIOD))


async def test_statement_and_line_ids_beyond_bigint_are_problems_naming_them(client, db):
    # 2**63 was a 500 (asyncpg cannot send it as a bigint; found by tests/test_api_fuzz.py).
    partner = await new_partner(client, "Statement Ids")
    huge = 2**63
    for path, field in ((f"/api/v1/statements/{huge}", "statement_id"),
                        (f"/api/v1/statements/{huge}/csv", "statement_id"),
                        ("/api/v1/statements/0", "statement_id")):
        response = await partner.get(path)
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["field"] == field
    disputes = await db.fetchval("SELECT count(*) FROM settlement_disputes")
    for path, field in ((f"/api/v1/statements/{huge}/lines/1/disputes", "statement_id"),
                        (f"/api/v1/statements/1/lines/{huge}/disputes", "line_id")):
        response = await partner.post(path, {"comment": "Wrong"})
        assert response.status_code == 400, (path, response.text)
        assert response.json()["field"] == field
    assert await db.fetchval("SELECT count(*) FROM settlement_disputes") == disputes
    assert (await partner.get(f"/api/v1/statements/{huge - 1}")).status_code == 404
