"""From paid plays to a payout an artist can trace, on real parts: localstripe (Billing), the
Connect stub (Stripe's example objects over HTTP, through the official client), the reference PDS.
A crash between the transfer and its booking must not pay twice; a manager both sides agreed on
receives one artist's payout and sees their earnings; a stranger does not."""

from __future__ import annotations

import asyncio

import httpx

from core.lexicons import PAYOUT, from_json
from core.publish import publish_profile, record_play
from devkit.demo_payments import card_payment_method
from payments import attest, ledger, payouts, period
from payments.broker import did_keys
from tests.conftest import eventually
from tests.test_e2e import ok, publish_wav
from tests.test_payments_e2e import call
from tests.test_subscriptions_e2e import stats

NS = "fm.openmusic.payment."


async def earnings(rt, client, **params) -> httpx.Response:
    token = client.service_auth(rt.payments.service_did, NS + "getEarnings")
    return await rt.http_client.get(f"/xrpc/{NS}getEarnings", params=params,
                                    headers={"authorization": f"Bearer {token}"})


async def onboard(rt, client) -> None:
    resp = await call(rt, client, NS + "createPayoutAccountLink", {"returnUrl": "https://example.com/done"})
    assert resp.status_code == 200, resp.text
    async with httpx.AsyncClient() as http:  # the artist finishes onboarding on Stripe's page, sent back after
        done = await http.get(resp.json()["url"])
        assert done.status_code == 303 and done.headers["location"] == "https://example.com/done"


class Crash(Exception):
    pass


async def test_paid_plays_become_a_traceable_payout(paid_appview, make_client, tmp_path, localstripe, connect_stub, net):
    rt = paid_appview
    stub, _ = connect_stub
    artist, collab, manager, fan = (make_client(n) for n in ("payartist", "paycollab", "paymanager", "payfan"))
    publish_profile(collab, "Collab", roles=["artist"], extra={"managers": [manager.did], "payoutTo": manager.did})
    publish_profile(manager, "Mgmt", extra={"manages": [collab.did]})
    song = publish_wav(artist, tmp_path, 71, "Payout Song", extra={"splits": [
        {"did": artist.did, "shareBps": 8000}, {"did": collab.did, "shareBps": 2000}]})
    await eventually(lambda: ok(rt, "fm.openmusic.catalog.getTrack", uri=song.uri))

    pm = await asyncio.to_thread(card_payment_method, localstripe)
    sub = (await call(rt, fan, NS + "createSubscription", {"tier": "plus", "paymentMethod": pm})).json()
    assert sub["status"] == "active"
    record_play(fan, song, 2000)
    await eventually(lambda: stats(rt, song.uri), until=lambda s: s == (1, 0))

    # the month is over: close it (the clock set past the fan's service period)
    month = sub["currentPeriodStart"][:7]
    after = period.iso(int(period.datetime.fromisoformat(sub["currentPeriodEnd"].replace("Z", "+00:00"))
                           .timestamp()) + 60)
    report = await rt.indexer.transact(period.close_period, month, 3000, rt.payments.broker.salt, after)
    assert report.invoices >= 1
    # net 999 (localstripe charges no fee): platform 299, pool 700 -> 80% 560, 20% 140
    mine = (await earnings(rt, artist, period=month)).json()
    assert mine["bySource"]["subscriptions"] == 560 and mine["balance"] == 560
    line = mine["lines"][0]
    assert (line["kind"], line["track"], line["listenedMs"], line["poolListenedMs"], line["pool"], line["shareBps"],
            line["amount"]) == ("subscription", song.uri, 2000, 2000, 700, 8000, 560)
    assert line["source"].startswith("invoice:") and "in_" not in line["source"]

    # managers: both sides agree for collab; a stranger sees nothing
    assert (await earnings(rt, manager, artist=collab.did)).json()["balance"] == 140
    combined = (await earnings(rt, manager)).json()
    assert combined["managed"] == [{"artist": collab.did, "total": 140, "balance": 140, "payoutToManager": True}]
    assert combined["combinedBalance"] == 140
    denied = await earnings(rt, fan, artist=collab.did)
    assert denied.status_code == 403 and denied.json()["error"] == "NotManager"

    assert (await rt.payments.run_payouts()) == {"opened": 0, "paid": 0, "failed": 0, "waiting": 0}  # nobody onboarded
    await onboard(rt, artist)
    await onboard(rt, manager)

    earlier = set(stub.transfers)  # the stub is the session's: other tests' transfers stay out

    def ours() -> list[dict]:
        return [t for k, t in stub.transfers.items() if k not in earlier]

    def crash(payout_id: str) -> None:
        raise Crash(payout_id)

    try:
        await rt.payments.run_payouts(after_transfer=crash)  # transferred, then the process dies
        raise AssertionError("the hook did not run")
    except Crash:
        pass
    assert len(ours()) == 1
    counts = await rt.payments.run_payouts()
    assert (counts["paid"], counts["failed"]) == (2, 0)
    assert (await rt.payments.run_payouts())["paid"] == 0  # a third run pays nothing
    groups = [t["transfer_group"] for t in ours()]
    assert len(groups) == len(set(groups)) == 2  # one transfer per payout, none twice
    accounts = dict(await rt.indexer.sql("SELECT did, account FROM payout_account"))
    sent = {t["destination"]: t["amount"] for t in ours()}
    assert sent == {accounts[artist.did]: 560, accounts[manager.did]: 140}

    def books(tx):
        return (ledger.balance(tx, ledger.earnings(artist.did), "USD"), ledger.balance(tx, ledger.earnings(collab.did), "USD"),
                ledger.balance(tx, payouts.PENDING, "USD"), ledger.check(tx))
    assert await rt.indexer.run(lambda: books(rt.indexer.conn)) == (0, 0, 0, [])

    # the payout record in the broker's repo, traced back to the seconds heard
    (rkey,) = (await rt.indexer.sql("SELECT rkey FROM payout WHERE did = ?", (collab.did,)))[0]
    async with httpx.AsyncClient(base_url=net.pds_url) as pds:
        async def fetch():
            r = await pds.get("/xrpc/com.atproto.repo.getRecord", params={
                "repo": rt.payments.broker.did, "collection": PAYOUT, "rkey": rkey})
            return r.json().get("value") if r.status_code == 200 else None
        rec = await eventually(fetch)
    assert (rec["recipient"], rec["payee"], rec["amount"], rec["status"]) == (collab.did, manager.did, 140, "paid")
    assert rec["covers"]["subscriptions"] == 140 and rec["covers"]["periods"] == [month]
    doc = (await rt.http_client.get("/.well-known/did.json")).json()
    assert attest.verify(from_json(rec), rt.payments.broker.did, did_keys(doc))
    assert "tr_" not in str(rec) and "acct_" not in str(rec)
    theirs = (await earnings(rt, collab)).json()
    assert theirs["balance"] == 0
    assert [ln["kind"] for ln in theirs["lines"]][:2] == ["payout", "subscription"]
    assert theirs["lines"][0]["amount"] == -140 and theirs["lines"][0]["source"].endswith(rkey)
