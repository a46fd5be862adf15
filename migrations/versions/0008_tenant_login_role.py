"""A login role for tenant sessions: coalition_tenant_login

Revision ID: 0008
Revises: 0007

Tenant sessions (partner API, partner console) connect as `coalition_tenant_login`, a
role that can log in but holds nothing except membership in `coalition_tenant`: no
superuser, no BYPASSRLS, owns nothing. Even `RESET ROLE` on such a connection leaves it
under every row-level-security policy, so the wall does not depend on the code never
resetting the role. With password authentication, give it a password
(`ALTER ROLE coalition_tenant_login PASSWORD '…'`) and set
COALITION_TENANT_DATABASE_URL; with trust or peer authentication nothing is needed.
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

LOGIN_ROLE = "coalition_tenant_login"


def upgrade() -> None:
    # Cluster-wide and possibly created concurrently by another database's migration.
    op.execute(f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{LOGIN_ROLE}') THEN
        BEGIN
            CREATE ROLE {LOGIN_ROLE} LOGIN INHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB
                NOCREATEROLE NOREPLICATION;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    -- Changed only when needed: concurrent ALTERs of one role fail ("tuple concurrently
    -- updated") when several databases are migrated at once.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{LOGIN_ROLE}' AND rolcanlogin
                   AND rolinherit AND NOT (rolsuper OR rolbypassrls OR rolcreatedb
                                           OR rolcreaterole OR rolreplication)) THEN
        ALTER ROLE {LOGIN_ROLE} LOGIN INHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
            NOREPLICATION;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_auth_members am
                     JOIN pg_roles r ON r.oid = am.roleid
                     JOIN pg_roles m ON m.oid = am.member
                    WHERE r.rolname = 'coalition_tenant' AND m.rolname = '{LOGIN_ROLE}') THEN
        BEGIN
            GRANT coalition_tenant TO {LOGIN_ROLE};
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END $$;
""")
    # Databases grant CONNECT to PUBLIC by default; nothing more is needed.


def downgrade() -> None:
    # The role stays: it is cluster-wide and other databases may use it.
    op.execute(f"REVOKE coalition_tenant FROM {LOGIN_ROLE}")
