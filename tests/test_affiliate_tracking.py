"""Tracking links /r/{code}: the redirect, the cookie, the recorded click (hashed address,
user agent, referrer, sub-id), the codes that record nothing, the cache's invalidation,
and the buffered recorder's flush on shutdown."""

import asyncio
import hashlib
import hmac
import uuid

import httpx
from asgi_lifespan import LifespanManager

from coalition.affiliates import programs
from coalition.affiliates.tracking import CODES
from tests.affiliate_helpers import click, make_affiliate, make_enrollment, setup_enrollment
from web.app import create_app


async def clicks_of(db, enrollment_id) -> list:
    return await db.fetch("SELECT * FROM affiliate_clicks WHERE enrollment_id = $1"
                          " ORDER BY id", enrollment_id)


async def test_link_redirects_with_click_id_sets_cookie_and_records_the_click(app, client, db,
                                                                              settings):
    _, program, enrollment = await setup_enrollment(app)
    response = await client.get(f"/r/{enrollment.code}", headers={
        "User-Agent": "Mozilla/5.0 test", "Referer": "https://blog.example/post"})
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith("https://shop.example/landing?src=aff&click_id=")
    click_id = uuid.UUID(location.split("click_id=")[1])
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"coalition_click={click_id};")
    lowered = cookie.lower()
    assert "max-age=2592000" in lowered and "httponly" in lowered
    assert "samesite=lax" in lowered and "path=/" in lowered
    # No portal session or CSRF cookie on this route: one cookie only.
    assert len(response.headers.get_list("set-cookie")) == 1
    # Buffered, not yet written; flush() writes it.
    await client.app.state.click_recorder.flush()
    [row] = await clicks_of(db, enrollment.id)
    secret = settings.resolved_secret_key().encode()
    assert row["click_id"] == click_id
    assert row["ip_hash"] == hmac.new(secret, b"127.0.0.1", hashlib.sha256).hexdigest()
    assert row["user_agent"] == "Mozilla/5.0 test"
    assert row["referrer"] == "https://blog.example/post"
    assert row["sub_id"] is None
    assert (row["program_id"], row["partner_id"]) == (program.id, program.partner_id)


async def test_sub_ids_by_path_and_query_and_landing_url_shapes(app, client, db):
    _, _, enrollment = await setup_enrollment(app, landing_url="https://shop.example/p#top")
    by_path = await client.get(f"/r/{enrollment.code}/yt-video-7")
    by_query = await client.get(f"/r/{enrollment.code}?sub=newsletter")
    for response in (by_path, by_query):
        assert response.status_code == 302
        # The click id goes into the query, before the fragment.
        assert response.headers["location"].startswith("https://shop.example/p?click_id=")
        assert response.headers["location"].endswith("#top")
    await client.app.state.click_recorder.flush()
    assert [r["sub_id"] for r in await clicks_of(db, enrollment.id)] == ["yt-video-7",
                                                                           "newsletter"]


async def test_codes_that_do_not_track_redirect_and_record_nothing(app, client, db):
    unknown = await client.get("/r/no-such-code-x1")
    assert unknown.status_code == 302 and unknown.headers["location"] == "/"
    assert "set-cookie" not in unknown.headers
    refs = []
    for status in ("pending", "rejected", "banned"):
        _, program, enrollment = await setup_enrollment(app, enrollment="application",
                                                        status=status)
        assert enrollment.status == status
        refs.append((program, enrollment))
    # A paused program: its approved affiliates' links track nothing either.
    _, paused, paused_enrollment = await setup_enrollment(app)
    async with app.state.sessionmaker() as session:
        row = await programs.own_program(session, paused.partner_id, paused.id)
        await programs.update_program(session, paused.partner_id, paused.id,
                                      programs.ProgramSpec(name=row.name,
                                                           landing_url=row.landing_url,
                                                           currency="PLN", status="paused"))
        await session.commit()
    refs.append((paused, paused_enrollment))
    for program, enrollment in refs:
        for path in (f"/r/{enrollment.code}", f"/r/{enrollment.code}/sub"):
            response = await client.get(path)
            assert response.status_code == 302
            assert response.headers["location"] == program.landing_url
            assert "set-cookie" not in response.headers
    await client.app.state.click_recorder.flush()
    for _, enrollment in refs:
        assert await clicks_of(db, enrollment.id) == []
    overlong = await client.get("/r/" + "x" * 300)
    assert overlong.status_code == 302 and overlong.headers["location"] == "/"


async def test_a_ban_takes_effect_at_once_in_this_process(app, client, db):
    _, program, enrollment = await setup_enrollment(app)
    before = await click(client, enrollment.code)          # the code is now cached
    await client.app.state.click_recorder.flush()
    async with app.state.sessionmaker() as session:
        await programs.decide_enrollment(session, program.partner_id, enrollment.id, "ban",
                                         "test", "Cookie stuffing")
        await session.commit()
    after = await client.get(f"/r/{enrollment.code}")
    assert after.headers["location"] == program.landing_url
    await client.app.state.click_recorder.flush()
    assert [r["click_id"] for r in await clicks_of(db, enrollment.id)] == [before]


async def test_clicks_of_a_code_banned_elsewhere_are_not_written(app, client, db):
    """Another process bans the enrollment (this one's cache still says approved): the
    recorder's INSERT checks the status when it writes, so nothing billable is kept."""
    _, _, enrollment = await setup_enrollment(app)
    await click(client, enrollment.code)
    await client.app.state.click_recorder.flush()
    await click(client, enrollment.code)                    # still cached as approved
    await db.execute("UPDATE affiliate_enrollments SET status = 'banned',"
                     " status_reason = 'elsewhere' WHERE id = $1", enrollment.id)
    await click(client, enrollment.code)
    await client.app.state.click_recorder.flush()
    assert len(await clicks_of(db, enrollment.id)) == 1
    CODES.forget(enrollment.code)


async def test_many_concurrent_clicks_are_all_written_once(app, client, db):
    _, _, enrollment = await setup_enrollment(app)
    ids = await asyncio.gather(*(click(client, enrollment.code) for _ in range(700)))
    await client.app.state.click_recorder.flush()
    rows = await clicks_of(db, enrollment.id)
    assert len(rows) == 700 and {r["click_id"] for r in rows} == set(ids)


async def test_clicks_still_buffered_are_written_on_shutdown(settings, database_url, db):
    """With a flush interval of an hour, only the app's shutdown can write the clicks."""
    slow = settings.model_copy(update={"click_flush_seconds": 3600.0})
    other = create_app(slow, database_url)
    async with LifespanManager(other):
        _, _, enrollment = await setup_enrollment(other)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other),
                                     base_url="http://testserver.local") as browser:
            ids = [await click(browser, enrollment.code, **{"User-Agent": f"ua-{n}"})
                   for n in range(25)]
        assert other.state.click_recorder.pending == 25
        assert await clicks_of(db, enrollment.id) == []
    rows = await clicks_of(db, enrollment.id)
    assert [r["click_id"] for r in rows] == ids


async def test_each_affiliate_gets_its_own_readable_code(app, client):
    _, program, first = await setup_enrollment(app)
    affiliate = await make_affiliate(app, name="Łukasz Żółć")
    second = await make_enrollment(app, affiliate.id, program)
    assert second.code.startswith("lukasz-zolc-") and len(second.code) == len("lukasz-zolc-") + 8
    assert first.code != second.code
    a, b = await click(client, first.code), await click(client, second.code)
    assert a != b
