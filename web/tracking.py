"""GET /r/{code} and /r/{code}/{sub_id}: an affiliate's tracking link.

A trackable code records the click (buffered, coalition/affiliates/tracking.py) and
answers 302 to the program's landing URL with `click_id=<uuid>` added, setting the
first-party cookie `coalition_click` for the attribution window. Any other code records
nothing: a known one goes to its landing URL as it is, an unknown one to the site's
home. The route is excluded from the session and CSRF middleware (web/app.py), and on a
cache hit it does no I/O at all.
"""

from __future__ import annotations

from litestar import Request, get
from litestar.datastructures import State
from litestar.types import Receive, Scope, Send

from coalition.affiliates.tracking import CODES, ClickRecorder

COOKIE = "coalition_click"


class TrackingRedirect:
    """A bare ASGI 302. Litestar passes an async-callable return value through as is;
    its Response and Cookie classes would cost more than the rest of the request
    together (dataclass and SimpleCookie round trips, header re-scans)."""

    __slots__ = ("headers",)

    def __init__(self, location: str, cookie: str | None = None) -> None:
        self.headers = [(b"location", location.encode()), (b"content-length", b"0")]
        if cookie is not None:
            self.headers.append((b"set-cookie", cookie.encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 302, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _track(request: Request, state: State, code: str, sub_id: str | None
                 ) -> TrackingRedirect:
    target = await CODES.resolve(state.pool, code)
    if target is None:
        return TrackingRedirect("/")
    if not target.trackable:
        return TrackingRedirect(target.landing_url)
    recorder: ClickRecorder = state.click_recorder
    user_agent = referrer = b""
    for name, value in request.scope["headers"]:   # raw: cheaper than request.headers
        if name == b"user-agent":
            user_agent = value
        elif name == b"referer":
            referrer = value
    client = request.scope.get("client")
    click_id = recorder.record(target, client[0] if client else "",
                               user_agent.decode("latin-1"), referrer.decode("latin-1"),
                               sub_id or request.query_params.get("sub") or None)
    # A UUID needs no quoting.
    cookie = (f"{COOKIE}={click_id}; Max-Age={target.window_days * 86400}; Path=/; HttpOnly;"
              f" SameSite=Lax{'; Secure' if request.scope['scheme'] == 'https' else ''}")
    return TrackingRedirect(target.url_with_click(click_id), cookie)


@get("/r/{code:str}", include_in_schema=False)
async def track(request: Request, state: State, code: str) -> TrackingRedirect:
    return await _track(request, state, code, None)


@get("/r/{code:str}/{sub_id:str}", include_in_schema=False)
async def track_with_sub_id(request: Request, state: State, code: str, sub_id: str
                            ) -> TrackingRedirect:
    return await _track(request, state, code, sub_id)


TRACKING_HANDLERS = [track, track_with_sub_id]
