"""States of the demo coalition in which the portal shows forms the demo itself never
does, set up in a copy of it (tests/portal_demo.py) through the platform's own paths (its
service functions, its tracking link and API, its consent page), for
tests/test_portal_forms.py to send those forms bad input:

- the last month's draft run in review (the operator's "Start review"), the other
  brands' lines disputed: Hurtownia's dispute form, the operator's accept and reject;
- Hurtownia's affiliate program taking applications, affiliates applying (some of them
  approved): the approve, reject and ban forms;
- a commission on fraud hold (a purchase reported seconds after a real click on the
  affiliate's link): release and reject, in the partner's and the operator's console;
- vouchers issued for a Hurtownia reward: the till's "use the voucher" form, shown
  once a code is checked;
- the ready affiliate SEPA credits exported in a bank file, one of them bounced: the
  confirmation forms to mark an exported credit paid or failed (on both operator
  pages) and the failed-payment notification to acknowledge;
- a Hurtownia app a member connected through the consent page: the member's
  "disconnect" form and, asked again (prompt=consent), the consent form.

A form that an accepted submission uses up gets a fresh one of its kind for the next
(`States.renew`), but for the two SEPA mark forms: both pages mark the one credit left
exported, and whichever the sweep sends second finds it marked (409). Another exported
credit takes approved commissions past their hold and a payout run that pays them:
not a state to make once per wrong value.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import select

from coalition import clock
from coalition.affiliates import programs
from coalition.affiliates.demo import AFFILIATE_LOGIN, AFFILIATES
from coalition.affiliates.models import Affiliate
from coalition.affiliates.signup import SignupSpec
from coalition.rewards.service import redeem
from settlement import runs, sepa
from settlement import statements as settlement_statements
from tenants.affiliate_signup import sign_up
from tenants.service import create_app_client
from tests.portal import csrf_of
from tests.portal_demo import ORIGIN, ROLES, Demo, signed_in
from web.demo_history import JAN, KRZYSZTOF, MARIA

if TYPE_CHECKING:
    from tests.test_portal_forms import Form

# Instances of a state that a form's accepted submissions use up (disputes, applications,
# vouchers): more than the sweep's wrong values that a form accepts.
FRESH = 10
CALLBACK = "https://sklep.hurtownia.example/oauth/callback"
APP_SCOPES = "openid profile points:read"
# The operator's own bank account, which a bank file pays from (COALITION_SEPA_DEBTOR_*).
DEBTOR = {"sepa_debtor_name": "Coalition Operator Sp. z o.o.",
          "sepa_debtor_iban": "DE89370400440532013000", "sepa_debtor_bic": "COBADEFFXXX"}


# Given the browser and a form that an accepted submission used up (the dispute
# resolved, the application decided, the voucher used), a fresh one of the same kind:
# the page to read it from, and that page as the browser sees it.
Renew = Callable[[httpx.AsyncClient, "Form"], Awaitable[tuple[str, httpx.Response]]]


@dataclass
class States:
    # Pages a role opens besides those it starts from: no page links to them.
    starts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Forms a role posts (page, action, fields) whose answer shows more forms.
    posted: dict[str, list[tuple[str, str, dict[str, str]]]] = field(default_factory=dict)
    # By the form's shape: how to get a fresh one once a submission used it up, so that
    # the wrong values after it meet the state they are about, not a 409.
    renew: dict[str, Renew] = field(default_factory=dict)


async def reread(browser: httpx.AsyncClient, form: Form) -> tuple[str, httpx.Response]:
    """The form's page again: the next of the instances set up shows first."""
    return form.page, await browser.get(form.page)


async def set_up(demo: Demo) -> States:
    states = States()
    app, pool = demo.app, demo.app.state.pool
    partners = dict(await pool.fetch("SELECT slug, id FROM partners"))
    hurtownia = partners["hurtownia"]
    owner = next(r for r in ROLES if r.name == "owner").email or ""

    # Settlement: the draft shown to the partners (the operator's "Start review"), and
    # the other brands' lines disputed as the partner's form does it, for the operator
    # to decide one after another; Hurtownia's lines are left for its owner to dispute.
    async with pool.acquire() as conn:
        period = await conn.fetchval("SELECT period FROM settlement_runs WHERE status = 'draft'")
        assert period, "the demo leaves its last month as a draft"
        await runs.start_review(conn, period)
        lines = await conn.fetch(
            "SELECT l.id, l.partner_id FROM settlement_lines l JOIN settlement_runs r"
            " ON r.id = l.run_id WHERE r.period = $1 ORDER BY l.id", period)
        assert any(line["partner_id"] == hurtownia for line in lines), "Hurtownia's statement"
        others = [line for line in lines if line["partner_id"] != hurtownia]
        assert len(others) >= FRESH, others
        for line in others:
            await settlement_statements.dispute_line(conn, line["partner_id"], line["id"],
                                                     "The points of this line look doubled.",
                                                     "owner")

    async def free_the_line(browser: httpx.AsyncClient, form: Form
                            ) -> tuple[str, httpx.Response]:
        # The owner's form disputed the line it offered first; the operator rejects that
        # dispute, and the line may be disputed again.
        async with pool.acquire() as conn:
            newest = await conn.fetchval("SELECT max(id) FROM settlement_disputes"
                                         " WHERE partner_id = $1 AND status = 'open'", hurtownia)
            if newest is not None:
                await settlement_statements.resolve_dispute(conn, newest, accept=False,
                                                            resolution="Checked: correct.",
                                                            actor="operator")
        return await reread(browser, form)

    states.renew["/partner/statements/{id}/disputes"] = free_the_line
    states.renew["/operator/settlement/{id}/disputes"] = reread

    # Affiliates: Hurtownia's program takes applications; the e-shop applies, and so do
    # new affiliates, some of them approved (to be banned).
    async with app.state.sessionmaker() as session:
        [program] = await programs.partner_programs(session, hurtownia)
        await programs.update_program(session, hurtownia, program.id, programs.ProgramSpec(
            name=program.name, landing_url=program.landing_url, currency=program.currency,
            description=program.description or "", enrollment="application",
            status=program.status))
        applicant = await session.scalar(select(Affiliate.id).where(
            Affiliate.email == AFFILIATES[2].email))
        await programs.join_program(session, applicant, program.id,
                                    "Sprzedajemy narzędzia fachowcom od 2010 roku.")
        for n in range(2 * FRESH):
            affiliate, _ = await sign_up(session, SignupSpec(
                "person", f"Forms Applicant {n}", f"forms-applicant-{n}@example.com",
                "forms applicant password", True))
            enrollment = await programs.join_program(session, affiliate.id, program.id, None)
            if n % 2:
                await programs.decide_enrollment(session, hurtownia, enrollment.id,
                                                 "approve", f"staff:{owner}")
        await session.commit()
    states.renew["/partner/affiliates/enrollments/{id}"] = reread

    visitor = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN)
    async with visitor:
        # A fraud hold: the blogger's link clicked, and the purchase reported by the
        # brand's server at once ("too_soon").
        code = await pool.fetchval(
            "SELECT e.code FROM affiliate_enrollments e JOIN affiliates a"
            " ON a.id = e.affiliate_id WHERE a.email = $1 AND e.partner_id = $2",
            AFFILIATE_LOGIN[0], hurtownia)
        click = await visitor.get(f"/r/{code}")
        click_id = parse_qs(urlsplit(click.headers["location"]).query)["click_id"][0]
        token = await visitor.post("/oauth/token", data={"grant_type": "client_credentials"},
                                   auth=("demo-hurtownia", "demo-secret-hurtownia"))
        assert token.status_code == 200, token.text
        # A buyer the demo never attributed to an affiliate at Hurtownia: the program
        # pays the first attributed purchase only, and which demo purchases carry a
        # click depends on the day the demo is loaded.
        buyer = await pool.fetchval(
            "SELECT l.member_id FROM member_links l JOIN members m ON m.id = l.member_id"
            " WHERE l.partner_id = $1 AND m.kind = 'person' AND m.email <> ALL($2::text[])"
            " AND NOT EXISTS (SELECT 1 FROM affiliate_attributions a"
            " WHERE a.member_id = m.id AND a.partner_id = $1)"
            " ORDER BY m.email LIMIT 1", hurtownia, [JAN, MARIA, KRZYSZTOF])
        bought = await visitor.post("/api/v1/purchases", json={
            "member": {"id": str(buyer)}, "order_id": f"FORMS-{uuid.uuid4().hex[:8]}",
            "occurred_at": clock.now().isoformat(), "total": 12000, "currency": "PLN",
            "channel": "online", "click_id": click_id}, headers={
            "Authorization": f"Bearer {token.json()['access_token']}",
            "Idempotency-Key": uuid.uuid4().hex})
        assert bought.status_code == 201, bought.text
        assert bought.json().get("affiliate_commission", {}).get("status") == "hold", (
            bought.json())
    assert await pool.fetchval("SELECT count(*) FROM affiliate_commissions WHERE status = 'hold'"
                               " AND partner_id = $1", hurtownia) == 1

    # Vouchers: customers of Hurtownia's (not the named members, whose balances the demo
    # promises) redeem its cheapest reward, as on the member's catalogue page; the
    # cashier checks one code after another.
    codes = []
    async with pool.acquire() as conn:
        reward = await conn.fetchrow("SELECT id, price_points FROM rewards WHERE partner_id"
                                     " = $1 AND listed ORDER BY price_points LIMIT 1", hurtownia)
        for _ in range(FRESH):
            customer = await conn.fetchval(
                "SELECT a.member_id FROM accounts a JOIN members m ON m.id = a.member_id"
                " WHERE a.balance >= $1 AND m.kind = 'person' AND m.email <> ALL($2::text[])"
                " ORDER BY a.balance DESC, m.email LIMIT 1", reward["price_points"],
                [JAN, MARIA, KRZYSZTOF])
            done = await redeem(conn, reward_id=reward["id"], member_id=customer,
                                actor="member")
            codes.append(done["voucher"]["code"])

    async def next_voucher(browser: httpx.AsyncClient, form: Form
                           ) -> tuple[str, httpx.Response]:
        till = await browser.get("/partner/vouchers")
        return "/partner/vouchers", await browser.post("/partner/vouchers", data={
            "_csrf_token": csrf_of(till), "code": codes.pop()})

    states.posted["cashier"] = [("/partner/vouchers", "/partner/vouchers",
                                 {"code": codes.pop()})]
    states.renew["/partner/vouchers/consume"] = next_voucher

    # The bank file of the ready affiliate credits (from the operator's account), and the
    # bank's answer for one of them: bounced, which notifies the operators.
    batch = await sepa.export_ready(pool, app.state.settings.model_copy(update=DEBTOR), "PLN",
                                    "operator")
    assert len(batch.payments) >= 2, batch.payments
    await sepa.mark(pool, batch.payments[0], "failed", "AC04 account closed")
    assert await pool.fetchval("SELECT count(*) FROM operator_notifications"
                               " WHERE acknowledged_at IS NULL")

    # A member connects Hurtownia's app on the consent page; asked again, it shows.
    async with app.state.sessionmaker() as session:
        client, _ = await create_app_client(session, hurtownia, "Sklep Hurtowni",
                                            APP_SCOPES.split(), [CALLBACK])
        await session.commit()
    verifier = generate_token(48)
    ask = "/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": client.client_id, "redirect_uri": CALLBACK,
        "scope": APP_SCOPES, "state": "forms", "code_challenge_method": "S256",
        "code_challenge": create_s256_code_challenge(verifier)})
    member = await signed_in(app, next(r for r in ROLES if r.name == "member"))
    try:
        consent = await member.get(ask)
        assert consent.status_code == 200, consent.text[:300]
        allowed = await member.post("/oauth/authorize", data={
            **dict(parse_qs(urlsplit(ask).query)), "_csrf_token": csrf_of(consent),
            "decision": "allow"})
        assert allowed.headers.get("location", "").startswith(CALLBACK + "?code="), (
            allowed.status_code, allowed.text[:300])
    finally:
        await member.aclose()
    states.starts["member"] = (f"{ask}&prompt=consent",)
    return states
