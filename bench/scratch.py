"""What the benchmark scripts share: scratch databases on the configured server, a
partner's access token from the server under test, and the machine's load to print."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from coalition.config import get_settings
from coalition.db import DatabaseUrl, drop_database, ensure_database, resolve_database_url


@contextmanager
def scratch_databases(*names: str, keep: bool = False) -> Iterator[list[DatabaseUrl]]:
    """Fresh, empty databases of these names on the configured server (or the embedded
    one), dropped afterwards, also when the run fails: a benchmark's data left behind
    would only fill the server's disk. `keep` leaves them for a look afterwards."""
    settings = get_settings()
    server = resolve_database_url(settings.database_url, settings.data_dir)
    urls = [server.with_database(name) for name in names]
    for url in urls:
        asyncio.run(drop_database(url))
        asyncio.run(ensure_database(url))
    try:
        yield urls
    finally:
        if not keep:
            for url in urls:
                asyncio.run(drop_database(url))


def partner_token(port: int, client_id: str, secret: str) -> str:
    """An access token for the seeded partner (client credentials) from the server."""
    return httpx.post(f"http://127.0.0.1:{port}/oauth/token", auth=(client_id, secret),
                      data={"grant_type": "client_credentials"}).json()["access_token"]


def load_average() -> str:
    """Printed with the figures: a loaded machine explains a poor run."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"
