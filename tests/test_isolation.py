"""Tenant isolation: every route of the partner API and every portal route that takes a
tenant resource, tried by partner B against partner A's resources, answers 403 or 404 and
leaks none of A's data."""

import re
import uuid

from coalition.ledger import Ledger, PostingRequest
from coalition.members import enroll
from coalition.rules.service import create_rule
from coalition.rules.validation import RuleSpec
from settlement import prepaid
from settlement.terms import add_rate_card
from tenants.service import create_server_client
from tests.affiliate_b_helpers import commission_row
from tests.affiliate_b_helpers import setup as affiliate_setup
from tests.affiliate_c_helpers import affiliate_payout_and_creative
from tests.affiliate_helpers import make_affiliate, make_enrollment, make_program
from tests.helpers import new_key
from tests.portal import csrf_of, owner_browser
from tests.rewards_helpers import make_reward
from tests.settlement_helpers import settled_statement
from tests.test_lifecycle import buy


async def test_every_api_route_refuses_another_partners_resources(client, partner, other_partner,
                                                                  db):
    member = await partner.enroll(partner_customer_id="A-SECRET-CUSTOMER")
    card = (await partner.get(f"/api/v1/members/{member}")).json()["card_number"]
    earn = (await partner.earn(member, 90, order_id="A-SECRET-ORDER",
                               metadata={"a": "A-SECRET-META"})).json()
    redemption = (await partner.redeem(member, 10, order_id="A-SECRET-ORDER-2")).json()
    purchase = await buy(db, partner, member, 30, order_id="A-SECRET-PURCHASE")
    hold = (await partner.post("/api/v1/redemptions/authorizations",
                               {"member_id": member, "points": 5})).json()
    reward = await make_reward(client.app.state.pool, partner.partner_id,
                               name="A-SECRET-REWARD", price_points=20)
    voucher = (await partner.post(f"/api/v1/rewards/{reward}/redemptions",
                                  {"member_id": member})).json()["voucher"]
    await db.execute("INSERT INTO settlement_payments (partner_id, kind, reference_type,"
                     " reference_id, amount, currency, status) VALUES ($1, 'invoice',"
                     " 'statement', 'A-SECRET-STATEMENT', 100, 'PLN', 'open')", partner.partner_id)
    async with client.app.state.pool.acquire() as conn:
        await add_rate_card(conn, partner.partner_id, {
            "issue_price": "1.234567", "reimbursement": "1.0", "billing": "prepaid",
            "credit_limit": 777001, "note": "A-SECRET-TERMS"}, "test")
        a_block = await prepaid.request_block(conn, partner.partner_id, 5000, "test")
    secrets = ["A-SECRET", card, voucher["code"], "1.234567", "777001", "6173"]
    _, statement, line = await settled_statement(db, partner.partner_id, "1999-01")

    schema = (await client.get("/schema/openapi.json")).json()
    ids = {"member_id": member, "transaction_id": str(earn["id"]),
           "order_id": purchase["order_id"], "authorization_id": hold["id"],
           "reward_id": str(reward), "code": voucher["code"],
           "statement_id": str(statement), "line_id": str(line),
           "block_id": str(a_block.id)}
    assert a_block.price == 6173     # 5,000 points at 1.234567: a figure B must not see
    bodies = {
        "/api/v1/members": {"email": "isolation-b@example.com",
                            "partner_customer_id": "A-SECRET-CUSTOMER"},
        "/api/v1/earn": {"member_id": member, "points": 5},
        "/api/v1/redemptions": {"member_id": member, "points": 5},
        "/api/v1/adjustments": {"member_id": member, "points": -5, "reason": "Take it"},
        "/api/v1/redemptions/authorizations": {"member_id": member, "points": 5},
        "/api/v1/purchases/{order_id}/returns": {"amount": 100},
        "/api/v1/purchases": {"member": {"id": member}, "order_id": "B-1",
                              "occurred_at": "2026-01-05T10:00:00Z", "total": 1000,
                              "currency": "PLN", "channel": "store"},
        "/api/v1/purchases/simulate": {"member": {"card_number": card}, "total": 1000,
                                       "occurred_at": "2026-01-05T10:00:00Z",
                                       "currency": "PLN", "channel": "store"},
        "/api/v1/events": {"member": {"id": member}, "event_type": "webinar",
                           "reference": "B-W1"},
        "/api/v1/rewards/{reward_id}/redemptions": {"member_id": member},
        "/api/v1/vouchers/{code}/consume": {"order_id": "B-TILL"},
        "/api/v1/statements/{statement_id}/lines/{line_id}/disputes": {"comment": "B"},
        "/api/v1/settlement/prepaid-blocks": {"points": 5000},
    }
    tried = 0
    for template, operations in schema["paths"].items():
        if not template.startswith("/api/v1"):
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], template)
        for method in operations:
            tried += 1
            if method == "get":
                response = await other_partner.get(path)
                if template == "/api/v1/members":
                    for query in ({"partner_customer_id": "A-SECRET-CUSTOMER"},
                                  {"card_number": card}):
                        listed = await other_partner.get(path, params=query)
                        assert listed.status_code == 200 and listed.json()["items"] == []
                    continue
                if template == "/api/v1/statements":
                    # B's own statements: none of A's.
                    assert response.status_code == 200
                    assert all(s["id"] != statement for s in response.json()["items"])
                    continue
                if template == "/api/v1/settlement/terms":
                    # B's own terms: none, and none of A's.
                    assert response.status_code == 200
                    assert response.json() == {"partner_id": str(other_partner.partner_id),
                                               "current": None, "history": [],
                                               "prepaid": None}
                    continue
                if template == "/api/v1/settlement/prepaid-blocks":
                    # B's own blocks and balance: none, and none of A's.
                    assert response.status_code == 200
                    assert response.json() == {"balance": None, "items": []}
                    continue
                if template == "/api/v1/policies":
                    # The coalition's policies and B's own return window.
                    assert response.status_code == 200
                    assert response.json()["partner_id"] == str(other_partner.partner_id)
                    continue
                if template in ("/api/v1/rewards", "/api/v1/settlement/payments"):
                    # B's own catalogue and payments: empty, and none of A's.
                    assert response.status_code == 200 and response.json()["items"] == []
                    continue
            else:
                response = await other_partner.client.request(
                    method.upper(), path, json=bodies.get(template, {}),
                    headers={**other_partner.auth, "Idempotency-Key": new_key()})
                if template == "/api/v1/members":
                    # B may enrol its own customer with the same customer id; it gets a new
                    # member, never A's.
                    assert response.status_code == 201
                    assert response.json()["id"] != member
                    continue
                if template == "/api/v1/settlement/prepaid-blocks":
                    # B may only ask for its own block; it is not billed prepaid.
                    assert response.status_code == 422, response.text
                    assert response.json()["type"].endswith("/not-prepaid")
                    assert not any(secret in response.text for secret in secrets)
                    continue
            assert response.status_code in (403, 404), (method, template, response.text)
            assert not any(secret in response.text for secret in secrets), (method, template)
    assert tried >= 11
    reversal = await other_partner.post(f"/api/v1/transactions/{redemption['id']}/reversal")
    assert reversal.status_code == 404
    assert (await partner.balance(member))["available"] == 85  # 90 - 10 + 30 - 5 held - 20
    assert (await partner.get(f"/api/v1/vouchers/{voucher['code']}")).json()["status"] == \
        "issued"


# Path parameters that name a tenant's resource, and routes whose parameters do not.
TENANT_PARAMS = {"client_pk", "staff_id", "partner_id", "member_id", "transaction_id",
                 "reward_id", "offer_id", "rule_id",
                 "segment_id", "person_id", "block_id", "statement_id", "run_id",
                 "payment_id", "program_id", "enrollment_id", "creative_id",
                 "commission_id"}
# An affiliate's payout (affiliate pages: partner staff get 403).
TENANT_PARAMS |= {"payout_id"}
NO_TENANT_PARAMS = {
    "/problems/{slug:str}": "problem type documentation",
    "/static/{file_path:path}": "style sheets",
    "/schema/{path:str}": "the OpenAPI document",
    "/join/{code:str}": "a member's public referral link (tests/test_referrals.py)",
    "/r/{code:str}": "public affiliate tracking links",
    "/r/{code:str}/{sub_id:str}": "public affiliate tracking links",
}
# Form fields sent with each POST (the CSRF token is added), so that a refusal cannot be
# a mere validation error.
FORMS = {
    "/partner/staff/{staff_id:uuid}/role": {"role": "analyst"},
    "/operator/settlement/{run_id:int}": {"action": "reopen"},
    "/operator/payments/{payment_id:int}/mark": {"status": "paid", "confirm": "yes"},
    "/operator/partners/{partner_id:uuid}/decision": {"decision": "suspend",
                                                      "note": "isolation walk"},
    "/partner/clients": {"name": "B server", "scope": "members:read"},
    "/partner/rewards/{reward_id:uuid}": {"name": "Taken by B", "kind": "product",
                                          "price_points": "1", "active": "on", "listed": "on"},
    "/partner/rewards/{reward_id:uuid}/active": {},          # would deactivate it
    "/member/rewards/{reward_id:uuid}/redeem": {"token": "walk"},
    "/partner/vouchers/consume": {},
    "/partner/rules/{rule_id:uuid}": {"name": "B took it", "type": "per_amount",
                                      "points": "9", "per": "1.00"},
    "/operator/rules/{rule_id:uuid}": {"name": "B took it", "type": "per_amount",
                                       "points": "9", "per": "1.00"},
    "/partner/affiliates/programs/{program_id:uuid}": {
        "name": "Stolen", "landing_url": "https://evil.example", "currency": "PLN"},
    "/partner/affiliates/programs/{program_id:uuid}/terms": {"model": "percent", "rate": "99"},
    "/partner/affiliates/programs/{program_id:uuid}/creatives": {"title": "B", "text": "B"},
    "/partner/affiliates/enrollments/{enrollment_id:uuid}": {"action": "ban", "reason": "B"},
    "/affiliate/programs/{program_id:uuid}/join": {"note": "B"},
    "/partner/segments/{segment_id:uuid}": {"action": "save", "name": "Stolen",
                                            "definition": '{"conditions": [{"type": '
                                            '"birthday_month", "current": true}]}'},
}
# Pages without a path parameter: what partner B's owner gets from them.
OWN_PAGES = {("GET", "/partner"): 200, ("GET", "/partner/clients"): 200,
             ("GET", "/partner/staff"): 200, ("POST", "/partner/clients"): 200,
             ("POST", "/partner/staff"): 409,   # inviting A's owner: the email is taken
             ("GET", "/partner/sso"): 200,
             ("POST", "/partner/sso"): 400,     # no issuer given
             ("GET", "/partner/profile"): 200,
             ("POST", "/partner/profile/terms"): 409,  # no current version posted
             ("GET", "/partner/rewards"): 200,
             ("POST", "/partner/rewards"): 400,        # an empty reward form
             ("GET", "/partner/vouchers"): 200,
             ("POST", "/partner/vouchers"): 400,       # no code entered
             ("POST", "/partner/vouchers/consume"): 400,

             ("GET", "/partner/rules"): 200, ("GET", "/partner/rules/new"): 200,
             ("POST", "/partner/rules"): 422,           # an empty rule: the name is missing
             ("GET", "/partner/rules/calendar"): 200, ("GET", "/partner/rules/preview"): 200,
             ("POST", "/partner/rules/preview"): 200,
             ("GET", "/partner/segments"): 200,
             ("POST", "/partner/segments"): 400,   # no name given
             ("GET", "/partner/policies"): 200,
             ("POST", "/partner/policies"): 400,  # no return window given
             ("GET", "/partner/payouts"): 200,
             ("POST", "/partner/payouts"): 400,   # no payout method chosen
             ("GET", "/partner/terms"): 200, ("GET", "/partner/prepaid"): 200,
             ("POST", "/partner/prepaid"): 422,    # no points given
             ("GET", "/partner/statements"): 200,
             ("GET", "/partner/affiliates"): 200,
             ("POST", "/partner/affiliates"): 422,  # an empty program: the name is missing
             ("GET", "/partner/affiliates/commissions"): 200}



def under(path: str, *sections: str) -> bool:
    return any(path == s or path.startswith(s + "/") for s in sections)


async def test_every_portal_route_refuses_another_partners_resources(app, client, db):
    """Partner B's owner, logged in to the portal, tries every route that takes a tenant
    resource id with partner A's real ids, and every /partner, /operator and /member
    page: each answer is 403 or 404 (B's own pages excepted) and shows nothing of A."""
    mark = uuid.uuid4().hex[:8]
    a_browser, a_id = await owner_browser(app, client, name=f"Alpha Portal {mark}")
    b, b_id = await owner_browser(app, client, name=f"Beta Portal {mark}")
    await a_browser.aclose()
    async with app.state.sessionmaker() as session:
        a_client, _ = await create_server_client(session, a_id, f"A-CLIENT-{mark}")
        linked, _ = await enroll(session, a_id, f"a-member-{mark}@example.com", "A Member",
                                 f"A-CUSTOMER-{mark}")
        a_rule = await create_rule(session, a_id, RuleSpec(
            name=f"A-RULE-{mark}", type="per_amount", params={"points": 1, "per": 100}
        ).checked(), None)
        await session.commit()
    member = linked.member
    a_segment = await db.fetchval(
        "INSERT INTO segments (partner_id, name, definition, created_by) VALUES ($1, $2,"
        " '{\"conditions\": [{\"type\": \"birthday_month\", \"months\": [1]}]}', 'a')"
        " RETURNING id", a_id, f"A-SEGMENT-{mark}")
    earn = await Ledger(app.state.pool).earn(PostingRequest(
        partner_id=a_id, member_id=member.id, points=50, actor="test",
        order_id=f"A-ORDER-{mark}"))
    owner = await db.fetchrow("SELECT id, email FROM users WHERE partner_id = $1", a_id)
    reward = await make_reward(db, a_id, name=f"A-REWARD-{mark}", stock=7)
    offer = await db.fetchval(
        "INSERT INTO coupon_offers (name, source_partner_id, reward_id, min_total)"
        " VALUES ($1, $2, $3, 100) RETURNING id", f"A-OFFER-{mark}", a_id, reward)
    a_slug = await db.fetchval("SELECT slug FROM partners WHERE id = $1", a_id)
    async with app.state.pool.acquire() as conn:
        await add_rate_card(conn, a_id, {"issue_price": "1.234567", "reimbursement": "1",
                                         "billing": "prepaid", "credit_limit": 777001},
                            "test")
        block = await prepaid.request_block(conn, a_id, 4321, "test")
    a_run, a_statement, a_line = await settled_statement(db, a_id, "1999-03")
    a_payout = await db.fetchval(
        "INSERT INTO settlement_payments (partner_id, kind, reference_type, reference_id,"
        " amount, currency, status) VALUES ($1, 'sepa_credit', 'statement', $2, 100, 'PLN',"
        " 'exported') RETURNING id", a_id, str(a_statement))
    a_program = await make_program(app, a_id, name=f"A-PROGRAM-{mark}")
    a_affiliate = await make_affiliate(app, name=f"A-AFFILIATE-{mark}")
    a_enrollment = await make_enrollment(app, a_affiliate.id, a_program)
    a_creative = await db.fetchval(
        "INSERT INTO affiliate_creatives (program_id, partner_id, title, filename, content_type,"
        " content) VALUES ($1, $2, $3, 'a.txt', 'text/plain', 'A') RETURNING id",
        a_program.id, a_id, f"A-CREATIVE-{mark}")
    a_affiliate_payout, _ = await affiliate_payout_and_creative(db, a_id)
    _, _, commission_enrollment, _ = await affiliate_setup(db, a_id)
    a_commission = await commission_row(db, commission_enrollment, status="hold",
                                        fraud_reasons=[f"A-FRAUD-{mark}"])
    ids = {"client_pk": str(a_client.id), "staff_id": str(owner["id"]),
           "partner_id": str(a_id), "member_id": str(member.id),
           "transaction_id": str(earn.json()["id"]), "reward_id": str(reward),
           "offer_id": str(offer), "rule_id": str(a_rule.id),
           "segment_id": str(a_segment), "person_id": str(owner["id"]),
           "block_id": str(block.id), "statement_id": str(a_statement),
           "run_id": str(a_run), "payment_id": str(a_payout),
           "program_id": str(a_program.id), "payout_id": str(a_affiliate_payout),
           "enrollment_id": str(a_enrollment.id), "creative_id": str(a_creative),
           "commission_id": str(a_commission)}
    # The transaction id is a small integer that any page may contain; its order id and
    # the member stand for it.
    secrets = [*(v for k, v in ids.items()
                 if k not in ("transaction_id", "block_id", "statement_id", "run_id",
                              "payment_id", "payout_id", "creative_id",
                              "commission_id")),
               "1.234567", "777001", "4321", f"Alpha Portal {mark}",
               a_slug, a_client.client_id, f"A-CLIENT-{mark}", owner["email"], member.email,
               member.card_number, f"A-CUSTOMER-{mark}", f"A-ORDER-{mark}",
               f"A-REWARD-{mark}", f"A-OFFER-{mark}", f"A-RULE-{mark}",
               f"A-SEGMENT-{mark}", f"A-PROGRAM-{mark}", f"A-AFFILIATE-{mark}",
               f"A-CREATIVE-{mark}", a_affiliate.email, a_enrollment.code,
               f"A-FRAUD-{mark}"]
    forms = {**FORMS, "/partner/staff": {"email": owner["email"], "role": "owner"},
             "/partner/statements/{statement_id:int}/disputes": {
                 "line_id": str(a_line), "comment": "B disputes A's line"}}
    api_paths = set((await client.get("/schema/openapi.json")).json()["paths"])

    walked: set[str] = set()
    async with b:
        csrf = csrf_of(await b.get("/partner/clients"))
        for route in app.routes:
            params = set(route.path_parameters)
            if route.path.startswith("/api/"):
                # The partner API is walked over its OpenAPI document above.
                assert route.path_format in api_paths, route.path
                continue
            if route.path in NO_TENANT_PARAMS:
                continue
            if params:
                unknown = params - TENANT_PARAMS
                assert not unknown, f"{route.path}: teach this walk to fill {unknown}"
            elif not under(route.path, "/partner", "/operator", "/member"):
                continue
            path = route.path_format.format(**{p: ids[p] for p in params})
            for method in sorted(route.methods - {"OPTIONS", "HEAD"}):
                if method == "GET":
                    response = await b.get(path)
                elif method == "POST":
                    response = await b.post(path, data={"_csrf_token": csrf,
                                                        **forms.get(route.path, {})})
                else:
                    raise AssertionError(f"{method} {route.path}: teach this walk the method")
                if params or under(route.path, "/operator", "/member"):
                    expected = {403, 404}
                else:
                    assert (method, route.path) in OWN_PAGES, f"{method} {route.path}: unknown"
                    expected = {OWN_PAGES[(method, route.path)]}
                assert response.status_code in expected, (method, path, response.text[:300])
                leaked = [s for s in secrets if s.lower() in response.text.lower()]
                assert not leaked, (method, path, leaked)
                walked.add(f"{method} {route.path}")
        assert f"Beta Portal {mark}" in (await b.get("/partner")).text

    with_params = {f"{m} {r.path}" for r in app.routes for m in r.methods - {"OPTIONS", "HEAD"}
                   if r.path_parameters and not r.path.startswith("/api/")
                   and r.path not in NO_TENANT_PARAMS}
    assert with_params <= walked and len(with_params) >= 6
    assert {f"{m} {p}" for m, p in OWN_PAGES} <= walked
    assert {"GET /operator", "GET /operator/partners", "GET /member"} <= walked
    # Nothing of A's changed.
    assert await db.fetchval("SELECT status FROM settlement_payments WHERE id = $1",
                             a_payout) == "exported"
    client_row = await db.fetchrow("SELECT revoked_at, previous_secret_hash FROM oauth_clients"
                                   " WHERE id = $1", a_client.id)
    assert tuple(client_row) == (None, None)
    assert tuple(await db.fetchrow("SELECT role, disabled_at, partner_id FROM users"
                                   " WHERE id = $1", owner["id"])) == ("owner", None, a_id)
    assert await db.fetchval("SELECT status FROM partners WHERE id = $1", a_id) == "active"
    assert tuple(await db.fetchrow("SELECT name, active, stock, issued FROM rewards"
                                   " WHERE id = $1", reward)) == (f"A-REWARD-{mark}", True, 7, 0)
    assert await db.fetchval("SELECT active FROM coupon_offers WHERE id = $1", offer)
    assert await db.fetchval("SELECT count(*) FROM users WHERE partner_id = $1", b_id) == 1
    assert await db.fetchval("SELECT name FROM segments WHERE id = $1",
                             a_segment) == f"A-SEGMENT-{mark}"
    assert await db.fetchval("SELECT status FROM prepaid_blocks WHERE id = $1",
                             block.id) == "awaiting_payment"
    assert await db.fetchval("SELECT status FROM affiliate_commissions WHERE id = $1",
                             a_commission) == "hold"
    assert await db.fetchval("SELECT count(*) FROM settlement_disputes WHERE statement_id"
                             " = $1", a_statement) == 1      # settled_statement's own
    assert await db.fetchval("SELECT status FROM settlement_runs WHERE id = $1",
                             a_run) == "finalized"
    assert tuple(await db.fetchrow("SELECT name, landing_url FROM affiliate_programs"
                                   " WHERE id = $1", a_program.id)) == (
        f"A-PROGRAM-{mark}", a_program.landing_url)
    assert await db.fetchval("SELECT count(*) FROM affiliate_program_terms WHERE"
                             " program_id = $1", a_program.id) == 1
    assert await db.fetchval("SELECT count(*) FROM affiliate_creatives WHERE"
                             " program_id = $1", a_program.id) == 1
    assert await db.fetchval("SELECT status FROM affiliate_enrollments WHERE id = $1",
                             a_enrollment.id) == "approved"
    assert await db.fetchval("SELECT count(*) FROM affiliate_enrollments WHERE"
                             " program_id = $1", a_program.id) == 1
