"""A local Stripe for the demo and the tests: localstripe (the PyPI package, a fake but
stateful Stripe server) run as a child process, with the gaps it has filled in with
localstripe's own classes.

Stripe itself cannot be reached from a machine without internet, so `coalition run`
starts this sandbox when no Stripe key is configured: the demo's partners are invoiced,
charged and paid out through it, and it delivers signed webhooks to the platform's
`POST /webhooks/stripe` exactly as Stripe does (localstripe's webhook machinery).

What is added to localstripe 1.15, and why:

1. One-off invoices. localstripe invoices only subscriptions ("No upcoming invoices for
   customer"); POST /v1/invoices without a subscription is made here from the customer's
   pending invoice items by localstripe's own Invoice constructor, and accepts Stripe's
   one-off parameters (collection_method, auto_advance, days_until_due).
2. POST /v1/invoices/{id}/finalize (localstripe's own Invoice._finalize, then
   invoice.finalized) and /send (checks the invoice is open; nobody is emailed).
3. Connect transfers, which localstripe lacks: POST/GET /v1/transfers as a localstripe
   resource (stored, listed, `transfer.created` emitted). Any `acct_…` destination is
   accepted: the sandbox has no connected accounts to check against. This is the only
   Stripe endpoint here that is not localstripe's.
4. Its store pickles itself to the fixed path /tmp/localstripe.pickle; here it goes to
   `--store PATH` (the demo keeps it in the data folder so customers survive a restart),
   or nowhere with `--from-scratch` (tests: concurrent runs must not share a file).

Run it: `python -m settlement.stripe_sandbox --port N [--from-scratch | --store PATH]`.
"""

from __future__ import annotations

import argparse
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from localstripe import resources, server
from localstripe.errors import UserError
from localstripe.resources import Event, Invoice, InvoiceItem, StripeObject, schedule_webhook

SANDBOX_KEY = "sk_test_coalition_sandbox"
# Public on purpose: the sandbox holds no real money and is reachable from localhost only.
SANDBOX_WEBHOOK_SECRET = "whsec_coalition_sandbox_signing_secret"  # noqa: S105


@dataclass(frozen=True)
class Sandbox:
    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(port: int | None = None, *, store: Path | None = None, log: Path | None = None,
          key: str = SANDBOX_KEY, timeout: float = 30) -> Sandbox:
    """Start the sandbox on 127.0.0.1:`port` (a free one by default) and wait until it
    answers. Its log (one line per request) goes to `log`, or is discarded."""
    port = port or free_port()
    args = [sys.executable, "-m", "settlement.stripe_sandbox", "--port", str(port)]
    args += ["--store", str(store)] if store else ["--from-scratch"]
    # A file, never a pipe nobody reads: a full pipe would stall the server.
    output = open(log, "ab") if log else tempfile.TemporaryFile()  # noqa: SIM115
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL,  # noqa: S603 (fixed argv)
                               stderr=output)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/v1/balance", auth=(key, ""), timeout=1).is_success:
                return Sandbox(url, process)
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output.seek(0)
            detail = output.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"the Stripe sandbox did not start: {detail or 'timeout'}")
        time.sleep(0.1)


def deliver_webhooks(url: str, endpoint: str, secret: str = SANDBOX_WEBHOOK_SECRET,
                     key: str = SANDBOX_KEY) -> None:
    """Have the sandbox POST every event to `endpoint`, signed with `secret`."""
    httpx.post(f"{url}/_config/webhooks/coalition", auth=(key, ""),
               data={"url": endpoint, "secret": secret}, timeout=5).raise_for_status()


class Transfer(StripeObject):
    object = "transfer"
    _id_prefix = "tr_"

    def __init__(self, amount=None, currency=None, destination=None, transfer_group=None,
                 description=None, metadata=None, **kwargs):
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs))
        try:
            amount = int(amount)
        except (TypeError, ValueError):
            raise UserError(400, "Bad amount") from None
        if amount <= 0 or not (isinstance(currency, str) and len(currency) == 3):
            raise UserError(400, "Bad amount or currency")
        if not (isinstance(destination, str) and destination.startswith("acct_")):
            raise UserError(400, f"No such destination: '{destination}'")
        super().__init__()
        self.amount, self.amount_reversed, self.reversed = amount, 0, False
        self.currency, self.destination = currency.lower(), destination
        self.transfer_group, self.description = transfer_group, description
        self.metadata = metadata or {}
        schedule_webhook(Event("transfer.created", self))


def _patch(store_path: Path | None) -> None:
    subscription_create = Invoice._api_create.__func__

    def create_invoice(cls, customer=None, subscription=None, collection_method=None,
                       auto_advance=None, days_until_due=None,
                       pending_invoice_items_behavior=None, description=None, metadata=None,
                       **kwargs):
        if subscription is not None:
            return subscription_create(cls, customer=customer, subscription=subscription,
                                       description=description, metadata=metadata, **kwargs)
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs))
        if collection_method not in (None, "charge_automatically", "send_invoice"):
            raise UserError(400, "Bad collection_method")
        pending = [ii for ii in InvoiceItem._api_list_all(None, customer=customer,
                                                          limit=99)._list
                   if ii.invoice is None]
        if not pending:
            raise UserError(400, "Nothing to invoice for customer")
        invoice = cls(customer=customer, description=description, metadata=metadata)
        invoice.collection_method = collection_method or "charge_automatically"
        invoice.days_until_due = days_until_due
        return invoice

    def finalize(id, auto_advance=None, **kwargs):
        invoice = Invoice._api_retrieve(id)
        if invoice.status != "draft":
            raise UserError(400, "This invoice is already finalized")
        invoice._finalize()
        schedule_webhook(Event("invoice.finalized", invoice))
        return invoice

    def send(id, **kwargs):
        invoice = Invoice._api_retrieve(id)
        if invoice.status != "open":
            raise UserError(400, "Only an open invoice can be sent")
        return invoice

    Invoice._api_create = classmethod(create_invoice)
    if store_path is None:
        resources.Store.dump_to_disk = lambda self: None
    else:
        def dump(self) -> None:
            with open(store_path, "wb") as f:
                pickle.dump(dict(self), f, protocol=pickle.HIGHEST_PROTOCOL)

        resources.Store.dump_to_disk = dump
        if store_path.exists():
            with open(store_path, "rb") as f:
                # Our own file in the data folder, written by dump() above.
                dict.update(resources.store, pickle.load(f))  # noqa: S301
    routes = [("POST", "/v1/invoices/{id}/finalize", server.api_extra(finalize, "")),
              ("POST", "/v1/invoices/{id}/send", server.api_extra(send, "")),
              ("POST", "/v1/transfers", server.api_create(Transfer, "/v1/transfers")),
              ("GET", "/v1/transfers/{id}", server.api_retrieve(Transfer, "")),
              ("GET", "/v1/transfers", server.api_list_all(Transfer, "/v1/transfers"))]
    for method, path, handler in routes:
        server.app.router.add_route(method, path, handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--from-scratch", action="store_true")
    args = parser.parse_args()
    _patch(None if args.from_scratch else args.store)
    # localstripe's own start() parses --port/--from-scratch again; the store is loaded
    # above, so it always starts "from scratch" here.
    sys.argv = [sys.argv[0], "--port", str(args.port), "--from-scratch"]
    server.start()


if __name__ == "__main__":
    main()
