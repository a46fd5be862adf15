"""`coalition db check` and `coalition db repair-roles`: is the database what the
migrations made it, and put back what a restore without the global roles lost.

Why this exists. Roles are cluster-wide, so `pg_dump` does not carry them. Restoring a
dump into a cluster without `coalition_tenant` (the role every tenant session runs
under, migration 0007) and `coalition_tenant_login` (what tenant sessions log in as,
0008) fails every `CREATE POLICY … TO coalition_tenant` and every grant to it; pg_restore
reports each and carries on, the data is all there, and `coalition db upgrade` has
nothing to do: the version is at head. The tenant wall is gone (and
`member_find_or_create`, SECURITY DEFINER, is left executable by PUBLIC, because its
REVOKE and GRANT are one restore step that fails as a whole).

How "what the migrations expect" is derived. Not from a hand-kept list: policies and
grants come from a dozen migrations (0007, 0010, 0011, 0015, 0020, 0024, 0029 …) and
the functions are rewritten by many more, so any list would drift. Instead each check
creates a scratch database on the same server (`CREATE DATABASE … TEMPLATE template0`),
runs the Alembic migrations in it up to the revision the checked database is at, reads
the catalogs, and drops it. The migrations run inside one transaction that is rolled
back: if the roles are missing (the case this module is for), the migrations create them
in the scratch run and the rollback takes them away again, so checking changes nothing.
Same server, so `pg_get_functiondef`, `pg_get_triggerdef` and the policy expressions
deparse exactly as in the checked database. Compared:

- row-level security enabled / forced on every table (`pg_class`),
- the policies (`pg_policies`: name, command, roles, USING, WITH CHECK),
- the privileges of `coalition_tenant`, `coalition_tenant_login` and PUBLIC on the
  schema, tables, sequences, columns and functions (`aclexplode` of the catalogs' ACLs),
- the functions (an md5 of each `pg_get_functiondef`) and triggers (their definition and
  whether they are enabled) in the public schema, extensions' own objects left out,
- the Alembic version against the migrations' head.

The roles themselves are cluster-wide and a scratch run cannot show what they should be
(it sees the cluster's roles), so they are the one explicit list here (`ROLES`), as the
README states them: both exist, neither is a superuser or has BYPASSRLS, CREATEDB,
CREATEROLE or REPLICATION, `coalition_tenant` cannot log in and is a member of nothing,
`coalition_tenant_login` can log in and connect and is a member of `coalition_tenant`
only (any other membership would let a tenant session SET ROLE out of the policies), and
the role running the platform is a member of `coalition_tenant`.

The checking role needs CREATEDB (the scratch database); the repairing role must own the
tables and may create roles, like the role that runs the migrations. Alembic is
synchronous, so the work runs in a worker thread, on asyncpg (the driver the migrations
themselves run with) in that thread's own event loop: an async caller's loop is never
blocked.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import sqlalchemy
from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from coalition.db import TENANT_LOGIN_ROLE, TENANT_ROLE, DatabaseUrl
from coalition.migrate import ROOT, alembic_config, split_sql_script

T = TypeVar("T")
SCHEMA = "public"  # everything the migrations create lives there
# Whose privileges are compared: the tenant roles and PUBLIC (everyone, tenants included).
GRANTEES = (TENANT_ROLE, TENANT_LOGIN_ROLE)
PUBLIC = "PUBLIC"
SCRATCH_PREFIX = "coalition_check_"
ROLE_SQL = ROOT / "migrations" / "sql" / "0007_row_level_security.sql"
LOGIN_ROLE_REVISION = "0008"

# How each kind of problem is fixed (printed by the CLI and by `serve` when it refuses).
FIXES = {
    "repair-roles": "run `coalition db repair-roles` (as the role that runs the migrations:"
                    " it owns the tables and may create roles), then `coalition db check`",
    "upgrade": "run `coalition db upgrade`",
    "restore": "not repaired by `coalition db repair-roles`: restore the database again"
               " from a complete dump (README, \"Backup and restore\"), or apply the"
               " migration that creates it",
    "extra": "not touched by `coalition db repair-roles`: drop what should not be there,"
             " or create it in a migration",
    "scratch": "grant CREATEDB to the role the platform connects as, or run the check as a"
               " role that has it",
}


@dataclass(frozen=True)
class RoleSpec:
    """What the migrations make of a tenant role (0007, 0008); anything more is a hole."""

    login: bool
    inherit: bool
    member_of: tuple[str, ...]


ROLES: dict[str, RoleSpec] = {
    TENANT_ROLE: RoleSpec(login=False, inherit=False, member_of=()),
    TENANT_LOGIN_ROLE: RoleSpec(login=True, inherit=True, member_of=(TENANT_ROLE,)),
}
# Attributes neither role may ever have.
FORBIDDEN = {"rolsuper": "SUPERUSER", "rolbypassrls": "BYPASSRLS", "rolcreatedb": "CREATEDB",
             "rolcreaterole": "CREATEROLE", "rolreplication": "REPLICATION"}


@dataclass(frozen=True)
class Problem:
    """One thing that is not as the migrations left it, and which way it is fixed
    (a key of FIXES)."""

    what: str
    fix: str

    def __str__(self) -> str:
        return self.what


@dataclass(frozen=True)
class Policy:
    """A policy as `pg_policies` deparses it: comparable between two databases of one
    server, and enough to create it again."""

    permissive: str
    roles: tuple[str, ...]
    command: str
    using: str | None
    check: str | None

    def describe(self) -> str:
        return (f"AS {self.permissive} FOR {self.command} TO {', '.join(self.roles)}"
                f" USING ({self.using}) WITH CHECK ({self.check})")


# ("table", name) | ("sequence", name) | ("schema", name) | ("column", table, column)
# | ("function", name, identity arguments)
Obj = tuple[str, ...]


@dataclass
class Catalog:
    """What one database holds of the wall and of the ledger's SQL."""

    tables: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # (enabled, forced)
    policies: dict[tuple[str, str], Policy] = field(default_factory=dict)  # (table, name)
    objects: set[Obj] = field(default_factory=set)
    # (object, grantee) -> {privilege: with grant option}
    grants: dict[tuple[Obj, str], dict[str, bool]] = field(default_factory=dict)
    functions: dict[str, str | None] = field(default_factory=dict)  # signature -> md5
    triggers: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    versions: tuple[str, ...] = ()


@dataclass
class CheckResult:
    """The problems found; `summary` says what was compared (empty when nothing could be)."""

    problems: list[Problem]
    revision: str
    summary: str

    @property
    def clean(self) -> bool:
        return not self.problems


@dataclass
class RepairResult:
    """What repair did, one line each, and the check that followed it."""

    actions: list[str]
    check: CheckResult


def quote(name: str) -> str:
    """An SQL identifier, quoted (PUBLIC stays the keyword)."""
    return name if name == PUBLIC else '"' + name.replace('"', '""') + '"'


def label(obj: Obj) -> str:
    if obj[0] == "column":
        return f"column {obj[1]}.{obj[2]}"
    if obj[0] == "function":
        return f"function {obj[1]}({obj[2]})"
    return f"{obj[0]} {obj[1]}"


# --- reading the catalogs ---------------------------------------------------------------

# Every object a privilege can be granted on in the public schema (extensions' functions
# left out), each with its privileges for PUBLIC and the tenant roles; one row per
# privilege, or one row with NULLs for an object that grants them nothing.
_GRANTS = """
    WITH grantee AS (
        SELECT 0::oid AS oid, 'PUBLIC' AS name
        UNION ALL SELECT oid, rolname::text FROM pg_roles WHERE rolname = ANY(:grantees)
    ), o AS (
        SELECT 'schema' AS kind, n.nspname::text AS name, NULL::text AS detail,
               coalesce(n.nspacl, acldefault('n', n.nspowner)) AS acl
          FROM pg_namespace n WHERE n.nspname = 'public'
        UNION ALL
        SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END, c.relname::text,
               NULL, coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's'
                                                        ELSE 'r' END::"char", c.relowner))
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
        UNION ALL
        SELECT 'column', c.relname::text, a.attname::text, a.attacl
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL
        SELECT 'function', p.proname::text, pg_get_function_identity_arguments(p.oid),
               coalesce(p.proacl, acldefault('f', p.proowner))
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                              AND d.objid = p.oid AND d.deptype = 'e'))
    SELECT o.kind, o.name, o.detail, e.grantee, e.privilege_type, e.is_grantable
      FROM o LEFT JOIN LATERAL (
           SELECT g.name AS grantee, x.privilege_type, x.is_grantable
             FROM aclexplode(o.acl) x JOIN grantee g ON g.oid = x.grantee) e ON true"""
_QUERIES = {
    "tables": """
        SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')""",
    "policies": """
        SELECT tablename, policyname, permissive, roles::text[], cmd, qual, with_check
          FROM pg_policies WHERE schemaname = 'public'""",
    "grants": _GRANTS,
    "functions": """
        SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               CASE WHEN p.prokind IN ('f', 'p') THEN md5(pg_get_functiondef(p.oid)) END
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                              AND d.objid = p.oid AND d.deptype = 'e')""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND NOT t.tgisinternal""",
}


def _obj(kind: str, name: str, detail: str | None) -> Obj:
    return (kind, name) if detail is None else (kind, name, detail)


def read_catalog(conn: Connection) -> Catalog:
    """The catalog of the database `conn` is connected to."""
    def rows(name: str, **params: object) -> list:
        return list(conn.execute(sqlalchemy.text(_QUERIES[name]), params))

    catalog = Catalog()
    catalog.tables = {r[0]: (r[1], r[2]) for r in rows("tables")}
    catalog.policies = {(r[0], r[1]): Policy(r[2], tuple(sorted(r[3])), r[4], r[5], r[6])
                        for r in rows("policies")}
    for kind, name, detail, grantee, privilege, grantable in rows(
            "grants", grantees=list(GRANTEES)):
        obj = _obj(kind, name, detail)
        catalog.objects.add(obj)
        if grantee is not None:
            catalog.grants.setdefault((obj, grantee), {})[privilege] = grantable
    catalog.functions = dict(rows("functions"))
    catalog.triggers = {(r[0], r[1]): (r[2], r[3]) for r in rows("triggers")}
    catalog.versions = _versions(conn)
    return catalog


def _versions(conn: Connection) -> tuple[str, ...]:
    if conn.scalar(sqlalchemy.text("SELECT to_regclass('public.alembic_version')")) is None:
        return ()
    return tuple(sorted(conn.scalars(sqlalchemy.text("SELECT version_num FROM alembic_version"))))


# --- what the migrations expect -----------------------------------------------------------

_EXPECTED: dict[tuple[int, str], Catalog] = {}
_EXPECTED_LOCK = threading.Lock()


def forget_expected() -> None:
    """Drop the remembered scratch catalogs (tests use it to force a fresh scratch run)."""
    with _EXPECTED_LOCK:
        _EXPECTED.clear()


def _scripts(url: DatabaseUrl) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(url))


def _on(url: DatabaseUrl, work: Callable[..., T], *args: object,
        autocommit: bool = False) -> T:
    """`work(connection, *args)` on one connection to `url`, with the driver and dialect
    the migrations run with (asyncpg), in an event loop of the calling worker thread."""
    async def go() -> T:
        options: dict = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
        engine = create_async_engine(url.sqlalchemy_async, poolclass=NullPool, **options)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(work, *args)
        finally:
            await engine.dispose()

    return asyncio.run(go())


class ScratchRefused(Exception):
    """The server would not create the scratch database (no CREATEDB, most likely)."""


def _create_scratch(admin: Connection) -> str:
    scratch = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}"
    try:
        admin.exec_driver_sql(f'CREATE DATABASE "{scratch}" TEMPLATE template0')
    except sqlalchemy.exc.DBAPIError as exc:
        raise ScratchRefused(str(exc.orig).strip()) from exc
    return scratch


def _drop_scratch(admin: Connection, scratch: str) -> None:
    admin.exec_driver_sql(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


def _server_version(conn: Connection) -> int:
    return int(conn.scalar(sqlalchemy.text("SHOW server_version_num")))


def expected_catalog(url: DatabaseUrl, revision: str, scripts: ScriptDirectory) -> Catalog:
    """The catalog the migrations produce up to `revision` on the server of `url`.

    Remembered per server version and revision for the life of the process: nothing else
    changes what the migrations produce (the scratch database is made from template0 and
    the roles do not show in the catalogs compared), and repair runs check, repair, check."""
    key = (_on(url, _server_version), revision)
    with _EXPECTED_LOCK:
        if key in _EXPECTED:
            return _EXPECTED[key]
    scratch = _on(url, _create_scratch, autocommit=True)
    try:
        catalog = _on(url.with_database(scratch), _migrate_and_read, url, scripts, revision)
    finally:
        _on(url, _drop_scratch, scratch, autocommit=True)
    with _EXPECTED_LOCK:
        _EXPECTED[key] = catalog
    return catalog


def _migrate_and_read(conn: Connection, url: DatabaseUrl, scripts: ScriptDirectory,
                      revision: str) -> Catalog:
    """Run the migrations up to `revision` in one transaction, read, roll back (which
    also takes back any role the migrations had to create)."""
    transaction = conn.begin()
    try:
        def steps(rev: object, _context: object) -> list:
            return scripts._upgrade_revs(revision, rev)

        with EnvironmentContext(alembic_config(url), scripts, fn=steps,
                                destination_rev=revision) as environment:
            environment.configure(connection=conn)
            environment.run_migrations()
        return read_catalog(conn)
    finally:
        transaction.rollback()


# --- comparing ----------------------------------------------------------------------------

def _role_problems(conn: Connection) -> list[Problem]:
    rows = {r.rolname: r for r in conn.execute(sqlalchemy.text("""
        SELECT r.rolname, r.rolsuper, r.rolbypassrls, r.rolcreatedb, r.rolcreaterole,
               r.rolreplication, r.rolcanlogin, r.rolinherit,
               ARRAY(SELECT DISTINCT g.rolname::text FROM pg_auth_members m
                       JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid) AS member_of,
               has_database_privilege(r.oid, current_database(), 'CONNECT') AS can_connect
          FROM pg_roles r WHERE r.rolname = ANY(:names)"""), {"names": list(ROLES)})}
    problems: list[Problem] = []
    for name, spec in ROLES.items():
        role = rows.get(name)
        if role is None:
            problems.append(Problem(f"role {name} is missing", "repair-roles"))
            continue
        for attribute, keyword in FORBIDDEN.items():
            if getattr(role, attribute):
                problems.append(Problem(f"role {name} has {keyword}", "repair-roles"))
        if role.rolcanlogin != spec.login:
            login = "LOGIN" if role.rolcanlogin else "NOLOGIN"
            problems.append(Problem(f"role {name} has {login}", "repair-roles"))
        if role.rolinherit != spec.inherit:
            inherit = "INHERIT" if role.rolinherit else "NOINHERIT"
            problems.append(Problem(f"role {name} has {inherit}", "repair-roles"))
        for parent in sorted(set(spec.member_of) - set(role.member_of)):
            problems.append(Problem(f"role {name} is not a member of {parent}", "repair-roles"))
        for parent in sorted(set(role.member_of) - set(spec.member_of)):
            problems.append(Problem(f"role {name} is a member of {parent}: a tenant session"
                                    f" could SET ROLE {parent} and leave the policies behind",
                                    "repair-roles"))
        if spec.login and not role.can_connect:
            problems.append(Problem(f"role {name} may not connect to this database",
                                    "repair-roles"))
    if TENANT_ROLE in rows and not conn.scalar(sqlalchemy.text(
            "SELECT pg_has_role(current_user, :role, 'MEMBER')"), {"role": TENANT_ROLE}):
        user = conn.scalar(sqlalchemy.text("SELECT current_user"))
        problems.append(Problem(f"role {user} (the platform's login role) is not a member of"
                                f" {TENANT_ROLE}", "repair-roles"))
    return problems


def _grant_changes(expected: Catalog, actual: Catalog
                   ) -> Iterator[tuple[Obj, str, dict[str, bool], dict[str, bool]]]:
    """(object, grantee, missing privileges, unexpected privileges) where they differ.

    The tenant roles' privileges are compared on every object; PUBLIC's only on the
    objects the migrations create (a function someone added is executable by PUBLIC by
    default, and is reported as not the migrations' already)."""
    for key in sorted(set(expected.grants) | set(actual.grants)):
        if key[1] == PUBLIC and key[0] not in expected.objects:
            continue
        want, have = expected.grants.get(key, {}), actual.grants.get(key, {})
        missing = {p: g for p, g in want.items() if have.get(p) != g}
        extra = {p: g for p, g in have.items() if want.get(p) != g}
        if missing or extra:
            yield key[0], key[1], missing, extra


def _privileges(privileges: dict[str, bool]) -> str:
    return ", ".join(p + (" WITH GRANT OPTION" if g else "") for p, g in sorted(privileges.items()))


def compare(expected: Catalog, actual: Catalog) -> list[Problem]:
    """Everything in which `actual` differs from what the migrations produced."""
    problems: list[Problem] = []
    for table, flags in sorted(expected.tables.items()):
        if table not in actual.tables:
            problems.append(Problem(f"table {table} is missing", "restore"))
            continue
        for index, what in ((0, "enabled"), (1, "forced")):
            if actual.tables[table][index] != flags[index]:
                state = "is not" if flags[index] else "is, unlike in the migrations,"
                problems.append(Problem(f"table {table}: row-level security {state} {what}",
                                        "repair-roles"))
    for (table, name), policy in sorted(expected.policies.items()):
        if (table, name) not in actual.policies:
            problems.append(Problem(f"table {table}: policy {name} is missing", "repair-roles"))
        elif actual.policies[(table, name)] != policy:
            problems.append(Problem(f"table {table}: policy {name} differs from the"
                                    f" migrations' ({policy.describe()})", "repair-roles"))
    for table, name in sorted(set(actual.policies) - set(expected.policies)):
        problems.append(Problem(f"table {table}: policy {name} is not one the migrations"
                                " create", "repair-roles"))
    for obj, grantee, missing, extra in _grant_changes(expected, actual):
        if missing:
            problems.append(Problem(f"{label(obj)}: {grantee} lacks {_privileges(missing)}",
                                    "repair-roles" if obj in actual.objects else "restore"))
        if extra:
            problems.append(Problem(f"{label(obj)}: {grantee} has {_privileges(extra)}, which"
                                    " the migrations do not grant", "repair-roles"))
    for signature, digest in sorted(expected.functions.items()):
        if signature not in actual.functions:
            problems.append(Problem(f"function {signature} is missing", "restore"))
        elif actual.functions[signature] != digest:
            problems.append(Problem(f"function {signature} differs from the migrations'"
                                    f" definition (md5 {actual.functions[signature]},"
                                    f" expected {digest})", "restore"))
    for signature in sorted(set(actual.functions) - set(expected.functions)):
        problems.append(Problem(f"function {signature} is not one the migrations create",
                                "extra"))
    for (table, name), (definition, enabled) in sorted(expected.triggers.items()):
        found = actual.triggers.get((table, name))
        if found is None:
            problems.append(Problem(f"trigger {name} on {table} is missing", "restore"))
        elif found[0] != definition:
            problems.append(Problem(f"trigger {name} on {table} differs from the migrations'"
                                    f" ({definition})", "restore"))
        elif found[1] != enabled:
            problems.append(Problem(f"trigger {name} on {table} is "
                                    f"{'disabled' if found[1] == 'D' else 'enabled otherwise'}"
                                    f" (ALTER TABLE {table} ENABLE TRIGGER {name})", "restore"))
    for table, name in sorted(set(actual.triggers) - set(expected.triggers)):
        problems.append(Problem(f"trigger {name} on {table} is not one the migrations create",
                                "extra"))
    return problems


def _read_target(conn: Connection) -> tuple[list[Problem], Catalog]:
    return _role_problems(conn), read_catalog(conn)


def _check(url: DatabaseUrl, scripts: ScriptDirectory) -> CheckResult:
    heads = tuple(sorted(scripts.get_heads()))
    problems, actual = _on(url, _read_target)
    head = ", ".join(heads)
    if actual.versions != heads:
        at = ", ".join(actual.versions) or "none (never migrated)"
        problems.append(Problem(f"alembic version {at}; the migrations' head is {head}",
                                "upgrade"))
    if not actual.versions or not all(_known(scripts, v) for v in actual.versions):
        if actual.versions:
            problems.append(Problem(f"alembic version {', '.join(actual.versions)} is not one"
                                    " of these migrations (a newer release's database?):"
                                    " nothing else compared", "upgrade"))
        return CheckResult(problems, head, "")
    revision = actual.versions[0] if len(actual.versions) == 1 else head
    try:
        expected = expected_catalog(url, revision, scripts)
    except ScratchRefused as exc:
        problems.append(Problem(f"cannot create a scratch database to compare with: {exc}",
                                "scratch"))
        return CheckResult(problems, revision, "")
    problems.extend(compare(expected, actual))
    walled = {table for table, _ in expected.policies}
    summary = (f"roles {', '.join(ROLES)}; row-level security on {len(walled)} tables with"
               f" {len(expected.policies)} policies; grants on {len(expected.grants)} objects;"
               f" {len(expected.functions)} functions; {len(expected.triggers)} triggers;"
               f" revision {revision}")
    return CheckResult(problems, revision, summary)


def _known(scripts: ScriptDirectory, revision: str) -> bool:
    try:
        return scripts.get_revision(revision) is not None
    except Exception:  # alembic's ResolutionError / CommandError for an unknown id
        return False


async def check_database(url: DatabaseUrl) -> CheckResult:
    """Compare the database at `url` with what the migrations expect."""
    def run() -> CheckResult:
        return _check(url, _scripts(url))

    return await asyncio.to_thread(run)


# --- repairing ----------------------------------------------------------------------------

def _grant_sql(obj: Obj, privilege: str, grantee: str, grantable: bool, revoke: bool) -> str:
    if obj[0] == "column":
        target = f"{privilege} ({quote(obj[2])}) ON TABLE {SCHEMA}.{quote(obj[1])}"
    elif obj[0] == "function":
        target = f"{privilege} ON FUNCTION {SCHEMA}.{quote(obj[1])}({obj[2]})"
    elif obj[0] == "schema":
        target = f"{privilege} ON SCHEMA {quote(obj[1])}"
    else:
        target = f"{privilege} ON {obj[0].upper()} {SCHEMA}.{quote(obj[1])}"
    if revoke:
        return f"REVOKE {target} FROM {quote(grantee)}"
    return f"GRANT {target} TO {quote(grantee)}" + (" WITH GRANT OPTION" if grantable else "")


def _policy_sql(table: str, name: str, policy: Policy) -> str:
    roles = ", ".join(PUBLIC if r == "public" else quote(r) for r in policy.roles)
    sql = (f"CREATE POLICY {quote(name)} ON {SCHEMA}.{quote(table)} AS {policy.permissive}"
           f" FOR {policy.command} TO {roles}")
    if policy.using is not None:
        sql += f" USING ({policy.using})"
    if policy.check is not None:
        sql += f" WITH CHECK ({policy.check})"
    return sql


def _repair_roles(conn: Connection, scripts: ScriptDirectory, role_sql: str) -> list[str]:
    """The roles as migrations 0007 and 0008 create them, with their own SQL (both are
    written to be re-run), then no membership beyond what ROLES allows, and CONNECT for
    the login role if someone took it away."""
    before = {p.what for p in _role_problems(conn)}
    conn.exec_driver_sql(role_sql)
    login_role = scripts.get_revision(LOGIN_ROLE_REVISION)
    with Operations.context(MigrationContext.configure(connection=conn)):
        login_role.module.upgrade()
    for name, spec in ROLES.items():
        extra = conn.scalars(sqlalchemy.text(
            "SELECT DISTINCT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = :name"
            " AND NOT g.rolname = ANY(:allowed)"), {"name": name, "allowed": list(spec.member_of)})
        for parent in extra:
            conn.exec_driver_sql(f"REVOKE {quote(parent)} FROM {quote(name)}")
        if spec.login and not conn.scalar(sqlalchemy.text(
                "SELECT has_database_privilege(:name, current_database(), 'CONNECT')"),
                {"name": name}):
            database = conn.scalar(sqlalchemy.text("SELECT current_database()"))
            conn.exec_driver_sql(f"GRANT CONNECT ON DATABASE {quote(database)} TO {quote(name)}")
    after = {p.what for p in _role_problems(conn)}
    return [f"fixed: {what}" for what in sorted(before - after)]


def _repair(conn: Connection, scripts: ScriptDirectory, role_sql: str, expected: Catalog
            ) -> list[str]:
    """One transaction: the roles, then the flags, policies and privileges. Returns what
    was done, one line each."""
    steps: list[tuple[str, str]] = []  # (statement, what it does)
    granted: list[str] = []
    with conn.begin():
        actions = _repair_roles(conn, scripts, role_sql)
        actual = read_catalog(conn)
        for table, flags in sorted(expected.tables.items()):
            for index, what in ((0, "ENABLE"), (1, "FORCE")):
                if table in actual.tables and actual.tables[table][index] != flags[index]:
                    verb = what if flags[index] else ("DISABLE" if index == 0 else "NO FORCE")
                    steps.append((f"ALTER TABLE {SCHEMA}.{quote(table)} {verb} ROW LEVEL"
                                  " SECURITY", f"table {table}: {verb} ROW LEVEL SECURITY"))
        for (table, name), policy in sorted(actual.policies.items()):
            if expected.policies.get((table, name)) != policy:
                steps.append((f"DROP POLICY {quote(name)} ON {SCHEMA}.{quote(table)}",
                              f"table {table}: dropped policy {name}"))
        for (table, name), policy in sorted(expected.policies.items()):
            if table in actual.tables and actual.policies.get((table, name)) != policy:
                steps.append((_policy_sql(table, name, policy),
                              f"table {table}: created policy {name}"))
        for obj, grantee, missing, extra in _grant_changes(expected, actual):
            if extra:
                steps.extend((_grant_sql(obj, p, grantee, g, revoke=True), "")
                             for p, g in sorted(extra.items()))
                granted.append(f"{label(obj)}: revoked {_privileges(extra)} from {grantee}")
            if missing and obj in actual.objects:
                steps.extend((_grant_sql(obj, p, grantee, g, revoke=False), "")
                             for p, g in sorted(missing.items()))
                granted.append(f"{label(obj)}: granted {_privileges(missing)} to {grantee}")
        for statement, _ in steps:
            conn.exec_driver_sql(statement)
    return actions + [what for _, what in steps if what] + granted


async def repair_roles(url: DatabaseUrl) -> RepairResult:
    """Create the missing roles and memberships (migrations 0007 and 0008's own SQL),
    then make row-level security flags, policies and the tenant roles' and PUBLIC's
    privileges exactly what the migrations produce (derived as `check_database` does),
    in one transaction; then check again. Running it twice changes nothing the second
    time. Functions, triggers, missing tables and the version are left alone: they are
    what a restore or `coalition db upgrade` brings back."""
    def run() -> RepairResult:
        scripts = _scripts(url)
        first = _check(url, scripts)
        if any(p.fix in ("scratch",) for p in first.problems) or not first.summary:
            return RepairResult([], first)
        expected = expected_catalog(url, first.revision, scripts)
        role_sql = next(s for s in split_sql_script(ROLE_SQL.read_text())
                        if s.lstrip().upper().startswith("DO"))
        actions = _on(url, _repair, scripts, role_sql, expected) if first.problems else []
        return RepairResult(actions, _check(url, scripts))

    return await asyncio.to_thread(run)


def fixes(problems: list[Problem]) -> list[str]:
    """How to fix these problems, one line per way, in the order FIXES lists them."""
    wanted = {p.fix for p in problems}
    return [text for key, text in FIXES.items() if key in wanted]
