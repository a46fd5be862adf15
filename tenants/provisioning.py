"""Accounts made from the command line (`coalition partners create`, `coalition
operators create`), each a use case in one Tx."""

from __future__ import annotations

from dataclasses import dataclass

from coalition.uow import Tx
from tenants.accounts import create_user
from tenants.service import create_partner, create_server_client


@dataclass(frozen=True)
class NewPartner:
    partner_id: str
    slug: str
    client_id: str
    client_secret: str  # shown once: only its hash is stored


async def create_partner_with_client(tx: Tx, name: str, slug: str | None,
                                     currency: str) -> NewPartner:
    """An active partner with a server OAuth client (all partner scopes)."""
    session = await tx.session()
    partner = await create_partner(session, name, slug=slug, settlement_currency=currency)
    client, secret = await create_server_client(session, partner.id, "server")
    return NewPartner(str(partner.id), partner.slug, client.client_id, secret)


async def create_operator(tx: Tx, email: str, name: str | None, password: str) -> None:
    """An operator account, email verified, ready to log in."""
    await create_user(await tx.session(), email, "operator", name=name, password=password,
                      verified=True)
