"""Payments in the demo and the tests: localstripe (a stateful fake of the Stripe API, from PyPI) on
loopback, a broker account on the local PDS, and a listener who buys credit and tips through the
same public paths a real client uses (service-auth JWT from their PDS, Stripe.js's calls, tip
records in their own repo)."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import stripe

#: Any ``sk_test_`` key works against localstripe.
TEST_KEY = "sk_test_openmusic"


def start_localstripe(port: int) -> subprocess.Popen:
    """Start localstripe on ``127.0.0.1:port`` and wait until it answers. Raises ``RuntimeError``."""
    proc = subprocess.Popen([sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/customers", auth=(TEST_KEY, ""), timeout=1)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"localstripe did not start on port {port}")


def register_webhook(api_base: str, url: str, secret: str) -> None:
    """Have localstripe deliver its events, signed with ``secret``, to ``url`` (its ``/_config`` API)."""
    httpx.post(f"{api_base}/_config/webhooks/openmusic", data={"url": url, "secret": secret}, timeout=10).raise_for_status()


def pay_with_test_card(api_base: str, payment_intent: str) -> str:
    """What Stripe.js does in the listener's browser: attach a test card (4242...) and confirm the
    PaymentIntent. Returns its status (``succeeded``)."""
    client = stripe.StripeClient(TEST_KEY, base_addresses={"api": api_base})
    pm = client.v1.payment_methods.create(params={"type": "card", "card": {
        "number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}})
    client.v1.payment_intents.update(payment_intent, params={"payment_method": pm.id})
    return client.v1.payment_intents.confirm(payment_intent).status


def card_payment_method(api_base: str, number: str = "4242424242424242") -> str:
    """What Stripe.js's ``createPaymentMethod`` does in the listener's browser: a card PaymentMethod
    (a test card number). Returns its ID."""
    client = stripe.StripeClient(TEST_KEY, base_addresses={"api": api_base})
    return client.v1.payment_methods.create(params={"type": "card", "card": {
        "number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}).id


def create_monthly_price(api_base: str, price_id: str, amount: int, currency: str, name: str) -> str:
    """A monthly recurring price on the Stripe account (a Plan: localstripe has no Prices; Stripe
    accepts a plan ID wherever subscriptions take a price). Returns its ID; an existing one is kept."""
    client = stripe.StripeClient(TEST_KEY, base_addresses={"api": api_base})
    try:
        return client.v1.plans.retrieve(price_id).id
    except stripe.InvalidRequestError:
        return client.v1.plans.create(params={"id": price_id, "amount": amount, "currency": currency.lower(),
                                              "interval": "month", "product": {"name": name}}).id
