"""Wiring of affiliate conversions (coalition.affiliates) into the purchase API, member
enrolment and the member portal's registration: the click recorder's flush, and the
click cookie as a touch. The lead itself is written by the sign-up's use case, in its
own Tx (coalition.affiliates.commissions.for_signup)."""

from __future__ import annotations

import uuid

from litestar.datastructures import State

from coalition.affiliates.attribution import Flush, Touch

# Set by /r/{code} (web/tracking.py): the click id, for the member portal's sign-up.
CLICK_COOKIE = "coalition_click"


def click_flush(state: State) -> Flush | None:
    """The click recorder's flush, when the app runs one: a click id may arrive before
    its click left the recorder's buffer."""
    recorder = getattr(state, "click_recorder", None)
    return recorder.flush if recorder is not None else None


def cookie_click(value: str | None) -> Touch:
    """The `coalition_click` cookie as a touch; anything but a UUID is ignored."""
    try:
        return Touch(click_id=uuid.UUID(value)) if value else Touch()
    except ValueError:
        return Touch()

