"""The partner console's OAuth clients: the list, registering a server or an app,
rotating a secret and revoking a client. Each runs in the staff member's Tx, scoped to
their partner (tenants/scope.py), and writes its audit row there."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from coalition.errors import DomainError, NotFound
from coalition.uow import Tx
from tenants.models import OAuthClient, Partner
from tenants.service import (
    create_app_client,
    create_server_client,
    revoke_client,
    rotate_client_secret,
)


class NoSecret(DomainError):
    """A public or revoked client has no secret to rotate."""

    status = 403

    def __init__(self) -> None:
        super().__init__("no-secret", "No secret", "This client has no secret to rotate.")


async def clients(tx: Tx) -> tuple[str, list[OAuthClient]]:
    """The Tx's partner's name and its clients, oldest first."""
    session = await tx.session()
    rows = (await session.scalars(select(OAuthClient).where(
        OAuthClient.partner_id == tx.partner_id).order_by(OAuthClient.created_at))).all()
    return (await session.get_one(Partner, tx.partner_id)).name, list(rows)


async def _own_client(tx: Tx, client_pk: uuid.UUID) -> OAuthClient:
    client = await (await tx.session()).scalar(select(OAuthClient).where(
        OAuthClient.id == client_pk, OAuthClient.partner_id == tx.partner_id))
    if client is None:
        raise NotFound("not-found", "No such client", "No such client.")
    return client


async def register(tx: Tx, kind: str, name: str, scopes: list[str],
                   redirect_uris: list[str], public: bool) -> tuple[OAuthClient, str | None]:
    """A new client of the Tx's partner, an app (`kind` "app") or a server, with its
    secret (shown once; None for a public app)."""
    session = await tx.session()
    if kind == "app":
        client, secret = await create_app_client(session, tx.partner_id, name, scopes,
                                                 redirect_uris, public=public)
    else:
        client, secret = await create_server_client(session, tx.partner_id, name, scopes)
    await tx.audit("client.create", target=client.client_id, scopes=scopes)
    return client, secret


async def rotate(tx: Tx, client_pk: uuid.UUID) -> tuple[OAuthClient, str]:
    """A new secret for the client (the old one works on for the grace period); NotFound
    or NoSecret."""
    client = await _own_client(tx, client_pk)
    if client.public or client.revoked_at is not None:
        raise NoSecret()
    secret = await rotate_client_secret(await tx.session(), client)
    await tx.audit("client.rotate_secret", target=client.client_id)
    return client, secret


async def revoke(tx: Tx, client_pk: uuid.UUID) -> None:
    client = await _own_client(tx, client_pk)
    await revoke_client(await tx.session(), client)
    await tx.audit("client.revoke", target=client.client_id)
