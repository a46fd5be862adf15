"""The partner console: API clients and staff, with the role matrix and tenant isolation."""

import re
import uuid
from urllib.parse import urlencode

import httpx

from coalition import clock
from tenants.accounts import create_user
from tests.portal import Browser, csrf_of, owner_browser, submit


async def create_client(browser, *scopes: str) -> tuple[str, str, str]:
    page = await browser.get("/partner/clients")
    form = urlencode([("_csrf_token", csrf_of(page)), ("name", "POS"),
                      *[("scope", s) for s in scopes]])
    created = await browser.post("/partner/clients", content=form, headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert created.status_code == 200, created.text
    client_id = re.search(r'id="client-id">([^<]+)<', created.text).group(1)
    secret = re.search(r'id="client-secret">([^<]+)<', created.text).group(1)
    listing = await browser.get("/partner/clients")
    pk = re.findall(r"/partner/clients/([0-9a-f-]{36})/rotate", listing.text)[-1]
    assert client_id in listing.text and secret not in listing.text     # shown once
    return client_id, secret, pk


async def token(client, client_id: str, secret: str) -> httpx.Response:
    return await client.post("/oauth/token", data={"grant_type": "client_credentials"},
                             auth=(client_id, secret))


async def test_client_lifecycle_create_rotate_revoke(app, client):
    browser, _ = await owner_browser(app, client)
    async with browser:
        client_id, secret, pk = await create_client(browser, "members:read", "points:earn")
        first = await token(client, client_id, secret)
        assert first.status_code == 200
        assert set(first.json()["scope"].split()) == {"members:read", "points:earn"}

        page = await browser.get("/partner/clients")
        rotated = await browser.post(f"/partner/clients/{pk}/rotate",
                                     data={"_csrf_token": csrf_of(page)})
        new_secret = re.search(r'id="client-secret">([^<]+)<', rotated.text).group(1)
        assert new_secret != secret
        assert (await token(client, client_id, new_secret)).status_code == 200
        assert (await token(client, client_id, secret)).status_code == 200   # grace period

        access = first.json()["access_token"]
        api = await client.get("/api/v1/members", headers={"Authorization": f"Bearer {access}"})
        assert api.status_code == 200
        page = await browser.get("/partner/clients")
        await browser.post(f"/partner/clients/{pk}/revoke", data={"_csrf_token": csrf_of(page)})
        api = await client.get("/api/v1/members", headers={"Authorization": f"Bearer {access}"})
        assert api.status_code == 401
        assert (await token(client, client_id, new_secret)).status_code == 401


async def test_rotation_grace_period_ends(app, client, db):
    browser, _ = await owner_browser(app, client)
    async with browser:
        client_id, secret, pk = await create_client(browser, "members:read")
        page = await browser.get("/partner/clients")
        await browser.post(f"/partner/clients/{pk}/rotate", data={"_csrf_token": csrf_of(page)})
    await db.execute("UPDATE oauth_clients SET previous_secret_expires_at = $2"
                     " WHERE client_id = $1", client_id, clock.now())
    assert (await token(client, client_id, secret)).status_code == 401


async def test_staff_invite_and_role_matrix(app, client, smtp):
    browser, _ = await owner_browser(app, client)
    analyst_email = f"analyst-{uuid.uuid4().hex[:8]}@brand.example"
    async with browser:
        page = await browser.get("/partner/staff")
        invited = await browser.post("/partner/staff", data={
            "_csrf_token": csrf_of(page), "email": analyst_email, "role": "analyst"})
        assert invited.status_code == 302
    link = smtp.link_to(analyst_email, "/set-password")
    analyst = Browser(app)
    async with analyst:
        form = await analyst.get(link)
        await analyst.post("/set-password", data={"_csrf_token": csrf_of(form),
                                                  "token": link.split("token=")[1],
                                                  "password": "analyst secret 1"})
        login = await submit(analyst, "/login", "/login", email=analyst_email,
                             password="analyst secret 1")
        assert login.headers["location"] == "/partner"
        assert (await analyst.get("/partner")).status_code == 200
        assert (await analyst.get("/partner/clients")).status_code == 403
        assert (await analyst.get("/partner/staff")).status_code == 403
        home = await analyst.get("/partner")
        refused = await analyst.post("/partner/clients", data={
            "_csrf_token": csrf_of(home), "name": "x", "scope": "members:read"})
        assert refused.status_code == 403


async def test_admin_cannot_touch_owners_and_an_owner_remains(app, client, db):
    owner, partner_id = await owner_browser(app, client)
    async with owner:
        owner_id = await db.fetchval(
            "SELECT id FROM users WHERE partner_id = $1 AND role = 'owner'", partner_id)
        page = await owner.get("/partner/staff")
        last = await owner.post(f"/partner/staff/{owner_id}/role", data={
            "_csrf_token": csrf_of(page), "role": "admin"})
        assert last.status_code == 403                       # last owner keeps the role
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@brand.example"
    async with app.state.sessionmaker() as session:
        await create_user(session, admin_email, "partner_staff", partner_id=partner_id,
                          role="admin", password="admin secret 12", verified=True)
        await session.commit()
    admin = Browser(app)
    async with admin:
        await submit(admin, "/login", "/login", email=admin_email, password="admin secret 12")
        page = await admin.get("/partner/staff")
        assert "<option>owner</option>" not in page.text
        grant = await admin.post("/partner/staff", data={
            "_csrf_token": csrf_of(page), "email": "x@brand.example", "role": "owner"})
        assert grant.status_code == 403
        remove = await admin.post(f"/partner/staff/{owner_id}/remove",
                                  data={"_csrf_token": csrf_of(page)})
        assert remove.status_code == 403


async def test_console_is_isolated_between_partners(app, client, db):
    a, partner_a = await owner_browser(app, client)
    b, _ = await owner_browser(app, client)
    async with a, b:
        _, _, pk = await create_client(a, "members:read")
        owner_a = await db.fetchval("SELECT id FROM users WHERE partner_id = $1", partner_a)
        page = await b.get("/partner/clients")
        csrf = csrf_of(page)
        for path, data in ((f"/partner/clients/{pk}/rotate", {}),
                           (f"/partner/clients/{pk}/revoke", {}),
                           (f"/partner/staff/{owner_a}/role", {"role": "analyst"}),
                           (f"/partner/staff/{owner_a}/remove", {})):
            response = await b.post(path, data={"_csrf_token": csrf, **data})
            assert response.status_code == 404, path
        assert pk not in (await b.get("/partner/clients")).text
        assert str(owner_a) not in (await b.get("/partner/staff")).text
    assert await db.fetchval("SELECT revoked_at FROM oauth_clients WHERE id = $1", pk) is None


async def test_removed_staff_is_logged_out(app, client, db):
    owner, partner_id = await owner_browser(app, client)
    cashier_email = f"cashier-{uuid.uuid4().hex[:8]}@brand.example"
    async with app.state.sessionmaker() as session:
        cashier_user = await create_user(session, cashier_email, "partner_staff",
                                         partner_id=partner_id, role="cashier",
                                         password="cashier secret 1", verified=True)
        await session.commit()
    cashier = Browser(app)
    async with owner, cashier:
        await submit(cashier, "/login", "/login", email=cashier_email,
                     password="cashier secret 1")
        assert (await cashier.get("/partner")).status_code == 200
        page = await owner.get("/partner/staff")
        await owner.post(f"/partner/staff/{cashier_user.id}/remove",
                         data={"_csrf_token": csrf_of(page)})
        assert (await cashier.get("/partner")).status_code == 302
        relogin = await submit(cashier, "/login", "/login", email=cashier_email,
                               password="cashier secret 1")
        assert relogin.status_code == 401


async def test_app_clients_need_exact_https_redirect_uris(app, client, db):
    browser, partner_id = await owner_browser(app, client)
    async with browser:
        page = await browser.get("/partner/clients")
        assert "New app client" in page.text

        async def create(uris: str, public: bool = False) -> httpx.Response:
            form = [("_csrf_token", csrf_of(page)), ("client_type", "app"), ("name", "Shop"),
                    ("redirect_uris", uris), ("scope", "openid"), ("scope", "points:read")]
            if public:
                form.append(("public", "on"))
            return await browser.post("/partner/clients", content=urlencode(form), headers={
                "Content-Type": "application/x-www-form-urlencoded"})

        for bad in ("http://shop.example.com/cb", "https://*.example.com/cb",
                    "https://shop.example.com/cb#x", "shop.example.com/cb"):
            refused = await create(bad)
            assert refused.status_code == 400, bad
        assert await db.fetchval("SELECT count(*) FROM oauth_clients WHERE partner_id = $1",
                                 partner_id) == 0
        made = await create("https://shop.example.com/cb\r\nhttp://localhost:8080/cb")
        assert made.status_code == 200 and 'id="client-secret"' in made.text
        row = await db.fetchrow("SELECT client_type, redirect_uris, grant_types, scope, public"
                                " FROM oauth_clients WHERE partner_id = $1", partner_id)
        assert row["client_type"] == "app" and not row["public"]
        assert row["redirect_uris"] == ["https://shop.example.com/cb", "http://localhost:8080/cb"]
        assert row["grant_types"] == ["authorization_code", "refresh_token"]
        public = await create("https://spa.example.com/cb", public=True)
        assert public.status_code == 200 and 'id="client-secret"' not in public.text
        listing = await browser.get("/partner/clients")
        assert "app (public)" in listing.text
        # An app client cannot use the client-credentials grant.
        client_id = re.search(r'id="client-id">([^<]+)<', made.text).group(1)
        secret = re.search(r'id="client-secret">([^<]+)<', made.text).group(1)
        refused = await token(client, client_id, secret)
        assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"


async def test_profile_shows_terms_history_and_owner_accepts(app, client, db):
    browser, partner_id = await owner_browser(app, client)
    async with browser:
        profile = await browser.get("/partner/profile")
        assert profile.status_code == 200 and "No acceptance recorded" in profile.text
        version = re.search(r'name="version" value="([^"]+)"', profile.text).group(1)
        stale = await browser.post("/partner/profile/terms", data={
            "_csrf_token": csrf_of(profile), "version": "1999-01-01"})
        assert stale.status_code == 409 and 'data-field="version"' in stale.text
        accepted = await browser.post("/partner/profile/terms", data={
            "_csrf_token": csrf_of(profile), "version": version})
        assert accepted.status_code in (302, 303)
        after = await browser.get("/partner/profile")
        assert version in after.text and "Accept terms" not in after.text
    assert await db.fetchval("SELECT count(*) FROM partner_terms_acceptances"
                             " WHERE partner_id = $1", partner_id) == 1
    analyst, _ = await owner_browser(app, client, role="analyst")
    async with analyst:
        page = await analyst.get("/partner/profile")
        assert page.status_code == 200
        refused = await analyst.post("/partner/profile/terms", data={
            "_csrf_token": csrf_of(page), "version": version})
        assert refused.status_code == 403
    cashier, _ = await owner_browser(app, client, role="cashier")
    async with cashier:
        assert (await cashier.get("/partner/profile")).status_code == 403
