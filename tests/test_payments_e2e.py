"""Money end to end, on real parts: Stripe is localstripe (PaymentIntents, refunds, signed webhooks)
on loopback, the network is the reference PDS. Listeners buy credit and write tip records in their
own repos; the broker settles them, writes signed settlement records in its repo, and the AppView
indexes and verifies those from the firehose."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import httpx
import pytest
import stripe

from core.identity import IdentityResolver
from core.publish import tip
from devkit.demo_payments import pay_with_test_card
from payments import attest
from payments.broker import did_keys
from payments.ledger import check
from payments.verify import NotVerified, verify_settlement
from tests.conftest import WEBHOOK_SECRET, eventually
from tests.test_e2e import ok, publish_wav

CREATE = "fm.openmusic.payment.createCreditPurchase"
BALANCE = "fm.openmusic.payment.getBalance"


async def call(rt, client, nsid: str, body: dict | None = None) -> httpx.Response:
    """Call an authenticated method as ``client``'s user, with a JWT minted by their PDS."""
    token = client.service_auth(rt.payments.service_did, nsid)
    headers = {"authorization": f"Bearer {token}"}
    if body is None:
        return await rt.http_client.get(f"/xrpc/{nsid}", headers=headers)
    return await rt.http_client.post(f"/xrpc/{nsid}", json=body, headers=headers)


def pay(localstripe: str, pi: str) -> None:
    """What Stripe.js does in the listener's browser."""
    assert pay_with_test_card(localstripe, pi) == "succeeded"


async def buy_credit(rt, localstripe, client, amount: int) -> str:
    resp = await call(rt, client, CREATE, {"amount": amount})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["clientSecret"].startswith(body["paymentIntent"]) and body["amount"] == amount
    await asyncio.to_thread(pay, localstripe, body["paymentIntent"])
    return body["paymentIntent"]


async def balance(rt, client) -> dict:
    resp = await call(rt, client, BALANCE)
    assert resp.status_code == 200, resp.text
    return resp.json()


def signed_delivery(event: dict) -> tuple[bytes, dict]:
    """A webhook delivery signed as Stripe signs (t=..., v1=HMAC-SHA256), for re-deliveries."""
    payload = json.dumps(event).encode()
    ts = int(time.time())
    sig = hmac.new(WEBHOOK_SECRET.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return payload, {"stripe-signature": f"t={ts},v1={sig}", "content-type": "application/json"}


async def test_credit_tips_settlements_refunds(paid_appview, make_client, tmp_path, localstripe, net):
    rt = paid_appview
    artist, collaborator, fan = make_client("artist"), make_client("collab"), make_client("fan")
    song = publish_wav(artist, tmp_path, 41, "Paid Song", extra={"splits": [
        {"did": artist.did, "shareBps": 7000}, {"did": collaborator.did, "shareBps": 3000}]})
    await eventually(lambda: ok(rt, "fm.openmusic.catalog.getTrack", uri=song.uri))

    pi = await buy_credit(rt, localstripe, fan, 1000)

    async def credited():
        return (await balance(rt, fan))["credit"] == 1000
    await eventually(credited)  # the signed payment_intent.succeeded webhook from localstripe

    to_artist = tip(fan, artist.did, 200, message="thanks!")
    to_song = tip(fan, artist.did, 55, track=song)
    too_small = tip(fan, artist.did, 5, track=song)
    too_big = tip(fan, artist.did, 5000)

    async def all_settled():
        body = await ok(rt, "fm.openmusic.payment.getTips", artist=artist.did)
        got = {t["uri"]: t.get("settlement") for t in body["tips"]}
        return body if len(got) == 4 and all(got.values()) else None
    body = await eventually(all_settled, timeout=30)
    by_uri = {t["uri"]: t["settlement"] for t in body["tips"]}
    assert by_uri[to_artist.uri]["status"] == "settled"
    assert by_uri[to_artist.uri]["recipients"] == [{"did": artist.did, "amount": 200}]
    assert by_uri[to_song.uri]["status"] == "settled"
    # 55 split 70/30: 38.5 / 16.5 -> floors 38 / 16, the cent left goes to the first of the tied remainders
    assert by_uri[to_song.uri]["recipients"] == [{"did": artist.did, "amount": 39}, {"did": collaborator.did, "amount": 16}]
    assert (by_uri[too_small.uri]["status"], by_uri[too_small.uri]["reason"]) == ("rejected", "below_minimum")
    assert (by_uri[too_big.uri]["status"], by_uri[too_big.uri]["reason"]) == ("rejected", "insufficient_credit")
    assert body["totalSettled"] == 255
    assert (await balance(rt, fan))["credit"] == 1000 - 255
    assert (await balance(rt, artist))["earnings"] == 239
    assert (await balance(rt, collaborator))["earnings"] == 16

    # A stranger verifies a settlement from the network alone: the record from the broker's repo
    # on its PDS, the signer's did:web document, and the tip from the fan's repo.
    settlement = by_uri[to_song.uri]
    async with httpx.AsyncClient(base_url=net.pds_url) as pds:
        did, _, rkey = settlement["uri"][len("at://"):].partition("/fm.openmusic.payment.settlement/")
        rec = (await pds.get("/xrpc/com.atproto.repo.getRecord", params={
            "repo": did, "collection": "fm.openmusic.payment.settlement", "rkey": rkey})).json()["value"]
        tip_rec = (await pds.get("/xrpc/com.atproto.repo.getRecord", params={
            "repo": fan.did, "collection": "fm.openmusic.payment.tip", "rkey": to_song.uri.rsplit("/", 1)[1]})).json()
    key_id = rec["signatures"][0]["key"]
    doc = (await rt.http_client.get("/.well-known/did.json")).json()
    assert doc["id"] == key_id.split("#")[0] and f"at://{did}" in doc["alsoKnownAs"]
    from core.lexicons import from_json
    model = from_json(rec)
    assert attest.verify(model, did, did_keys(doc)) == key_id
    assert attest.verify({**model, "amount": 56}, did, did_keys(doc)) is None  # tampering shows
    assert attest.verify(model, fan.did, did_keys(doc)) is None  # a copy in another repo does not verify
    assert rec["tip"] == {"uri": to_song.uri, "cid": tip_rec["cid"]} and rec["amount"] == tip_rec["value"]["amount"]
    assert "pi_" not in json.dumps(rec) and "cus_" not in json.dumps(rec)  # raw Stripe IDs stay private

    # The same, with the CLI's code: PDSes and DID documents only.
    async with httpx.AsyncClient() as http:
        lines = await verify_settlement(settlement["uri"], IdentityResolver(rt.settings, http), http, allow_private=True)
    assert len(lines) == 4 and "matches: 55 USD" in lines[2]

    # Deleting a tip after it settled changes no money.
    fan.delete_record("fm.openmusic.payment.tip", to_artist.uri.rsplit("/", 1)[1])
    await eventually(lambda: _tip_gone(rt, artist.did, to_artist.uri))
    assert (await balance(rt, artist))["earnings"] == 239
    async with httpx.AsyncClient() as http:  # ... but its settlement no longer verifies against the network
        with pytest.raises(NotVerified, match="answered 400"):
            await verify_settlement(by_uri[to_artist.uri]["uri"], IdentityResolver(rt.settings, http), http, True)

    # Duplicate and out-of-order webhook deliveries change nothing twice.
    events = stripe.StripeClient("sk_test_openmusic", base_addresses={"api": localstripe}).v1.events.list(
        params={"type": "payment_intent.succeeded"})
    succeeded = next(e for e in events.data if e.data.object.id == pi).to_dict()
    for event in (succeeded, succeeded, {**succeeded, "id": succeeded["id"] + "_redelivered"}):
        payload, headers = signed_delivery(event)
        resp = await rt.http_client.post("/stripe/webhook", content=payload, headers=headers)
        assert resp.status_code == 200, resp.text
    assert (await balance(rt, fan))["credit"] == 745
    forged, headers = signed_delivery(succeeded)
    resp = await rt.http_client.post("/stripe/webhook", content=forged.replace(b"1000", b"9000"), headers=headers)
    assert resp.status_code == 400 and resp.json()["error"] == "InvalidRequest"

    # A refund of a credit purchase, through Stripe, reverses credit; more than is left is refused.
    await rt.payments.refund_purchase(pi, 100)
    assert (await balance(rt, fan))["credit"] == 645
    payload, headers = signed_delivery(succeeded | {"id": succeeded["id"] + "_late"})  # arrives after the refund
    assert (await rt.http_client.post("/stripe/webhook", content=payload, headers=headers)).status_code == 200
    assert (await balance(rt, fan))["credit"] == 645

    # Refunding a settled tip moves the money back and republishes the settlement as refunded.
    assert await rt.payments.refund_tip(to_song.uri)
    assert not await rt.payments.refund_tip(to_song.uri)  # once
    assert (await balance(rt, fan))["credit"] == 700
    assert (await balance(rt, artist))["earnings"] == 200

    async def refunded():
        body = await ok(rt, "fm.openmusic.payment.getSettlement", uri=to_song.uri)
        return body["settlement"]["status"] == "refunded"
    await eventually(refunded, timeout=30)

    assert await rt.indexer.run(lambda: check(rt.indexer.conn)) == []
    report = await rt.payments.reconcile()
    assert report.problems == [] and report.repaired == 0 and report.checked >= 1


async def _tip_gone(rt, artist_did: str, uri: str) -> bool:
    body = await ok(rt, "fm.openmusic.payment.getTips", artist=artist_did)
    return uri not in {t["uri"] for t in body["tips"]}


async def test_reconcile_repairs_a_payment_the_ledger_missed(paid_appview, make_client, localstripe):
    """A crash between Stripe and our ledger write: the PaymentIntent succeeded at Stripe but neither
    our row nor the webhook made it. Reconcile finds it and credits the buyer once."""
    rt = paid_appview
    fan = make_client("lostfan")
    client = stripe.StripeClient("sk_test_openmusic", base_addresses={"api": localstripe})
    # Silence webhooks while the payment happens, as if we were down.
    await rt.http_client.post(f"{localstripe}/_config/webhooks/openmusic",
                              data={"url": "http://127.0.0.1:9/nowhere", "secret": WEBHOOK_SECRET})
    try:
        pi = client.v1.payment_intents.create(params={"amount": 700, "currency": "usd", "metadata": {
            "purpose": "openmusic_credit", "did": fan.did}})
        await asyncio.to_thread(pay, localstripe, pi.id)
        await asyncio.sleep(1.5)
    finally:
        await rt.http_client.post(f"{localstripe}/_config/webhooks/openmusic",
                                  data={"url": f"{rt.settings.base_url}/stripe/webhook", "secret": WEBHOOK_SECRET})
    assert (await balance(rt, fan))["credit"] == 0
    before = await rt.payments.reconcile(repair=False)
    assert any(pi.id in p for p in before.problems)
    report = await rt.payments.reconcile()
    assert report.repaired == 1 and report.problems == []
    assert (await balance(rt, fan))["credit"] == 700
    assert (await rt.payments.reconcile()).repaired == 0


async def test_service_auth_is_checked(paid_appview, make_client):
    rt = paid_appview
    fan = make_client("authfan")
    resp = await rt.http_client.get(f"/xrpc/{BALANCE}")
    assert resp.status_code == 401 and resp.json()["error"] == "AuthRequired"
    wrong_lxm = fan.service_auth(rt.payments.service_did, CREATE)
    resp = await rt.http_client.get(f"/xrpc/{BALANCE}", headers={"authorization": f"Bearer {wrong_lxm}"})
    assert resp.status_code == 401 and "lxm" in resp.json()["message"]
    other_aud = fan.service_auth("did:web:elsewhere.example", BALANCE)
    resp = await rt.http_client.get(f"/xrpc/{BALANCE}", headers={"authorization": f"Bearer {other_aud}"})
    assert resp.status_code == 401 and "aud" in resp.json()["message"]
    token = fan.service_auth(f"{rt.payments.service_did}#openmusic_appview", BALANCE)
    first = await rt.http_client.get(f"/xrpc/{BALANCE}", headers={"authorization": f"Bearer {token}"})
    assert first.status_code == 200 and first.json() == {"did": fan.did, "credit": 0, "earnings": 0, "currency": "USD"}
    replay = await rt.http_client.get(f"/xrpc/{BALANCE}", headers={"authorization": f"Bearer {token}"})
    assert replay.status_code == 401 and "replayed" in replay.json()["message"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    resp = await rt.http_client.get(f"/xrpc/{BALANCE}", headers={"authorization": f"Bearer {forged}"})
    assert resp.status_code == 401
    resp = await call(rt, fan, CREATE, {"amount": 5})
    assert resp.status_code == 400 and resp.json()["error"] == "InvalidRequest"
