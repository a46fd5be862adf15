"""Row-level security, the second wall: queried directly under the coalition_tenant role,
another partner's rows are invisible and cannot be written, with no partner set nothing
is visible, and the API's and the console's sessions really run under that role."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy import text

import coalition.members as members_module
import web.portal.partners.console as console_module
from coalition import clock
from tenants.accounts import audit, create_user, issue_token
from tenants.models import (
    AuthorizationCode,
    IdentityProvider,
    MemberConsent,
    TermsAcceptance,
)
from tenants.scope import tenant_connection, tenant_session
from tenants.service import create_app_client
from tests.helpers import new_partner
from tests.portal import owner_browser
from tests.settlement_helpers import settled_statement

ROLE = "coalition_tenant"

# Partner A's rows in each tenant-owned table. {partner}, {member} and {entries} are
# A's partner id, A's member (linked to A only) and A's journal entries.
A_ROWS = {
    "partners": "id = {partner}",
    "member_links": "partner_id = {partner}",
    "oauth_clients": "partner_id = {partner}",
    "oauth_tokens": "partner_id = {partner}",
    "users": "partner_id = {partner}",
    "audit_log": "partner_id = {partner}",
    "partner_terms_acceptances": "partner_id = {partner}",
    "idempotency_keys": "partner_id = {partner}",
    "journal_entries": "partner_id = {partner}",
    "lots": "partner_id = {partner}",
    "members": "id = {member}",
    "accounts": "partner_id = {partner} OR member_id = {member}",
    "postings": "entry_id = ANY({entries})",
    "lot_movements": "entry_id = ANY({entries})",
    "oauth_authorization_codes": "partner_id = {partner}",
    "member_consents": "partner_id = {partner}",
    "partner_identity_providers": "partner_id = {partner}",
    "purchases": "partner_id = {partner}",
    "purchase_returns": "partner_id = {partner}",
    "rule_hits": "partner_id = {partner}",
    "point_holds": "partner_id = {partner}",
    "member_events": "partner_id = {partner}",
    "member_referrals": "partner_id = {partner}",
    "rewards": "partner_id = {partner}",
    "vouchers": "partner_id = {partner} OR issuer_partner_id = {partner}",
    "earning_rules": "partner_id = {partner}",
    "earning_rule_versions": "partner_id = {partner}",
    "member_tiers": "member_id = {member}",
    "segments": "partner_id = {partner}",
    "segment_members": "segment_id IN (SELECT id FROM segments WHERE partner_id = {partner})",
    "rfm_scores": "partner_id = {partner}",
    "settlement_terms": "partner_id = {partner}",
    "partner_payout_details": "partner_id = {partner}",
    "settlement_payments": "partner_id = {partner}",
    "prepaid_blocks": "partner_id = {partner}",
    "prepaid_balances": "partner_id = {partner}",
    "settlement_statements": "partner_id = {partner}",
    "settlement_lines": "partner_id = {partner}",
    "settlement_adjustments": "partner_id = {partner}",
    "settlement_disputes": "partner_id = {partner}",
    "settlement_flows": "issuer_partner_id = {partner} OR redeemer_partner_id = {partner}",
    "affiliate_programs": "partner_id = {partner}",
    "affiliate_program_terms": "partner_id = {partner}",
    "affiliate_enrollments": "partner_id = {partner}",
    "affiliate_clicks": "partner_id = {partner}",
    "affiliate_attributions": "partner_id = {partner}",
    "affiliate_commissions": "partner_id = {partner}",
    "affiliate_payouts": "partner_id = {partner}",
    "affiliate_creatives": "partner_id = {partner}",
    "affiliates": "id IN (SELECT affiliate_id FROM affiliate_enrollments"
                  " WHERE partner_id = {partner})",
}
# Partner-keyed tables whose rows with partner_id NULL (the coalition's) every partner
# reads but none may write: test_coalition_rules_are_shared_read_only.
SHARED_WITH_COALITION = {"earning_rules", "earning_rule_versions"}
PARTNER_KEYED = [t for t, where in A_ROWS.items() if where == "partner_id = {partner}"
                 and t not in SHARED_WITH_COALITION]
# Tables with a policy whose rows the tenant may only insert, never read.
WRITE_ONLY = {"user_tokens"}
# No tenant data: the tenant may read them, no policy needed.
REFERENCE = {"partner_terms", "coalition_settings", "tiers", "tier_settings", "fx_rates"}
# The tenant role gets no privilege at all on these.
PRIVATE = {"web_sessions", "login_attempts", "alembic_version", "oidc_signing_keys",
           "procrastinate_jobs", "procrastinate_events", "procrastinate_periodic_defers",
           "procrastinate_workers", "coupon_offers",
           "tier_history", "stripe_events", "operator_notifications", "sepa_batches",
           "settlement_runs", "settlement_entries"}


class Scenario:
    def __init__(self, a, b, member: str, member_email: str, entries: list[int],
                 a_owner: uuid.UUID, b_client_pk: uuid.UUID) -> None:
        self.a, self.b = a, b
        self.member, self.member_email, self.entries = member, member_email, entries
        self.a_owner, self.b_client_pk = a_owner, b_client_pk

    def where(self, table: str) -> str:
        return A_ROWS[table].format(
            partner=f"'{self.a.partner_id}'::uuid", member=f"'{self.member}'::uuid",
            entries="ARRAY[" + ",".join(map(str, self.entries)) + "]::bigint[]")


@pytest.fixture(scope="module")
async def scenario(app, client, db) -> Scenario:
    a = await new_partner(client, "Alpha Walled Brand")
    b = await new_partner(client, "Beta Walled Brand")
    email = f"a-only-{uuid.uuid4().hex[:8]}@example.com"
    member = await a.enroll(email, partner_customer_id="A-CUSTOMER")
    earn = (await a.earn(member, 100, order_id="A-ORDER")).json()
    redemption = (await a.redeem(member, 30, order_id="A-ORDER-2")).json()
    b_member = await b.enroll()
    await b.earn(b_member, 10)
    async with app.state.sessionmaker() as session:
        owner = await create_user(session, f"owner-{uuid.uuid4().hex[:8]}@alpha.example",
                                  "partner_staff", partner_id=a.partner_id, role="owner")
        await issue_token(session, owner, "invite")
        await audit(session, owner, "test.walled", partner_id=a.partner_id)
        session.add(TermsAcceptance(partner_id=a.partner_id, version="2026-1",
                                    accepted_by=owner.email))
        # The member connected A's app: a consent and an authorization code; A's staff
        # sign in through A's own identity provider.
        app_client, _ = await create_app_client(session, a.partner_id, "Alpha app",
                                                ["openid"], ["https://alpha.example/cb"])
        person = await create_user(session, email, "member", member_id=uuid.UUID(member))
        session.add(MemberConsent(partner_id=a.partner_id, client_pk=app_client.id,
                                  member_id=uuid.UUID(member), scope="openid"))
        session.add(AuthorizationCode(
            code_hash=uuid.uuid4().hex * 2, client_pk=app_client.id, partner_id=a.partner_id,
            user_id=person.id, member_id=uuid.UUID(member), redirect_uri="https://alpha.example/cb",
            scope="openid", code_challenge="x" * 43, code_challenge_method="S256",
            auth_time=clock.now(), family_id=uuid.uuid4(),
            expires_at=clock.now() + timedelta(minutes=1)))
        session.add(IdentityProvider(partner_id=a.partner_id, issuer="https://idp.alpha.example",
                                     client_id="alpha", client_secret_encrypted="sealed"))
        await session.commit()
    b_client_pk = await db.fetchval("SELECT id FROM oauth_clients WHERE partner_id = $1",
                                    b.partner_id)
    await _loyalty_rows(db, a.partner_id, uuid.UUID(member), uuid.UUID(b_member),
                        earn["id"], redemption["id"])
    return Scenario(a, b, member, email, [earn["id"], redemption["id"]], owner.id, b_client_pk)


async def _loyalty_rows(db, partner: uuid.UUID, member: uuid.UUID, other: uuid.UUID,
                       earn: int, redemption: int) -> None:
    """A's rows in the loyalty tables, written directly: this test is about the wall,
    not about how the API fills them."""
    purchase = await db.fetchval(
        "INSERT INTO purchases (partner_id, member_id, order_id, occurred_at, currency, total,"
        " channel, points, entry_id) VALUES ($1, $2, 'A-ORDER', now(), 'PLN', 10000, 'store',"
        " 100, $3) RETURNING id", partner, member, earn)
    await db.execute("INSERT INTO purchase_returns (partner_id, purchase_id, member_id, amount,"
                     " points) VALUES ($1, $2, $3, 100, 1)", partner, purchase, member)
    await db.execute("INSERT INTO rule_hits (entry_id, partner_id, member_id, rule_id,"
                     " rule_version, points, funding, occurred_at) VALUES ($1, $2, $3,"
                     " gen_random_uuid(), 1, 100, 'partner', now())", earn, partner, member)
    # Closed already: an open hold on an entry that held nothing would be released by a
    # later test's hold-expiry job, crediting points never taken.
    await db.execute("INSERT INTO point_holds (partner_id, member_id, points, hold_entry_id,"
                     " expires_at, status) VALUES ($1, $2, 30, $3, now(), 'voided')",
                     partner, member, redemption)
    await db.execute("INSERT INTO member_events (partner_id, member_id, event_type, reference,"
                     " occurred_at) VALUES ($1, $2, 'webinar', 'W-1', now())", partner, member)
    await db.execute("INSERT INTO member_referrals (referee_id, referrer_id, partner_id)"
                     " VALUES ($1, $2, $3)", member, other, partner)
    reward = await db.fetchval(
        "INSERT INTO rewards (partner_id, name, kind, value, price_points)"
        " VALUES ($1, 'A-REWARD', 'percent_discount', 10, 100) RETURNING id", partner)
    await db.execute("INSERT INTO vouchers (code, reward_id, member_id, partner_id,"
                     " issuer_partner_id, source, points, entry_id)"
                     " VALUES ('AAAA-AAAA-AAAA-' || substr(md5(random()::text), 1, 4), $1, $2,"
                     " $3, $3, 'redemption', 30, $4)", reward, member, partner, redemption)
    # The coalition's rule is archived so that it earns nothing in later tests' purchases.
    for owner, name in ((partner, "A-RULE"), (None, "COALITION-RULE")):
        rule = await db.fetchval("INSERT INTO earning_rules (partner_id, name, archived_at)"
                                 " VALUES ($1, $2, CASE WHEN $1::uuid IS NULL THEN now() END)"
                                 " RETURNING id", owner, name)
        await db.execute("INSERT INTO earning_rule_versions (rule_id, version, partner_id,"
                         " name, type, params, funding) VALUES ($1, 1, $2, $3, 'per_amount',"
                         " '{\"points\": 1, \"per\": 100}', 'partner')", rule, owner, name)
    # Tiers, segments and RFM scores (coalition/tiers, coalition/segments).
    await db.execute("INSERT INTO tiers (code, name, rank, threshold) SELECT 'standard',"
                     " 'Standard', 0, 0 WHERE NOT EXISTS (SELECT 1 FROM tiers)")
    await db.execute("INSERT INTO member_tiers (member_id, tier_code, since, earned_code)"
                     " SELECT $1, code, now(), code FROM tiers ORDER BY rank LIMIT 1", member)
    await db.execute("INSERT INTO tier_history (member_id, to_code, reason, actor, occurred_at)"
                     " SELECT $1, code, 'manual', 'op', now() FROM tiers LIMIT 1", member)
    segment = await db.fetchval("INSERT INTO segments (partner_id, name, definition, created_by)"
                                " VALUES ($1, 'A segment', $2, 'a') RETURNING id", partner,
                                '{"conditions": [{"type": "birthday_month", "months": [5]}]}')
    await db.execute("INSERT INTO segment_members VALUES ($1, $2, now())", segment, member)
    await db.execute("INSERT INTO rfm_scores (partner_id, member_id, recency, frequency,"
                     " monetary, last_purchase_at, purchases, spend, computed_at)"
                     " VALUES ($1, $2, 5, 5, 5, now(), 1, 10000, now())", partner, member)
    await db.execute("INSERT INTO settlement_terms (partner_id, effective_from, issue_price,"
                     " reimbursement, created_by) VALUES ($1, now(), 1.2, 1.0, 'a')", partner)
    # Payments (settlement/payments.py).
    await db.execute("INSERT INTO partner_payout_details (partner_id, method, account_holder,"
                     " iban) VALUES ($1, 'sepa', 'A', 'DE89370400440532013000')", partner)
    await db.execute("INSERT INTO settlement_payments (partner_id, kind, reference_type,"
                     " reference_id, amount, currency, status) VALUES ($1, 'invoice',"
                     " 'statement', gen_random_uuid()::text, 100, 'PLN', 'open')", partner)
    await db.execute("INSERT INTO prepaid_balances (partner_id) VALUES ($1)", partner)
    await db.execute("INSERT INTO prepaid_blocks (partner_id, points, price, currency,"
                     " issue_price, terms_id, requested_by) SELECT $1, 100, 120, 'PLN', 1.2,"
                     " id, 'a' FROM settlement_terms WHERE partner_id = $1 LIMIT 1", partner)
    await settled_statement(db, partner, "1999-02")
    await _affiliate_rows(db, partner, member)


async def _affiliate_rows(db, partner: uuid.UUID, member: uuid.UUID) -> None:
    affiliate = await db.fetchval(
        "INSERT INTO affiliates (kind, name, email) VALUES ('person', 'A affiliate',"
        " 'aff-' || gen_random_uuid() || '@example.com') RETURNING id")
    program = await db.fetchval(
        "INSERT INTO affiliate_programs (partner_id, name, landing_url, currency)"
        " VALUES ($1, 'A program', 'https://alpha.example/', 'PLN') RETURNING id", partner)
    terms = await db.fetchval(
        "INSERT INTO affiliate_program_terms (program_id, partner_id, version, model, rate_bp,"
        " created_by) VALUES ($1, $2, 1, 'percent', 500, 'a') RETURNING id", program, partner)
    enrollment = await db.fetchval(
        "INSERT INTO affiliate_enrollments (program_id, partner_id, affiliate_id, code, status)"
        " VALUES ($1, $2, $3, 'a-' || substr(md5(random()::text), 1, 8), 'approved')"
        " RETURNING id", program, partner, affiliate)
    click = uuid.uuid4()
    await db.execute("INSERT INTO affiliate_clicks (click_id, enrollment_id, program_id,"
                     " partner_id, clicked_at, ip_hash) VALUES ($1, $2, $3, $4, now(), 'h')",
                     click, enrollment, program, partner)
    await db.execute("INSERT INTO affiliate_attributions (member_id, program_id, partner_id,"
                     " enrollment_id, click_id, source, clicked_at) VALUES ($1, $2, $3, $4, $5,"
                     " 'click', now())", member, program, partner, enrollment, click)
    payout = await db.fetchval(
        "INSERT INTO affiliate_payouts (enrollment_id, affiliate_id, program_id, partner_id,"
        " method, currency, amount_minor) VALUES ($1, $2, $3, $4, 'sepa', 'PLN', 500)"
        " RETURNING id", enrollment, affiliate, program, partner)
    await db.execute(
        "INSERT INTO affiliate_commissions (program_id, partner_id, enrollment_id, affiliate_id,"
        " terms_id, kind, order_id, member_id, currency, sale_minor, amount_minor, status,"
        " occurred_at, payout_id) VALUES ($1, $2, $3, $4, $5, 'sale', 'A-ORDER', $6, 'PLN',"
        " 10000, 500, 'paid', now(), $7)",
        program, partner, enrollment, affiliate, terms, member, payout)
    await db.execute("INSERT INTO affiliate_creatives (program_id, partner_id, title, filename,"
                     " content_type, content) VALUES ($1, $2, 'Banner', 'b.png', 'image/png',"
                     " '\\x89')", program, partner)


@asynccontextmanager
async def as_tenant(db: asyncpg.Pool, partner_id: uuid.UUID | str | None):
    """A direct connection under SET ROLE coalition_tenant and the partner's context
    (none when partner_id is None), rolled back at the end."""
    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(f"SET LOCAL ROLE {ROLE}")
            if partner_id is not None:
                await conn.execute("SELECT set_config('coalition.partner_id', $1, true)",
                                   str(partner_id))
            yield conn
        finally:
            await transaction.rollback()


async def test_the_scenario_has_rows_for_a_in_every_table_and_a_sees_them(db, scenario):
    for table in A_ROWS:
        where = scenario.where(table)
        total = await db.fetchval(f"SELECT count(*) FROM {table} WHERE {where}")
        assert total > 0, table
        async with as_tenant(db, scenario.a.partner_id) as conn:
            assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {where}") == total


@pytest.mark.parametrize("table", list(A_ROWS))
async def test_partner_b_sees_none_of_partner_as_rows(db, scenario, table):
    async with as_tenant(db, scenario.b.partner_id) as conn:
        assert await conn.fetchval("SELECT current_user") == ROLE
        assert await conn.fetchval(
            f"SELECT count(*) FROM {table} WHERE {scenario.where(table)}") == 0


async def test_partner_b_sees_only_its_own_rows(db, scenario):
    b = scenario.b.partner_id
    async with as_tenant(db, b) as conn:
        for table in PARTNER_KEYED:
            assert await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE partner_id IS DISTINCT FROM $1", b) == 0
        assert await conn.fetch("SELECT id FROM partners") == [(b,)]
        assert await conn.fetchval("SELECT count(*) FROM oauth_clients") == 1
        # Its member, that member's wallet and its own two partner accounts.
        assert await conn.fetchval("SELECT count(*) FROM members") == 1
        assert await conn.fetchval("SELECT count(*) FROM accounts") == 3
        assert await conn.fetchval(
            "SELECT count(*) FROM postings p JOIN journal_entries e ON e.id = p.entry_id") == \
            await conn.fetchval("SELECT count(*) FROM postings") == 2


async def test_coalition_rules_are_shared_read_only(db, scenario):
    """Earning rules with partner_id NULL are the coalition's: every partner reads them
    (they apply at its checkout), none may create, change or delete one."""
    b = scenario.b.partner_id
    async with as_tenant(db, b) as conn:
        for table in SHARED_WITH_COALITION:
            assert await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE partner_id IS DISTINCT FROM $1"
                " AND partner_id IS NOT NULL", b) == 0
            assert await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE partner_id IS NULL") >= 1
        coalition_rule = await conn.fetchval(
            "SELECT id FROM earning_rules WHERE partner_id IS NULL LIMIT 1")
        for statement, args in (
                ("INSERT INTO earning_rules (partner_id, name) VALUES (NULL, 'forged')", ()),
                ("INSERT INTO earning_rules (partner_id, name) VALUES ($1, 'forged')",
                 (scenario.a.partner_id,)),
                ("UPDATE earning_rules SET name = 'taken' WHERE id = $1", (coalition_rule,)),
                ("INSERT INTO earning_rule_versions (rule_id, version, partner_id, name, type,"
                 " funding) VALUES ($1, 9, NULL, 'forged', 'referral', 'coalition')",
                 (coalition_rule,))):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                async with conn.transaction():
                    await conn.execute(statement, *args)
        for statement in ("DELETE FROM earning_rules", "UPDATE earning_rules SET budget_used = 0",
                          "UPDATE earning_rule_versions SET name = 'x'"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                async with conn.transaction():
                    await conn.execute(statement)


@pytest.mark.parametrize("setting", [None, ""])
async def test_with_no_partner_set_nothing_is_visible(db, scenario, setting):
    async with as_tenant(db, setting) as conn:
        for table in A_ROWS:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_writes_for_partner_a_are_refused(db, scenario):
    a = scenario.a.partner_id
    refused = [
        ("INSERT INTO member_links (partner_id, member_id) VALUES ($1, $2)",
         (a, uuid.UUID(scenario.member))),
        ("INSERT INTO oauth_clients (client_id, partner_id, name, grant_types, scope)"
         " VALUES ('cl_intruder', $1, 'x', '{client_credentials}', 'members:read')", (a,)),
        ("INSERT INTO users (email, kind, partner_id, role)"
         " VALUES ('intruder@beta.example', 'partner_staff', $1, 'owner')", (a,)),
        ("INSERT INTO audit_log (actor, partner_id, action) VALUES ('x', $1, 'forged')", (a,)),
        ("INSERT INTO idempotency_keys (partner_id, key, request_hash)"
         " VALUES ($1, 'k', 'h')", (a,)),
        ("INSERT INTO user_tokens (token_hash, user_id, purpose, expires_at)"
         " VALUES ('forged', $1, 'reset_password', now() + interval '1 hour')",
         (scenario.a_owner,)),
        ("INSERT INTO rewards (partner_id, name, kind, value, price_points)"
         " VALUES ($1, 'Planted', 'percent_discount', 10, 1)", (a,)),
        ("INSERT INTO segments (partner_id, name, definition, created_by)"
         " VALUES ($1, 'forged', '{}', 'b')", (a,)),
        # Leads are stored under the tenant role (migration 0024): only its own.
        ("INSERT INTO affiliate_attributions (member_id, program_id, partner_id,"
         " enrollment_id, source, clicked_at) VALUES ($2, gen_random_uuid(), $1,"
         " gen_random_uuid(), 'code', now())", (a, uuid.UUID(scenario.member))),
        ("INSERT INTO affiliate_commissions (program_id, partner_id, enrollment_id,"
         " affiliate_id, terms_id, kind, currency, amount_minor, status, occurred_at)"
         " VALUES (gen_random_uuid(), $1, gen_random_uuid(), gen_random_uuid(), 1, 'lead',"
         " 'PLN', 1, 'approved', now())", (a,)),
        # B moves its own row over to A.
        ("UPDATE oauth_clients SET partner_id = $1 WHERE id = $2", (a, scenario.b_client_pk)),
        # A staff user B creates for itself may not be turned into an operator.
        ("INSERT INTO users (email, kind) VALUES ('op@beta.example', 'operator')", ()),
    ]
    async with as_tenant(db, scenario.b.partner_id) as conn:
        for statement, args in refused:
            with pytest.raises(asyncpg.InsufficientPrivilegeError,
                               match="row-level security"):
                async with conn.transaction():
                    await conn.execute(statement, *args)
        # A's rows are out of reach: updates and deletes find nothing to change.
        assert await conn.execute(
            "UPDATE oauth_clients SET revoked_at = now() WHERE partner_id = $1", a) == "UPDATE 0"
        assert await conn.execute(
            "UPDATE users SET role = 'analyst' WHERE id = $1", scenario.a_owner) == "UPDATE 0"
        assert await conn.execute(
            "UPDATE member_links SET customer_id = 'stolen' WHERE partner_id = $1",
            a) == "UPDATE 0"
        assert await conn.execute(
            "DELETE FROM idempotency_keys WHERE partner_id = $1", a) == "DELETE 0"
        assert await conn.execute(
            "UPDATE rewards SET price_points = 1 WHERE partner_id = $1", a) == "UPDATE 0"
        assert await conn.execute(
            "UPDATE affiliate_attributions SET clicked_at = now() WHERE partner_id = $1",
            a) == "UPDATE 0"
    assert await db.fetchval("SELECT count(*) FROM oauth_clients WHERE partner_id = $1"
                             " AND revoked_at IS NULL", a) == 2     # its server and its app


async def test_the_tenant_cannot_write_the_ledger_or_read_private_tables(db, scenario):
    statements = [
        "INSERT INTO journal_entries (kind, actor, occurred_at) VALUES ('adjust', 'x', now())",
        "UPDATE accounts SET balance = balance + 1000",
        "INSERT INTO members (email, card_number) VALUES ('m@x.example', '7000000000000000')",
        "UPDATE partners SET status = 'active'",
        "DELETE FROM oauth_tokens",
        "UPDATE vouchers SET status = 'used'",
        "INSERT INTO vouchers (code, reward_id, member_id, partner_id, issuer_partner_id,"
        " source) SELECT 'X', id, gen_random_uuid(), partner_id, partner_id, 'coupon'"
        " FROM rewards",
        "DELETE FROM rewards",
        "SELECT count(*) FROM user_tokens",
        *(f"SELECT count(*) FROM {table}" for table in sorted(PRIVATE)),
    ]
    async with as_tenant(db, scenario.b.partner_id) as conn:
        for statement in statements:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                async with conn.transaction():
                    await conn.execute(statement)


async def test_the_member_door_returns_an_id_and_nothing_else(db, scenario):
    async with as_tenant(db, scenario.b.partner_id) as conn:
        row = await conn.fetchrow("SELECT * FROM member_find_or_create($1, NULL, $2)",
                                  scenario.member_email.upper(), "7099999999999999")
        assert row["member_id"] == uuid.UUID(scenario.member) and row["created"] is False
        assert await conn.fetchval("SELECT count(*) FROM members WHERE id = $1",
                                   row["member_id"]) == 0
        assert await conn.fetchval("SELECT count(*) FROM member_links") == 1   # B's own


async def test_the_tenant_role_is_powerless(db):
    role = await db.fetchrow("SELECT * FROM pg_roles WHERE rolname = $1", ROLE)
    assert role is not None
    assert not role["rolsuper"] and not role["rolbypassrls"] and not role["rolcanlogin"]
    assert not role["rolinherit"] and not role["rolcreaterole"] and not role["rolcreatedb"]
    owned = await db.fetchval(
        "SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid)"
        " + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)"
        " + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)"
        " FROM pg_roles r WHERE r.rolname = $1", ROLE)
    assert owned == 0
    assert await db.fetchval(
        "SELECT count(*) FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.member"
        " WHERE r.rolname = $1", ROLE) == 0                      # a member of no role
    assert await db.fetchval("SELECT pg_has_role(current_user, $1, 'MEMBER')", ROLE)


async def test_every_table_is_classified_and_walled(db):
    """A new table must be given a policy (or declared free of tenant data) here and in
    a migration: this test fails until it is."""
    tables = {r["tablename"]: r["rowsecurity"] for r in await db.fetch(
        "SELECT tablename, rowsecurity FROM pg_tables WHERE schemaname = 'public'")}
    walled = set(A_ROWS) | WRITE_ONLY
    assert set(tables) == walled | REFERENCE | PRIVATE, "unclassified tables"
    policies = {r["tablename"]: r for r in await db.fetch(
        "SELECT tablename, roles, qual, with_check FROM pg_policies"
        " WHERE schemaname = 'public'")}
    for table in walled:
        assert tables[table], f"{table}: row-level security is off"
        assert policies[table]["roles"] == [ROLE], table
        assert "coalition.partner_id" in policies[table]["qual"], table
        assert "coalition.partner_id" in policies[table]["with_check"], table
    privilege = "SELECT has_table_privilege($1, $2, $3)"
    for table in REFERENCE:
        assert not tables[table]
        assert await db.fetchval(privilege, ROLE, table, "SELECT")
        for kind in ("INSERT", "UPDATE", "DELETE"):
            assert not await db.fetchval(privilege, ROLE, table, kind), (table, kind)
    for table in PRIVATE:
        for kind in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            assert not await db.fetchval(privilege, ROLE, table, kind), (table, kind)
    for table in ("journal_entries", "postings", "lots", "lot_movements", "accounts",
                  "members", "partners"):
        for kind in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            assert not await db.fetchval(privilege, ROLE, table, kind), (table, kind)
    # The only doors through the wall, each reviewed: enrolment finds a coalition member
    # by email; a referral names another member by card number or code (revealing
    # nothing); the referral figures answer counts for the partner in scope only.
    definers = await db.fetch(
        "SELECT proname FROM pg_proc WHERE prosecdef"
        " AND pronamespace = 'public'::regnamespace ORDER BY proname")
    assert [r["proname"] for r in definers] == ["member_find_or_create",
                                                 "member_referral_bind",
                                                 "referral_figures_mine"]


async def test_the_tenant_session_helper_scopes_every_transaction(app, scenario):
    b = scenario.b.partner_id
    probe = text("SELECT current_user AS who, current_setting('coalition.partner_id', true)"
                 " AS partner")
    async with tenant_session(app.state.sessionmaker, b) as session:
        first = (await session.execute(probe)).one()
        await session.commit()
        after_commit = (await session.execute(probe)).one()
        await session.rollback()
        after_rollback = (await session.execute(probe)).one()
        members = await session.scalar(text("SELECT count(*) FROM members"))
    for row in (first, after_commit, after_rollback):
        assert (row.who, row.partner) == (ROLE, str(b))
    assert members == 1
    async with app.state.sessionmaker() as plain:
        row = (await plain.execute(probe)).one()
        assert row.who != ROLE and not row.partner
    async with tenant_connection(app.state.pool, b) as conn:
        assert await conn.fetchval("SELECT current_user") == ROLE
        assert await conn.fetchval("SELECT count(*) FROM partners") == 1
    assert await app.state.pool.fetchval("SELECT current_user") != ROLE


async def _who(session) -> tuple[str, str]:
    row = (await session.execute(text(
        "SELECT current_user, current_setting('coalition.partner_id', true)"))).one()
    return row[0], row[1]


async def test_the_api_session_runs_as_the_tenant(scenario, monkeypatch):
    seen = []
    original = members_module.get_visible

    async def spy(session, partner_id, member_id):
        seen.append(await _who(session))
        return await original(session, partner_id, member_id)

    monkeypatch.setattr(members_module, "get_visible", spy)
    response = await scenario.a.get(f"/api/v1/members/{scenario.member}")
    assert response.status_code == 200
    refused = await scenario.b.get(f"/api/v1/members/{scenario.member}")
    assert refused.status_code == 404
    assert seen == [(ROLE, str(scenario.a.partner_id)), (ROLE, str(scenario.b.partner_id))]


async def test_the_console_session_runs_as_the_tenant(app, client, monkeypatch):
    seen = []
    original = console_module.acting

    class Spy:
        """The console's runner, noting who each of its Txs runs as."""

        def __init__(self, runner):
            self.runner = runner

        async def run(self, use_case, *args, **kwargs):
            async def watched(tx, *args, **kwargs):
                seen.append(await _who(await tx.session()))
                return await use_case(tx, *args, **kwargs)
            return await self.runner.run(watched, *args, **kwargs)

    monkeypatch.setattr(console_module, "acting",
                        lambda *args, **kwargs: Spy(original(*args, **kwargs)))
    browser, partner_id = await owner_browser(app, client)
    async with browser:
        for path in ("/partner", "/partner/clients", "/partner/staff"):
            assert (await browser.get(path)).status_code == 200, path
    assert seen == [(ROLE, str(partner_id))] * 3


LOGIN = "coalition_tenant_login"


async def test_tenant_sessions_log_in_as_a_powerless_role_and_reset_role_does_not_escape(
        app, db, scenario):
    """The app's tenant-scoped Txs log in as coalition_tenant_login, which holds nothing but
    membership in coalition_tenant: even RESET ROLE leaves them under every policy."""
    role = await db.fetchrow("SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles"
                             " WHERE rolname = $1", LOGIN)
    assert role["rolcanlogin"] and not role["rolsuper"] and not role["rolbypassrls"]
    assert await db.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
        " WHERE r.rolname = $1", LOGIN) == 0
    async with app.state.db.begin(partner_id=scenario.b.partner_id, scoped=True) as tx:
        await tx.conn.execute("RESET ROLE")
        who = await tx.conn.fetchrow("SELECT session_user, current_user")
        assert tuple(who) == (LOGIN, LOGIN)
        for table in A_ROWS:
            assert await tx.conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE {scenario.where(table)}") == 0, table
        await tx.conn.execute("SELECT set_config('coalition.partner_id', '', true)")
        assert await tx.conn.fetchval("SELECT count(*) FROM partners") == 0


async def test_a_cross_brand_coupon_is_visible_to_both_brands_and_no_other(db, scenario):
    """A coupon issued by A for a reward at B: A sees it (it issued it), B sees it (it
    is used there), a third brand sees nothing."""
    b_reward = await db.fetchval(
        "INSERT INTO rewards (partner_id, name, kind, value, price_points, listed)"
        " VALUES ($1, 'B-COUPON', 'percent_discount', 15, 1, false) RETURNING id",
        scenario.b.partner_id)
    code = f"CCCC-CCCC-CCCC-{uuid.uuid4().hex[:4].upper()}"
    await db.execute("INSERT INTO vouchers (code, reward_id, member_id, partner_id,"
                     " issuer_partner_id, source, order_id) VALUES ($1, $2, $3, $4, $5,"
                     " 'coupon', 'A-ORDER')", code, b_reward, uuid.UUID(scenario.member),
                     scenario.b.partner_id, scenario.a.partner_id)
    third = uuid.uuid4()
    for partner, visible in ((scenario.a.partner_id, 1), (scenario.b.partner_id, 1),
                             (third, 0)):
        async with as_tenant(db, partner) as conn:
            assert await conn.fetchval("SELECT count(*) FROM vouchers WHERE code = $1",
                                       code) == visible
    async with as_tenant(db, scenario.a.partner_id) as conn:     # B's reward stays B's
        assert await conn.fetchval("SELECT count(*) FROM rewards WHERE id = $1", b_reward) == 0
