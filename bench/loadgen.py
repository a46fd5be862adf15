"""A light HTTP/1.1 load generator: raw asyncio streams (uvloop when present), one
keep-alive connection per client, unique idempotency keys. Prints a JSON summary.

It runs as its own process so its CPU use is measurable and it shares no GIL with the
server; on 2 cores a heavier client (httpx, locust) would starve the server."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

# Run as a script, this file's directory heads sys.path, not the repository.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coalition import clock

CATEGORIES = ["tools", "paint", "garden", "lighting", "plumbing"]


def basket(rng: random.Random) -> tuple[list[dict], int]:
    """An order's 20 lines, as a shop's server would report them, and their total."""
    lines = []
    for n in range(20):
        quantity, unit_price = rng.randint(1, 4), rng.randint(199, 9999)
        lines.append({"sku": f"SKU-{n:03d}-{rng.randint(1, 50)}",
                      "category": CATEGORIES[n % len(CATEGORIES)], "quantity": quantity,
                      "unit_price": unit_price, "amount": quantity * unit_price})
    return lines, sum(line["amount"] for line in lines)


def _occurred_at() -> str:
    """A few seconds ago on the platform's clock (the server's, when COALITION_NOW moves
    it): an order the server sees as taken in its future would be refused."""
    return (clock.now() - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")


def purchase(member: str, rng: random.Random) -> dict:
    lines, total = basket(rng)
    now = _occurred_at()
    return {"member": {"id": member}, "order_id": uuid.uuid4().hex, "occurred_at": now,
            "total": total, "currency": "PLN", "channel": "store", "lines": lines}


# Baskets are drawn before the clock starts, from a fixed pool: the generator shares the
# machine's two cores with the server, and building twenty random lines per request
# would bill the server's throughput for the client's work. Members, order ids and
# times still differ on every request.
_BASKETS: list[tuple[str, int]] = []


def _purchase_body(member: str, rng: random.Random) -> bytes:
    if not _BASKETS:
        pool = random.Random(20)
        _BASKETS.extend((json.dumps(lines), total)
                        for lines, total in (basket(pool) for _ in range(256)))
    lines, total = rng.choice(_BASKETS)
    now = _occurred_at()
    return (f'{{"member": {{"id": "{member}"}}, "order_id": "{uuid.uuid4().hex}", '
            f'"occurred_at": "{now}", "total": {total}, "currency": "PLN", '
            f'"channel": "store", "lines": {lines}}}').encode()


def build(kind: str, host: str, token: str, members: list[str], rng: random.Random) -> bytes:
    if kind == "earn":
        path, body = "/api/v1/earn", json.dumps({"member_id": rng.choice(members),
                                                 "points": rng.randint(1, 50)}).encode()
    elif kind == "purchase":
        path, body = "/api/v1/purchases", _purchase_body(rng.choice(members), rng)
    else:
        path, body = "/api/v1/redemptions", json.dumps({"member_id": rng.choice(members),
                                                        "points": rng.randint(1, 5)}).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Idempotency-Key: {uuid.uuid4().hex}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def client(host: str, port: int, kind: str, token: str, members: list[str],
                 deadline: float, latencies: list[float], statuses: dict[int, int],
                 seed: int) -> None:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            request = build(kind, host, token, members, rng)
            started = time.perf_counter()
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def main(args: argparse.Namespace, members: list[str]) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    if args.kind == "purchase":
        _purchase_body(members[0], random.Random(0))  # fills the basket pool
    started = time.perf_counter()
    deadline = started + args.seconds
    await asyncio.gather(*(client(args.host, args.port, args.kind, args.token, members,
                                  deadline, latencies, statuses, seed)
                           for seed in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    usage = resource.getrusage(resource.RUSAGE_SELF)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    return {"kind": args.kind, "requests": len(latencies), "seconds": elapsed,
            "per_second": len(latencies) / elapsed, "statuses": statuses,
            "ok_per_second": statuses.get(201, 0) / elapsed,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "client_cpu_seconds": usage.ru_utime + usage.ru_stime}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=["earn", "redeem", "purchase"], required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--members", required=True)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=8)
    arguments = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    member_ids = Path(arguments.members).read_text().split()
    print(json.dumps(asyncio.run(main(arguments, member_ids))))
