"""The worked example of issue 5, by hand: three subscribers, two artists, a free tier with an ad
pool, known listening. The period close must reproduce the hand-computed split to the cent, with
no cent created or lost, and running it again (or too early) must change nothing.

Artist X's track x1 is split X 70% / Y 30%; artist Y's track y1 is Y's alone. Platform share 30%.

Subscriber A: invoice 10.99, Stripe fee 0.99 -> net 1000: platform 300, pool 700.
  heard x1 600 s, y1 300 s -> weights (x1,X) 600*7000, (x1,Y) 600*3000, (y1,Y) 300*10000 (of 9e9 in ms*bps)
  exact shares 326.67, 140.00, 233.33 -> floors 326, 140, 233 (699) -> the cent left goes to the
  largest remainder (x1,X): X 327, Y 140 + 233 = 373.
Subscriber B: invoice 9.99, no fee -> net 999: platform floor(299.7) = 299, pool 700; heard y1 100 s -> Y 700.
Subscriber C: invoice 5.30, fee 0.30 -> net 500: platform 150, pool 350.
  heard x1 200 s, y1 100 s -> exact 163.33 (x1,X), 70.00 (x1,Y), 116.67 (y1,Y) -> floors 349 -> the
  cent goes to (y1,Y): X 163, Y 70 + 117 = 187.
Ad pool 10.00 for 2026-11, free listening: D heard x1 300 s, E heard y1 100 s (and 20 s of y1,
  under the 30 s threshold: not a stream) -> (x1,X) 525, (x1,Y) 225, (y1,Y) 250.

X: 327 + 163 + 525 = 1015.  Y: 373 + 700 + 187 + 225 + 250 = 1735.  Platform: 300 + 299 + 150 = 749.
1015 + 1735 + 749 = 3499 = 1000 + 999 + 500 + 1000.
"""

import json
import shutil
import time
from datetime import UTC, datetime
from unittest import mock

import pytest

from appview import queries
from appview.views import ViewContext
from core import db
from core.config import Settings
from core.identity import IdentityResolver, IdentityService
from indexer.core import Indexer
from payments import ledger, period
from payments.subscriptions import record_invoice
from tests.test_indexer_units import PLAY, TRACK, commit, create, rkey

X = "did:plc:artistxartistxartistxaaa"
Y = "did:plc:artistyartistyartistyaaa"
A, B, C = "did:plc:subscriberaaaaaaaaaaaaa", "did:plc:subscriberbbbbbbbbbbbbb", "did:plc:subscribercccccccccccccc"
D, E = "did:plc:freelistenerdddddddddddd", "did:plc:freelistenereeeeeeeeeeee"
X1, Y1 = f"at://{X}/{TRACK}/{rkey(1)}", f"at://{Y}/{TRACK}/{rkey(2)}"
CID = "bafyreia"
NOV, DEC = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp()), int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())


def track(title: str, **extra) -> dict:
    from tests.records import track as base
    return base(title, duration=900_000, createdAt="2026-10-01T00:00:00.000Z", **extra)


def play(track_uri: str, seconds: int, day: int) -> dict:
    return {"$type": PLAY, "track": {"uri": track_uri, "cid": CID}, "listenedMs": seconds * 1000,
            "createdAt": f"2026-11-{day:02d}T10:00:00.000Z"}


def invoice(inv_id: str, amount: int) -> dict:
    return {"id": inv_id, "object": "invoice", "status": "paid", "amount_paid": amount, "currency": "usd",
            "lines": {"data": [{"type": "subscription", "period": {"start": NOV, "end": DEC}}]}}


class Clock:
    """The indexer's clock, set by the test: plays earn only when indexed within a week of their
    ``createdAt`` (``indexer.streams``), so these November plays are indexed in November."""

    now = "2026-11-09T12:00:00.000Z"

    def __call__(self) -> str:
        return self.now


@pytest.fixture
async def ix(tmp_path):
    clock = Clock()
    with mock.patch("indexer.core.now_iso", clock):
        async for ix in _indexer(tmp_path):
            ix.clock = clock
            yield ix


async def _indexer(tmp_path):
    path = str(tmp_path / "w.sqlite")
    db.migrate(path)
    conn = await db.connect(path)
    for did in (X, Y, A, B, C, D, E):
        await conn.execute("INSERT INTO actor (did, handle, handle_verified, active, resolved_at) VALUES (?,?,1,1,?)",
                           (did, did[8:20] + ".test", time.time()))
    ix = Indexer(path, "test")
    await ix.open()
    await ix.load_state()
    settings = Settings(db_path=path)
    ix.views = ViewContext(conn, IdentityService(settings, conn, IdentityResolver(settings, None)), "http://x")
    yield ix
    await ix.close()
    await conn.close()


async def stats(ix, uri: str) -> tuple[int, int]:
    s = await queries.get_track_stats(ix.views, {"uri": uri})
    return s["paidStreams"], s["freeStreams"]


async def test_worked_example_to_the_cent(ix):
    await ix.apply([
        commit(1, X, 1, create(TRACK, rkey(1), track("x1", splits=[{"did": X, "shareBps": 7000},
                                                                     {"did": Y, "shareBps": 3000}]))),
        commit(2, Y, 1, create(TRACK, rkey(2), track("y1"))),
        commit(3, A, 1, create(PLAY, rkey(10), play(X1, 600, 3)), create(PLAY, rkey(11), play(Y1, 300, 4))),
        commit(4, B, 1, create(PLAY, rkey(12), play(Y1, 100, 5))),
        commit(5, C, 1, create(PLAY, rkey(13), play(X1, 200, 6)), create(PLAY, rkey(14), play(Y1, 100, 7))),
        commit(6, D, 1, create(PLAY, rkey(15), play(X1, 300, 8))),
        commit(7, E, 1, create(PLAY, rkey(16), play(Y1, 100, 9)), create(PLAY, rkey(17), play(Y1, 20, 9))),
    ], 7)
    # the plays came before the webhooks: everything is a free stream for now (the 20 s play is none)
    assert await stats(ix, X1) == (0, 3) and await stats(ix, Y1) == (0, 4)
    for did, inv, amount, fee in ((A, "in_A", 1099, 99), (B, "in_B", 999, 0), (C, "in_C", 530, 30)):
        assert await ix.transact(record_invoice, invoice(inv, amount), fee, f"sub_{did[-1]}", did, "plus") == 1
    assert await ix.transact(record_invoice, invoice("in_A", 1099), 99, "sub_a", A, "plus") == 0  # replayed webhook
    assert await stats(ix, X1) == (2, 1) and await stats(ix, Y1) == (3, 1)
    assert await ix.transact(period.enter_ad_revenue, "2026-11", 1000, "USD")
    assert not await ix.transact(period.enter_ad_revenue, "2026-11", 5000, "USD")  # entered once

    early = await ix.transact(period.close_period, "2026-11", 3000, "salt", "2026-11-20T00:00:00.000Z")
    assert (early.invoices, early.waiting, early.ads, early.to_artists) == (0, 3, False, 0)

    report = await ix.transact(period.close_period, "2026-11", 3000, "salt", "2026-12-02T00:00:00.000Z")
    assert (report.invoices, report.waiting, report.ads) == (3, 0, True)
    assert (report.to_artists, report.to_platform) == (1015 + 1735, 749)

    def balances(tx):
        return {acct: ledger.balance(tx, acct, "USD") for acct in
                (ledger.earnings(X), ledger.earnings(Y), period.PLATFORM, period.AD_POOL,
                 period.subscription(A), period.subscription(B), period.subscription(C))}
    assert await ix.run(lambda: balances(ix.conn)) == {
        ledger.earnings(X): 1015, ledger.earnings(Y): 1735, period.PLATFORM: 749, period.AD_POOL: 0,
        period.subscription(A): 0, period.subscription(B): 0, period.subscription(C): 0}
    assert await ix.run(lambda: ledger.check(ix.conn)) == []

    lines = await ix.sql("SELECT kind, artist, track_uri, listened_ms, pool_ms, pool, share_bps, amount FROM earning_line "
                         "ORDER BY kind, source, track_uri, artist")
    by = {}
    for kind, artist, track_uri, *_rest, amount in lines:
        by[(kind, artist, track_uri)] = by.get((kind, artist, track_uri), 0) + amount
    assert by == {("ad_share", X, X1): 525, ("ad_share", Y, X1): 225, ("ad_share", Y, Y1): 250,
                  ("subscription_share", X, X1): 327 + 163, ("subscription_share", Y, X1): 140 + 70,
                  ("subscription_share", Y, Y1): 233 + 700 + 117}
    a_lines = [row for row in lines if row[0] == "subscription_share" and row[4] == 900_000]  # A heard 900 s in all
    assert sorted((r[1], r[2], r[3], r[5], r[6], r[7]) for r in a_lines) == sorted([
        (X, X1, 600_000, 700, 7000, 327), (Y, X1, 600_000, 700, 3000, 140), (Y, Y1, 300_000, 700, 10000, 233)])

    again = await ix.transact(period.close_period, "2026-11", 3000, "salt", "2026-12-09T00:00:00.000Z")
    assert (again.invoices, again.ads, again.to_artists) == (0, False, 0)
    assert len(await ix.sql("SELECT 1 FROM earning_line")) == len(lines)


async def test_streams_threshold_and_daily_cap(ix):
    ix.clock.now = "2026-11-11T12:00:00.000Z"
    short = {**track("short"), "duration": 40_000}  # half the track (20 s) is under 30 s
    await ix.apply([commit(1, X, 1, create(TRACK, rkey(1), short))], 1)
    plays = [create(PLAY, rkey(100 + i), play(X1, 25, 10)) for i in range(12)]  # 12 streams of 25 s in one day
    plays.append(create(PLAY, rkey(200), play(X1, 19, 11)))  # under half the track: not a stream
    plays.append(create(PLAY, rkey(201), play(X1, 25, 11)))  # a new day counts again
    await ix.apply([commit(2, D, 1, *plays)], 2)
    assert await stats(ix, X1) == (0, 10 + 1)
    s = await queries.get_track_stats(ix.views, {"uri": X1})
    assert s["plays"] == 14


def test_period_close_never_creates_or_loses_a_cent(tmp_path_factory):
    """Random catalogs, listening and fees: every cent of every net fee and of the ad pool ends up
    with an artist or the platform, no share is negative, and closing twice changes nothing."""

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from core.db import connect_sync

    artists = [f"did:plc:artist{i:016d}" for i in range(4)]
    template = str(tmp_path_factory.mktemp("template") / "t.sqlite")
    db.migrate(template)  # once: each example starts from a copy
    listen = st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(0, 900), st.booleans())

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 100)), min_size=1, max_size=6),
           st.lists(listen, max_size=30), st.integers(0, 10000), st.integers(0, 10000),
           st.lists(st.lists(st.integers(1, 100), min_size=1, max_size=3), min_size=4, max_size=4))
    def check(fees, listens, platform_bps, ads, split_weights):
        path = str(tmp_path_factory.mktemp("prop") / "p.sqlite")
        shutil.copy(template, path)
        tx = connect_sync(path)
        tx.isolation_level = None
        for t, weights in enumerate(split_weights):  # track t by artist t, shared among up to 3 artists
            total = sum(weights)
            bps = [w * 10000 // total for w in weights]
            bps[0] += 10000 - sum(bps)
            splits = [{"did": artists[(t + i) % 4], "shareBps": b} for i, b in enumerate(bps) if b]
            uri = f"at://{artists[t]}/{TRACK}/{rkey(t)}"
            tx.execute("INSERT INTO track (uri, did, rkey, cid, title, duration_ms, audio_cid, audio_mime, created_at, "
                       "sort_at, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (uri, artists[t], rkey(t), CID, "t", 900_000, "a", "audio/wav", "x", "x", "x"))
            tx.execute("INSERT INTO record (uri, did, collection, rkey, cid, json, indexed_at) VALUES (?,?,?,?,?,?,?)",
                       (uri, artists[t], TRACK, rkey(t), CID, json.dumps({"splits": splits}) if len(splits) > 1 else "{}",
                        "x"))
        subs = [f"did:plc:sub{i:019d}" for i in range(len(fees))]
        for n, (who, t, seconds, paid) in enumerate(listens):
            listener = subs[who % len(subs)] if paid else f"did:plc:free{who:020d}"
            tx.execute("INSERT INTO play (uri, did, rkey, cid, track_uri, track_cid, track_did, created_at, sort_at, "
                       "listened_ms, indexed_at, stream, paid, stream_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,1,?,?)",
                       (f"at://{listener}/{PLAY}/{rkey(n)}", listener, rkey(n), CID, f"at://{artists[t]}/{TRACK}/{rkey(t)}",
                        CID, artists[t], "2026-11-05T00:00:00.000Z", "2026-11-05T00:00:00.000Z", seconds * 1000,
                        "x", int(paid), seconds * 1000))
        tx.execute("BEGIN")
        for i, (amount, fee_pct) in enumerate(fees):
            record_invoice(tx, invoice(f"in_{i}", amount), amount * fee_pct // 100, f"sub_{i}", subs[i], "plus")
        if ads:
            period.enter_ad_revenue(tx, "2026-11", ads, "USD")
        report = period.close_period(tx, "2026-11", platform_bps, "salt", "2026-12-02T00:00:00.000Z")
        again = period.close_period(tx, "2026-11", platform_bps, "salt", "2026-12-03T00:00:00.000Z")
        tx.execute("COMMIT")
        nets = sum(a - a * f // 100 for a, f in fees)
        assert report.to_artists + report.to_platform == nets + ads
        assert (again.to_artists, again.to_platform, again.invoices) == (0, 0, 0)
        assert ledger.check(tx) == []
        shares = tx.execute("SELECT account, SUM(amount) FROM ledger_entry WHERE account LIKE 'earnings:%' "
                            "OR account = ? GROUP BY account", (period.PLATFORM,)).fetchall()
        assert all(v >= 0 for _, v in shares) and sum(v for _, v in shares) == nets + ads
        assert tx.execute("SELECT COALESCE(SUM(amount), 0) FROM earning_line").fetchone()[0] == report.to_artists
        leftover = tx.execute("SELECT COALESCE(SUM(amount), 0) FROM ledger_entry WHERE account LIKE 'subscription:%' "
                              "OR account = ?", (period.AD_POOL,)).fetchone()[0]
        assert leftover == 0
        tx.close()

    check()
