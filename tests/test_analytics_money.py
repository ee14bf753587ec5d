"""The money side of the analytics (issue 12): ``fm.openmusic.analytics.getRevenue``,
``getConversion`` and ``getOverview`` (``appview.analytics_money``), on ``tests.test_analytics``'
worked example (artist ART, SONG 10 s and SONG2 60 s; plays of ANA, BEN, CAT, DAN on 16-19 November;
BEN's paid invoice for November, 999, no fee) with money added through the payment code itself
(``record_invoice``, ``close_period``, ``settle_tip``, ``refund_tip``, ``open_payouts``,
``complete_payout``), at known times. Weeks start on Mondays: 2026-11-30, 12-07, 12-14, 12-21, 12-28.

The worked example, by hand (USD, minor units):

===========  =====================================================================================
when         what
===========  =====================================================================================
11-15        MEG pays 999 (fee 30) for 11-15..12-15 and does not renew: her first paid invoice
11-25        the operator enters November's ad revenue: 1000
12-01 00:05  BEN pays his December renewal: 999 (fee 0), 12-01..01-01
12-01 10:00  ANA streams SONG (10 s, free); 12-03 MEG streams SONG (paid)
12-02        close of November. BEN's invoice: net 999, platform floor(999 * 30%) = 299, pool 700 over
             BEN's paid streams P2 (SONG 7 s) and P8 (SONG2 60 s): 700 * 7/67 = 73.13 and 700 * 60/67
             = 626.87 -> floors 73 + 626 = 699, the cent left to the largest remainder: SONG 73, SONG2
             627. Ad pool 1000 over November's free streams (P1 P4 P6 P7, all SONG): SONG 1000. MEG's
             invoice has not ended: it waits. ART earned 700 (subscriptions) + 1000 (ads) this day.
12-02        credit bought: ANA 1000, DAN 500, CAT 100
12-03        T1 ANA tips ART 500 (artist); T2 ANA tips SONG 200 (song)
12-04        T3 DAN tips SONG2 300 (song; DAN's handle is not verified)
12-05        ANA converts: pays 999 (fee 30), 12-05..01-05
12-06        T4 CAT tips ART 100 (artist), refunded 12-08 (-100 to ART, in the week of 12-07)
12-09        DAN's credit refunded: 100
12-10        DAN converts (999, fee 30, 12-10..01-10). Payout po1: ART's balance 700 + 1000 + 500 +
             200 + 300 + 100 - 100 = 2700, pending; its transfer is booked 12-11 (paid)
12-12        EVE buys 500 of credit; T5 EVE tips ART 150 (artist)
12-14        payout po2: 150, pending (no transfer yet)
12-15        T6 EVE tips SONG 50 (song): ART's balance is 50. DAN streams SONG (paid)
12-16        EVE streams SONG (free); she never subscribes
12-20        SUE converts on a cheaper tier (499, fee 20, 12-20..01-20); she never played anything
12-28        CAT converts (999, fee 30, 12-28..01-28)
===========  =====================================================================================

Purchase-link clicks: SONG 11-30: 7, 12-03: 4, 12-10: 2; SONG2 12-10: 5; another artist's track 12-10: 9.

getRevenue ART, December by week (a line counts on the day of its ledger transaction):
11-30: subscriptions 700, ads 1000, tipsArtist 500 + 100 = 600, tipsSong 200 + 300 = 500, total 2800,
clicks 4; 12-07: tipsArtist -100 + 150 = 50, total 50, clicks 2 + 5 = 7; 12-14: tipsSong 50, total 50;
12-21 and 12-28: nothing. Totals: 700, 1000, tips 1200 (650 artist, 550 song), 2900; 11 clicks.
Tips to the artist: 3 tips, 650. Songs: SONG2 1 tip 300, SONG 2 tips 250. Tippers: ana 2 tips 700,
handle.invalid (DAN) 1 tip 300, eve 2 tips 200, cat 1 tip 0. Clicked: SONG 6, SONG2 5. Balance 50.
Payouts: made po1 2700 (paid 12-11), pending po2 150. In November (by month) ART earned nothing:
the November shares were credited on 12-02; clicks 7.

getConversion, December: first paid service periods starting in December: ANA 12-05, DAN 12-10, SUE
12-20, CAT 12-28 (BEN renews: his first was 11-01; MEG's was 11-15) = 4. Streamed ART in the 30 days
before: ANA (SONG on 11-16, 11-17, 12-01; window 11-05..12-05) yes; DAN (P7 on 11-19 10:00; window
11-10..12-10) yes; SUE (no plays) no; CAT (P6 on 11-19; window 11-28..12-28) no = 2. By week:
11-30: 1/1, 12-07: 1/1, 12-14: 1/0, 12-21: 0/0, 12-28: 1/0.
Network-wide: listeners with a stream in December: ANA, MEG, DAN, EVE (BEN has no December play);
MEG held a paid tier at 12-01 00:00 -> active free listeners ANA, DAN, EVE = 3, of whom ANA and DAN
converted: 2 / 3 = 6667 bps (rounded half up). Over 1-15 December: converters ANA and DAN, active free
listeners ANA and DAN (EVE streams on the 16th): 2 / 2 = 10000 bps.

getOverview, December: credit sold 1000 + 500 + 100 + 500 = 2100 in 4 purchases, 100 refunded;
subscription revenue (net) 999 + 969 + 969 + 479 + 969 = 4385; tips 500 + 200 + 300 + 100 + 150 + 50
= 1300 in 6, refunded 100; ad pool entered 0 (November's was entered 11-25); platform share 299;
payouts made 2700, pending 150; MRR at 2027-01-01 00:00: BEN 999 + ANA 999 + DAN 999 + SUE 499 + CAT
999 = 4495. Subscribers: at the start BEN and MEG (2), at the end BEN ANA DAN SUE CAT (5): new 4,
churned 1 (MEG). Rejected records: 2 lexicon (12-03, 12-04) and 1 too_large (11-20) in all; 2 in
December. One repo desynchronized (CAT's, while the test asks).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from types import SimpleNamespace
from unittest import mock

import pytest

from appview import analytics, analytics_money
from appview import app as appview_app
from appview.xrpc import XrpcError
from core.lexicons import TIP
from firehose.events import RecordOp
from payments import attest, ledger, payouts, period, settle
from payments.subscriptions import record_invoice
from tests.test_analytics import (  # noqa: F401  (fixtures)
    ANA,
    ART,
    BEN,
    CAT,
    CID,
    DAN,
    MAX,
    MEG,
    NS,
    OPS,
    SONG,
    SONG2,
    SUE,
    bearer,
    did,
    example,
    http,
    play,
)
from tests.test_analytics import ask as ask_analytics
from tests.test_fake_plays_property import Clock, frozen
from tests.test_indexer_units import PLAY, commit, create, rkey

EVE = did("eve")
OTHER_TRACK = f"at://{did('oth')}/fm.openmusic.catalog.track/{rkey(9)}"
BROKER = settle.Broker("did:plc:" + "b" * 24, attest.Signer(attest.new_secret(), "did:web:music.example#attestation"),
                       "salt")
POLICY = settle.Policy()


def t(day: str, hour: int = 12, minute: int = 0) -> str:
    """``MM-DD`` of 2026 (or ``YYYY-MM-DD``) -> an ISO instant."""
    full = day if len(day) == 10 else f"2026-{day}"
    return f"{full}T{hour:02d}:{minute:02d}:00.000Z"


@contextmanager
def at(when: str):
    """The indexer's and the ledger's clocks at ``when``."""
    with frozen(Clock(when)), mock.patch("payments.ledger.now_iso", lambda: when):
        yield


def ts(instant: str) -> int:
    return int(datetime.fromisoformat(instant.replace("Z", "+00:00")).astimezone(UTC).timestamp())


async def pay(ix, who: str, inv: str, amount: int, fee: int, start: str, end: str, recorded: str) -> None:
    """A paid Stripe invoice for ``who``'s service period [start, end), recorded at ``recorded``."""
    invoice = {"id": inv, "status": "paid", "amount_paid": amount, "currency": "usd",
               "lines": {"data": [{"type": "subscription", "period": {"start": ts(start), "end": ts(end)}}]}}
    with at(recorded):
        assert await ix.transact(record_invoice, invoice, fee, f"sub_{inv}", who, "plus", recorded) == 1


async def post(ix, key: str, kind: str, postings: list[tuple[str, int]], when: str) -> None:
    with at(when):
        assert await ix.transact(lambda tx: ledger.post(tx, key, kind, "USD", postings))


SEQ = iter(range(1000, 2000))
REV: dict[str, int] = {ANA: 10, BEN: 10, CAT: 10, DAN: 10, MEG: 10, EVE: 10}


async def send(ix, who: str, op: RecordOp, when: str) -> None:
    """One record op of ``who`` through the real indexer, indexed at ``when``."""
    s = next(SEQ)
    REV[who] += 1
    with at(when):
        await ix.apply([commit(s, who, REV[who], op)], s)


async def listen(ix, who: str, track: str, ms: int, when: str, key: int) -> None:
    await send(ix, who, create(PLAY, rkey(key), play(track, ms, when, [(0, ms)])), when)


async def tip(ix, who: str, amount: int, when: str, key: int, track: str | None = None, refund_at: str = "") -> str:
    """A tip record indexed and settled by the broker at ``when`` (refunded at ``refund_at``)."""
    rec = {"$type": TIP, "subject": ART, "amount": amount, "currency": "USD", "createdAt": when}
    if track:
        rec["track"] = {"uri": track, "cid": CID}
    await send(ix, who, create(TIP, rkey(key), rec), when)
    uri = f"at://{who}/{TIP}/{rkey(key)}"
    with at(when):
        assert await ix.transact(settle.settle_tip, uri, POLICY, BROKER, when) == "settled"
    if refund_at:
        with at(refund_at):
            assert await ix.transact(settle.refund_tip, uri, BROKER, refund_at)
    return uri


@pytest.fixture(scope="module")
async def money(example):  # noqa: F811
    """The docstring's money on top of ``tests.test_analytics``' example. Returns (ix, payout IDs)."""
    ix, _ = example
    await ix.sql("INSERT OR IGNORE INTO actor (did, handle, handle_verified, active, resolved_at) VALUES (?,?,1,1,?)",
                 (EVE, "eveeveeveeve.test", time.time()))
    await pay(ix, MEG, "in_meg", 999, 30, t("11-15", 0), t("12-15", 0), t("11-15", 0, 5))
    with at(t("11-25")):
        assert await ix.transact(period.enter_ad_revenue, "2026-11", 1000, "USD")
    await pay(ix, BEN, "in_ben_dec", 999, 0, t("12-01", 0), t("2027-01-01", 0), t("12-01", 0, 5))
    await listen(ix, ANA, SONG, 10_000, t("12-01", 10), 101)
    await listen(ix, MEG, SONG, 10_000, t("12-03", 10), 102)
    with at(t("12-02", 0)):
        report = await ix.transact(period.close_period, "2026-11", 3000, "salt", t("12-02", 0))
    assert (report.invoices, report.waiting, report.ads, report.to_artists, report.to_platform) == (1, 1, True, 1700, 299)
    for who, amount in ((ANA, 1000), (DAN, 500), (CAT, 100)):
        await post(ix, f"stripe:pi_{who[-4:]}", "credit_purchase", [(ledger.HOLDING, -amount),
                                                                     (ledger.credit(who), amount)], t("12-02", 1))
    await tip(ix, ANA, 500, t("12-03"), 201)
    await tip(ix, ANA, 200, t("12-03", 13), 202, track=SONG)
    await tip(ix, DAN, 300, t("12-04"), 203, track=SONG2)
    await pay(ix, ANA, "in_ana", 999, 30, t("12-05", 0), t("2027-01-05", 0), t("12-05", 0, 5))
    await tip(ix, CAT, 100, t("12-06"), 204, refund_at=t("12-08"))
    await post(ix, "stripe:re_dan", "credit_refund", [(ledger.credit(DAN), -100), (ledger.HOLDING, 100)], t("12-09"))
    await pay(ix, DAN, "in_dan", 999, 30, t("12-10", 0), t("2027-01-10", 0), t("12-10", 0, 5))
    await ix.sql("INSERT INTO payout_account (did, account, payouts_enabled, created_at, updated_at) "
                 "VALUES (?, 'acct_art', 1, ?, ?)", (ART, t("12-01"), t("12-01")))
    with at(t("12-10")):
        (po1,) = await ix.transact(payouts.open_payouts, 1000, "USD", BROKER.did, t("12-10"))
    with at(t("12-11")):
        assert await ix.transact(payouts.complete_payout, po1, "tr_1", BROKER, t("12-11"))
    await post(ix, "stripe:pi_eve", "credit_purchase", [(ledger.HOLDING, -500), (ledger.credit(EVE), 500)],
               t("12-12", 1))
    await tip(ix, EVE, 150, t("12-12"), 205)
    with at(t("12-14")):
        (po2,) = await ix.transact(payouts.open_payouts, 100, "USD", BROKER.did, t("12-14"))
    await tip(ix, EVE, 50, t("12-15"), 206, track=SONG)
    await listen(ix, DAN, SONG, 10_000, t("12-15", 10), 103)
    await listen(ix, EVE, SONG, 10_000, t("12-16", 10), 104)
    await pay(ix, SUE, "in_sue", 499, 20, t("12-20", 0), t("2027-01-20", 0), t("12-20", 0, 5))
    await pay(ix, CAT, "in_cat", 999, 30, t("12-28", 0), t("2027-01-28", 0), t("12-28", 0, 5))
    await ix.sql("INSERT INTO purchase_click (track_uri, did, day, clicks) VALUES (?,?,?,?), (?,?,?,?), (?,?,?,?), "
                 "(?,?,?,?), (?,?,?,?)",
                 (SONG, ART, "2026-11-30", 7, SONG, ART, "2026-12-03", 4, SONG, ART, "2026-12-10", 2,
                  SONG2, ART, "2026-12-10", 5, OTHER_TRACK, did("oth"), "2026-12-10", 9))
    assert await ix.sql("SELECT COUNT(*) FROM rejected_record") == [(0,)]
    await ix.sql("INSERT INTO rejected_record (uri, reason, rejected_at) VALUES (?,?,?), (?,?,?), (?,?,?)",
                 ("at://x/a/1", "lexicon", t("12-03"), "at://x/a/2", "lexicon", t("12-04"),
                  "at://x/a/3", "too_large", t("11-20")))
    assert await ix.run(ledger.check, ix.conn) == []
    return ix, po1, po2


async def ask(ix, name: str, caller: str = OPS, **params) -> dict:
    """``tests.test_analytics.ask`` (params and output checked against the lexicon), as an operator."""
    return await ask_analytics(ix, name, caller, **params)


def row(currency: str, subs: int, ads: int, t_artist: int, t_song: int) -> dict:
    return {"currency": currency, "subscriptions": subs, "ads": ads, "tips": t_artist + t_song, "tipsArtist": t_artist,
            "tipsSong": t_song, "total": subs + ads + t_artist + t_song}


async def test_worked_example_revenue_by_week(money):
    ix, po1, po2 = money
    r = await ask(ix, "getRevenue", caller=ART, artist=ART, start="2026-12-01", end="2026-12-31", granularity="week")
    assert (r["artist"], r["start"], r["end"], r["granularity"], r["currencies"]) == (
        ART, "2026-12-01", "2026-12-31", "week", ["USD"])
    assert r["buckets"] == [
        {"bucket": "2026-11-30", "money": [row("USD", 700, 1000, 600, 500)], "purchaseClicks": 4},
        {"bucket": "2026-12-07", "money": [row("USD", 0, 0, 50, 0)], "purchaseClicks": 7},
        {"bucket": "2026-12-14", "money": [row("USD", 0, 0, 0, 50)], "purchaseClicks": 0},
        {"bucket": "2026-12-21", "money": [row("USD", 0, 0, 0, 0)], "purchaseClicks": 0},
        {"bucket": "2026-12-28", "money": [row("USD", 0, 0, 0, 0)], "purchaseClicks": 0}]
    assert r["totals"] == {"money": [row("USD", 700, 1000, 650, 550)], "purchaseClicks": 11}
    assert r["totals"]["money"][0]["total"] == 2900
    assert r["tips"] == {
        "artist": [{"currency": "USD", "count": 3, "amount": 650}],
        "songs": [{"track": SONG2, "title": "Song Two", "currency": "USD", "count": 1, "amount": 300},
                  {"track": SONG, "title": "Song", "currency": "USD", "count": 2, "amount": 250}],
        "topTippers": [{"handle": "anaanaanaana.test", "currency": "USD", "count": 2, "amount": 700},
                       {"handle": "handle.invalid", "currency": "USD", "count": 1, "amount": 300},
                       {"handle": "eveeveeveeve.test", "currency": "USD", "count": 2, "amount": 200},
                       {"handle": "catcatcatcat.test", "currency": "USD", "count": 1, "amount": 0}]}
    assert "did:" not in json.dumps(r["tips"]["topTippers"])  # tippers by handle, never a DID
    assert r["purchaseClicks"] == [{"track": SONG, "title": "Song", "clicks": 6},
                                   {"track": SONG2, "title": "Song Two", "clicks": 5}]
    assert r["balance"] == [{"currency": "USD", "amount": 50}]
    made, pending = r["payouts"]["made"], r["payouts"]["pending"]
    assert [(p["id"], p["amount"], p["status"], p["paidAt"]) for p in made] == [(po1, 2700, "paid", t("12-11"))]
    assert [(p["id"], p["amount"], p["status"], p["createdAt"]) for p in pending] == [(po2, 150, "pending", t("12-14"))]
    assert "paidAt" not in pending[0] and made[0]["uri"] == payouts.payout_uri(BROKER.did, po1)
    assert (r["payouts"]["madeTotal"], r["payouts"]["pendingTotal"]) == (
        [{"currency": "USD", "amount": 2700}], [{"currency": "USD", "amount": 150}])


async def test_revenue_dates_money_by_when_it_was_credited(money):
    ix, _, po2 = money
    nov = await ask(ix, "getRevenue", caller=ART, artist=ART, start="2026-11-01", end="2026-11-30", granularity="month")
    assert nov["currencies"] == [] and nov["buckets"] == [{"bucket": "2026-11-01", "money": [], "purchaseClicks": 7}]
    assert nov["totals"] == {"money": [], "purchaseClicks": 7} and nov["tips"]["topTippers"] == []
    assert nov["payouts"]["made"] == [] and [p["id"] for p in nov["payouts"]["pending"]] == [po2]  # pending: now
    assert nov["balance"] == [{"currency": "USD", "amount": 50}]
    day = await ask(ix, "getRevenue", caller=ART, artist="artartartart.test", start="2026-12-02", end="2026-12-03")
    assert [b["money"][0]["total"] for b in day["buckets"]] == [1700, 700]  # the close, then T1 + T2
    top = await ask(ix, "getRevenue", caller=ART, artist=ART, start="2026-12-01", end="2026-12-31", limit=1)
    assert [x["handle"] for x in top["tips"]["topTippers"]] == ["anaanaanaana.test"]
    assert [x["track"] for x in top["tips"]["songs"]] == [SONG2] and len(top["purchaseClicks"]) == 1


async def test_worked_example_conversion(money):
    ix, _, _ = money
    c = await ask(ix, "getConversion", caller=ART, artist=ART, start="2026-12-01", end="2026-12-31", granularity="week")
    assert (c["artist"], c["totals"]) == (ART, {"converters": 4, "streamedArtist": 2})
    assert c["buckets"] == [{"bucket": b, "converters": n, "streamedArtist": s} for b, n, s in (
        ("2026-11-30", 1, 1), ("2026-12-07", 1, 1), ("2026-12-14", 1, 0), ("2026-12-21", 0, 0), ("2026-12-28", 1, 0))]
    assert "conversionRateBps" not in c and "activeFreeListeners" not in c  # network figures: operators, no artist
    net = await ask(ix, "getConversion", start="2026-12-01", end="2026-12-31", granularity="month")
    assert "artist" not in net and net["totals"] == {"converters": 4}
    assert net["buckets"] == [{"bucket": "2026-12-01", "converters": 4}]
    assert (net["activeFreeListeners"], net["convertedActive"], net["conversionRateBps"]) == (3, 2, 6667)
    nov = await ask(ix, "getConversion", caller=MAX, artist=ART, start="2026-11-01", end="2026-11-30", granularity="month")
    assert nov["totals"] == {"converters": 2, "streamedArtist": 0}  # BEN 11-01 and MEG 11-15, neither had streamed ART
    half = await ask(ix, "getConversion", start="2026-12-01", end="2026-12-15")
    assert (half["totals"]["converters"], half["activeFreeListeners"], half["convertedActive"],
            half["conversionRateBps"]) == (2, 2, 2, 10000)


async def test_worked_example_overview(money):
    ix, _, _ = money
    # CAT's repo is owed a resync while we ask (only then: a runtime would try it, from plc.directory)
    await ix.sql("UPDATE repo_state SET status = 'desynchronized' WHERE did = ?", (CAT,))
    try:
        o = await ask(ix, "getOverview", start="2026-12-01", end="2026-12-31")
    finally:
        await ix.sql("UPDATE repo_state SET status = 'synchronized' WHERE did = ?", (CAT,))
    assert (o["start"], o["end"], o["currencies"]) == ("2026-12-01", "2026-12-31", ["USD"])
    assert o["money"] == [{
        "currency": "USD", "creditSold": 2100, "creditPurchases": 4, "creditRefunded": 100,
        "subscriptionRevenue": 4385, "tips": 1300, "tipCount": 6, "tipsRefunded": 100, "adPool": 0,
        "platformShare": 299, "payoutsMade": 2700, "payoutsPending": 150, "mrr": 4495}]
    assert o["subscriptions"] == {"active": 5, "activeAtStart": 2, "new": 4, "churned": 1}
    assert o["adPool"] == []
    assert o["payouts"] == {"made": [{"currency": "USD", "count": 1, "amount": 2700}],
                            "pending": [{"currency": "USD", "count": 1, "amount": 150}]}
    assert o["conversion"] == {"converters": 4, "activeFreeListeners": 3, "convertedActive": 2,
                               "conversionRateBps": 6667}
    assert o["indexing"] == {"firehoseConnected": False, "firehoseCurrent": False, "maxLagMs": 60_000,
                             "rejected": [{"reason": "lexicon", "count": 2}, {"reason": "too_large", "count": 1}],
                             "rejectedInPeriod": [{"reason": "lexicon", "count": 2}], "desynchronizedRepos": 1}
    nov = await ask(ix, "getOverview", start="2026-11-01", end="2026-11-30")
    assert nov["adPool"] == [{"period": "2026-11", "currency": "USD", "amount": 1000, "distributed": True}]
    assert nov["money"][0]["adPool"] == 1000 and nov["money"][0]["subscriptionRevenue"] == 969  # MEG's; BEN's was raw
    assert nov["subscriptions"] == {"active": 2, "activeAtStart": 1, "new": 1, "churned": 0}  # BEN; then BEN and MEG


async def test_overview_reports_the_firehose_of_the_serving_appview(money):
    ix, _, _ = money
    assert analytics_money.MAX_LAG_S == appview_app.MAX_LAG_S  # /health's threshold, not a guess
    for connected, lag, current, lag_ms in ((True, 1.2344, True, 1234), (True, 75.0, False, 75_000),
                                            (False, None, False, None)):
        status = SimpleNamespace(connected=connected, lag=lambda lag=lag: lag)
        token = analytics.SERVING.set(SimpleNamespace(consumer=SimpleNamespace(status=status)))
        try:
            health = (await ask(ix, "getOverview", start="2026-12-01", end="2026-12-01"))["indexing"]
        finally:
            analytics.SERVING.reset(token)
        assert (health["firehoseConnected"], health["firehoseCurrent"], health.get("lagMs")) == (connected, current,
                                                                                               lag_ms)


async def test_who_may_read_the_money(money):
    ix, _, _ = money
    dec = {"start": "2026-12-01", "end": "2026-12-31"}
    for caller in (ART, MAX, OPS):  # the artist, an agreed manager, an operator
        assert (await ask(ix, "getRevenue", caller=caller, artist=ART, **dec))["totals"]["purchaseClicks"] == 11
        assert (await ask(ix, "getConversion", caller=caller, artist=ART, **dec))["totals"]["streamedArtist"] == 2
    refusals = [("getRevenue", caller, {"artist": ART}) for caller in (SUE, MEG, ANA)]  # stranger, one-sided, listener
    refusals += [("getConversion", caller, {"artist": ART}) for caller in (SUE, MEG)]
    refusals += [("getConversion", caller, {}) for caller in (ART, MAX)]  # network-wide: operators only
    refusals += [("getOverview", caller, {}) for caller in (ART, MAX, SUE)]
    for name, caller, params in refusals:
        with pytest.raises(XrpcError) as refused:
            await ask(ix, name, caller=caller, **params, **dec)
        assert (refused.value.status, refused.value.error) == (403, "Forbidden"), (name, caller)
    with pytest.raises(XrpcError) as refused:  # no longer an operator
        await analytics.ANALYTICS[NS + "getOverview"](ix.views, frozenset(), OPS, dec)
    assert refused.value.status == 403


@pytest.mark.parametrize("name,params,status,error,says", [
    ("getRevenue", {}, 400, "InvalidRequest", "missing required property artist"),
    ("getRevenue", {"artist": ART, "start": "2026-12-32"}, 400, "InvalidRequest", "start must be a date, YYYY-MM-DD"),
    ("getRevenue", {"artist": ART, "start": "2026-12-10", "end": "2026-12-01"}, 400, "InvalidRequest",
     "end (2026-12-01) is before start (2026-12-10)"),
    ("getRevenue", {"artist": ART, "start": "2025-01-01", "end": "2026-12-31"}, 400, "InvalidRequest",
     "a series by day covers at most 366"),
    ("getRevenue", {"artist": ART, "granularity": "year"}, 400, "InvalidRequest", "granularity"),
    ("getRevenue", {"artist": ART, "limit": 0}, 400, "InvalidRequest", "limit"),
    ("getRevenue", {"artist": did("zzz")}, 400, "ActorNotFound", "no active account"),
    ("getRevenue", {"artist": "nobody.test"}, 400, "ActorNotFound", ""),
    ("getConversion", {"artist": did("zzz")}, 400, "ActorNotFound", "no active account"),
    ("getConversion", {"start": "yesterday"}, 400, "InvalidRequest", "start must be a date"),
    ("getConversion", {"start": "2016-01-01", "end": "2026-12-31", "granularity": "month"}, 400, "InvalidRequest",
     "at most 3660"),
    ("getOverview", {"end": "2026-02-30"}, 400, "InvalidRequest", "end must be a date"),
    ("getOverview", {"start": "2016-01-01", "end": "2026-12-31"}, 400, "InvalidRequest", "the overview covers at most"),
    ("getOverview", {"start": "2026-12-01", "end": "2026-12-01"}, 200, None, None),
])
async def test_bad_requests_say_what_is_wrong(money, name, params, status, error, says):
    ix, _, _ = money
    try:
        await ask(ix, name, **params)
    except XrpcError as exc:
        assert (exc.status, exc.error) == (status, error) and says in exc.message, exc.message
    else:
        assert status == 200


async def test_over_http_with_service_auth(money, http):  # noqa: F811
    ix, po1, _ = money
    params = {"artist": "artartartart.test", "start": "2026-12-01", "end": "2026-12-31", "granularity": "week"}
    for caller in (ART, MAX, OPS):
        nsid = NS + "getRevenue"
        resp = await http.get(f"/xrpc/{nsid}", params=params, headers=bearer(caller, nsid))
        assert resp.status_code == 200, resp.text
        assert resp.json()["totals"]["money"][0]["total"] == 2900 and resp.json()["payouts"]["made"][0]["id"] == po1
    for caller in (SUE, MEG):
        resp = await http.get(f"/xrpc/{NS}getRevenue", params=params, headers=bearer(caller, NS + "getRevenue"))
        assert resp.status_code == 403 and resp.json()["error"] == "Forbidden"
    resp = await http.get(f"/xrpc/{NS}getRevenue", params=params, headers=bearer(ART, NS + "getStreams"))  # wrong lxm
    assert resp.status_code == 401 and resp.json()["error"] == "InvalidToken"
    resp = await http.get(f"/xrpc/{NS}getOverview", params={"start": "2026-12-01", "end": "2026-12-31"},
                          headers=bearer(OPS, NS + "getOverview"))
    assert resp.status_code == 200 and resp.json()["money"][0]["mrr"] == 4495
    assert resp.json()["indexing"]["firehoseConnected"] is False  # this runtime runs no firehose
    resp = await http.get(f"/xrpc/{NS}getOverview", params={"start": "2026-12-01", "end": "2026-12-02"},
                          headers=bearer(MAX, NS + "getOverview"))
    assert resp.status_code == 403 and "only an operator" in resp.json()["message"]
    resp = await http.get(f"/xrpc/{NS}getConversion", params={"start": "2026-12-01", "end": "2026-12-31"},
                          headers=bearer(OPS, NS + "getConversion"))
    assert resp.status_code == 200 and resp.json()["conversionRateBps"] == 6667
    resp = await http.get(f"/xrpc/{NS}getConversion", params={"start": "Dec 1"}, headers=bearer(OPS, NS + "getConversion"))
    assert resp.status_code == 400 and resp.json() == {
        "error": "InvalidRequest", "message": "start must be a date, YYYY-MM-DD (UTC), got 'Dec 1'"}


async def test_ledger_day_equals_a_recount_of_the_ledger(money):
    """Migration 0014's ``ledger_day`` (kept by a trigger on each posting) equals the ledger grouped
    by day, transaction kind, currency and account class (``payments.ledger.summary``'s classes)."""
    ix, _, _ = money
    cls = "CASE WHEN instr(e.account, 'did:') THEN substr(e.account, 1, instr(e.account, 'did:') - 2) ELSE e.account END"
    recount = await ix.sql(f"SELECT substr(t.created_at, 1, 10), t.kind, e.currency, {cls}, SUM(e.amount), COUNT(*) "
                           f"FROM ledger_entry e JOIN ledger_txn t ON t.id = e.txn_id GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")
    kept = await ix.sql("SELECT day, kind, currency, account, amount, entries FROM ledger_day ORDER BY 1, 2, 3, 4")
    assert kept == recount and len(kept) > 20
    assert ("2026-12-11", "payout", "USD", "payouts:pending", -2700, 1) in kept
    assert {k[3] for k in kept} >= {"credit", "earnings", "subscription", "platform:revenue", "ads:pool", "stripe:holding"}
