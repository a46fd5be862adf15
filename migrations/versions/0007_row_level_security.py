"""row-level security: the coalition_tenant role and one policy per tenant-owned table

Revision ID: 0007
Revises: 0006

The second wall of tenant isolation. Every partner API request and every partner console
page runs its queries under `SET LOCAL ROLE coalition_tenant` with the partner's id in
the transaction-local setting `coalition.partner_id` (tenants/scope.py). The role is not
a superuser, has no BYPASSRLS and owns no table, so PostgreSQL applies the policies below
to it whatever the application code asks for. The policies fail closed: with no partner
set, `nullif(current_setting('coalition.partner_id', true), '')::uuid` is NULL and no
row matches.

The role gets only the privileges tenant code needs: SELECT on what a partner may read,
INSERT/UPDATE/DELETE only where the API or the console writes. Ledger writes do not run
as the tenant: the posting functions take the partner id explicitly and run on the
ledger pool as the application's login role (one round trip each, see README).

Operator pages, member pages, the OAuth endpoints, the importer and the maintenance
worker run as the login role, which owns the tables and so is not subject to the
policies (no FORCE ROW LEVEL SECURITY).

"""
from pathlib import Path

from alembic import op

from coalition.migrate import execute_sql_file

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ROLE = "coalition_tenant"
PARTNER = "nullif(current_setting('coalition.partner_id', true), '')::uuid"
LINKED = ("EXISTS (SELECT 1 FROM member_links l WHERE l.member_id = {member} "
          f"AND l.partner_id = {PARTNER})")
OWN_ENTRY = ("EXISTS (SELECT 1 FROM journal_entries e WHERE e.id = {entry} "
             f"AND e.partner_id = {PARTNER})")

# table: (privileges granted to the tenant role, the policy's USING / WITH CHECK expression)
POLICIES: dict[str, tuple[str, str]] = {
    # Rows that carry their partner.
    "member_links": ("SELECT, INSERT, UPDATE", f"partner_id = {PARTNER}"),
    "oauth_clients": ("SELECT, INSERT, UPDATE", f"partner_id = {PARTNER}"),
    "oauth_tokens": ("SELECT, UPDATE", f"partner_id = {PARTNER}"),
    # Only the partner's own staff; operators and members have no partner_id.
    "users": ("SELECT, INSERT, UPDATE", f"partner_id = {PARTNER}"),
    "audit_log": ("SELECT, INSERT", f"partner_id = {PARTNER}"),
    "partner_terms_acceptances": ("SELECT, INSERT", f"partner_id = {PARTNER}"),
    "idempotency_keys": ("SELECT, INSERT, UPDATE, DELETE", f"partner_id = {PARTNER}"),
    "journal_entries": ("SELECT", f"partner_id = {PARTNER}"),
    "lots": ("SELECT", f"partner_id = {PARTNER}"),  # the lots this partner issued
    "oauth_authorization_codes": ("SELECT", f"partner_id = {PARTNER}"),
    "member_consents": ("SELECT", f"partner_id = {PARTNER}"),
    "partner_identity_providers": ("SELECT, INSERT, UPDATE", f"partner_id = {PARTNER}"),
    # The partner's own row only.
    "partners": ("SELECT", f"id = {PARTNER}"),
    # Coalition-wide rows a partner sees in part.
    "members": ("SELECT", LINKED.format(member="members.id")),
    "accounts": ("SELECT", f"partner_id = {PARTNER} OR (member_id IS NOT NULL AND "
                 + LINKED.format(member="accounts.member_id") + ")"),
    "postings": ("SELECT", OWN_ENTRY.format(entry="postings.entry_id")),
    "lot_movements": ("SELECT", "EXISTS (SELECT 1 FROM lots o WHERE o.id = lot_movements.lot_id"
                      f" AND o.partner_id = {PARTNER}) OR "
                      + OWN_ENTRY.format(entry="lot_movements.entry_id")),
    # Invitation tokens for the partner's own staff (stored hashed).
    "user_tokens": ("INSERT", "EXISTS (SELECT 1 FROM users u WHERE u.id = user_tokens.user_id"
                    f" AND u.partner_id = {PARTNER})"),
}
# No tenant data in them; readable by everyone, no policy needed.
REFERENCE_TABLES = ("partner_terms", "coalition_settings")
# web_sessions, login_attempts, oidc_signing_keys and alembic_version get no grant at all.


def upgrade() -> None:
    execute_sql_file(Path(__file__).parent.parent / "sql" / "0007_row_level_security.sql")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
    op.execute(f"GRANT SELECT ON {', '.join(REFERENCE_TABLES)} TO {ROLE}")
    for table, (privileges, condition) in POLICIES.items():
        op.execute(f"GRANT {privileges} ON {table} TO {ROLE}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_isolation ON {table} AS PERMISSIVE FOR ALL TO {ROLE}"
                   f" USING ({condition}) WITH CHECK ({condition})")


def downgrade() -> None:
    for table in POLICIES:
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute(f"REVOKE ALL ON {table} FROM {ROLE}")
    op.execute(f"REVOKE ALL ON {', '.join(REFERENCE_TABLES)} FROM {ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {ROLE}")
    op.execute("DROP FUNCTION IF EXISTS member_find_or_create(text, text, text)")
    # The role stays: it is cluster-wide and other databases may use it.
