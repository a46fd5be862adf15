"""Helpers for portal tests: a real SMTP server and a browser-like client."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.message import Message

import httpx
from aiosmtpd.controller import Controller


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
