"""Shared plumbing of the portal pages: the logged-in user, guards, rendering."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException
from litestar.response import Redirect, Template

from coalition.uow import Actor, Database, Runner
from tenants import accounts
from tenants.models import User
from tenants.passwords import PasswordWorkBusy
from tenants.throttle import RateLimited, client_address

HOME = {"operator": "/operator", "partner_staff": "/partner", "member": "/member",
        "affiliate": "/affiliate"}


class LoginRequired(Exception):
    def __init__(self, path: str) -> None:
        self.path = path


class PageForbidden(HTTPException):
    status_code = 403


async def current_user(request: Request, db: Database) -> User | None:
    raw = request.session.get("user_id") if request.scope.get("session") else None
    if not raw:
        return None
    user = await db.run(accounts.user_by_id, uuid.UUID(raw))
    if user is None or user.disabled_at is not None:
        request.clear_session()
        return None
    return user


def acting(db: Database, user: User, *, scoped: bool = False) -> Runner:
    """Run use cases as the signed-in user: the audit rows name them, and their
    partner (a partner's staff) is the Tx's; `scoped` puts the Tx under row-level
    security for that partner."""
    return db.acting(Actor(user.email, user.id), partner_id=user.partner_id, scoped=scoped)


def require(request: Request, user: User | None, *kinds: str) -> User:
    if user is None:
        raise LoginRequired(request.url.path)
    if kinds and user.kind not in kinds:
        raise PageForbidden("This page is not available to your account.")
    return user


async def operator(request: Request, db: Database) -> User:
    """The signed-in operator, or the refusal every /operator page gives anyone else."""
    return require(request, await current_user(request, db), "operator")


def login_redirect(request: Request, exc: LoginRequired) -> Response:
    return Redirect(f"/login?next={quote(exc.path)}")


def client_ip(request: Request) -> str:
    """Who the throttles count a request against: the peer, or behind a proxy listed in
    COALITION_TRUSTED_PROXIES the client it names (tenants/throttle.py)."""
    return client_address(request.client.host if request.client else None,
                          request.headers.getall("x-forwarded-for", []),
                          request.app.state.settings.trusted_proxies)


def page(template: str, status_code: int = 200, headers: dict[str, str] | None = None,
         **context: Any) -> Template:
    return Template(template, context=context, status_code=status_code, headers=headers)


def busy(template: Template, exc: PasswordWorkBusy | RateLimited) -> Template:
    """The page with Retry-After: the password work queue was full (503), or a throttle
    refused the request (429); nothing was judged or sent, and the same submission will do
    after the seconds the header (and the page) says."""
    template.headers["Retry-After"] = str(exc.retry_after)
    return template


def base_url(request: Request) -> str:
    """This site's address, for the links the emails carry."""
    return str(request.base_url).rstrip("/")


def safe_next(target: str | None, fallback: str) -> str:
    """Only same-site relative paths: never redirect a login to another host."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return fallback


MAX_ROW_ID = 2**63 - 1   # ids are bigint (or smaller): a larger number names no row


def row_id(raw: object) -> int | None:
    """The id of a row a form names (a hidden id field), or None when it is no id at
    all: not digits, or beyond any id, which the database driver would refuse with an
    error rather than find nothing."""
    text = str(raw or "").strip()
    return int(text) if text.isdigit() and int(text) <= MAX_ROW_ID else None


async def path_ids_in_range(request: Request) -> None:
    """before_request of the portal: an id in the address beyond any row's (the router
    parses any run of digits) names no page, where the database driver would refuse it
    with an error. The API refuses the same with a 400 naming the parameter (RowId)."""
    for value in request.path_params.values():
        if isinstance(value, int) and not 0 <= value <= MAX_ROW_ID:
            raise NotFoundException()
