"""Payments in the demo and the tests: localstripe (a stateful fake of the Stripe API, from PyPI) on
loopback, a broker account on the local PDS, and a listener who buys credit and tips through the
same public paths a real client uses (service-auth JWT from their PDS, Stripe.js's calls, tip
records in their own repo)."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime

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


async def demo_subscription_and_payout(rt, net, result) -> tuple[str, dict]:
    """Part 2 of the demo's money story. Sam subscribes to Plus (card collected the Stripe.js way,
    service-auth JWT from Sam's PDS) and plays two of Aurora Tide's songs in full: paid streams.
    The demo then closes Sam's billing month early (its clock jumps past the period's end), Aurora
    onboards a Connect payout account (the stub's onboarding page), and ``payouts run`` pays her.
    Returns the payout record's AT-URI (in the broker's repo) and Aurora's getEarnings."""
    import asyncio

    from core.publish import PdsClient, record_play
    from payments import period

    s = rt.settings
    sam = await asyncio.to_thread(PdsClient, net.pds_url, "sam-hears.test", "demo-password-1234")
    aurora = await asyncio.to_thread(PdsClient, net.pds_url, "aurora-tide.test", "demo-password-1234")
    async with httpx.AsyncClient(base_url=s.base_url, timeout=30) as http:
        async def call(client, nsid: str, body: dict | None = None, **params) -> dict:
            token = await asyncio.to_thread(client.service_auth, rt.payments.service_did, nsid)
            headers = {"authorization": f"Bearer {token}"}
            resp = await (http.post(f"/xrpc/{nsid}", json=body, headers=headers) if body is not None
                          else http.get(f"/xrpc/{nsid}", params=params, headers=headers))
            resp.raise_for_status()
            return resp.json()

        pm = await asyncio.to_thread(card_payment_method, s.stripe_api_base)
        sub = await call(sam, "fm.openmusic.payment.createSubscription", {"tier": "plus", "paymentMethod": pm})
        songs = [t for t in result.tracks if t.uri.startswith(f"at://{aurora.did}/")][:2]
        for song in songs:
            cur = await rt.reader.execute("SELECT duration_ms FROM track WHERE uri = ?", (song.uri,))
            (duration,) = await cur.fetchone()
            await asyncio.to_thread(record_play, sam, song, duration, completed=True)
        for _ in range(200):
            cur = await rt.reader.execute("SELECT COUNT(*) FROM play WHERE did = ? AND paid = 1", (sam.did,))
            if (await cur.fetchone())[0] >= len(songs):
                break
            await asyncio.sleep(0.1)
        end = int(datetime.fromisoformat(sub["currentPeriodEnd"].replace("Z", "+00:00")).timestamp())
        await rt.indexer.transact(period.close_period, sub["currentPeriodStart"][:7], s.platform_share_bps,
                                  rt.payments.broker.salt, period.iso(end + 1))
        link = await call(aurora, "fm.openmusic.payment.createPayoutAccountLink", {})
        done = await http.get(link["url"])  # Aurora completes onboarding; Stripe sends her back (303)
        if done.is_error:
            done.raise_for_status()
        await rt.payments.run_payouts()
        rows = await rt.indexer.sql("SELECT rkey FROM payout WHERE did = ? AND status = 'paid'", (aurora.did,))
        uri = f"at://{rt.payments.broker.did}/fm.openmusic.payment.payout/{rows[0][0]}" if rows else ""
        for _ in range(200):
            if not rows or (await rt.indexer.sql("SELECT published_cid FROM broker_outbox WHERE rkey = ?",
                                                 (rows[0][0],)))[0][0]:
                break
            await asyncio.sleep(0.1)
        return uri, await call(aurora, "fm.openmusic.payment.getEarnings", limit=20)


def explain(earnings: dict) -> list[str]:
    """Human lines for a ``getEarnings`` answer (the demo banner and ``openmusic payouts explain``)."""
    cur = earnings["currency"]
    out = [f"{earnings['artist']}: earned {earnings['total']} ({cur} minor units) = subscriptions "
           f"{earnings['bySource']['subscriptions']} + ads {earnings['bySource']['ads']} + tips "
           f"{earnings['bySource']['tips']}; not paid out yet: {earnings['balance']}"]
    for ln in earnings["lines"]:
        if ln["kind"] in ("subscription", "ads"):
            out.append(f"  {ln['period']} {ln['kind']:12} {ln['amount']:+6d}  {ln['track']}: {ln['listenedMs'] / 1000:.0f} s "
                       f"of {ln['poolListenedMs'] / 1000:.0f} s heard x {ln['shareBps'] / 100:.0f}% of a pool of "
                       f"{ln['pool']} ({ln['source']})")
        elif ln["kind"] == "payout":
            out.append(f"  {ln['period']} payout       {ln['amount']:+6d}  {ln.get('source', '')}")
        else:
            out.append(f"  {ln['period']} {ln['kind']:12} {ln['amount']:+6d}  {ln.get('source', '')}")
    return out
