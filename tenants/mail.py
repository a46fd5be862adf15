"""Outgoing email over SMTP. With no SMTP host configured, messages are written as .eml
files to an outbox folder, so links never end up in logs."""

from __future__ import annotations

import smtplib
import uuid
from email.message import EmailMessage
from pathlib import Path

import anyio

from coalition.config import Settings


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.outbox = settings.data_dir / "outbox"

    def _message(self, to: str, subject: str, text: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.mail_from
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = f"<{uuid.uuid4()}@coalition>"
        message.set_content(text)
        return message

    def _deliver(self, message: EmailMessage) -> None:
        s = self.settings
        if not s.smtp_host:
            self.outbox.mkdir(parents=True, exist_ok=True)
            Path(self.outbox / f"{uuid.uuid4().hex}.eml").write_bytes(bytes(message))
            return
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=10) as smtp:
            if s.smtp_starttls:
                smtp.starttls()
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password)
            smtp.send_message(message)

    async def send(self, to: str, subject: str, text: str) -> None:
        await anyio.to_thread.run_sync(self._deliver, self._message(to, subject, text))
