"""A suspended or taken-down listener counts for nothing while so (issue 14; ``indexer.standing``).

On ``tests.test_charts``' worked example (a real SQLite index fed with decoded events), a
``!suspend`` label on the fan F3 (who streamed S1, S2 and S3, liked S2, voted on S2 and S3 and tipped
S3), stored by a ``LabelStore`` as a labeler's stream would, makes F3's plays, streams, seconds heard,
likes, votes, reviews and follows vanish from the track stats (``getTrackStats``), the rollups and
the analytics, the charts (top, trending, tipped), the vote breakdown, the profile counts and the
recommendation model's input, and equal a recount from the records of everyone else; what F3 does
while suspended counts for nothing either; negating the label brings every figure back, equal to
a recount of everyone. A ``#account`` deactivation on top of the label (and the other way round)
never takes F3 out twice nor brings it back early. A label the store committed without the catch-up
that follows (a crash between the two) is caught up by the next sweep; an account suspended before
it was ever seen is never counted.

Money, on ``tests.test_payouts_worked_example``'s worked example: a subscriber suspended when the
period closes is treated exactly like a subscriber who streamed nothing (the whole pool stays with
the platform, the same ledger memo), a deactivated free listener's streams get none of the ad pool,
every movement is a ledger transaction with its idempotency key, the books balance, and lifting the
suspension afterwards rewrites nothing of the closed period; lifted before the close, the split is
the worked example's to the cent.
"""

from __future__ import annotations

import sqlite3
from unittest import mock

from appview import analytics, queries, recommend, reputation
from appview import analytics_money as money
from core import db
from core.lexicons import FOLLOW, LIKE, PLAY, REVIEW, VOTE
from firehose.events import AccountEvent
from indexer import rollups, standing
from indexer.labels import LabelStore
from payments import ledger, period
from payments.subscriptions import record_invoice
from tests import test_payouts_worked_example as pay
from tests.test_charts import CHART, S, at, call, example, ranked  # noqa: F401  (example: a fixture)
from tests.test_indexer_units import commit, create, env, rkey  # noqa: F401  (env: a fixture)
from tests.test_labels import LABELER, lab, when
from tests.test_payouts_worked_example import ix as pay_ix  # noqa: F401  (a fixture: the payouts' index)
from tests.test_social_records import FANS

F3 = FANS[3]
ARTIST_B = FANS[7]
#: the worked example's charts, everyone counted (``tests.test_charts``)
TOP_WEEK = [("S2", 1, 5), ("S1", 2, 5), ("S3", 3, 2)]
TRENDING = [("S2", 1, 4663), ("S1", 2, 3915), ("S3", 3, 397), ("S4", 4, 100)]
#: ... and with F3 suspended: S1 and S2 lose a stream each and S3 one (F3's like of S2 goes, so S2
#: and S1 tie at 4 and the newer S2 leads); trending loses F3's listening days (S2 630 @2, S1 500 @3,
#: S3 397 @4) and votes (S2 +63, S3 -397)
TOP_WEEK_WITHOUT_F3 = [("S2", 1, 4), ("S1", 2, 4), ("S3", 3, 1)]
TRENDING_WITHOUT_F3 = [("S2", 1, 4663 - 630 - 63), ("S1", 2, 3915 - 500), ("S3", 3, 397 - 397 + 397),
                       ("S4", 4, 100)]


# -- what is counted, and what the records say it should be -----------------------------------------

def aggregates(path: str) -> dict[str, list]:
    """Every incremental aggregate the indexer keeps, listeners by DID, rows at all zeros left out."""
    c = sqlite3.connect(path)
    out = {
        "track_stats": c.execute("SELECT * FROM track_stats WHERE plays OR likes OR listened_ms ORDER BY 1").fetchall(),
        "track_listener": c.execute("SELECT * FROM track_listener ORDER BY 1, 2").fetchall(),
        "track_day": c.execute("SELECT * FROM track_day ORDER BY 1, 2").fetchall(),
        "track_day_listener": c.execute(
            "SELECT l.track_uri, l.day, i.did, l.country, l.plays, l.streams, l.listened_ms FROM track_day_listener l "
            "JOIN analytics_listener i ON i.id = l.listener ORDER BY 1, 2, 3, 4").fetchall(),
        "track_second": c.execute("SELECT * FROM track_second WHERE heard OR replayed OR stops ORDER BY 1, 2").fetchall(),
    }
    for table in ("vote", "review", "follow"):
        out[f"{table}_current"] = c.execute(f"SELECT * FROM {table}_current ORDER BY 1, 2").fetchall()
    out["vote_count"] = c.execute("SELECT * FROM vote_count WHERE up OR down ORDER BY 1").fetchall()
    out["review_count"] = c.execute("SELECT * FROM review_count WHERE reviews ORDER BY 1").fetchall()
    out["follow_count"] = c.execute("SELECT * FROM follow_count WHERE followers ORDER BY 1").fetchall()
    c.close()
    return out


def recounted(path: str) -> dict[str, dict]:
    """``track_stats`` and ``vote_count`` as the raw records say, in Python, leaving out every account
    that is not active or is taken down (``actor``): an independent check of the incremental ones."""
    c = sqlite3.connect(path)
    out_ = {did for (did,) in c.execute("SELECT did FROM actor WHERE active = 0 OR hidden >= 2")}
    tracks = {uri for (uri,) in c.execute("SELECT uri FROM track")}
    stats_: dict[str, list] = {}
    for uri, did, heard, completed, stream, paid in c.execute(
            "SELECT track_uri, did, COALESCE(heard_ms, 0), completed, stream, paid FROM play"):
        if did in out_:
            continue
        s = stats_.setdefault(uri, [0, set(), 0, 0, 0, 0, set()])
        s[0] += 1
        s[1].add(did)
        s[2] += heard
        s[3] += completed
        s[4] += bool(stream and paid)
        s[5] += bool(stream and not paid)
    for uri, did in c.execute("SELECT subject_uri, did FROM like_record"):
        if did not in out_ and uri in tracks:
            stats_.setdefault(uri, [0, set(), 0, 0, 0, 0, set()])[6].add(did)
    latest: dict[tuple[str, str], str] = {}
    for did, subject, direction in c.execute("SELECT did, subject, direction FROM vote ORDER BY created_at, rkey"):
        if did not in out_:
            latest[(did, subject)] = direction
    votes: dict[str, list[int]] = {}
    for (_did, subject), direction in latest.items():
        votes.setdefault(subject, [0, 0])[0 if direction == "up" else 1] += 1
    c.close()
    return {"track_stats": {uri: (s[0], len(s[1]), s[2], s[3], s[4], s[5], len(s[6])) for uri, s in stats_.items()},
            "vote_count": {subject: tuple(v) for subject, v in votes.items()}}


def stored(path: str) -> dict[str, dict]:
    c = sqlite3.connect(path)
    got = {"track_stats": {r[0]: tuple(r[1:]) for r in c.execute(
               "SELECT track_uri, plays, listeners, listened_ms, completions, paid_streams, free_streams, likes "
               "FROM track_stats WHERE plays OR likes")},
           "vote_count": {r[0]: tuple(r[1:]) for r in c.execute("SELECT subject, up, down FROM vote_count WHERE up OR down")}}
    c.close()
    return got


def consistent(path: str) -> None:
    """The aggregates equal the records of the accounts in standing: the stats and votes by an
    independent recount, the rollups by ``rollups.check``; no account is left out of step."""
    assert stored(path) == recounted(path)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("BEGIN")
    differing, lines = rollups.check(c)
    c.execute("ROLLBACK")
    assert not any(differing.values()), lines
    assert c.execute(f"SELECT did FROM actor WHERE {standing.STALE}").fetchall() == []
    c.close()


async def labels(path: str) -> LabelStore:
    store = LabelStore(await db.connect(path), [LABELER])
    await store.open()
    return store


async def listeners_of(views, artist: str) -> list[str]:
    out = await analytics.get_top_listeners(views, frozenset(), artist, {"artist": artist, "limit": 50})
    return [x["handle"] for x in out["listeners"]]


async def track_stats(views, n: int) -> tuple:
    s = await queries.get_track_stats(views, {"uri": S[n]})
    return s["plays"], s["uniqueListeners"], s["paidStreams"] + s["freeStreams"], s["likes"], s["votesUp"], s["votesDown"]


# -- the charts' worked example ------------------------------------------------------------------

async def test_suspension_takes_everything_out_and_negation_brings_it_back(example, env):  # noqa: F811
    views, path = example
    ix, _views, _path = env
    feed_seq = 50_000
    # F3 also reviews S1 and follows A, so that every tally has something of F3's
    await ix.apply([commit(feed_seq, F3, 90, create(REVIEW, rkey(901), {
        "$type": REVIEW, "subject": {"uri": S[1], "cid": "bafyreia"}, "rating": 5, "createdAt": at(1)}),
        create(FOLLOW, rkey(902), {"$type": FOLLOW, "subject": S[1].split("/")[2], "createdAt": at(1)}))], feed_seq)
    consistent(path)
    everyone = aggregates(path)
    assert ranked(await call(views, CHART, chart="top")) == TOP_WEEK
    assert ranked(await call(views, CHART, chart="trending")) == TRENDING
    assert ranked(await call(views, CHART, chart="tipped", currency="EUR")) == [("S3", 1, 1000)]
    assert await track_stats(views, 2) == (5, 5, 5, 1, 3, 0)  # F5's up vote counts here, weighs 0 in trending
    assert "fan03.test" in await listeners_of(views, ARTIST_B)
    received = (await queries.get_profile(views, {"actor": ARTIST_B}))["playsReceivedCount"]
    model_listeners = recommend.load_model(path).listeners
    store = await labels(path)
    try:
        await store.apply(LABELER, 1, [lab(F3, "!suspend", cts=when(-10))])
        assert store.counters["applied"] == 1
        consistent(path)
        without = aggregates(path)
        assert without != everyone
        dids = {row[2] for row in without["track_day_listener"]} | {row[1] for row in without["track_listener"]}
        assert F3 not in dids and F3 not in {row[1] for rows in ("vote_current", "review_current", "follow_current")
                                             for row in without[rows]}
        assert without["review_count"] == [] and without["follow_count"] == []
        # every figure, as if F3 had never listened
        assert ranked(await call(views, CHART, chart="top")) == TOP_WEEK_WITHOUT_F3
        assert ranked(await call(views, CHART, chart="trending")) == TRENDING_WITHOUT_F3
        assert ranked(await call(views, CHART, chart="tipped", currency="EUR")) == []
        assert ranked(await call(views, CHART, chart="tipped")) == [("S1", 1, 500), ("S2", 2, 300)]  # not F3's
        assert await track_stats(views, 2) == (4, 4, 4, 0, 2, 0)
        assert await track_stats(views, 3) == (1, 1, 1, 0, 0, 0)
        breakdown = await reputation.get_vote_breakdown(views, {"uri": S[2], "limit": 50})
        assert F3 not in [v["voter"]["did"] for v in breakdown["votes"]] and breakdown["votesUp"] == 2
        streams = await analytics.get_streams(views, frozenset(), ARTIST_B, {"track": S[3]})
        assert (streams["totals"]["plays"], streams["totals"]["uniqueListeners"]) == (1, 1)
        assert "fan03.test" not in await listeners_of(views, ARTIST_B)
        assert (await queries.get_profile(views, {"actor": ARTIST_B}))["playsReceivedCount"] == received - 1
        assert recommend.load_model(path).listeners == model_listeners - 1

        await store.apply(LABELER, 2, [lab(F3, "!suspend", neg=True, cts=when(-5))])
        assert store.counters["negated"] == 1
        consistent(path)
        assert aggregates(path) == everyone
        assert ranked(await call(views, CHART, chart="top")) == TOP_WEEK
        assert ranked(await call(views, CHART, chart="trending")) == TRENDING
        assert ranked(await call(views, CHART, chart="tipped", currency="EUR")) == [("S3", 1, 1000)]
        assert await track_stats(views, 2) == (5, 5, 5, 1, 3, 0)
        assert "fan03.test" in await listeners_of(views, ARTIST_B)
        assert recommend.load_model(path).listeners == model_listeners
    finally:
        await store.conn.close()


async def test_what_a_suspended_listener_does_meanwhile_counts_once_it_is_back(example, env):  # noqa: F811
    views, path = example
    ix, _views, _path = env
    store = await labels(path)
    try:
        await store.apply(LABELER, 1, [lab(F3, "!suspend", cts=when(-10))])
        without = aggregates(path)
        # while suspended F3 streams S1, likes it and changes its vote on S3 from down to up
        await ix.apply([commit(60_000, F3, 95, create(PLAY, rkey(950), {
            "$type": PLAY, "track": {"uri": S[1], "cid": "bafyreia"}, "listenedMs": 60_000, "createdAt": at(0)}),
            create(LIKE, rkey(951), {"$type": LIKE, "subject": {"uri": S[1], "cid": "bafyreia"}, "createdAt": at(0)}),
            create(VOTE, rkey(952), {"$type": VOTE, "subject": {"uri": S[3], "cid": "bafyreia"}, "direction": "up",
                                     "createdAt": at(0, 180)}))], 60_000)
        assert aggregates(path) == without  # nothing of it counts
        consistent(path)
        assert await track_stats(views, 1) == (4, 4, 4, 0, 3, 1)
        assert await track_stats(views, 3) == (1, 1, 1, 0, 0, 0)
        await store.apply(LABELER, 2, [lab(F3, "!suspend", neg=True, cts=when(-5))])
        consistent(path)
        assert await track_stats(views, 1) == (6, 5, 6, 1, 3, 1)  # all of it counts, as it is now
        assert await track_stats(views, 3) == (2, 2, 2, 0, 1, 0)
        assert ranked(await call(views, CHART, chart="top", period="day")) == [("S1", 1, 3)]
    finally:
        await store.conn.close()


async def test_account_events_and_labels_never_take_out_or_bring_back_twice(example, env):  # noqa: F811
    views, path = example
    ix, _views, _path = env
    everyone = aggregates(path)
    seq = 70_000

    async def account(active: bool) -> None:
        nonlocal seq
        seq += 1
        await ix.apply([AccountEvent(seq=seq, did=F3, active=active, status=None if active else "deactivated",
                                     time="")], seq)

    store = await labels(path)
    try:
        await store.apply(LABELER, 1, [lab(F3, "!suspend", cts=when(-10))])
        without = aggregates(path)
        assert without != everyone
        await account(False)  # deactivated on top of the label: already out
        assert aggregates(path) == without
        await account(True)  # reactivated, but the label still holds
        assert aggregates(path) == without
        consistent(path)
        await store.apply(LABELER, 2, [lab(F3, "!suspend", neg=True, cts=when(-8))])
        assert aggregates(path) == everyone
        # the other way round: deactivated first, then suspended, the label lifted, then reactivated
        await account(False)
        assert aggregates(path) == without
        await store.apply(LABELER, 3, [lab(F3, "!takedown", cts=when(-6))])
        assert aggregates(path) == without
        await store.apply(LABELER, 4, [lab(F3, "!takedown", neg=True, cts=when(-4))])
        assert aggregates(path) == without  # still deactivated
        consistent(path)
        await account(True)
        assert aggregates(path) == everyone
        consistent(path)
        assert ranked(await call(views, CHART, chart="trending")) == TRENDING
    finally:
        await store.conn.close()


async def test_a_label_committed_without_its_catch_up_is_caught_up_by_the_sweep(example):  # noqa: F811
    """A crash between the label store's commit and the catch-up that follows it: ``actor.counted``
    remembers what the aggregates hold, so the next sweep (or start) moves the account then."""
    views, path = example
    everyone = aggregates(path)
    store = await labels(path)
    try:
        with mock.patch("indexer.labels.stats.catch_up_async", mock.AsyncMock(return_value={})):
            await store.apply(LABELER, 1, [lab(F3, "!suspend", cts=when(-10))])
        assert aggregates(path) == everyone  # still counted: the catch-up never ran
        c = sqlite3.connect(path)
        assert c.execute(f"SELECT did FROM actor WHERE {standing.STALE}").fetchall() == [(F3,)]
        plan = " ".join(r[3] for r in c.execute(f"EXPLAIN QUERY PLAN SELECT did FROM actor WHERE {standing.STALE}"))
        assert "actor_counted_stale" in plan  # the partial index of migration 0026: no scan of every account
        plan = " ".join(r[3] for r in c.execute(f"EXPLAIN QUERY PLAN {standing.OUT_OF_STANDING_SQL}"))
        assert "actor_out_of_standing" in plan
        c.close()
        assert await store.sweep() == 0  # the flags were in step with the labels ...
        consistent(path)  # ... and the sweep's catch-up took F3 out
        assert ranked(await call(views, CHART, chart="trending")) == TRENDING_WITHOUT_F3
    finally:
        await store.conn.close()


async def test_an_account_suspended_before_it_was_seen_is_never_counted(example, env):  # noqa: F811
    views, path = example
    ix, _views, _path = env
    newcomer = "did:plc:newcomernewcomernewcomer"
    store = await labels(path)
    try:
        await store.apply(LABELER, 1, [lab(newcomer, "!suspend", cts=when(-10))])
        assert store.counters["pending_subject"] == 1
        await ix.apply([commit(80_000, newcomer, 1, create(PLAY, rkey(960), {
            "$type": PLAY, "track": {"uri": S[1], "cid": "bafyreia"}, "listenedMs": 60_000, "createdAt": at(0)}))],
            80_000)
        c = sqlite3.connect(path)
        assert c.execute("SELECT hidden, counted FROM actor WHERE did = ?", (newcomer,)).fetchone() == (2, 0)
        c.close()
        consistent(path)
        assert (await track_stats(views, 1))[0] == 5
        await store.apply(LABELER, 2, [lab(newcomer, "!suspend", neg=True, cts=when(-5))])
        consistent(path)
        assert (await track_stats(views, 1))[0] == 6
    finally:
        await store.conn.close()


async def test_conversion_counts_listeners_in_standing_and_every_converter(example):  # noqa: F811
    """``getConversion``'s network figures (``analytics_money.free_to_paid``): the listeners active
    in the period and the converters among them are those in standing (subtracted through
    ``standing.OUT_OF_STANDING_SQL``); the converters themselves are money and stay."""
    views, path = example
    c = sqlite3.connect(path, isolation_level=None)
    for inv, did, start, end in (("in_f3", F3, at(30), at(-30)), ("in_f2", FANS[2], at(2), at(-28))):
        c.execute("INSERT INTO subscription_invoice (id, subscription, did, tier, status, period_start, period_end, "
                  "amount_paid, currency, updated_at) VALUES (?, ?, ?, 'plus', 'paid', ?, ?, 999, 'USD', ?)",
                  (inv, f"sub_{inv}", did, start, end, start))
    c.close()
    first, last = at(6)[:10], at(0)[:10]
    # streamed in the week: F0..F5 and A; F3 held a paid tier when it began; F2 converted in it
    assert await money.free_to_paid(views, first, last) == {
        "converters": 1, "activeFreeListeners": 6, "convertedActive": 1, "conversionRateBps": 1667}
    store = await labels(path)
    try:
        await store.apply(LABELER, 1, [lab(did, "!suspend", cts=when(-10)) for did in (F3, FANS[2], FANS[4])])
        assert await money.free_to_paid(views, first, last) == {
            "converters": 1, "activeFreeListeners": 4, "convertedActive": 0, "conversionRateBps": 0}
    finally:
        await store.conn.close()


# -- money: the payouts' worked example ----------------------------------------------------------

NO_PLAYS = "did:plc:subscribernnnnnnnnnnnnnn"


async def listen_and_subscribe(ix) -> None:
    """``test_payouts_worked_example``'s listening, invoices and ad pool, and a fourth subscriber
    (``NO_PLAYS``, 3.00) who streamed nothing."""
    await ix.apply([
        commit(1, pay.X, 1, create(pay.TRACK, rkey(1), pay.track(
            "x1", splits=[{"did": pay.X, "shareBps": 7000}, {"did": pay.Y, "shareBps": 3000}]))),
        commit(2, pay.Y, 1, create(pay.TRACK, rkey(2), pay.track("y1"))),
        commit(3, pay.A, 1, create(pay.PLAY, rkey(10), pay.play(pay.X1, 600, 3)),
               create(pay.PLAY, rkey(11), pay.play(pay.Y1, 300, 4))),
        commit(4, pay.B, 1, create(pay.PLAY, rkey(12), pay.play(pay.Y1, 100, 5))),
        commit(5, pay.C, 1, create(pay.PLAY, rkey(13), pay.play(pay.X1, 200, 6)),
               create(pay.PLAY, rkey(14), pay.play(pay.Y1, 100, 7))),
        commit(6, pay.D, 1, create(pay.PLAY, rkey(15), pay.play(pay.X1, 300, 8))),
        commit(7, pay.E, 1, create(pay.PLAY, rkey(16), pay.play(pay.Y1, 100, 9)),
               create(pay.PLAY, rkey(17), pay.play(pay.Y1, 20, 9))),
    ], 7)
    for did, inv, amount, fee in ((pay.A, "in_A", 1099, 99), (pay.B, "in_B", 999, 0), (pay.C, "in_C", 530, 30),
                                  (NO_PLAYS, "in_N", 300, 0)):
        assert await ix.transact(record_invoice, pay.invoice(inv, amount), fee, f"sub_{inv}", did, "plus") == 1
    assert await ix.transact(period.enter_ad_revenue, "2026-11", 1000, "USD")
    assert await pay.stats(ix, pay.X1) == (2, 1) and await pay.stats(ix, pay.Y1) == (3, 1)


def books(tx: sqlite3.Connection) -> dict[str, int]:
    return {acct: ledger.balance(tx, acct, "USD") for acct in
            (ledger.earnings(pay.X), ledger.earnings(pay.Y), period.PLATFORM, period.AD_POOL,
             period.subscription(pay.A), period.subscription(pay.B), period.subscription(pay.C),
             period.subscription(NO_PLAYS))}


async def test_a_suspended_subscribers_pool_is_not_paid_to_the_artists_they_heard(pay_ix):  # noqa: F811
    ix = pay_ix
    await listen_and_subscribe(ix)
    store = await labels(ix.db_path)
    try:
        await store.apply(LABELER, 1, [lab(pay.C, "!suspend", cts=when(-10))])
        await ix.apply([AccountEvent(seq=100, did=pay.E, active=False, status="deactivated", time="")], 100)
        # C's two paid streams and E's free one are out of the stats too
        assert await pay.stats(ix, pay.X1) == (1, 1) and await pay.stats(ix, pay.Y1) == (2, 0)
        report = await ix.transact(period.close_period, "2026-11", 3000, "salt", "2026-12-02T00:00:00.000Z")
        assert (report.invoices, report.waiting, report.ads) == (4, 0, True)
        # A: X 327, Y 373 and B: Y 700 as in the worked example; C's 500 and N's 300 stay with the
        # platform whole; the ad pool goes to D's x1 alone (E is deactivated): X 700, Y 300
        assert await ix.run(lambda: books(ix.conn)) == {
            ledger.earnings(pay.X): 327 + 700, ledger.earnings(pay.Y): 373 + 700 + 300,
            period.PLATFORM: 300 + 299 + 500 + 300,
            period.AD_POOL: 0, period.subscription(pay.A): 0, period.subscription(pay.B): 0,
            period.subscription(pay.C): 0, period.subscription(NO_PLAYS): 0}
        assert (report.to_artists, report.to_platform) == (1027 + 1373, 1399)
        # exactly what happens to a subscriber who streamed nothing: the same transaction, the same memo
        txns = {key: (memo, sorted(entries)) for key, memo, entries in await ix.run(lambda: [
            (key, memo, ix.conn.execute("SELECT account, amount FROM ledger_entry WHERE txn_id = ?", (tid,)).fetchall())
            for tid, key, memo in ix.conn.execute("SELECT id, idem_key, memo FROM ledger_txn WHERE idem_key IN "
                                                  "('share:in_C', 'share:in_N')").fetchall()])}
        assert txns["share:in_C"][0] == txns["share:in_N"][0] is not None
        assert txns["share:in_C"][1] == [(period.PLATFORM, 500), (period.subscription(pay.C), -500)]
        assert await ix.sql("SELECT count(*) FROM earning_line WHERE source = ?",
                            (period.opaque("invoice", "in_C", "salt"),)) == [(0,)]
        assert await ix.run(lambda: ledger.check(ix.conn)) == []
        lines = await ix.sql("SELECT * FROM earning_line ORDER BY id")

        # lifted after the close: the closed period stays as it was closed
        await store.apply(LABELER, 2, [lab(pay.C, "!suspend", neg=True, cts=when(-5))])
        await ix.apply([AccountEvent(seq=101, did=pay.E, active=True, status=None, time="")], 101)
        assert await pay.stats(ix, pay.X1) == (2, 1) and await pay.stats(ix, pay.Y1) == (3, 1)
        again = await ix.transact(period.close_period, "2026-11", 3000, "salt", "2026-12-09T00:00:00.000Z")
        assert (again.invoices, again.ads, again.to_artists, again.to_platform) == (0, False, 0, 0)
        assert await ix.sql("SELECT * FROM earning_line ORDER BY id") == lines
        assert (await ix.run(lambda: books(ix.conn)))[ledger.earnings(pay.X)] == 1027
        assert await ix.run(lambda: ledger.check(ix.conn)) == []
    finally:
        await store.conn.close()


async def test_a_suspension_lifted_before_the_close_changes_nothing(pay_ix):  # noqa: F811
    ix = pay_ix
    await listen_and_subscribe(ix)
    store = await labels(ix.db_path)
    try:
        await store.apply(LABELER, 1, [lab(pay.C, "!takedown", cts=when(-10))])
        assert await pay.stats(ix, pay.X1) == (1, 1)
        await store.apply(LABELER, 2, [lab(pay.C, "!takedown", neg=True, cts=when(-5))])
        report = await ix.transact(period.close_period, "2026-11", 3000, "salt", "2026-12-02T00:00:00.000Z")
        assert (report.to_artists, report.to_platform) == (1015 + 1735, 749 + 300)  # the worked example, and N
        balances = await ix.run(lambda: books(ix.conn))
        assert (balances[ledger.earnings(pay.X)], balances[ledger.earnings(pay.Y)]) == (1015, 1735)
        assert await ix.run(lambda: ledger.check(ix.conn)) == []
    finally:
        await store.conn.close()


async def test_tracks_whose_audio_is_down_earn_nothing_at_the_close(pay_ix):  # noqa: F811
    """A track whose audio is taken down after a copyright claim (``audio-takedown`` from a labeler
    we follow) at close time earns nothing in that close, like a deleted track: its subscribers'
    pools go to the other tracks they heard, or stay with the platform. The books balance."""
    ix = pay_ix
    await listen_and_subscribe(ix)
    store = await labels(ix.db_path)
    try:
        await store.apply(LABELER, 1, [lab(pay.X1, "audio-takedown", cts=when(-10))])
        report = await ix.transact(period.close_period, "2026-11", 3000, "salt", "2026-12-02T00:00:00.000Z")
        assert report.invoices == 4
        balances = await ix.run(lambda: books(ix.conn))
        assert balances[ledger.earnings(pay.X)] == 0  # X earns only from x1 (70 % of its splits)
        assert balances[ledger.earnings(pay.Y)] > 1735  # y1 gets what x1 would have had of A's and C's pools
        lines = await ix.sql("SELECT count(*) FROM earning_line WHERE track_uri = ?", (pay.X1,))
        assert lines == [(0,)]
        assert await ix.run(lambda: ledger.check(ix.conn)) == []
    finally:
        await store.conn.close()
