"""Bad input to every portal form gets a clear error and changes nothing. With the demo
coalition (a copy of its own, tests/portal_demo.py), every kind of user browses the
portal as tests/test_portal_crawl.py does (nobody first, the operator last), and every
POST form on every page it reaches (each form once: by its action's shape and its
fields) is submitted, with the page's CSRF token, with bad input:
- with a forged CSRF token: refused (403), nothing written;
- with every field a person types in left empty, plus a field the form does not have;
- one field at a time wrong, the others as the page fills them (or as VALID fills what
  the page leaves empty): an over-long text, a word, a negative and a huge number,
  malformed dates, a choice the menu does not offer, a tampered hidden field.
Never a 5xx. An answer that refuses (4xx) writes nothing, and where one field the person
fills in is wrong, it names that field and no other: next to it (in its label, right
after it, by its id or data-field) or in words ("(name)", "name: ..."). A wrong value
is a 400/422/404, not "not allowed" (403). A number, date or choice the form cannot mean
is refused, never accepted: some text fields take any text, but one that refuses a word
takes a number and must refuse a negative or huge one.
The tables below say where the portal differs from that by design, each with its reason:
NO_INPUT (forms with nothing to get wrong), NOT_NAMED, NOT_READ, WRITES_ON_REFUSAL.
Some forms appear only in states the demo never reaches (a statement in review, an
application, a fraud hold, a voucher at the till, a bank file, a connected app): the
demo copy is put in them first (tests/portal_states.py), and STATE_FORMS says who tries
each of those forms.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from coalition import clock
from tests.portal import csrf_of
from tests.portal_demo import ORIGIN, ROLES, Demo, Role, database_fingerprint, signed_in
from tests.portal_states import Renew, States, set_up
from tests.test_onboarding import random_nip
from tests.test_portal_crawl import MEMBER_FIRST_VISIT, crawl, internal, shape
from web.demo_history import KRZYSZTOF

pytestmark = pytest.mark.slow

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
LONG = "x" * 5000
HUGE = str(10**20)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TEXT = {"text", "search", "tel", "url", "email", "password"}
DATES = {"date", "datetime-local", "month", "week", "time"}
# Controls a person types into (their empty and over-long variants).
TYPED = TEXT | DATES | {"number", "textarea"}


@dataclass
class Control:
    name: str
    kind: str                      # input type, "textarea" or "select"
    value: str = ""
    options: list[str] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class Form:
    page: str
    action: str
    multipart: bool
    controls: list[Control] = field(default_factory=list)
    # Named submit buttons: each (name, value) is a way to send the form.
    buttons: list[tuple[str, str]] = field(default_factory=list)

    @property
    def shape(self) -> str:
        return shape(self.action)

    @property
    def key(self) -> str:
        # Its buttons' values too: an application's Reject and an affiliate's Ban are two
        # forms of the same fields.
        names = sorted({c.name for c in self.controls} | {b for b, _ in self.buttons})
        return f"{self.shape} {names} {sorted(set(self.buttons))}"

    @property
    def typed(self) -> list[Control]:
        return [c for c in self.controls if c.kind in TYPED]

    def first(self) -> list[Control]:
        """Each field once (a basket's lines repeat theirs)."""
        seen: dict[str, Control] = {}
        for control in self.controls:
            seen.setdefault(control.name, control)
        return list(seen.values())


class PostForms(HTMLParser):
    """The POST forms of a page, each with its controls as the page fills them."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._select: Control | None = None
        self._textarea: Control | None = None
        self._option: str | None = None
        self._open: list[tuple[str, dict[str, str]]] = []   # elements open in the form
        self._submits, self._formaction = False, ""

    VOID = {"input", "br", "img", "hr", "meta", "link", "source", "wbr"}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            action = internal(values.get("action") or self.page, self.page)
            if values.get("method", "get").lower() == "post" and action:
                self._form = Form(self.page, action,
                                  "multipart" in values.get("enctype", ""))
                self._open = []
                self._submits, self._formaction = False, ""
            return
        if self._form is None:
            return
        # A browser sends no disabled control, nor any in a disabled fieldset.
        disabled = "disabled" in values or any(t == "fieldset" and "disabled" in a
                                               for t, a in self._open)
        if tag not in self.VOID:
            self._open.append((tag, values))
        if disabled:
            return
        # The rule types a control belongs to (the rule editor shows each type's fields).
        types = [a["data-types"] for _, a in self._open if "data-types" in a]
        if types:
            values["data-types"] = types[-1]
        name = values.get("name")
        kind = values.get("type", "submit" if tag == "button" else "text").lower()
        if tag in ("button", "input") and kind in ("submit", "image"):
            if "formaction" in values:
                # Another address for the same fields (the rule editor's Preview).
                self._formaction = self._formaction or values["formaction"]
                return
            self._submits = True
            if name:
                self._form.buttons.append((name, values.get("value", "")))
        elif tag == "input" and name and name != "_csrf_token" \
                and kind not in ("reset", "button"):
            value = values.get("value", "on" if kind in ("checkbox", "radio") else "")
            if kind in ("checkbox", "radio") and "checked" not in values:
                value = ""
            same = [c for c in self._form.controls if c.name == name]
            if kind == "radio" and same:
                same[0].value = same[0].value or value
                return
            self._form.controls.append(Control(name, kind, value, attrs=values))
        elif tag == "textarea" and name:
            self._textarea = Control(name, "textarea", attrs=values)
            self._form.controls.append(self._textarea)
        elif tag == "select" and name:
            self._select = Control(name, "select", attrs=values)
            self._form.controls.append(self._select)
        elif tag == "option" and self._select is not None:
            self._option = values.get("value")
            if self._option is not None:
                self._select.options.append(self._option)
            if "selected" in values:
                self._select.value = self._option if self._option is not None else "\0"

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea.value += data
        elif self._select is not None and self._option is None and data.strip():
            # An <option> with no value attribute submits its text.
            self._select.options.append(data.strip())
            if self._select.value == "\0":
                self._select.value = data.strip()
            self._option = ""

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break
        if tag == "textarea":
            self._textarea = None
        elif tag == "option":
            self._option = None
        elif tag == "select":
            if self._select is not None and not self._select.value and self._select.options:
                self._select.value = self._select.options[0]
            self._select = None
        elif tag == "form" and self._form is not None:
            if not self._submits and self._formaction:
                # Sent only by a button to another address: that is the form's action.
                self._form.action = internal(self._formaction, self.page) or self._form.action
            self.forms.append(self._form)
            self._form = None


def word() -> str:
    """A word where a number belongs, long enough for a password, of letters only (a
    tier code, an event type: any field of a format takes it), new each time (a name
    another form took is no conflict)."""
    return "twelve" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:6])


def garbage(control: Control) -> list[tuple[str, str]]:
    """(what is wrong, the value) for one field."""
    if control.kind == "number":
        return [("negative", "-1"), ("huge", HUGE), ("not a number", word())]
    if control.kind in DATES:
        return [("malformed date", "2024-13-45"), ("not a date", "soon")]
    if control.kind == "select":
        # A menu of ids (brands, rewards): also an id of the right form it does not offer.
        unknown = [("unknown id", str(uuid.uuid4()))] if any(
            UUID.fullmatch(o) for o in control.options) else []
        return [("invalid choice", "no-such-choice"), *unknown]
    if control.kind == "hidden":
        return [("tampered", "no-such-thing"), ("huge", HUGE)]
    if control.kind in TEXT or control.kind == "textarea":
        # Over-long, but otherwise of the field's form (an address, a link). A field that
        # refuses the word takes a number, and must refuse the numbers too.
        long = {"email": LONG + "@example.com", "url": "https://example.com/" + LONG}
        return [("over-long", long.get(control.kind, LONG)),
                ("not a number", word()), ("negative", "-1"), ("huge", HUGE)]
    return []


@dataclass
class Outcome:
    role: str
    form: Form
    variant: str
    wrong: Control | None
    what: str                      # what is wrong with it ("" for the whole form)
    button: tuple[str, str] | None
    status: int
    body: str
    content_type: str
    changed: list[str]

    @property
    def refused(self) -> bool:
        return 400 <= self.status < 500

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 400

    def __str__(self) -> str:
        button = f" [{self.button[0]}={self.button[1]}]" if self.button else ""
        return (f"{self.role}: POST {self.form.action}{button} (form on {self.form.page})"
                f" with {self.variant}: {self.status}")


# Forms that take no input but their CSRF token: a button that does what it says (log
# out, revoke, remove, archive...). Nothing in them can be wrong; each still gets the
# forged-token variant, which must be refused like any other.
NO_INPUT = {
    "/logout": "logs out",
    "/partner/clients/{id}/rotate": "draws the client a new secret",
    "/partner/clients/{id}/revoke": "revokes the client",
    "/partner/staff/{id}/remove": "removes the staff member",
    "/partner/rewards/{id}/active": "switches the reward on or off",
    "/partner/rules/{id}/archive": "archives the rule",
    "/operator/rules/{id}/archive": "archives the rule",
    "/partner/segments/{id}/delete": "deletes the segment",
    "/operator/segments/{id}/delete": "deletes the segment",
    "/partner/affiliates/creatives/{id}/active": "switches the creative on or off",
    "/member/company/people/{id}/remove": "removes the person from the company",
    "/affiliate/programs/{id}/join": "asks to join the program",
    "/operator/coupons/{id}/active": "switches the coupon offer on or off",
    "/operator/tiers/reevaluate": "re-evaluates every member's tier",
    "/operator/prepaid/{id}/cancel": "cancels the prepaid block",
    "/partner/affiliates/enrollments/{id}": "approves the application (its button says so;"
                                            " rejecting and banning take a reason)",
    "/partner/affiliates/commissions/{id}/release": "releases the held commission",
    "/partner/affiliates/commissions/{id}/reject": "rejects the held commission",
    "/operator/affiliates/commissions/{id}/release": "releases the held commission",
    "/operator/affiliates/commissions/{id}/reject": "rejects the held commission",
    "/member/connections/{id}/revoke": "disconnects the brand's apps",
}


def fresh_email(_: Control) -> str:
    return f"forms-{uuid.uuid4().hex[:10]}@example.com"


def fresh_nip(_: Control) -> str:
    return random_nip()


def last_option(control: Control) -> str:
    return control.options[-1]


SOON = (clock.today(ZoneInfo("Europe/Warsaw")) + timedelta(days=30)).isoformat()
PASSWORD = "a forms test password 12"
IBAN = "PL61 1090 1014 0000 0712 1981 2874"
# Values that make a form valid where the page leaves a required field empty or offers
# none that passes: with them, one wrong field at a time is the only thing wrong (an
# answer that names another field too says an entry here is missing). Addresses are
# fresh each time, as accepted garbage leaves an account behind.
VALID: dict[str, dict[str, str | Callable[[Control], str]]] = {
    "/login": {"email": "nobody@example.com", "password": PASSWORD},
    "/register": {"email": fresh_email, "password": PASSWORD},
    "/affiliate/signup": {"email": fresh_email, "password": PASSWORD, "name": "Ola Forms",
                          "accept_terms": "on", "payout_method": "sepa",
                          "account_holder": "Ola Forms", "iban": IBAN},
    "/partners/apply": {"company_name": "Forms Sp. z o.o.", "legal_form": "sp. z o.o.",
                        "tax_id": fresh_nip, "address": "ul. Lipowa 1, 00-001 Warszawa",
                        "industry": "pharmacy", "contact_name": "Ewa Forms",
                        "contact_email": fresh_email, "settlement_currency": "PLN",
                        "iban": IBAN, "accept_terms": "yes"},
    "/forgot-password": {"email": "nobody@example.com"},
    "/resend-verification": {"email": "nobody@example.com"},
    "/partner/staff": {"email": fresh_email},
    "/member/company/people": {"email": fresh_email},
    "/operator/companies": {"company_name": "Forms Instalacje", "tax_id": fresh_nip,
                            "email": fresh_email, "admin_email": fresh_email},
    "/partner/clients": {"redirect_uris": "https://app.example/callback"},
    "/partner/payouts": {"method": "sepa", "account_holder": "Forms Sp. z o.o.",
                         "iban": IBAN},
    "/partner/rewards": {"name": "Forms voucher", "percent": "10", "price_points": "100"},
    "/partner/rules": {"name": "Forms rule", "points": "1", "per": "1.00"},
    "/operator/rules": {"name": "Forms rule", "points": "1", "per": "1.00"},
    "/partner/segments": {"name": "Forms segment"},
    "/operator/segments": {"name": "Forms segment"},
    "/partner/affiliates": {"name": lambda _: f"Forms program {uuid.uuid4().hex[:6]}",
                            "landing_url": "https://shop.example/forms"},
    "/partner/affiliates/programs/{id}/creatives": {"title": "Forms post",
                                                     "text": "Polecam!"},
    # The coupon is another brand's reward: the last brand's purchase gives the first's.
    "/operator/coupons": {"name": "Forms coupon", "min_total": "200",
                          "source_partner_id": last_option},
    # The ladder's two empty rows, filled but for their code (a row without one is
    # dropped): a code typed there is then all that is wrong. Thresholds no one reaches.
    "/operator/tiers": {"name_2": "Forms", "threshold_2": "90000000", "name_3": "Forms",
                        "threshold_3": "95000000"},
    "/operator/fx-rates": {"quote": "EUR", "rate": "0.23", "effective_from": SOON},
    "/operator/rate-cards/{id}": {"issue_price": "1.0", "reimbursement": "0.8"},
    # A member below the top tier, lifted to it.
    "/operator/tiers/assign": {"member": KRZYSZTOF, "tier": last_option, "until": SOON,
                               "reason": "Forms test"},
    "/operator/tiers/end": {"member": KRZYSZTOF},
    # Its discovery document is read from the issuer: a loopback port nothing answers on
    # (no request leaves the machine), so the form is refused for its issuer, always.
    "/partner/sso": {"issuer": "http://127.0.0.1:9/sso", "client_id": "forms",
                     "client_secret": "forms secret"},
    # Forms of the states tests/portal_states.py sets up.
    "/partner/statements/{id}/disputes": {"comment": "Forms test: this line looks wrong"},
    "/operator/settlement/{id}/disputes": {"resolution": "Forms test"},
}
# Forms whose answers cannot name the wrong field here, and why.
NOT_NAMED = {"/partner/sso": "its issuer is never reachable here (see VALID): every answer"
                             " is about the issuer"}
# Fields a form takes but does not read, and why: their wrong values may be accepted.
NOT_READ = {
    shape: {"sample_": "the sample basket feeds the preview, not the rule",
            "line_": "the sample basket feeds the preview, not the rule"}
    for shape in ("/partner/rules", "/partner/rules/{id}", "/operator/rules",
                  "/operator/rules/{id}")}


def form_data(form: Form, csrf: str, overrides: dict[str, str],
              button: tuple[str, str] | None) -> list[tuple[str, str]]:
    """What the browser sends: the page's values, VALID's where given, `overrides` for
    each field's first occurrence, and the button pressed."""
    valid = VALID.get(form.shape, {})
    data = [("_csrf_token", csrf)]
    done: set[str] = set()
    for control in form.controls:
        if control.kind == "file" or (control.kind in ("checkbox", "radio")
                                      and not control.value and control.name not in valid):
            continue
        value = valid.get(control.name, control.value)
        if callable(value):
            value = value(control)
        if control.name in overrides and control.name not in done:
            value = overrides[control.name]
            done.add(control.name)
        data.append((control.name, value))
    data.extend((name, value) for name, value in overrides.items()
                if name not in done and name not in {c.name for c in form.controls})
    if button is not None:
        data.append(button)
    return data


async def try_form(browser: httpx.AsyncClient, conn: asyncpg.Connection, role: Role,
                   form: Form, outcomes: list[Outcome], renew: Renew | None = None) -> None:
    """Every variant (below) of the form; with `renew`, the form is a fresh one of its
    kind at first (another form may have used up the one its page showed: the accept and
    the reject form of one dispute) and again after each variant that used it up
    (accepted, and written)."""

    async def renewed(form: Form) -> Form:
        assert renew is not None
        page, shown = await renew(browser, form)
        parser = PostForms(page)
        parser.feed(shown.text)
        fresh = [f for f in parser.forms if f.key == form.key]
        assert fresh, f"no fresh {form.key} on {page} ({shown.status_code})"
        return fresh[0]

    if renew is not None:
        form = await renewed(form)
    csrf = csrf_of(await browser.get(form.page))
    buttons: list[tuple[str, str] | None] = list(dict.fromkeys(form.buttons)) or [None]
    variants: list[tuple[str, Control | None, str, dict[str, str],
                         tuple[str, str] | None]] = [
        ("a forged CSRF token", None, "", {"_csrf_token": "forged" + csrf[6:]}, buttons[0])]
    if form.controls:
        for button in buttons:
            if form.typed:
                variants.append(("every typed field empty and a field it lacks", None, "",
                                 {**{c.name: "" for c in form.typed},
                                  "unexpected_field": "x"}, button))
            for control in form.first():
                for what, value in garbage(control):
                    variants.append((f"{control.name} {what}", control, what,
                                     {control.name: value}, button))
    files = {c.name: ("", b"", "application/octet-stream")
             for c in form.controls if c.kind == "file"} if form.multipart else {}
    before = await database_fingerprint(conn)
    for variant, wrong, what, overrides, button in variants:
        data = form_data(form, overrides.pop("_csrf_token", csrf), overrides, button)
        if files:
            response = await browser.post(form.action, data=dict(data), files=files,
                                          headers=BROWSER)
        else:
            response = await browser.post(
                form.action, content=urlencode(data), headers={
                    **BROWSER, "Content-Type": "application/x-www-form-urlencoded"})
        after = await database_fingerprint(conn)
        changed = sorted(t for t in after if after[t] != before.get(t))
        before = after
        outcomes.append(Outcome(role.name, form, variant, wrong, what, button,
                                response.status_code, response.text,
                                response.headers.get("content-type", ""), changed))
        if renew is not None and changed and response.status_code < 400:
            form = await renewed(form)
            before = await database_fingerprint(conn)


# Who submits first: nobody, so that the public forms (log in, sign up, apply) are tried
# as a visitor tries them; the operator last, as its decisions reach every brand.
ORDER = [r for r in ROLES if r.kind is None] + \
    [r for r in ROLES if r.kind not in (None, "operator")] + \
    [r for r in ROLES if r.kind == "operator"]
# The visitor's failed logins count against its address (20 in 15 minutes): its own, so
# that the others still log in.
VISITOR_ADDRESS = ("127.0.0.2", 40000)


async def browser_of(demo: Demo, role: Role) -> httpx.AsyncClient:
    if role.kind is None:
        return httpx.AsyncClient(transport=httpx.ASGITransport(
            app=demo.app, client=VISITOR_ADDRESS), base_url=ORIGIN)
    return await signed_in(demo.app, role)


@dataclass
class Tried:
    outcomes: list[Outcome]
    forms: dict[str, Form]         # key -> the form tried


@pytest.fixture(scope="module")
async def states(portal_demo: Demo) -> States:
    """The demo copy in the states where the forms it never shows appear (tests/
    portal_states.py), before anybody browses it: the sweep then reaches them as it
    reaches every other form."""
    return await set_up(portal_demo)


# Forms only those states show, and who sends them bad input: the first in ORDER whose
# pages show them (the dispute form is the owner's, not the admin's).
STATE_FORMS = {
    "/partner/statements/{id}/disputes": "owner",
    "/operator/settlement/{id}/disputes": "operator",
    "/partner/affiliates/enrollments/{id}": "owner",
    "/partner/affiliates/commissions/{id}/release": "owner",
    "/partner/affiliates/commissions/{id}/reject": "owner",
    "/operator/affiliates/commissions/{id}/release": "operator",
    "/operator/affiliates/commissions/{id}/reject": "operator",
    "/partner/vouchers/consume": "cashier",
    "/operator/payments/{id}/mark": "operator",
    "/operator/payments/acknowledge": "operator",
    "/operator/affiliate-payouts/mark": "operator",
    "/member/connections/{id}/revoke": "member",
    "/oauth/authorize": "member",
}


@pytest.fixture(scope="module")
async def tried(portal_demo: Demo, states: States) -> Tried:
    conn = await asyncpg.connect(portal_demo.url.asyncpg_dsn)
    result = Tried([], {})
    try:
        for role in ORDER:
            role = replace(role, start=role.start + states.starts.get(role.name, ()))
            browser = await browser_of(portal_demo, role)
            try:
                if role.kind == "member":
                    await browser.get(MEMBER_FIRST_VISIT)
                found: list[Form] = []

                def collect(url: str, response: httpx.Response, found=found) -> None:
                    parser = PostForms(url)
                    parser.feed(response.text)
                    found.extend(parser.forms)

                await crawl(browser, role, collect)
                for where, action, fields in states.posted.get(role.name, []):
                    shown = await browser.get(where)
                    answer = await browser.post(action, data={"_csrf_token": csrf_of(shown),
                                                              **fields}, headers=BROWSER)
                    assert answer.status_code == 200, (action, answer.text[:300])
                    collect(where, answer)
                for form in found:
                    if form.key not in result.forms:
                        result.forms[form.key] = form
                        await try_form(browser, conn, role, form, result.outcomes,
                                       states.renew.get(form.shape))
            finally:
                await browser.aclose()
    finally:
        await conn.close()
    return result


class ErrorMarks(HTMLParser):
    """What an answer says is wrong: its error elements (class "error", role "alert", the
    error page's detail), and the fields each names: by data-field, by an id
    "NAME-error" or "error-NAME", by standing in the field's label or right after the
    field, or by the field's name in its words."""

    VOID = {"input", "br", "img", "hr", "meta", "link", "source", "wbr"}

    def __init__(self, names: set[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.names = names
        self.marks: list[tuple[set[str], list[str]]] = []    # (fields named, words)
        # Open elements: (tag, its mark, for a label: its fields and the marks in it).
        self._stack: list[tuple[str, int | None, tuple[set[str], list[int]] | None]] = []
        self._after: str | None = None     # the last field seen, until an element closes

    def _open_marks(self) -> list[int]:
        return [m for _, m, _ in self._stack if m is not None]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag in ("input", "select", "textarea") and values.get("name") in self.names \
                and values.get("type") != "hidden":
            for _, _, label in self._stack:
                if label is not None:
                    label[0].add(values["name"])
            self._after = values["name"]
        if tag in self.VOID:
            return
        mark = None
        if "error" in values.get("class", "").split() or values.get("role") == "alert" \
                or values.get("id") == "error-detail":
            named = {values["data-field"]} if values.get("data-field") else set()
            ident = values.get("id", "")
            # "NAME-error", "error-NAME", or the form's prefix first: "terms-NAME-error".
            named |= {name for name in self.names if ident == f"error-{name}" or (
                f"-{ident}").endswith(f"-{name.replace('.', '-')}-error")}
            if self._after is not None:
                named.add(self._after)
            self.marks.append((named, []))
            mark = len(self.marks) - 1
            for _, _, label in self._stack:
                if label is not None:
                    label[1].append(mark)
        self._stack.append((tag, mark, (set(), []) if tag == "label" else None))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            top, _, label = self._stack.pop()
            if label is not None:
                # A mark in a label names the label's fields, those after it too.
                for index in label[1]:
                    self.marks[index][0].update(label[0])
            if top == tag:
                break
        if tag not in ("label", "span", "strong", "em", "b"):
            self._after = None

    def handle_data(self, data: str) -> None:
        for index in self._open_marks():
            self.marks[index][1].append(data)

    def fields(self) -> set[str]:
        named: set[str] = set()
        for fields, words in self.marks:
            named |= fields
            # In words: "(name)" or "name: what is wrong".
            text = " ".join(words)
            named |= {n for n in self.names if re.search(
                rf"\({re.escape(n)}\)|(?<![\w.\[]){re.escape(n)}\s*:", text)}
        return named

    def said(self) -> str:
        return " | ".join(" ".join(" ".join(w).split()) for _, w in self.marks)[:300]


def named_fields(outcome: Outcome) -> tuple[set[str], str]:
    """The form's fields an error answer names, and what it says."""
    names = {c.name for c in outcome.form.controls}
    if "json" in outcome.content_type:
        body = json.loads(outcome.body)
        fields = {body.get("field")} | {e.get("field") for e in body.get("errors") or []}
        return {f for f in fields if f in names}, str(body.get("detail"))[:300]
    marks = ErrorMarks(names)
    marks.feed(outcome.body)
    return marks.fields(), marks.said()


# Tables a refusal writes by design: a failed login is recorded, for throttling.
WRITES_ON_REFUSAL = {"/login": {"login_attempts"}}

# Each bug this module found, once more on its own: (who, the form's page (or a listing
# and the link to it), the form's action (and the button pressed, as "[name=value]"),
# what is wrong, the answer, the field named). They run in the states the sweep sets up
# (`states`), before it, and write nothing.
REGRESSIONS: list[tuple[str, str | tuple[str, str], str, dict[str, str], int, str | None]] = [
    # Was a 500: the attempt's address did not fit login_attempts.email.
    ("anonymous", "/login", "/login", {"email": LONG + "@example.com"}, 401, None),
    # Were 500s: the name and the address did not fit their columns.
    ("anonymous", "/register", "/register", {"name": LONG}, 400, "name"),
    ("anonymous", "/register", "/register", {"email": LONG + "@example.com"}, 400, "email"),
    ("anonymous", "/partners/apply", "/partners/apply", {"contact_name": LONG}, 400,
     "contact_name"),
    ("anonymous", "/partners/apply", "/partners/apply",
     {"contact_email": LONG + "@example.com"}, 400, "contact_email"),
    ("anonymous", "/partners/apply", "/partners/apply",
     {"website": "https://example.com/" + LONG}, 400, "website"),
    # Was a 500 after the invitation was written (an empty address the mail server
    # refused); a malformed address was invited; an over-long name was a 500.
    ("owner", "/partner/staff", "/partner/staff", {"email": ""}, 400, "email"),
    ("owner", "/partner/staff", "/partner/staff", {"email": "-1"}, 400, "email"),
    ("owner", "/partner/staff", "/partner/staff", {"name": LONG}, 400, "name"),
    ("company", "/member/company", "/member/company/people", {"name": LONG}, 400, "name"),
    # A role the form does not offer was a 403 ("you cannot grant this role").
    ("owner", "/partner/staff", "/partner/staff", {"role": "boss"}, 400, "role"),
    ("owner", "/partner/staff", "/partner/staff/{id}/role", {"role": "boss"}, 400, "role"),
    # Were 500s: the column is shorter than what the check let through.
    ("owner", "/partner/payouts", "/partner/payouts",
     {"billing_email": LONG + "@example.com"}, 400, "billing_email"),
    ("owner", "/partner/payouts", "/partner/payouts",
     {"method": "stripe_connect", "stripe_account_id": "acct_" + LONG}, 400,
     "stripe_account_id"),
    # A sample basket the preview could not run was answered 200; a negative or huge
    # unit price was priced.
    ("owner", "/partner/rules/preview", "/partner/rules/preview",
     {"sample_date": "2024-13-45"}, 422, "sample_date"),
    ("owner", "/partner/rules/preview", "/partner/rules/preview",
     {"line_unit_price": "-1"}, 422, "line_unit_price"),
    ("owner", "/partner/rules/preview", "/partner/rules/preview",
     {"line_unit_price": HUGE}, 422, "line_unit_price"),
    # A choice the menu does not offer was taken as "the first purchase only".
    ("owner", ("/partner/affiliates", r"/partner/affiliates/programs/[0-9a-f-]{36}"),
     "/partner/affiliates/programs/{id}/terms", {"recurring": "sometimes"}, 422,
     "recurring"),
    # The error was shown, but next to no field.
    ("owner", "/partner/rewards", "/partner/rewards", {"description": LONG}, 400,
     "description"),
    ("owner", "/partner/vouchers", "/partner/vouchers", {"code": "NO-SUCH-CODE"}, 404,
     "code"),
    # The first admin's address was reported as the company's (field "email").
    ("operator", "/operator/companies", "/operator/companies", {"admin_email": "nope"}, 400,
     "admin_email"),
    # Were 500s: beyond bigint, and a brand that does not exist (a foreign key).
    ("operator", "/operator/prepaid", "/operator/prepaid/{id}/paid", {"amount_paid": HUGE},
     422, "amount_paid"),
    ("operator", "/operator/coupons", "/operator/coupons", {"min_total": HUGE}, 400,
     "min_total"),
    ("operator", "/operator/coupons", "/operator/coupons",
     {"source_partner_id": "00000000-0000-4000-8000-000000000000"}, 400,
     "source_partner_id"),
    # Named the API's path (tiers[0].code), not the input the operator typed in.
    ("operator", "/operator/tiers", "/operator/tiers", {"code_0": "Not A Code"}, 400,
     "code_0"),
    # A decision refused was a redirect with the error in the address, not a 4xx.
    ("operator", ("/operator/partners", r"/operator/partners/[0-9a-f-]{36}"),
     "/operator/partners/{id}/decision", {"decision": "suspend", "note": ""}, 400, "note"),
    # Found in the states of tests/portal_states.py. Were 500s: an id beyond bigint.
    ("operator", "/operator/payments", "/operator/payments/acknowledge", {"id": HUGE}, 400,
     None),
    ("operator", "/operator/affiliate-payouts", "/operator/affiliate-payouts/mark",
     {"payout_id": HUGE}, 400, "payout_id"),
    ("operator", ("/operator/settlement", r"/operator/settlement/\d+"),
     "/operator/settlement/{id}/disputes", {"dispute_id": HUGE, "resolution": "Forms"}, 404,
     None),
    # Was a 500: an adjustment beyond bigint (now beyond the API's ceiling on amounts).
    ("operator", ("/operator/settlement", r"/operator/settlement/\d+"),
     "/operator/settlement/{id}/disputes", {"adjustment": HUGE, "resolution": "Forms"}, 422,
     "adjustment"),
    # A decision neither button sends was taken as a rejection.
    ("operator", ("/operator/settlement", r"/operator/settlement/\d+"),
     "/operator/settlement/{id}/disputes", {"decision": "maybe", "resolution": "Forms"}, 400,
     "decision"),
    # A ban without its reason was refused, but next to no field.
    ("owner", ("/partner/affiliates", r"/partner/affiliates/programs/[0-9a-f-]{36}"),
     "/partner/affiliates/enrollments/{id} [action=ban]", {"reason": ""}, 422, "reason"),
]


@pytest.mark.parametrize(("who", "where", "action", "wrong", "status", "named"), REGRESSIONS)
async def test_bugs_found_stay_fixed(portal_demo: Demo, states: States, who: str,
                                     where: str | tuple[str, str], action: str,
                                     wrong: dict[str, str], status: int,
                                     named: str | None) -> None:
    role = next(r for r in ROLES if r.name == who)
    action, _, pressed = action.partition(" [")
    name, _, value = pressed.rstrip("]").partition("=")
    button = (name, value) if pressed else None
    browser = await browser_of(portal_demo, role)
    conn = await asyncpg.connect(portal_demo.url.asyncpg_dsn)
    try:
        if isinstance(where, tuple):
            listing = await browser.get(where[0])
            found = re.search(where[1], listing.text)
            assert found, (where, listing.status_code)
            where = found.group(0)
        page = await browser.get(where)
        parser = PostForms(where)
        parser.feed(page.text)
        form = next(f for f in parser.forms if f.shape == action
                    and (button is None or button in f.buttons))
        before = await database_fingerprint(conn)
        response = await browser.post(form.action, content=urlencode(form_data(
            form, csrf_of(page), wrong, button or (form.buttons or [None])[0])),
            headers={**BROWSER, "Content-Type": "application/x-www-form-urlencoded"})
        after = await database_fingerprint(conn)
    finally:
        await conn.close()
        await browser.aclose()
    outcome = Outcome(who, form, str(wrong), None, "", None, response.status_code,
                      response.text, response.headers.get("content-type", ""), [])
    assert response.status_code == status, (response.status_code, response.text[:500])
    written = {t for t in after if after[t] != before.get(t)} - WRITES_ON_REFUSAL.get(
        form.shape, set())
    assert not written, written
    if named is not None:
        assert named in named_fields(outcome)[0], named_fields(outcome)


def problems_of(outcomes: list[Outcome], check: Callable[[Outcome], str | bool | None]
                ) -> str:
    """Each outcome `check` finds wrong, with what it found; empty when none is."""
    return "\n".join(f"{o}: {message}" for o in outcomes if (message := check(o)))


async def test_no_form_fails(tried: Tried) -> None:
    assert len(tried.forms) >= 60, sorted(tried.forms)
    failed = problems_of(tried.outcomes, lambda o: o.status >= 500 and "a server error")
    assert not failed, failed


async def test_a_forged_csrf_token_is_refused_and_changes_nothing(tried: Tried) -> None:
    found = problems_of([o for o in tried.outcomes if o.variant == "a forged CSRF token"],
                        lambda o: (o.status != 403 or o.changed) and f"changed {o.changed}")
    assert not found, found


async def test_a_refusal_changes_nothing(tried: Tried) -> None:
    def wrote(o: Outcome) -> str | None:
        written = set(o.changed) - WRITES_ON_REFUSAL.get(o.form.shape, set())
        return o.refused and written and f"refused, yet wrote {sorted(written)}"
    found = problems_of(tried.outcomes, wrote)
    assert not found, found


async def test_a_refusal_names_the_wrong_field(tried: Tried) -> None:
    """Where one field a person fills in is wrong, the answer says which, and only that
    one: naming others too means the form was not validly filled (see VALID)."""
    def unnamed(o: Outcome) -> str | None:
        if o.wrong is None or o.wrong.kind == "hidden" or o.form.shape in NOT_NAMED:
            return None
        if o.status == 403:
            return "refused as not allowed: a wrong value is a 400 that names its field"
        # A refusal of the credentials (401: a failed login never says which of the two
        # was wrong), for the state things are in (409) or for asking too often (429) is
        # not about a field.
        if o.status in (401, 409, 429):
            return None
        if not o.refused:
            named, said = named_fields(o) if o.status == 200 else (set(), "")
            return o.wrong.name in named and f"refused with {o.status}, not a 4xx: {said}"
        named, said = named_fields(o)
        if o.wrong.name not in named:
            return f"does not name {o.wrong.name}: {said or o.body[:200]!r}"
        if others := named - {o.wrong.name}:
            return f"also names {sorted(others)} (fill them in VALID): {said}"
        return None
    found = problems_of(tried.outcomes, unnamed)
    assert not found, found


def read(form: Form, control: Control) -> bool:
    """Whether the form's handler reads the field: not one of NOT_READ, nor a field of
    another rule type than the one the form sends."""
    if any(control.name.startswith(p) for p in NOT_READ.get(form.shape, {})):
        return False
    kind = next((c.value for c in form.controls if c.name == "type"), None)
    types = control.attrs.get("data-types")
    return types is None or kind in types.split()


async def test_impossible_numbers_dates_and_choices_are_refused(tried: Tried) -> None:
    """Free text may take anything; a number field (or a text field that refuses a word
    where a number belongs) refuses negative and huge numbers, a date field a date that
    is none, a menu a choice it does not offer."""
    numeric = {(o.form.key, o.wrong.name) for o in tried.outcomes
               if o.wrong is not None and o.what == "not a number" and o.refused
               and o.wrong.name in named_fields(o)[0]}

    def accepted(o: Outcome) -> str | None:
        if o.wrong is None or not o.accepted or o.wrong.kind == "hidden" \
                or not read(o.form, o.wrong):
            return None
        if o.what in ("malformed date", "not a date", "invalid choice"):
            return f"accepted {o.what}"
        if o.what == "unknown id":
            return "accepted an id the menu does not offer"
        number = o.wrong.kind == "number" or (o.form.key, o.wrong.name) in numeric
        if number and o.what in ("huge", "not a number"):
            return f"accepted a {o.what} number"
        if number and o.what == "negative" and not o.wrong.attrs.get("min", "0").startswith(
                "-"):
            return "accepted a negative number"
        return None
    found = problems_of(tried.outcomes, accepted)
    assert not found, found


async def test_forms_of_states_the_demo_never_reaches_are_tried(tried: Tried) -> None:
    by: dict[str, str] = {}
    for o in tried.outcomes:
        by.setdefault(o.form.shape, o.role)
    wrong = {shape: by.get(shape) for shape, role in STATE_FORMS.items() if by.get(shape) != role}
    assert not wrong, f"not tried, or tried by another role than STATE_FORMS says: {wrong}"


async def test_forms_without_input_are_the_listed_ones(tried: Tried) -> None:
    without = {f.shape for f in tried.forms.values() if not f.controls}
    assert without <= set(NO_INPUT), sorted(without - set(NO_INPUT))
