"""Helpers for portal tests: a real SMTP server and a browser-like client."""

from __future__ import annotations

import re
import uuid
from email import message_from_bytes
from email.message import Message

import httpx
from aiosmtpd.controller import Controller

from tenants.accounts import create_user
from tenants.service import create_partner


class Inbox:
    """aiosmtpd handler that keeps every delivered message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"

    def last_to(self, address: str) -> Message:
        for message in reversed(self.messages):
            if message["To"] == address:
                return message
        raise AssertionError(f"no mail to {address}")

    def link_to(self, address: str, path: str) -> str:
        body = self.last_to(address).get_payload(decode=True).decode()
        match = re.search(rf"https?://[^/\s]+({re.escape(path)}\?token=[\w-]+)", body)
        assert match, body
        return match.group(1)


def start_smtp(port: int) -> tuple[Controller, Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, inbox


def csrf_of(page: httpx.Response) -> str:
    match = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


async def submit(client: httpx.AsyncClient, form_page: str, action: str, **fields: str
                 ) -> httpx.Response:
    """Open the page (as a browser would, getting its CSRF token) and post the form."""
    page = await client.get(form_page)
    return await client.post(action, data={"_csrf_token": csrf_of(page), **fields})


class Browser(httpx.AsyncClient):
    """A client that may be used before `async with` (which then only closes it)."""

    def __init__(self, app) -> None:
        super().__init__(transport=httpx.ASGITransport(app=app),
                         base_url="http://testserver.local")

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


async def owner_browser(app, client, role: str = "owner", name: str = "Console Brand"):
    """A logged-in browser for a staff member of a fresh partner."""
    email = f"{role}-{uuid.uuid4().hex[:8]}@brand.example"
    async with app.state.sessionmaker() as session:
        partner = await create_partner(session, name,
                                       slug=f"c-{uuid.uuid4().hex[:10]}")
        await create_user(session, email, "partner_staff", partner_id=partner.id, role=role,
                          password="staff secret 12", verified=True)
        await session.commit()
    browser = Browser(app)
    login = await submit(browser, "/login", "/login", email=email, password="staff secret 12")
    assert login.status_code == 302
    return browser, partner.id
