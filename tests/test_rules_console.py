"""Earning rules in the consoles and the service behind them: create and version, field
validation, archive, permissions, the live simulation preview, the campaign calendar,
coalition rules managed by the operator, and the active-rules cache."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from coalition import clock
from coalition.rules import service
from tenants.accounts import create_user
from tests.portal import Browser, csrf_of, owner_browser, submit

BASE_RULE = {"name": "Base 1 pt per PLN", "type": "per_amount", "points": "1", "per": "1.00",
             "priority": "10", "funding": "partner"}
BASKET = {"sample_date": "2025-04-10", "sample_channel": "store", "sample_tier": "",
          "line_sku": ["SKU-1", "SKU-2"], "line_category": ["paint", "wood"],
          "line_quantity": ["2", "1"], "line_unit_price": ["60.00", "100.50"]}


async def create(browser, base: str = "/partner/rules", **fields) -> str:
    response = await submit(browser, f"{base}/new", base, **fields)
    assert response.status_code == 302, response.text[:2000]
    return response.headers["location"].rsplit("/", 1)[1]


def hit_points(html: str) -> dict[str, int]:
    """Rule name -> points of the hits in a preview (other tests' coalition rules may
    add their own rows: the tests look at their partner's rules)."""
    rows = re.findall(r'<tr class="hit"><td>(.*?) <span class="muted">v\d+</span></td>'
                      r'<td class="num">\+(\d+)</td>', html)
    return {name: int(points) for name, points in rows}


async def post_form(browser, page: str, action: str, data: dict, **kw):
    token = csrf_of(await browser.get(page))
    return await browser.post(action, data={"_csrf_token": token, **data}, **kw)


async def operator_browser(app) -> Browser:
    email = f"op-{uuid.uuid4().hex[:8]}@coalition.example"
    async with app.state.sessionmaker() as session:
        await create_user(session, email, "operator", password="operator secret 1",
                          verified=True)
        await session.commit()
    browser = Browser(app)
    login = await submit(browser, "/login", "/login", email=email, password="operator secret 1")
    assert login.status_code == 302
    return browser


async def test_create_edit_keeps_versions_and_archive(app, client, db):
    browser, partner_id = await owner_browser(app, client, name="Rules Brand")
    async with browser:
        rule_id = await create(browser, **BASE_RULE)
        page = await browser.get(f"/partner/rules/{rule_id}")
        assert page.status_code == 200 and "Version 1" in page.text
        edited = await submit(browser, f"/partner/rules/{rule_id}", f"/partner/rules/{rule_id}",
                              **{**BASE_RULE, "name": "Base 2 pts per PLN", "points": "2",
                                 "per_order_cap": "500", "channels": "online"})
        assert edited.status_code == 302
        rows = await db.fetch("SELECT version, name, params, per_order_cap, channels, created_by"
                              " FROM earning_rule_versions WHERE rule_id = $1 ORDER BY version",
                              uuid.UUID(rule_id))
        assert [(r["version"], r["name"], r["per_order_cap"], r["channels"]) for r in rows] == [
            (1, "Base 1 pt per PLN", None, []), (2, "Base 2 pts per PLN", 500, ["online"])]
        assert '"points": 2' in rows[1]["params"] and rows[1]["created_by"] is not None
        rule = await db.fetchrow("SELECT current_version, name, partner_id FROM earning_rules"
                                 " WHERE id = $1", uuid.UUID(rule_id))
        assert tuple(rule) == (2, "Base 2 pts per PLN", partner_id)
        history = (await browser.get(f"/partner/rules/{rule_id}")).text
        assert "Version history" in history and "2 pts per 1.00 PLN" in history \
            and "1 pt per 1.00 PLN" in history
        listing = (await browser.get("/partner/rules")).text
        assert "Base 2 pts per PLN" in listing and "Base 1 pt" not in listing
        # Versions are immutable, even for the database owner.
        with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="immutable"):
            await db.execute("UPDATE earning_rule_versions SET name = 'x' WHERE rule_id = $1",
                             uuid.UUID(rule_id))
        archived = await submit(browser, f"/partner/rules/{rule_id}",
                                f"/partner/rules/{rule_id}/archive")
        assert archived.status_code == 302
        again = await submit(browser, f"/partner/rules/{rule_id}", f"/partner/rules/{rule_id}",
                             **BASE_RULE)
        assert again.status_code == 409
        assert await db.fetchval("SELECT count(*) FROM earning_rule_versions WHERE rule_id = $1",
                                 uuid.UUID(rule_id)) == 2
        assert await db.fetchval("SELECT count(*) FROM audit_log WHERE target = $1", rule_id) == 3


@pytest.mark.parametrize("fields,field", [
    ({"name": ""}, "name"),
    ({"points": "abc"}, "points"),
    ({"points": "0"}, "points"),
    ({"per": "1.005"}, "per"),
    ({"priority": "-4"}, "priority"),
    ({"per_order_cap": "0"}, "per_order_cap"),
    ({"starts_on": "2025-05-01", "ends_on": "2025-04-01"}, "ends_on"),
    ({"starts_on": "May"}, "starts_on"),
    ({"tiers": "VIP club!"}, "tiers"),
    ({"segments": "not-a-uuid"}, "segments"),
    ({"segments": str(uuid.UUID(int=7))}, "segments"),   # names no segment
    ({"channels": "fax"}, "channels"),
    ({"funding": "coalition"}, "funding"),     # a partner cannot spend the coalition's money
    ({"type": "cashback", "cashback_percent": "101"}, "cashback_percent"),
    ({"type": "product", "mode": "multiplier", "multiplier": "2"}, "skus"),
    ({"type": "product", "skus": "A", "mode": "multiplier", "multiplier": "1"}, "multiplier"),
    ({"type": "event", "event_type": "webinar", "frequency": "hourly"}, "frequency"),
    ({"type": "teleport"}, "type"),
])
async def test_bad_input_names_the_field_and_saves_nothing(app, client, db, fields, field):
    browser, partner_id = await owner_browser(app, client)
    async with browser:
        response = await submit(browser, "/partner/rules/new", "/partner/rules",
                                **{**BASE_RULE, **fields})
        assert response.status_code == 422, response.text[:500]
        assert f'id="error-{field}"' in response.text
    assert await db.fetchval("SELECT count(*) FROM earning_rules WHERE partner_id = $1",
                             partner_id) == 0


async def test_the_rules_list_shows_what_each_rule_awarded_at_the_brand(app, client, db,
                                                                          partner):
    from datetime import timedelta

    browser, partner_id = await owner_browser(app, client)
    now = clock.now()
    async with browser:
        rule_id = uuid.UUID(await create(browser, **BASE_RULE))
        members = [uuid.UUID(await partner.enroll()) for _ in range(2)]
        entries = [(await partner.earn(str(m), 1)).json()["id"] for m in members]
        for entry, member, brand, points, days_ago in (
                (entries[0], members[0], partner_id, 120, 1),
                (entries[1], members[1], partner_id, 80, 2),
                (entries[0], members[0], partner_id, -20, 1),       # given back by a return
                (entries[1], members[1], partner_id, 999, 40),      # before the 30 days
                (entries[1], members[1], partner.partner_id, 555, 1)):   # another brand's
            await db.execute(
                "INSERT INTO rule_hits (entry_id, partner_id, member_id, rule_id,"
                " rule_version, points, funding, occurred_at) VALUES ($1, $2, $3, $4, 1, $5,"
                " 'partner', $6)", entry, brand, member, rule_id, points,
                now - timedelta(days=days_ago))
        listing = await browser.get("/partner/rules")
    row = re.search(rf'href="/partner/rules/{rule_id}".*?</tr>', listing.text, re.S).group(0)
    awarded = re.sub(r"<[^>]+>", " ", re.search(r'class="num awarded">(.*?)</td>', row,
                                                re.S).group(1))
    assert " ".join(awarded.split()) == "180 pts 2 postings · 2 members"


async def test_a_partners_rule_targets_only_the_partners_own_segments(app, client, db):

    from coalition.segments import service as segments
    browser, partner_id = await owner_browser(app, client)
    _, stranger = await owner_browser(app, client, name="Another Brand")
    recent = {"conditions": [{"type": "last_purchase", "within_days": 30}]}
    async with db.acquire() as conn:
        mine, theirs, shared = [
            await segments.save(conn, owner, None, f"Recent {uuid.uuid4().hex[:6]}", None,
                                recent, "test", clock.now())
            for owner in (partner_id, stranger, None)]
    async with browser:
        for foreign in (theirs, shared):     # another brand's, the coalition's
            refused = await submit(browser, "/partner/rules/new", "/partner/rules",
                                   **{**BASE_RULE, "segments": f"{mine}, {foreign}"})
            assert refused.status_code == 422 and 'id="error-segments"' in refused.text
        saved = await submit(browser, "/partner/rules/new", "/partner/rules",
                             **{**BASE_RULE, "segments": str(mine)})
        assert saved.status_code == 302, saved.text[:300]
    targets = await db.fetchval(
        "SELECT v.segments FROM earning_rule_versions v JOIN earning_rules r"
        " ON r.id = v.rule_id WHERE r.partner_id = $1", partner_id)
    assert targets == [mine]
    await db.execute("DELETE FROM segments WHERE id = $1", shared)


async def test_roles_analyst_views_cashier_does_not_and_coalition_rules_are_read_only(
        app, client, db):
    operator = await operator_browser(app)
    async with operator:
        coalition_id = await create(operator, "/operator/rules", name="VIP x1.5",
                                    type="multiplier", multiplier="1.5", tiers="vip",
                                    priority="900", funding="coalition")
    analyst, _ = await owner_browser(app, client, role="analyst")
    async with analyst:
        listing = await analyst.get("/partner/rules")
        assert listing.status_code == 200 and "VIP x1.5" in listing.text
        assert "New rule" not in listing.text
        assert (await analyst.get("/partner/rules/new")).status_code == 403
        token = csrf_of(listing)
        assert (await analyst.post("/partner/rules", data={"_csrf_token": token,
                                                           **BASE_RULE})).status_code == 403
        assert (await analyst.get("/partner/rules/calendar")).status_code == 200
    cashier, _ = await owner_browser(app, client, role="cashier")
    async with cashier:
        assert (await cashier.get("/partner/rules")).status_code == 403
    owner, _ = await owner_browser(app, client)
    async with owner:
        shown = await owner.get(f"/partner/rules/{coalition_id}")
        assert shown.status_code == 200 and "managed by the operator" in shown.text
        assert "Save as version" not in shown.text
        for action in (f"/partner/rules/{coalition_id}", f"/partner/rules/{coalition_id}/archive"):
            refused = await post_form(owner, "/partner/rules", action,
                                      {**BASE_RULE, "type": "multiplier", "multiplier": "3"})
            assert refused.status_code == 404
        own = await create(owner, **BASE_RULE)
    assert await db.fetchval("SELECT current_version FROM earning_rules WHERE id = $1",
                             uuid.UUID(coalition_id)) == 1
    # A partner's rule is not the operator's to touch.
    operator = await operator_browser(app)
    async with operator:
        assert (await operator.get(f"/operator/rules/{own}")).status_code == 404
        assert "Base 1 pt" not in (await operator.get("/operator/rules")).text
    async with (await owner_browser(app, client))[0] as partner_b:
        assert (await partner_b.get("/operator/rules")).status_code == 403


async def test_preview_fragment_and_no_js_fallback_include_the_unsaved_draft(app, client):
    browser, _ = await owner_browser(app, client)
    async with browser:
        await create(browser, **BASE_RULE)
        await create(browser, name="Over 200 bonus", type="threshold_bonus", above="200",
                     points="30", priority="20")
        # Basket: 2 x 60.00 + 100.50 = 220.50 PLN -> 220 + 30, and the draft: paint x3.
        draft = {"type": "product", "name": "Paint x3", "skus": "", "categories": "paint",
                 "mode": "multiplier", "multiplier": "3", "priority": "30",
                 "funding": "partner"}
        fragment = await post_form(browser, "/partner/rules/new", "/partner/rules/preview",
                                   {**draft, **BASKET}, headers={"X-Preview": "fragment"})
        assert fragment.status_code == 200
        assert "<html" not in fragment.text and 'id="preview-result"' in fragment.text
        # 120 PLN of paint earns 2 x 120 extra.
        hits = hit_points(fragment.text)
        assert {k: hits[k] for k in ("Base 1 pt per PLN", "Over 200 bonus",
                                     "Paint x3 (draft)")} == {
            "Base 1 pt per PLN": 220, "Over 200 bonus": 30, "Paint x3 (draft)": 240}
        assert "Paint x3 (draft)" in fragment.text and "220.50 PLN" in fragment.text
        full = await post_form(browser, "/partner/rules/new", "/partner/rules/preview",
                               {**draft, **BASKET})
        assert "<html" in full.text and hit_points(full.text)["Paint x3 (draft)"] == 240
        assert 'value="Paint x3"' in full.text          # the editor keeps the draft
        # A bad draft explains itself in the preview; nothing is saved.
        bad = await post_form(browser, "/partner/rules/new", "/partner/rules/preview",
                              {**draft, "multiplier": "x", **BASKET},
                              headers={"X-Preview": "fragment"})
        assert 'data-field="multiplier"' in bad.text
        # The standalone simulator: saved rules only; store channel, no tier.
        plain = await post_form(browser, "/partner/rules/preview", "/partner/rules/preview",
                                BASKET, headers={"X-Preview": "fragment"})
        assert "Paint x3" not in plain.text
        assert hit_points(plain.text)["Over 200 bonus"] == 30
        # CSRF protects it.
        assert (await browser.post("/partner/rules/preview", data=BASKET)).status_code == 403
        page = await browser.get("/partner/rules/preview")
        assert '<script src="/static/rules.js"' in page.text and "<script>" not in page.text
        assert (await browser.get("/static/rules.js")).status_code == 200


async def test_preview_of_an_edit_replaces_the_saved_version(app, client):
    browser, _ = await owner_browser(app, client)
    async with browser:
        rule_id = await create(browser, **BASE_RULE)
        shown = await post_form(browser, f"/partner/rules/{rule_id}", "/partner/rules/preview",
                                {**BASE_RULE, "points": "5", "rule_id": rule_id, **BASKET},
                                headers={"X-Preview": "fragment"})
        hits = hit_points(shown.text)
        assert hits["Base 1 pt per PLN (draft)"] == 1100       # 220 x 5
        assert "Base 1 pt per PLN" not in hits                # the saved v1 is replaced


async def test_calendar_lays_campaigns_out_by_month(app, client):
    browser, _ = await owner_browser(app, client)
    async with browser:
        await create(browser, **BASE_RULE)              # always on: not a campaign
        await create(browser, name="Spring campaign", type="threshold_bonus", above="100",
                     points="50", starts_on="2031-04-01", ends_on="2031-04-30")
        await create(browser, name="Winter cashback", type="cashback", cashback_percent="2.5",
                     starts_on="2031-12-15", ends_on="2032-01-31")
        page = (await browser.get("/partner/rules/calendar?year=2031")).text
        rows = re.findall(r"<tr><td><a href=\"/partner/rules/[^\"]+\">([^<]+)</a>.*?</tr>", page,
                          re.S)
        assert rows == ["Spring campaign", "Winter cashback"]
        spring = page[page.index("Spring campaign"):].split("</tr>")[0]
        cells = re.findall(r'<td class="(on|)">', spring)
        assert cells == [""] * 3 + ["on"] + [""] * 8
        assert "2031-04-01 to 2031-04-30" in spring
        next_year = (await browser.get("/partner/rules/calendar?year=2032")).text
        assert "Winter cashback" in next_year and "Spring campaign" not in next_year


async def test_active_rules_cache_sees_edits_at_once_and_through_notify(app, client, db):
    browser, partner_id = await owner_browser(app, client)
    at = clock.now()
    async with browser:
        rule_id = uuid.UUID(await create(browser, **BASE_RULE))
        async with db.acquire() as conn:
            first = await service.active_rules(conn, partner_id, at)
            assert [(r.rule_id, r.version) for r in first if r.partner_id] == [(rule_id, 1)]
            assert await service.active_rules(conn, partner_id, at) == first   # cached
            await submit(browser, f"/partner/rules/{rule_id}", f"/partner/rules/{rule_id}",
                         **{**BASE_RULE, "points": "3"})
            again = await service.active_rules(conn, partner_id, at)
            assert [(r.version, r.params["points"]) for r in again if r.partner_id] == [(2, 3)]
            # Another process archiving it: only the NOTIFY can tell this one.
            assert service.CACHE.listening
            await db.execute("UPDATE earning_rules SET archived_at = $2 WHERE id = $1",
                             rule_id, clock.now())
            for _ in range(50):
                if not service.CACHE._entries:
                    break
                await asyncio.sleep(0.02)
            assert [r for r in await service.active_rules(conn, partner_id, at)
                    if r.partner_id] == []
            # Windows filter by the purchase time.
            await create(browser, name="April only", type="threshold_bonus", above="0",
                         points="1", starts_on="2030-04-01", ends_on="2030-04-30")
            april = datetime(2030, 4, 15, tzinfo=UTC)
            assert [r.name for r in await service.active_rules(conn, partner_id, april)
                    if r.partner_id] == ["April only"]
            assert [r.name for r in await service.active_rules(conn, partner_id, at)
                    if r.partner_id] == []


async def test_rules_cache_listener_reconnects_after_losing_its_connection(app, db):
    """Issue 16 (8): after a database restart the LISTEN coalition_rules connection was
    never re-established, so rules were cached POLL_SECONDS only and a missed NOTIFY was
    never heard of. It comes back by itself, and hears notifications again."""
    listener = service.CACHE.listener
    assert service.CACHE.listening
    lost = listener.server_pid
    assert await db.fetchval("SELECT pg_terminate_backend($1)", lost)
    for _ in range(500):
        if listener.server_pid not in (None, lost):
            break
        await asyncio.sleep(0.01)
    assert service.CACHE.listening and listener.server_pid not in (None, lost)
    async with db.acquire() as conn:
        await service.active_rules(conn, uuid.uuid4(), clock.now())
    assert service.CACHE._entries
    await db.execute("SELECT pg_notify('coalition_rules', '')")
    for _ in range(100):
        if not service.CACHE._entries:
            break
        await asyncio.sleep(0.02)
    assert not service.CACHE._entries


async def test_budget_cannot_drop_below_what_was_awarded(app, client, db):
    browser, _ = await owner_browser(app, client)
    async with browser:
        rule_id = await create(browser, **{**BASE_RULE, "budget": "1000"})
        assert await db.fetchval("SELECT budget FROM earning_rules WHERE id = $1",
                                 uuid.UUID(rule_id)) == 1000
        # The posting path's atomic increment, as the lead's purchase API runs it.
        update = ("UPDATE earning_rules SET budget_used = budget_used + $2 WHERE id = $1"
                  " AND (budget IS NULL OR budget_used + $2 <= budget)")
        assert await db.execute(update, uuid.UUID(rule_id), 700) == "UPDATE 1"
        assert await db.execute(update, uuid.UUID(rule_id), 400) == "UPDATE 0"
        async with db.acquire() as conn:
            rules = [r for r in await service.active_rules(conn, (await db.fetchval(
                "SELECT partner_id FROM earning_rules WHERE id = $1", uuid.UUID(rule_id))),
                clock.now()) if r.partner_id]
            assert await service.budget_left(conn, rules) == {uuid.UUID(rule_id): 300}
        refused = await submit(browser, f"/partner/rules/{rule_id}", f"/partner/rules/{rule_id}",
                               **{**BASE_RULE, "budget": "600"})
        assert refused.status_code == 422 and 'id="error-budget"' in refused.text
        raised = await submit(browser, f"/partner/rules/{rule_id}", f"/partner/rules/{rule_id}",
                              **{**BASE_RULE, "budget": "5000"})
        assert raised.status_code == 302
        assert await db.fetchval("SELECT budget FROM earning_rules WHERE id = $1",
                                 uuid.UUID(rule_id)) == 5000


async def test_usage_and_event_history_for_the_posting_path(app, client, db, partner):
    member = uuid.UUID(await partner.enroll())
    entry = (await partner.earn(str(member), 10)).json()["id"]
    rule = uuid.uuid4()
    at = datetime(2030, 6, 15, 10, tzinfo=UTC)
    for when, points in ((datetime(2030, 6, 15, 8, tzinfo=UTC), 40),
                         (datetime(2030, 6, 2, tzinfo=UTC), 25),
                         (datetime(2030, 5, 31, 23, tzinfo=UTC), 7)):   # 1 June in Warsaw
        await db.execute("INSERT INTO rule_hits (entry_id, partner_id, member_id, rule_id,"
                         " rule_version, points, funding, occurred_at) VALUES ($1, $2, $3, $4,"
                         " 1, $5, 'partner', $6)", entry, partner.partner_id, member, rule,
                         points, when)
    from coalition.rules.engine import RuleVersion
    capped = RuleVersion(rule, 1, partner.partner_id, "c", "per_amount", {"points": 1, "per": 1},
                         per_member_day_cap=100)
    async with db.acquire() as conn:
        usage = await service.member_usage(conn, member, [capped], at, "Europe/Warsaw")
        assert usage[rule].day == 40 and usage[rule].month == 72
        await conn.execute("INSERT INTO member_events (partner_id, member_id, event_type,"
                           " reference, points, occurred_at) VALUES ($1, $2, 'survey', 'S1', 30,"
                           " $3)", partner.partner_id, member, datetime(2030, 1, 5, tzinfo=UTC))
        history = await service.event_history(conn, member, "survey", at, "Europe/Warsaw")
        assert (history.ever, history.year, history.month, history.day) == (1, 1, 0, 0)
