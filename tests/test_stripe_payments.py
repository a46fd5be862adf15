"""Stripe payments against a real localstripe process: customers and invoices end to end,
Connect transfers against the local transfer double, webhooks signed as Stripe signs
them (replays, out-of-order events, bad signatures), failure notifications, SEPA batches,
the payout details page and the partner's payments API."""
# The fixtures are imported from tests/stripe_fixtures.py, so the test parameters that
# name them shadow the imports by design.
# ruff: noqa: F811

from __future__ import annotations

import json
import uuid
from datetime import date
from decimal import Decimal
from xml.etree import ElementTree

import pytest

from coalition.errors import DomainError
from settlement import payout_details, sepa
from settlement.payment_hooks import on_payment_change, remove_hook
from settlement.stripe_gateway import NotConfigured
from settlement.webhooks import replay_waiting_events
from tests.helpers import new_partner
from tests.portal import csrf_of, owner_browser
from tests.stripe_fixtures import (  # noqa: F401  (fixtures)
    connect_double,
    event,
    give_card,
    localstripe,
    post_event,
    sign,
    stripe_api,
    stripe_app,
    stripe_client,
    stripe_time,
)
from tests.test_tier_pages import new_login

LINES = [("Points issued: 12,345 at 1.000000", 12345), ("Points redeemed: credit", -2345),
         ("Platform fee", 500)]


def ref() -> tuple[str, str]:
    return ("statement", uuid.uuid4().hex[:12])


async def partner_with_card(stripe_client, stripe_api, number="4242424242424242"):
    partner = await new_partner(stripe_client, "Stripe Brand")
    gateway = stripe_client.app.state.stripe
    customer = await gateway.ensure_customer(partner.partner_id)
    assert await gateway.ensure_customer(partner.partner_id) == customer   # stored once
    await give_card(stripe_api, customer, number)
    return partner, customer


async def test_invoice_is_created_finalized_and_charged_once(stripe_client, stripe_api, db):
    partner, customer = await partner_with_card(stripe_client, stripe_api)
    gateway = stripe_client.app.state.stripe
    seen = []

    @on_payment_change("statement")
    async def record(conn, change):
        seen.append((change.old_status, change.new_status, change.reference_id))

    reference = ref()
    try:
        payment = await gateway.invoice_partner(partner.partner_id, reference, LINES, "PLN")
        again = await gateway.invoice_partner(partner.partner_id, reference, LINES, "PLN")
    finally:
        remove_hook("statement", record)
    assert (payment["status"], payment["amount"], payment["amount_paid"]) == \
        ("paid", 10500, 10500)
    assert again["id"] == payment["id"] and again["stripe_object_id"] == \
        payment["stripe_object_id"]
    assert seen == [(None, "open", reference[1]), ("open", "paid", reference[1])]
    invoice = await stripe_api.v1.invoices.retrieve_async(payment["stripe_object_id"])
    assert (invoice.status, invoice.amount_paid, invoice.currency) == ("paid", 10500, "pln")
    assert sorted(line.amount for line in invoice.lines.data) == [-2345, 500, 12345]
    invoices = await stripe_api.v1.invoices.list_async({"customer": customer})
    assert len(invoices.data) == 1   # the retry charged nothing twice
    # A different amount for the same reference is refused.
    with pytest.raises(DomainError) as refused:
        await gateway.invoice_partner(partner.partner_id, reference, LINES[:1], "PLN")
    assert refused.value.slug == "payment-reference-taken"
    # Bad lines name the field; nothing is written.
    for lines, field in (([], "lines"), ([("x", 10.5)], "lines[0].amount"),
                         ([("", 10)], "lines[0].description"), ([("x", -5)], "lines")):
        with pytest.raises(DomainError) as bad:
            await gateway.invoice_partner(partner.partner_id, ref(), lines, "PLN")
        assert bad.value.field == field
    # The webhook for the payment Stripe already reported changes nothing.
    response = await post_event(stripe_client, event("invoice.paid", invoice.to_dict()))
    assert response.json()["outcome"] == "unchanged"


async def test_sent_invoice_paid_later_by_webhook(stripe_client, stripe_api, db):
    partner, _ = await partner_with_card(stripe_client, stripe_api)
    gateway = stripe_client.app.state.stripe
    payment = await gateway.invoice_partner(partner.partner_id, ref(), LINES, "PLN",
                                            collection="send_invoice")
    assert payment["status"] == "open" and payment["collection"] == "send_invoice"
    invoice = await stripe_api.v1.invoices.retrieve_async(payment["stripe_object_id"])
    assert (invoice.status, invoice.collection_method) == ("open", "send_invoice")
    paid = {**invoice.to_dict(), "status": "paid", "amount_paid": 10500}
    response = await post_event(stripe_client, event("invoice.paid", paid))
    assert response.status_code == 200 and response.json()["outcome"] == "applied"
    row = await db.fetchrow("SELECT status, amount_paid FROM settlement_payments WHERE id = $1",
                            payment["id"])
    assert tuple(row) == ("paid", 10500)


async def open_invoice(stripe_client, stripe_api) -> tuple[dict, dict]:
    partner, _ = await partner_with_card(stripe_client, stripe_api)
    payment = await stripe_client.app.state.stripe.invoice_partner(
        partner.partner_id, ref(), LINES, "PLN", collection="send_invoice")
    invoice = (await stripe_api.v1.invoices.retrieve_async(payment["stripe_object_id"]))
    return payment, invoice.to_dict()


async def status_of(db, payment) -> str:
    return await db.fetchval("SELECT status FROM settlement_payments WHERE id = $1",
                             payment["id"])


async def test_events_in_any_order_end_in_the_right_state(stripe_client, stripe_api, db):
    t0 = stripe_time()
    paid_first, obj = await open_invoice(stripe_client, stripe_api)
    paid = {**obj, "status": "paid", "amount_paid": 10500}
    outcomes = []
    for type_, body, at in (("invoice.paid", paid, t0 + 20), ("invoice.finalized", obj, t0 + 5),
                            ("invoice.payment_failed", obj, t0 + 10),
                            ("invoice.voided", obj, t0 + 30)):
        outcomes.append((await post_event(stripe_client, event(type_, body, at))).json()
                        ["outcome"])
    assert outcomes == ["applied", "stale", "stale", "stale"]
    assert await status_of(db, paid_first) == "paid"

    failed_first, obj = await open_invoice(stripe_client, stripe_api)
    paid = {**obj, "status": "paid", "amount_paid": 10500}
    await post_event(stripe_client, event("invoice.payment_failed", obj, t0 + 10))
    assert await status_of(db, failed_first) == "payment_failed"
    await post_event(stripe_client, event("invoice.finalized", obj, t0 + 5))   # older
    assert await status_of(db, failed_first) == "payment_failed"
    await post_event(stripe_client, event("invoice.marked_uncollectible", obj, t0 + 15))
    assert await status_of(db, failed_first) == "uncollectible"
    await post_event(stripe_client, event("invoice.paid", paid, t0 + 20))
    assert await status_of(db, failed_first) == "paid"

    voided, obj = await open_invoice(stripe_client, stripe_api)
    await post_event(stripe_client, event("invoice.voided", obj, t0 + 10))
    await post_event(stripe_client, event("invoice.paid", {**obj, "amount_paid": 1}, t0 + 20))
    assert await status_of(db, voided) == "voided"


async def test_replay_changes_nothing_and_unknown_types_are_stored(stripe_client, stripe_api,
                                                                   db):
    payment, obj = await open_invoice(stripe_client, stripe_api)
    failed = event("invoice.payment_failed", obj)
    first = await post_event(stripe_client, failed)
    replay = await post_event(stripe_client, failed)
    assert first.json() == {"received": True, "duplicate": False, "outcome": "applied"}
    assert replay.status_code == 200
    assert replay.json() == {"received": True, "duplicate": True, "outcome": "applied"}
    assert await db.fetchval("SELECT count(*) FROM operator_notifications WHERE"
                             " payment_id = $1", payment["id"]) == 1
    assert await db.fetchval("SELECT count(*) FROM stripe_events WHERE id = $1",
                             failed["id"]) == 1
    unknown = event("customer.updated", {"id": "cus_whatever", "object": "customer"})
    response = await post_event(stripe_client, unknown)
    assert response.json()["outcome"] == "ignored"
    stored = await db.fetchrow("SELECT type, outcome, processed_at, payload FROM stripe_events"
                               " WHERE id = $1", unknown["id"])
    assert stored["type"] == "customer.updated" and stored["processed_at"] is not None
    assert json.loads(stored["payload"])["data"]["object"]["id"] == "cus_whatever"


async def test_bad_signatures_are_refused_and_store_nothing(stripe_client, db):
    body = json.dumps(event("invoice.paid", {"id": "in_forged", "amount_paid": 1})).encode()
    for signature in (sign(body, "whsec_wrong"), sign(body, timestamp=stripe_time() - 3600),
                      "t=1,v1=00", "", sign(body + b" ")):
        response = await post_event(stripe_client, body, signature)
        assert response.status_code == 400, response.text
        problem = response.json()
        assert problem["type"] == "/problems/invalid-signature"
        assert problem["field"] == "Stripe-Signature"
    assert await db.fetchval("SELECT count(*) FROM stripe_events WHERE payload->'data'"
                             "->'object'->>'id' = 'in_forged'") == 0


async def test_declined_card_then_failure_webhook_notifies_the_operator(
        stripe_client, stripe_api, db, smtp):
    operator, operator_email = await new_login(stripe_client.app, "operator")
    partner, _ = await partner_with_card(stripe_client, stripe_api, "4000000000000341")
    payment = await stripe_client.app.state.stripe.invoice_partner(
        partner.partner_id, ref(), LINES, "PLN")
    # localstripe declines the charge and leaves the invoice open, as Stripe does.
    assert payment["status"] == "open"
    invoice = (await stripe_api.v1.invoices.retrieve_async(payment["stripe_object_id"]))
    assert invoice.status == "open" and invoice.amount_paid == 0
    response = await post_event(stripe_client, event("invoice.payment_failed",
                                                     invoice.to_dict()))
    assert response.json()["outcome"] == "applied"
    assert await status_of(db, payment) == "payment_failed"
    mail = smtp.last_to(operator_email)
    assert "Payment failed: Stripe Brand, 105.00 PLN" in mail["Subject"]
    async with operator:
        page = await operator.get("/operator/payments")
        assert page.status_code == 200 and "Payment failed: Stripe Brand" in page.text
        note = await db.fetchval("SELECT id FROM operator_notifications WHERE payment_id = $1",
                                 payment["id"])
        done = await operator.post("/operator/payments/acknowledge",
                                   data={"_csrf_token": csrf_of(page), "id": str(note)})
        assert done.status_code == 302
        assert await db.fetchval("SELECT acknowledged_by FROM operator_notifications"
                                 " WHERE id = $1", note) == operator_email


async def test_connect_transfer_through_the_local_double(stripe_client, connect_double, db,
                                                         smtp):
    _, double = connect_double
    partner = await new_partner(stripe_client, "Connected Brand")
    gateway = stripe_client.app.state.stripe
    with pytest.raises(DomainError) as missing:
        await gateway.transfer_to_partner(partner.partner_id, ref(), 5000, "PLN")
    assert (missing.value.slug, missing.value.field) == ("payout-details-missing",
                                                         "stripe_account_id")
    account = f"acct_{uuid.uuid4().hex[:16]}"
    double.accounts.add(account)
    await db.execute("INSERT INTO partner_payout_details (partner_id, method, stripe_account_id)"
                     " VALUES ($1, 'stripe_connect', $2)", partner.partner_id, account)
    reference = ref()
    payment = await gateway.transfer_to_partner(partner.partner_id, reference, 5000, "PLN")
    requests = double.requests
    again = await gateway.transfer_to_partner(partner.partner_id, reference, 5000, "PLN")
    assert again["id"] == payment["id"] and double.requests == requests
    transfer = double.transfers[payment["stripe_object_id"]]
    assert (transfer["amount"], transfer["currency"], transfer["destination"]) == \
        (5000, "pln", account)
    assert transfer["transfer_group"] == f"statement:{reference[1]}"
    assert (payment["status"], payment["amount_paid"]) == ("created", 5000)
    created = await post_event(stripe_client, event("transfer.created", transfer))
    assert created.json()["outcome"] == "unchanged"
    reversed_ = {**transfer, "amount_reversed": 5000, "reversed": True}
    response = await post_event(stripe_client, event("transfer.reversed", reversed_))
    assert response.json()["outcome"] == "applied"
    row = await db.fetchrow("SELECT status, amount_paid FROM settlement_payments WHERE id = $1",
                            payment["id"])
    assert tuple(row) == ("reversed", 0)
    assert await db.fetchval("SELECT kind FROM operator_notifications WHERE payment_id = $1",
                             payment["id"]) == "payment.reversed"


async def test_an_event_before_its_payment_is_replayed_when_the_payment_is_stored(
        stripe_client, db):
    partner = await new_partner(stripe_client, "Early Brand")
    object_id = f"in_{uuid.uuid4().hex[:14]}"
    early = event("invoice.paid", {"id": object_id, "amount_paid": 700, "status": "paid"})
    assert (await post_event(stripe_client, early)).json()["outcome"] == "unmatched"
    async with stripe_client.app.state.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO settlement_payments (partner_id, kind, reference_type, reference_id,"
            " amount, currency, status, stripe_object_id) VALUES ($1, 'invoice', 'statement',"
            " $2, 700, 'PLN', 'open', $3)", partner.partner_id, object_id, object_id)
        await replay_waiting_events(conn, object_id)
    assert await db.fetchval("SELECT status FROM settlement_payments WHERE stripe_object_id"
                             " = $1", object_id) == "paid"
    assert await db.fetchval("SELECT outcome FROM stripe_events WHERE id = $1",
                             early["id"]) == "applied"


async def test_without_stripe_settings_payment_actions_name_the_setting(client, partner):
    gateway = client.app.state.stripe
    assert not gateway.configured
    with pytest.raises(NotConfigured) as refused:
        await gateway.invoice_partner(partner.partner_id, ref(), LINES, "PLN")
    assert refused.value.field == "stripe_secret_key"
    assert "COALITION_STRIPE_SECRET_KEY" in refused.value.detail
    response = await client.post("/webhooks/stripe", content=b"{}",
                                 headers={"Stripe-Signature": "t=1,v1=0"})
    assert response.status_code == 409
    assert response.json()["field"] == "stripe_webhook_secret"
    assert "COALITION_STRIPE_WEBHOOK_SECRET" in response.json()["detail"]


async def sepa_partner(stripe_client, name: str, iban: str, bic: str) -> uuid.UUID:
    partner = await new_partner(stripe_client, name)
    values, errors = payout_details.validate({"method": "sepa", "account_holder": name,
                                              "iban": iban, "bic": bic})
    assert not errors
    async with stripe_client.app.state.sessionmaker() as session:
        await payout_details.save(session, partner.partner_id, values, "test")
        await session.commit()
    return partner.partner_id


async def test_sepa_batch_is_valid_pain001_and_marks_payouts_exported(stripe_client, db):
    app = stripe_client.app
    a = await sepa_partner(stripe_client, "Moda Centrum", "PL61 1090 1014 0000 0712 1981 2874",
                           "WBKPPLPP")
    b = await sepa_partner(stripe_client, "Hurtownia Budowlana", "DE89370400440532013000", "")
    first = await sepa.queue_payout(app.state.pool, a, ref(), 123456, "EUR")
    second = await sepa.queue_payout(app.state.pool, b, ref(), 99, "EUR")
    batch = await sepa.export_batch(app.state.pool, app.state.settings,
                                    [first["id"], second["id"]],
                                    date(2026, 12, 1), "op@test")
    ns = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"}
    root = ElementTree.fromstring(batch.xml)
    header = root.find("p:CstmrCdtTrfInitn/p:GrpHdr", ns)
    assert header.findtext("p:NbOfTxs", namespaces=ns) == "2"
    assert Decimal(header.findtext("p:CtrlSum", namespaces=ns)) == Decimal("1235.55")
    amounts = [Decimal(e.text) for e in root.iter("{{{}}}InstdAmt".format(ns["p"]))]
    assert sum(amounts) == Decimal("1235.55") and batch.total == 123555
    ibans = [e.text for e in root.iter("{{{}}}IBAN".format(ns["p"]))]
    assert ibans == ["DE89370400440532013000", "PL61109010140000071219812874",
                     "DE89370400440532013000"]   # debtor, then the two creditors
    assert {r["status"] for r in await db.fetch(
        "SELECT status FROM settlement_payments WHERE id = ANY($1::bigint[])",
        [first["id"], second["id"]])} == {"exported"}
    with pytest.raises(DomainError) as twice:
        await sepa.export_batch(app.state.pool, app.state.settings, [first["id"]],
                                date(2026, 12, 1), "op@test")
    assert twice.value.slug == "payout-not-ready"
    assert await sepa.mark(app.state.pool, first["id"], "paid") == ("applied", None)
    # A misconfigured debtor account is a problem naming the setting.
    bad = app.state.settings.model_copy(update={"sepa_debtor_iban": "DE00370400440532013000"})
    third = await sepa.queue_payout(app.state.pool, b, ref(), 10, "EUR")
    with pytest.raises(DomainError) as debtor:
        await sepa.export_batch(app.state.pool, bad, [third["id"]],
                                date(2026, 12, 1), "op@test")
    assert debtor.value.field == "sepa_debtor_iban"


@pytest.mark.parametrize(("form", "field"), [
    ({"iban": "PL61 1090 1014 0000 0712 1981 2875", "bic": "WBKPPLPP"}, "iban"),
    ({"iban": "PL61 1090 1014 0000 0712 1981 2874", "bic": "COBADEFF"}, "bic"),
    ({"iban": "PL61 1090 1014 0000 0712 1981 2874", "bic": "WBK!PLPP"}, "bic"),
    ({"iban": "PL61 1090 1014 0000 0712 1981 2874", "bic": "WBKPPLPP", "account_holder": ""},
     "account_holder"),
])
def test_bank_details_errors_name_the_field(form, field):
    _values, errors = payout_details.validate({"method": "sepa", "account_holder": "Moda",
                                              **form})
    assert field in errors, errors


async def test_payout_page_and_payments_api_respect_the_partner(stripe_client, stripe_api, db):
    app = stripe_client.app
    browser, partner_id = await owner_browser(app, stripe_client, name="Payout Page Brand")
    async with browser:
        page = await browser.get("/partner/payouts")
        assert page.status_code == 200
        bad = await browser.post("/partner/payouts", data={
            "_csrf_token": csrf_of(page), "method": "sepa", "account_holder": "Payout Brand",
            "iban": "PL61 1090 1014 0000 0712 1981 2875", "bic": "WBKPPLPP"})
        assert bad.status_code == 400 and "Enter a valid IBAN" in bad.text
        assert await db.fetchval("SELECT method FROM partner_payout_details"
                                 " WHERE partner_id = $1", partner_id) is None
        saved = await browser.post("/partner/payouts", data={
            "_csrf_token": csrf_of(page), "method": "stripe_connect",
            "stripe_account_id": "acct_1A2b3C4d5E6f", "billing_email": "billing@brand.example"})
        assert saved.status_code == 302
        assert tuple(await db.fetchrow(
            "SELECT method, stripe_account_id, billing_email FROM partner_payout_details"
            " WHERE partner_id = $1", partner_id)) == ("stripe_connect", "acct_1A2b3C4d5E6f",
                                                       "billing@brand.example")
    mine, _ = await partner_with_card(stripe_client, stripe_api)
    theirs, _ = await partner_with_card(stripe_client, stripe_api)
    gateway = app.state.stripe
    own = await gateway.invoice_partner(mine.partner_id, ref(), LINES, "PLN")
    await gateway.invoice_partner(theirs.partner_id, ref(), LINES, "PLN")
    listed = await mine.get("/api/v1/settlement/payments")
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json()["items"]] == [own["id"]]
    assert listed.json()["items"][0]["amount"] == 10500


async def test_a_prepaid_block_is_invoiced_and_credited_when_the_invoice_is_paid(
        stripe_client, stripe_api, db):
    from settlement import prepaid
    from settlement.terms import add_rate_card

    partner, _ = await partner_with_card(stripe_client, stripe_api)
    app = stripe_client.app
    async with app.state.pool.acquire() as conn:
        await add_rate_card(conn, partner.partner_id, {
            "issue_price": "1.2", "reimbursement": "1.0", "billing": "prepaid"}, "test")
        block = await prepaid.request_block(conn, partner.partner_id, 5000, "test")
    assert block.price == 6000    # 5,000 points at 1.2 grosz
    assert await prepaid.invoice_block(app.state.stripe, block)
    payment = await db.fetchrow("SELECT * FROM settlement_payments WHERE kind = 'prepaid_block'"
                                " AND reference_id = $1", str(block.id))
    assert (payment["amount"], payment["status"]) == (6000, "open")
    invoice = await stripe_api.v1.invoices.retrieve_async(payment["stripe_object_id"])
    assert invoice.amount_due == 6000 and invoice.collection_method == "send_invoice"
    paid = {**invoice.to_dict(), "status": "paid", "amount_paid": 6000}
    response = await post_event(stripe_client, event("invoice.paid", paid))
    assert response.status_code == 200 and response.json()["outcome"] == "applied"
    row = await db.fetchrow("SELECT status, amount_paid FROM prepaid_blocks WHERE id = $1",
                            block.id)
    assert tuple(row) == ("paid", 6000)
    assert await db.fetchval("SELECT available FROM prepaid_balances WHERE partner_id = $1",
                             partner.partner_id) == 5000
    # The same event again changes nothing.
    again = await post_event(stripe_client, event("invoice.paid", paid))
    assert again.status_code == 200
    assert await db.fetchval("SELECT available FROM prepaid_balances WHERE partner_id = $1",
                             partner.partner_id) == 5000
