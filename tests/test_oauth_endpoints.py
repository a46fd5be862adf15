"""Revocation (RFC 7009), introspection (RFC 7662) and metadata (RFC 8414), driven by an
independent OAuth client library (Authlib's httpx client), not hand-built requests."""

import asyncio

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client

from tests.helpers import new_partner

BASE = "http://testserver.local"


def oauth_client(app, client_id: str, secret: str, method: str = "client_secret_basic"):
    return AsyncOAuth2Client(client_id, secret, token_endpoint_auth_method=method,
                             transport=httpx.ASGITransport(app=app), base_url=BASE)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_library_client_fetches_token_and_calls_api(app, client, method):
    partner = await new_partner(client)
    async with oauth_client(app, partner.client_id, partner.client_secret, method) as oauth:
        token = await oauth.fetch_token(f"{BASE}/oauth/token", grant_type="client_credentials")
        assert token["token_type"] == "Bearer"
        response = await oauth.get(f"{BASE}/api/v1/members")
        assert response.status_code == 200


async def test_revocation_takes_effect_at_once(app, client):
    partner = await new_partner(client)
    member = await partner.enroll()
    async with oauth_client(app, partner.client_id, partner.client_secret) as oauth:
        token = await oauth.fetch_token(f"{BASE}/oauth/token", grant_type="client_credentials")
        assert (await oauth.get(f"{BASE}/api/v1/members/{member}")).status_code == 200  # cached
        revoked = await oauth.revoke_token(f"{BASE}/oauth/revoke",
                                           token=token["access_token"])
        assert revoked.status_code == 200
        after = await oauth.get(f"{BASE}/api/v1/members/{member}")
        assert after.status_code == 401
        # Revoking an unknown token is not an error (RFC 7009 section 2.2).
        unknown = await oauth.revoke_token(f"{BASE}/oauth/revoke", token="cat_unknown")
        assert unknown.status_code == 200


async def test_token_type_hints_are_only_hints(app, client):
    """RFC 7009 and RFC 7662 section 2.1: the server tells a token's kind by itself, so a
    wrong or unknown hint changes nothing (it was a 401 unsupported_token_type, as if the
    client had not authenticated, with no WWW-Authenticate and no description)."""
    partner = await new_partner(client)
    credentials = (partner.client_id, partner.client_secret)
    for hint in ("refresh_token", "id_token", "garbage"):
        seen = await client.post("/oauth/introspect", auth=credentials,
                                 data={"token": partner.token, "token_type_hint": hint})
        assert seen.status_code == 200 and seen.json()["active"] is True, seen.text
    revoked = await client.post("/oauth/revoke", auth=credentials,
                                data={"token": partner.token, "token_type_hint": "garbage"})
    assert revoked.status_code == 200, revoked.text
    assert (await partner.get("/api/v1/members")).status_code == 401
    missing = await client.post("/oauth/revoke", auth=credentials, data={"hint": "x"})
    assert missing.status_code == 400
    assert missing.json() == {"error": "invalid_request",
                              "error_description": "The token parameter is required."}


async def test_only_the_issuing_client_may_revoke(app, client):
    owner = await new_partner(client)
    other = await new_partner(client)
    async with oauth_client(app, other.client_id, other.client_secret) as oauth:
        response = await oauth.revoke_token(f"{BASE}/oauth/revoke", token=owner.token)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_grant"
        assert response.json()["error_description"]
    assert (await owner.get("/api/v1/members")).status_code == 200


async def test_introspection(app, client):
    partner = await new_partner(client)
    stranger = await new_partner(client)
    async with oauth_client(app, partner.client_id, partner.client_secret) as oauth:
        active = (await oauth.introspect_token(f"{BASE}/oauth/introspect",
                                               token=partner.token)).json()
        assert active["active"] is True
        assert active["client_id"] == partner.client_id
        assert active["sub"] == str(partner.partner_id)
        assert "points:earn" in active["scope"].split()
        assert active["exp"] > active["iat"]
        foreign = (await oauth.introspect_token(f"{BASE}/oauth/introspect",
                                                token=stranger.token)).json()
        assert foreign == {"active": False}
        await oauth.revoke_token(f"{BASE}/oauth/revoke", token=partner.token)
        revoked = (await oauth.introspect_token(f"{BASE}/oauth/introspect",
                                                token=partner.token)).json()
        assert revoked == {"active": False}
    unauthenticated = await client.post("/oauth/introspect", data={"token": partner.token})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"] == "invalid_client"


async def test_authorization_server_metadata(client):
    metadata = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert metadata["issuer"] == BASE
    assert metadata["token_endpoint"] == f"{BASE}/oauth/token"
    assert metadata["revocation_endpoint"] == f"{BASE}/oauth/revoke"
    assert metadata["introspection_endpoint"] == f"{BASE}/oauth/introspect"
    assert "client_credentials" in metadata["grant_types_supported"]
    assert set(metadata["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic", "client_secret_post", "none"}
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_endpoint"] == f"{BASE}/oauth/authorize"
    assert metadata["jwks_uri"] == f"{BASE}/oauth/jwks"
    assert (await client.get("/.well-known/openid-configuration")).json() == metadata


async def test_suspension_blocks_cached_tokens_at_once(client, db):
    partner = await new_partner(client)
    assert (await partner.get("/api/v1/members")).status_code == 200   # now cached
    await db.execute("UPDATE partners SET status = 'suspended' WHERE id = $1", partner.partner_id)
    # A change made behind the app's back reaches it by NOTIFY: allow its delivery time
    # (milliseconds), far below the 60-second cache.
    for _ in range(100):
        blocked = await partner.get("/api/v1/members")
        if blocked.status_code != 200:
            break
        await asyncio.sleep(0.01)
    assert blocked.status_code == 403
    assert blocked.json()["type"] == "/problems/partner-not-active"
