"""Partner apps acting for members: authorization code + PKCE, consent, refresh-token
rotation, OpenID Connect. The app side is Authlib's own OAuth 2.0 client, an independent
implementation, not hand-built requests."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet

from coalition import clock, members
from tenants import accounts
from tenants.keys import create_signing_key
from tenants.service import create_app_client
from tests.helpers import PartnerClient, new_key
from tests.portal import csrf_of, submit

BASE = "http://testserver.local"
CALLBACK = "https://shop.example.com/oauth/callback"
ALL_MEMBER_SCOPES = "openid profile email points:read points:redeem"


@dataclass
class MemberLogin:
    email: str
    password: str
    member_id: str


async def new_member_login(client: httpx.AsyncClient) -> MemberLogin:
    email, password = f"m-{uuid.uuid4().hex[:10]}@example.com", "member password 1"
    async with client.app.state.sessionmaker() as session:
        member, _ = await members.find_or_create(session, email, "Ewa Nowak")
        await accounts.create_user(session, email, "member", name="Ewa Nowak",
                                   password=password, member_id=member.id, verified=True)
        await session.commit()
    return MemberLogin(email, password, str(member.id))


async def new_app(client: httpx.AsyncClient, partner: PartnerClient, *, public: bool = False,
                  scopes: str = ALL_MEMBER_SCOPES, uris: tuple[str, ...] = (CALLBACK,)
                  ) -> AsyncOAuth2Client:
    async with client.app.state.sessionmaker() as session:
        row, secret = await create_app_client(session, partner.partner_id, "Shop app",
                                              scopes.split(), list(uris), public=public)
        await session.commit()
    return AsyncOAuth2Client(
        client_id=row.client_id, client_secret=secret, scope=scopes, redirect_uri=uris[0],
        code_challenge_method="S256",
        token_endpoint_auth_method="none" if public else "client_secret_basic",
        transport=httpx.ASGITransport(app=client.app), base_url=BASE)


async def log_in(browser: httpx.AsyncClient, login: MemberLogin) -> None:
    response = await submit(browser, "/login", "/login", email=login.email,
                            password=login.password)
    assert response.status_code == 302, response.text


def location(response: httpx.Response) -> str:
    assert response.status_code in (302, 303), (response.status_code, response.text[:300])
    return response.headers["location"]


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def authorize(browser: httpx.AsyncClient, app: AsyncOAuth2Client, verifier: str,
                    decision: str = "allow", **extra: str) -> str:
    """The member's browser: open the authorization URL, consent, return the redirect."""
    url, _state = app.create_authorization_url(f"{BASE}/oauth/authorize",
                                               code_verifier=verifier, **extra)
    consent = await browser.get(url)
    if consent.status_code == 302:          # consent remembered
        return location(consent)
    assert consent.status_code == 200, consent.text
    answer = await browser.post("/oauth/authorize", data={
        **parse_qs(urlsplit(url).query), "_csrf_token": csrf_of(consent), "decision": decision})
    return location(answer)


@pytest.fixture
async def member(client) -> MemberLogin:
    return await new_member_login(client)


async def test_full_code_flow_with_pkce_refresh_and_id_token(client, browser, partner, member,
                                                             other_partner):
    app = await new_app(client, partner)
    # Not logged in: the authorize page sends the member to log in and back.
    url, _ = app.create_authorization_url(f"{BASE}/oauth/authorize",
                                          code_verifier=generate_token(48))
    to_login = location(await browser.get(url))
    assert to_login.startswith("/login?next=/oauth/authorize%3F")
    login_page = await browser.get(to_login)
    next_target = query_of(to_login)["next"]
    assert f'value="{next_target.replace("&", "&amp;")}"' in login_page.text
    logged_in = await browser.post("/login", data={
        "_csrf_token": csrf_of(login_page), "email": member.email, "password": member.password,
        "next": next_target})
    assert location(logged_in) == next_target     # straight back to the consent screen

    verifier, nonce = generate_token(48), generate_token(16)
    url, state = app.create_authorization_url(f"{BASE}/oauth/authorize",
                                              code_verifier=verifier, nonce=nonce)
    consent = await browser.get(url)
    assert consent.status_code == 200
    assert "Test Brand" in consent.text and "Shop app" in consent.text
    assert "Spend your points at Test Brand" in consent.text
    assert "See your points balance and history across all brands" in consent.text
    form = parse_qs(urlsplit(url).query)
    back = location(await browser.post("/oauth/authorize", data={
        **form, "_csrf_token": csrf_of(consent), "decision": "allow"}))
    assert back.startswith(CALLBACK) and query_of(back)["state"] == state

    token = await app.fetch_token(f"{BASE}/oauth/token", authorization_response=back,
                                  code_verifier=verifier)
    assert token["token_type"].lower() == "bearer" and token["refresh_token"]
    assert set(token["scope"].split()) == set(ALL_MEMBER_SCOPES.split())

    # The ID token is signed with a key published in the JWKS and names the member.
    keys = KeySet.import_key_set((await client.get("/oauth/jwks")).json())
    claims = jwt.decode(token["id_token"], keys).claims
    assert claims["iss"] == BASE and claims["aud"] == [app.client_id]
    assert claims["sub"] == member.member_id and claims["nonce"] == nonce
    assert claims["email"] == member.email and claims["exp"] > claims["iat"]
    info = (await app.get(f"{BASE}/oauth/userinfo")).json()
    assert info["sub"] == member.member_id and info["email_verified"] is True

    # The token acts for this member only, within the consented scopes.
    assert (await app.get(f"/api/v1/members/{member.member_id}/balance")).status_code == 200
    stranger = await partner.enroll()
    assert (await app.get(f"/api/v1/members/{stranger}/balance")).status_code == 404
    assert (await app.get("/api/v1/members")).status_code == 403
    earn = await app.post("/api/v1/earn", json={"member_id": member.member_id, "points": 5},
                          headers={"Idempotency-Key": new_key()})
    assert earn.status_code == 403 and earn.json()["type"] == "/problems/insufficient-scope"
    assert (await partner.earn(member.member_id, 100)).status_code == 201
    spend = await app.post("/api/v1/redemptions", json={"member_id": member.member_id,
                                                        "points": 30},
                           headers={"Idempotency-Key": new_key()})
    assert spend.status_code == 201, spend.text
    theirs = await app.post("/api/v1/redemptions", json={"member_id": stranger, "points": 1},
                            headers={"Idempotency-Key": new_key()})
    assert theirs.status_code == 404
    assert (await partner.balance(member.member_id))["available"] == 70
    # Another partner's server cannot see the member through this consent.
    assert (await other_partner.get(f"/api/v1/members/{member.member_id}")).status_code == 404

    # Refresh rotates; presenting the old refresh token again revokes the whole family.
    first_refresh = token["refresh_token"]
    renewed = await app.refresh_token(f"{BASE}/oauth/token")
    assert renewed["refresh_token"] != first_refresh
    assert (await app.get(f"/api/v1/members/{member.member_id}/balance")).status_code == 200
    replay = await client.post("/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": first_refresh},
        auth=(app.client_id, app.client_secret))
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert (await app.get(f"/api/v1/members/{member.member_id}/balance")).status_code == 401
    with pytest.raises(OAuthError):
        await app.refresh_token(f"{BASE}/oauth/token")


async def test_codes_are_single_use_short_lived_and_bound(client, browser, partner, member, db):
    app, other_app = await new_app(client, partner), await new_app(client, partner)
    await log_in(browser, member)
    verifier = generate_token(48)
    back = await authorize(browser, app, verifier)
    code = query_of(back)["code"]
    # Bound to the client: another client (even of the same partner) cannot redeem it.
    stolen = await client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
        "code_verifier": verifier}, auth=(other_app.client_id, other_app.client_secret))
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"

    # Bound to the verifier and the redirect URI.
    back = await authorize(browser, app, verifier)
    wrong_verifier = await client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": query_of(back)["code"],
        "redirect_uri": CALLBACK, "code_verifier": generate_token(48)},
        auth=(app.client_id, app.client_secret))
    assert wrong_verifier.json()["error"] == "invalid_grant"
    back = await authorize(browser, app, verifier)
    wrong_uri = await client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": query_of(back)["code"],
        "redirect_uri": "https://shop.example.com/other", "code_verifier": verifier},
        auth=(app.client_id, app.client_secret))
    assert wrong_uri.json()["error"] == "invalid_grant"

    # Single use: the second exchange fails and revokes what the first one issued.
    back = await authorize(browser, app, verifier)
    token = await app.fetch_token(f"{BASE}/oauth/token", authorization_response=back,
                                  code_verifier=verifier)
    again = await client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": query_of(back)["code"],
        "redirect_uri": CALLBACK, "code_verifier": verifier},
        auth=(app.client_id, app.client_secret))
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    revoked = await client.get(f"/api/v1/members/{member.member_id}/balance",
                               headers={"Authorization": f"Bearer {token['access_token']}"})
    assert revoked.status_code == 401

    # Short-lived: a code past its 60 seconds is refused.
    back = await authorize(browser, app, verifier)
    await db.execute("UPDATE oauth_authorization_codes"
                     " SET expires_at = $1::timestamptz - interval '1s' WHERE used_at IS NULL",
                     clock.now())
    late = await client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": query_of(back)["code"],
        "redirect_uri": CALLBACK, "code_verifier": verifier},
        auth=(app.client_id, app.client_secret))
    assert late.json()["error"] == "invalid_grant"


async def test_concurrent_exchanges_of_one_code_issue_at_most_one_token(client, browser,
                                                                        partner, member):
    app = await new_app(client, partner)
    await log_in(browser, member)
    verifier = generate_token(48)
    code = query_of(await authorize(browser, app, verifier))["code"]
    answers = await asyncio.gather(*[client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
        "code_verifier": verifier}, auth=(app.client_id, app.client_secret))
        for _ in range(5)])
    assert sorted(a.status_code for a in answers) == [200, 400, 400, 400, 400]


async def test_pkce_is_required_and_plain_is_refused(client, browser, partner, member):
    app = await new_app(client, partner)
    await log_in(browser, member)
    base = {"response_type": "code", "client_id": app.client_id, "redirect_uri": CALLBACK,
            "scope": "openid", "state": "xyz"}
    missing = location(await browser.get("/oauth/authorize", params=base))
    assert query_of(missing)["error"] == "invalid_request"
    assert query_of(missing)["state"] == "xyz"
    plain = location(await browser.get("/oauth/authorize", params={
        **base, "code_challenge": generate_token(48), "code_challenge_method": "plain"}))
    assert query_of(plain)["error"] == "invalid_request"
    assert "plain" in query_of(plain)["error_description"]


async def test_bad_client_or_redirect_uri_is_shown_not_redirected(client, browser, partner,
                                                                  member):
    app = await new_app(client, partner)
    await log_in(browser, member)
    verifier = generate_token(48)
    url, _ = app.create_authorization_url(f"{BASE}/oauth/authorize", code_verifier=verifier)
    evil = url.replace("shop.example.com", "evil.example.net")
    shown = await browser.get(evil)
    assert shown.status_code == 400 and "location" not in shown.headers
    assert "text/html" in shown.headers["content-type"]
    unknown = await browser.get(url.replace(app.client_id, "app_nobody"))
    assert unknown.status_code == 400 and "invalid_client" in unknown.text
    # Characters an error description may not repeat (RFC 6749 section 4.1.2.1), in a
    # redirect URI or a response type, and a client id PostgreSQL cannot hold: each was a
    # 500. Still no verified redirect URI, so still shown.
    for bad in (url.replace("shop.example.com", 'shop.example.com/"'),
                url.replace("shop.example.com", "shop.example.com/é"),
                url.replace("response_type=code", "response_type=c%C3%B3de"),
                url.replace(app.client_id, "app_%00")):
        shown = await browser.get(bad)
        assert shown.status_code == 400 and "location" not in shown.headers, bad
        assert "text/html" in shown.headers["content-type"]
    # A nonce PostgreSQL cannot hold goes back to the app (it was a 500).
    url, _ = app.create_authorization_url(f"{BASE}/oauth/authorize", code_verifier=verifier,
                                          nonce="a\x00b")
    back = query_of(location(await browser.get(url)))
    assert back["error"] == "invalid_request" and "nonce" in back["error_description"]
    # A scope the app was not registered for goes back to the app as invalid_scope.
    narrow = await new_app(client, partner, scopes="openid points:read")
    url, _ = narrow.create_authorization_url(f"{BASE}/oauth/authorize", code_verifier=verifier,
                                             scope="openid points:redeem")
    assert query_of(location(await browser.get(url)))["error"] == "invalid_scope"


async def test_denied_consent_returns_access_denied(client, browser, partner, member):
    app = await new_app(client, partner)
    await log_in(browser, member)
    back = await authorize(browser, app, generate_token(48), decision="deny")
    assert query_of(back)["error"] == "access_denied"


async def test_partner_staff_cannot_consent_for_members(client, browser, partner):
    app = await new_app(client, partner)
    email = f"staff-{uuid.uuid4().hex[:8]}@brand.example"
    async with client.app.state.sessionmaker() as session:
        await accounts.create_user(session, email, "partner_staff", password="staff password 1",
                                   partner_id=partner.partner_id, role="owner", verified=True)
        await session.commit()
    await submit(browser, "/login", "/login", email=email, password="staff password 1")
    url, _ = app.create_authorization_url(f"{BASE}/oauth/authorize",
                                          code_verifier=generate_token(48))
    refused = await browser.get(url)
    assert refused.status_code == 403 and "member account" in refused.text


async def test_public_app_uses_pkce_without_secret(client, browser, partner, member):
    app = await new_app(client, partner, public=True, scopes="points:read")
    await log_in(browser, member)
    verifier = generate_token(48)
    token = await app.fetch_token(f"{BASE}/oauth/token",
                                  authorization_response=await authorize(browser, app, verifier),
                                  code_verifier=verifier)
    assert "id_token" not in token   # no openid scope, no ID token
    assert (await app.get(f"/api/v1/members/{member.member_id}/balance")).status_code == 200
    # A public client may revoke its own token; it may not introspect.
    assert (await client.post("/oauth/introspect", data={
        "token": token["access_token"], "client_id": app.client_id})).status_code == 401
    await app.revoke_token(f"{BASE}/oauth/revoke", token["refresh_token"],
                           token_type_hint="refresh_token")
    assert (await app.get(f"/api/v1/members/{member.member_id}/balance")).status_code == 401


async def test_disconnecting_a_brand_kills_its_member_tokens_at_once(client, browser, partner,
                                                                     member, other_partner):
    app, other_app = await new_app(client, partner), await new_app(client, other_partner)
    await log_in(browser, member)
    verifier = generate_token(48)
    token = await app.fetch_token(f"{BASE}/oauth/token",
                                  authorization_response=await authorize(browser, app, verifier),
                                  code_verifier=verifier)
    await other_app.fetch_token(f"{BASE}/oauth/token",
                                authorization_response=await authorize(browser, other_app,
                                                                       verifier),
                                code_verifier=verifier)
    # The API caches verified tokens; the revocation must still bite at once.
    assert (await app.get(f"/api/v1/members/{member.member_id}/balance")).status_code == 200
    page = await browser.get("/member/connections")
    assert "Test Brand" in page.text and "Other Brand" in page.text
    revoke = await browser.post(f"/member/connections/{partner.partner_id}/revoke",
                                data={"_csrf_token": csrf_of(page)})
    assert location(revoke) == "/member/connections"
    assert (await app.get(f"/api/v1/members/{member.member_id}/balance")).status_code == 401
    refresh = await client.post("/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        auth=(app.client_id, app.client_secret))
    assert refresh.json()["error"] == "invalid_grant"
    # The other brand stays connected.
    assert (await other_app.get(f"/api/v1/members/{member.member_id}/balance")
            ).status_code == 200
    after = await browser.get("/member/connections")
    assert "Other Brand" in after.text and "Disconnect Test Brand" not in after.text
    # A brand the member has no connection with is not found, and changes nothing.
    nothing = await browser.post(f"/member/connections/{uuid.uuid4()}/revoke",
                                 data={"_csrf_token": csrf_of(after)})
    assert nothing.status_code == 404


async def test_remembered_consent_skips_the_screen_until_revoked(client, browser, partner,
                                                                 member):
    app = await new_app(client, partner)
    await log_in(browser, member)
    await authorize(browser, app, generate_token(48))
    url, _ = app.create_authorization_url(f"{BASE}/oauth/authorize",
                                          code_verifier=generate_token(48))
    assert (await browser.get(url)).status_code == 302
    again, _ = app.create_authorization_url(f"{BASE}/oauth/authorize",
                                            code_verifier=generate_token(48), prompt="consent")
    assert (await browser.get(again)).status_code == 200


async def test_signing_keys_rotate_and_old_tokens_still_verify(client, browser, partner, member):
    app = await new_app(client, partner)
    await log_in(browser, member)
    verifier = generate_token(48)
    before = await app.fetch_token(f"{BASE}/oauth/token",
                                   authorization_response=await authorize(browser, app,
                                                                          verifier),
                                   code_verifier=verifier)
    server = client.app.state.oauth_server
    with server.session_factory() as session, session.begin():
        new_kid = create_signing_key(session, server.box).kid
    after = await app.fetch_token(f"{BASE}/oauth/token",
                                  authorization_response=await authorize(browser, app, verifier),
                                  code_verifier=verifier)
    document = (await client.get("/oauth/jwks")).json()
    keys = KeySet.import_key_set(document)
    assert len(document["keys"]) >= 2
    assert jwt.decode(after["id_token"], keys).header["kid"] == new_kid
    old = jwt.decode(before["id_token"], keys)
    assert old.header["kid"] != new_kid and old.claims["sub"] == member.member_id
    assert all("d" not in key for key in document["keys"])   # public halves only


async def test_refresh_tokens_expire(client, browser, partner, member, db):
    app = await new_app(client, partner)
    await log_in(browser, member)
    verifier = generate_token(48)
    token = await app.fetch_token(f"{BASE}/oauth/token",
                                  authorization_response=await authorize(browser, app, verifier),
                                  code_verifier=verifier)
    await db.execute("UPDATE oauth_tokens SET refresh_expires_at = $1 WHERE member_id = $2",
                     clock.now() - timedelta(seconds=1), uuid.UUID(member.member_id))
    expired = await client.post("/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        auth=(app.client_id, app.client_secret))
    assert expired.json()["error"] == "invalid_grant"


async def test_consent_and_login_pages_let_the_form_redirect_to_the_app_only(client, browser,
                                                                            partner, member):
    """Browsers apply CSP form-action to the redirect after a form: the consent page (and
    the login page on the way to it) name the app's registered origin, and no other."""
    app = await new_app(client, partner)
    url, _ = app.create_authorization_url(f"{BASE}/oauth/authorize",
                                          code_verifier=generate_token(48))
    to_login = location(await browser.get(url))
    login_csp = (await browser.get(to_login)).headers["content-security-policy"]
    assert "form-action 'self' https://shop.example.com;" in login_csp
    plain_login = (await browser.get("/login")).headers["content-security-policy"]
    assert "form-action 'self';" in plain_login
    # A client id PostgreSQL cannot hold names no app (the login page was a 500).
    odd = await browser.get("/login", params={"next": "/oauth/authorize?client_id=%00"})
    assert odd.status_code == 200
    assert "form-action 'self';" in odd.headers["content-security-policy"]
    await log_in(browser, member)
    consent_csp = (await browser.get(url)).headers["content-security-policy"]
    assert "form-action 'self' https://shop.example.com;" in consent_csp
    assert "script-src 'self';" in consent_csp and "frame-ancestors 'none'" in consent_csp
