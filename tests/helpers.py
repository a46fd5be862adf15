"""Test helpers that act as a partner's server would: get a token, call the API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from coalition.db import DatabaseUrl, drop_database, ensure_database
from coalition.migrate import upgrade
from tenants.service import create_partner, create_server_client


def new_key() -> str:
    return uuid.uuid4().hex


@dataclass
class PartnerClient:
    client: httpx.AsyncClient
    partner_id: uuid.UUID
    client_id: str
    client_secret: str
    token: str = ""
    members: list[str] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str, **kwargs: Any):
        return await self.client.get(path, headers=self.auth, **kwargs)

    async def post(self, path: str, json: Any = None, key: str | None = None, **kwargs: Any):
        headers = {**self.auth, "Idempotency-Key": key or new_key()}
        return await self.client.post(path, json=json, headers=headers, **kwargs)

    async def enroll(self, email: str | None = None, **extra: Any) -> str:
        email = email or f"{uuid.uuid4().hex[:12]}@example.com"
        response = await self.post("/api/v1/members", {"email": email, **extra})
        assert response.status_code in (200, 201), response.text
        return response.json()["id"]

    async def earn(self, member_id: str, points: int, **extra: Any):
        return await self.post("/api/v1/earn", {"member_id": member_id, "points": points, **extra})

    async def redeem(self, member_id: str, points: int, **extra: Any):
        return await self.post(
            "/api/v1/redemptions", {"member_id": member_id, "points": points, **extra}
        )

    async def balance(self, member_id: str) -> dict:
        response = await self.get(f"/api/v1/members/{member_id}/balance")
        assert response.status_code == 200, response.text
        return response.json()


async def new_partner(
    client: httpx.AsyncClient, name: str = "Test Brand", scopes: list[str] | None = None
) -> PartnerClient:
    sessionmaker = client.app.state.sessionmaker
    async with sessionmaker() as session:
        partner = await create_partner(session, name, slug=f"p-{uuid.uuid4().hex[:12]}")
        oauth_client, secret = await create_server_client(session, partner.id, "server", scopes)
        await session.commit()
    result = PartnerClient(client, partner.id, oauth_client.client_id, secret)
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(oauth_client.client_id, secret),
    )
    assert response.status_code == 200, response.text
    result.token = response.json()["access_token"]
    return result


@contextmanager
def migrated_database(server_url: DatabaseUrl, prefix: str) -> Iterator[DatabaseUrl]:
    """A fresh database of its own on the test server, migrated to head; dropped after."""
    url = server_url.with_database(f"{prefix}_{uuid.uuid4().hex[:10]}")
    asyncio.run(ensure_database(url))
    upgrade(url)
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))
