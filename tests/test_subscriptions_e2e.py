"""Subscriptions end to end on real parts: Stripe Billing is localstripe (customers, payment
methods, plans, subscriptions, invoices, signed webhooks), the network is the reference PDS. A
listener subscribes with a card collected the Stripe.js way; their plays turn into paid streams
from the period's start, the broker attests the subscription with a signed record in its repo,
and cancelling is reflected there too."""

from __future__ import annotations

import asyncio

import httpx

from core.lexicons import SUBSCRIPTION, from_json
from core.publish import record_play
from devkit.demo_payments import card_payment_method
from payments import attest, ledger, period
from payments.broker import did_keys
from payments.records import record_key
from tests.conftest import eventually
from tests.test_e2e import ok, publish_wav
from tests.test_payments_e2e import call

NS = "fm.openmusic.payment."


async def stats(rt, uri: str) -> tuple[int, int]:
    s = await ok(rt, "fm.openmusic.listen.getTrackStats", uri=uri)
    return s["paidStreams"], s["freeStreams"]


async def broker_record(rt, net, did: str) -> dict:
    async with httpx.AsyncClient(base_url=net.pds_url) as pds:
        resp = await pds.get("/xrpc/com.atproto.repo.getRecord", params={
            "repo": rt.payments.broker.did, "collection": SUBSCRIPTION, "rkey": record_key(f"subscription:{did}")})
    return resp.json().get("value") if resp.status_code == 200 else {}


async def test_subscribe_paid_streams_attestation_cancel(paid_appview, make_client, tmp_path, localstripe, net):
    rt = paid_appview
    artist, listener = make_client("subartist"), make_client("subscriber")
    song = publish_wav(artist, tmp_path, 61, "Paid Stream")
    await eventually(lambda: ok(rt, "fm.openmusic.catalog.getTrack", uri=song.uri))
    record_play(listener, song, 2000)  # on the free tier
    await eventually(lambda: stats(rt, song.uri), until=lambda s: s == (0, 1))
    await asyncio.sleep(1.1)  # Stripe periods have 1 s resolution: keep that play before the period

    tiers = (await rt.http_client.get(f"/xrpc/{NS}getTiers")).json()["tiers"]
    assert [(t["id"], t["monthlyPrice"], t["paid"]) for t in tiers] == [("free", 0, False), ("plus", 999, True)]
    assert (await call(rt, listener, f"{NS}getSubscription")).json() == {"did": listener.did, "tier": "free",
                                                                          "status": "none"}
    bad = await call(rt, listener, f"{NS}createSubscription", {"tier": "gold", "paymentMethod": "pm_x"})
    assert bad.status_code == 400 and bad.json()["error"] == "UnknownTier"
    anon = await rt.http_client.post(f"/xrpc/{NS}createSubscription", json={"tier": "plus", "paymentMethod": "pm_x"})
    assert anon.status_code == 401 and anon.json()["error"] == "AuthRequired"

    pm = await asyncio.to_thread(card_payment_method, localstripe)
    resp = await call(rt, listener, f"{NS}createSubscription", {"tier": "plus", "paymentMethod": pm})
    assert resp.status_code == 200, resp.text
    sub = resp.json()
    assert (sub["tier"], sub["status"], sub["cancelAtPeriodEnd"]) == ("plus", "active", False)
    assert sub["currentPeriodEnd"] > sub["currentPeriodStart"]
    again = await call(rt, listener, f"{NS}createSubscription", {"tier": "plus", "paymentMethod": pm})
    assert again.status_code == 409 and again.json()["error"] == "AlreadySubscribed"

    record_play(listener, song, 2000)  # now a paid stream; the earlier one stays free
    record_play(listener, song, 500)  # under half the track: not a stream at all
    await eventually(lambda: stats(rt, song.uri), until=lambda s: s == (1, 1))
    plays = await ok(rt, "fm.openmusic.listen.getTrackStats", uri=song.uri)
    assert plays["plays"] == 3

    # the fee waits in the subscriber's account for the period close; the books balance
    def books(tx):
        return ledger.balance(tx, period.subscription(listener.did), "USD"), ledger.check(tx)
    assert await rt.indexer.run(lambda: books(rt.indexer.conn)) == (999, [])
    # Stripe's own webhooks arrive too (signed, after ~1 s) and change nothing more
    await eventually(lambda: rt.indexer.sql("SELECT type FROM stripe_event WHERE type LIKE 'invoice.%' OR "
                                            "type LIKE 'customer.subscription.%'"), until=lambda rows: len(rows) >= 2)
    assert await rt.indexer.run(lambda: books(rt.indexer.conn)) == (999, [])
    report = await rt.payments.reconcile(repair=False)  # Stripe's invoices and our ledger agree
    assert report.checked >= 1 and not [p for p in report.problems if p.startswith("in_")], report.problems

    # the broker's signed word, in its repo, for any AppView to read
    rec = await eventually(lambda: broker_record(rt, net, listener.did), until=lambda r: r.get("status") == "active")
    assert (rec["subject"], rec["tier"], rec["paid"]) == (listener.did, "plus", True)
    doc = (await rt.http_client.get("/.well-known/did.json")).json()
    model = from_json(rec)
    assert attest.verify(model, rt.payments.broker.did, did_keys(doc)) == rec["signatures"][0]["key"]
    assert attest.verify({**model, "subject": artist.did}, rt.payments.broker.did, did_keys(doc)) is None
    assert "sub_" not in str(rec) and "cus_" not in str(rec)

    resp = await call(rt, listener, f"{NS}cancelSubscription", {"atPeriodEnd": True})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["cancelAtPeriodEnd"]) == ("active", True)
    rec = await eventually(lambda: broker_record(rt, net, listener.did), until=lambda r: r.get("cancelAtPeriodEnd") is True)
    assert attest.verify(from_json(rec), rt.payments.broker.did, did_keys(doc))
    resp = await call(rt, listener, f"{NS}cancelSubscription", {"atPeriodEnd": False})
    assert resp.json()["status"] == "canceled"
    gone = await call(rt, listener, f"{NS}cancelSubscription", {})
    assert gone.status_code == 400 and gone.json()["error"] == "NotSubscribed"
