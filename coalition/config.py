"""Settings read from the environment (prefix ``COALITION_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COALITION_", env_file=".env", extra="ignore")

    # Unset: an embedded PostgreSQL is started under data_dir.
    database_url: str | None = None
    # Tenant sessions log in as coalition_tenant_login (migration 0008). Unset: the
    # database URL with that user and no password (trust/peer authentication).
    tenant_database_url: str | None = None
    data_dir: Path = Path(".coalition")
    env: str = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    # What uvicorn allows each server process (`run`, `serve`): an idle keep-alive
    # connection is closed after this many seconds, and past this many open connections or
    # requests at once it answers 503 at once rather than let them pile up. Neither bounds
    # how slowly a client sends its headers or body: a proxy in front does
    # (deploy/nginx.conf).
    keepalive_seconds: int = Field(default=5, ge=1)
    max_concurrency: int = Field(default=200, ge=1)
    # Connections the API keeps for ledger writes (asyncpg) and for CRUD (SQLAlchemy).
    ledger_pool_size: int = 8
    orm_pool_size: int = 5
    access_token_ttl_seconds: int = 3600
    # How long a verified bearer token is trusted without asking the database again;
    # revocations still apply at once (NOTIFY), so this only bounds staleness if the
    # notification listener is down (then nothing is cached at all).
    token_cache_seconds: int = 60
    # Public base URL (issuer in OAuth metadata); defaults to the URL a request came in on.
    public_url: str = ""
    idempotency_retention_hours: int = 72
    # Run the job worker (web/jobs.py) inside the server process; `coalition run` sets it.
    in_process_worker: bool = False
    log_level: str = "INFO"
    # Signs CSRF tokens. Unset: a random key is kept in data_dir/secret_key.
    secret_key: str = ""
    # Outgoing email. Unset host: messages are written to data_dir/outbox as .eml files.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    mail_from: str = "Coalition <no-reply@coalition.local>"
    # Stripe (settlement/stripe_gateway.py). Unset secret key: the platform runs, and
    # every payment action answers a problem naming this setting.
    stripe_secret_key: str = ""
    # Where the Stripe API answers: unset is Stripe itself; tests point it at localstripe.
    stripe_api_base: str = ""
    # Where Connect transfers are created; unset is the API base.
    stripe_connect_base: str = ""
    # Signs POST /webhooks/stripe (the endpoint's whsec_… secret) and the tolerance on
    # the signed timestamp.
    stripe_webhook_secret: str = ""
    stripe_webhook_tolerance_seconds: int = 300
    # With no Stripe key, `coalition run` starts a local Stripe sandbox (localstripe,
    # settlement/stripe_sandbox.py) and settles the demo through it; false: no payments.
    stripe_sandbox: bool = True
    # The operator's account that SEPA credit-transfer batches (pain.001) pay from.
    sepa_debtor_name: str = ""
    sepa_debtor_iban: str = ""
    sepa_debtor_bic: str = ""
    # How often buffered affiliate clicks are written (coalition/affiliates/tracking.py).
    click_flush_seconds: float = 0.2
    # Password hashes (argon2id, ~200 ms of CPU each) run in worker threads, at most this
    # many at once (tenants/passwords.py): on two cores, one leaves a core for the API.
    password_hash_concurrency: int = Field(default=1, ge=1)
    # A login or password change that waited this long for its turn gets 503 Retry-After.
    password_hash_max_wait_seconds: float = Field(default=5.0, gt=0)
    # argon2id's memory (KiB) and passes for new hashes. The defaults (64 MiB, 3) are the
    # argon2 library's; lower them only where speed beats an attacker's cost: the tests.
    password_hash_memory_kib: int = Field(default=65536, ge=8)
    password_hash_time_cost: int = Field(default=3, ge=1)
    # The proxies whose X-Forwarded-For is believed: comma-separated addresses and CIDR
    # blocks. Empty: none, the client is the connection's peer. Behind them, the client is
    # the right-most forwarded address that is not one of them (tenants/throttle.py).
    trusted_proxies: str = ""
    # Sign-ups, password-reset and verification-link requests one client address may make
    # per 10 minutes, of each kind (tenants/throttle.py).
    email_requests_per_address: int = Field(default=5, ge=1)

    def resolved_secret_key(self) -> str:
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            import secrets

            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def is_development(self) -> bool:
        return self.env == "development"


@lru_cache
def get_settings() -> Settings:
    return Settings()
