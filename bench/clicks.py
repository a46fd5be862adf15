"""Tracking-link redirects against the API's earn, in one run on one server.

    python bench/clicks.py [--clients 8] [--seconds 15] [--codes 100] [--members 10000]

Sets up the earn benchmark's database (its own: coalition_bench_clicks, dropped at the
end) as bench/ledger_throughput.py does (its functions, not a copy), adds an affiliate
program with --codes approved affiliates, serves the real app (uvicorn, one worker),
drives POST /api/v1/earn with bench/loadgen.py,
then GET /r/{code} with C keep-alive clients for T seconds (this file's own driver, in
its own process, which keeps the click id of every 302). Prints redirects per second
and p99 next to earn's, and their ratio (target: >= 2 x earn, p99 <= 20 ms). Then stops
the server with SIGTERM, as an orchestrator would, and checks that every click answered
with a 302 is in affiliate_clicks: "clicks lost: N". The server's timer flush is set to
10 minutes, so the clicks after the last full batch of 500 reach the table only through
the shutdown flush. (uvicorn re-raises the SIGTERM after its graceful shutdown, so the
server's exit code is -15 either way.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ledger_throughput import free_port, load, seed, start_server  # noqa: E402
from bench.scratch import load_average, partner_token, scratch_databases  # noqa: E402
from coalition.db import (  # noqa: E402
    DatabaseUrl,
)
from coalition.migrate import upgrade  # noqa: E402


async def seed_affiliates(url: DatabaseUrl, codes: int) -> list[str]:
    """One auto-approved program of the bench partner and `codes` affiliates in it."""
    from sqlalchemy import text

    from coalition.affiliates import programs
    from coalition.affiliates.programs import ProgramSpec, TermsSpec
    from coalition.affiliates.signup import SignupSpec
    from coalition.db import create_engine, create_sessionmaker
    from tenants.affiliate_signup import sign_up

    engine = create_engine(url)
    async with create_sessionmaker(engine)() as session:
        partner_id = (await session.execute(text(
            "SELECT id FROM partners WHERE slug = 'bench'"))).scalar_one()
        program = await programs.create_program(session, partner_id, ProgramSpec(
            name="Bench affiliates", landing_url="https://shop.example/landing?src=aff",
            currency="PLN"))
        await programs.add_terms(session, partner_id, program.id,
                                 TermsSpec(model="percent", rate_bp=500), "bench")
        found = []
        for n in range(codes):
            affiliate, _ = await sign_up(session, SignupSpec(
                kind="person", name=f"Bench Affiliate {n}", email=f"aff{n}@bench.example",
                password="bench affiliate pw", accepts_agreement=True))
            found.append((await programs.join_program(session, affiliate.id, program.id)).code)
        await session.commit()
    await engine.dispose()
    return found


# ---- the click driver (its own process) ----

async def _client(port: int, codes: list[str], deadline: float, latencies: list[float],
                  statuses: dict[int, int], click_ids: list[str], seed: int) -> None:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            code = rng.choice(codes)
            sub = f"/s{rng.randint(1, 20)}" if rng.random() < 0.3 else ""
            request = (f"GET /r/{code}{sub} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       f"User-Agent: bench-clicks/{seed}\r\n"
                       "Referer: https://blog.example/post\r\n\r\n").encode()
            started = time.perf_counter()
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length, location = 0, b""
            while (line := await reader.readline()) not in (b"\r\n", b""):
                lowered = line.lower()
                if lowered.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                elif lowered.startswith(b"location:"):
                    location = line.split(b":", 1)[1].strip()
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 302 and b"click_id=" in location:
                click_ids.append(location.split(b"click_id=")[1][:36].decode())
    finally:
        writer.close()


async def drive(port: int, codes: list[str], seconds: float, concurrency: int
                ) -> tuple[dict, list[str]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    click_ids: list[str] = []
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, codes, started + seconds, latencies, statuses,
                                   click_ids, n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    usage = resource.getrusage(resource.RUSAGE_SELF)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    return {"kind": "click", "requests": len(latencies), "seconds": elapsed,
            "statuses": statuses, "ok_per_second": statuses.get(302, 0) / elapsed,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "client_cpu_seconds": usage.ru_utime + usage.ru_stime}, click_ids


def load_clicks(port: int, codes_file: Path, ids_file: Path, clients: int,
                seconds: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "--drive", "--port", str(port),
                             "--codes-file", str(codes_file), "--ids-file", str(ids_file),
                             "--seconds", str(seconds), "--clients", str(clients)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--codes", type=int, default=100)
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--codes-file", help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        codes = Path(args.codes_file).read_text().split()
        summary, click_ids = asyncio.run(drive(args.port, codes, args.seconds, args.clients))
        Path(args.ids_file).write_text("\n".join(click_ids))
        print(json.dumps(summary))
        return

    with scratch_databases("coalition_bench_clicks") as (bench_url,):
        run(args, bench_url)


def run(args: argparse.Namespace, bench_url: DatabaseUrl) -> None:
    """Earn, then the redirects, on one server; then their figures and the lost clicks."""
    upgrade(bench_url)
    print(f"before: {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        client_id, secret, members = asyncio.run(seed(bench_url, args.members, Path(tmp)))
        codes_file, ids_file = Path(tmp) / "codes.txt", Path(tmp) / "click_ids.txt"
        codes_file.write_text("\n".join(asyncio.run(seed_affiliates(bench_url, args.codes))))
        port = free_port()
        # Batches of 500 still go out as they fill; the last partial batch is written only
        # by the shutdown, so "clicks lost" checks the shutdown flush, not the timer.
        os.environ["COALITION_CLICK_FLUSH_SECONDS"] = "600"
        server = start_server(bench_url, port)
        try:
            token = partner_token(port, client_id, secret)
            earn = load(port, "earn", token, members, args.clients, args.seconds,
                        server.pid)
            clicks = load_clicks(port, codes_file, ids_file, args.clients, args.seconds)
            print(f"during: {load_average()}")
        finally:
            server.terminate()          # SIGTERM: uvicorn's graceful shutdown, the lifespan
            server.wait(timeout=30)     # exit flushes the click buffer
        answered = set(ids_file.read_text().split())
    stored = asyncio.run(_stored_click_ids(bench_url))
    for r in (earn, clicks):
        print(f"{r['kind']:<6}: {r['ok_per_second']:,.0f}/s ok, p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms, statuses {r['statuses']}, client CPU "
              f"{r['client_cpu_seconds']:.1f} s of {r['seconds']:.0f} s")
    ratio = clicks["ok_per_second"] / earn["ok_per_second"]
    met = ratio >= 2 and clicks["p99_ms"] <= 20
    print(f"redirects / earn: {ratio:.2f} x; target >= 2 x and p99 <= 20 ms: "
          f"{'met' if met else 'NOT met'}")
    print(f"server exit code {server.returncode}; clicks answered 302: {len(answered):,}, "
          f"stored: {len(stored & answered):,}")
    print(f"clicks lost: {len(answered - stored)}")


async def _stored_click_ids(url: DatabaseUrl) -> set[str]:
    conn = await asyncpg.connect(url.asyncpg_dsn)
    try:
        return {str(r[0]) for r in await conn.fetch("SELECT click_id FROM affiliate_clicks")}
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
