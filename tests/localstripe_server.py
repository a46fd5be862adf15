"""Starts localstripe (the PyPI package, a fake but stateful Stripe server) for the
payment tests: `python tests/localstripe_server.py --port N --from-scratch`.

localstripe 1.15 is run as it is, except for three documented gaps it has, patched here
with localstripe's own classes (its Invoice, InvoiceItem, Event and webhook machinery):

1. It creates invoices only for subscriptions ("No upcoming invoices for customer"). A
   one-off invoice (POST /v1/invoices without a subscription) is made here from the
   customer's pending invoice items by localstripe's own Invoice constructor, and
   accepts Stripe's one-off parameters (collection_method, auto_advance,
   days_until_due), which it keeps as they are.
2. It has no POST /v1/invoices/{id}/finalize and /send: finalize marks the draft open
   (localstripe's own Invoice._finalize) and emits invoice.finalized; send checks the
   invoice is open and returns it (nobody is emailed).
3. Its store pickles itself to the fixed path /tmp/localstripe.pickle on every write,
   which concurrent test runs on one machine would share; with --from-scratch nothing
   is ever read back, so the write is switched off.

Everything else the tests touch (customers, payment methods, charging an invoice
through a PaymentIntent, card declines, events) is localstripe's own behaviour.
Connect transfers are not here at all: localstripe has none, and the tests use a local
HTTP double for POST /v1/transfers only (tests/stripe_fixtures.py).
"""

from __future__ import annotations

from localstripe import resources, server
from localstripe.errors import UserError
from localstripe.resources import Event, Invoice, InvoiceItem, schedule_webhook

_subscription_create = Invoice._api_create.__func__


def _create(cls, customer=None, subscription=None, collection_method=None,
            auto_advance=None, days_until_due=None, pending_invoice_items_behavior=None,
            description=None, metadata=None, **kwargs):
    if subscription is not None:
        return _subscription_create(cls, customer=customer, subscription=subscription,
                                    description=description, metadata=metadata, **kwargs)
    if kwargs:
        raise UserError(400, "Unexpected " + ", ".join(kwargs))
    if collection_method not in (None, "charge_automatically", "send_invoice"):
        raise UserError(400, "Bad collection_method")
    pending = [ii for ii in InvoiceItem._api_list_all(None, customer=customer, limit=99)._list
               if ii.invoice is None]
    if not pending:
        raise UserError(400, "Nothing to invoice for customer")
    invoice = cls(customer=customer, description=description, metadata=metadata)
    invoice.collection_method = collection_method or "charge_automatically"
    invoice.days_until_due = days_until_due
    return invoice


def _finalize(id, auto_advance=None, **kwargs):
    invoice = Invoice._api_retrieve(id)
    if invoice.status != "draft":
        raise UserError(400, "This invoice is already finalized")
    invoice._finalize()
    schedule_webhook(Event("invoice.finalized", invoice))
    return invoice


def _send(id, **kwargs):
    invoice = Invoice._api_retrieve(id)
    if invoice.status != "open":
        raise UserError(400, "Only an open invoice can be sent")
    return invoice


def main() -> None:
    Invoice._api_create = classmethod(_create)
    resources.Store.dump_to_disk = lambda self: None
    for path, func in (("/v1/invoices/{id}/finalize", _finalize),
                       ("/v1/invoices/{id}/send", _send)):
        server.app.router.add_route("POST", path, server.api_extra(func, path))
    server.start()


if __name__ == "__main__":
    main()
