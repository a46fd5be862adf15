"""GET /r/{code} and /r/{code}/{sub_id}: an affiliate's tracking link.

A trackable code records the click (buffered, coalition/affiliates/tracking.py) and
answers 302 to the program's landing URL with `click_id=<uuid>` added, setting the
first-party cookie `coalition_click` for the attribution window. Any other code records
nothing: a known one goes to its landing URL as it is, an unknown one to the site's
home. The route is excluded from the session and CSRF middleware (web/app.py), and on a
cache hit it does no I/O at all.
"""

from __future__ import annotations

from litestar import Request, Response, get
from litestar.datastructures import Cookie, State

from coalition.affiliates.tracking import CODES, ClickRecorder

COOKIE = "coalition_click"


def _redirect(location: str, cookie: Cookie | None = None) -> Response:
    return Response(content=b"", status_code=302, headers={"Location": location},
                    cookies=[cookie] if cookie else None, media_type="text/plain")


async def _track(request: Request, state: State, code: str, sub_id: str | None) -> Response:
    target = await CODES.resolve(state.pool, code)
    if target is None:
        return _redirect("/")
    if not target.trackable:
        return _redirect(target.landing_url)
    recorder: ClickRecorder = state.click_recorder
    headers = request.headers
    click_id = recorder.record(target, request.client.host if request.client else "",
                               headers.get("user-agent", ""), headers.get("referer", ""),
                               sub_id or request.query_params.get("sub") or None)
    cookie = Cookie(key=COOKIE, value=str(click_id), max_age=target.window_days * 86400,
                    path="/", httponly=True, samesite="lax",
                    secure=request.url.scheme == "https")
    return _redirect(target.url_with_click(click_id), cookie)


@get("/r/{code:str}", include_in_schema=False)
async def track(request: Request, state: State, code: str) -> Response:
    return await _track(request, state, code, None)


@get("/r/{code:str}/{sub_id:str}", include_in_schema=False)
async def track_with_sub_id(request: Request, state: State, code: str, sub_id: str
                            ) -> Response:
    return await _track(request, state, code, sub_id)


TRACKING_HANDLERS = [track, track_with_sub_id]
