"""Property-based fuzzing of the OAuth 2.0 endpoints that take form input, over real
HTTP (the session's `live_server`): /oauth/token with each grant type, /oauth/revoke,
/oauth/introspect and /oauth/userinfo (which RFC 6750 lets a client call by POST).

Each case starts from a well-formed request of its kind, with real credentials, codes,
verifiers and tokens of a partner made for the module, then breaks it: fields dropped,
replaced by garbage or repeated, unknown fields, every way of authenticating the client
(and broken ones: Basic credentials that are not base64 or not UTF-8, a Bearer token
where Basic belongs), and bodies that are not a form at all (raw bytes, JSON, multipart,
the parameters in the query string).

What must hold whatever arrives: never a 5xx; every answer is JSON and not cached; an
error is RFC 6749 section 5.2 JSON (RFC 6750 section 3 for userinfo), not an RFC 9457
problem: a registered `error` code and an `error_description` in the section's character
set; a 401 says how to authenticate (WWW-Authenticate); a refused token request issues
no token. Generation is deterministic, so a run is the same run every time."""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
from authlib.common.security import generate_token
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from coalition.db import DatabaseUrl
from tests.browser import LiveServer
from tests.helpers import new_partner
from tests.test_oauth_apps import (
    BASE,
    CALLBACK,
    authorize,
    log_in,
    new_app,
    new_member_login,
    query_of,
)

pytestmark = pytest.mark.slow

# Cases per kind of request; a deeper local run explores other cases, still reproducibly:
#   COALITION_FUZZ_EXAMPLES=300 COALITION_FUZZ_SEED=7 pytest tests/test_oauth_fuzz.py
EXAMPLES = int(os.environ.get("COALITION_FUZZ_EXAMPLES", "40"))
SEED = os.environ.get("COALITION_FUZZ_SEED")
# RFC 6749 section 5.2, RFC 7009 section 2.2.1 (revocation) and RFC 6750 section 3.1
# (userinfo is a protected resource).
TOKEN_ERRORS = frozenset({"invalid_request", "invalid_client", "invalid_grant",
                          "unauthorized_client", "unsupported_grant_type", "invalid_scope"})
ERRORS = {
    "/oauth/token": TOKEN_ERRORS,
    "/oauth/revoke": TOKEN_ERRORS | {"unsupported_token_type"},
    "/oauth/introspect": TOKEN_ERRORS,
    "/oauth/userinfo": frozenset({"invalid_request", "invalid_token", "insufficient_scope"}),
}
# error_description: %x20-21 / %x23-5B / %x5D-7E (RFC 6749 section 5.2).
DESCRIPTION = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")
FIELDS = ("grant_type", "client_id", "client_secret", "scope", "code", "redirect_uri",
          "code_verifier", "refresh_token", "token", "token_type_hint", "state", "nonce",
          "username", "password", "assertion", "access_token", "response_type")
# Values a field may be given: the module's real credentials (by name, filled in by the
# test), the values the fields take in the protocol, and garbage.
REAL = ("server_id", "server_secret", "app_id", "app_secret", "public_id", "code",
        "verifier", "public_code", "public_verifier", "refresh", "public_refresh", "access",
        "server_access")
PROTOCOL = ("client_credentials", "authorization_code", "refresh_token", "password",
            "urn:ietf:params:oauth:grant-type:jwt-bearer", "access_token",
            CALLBACK, CALLBACK + "/", "https://evil.example.net/cb", "openid",
            "openid profile email points:read points:redeem", "members:read points:earn",
            "points:redeem points:redeem", "S256", "plain")
TRICKY = ("", " ", "\x00", "app_\x00", "cat_\x00", "crt_", "cat_", "%", "%zz", "%ff", '"',
          "\\", "é", "ü" * 50, "😀", "\r\n", "a\nb", "x" * 5000, "null", "[]", "{}", "0",
          "-1", "\u202e", "\ufeff")
value = st.one_of(st.sampled_from([f"@{name}" for name in REAL]), st.sampled_from(PROTOCOL),
                  st.sampled_from(TRICKY), st.text(max_size=30),
                  st.binary(max_size=16).map(lambda b: b.decode("latin-1")))
field_name = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12))
# (what, field, value, which field a repeat repeats)
mutation = st.tuples(st.sampled_from(["drop", "set", "repeat", "add"]), field_name, value,
                     st.integers(0, 10))
# How the client authenticates: as the request's kind expects, as another client, with a
# wrong secret, or brokenly.
AUTH = ("expected", "expected", "expected", "none", "post", "basic_server", "basic_app",
        "basic_wrong", "basic_garbage", "basic_not_utf8", "basic_not_base64",
        "basic_no_colon", "basic_empty", "bearer", "both")
BODY = ("form", "form", "form", "form", "form", "raw", "json", "multipart", "query", "empty",
        "no_content_type")


@dataclass
class Kind:
    """A well-formed request: where it goes, its fields, and which client sends it."""

    endpoint: str
    fields: tuple[tuple[str, str], ...]
    client: str  # server, app, public, or member (a member's bearer token, for userinfo)


KINDS = {
    "client_credentials": Kind("/oauth/token", (("grant_type", "client_credentials"),
                                                ("scope", "members:read")), "server"),
    "authorization_code": Kind("/oauth/token", (
        ("grant_type", "authorization_code"), ("code", "@code"),
        ("redirect_uri", CALLBACK), ("code_verifier", "@verifier")), "app"),
    "public_authorization_code": Kind("/oauth/token", (
        ("grant_type", "authorization_code"), ("code", "@public_code"),
        ("redirect_uri", CALLBACK), ("code_verifier", "@public_verifier"),
        ("client_id", "@public_id")), "public"),
    "refresh_token": Kind("/oauth/token", (("grant_type", "refresh_token"),
                                           ("refresh_token", "@refresh")), "app"),
    "unknown_grant": Kind("/oauth/token", (("grant_type", "password"), ("username", "a"),
                                           ("password", "b")), "app"),
    "revoke": Kind("/oauth/revoke", (("token", "@access"),
                                     ("token_type_hint", "access_token")), "app"),
    "revoke_public": Kind("/oauth/revoke", (("token", "@public_refresh"),
                                            ("token_type_hint", "refresh_token"),
                                            ("client_id", "@public_id")), "public"),
    "introspect": Kind("/oauth/introspect", (("token", "@server_access"),), "server"),
    "userinfo": Kind("/oauth/userinfo", (), "member"),
}


@dataclass
class OAuthWorld:
    partner_id: uuid.UUID
    member_id: str
    # Fresh codes and tokens (by their names in REAL) and the clients' credentials.
    mint: Callable[[], Awaitable[dict[str, str]]]


@pytest.fixture(scope="module")
async def oauth_world(client: httpx.AsyncClient) -> AsyncIterator[OAuthWorld]:
    """A partner with a server client, a confidential app and a public app, and a member
    who consented to both apps. The codes and tokens the cases break are minted per test
    (`real`): codes live a minute and a refresh token is spent by its first use."""
    partner = await new_partner(client, "OAuth Fuzz Brand")
    app = await new_app(client, partner)
    public = await new_app(client, partner, public=True)
    login = await new_member_login(client)
    transport = httpx.ASGITransport(app=client.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as browser:
        await log_in(browser, login)

        async def mint() -> dict[str, str]:
            values: dict[str, str] = {}
            for prefix, oauth in (("", app), ("public_", public)):
                for purpose in ("token", "code"):
                    verifier = generate_token(48)
                    back = await authorize(browser, oauth, verifier)
                    if purpose == "code":
                        values |= {f"{prefix}code": query_of(back)["code"],
                                   f"{prefix}verifier": verifier}
                        continue
                    token = await oauth.fetch_token(
                        f"{BASE}/oauth/token", authorization_response=back,
                        code_verifier=verifier)
                    values[f"{prefix}refresh"] = token["refresh_token"]
                    if not prefix:
                        values["access"] = token["access_token"]
            served = await client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                       auth=(partner.client_id, partner.client_secret))
            return values | {
                "server_id": partner.client_id, "server_secret": partner.client_secret,
                "app_id": app.client_id, "app_secret": app.client_secret,
                "public_id": public.client_id, "server_access": served.json()["access_token"]}

        yield OAuthWorld(partner.partner_id, login.member_id, mint)
    await app.aclose()
    await public.aclose()


@pytest.fixture
async def real(oauth_world: OAuthWorld) -> dict[str, str]:
    return await oauth_world.mint()


@pytest.fixture(scope="module")
def issued(database_url: DatabaseUrl, oauth_world: OAuthWorld
           ) -> Iterator[Callable[[], int]]:
    """How many tokens the module's partner holds, read straight from the database."""
    with psycopg.connect(database_url.asyncpg_dsn, autocommit=True) as conn:
        def count() -> int:
            return conn.execute("SELECT count(*) FROM oauth_tokens WHERE partner_id = %s",
                                (oauth_world.partner_id,)).fetchone()[0]
        yield count


def _filled(text: str, real: dict[str, str]) -> str:
    return real.get(text[1:], text) if text.startswith("@") else text


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _header(text: str) -> bytes:
    """Garbage as a header value can carry it (RFC 9110 section 5.5): UTF-8, without
    control characters other than tab, and without whitespace at either end."""
    return re.sub(rb"[\x00-\x08\x0a-\x1f\x7f]", b"", text.encode()).strip()


def _request(data: st.DataObject, kind: Kind, real: dict[str, str]
             ) -> tuple[dict[str, str | bytes], str, bytes, str]:
    """Headers, query string, body and a description of one broken request of `kind`."""
    fields = [(name, _filled(v, real)) for name, v in kind.fields]
    for op, name, raw, which in data.draw(st.lists(mutation, max_size=4), label="mutations"):
        text = _filled(raw, real)
        if op == "drop":
            fields = [(n, v) for n, v in fields if n != name]
        elif op == "set":
            fields = [(n, v) for n, v in fields if n != name] + [(name, text)]
        elif op == "repeat" and fields:
            fields.append((fields[which % len(fields)][0], text))
        else:
            fields.append((name, text))
    ids = {"server": ("server_id", "server_secret"), "app": ("app_id", "app_secret"),
           "public": ("public_id", "")}
    own_id, own_secret = (real.get(k, "") for k in ids.get(kind.client, ("app_id", "app_secret")))
    auth = data.draw(st.sampled_from(AUTH), label="auth")
    headers: dict[str, str | bytes] = {}
    if kind.client == "member":
        token = data.draw(st.one_of(st.just(real["access"]), st.just(real["server_access"]),
                                    value.map(lambda v: _filled(v, real))), label="bearer")
        scheme = data.draw(st.sampled_from(["Bearer", "bearer", "Basic", "", "Bearer  "]),
                           label="scheme")
        if auth != "none":
            headers["Authorization"] = _header(f"{scheme} {token}")
    elif auth == "expected":
        if kind.client != "public":
            headers["Authorization"] = _basic(own_id, own_secret)
    elif auth == "post":
        fields += [("client_id", own_id), ("client_secret", own_secret)]
    elif auth == "basic_server":
        headers["Authorization"] = _basic(real["server_id"], real["server_secret"])
    elif auth == "basic_app":
        headers["Authorization"] = _basic(real["app_id"], real["app_secret"])
    elif auth == "basic_wrong":
        headers["Authorization"] = _basic(own_id, "not-the-secret")
    elif auth == "basic_garbage":
        user = _filled(data.draw(value, label="user"), real)
        password = _filled(data.draw(value, label="password"), real)
        headers["Authorization"] = _basic(user, password)
    elif auth == "basic_not_utf8":
        raw = own_id.encode() + b":" + data.draw(st.binary(min_size=1, max_size=8), label="b")
        headers["Authorization"] = "Basic " + base64.b64encode(raw + b"\xff").decode()
    elif auth == "basic_not_base64":
        headers["Authorization"] = "Basic " + data.draw(
            st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1,
                    max_size=20),
            label="not base64")
    elif auth == "basic_no_colon":
        headers["Authorization"] = "Basic " + base64.b64encode(own_id.encode()).decode()
    elif auth == "basic_empty":
        headers["Authorization"] = "Basic"
    elif auth == "bearer":
        headers["Authorization"] = f"Bearer {real['server_access']}"
    elif auth == "both":
        headers["Authorization"] = _basic(own_id, own_secret)
        fields += [("client_id", real["app_id"]), ("client_secret", real["app_secret"])]
    encoded = urlencode(fields)
    body_kind = data.draw(st.sampled_from(BODY), label="body")
    query, body = "", encoded.encode()
    if body_kind == "form":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body_kind == "raw":
        headers["Content-Type"] = data.draw(st.sampled_from(
            ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; "
             "charset=latin-1", "multipart/form-data", "multipart/form-data; boundary=x",
             "text/plain", "application/octet-stream"]), label="content type")
        body = data.draw(st.one_of(st.binary(max_size=60), st.sampled_from(
            [b"%ff=%fe", b"grant_type=%", b"grant_type=client_credentials&%zz=1", b"&&==&",
             b"=", b"\x00=\x00", b"--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--",
             b"--x\r\n\r\n", encoded.encode() + b"\xff"])), label="raw body")
    elif body_kind == "json":
        headers["Content-Type"] = "application/json"
        body = json.dumps(dict(fields)).encode()
    elif body_kind == "multipart":
        boundary = "fuzzboundary"
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n'.encode()
            + v.encode() + b"\r\n" for n, v in fields
        ) + f"--{boundary}--\r\n".encode()
    elif body_kind == "query":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        query, body = encoded, b""
    elif body_kind == "empty":
        body = b""
    # no_content_type: the form's bytes with no Content-Type at all
    return headers, query, body, f"{auth} {body_kind} {headers!r} {fields!r}"[:2000]


def check_answer(kind: Kind, response: httpx.Response, sent: str, member_id: str) -> None:
    where = f"{kind.endpoint} answered {response.status_code} to {sent}: {response.text[:500]}"
    assert response.status_code < 500, where
    assert response.headers.get("content-type", "").split(";")[0] == "application/json", where
    assert response.headers.get("cache-control") == "no-store", where
    body = response.json()
    assert isinstance(body, dict), where
    if response.status_code >= 400:
        assert response.status_code in (400, 401, 403), where
        assert body.get("error") in ERRORS[kind.endpoint], where
        description = body.get("error_description")
        assert isinstance(description, str) and DESCRIPTION.fullmatch(description), where
        if response.status_code == 401:
            assert response.headers.get("www-authenticate"), where
        return
    assert response.status_code == 200, where
    if kind.endpoint == "/oauth/token":
        assert body.get("token_type") == "Bearer" and body.get("access_token"), where
        assert isinstance(body.get("expires_in"), int), where
    elif kind.endpoint == "/oauth/introspect":
        assert isinstance(body.get("active"), bool), where
    elif kind.endpoint == "/oauth/userinfo":
        assert body.get("sub") == member_id, where


@pytest.mark.parametrize("name", list(KINDS))
# No shrinking: a failure's message shows the whole request, and shrinking a request made
# of many independent draws takes minutes.
@settings(max_examples=EXAMPLES, derandomize=SEED is None, database=None, deadline=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
@(seed(int(SEED)) if SEED else lambda test: test)
def test_oauth_endpoints_answer_garbage_with_rfc6749_errors(
        name: str, data: st.DataObject, live_server: LiveServer, oauth_world: OAuthWorld,
        real: dict[str, str], issued: Callable[[], int]) -> None:
    kind = KINDS[name]
    headers, query, body, sent = _request(data, kind, real)
    before = issued()
    url = f"{live_server.url}{kind.endpoint}" + (f"?{query}" if query else "")
    with httpx.Client(timeout=30) as http:
        response = http.post(url, content=body, headers=headers)
    check_answer(kind, response, sent, oauth_world.member_id)
    if kind.endpoint == "/oauth/token" and response.status_code != 200:
        assert issued() == before, f"a refused token request issued a token: {sent}"
