"""Secrets at rest and the rotating keys that sign OpenID Connect ID tokens."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import timedelta

import sqlalchemy
from cryptography.fernet import Fernet, InvalidToken
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from coalition import clock
from coalition.db import DatabaseUrl
from tenants.models import SigningKey

# A new signing key every 30 days; a retired key stays in the JWKS for 7 more days,
# far longer than any ID token lives (ID_TOKEN_TTL), so every issued token verifies.
KEY_ROTATION_AGE = timedelta(days=30)
RETIRED_KEY_PUBLISHED = timedelta(days=7)
ID_TOKEN_TTL = timedelta(hours=1)


class SecretBox:
    """Authenticated encryption (Fernet) of small secrets stored in the database, with a
    key derived from the platform secret key."""

    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(b"coalition-secret-box:" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str | None:
        """None when the value was sealed under another secret key."""
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            return None


def create_signing_key(session: Session, box: SecretBox) -> SigningKey:
    """A fresh RSA key becomes the signing key; the previous one is retired (it stays
    published while tokens it signed may still be presented)."""
    # One rotation at a time across processes.
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext('oidc-key-rotation'))"))
    now = clock.now()
    for older in session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))):
        older.retired_at = now
    kid = now.strftime("%Y%m%d") + "-" + secrets.token_hex(4)
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"})
    row = SigningKey(kid=kid, algorithm="RS256",
                     private_key_encrypted=box.seal(key.as_pem(private=True).decode()),
                     public_jwk=key.as_dict(private=False), created_at=now)
    session.add(row)
    session.flush()
    return row


def current_signing_key(session: Session, box: SecretBox) -> tuple[str, RSAKey]:
    """The active key, rotating it when it is older than KEY_ROTATION_AGE (or unreadable
    because the platform secret key changed)."""
    row = session.scalar(select(SigningKey).where(SigningKey.retired_at.is_(None))
                         .order_by(SigningKey.created_at.desc()).limit(1))
    pem = box.open(row.private_key_encrypted) if row is not None else None
    if row is None or pem is None or row.created_at < clock.now() - KEY_ROTATION_AGE:
        row = create_signing_key(session, box)
        pem = box.open(row.private_key_encrypted)
    assert pem is not None
    return row.kid, RSAKey.import_key(pem, parameters={"kid": row.kid, "alg": row.algorithm})


def ensure_signing_key(sessions: sessionmaker, box: SecretBox) -> None:
    """At start-up: a current signing key exists (made, or rotated, now if not), so the
    first ID token does not wait for RSA key generation. Commits."""
    with sessions() as session, session.begin():
        current_signing_key(session, box)


def rotate_signing_key(url: DatabaseUrl, box: SecretBox) -> str:
    """`coalition oidc rotate-key`: a new signing key now; returns its kid."""
    engine = sqlalchemy.create_engine(url.sqlalchemy_sync)
    try:
        with Session(engine) as session, session.begin():
            return create_signing_key(session, box).kid
    finally:
        engine.dispose()


def published_keys(session: Session) -> dict:
    """The JWKS document: the active key and recently retired ones."""
    cutoff = clock.now() - RETIRED_KEY_PUBLISHED
    rows = session.scalars(select(SigningKey).where(
        (SigningKey.retired_at.is_(None)) | (SigningKey.retired_at > cutoff))
        .order_by(SigningKey.created_at.desc()))
    return {"keys": [row.public_jwk for row in rows]}


def key_set(document: dict) -> KeySet:
    return KeySet.import_key_set(document)
