"""The partner API's earn while people log in, on one server.

    python bench/login_contention.py [--clients 8] [--seconds 15] [--members 10000]
                                     [--login-loops 8]

Sets up the earn benchmark's database (its own: coalition_bench_logins, dropped at the
end even on failure) as bench/ledger_throughput.py does (its functions, not a copy),
adds one verified portal login per login loop, and serves the real app (uvicorn, one
worker). Drives POST /api/v1/earn alone with C keep-alive clients for T seconds
(bench/loadgen.py), then again while --login-loops loops log in over and over: GET
/login for the form and its CSRF token, POST /login with the right password (this
file's own driver, in its own process). Each login costs an argon2id verify (about
200 ms of CPU), which tenants/passwords.py runs in a worker thread, one at a time by
default (COALITION_PASSWORD_HASH_CONCURRENCY). Prints earn's figures both ways, the
logins', and the ratios; the target: with the logins, earn keeps >= 50 % of its
throughput and its p99 stays <= 3 x its p99 alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ledger_throughput import free_port, load, seed, start_server  # noqa: E402
from bench.scratch import load_average, partner_token, scratch_databases  # noqa: E402
from coalition.config import get_settings  # noqa: E402
from coalition.db import (  # noqa: E402
    DatabaseUrl,
)
from coalition.migrate import upgrade  # noqa: E402

# The logins start this long before earn's second run, so that it meets a full queue of
# them from its first request (the driver's own start-up included), and end after it.
WARM_UP_SECONDS = 2.0


def login(n: int) -> tuple[str, str]:
    """The n-th login loop's account: passes the password rules (tenants/passwords.py)."""
    return f"bench-login-{n}@bench.example", f"violet harbour lamp {n}"


async def seed_logins(url: DatabaseUrl, loops: int) -> None:
    """One verified operator login per loop, through the platform's own create_user."""
    from coalition.db import create_engine, create_sessionmaker
    from tenants.accounts import create_user

    engine = create_engine(url)
    async with create_sessionmaker(engine)() as session:
        for n in range(loops):
            email, password = login(n)
            await create_user(session, email, "operator", name=f"Bench login {n}",
                              password=password, verified=True)
        await session.commit()
    await engine.dispose()


# ---- the login driver (its own process) ----

CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')


async def _login_loop(port: int, email: str, password: str, deadline: float,
                      latencies: list[float], statuses: dict[int, int]) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        while time.perf_counter() < deadline:
            client.cookies.clear()       # every login a new visitor, as a browser would be
            started = time.perf_counter()
            form = await client.get("/login")
            token = CSRF_FIELD.search(form.text).group(1)
            # The cookies are Secure outside development and test, which httpx keeps off
            # plain http; a browser behind TLS would send them, so send them by hand.
            cookie = "; ".join(f"{name}={value}" for name, value in form.cookies.items())
            response = await client.post("/login", headers={"Cookie": cookie},
                                         data={"_csrf_token": token, "email": email,
                                               "password": password})
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1


async def drive(port: int, loops: int, seconds: float) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    await asyncio.gather(*(_login_loop(port, *login(n), started + seconds, latencies,
                                       statuses) for n in range(loops)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    usage = resource.getrusage(resource.RUSAGE_SELF)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    return {"kind": "login", "requests": len(latencies), "seconds": elapsed,
            "statuses": statuses, "ok_per_second": statuses.get(302, 0) / elapsed,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "client_cpu_seconds": usage.ru_utime + usage.ru_stime}


def start_logins(port: int, loops: int, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--drive", "--port", str(port),
                             "--login-loops", str(loops), "--drive-seconds", str(seconds)],
                            stdout=subprocess.PIPE, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--login-loops", type=int, default=8)
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--drive-seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        print(json.dumps(asyncio.run(drive(args.port, args.login_loops, args.drive_seconds))))
        return

    with scratch_databases("coalition_bench_logins") as (bench_url,):
        run(args, bench_url)


def run(args: argparse.Namespace, bench_url: DatabaseUrl) -> None:
    """Earn alone, then earn beside the login loops, on one server; then the figures."""
    upgrade(bench_url)
    settings = get_settings()
    print(f"before: {load_average()}; password hash concurrency "
          f"{settings.password_hash_concurrency}, max wait "
          f"{settings.password_hash_max_wait_seconds:g} s")
    with tempfile.TemporaryDirectory() as tmp:
        client_id, secret, members = asyncio.run(seed(bench_url, args.members, Path(tmp)))
        started = time.perf_counter()
        asyncio.run(seed_logins(bench_url, args.login_loops))
        print(f"created {args.login_loops} portal logins in "
              f"{time.perf_counter() - started:.2f} s")
        port = free_port()
        server = start_server(bench_url, port)
        logins = None
        try:
            token = partner_token(port, client_id, secret)
            alone = load(port, "earn", token, members, args.clients, args.seconds,
                         server.pid)
            logins = start_logins(port, args.login_loops,
                                  WARM_UP_SECONDS + args.seconds + 1)
            time.sleep(WARM_UP_SECONDS)
            beside = load(port, "earn", token, members, args.clients, args.seconds,
                          server.pid)
            print(f"during: {load_average()}")
            out, _ = logins.communicate(timeout=WARM_UP_SECONDS + args.seconds + 120)
            if logins.returncode != 0:
                raise RuntimeError(f"the login driver exited {logins.returncode}")
            login_figures = json.loads(out)
        finally:
            if logins is not None and logins.poll() is None:
                logins.kill()
            server.terminate()
            server.wait(timeout=30)
    beside["kind"] = f"earn + {args.login_loops} login loops"
    for r in (alone, beside, login_figures):
        print(f"{r['kind']:<22}: {r['ok_per_second']:,.1f}/s ok, p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms, statuses {r['statuses']}, client CPU "
              f"{r['client_cpu_seconds']:.1f} s of {r['seconds']:.0f} s")
    throughput = beside["ok_per_second"] / max(alone["ok_per_second"], 1e-9)
    p99 = beside["p99_ms"] / max(alone["p99_ms"], 1e-9)
    met = throughput >= 0.5 and p99 <= 3
    print(f"earn with logins / alone: throughput {throughput:.2f} x, p99 {p99:.2f} x; "
          f"target throughput >= 0.50 x and p99 <= 3 x: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
