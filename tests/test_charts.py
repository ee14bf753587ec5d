"""Charts and browsing (``fm.openmusic.feed.getChart``, ``fm.openmusic.catalog.getBrowse``).

A worked example by hand on a real SQLite index fed with decoded events (``tests.test_indexer_units``'
``env``). T is today (UTC); "@k" means k days ago. Every play below hears 60 of 180 s: a stream.
Tracks (durations 180 s):

- S1 by A: jazz, moods Calm + Night, human; created T-30.
- S2 by A: rock, mood Energetic, assisted with tools Suno + Logic, splits A 60% / F5 40%; created
  T-20, releaseDate T-40.
- S3 by B: genre " Jazz " (jazz), mood calm, generated with tool suno; created T-10, releaseDate T-2
  (later than its creation: it counts as T-10).
- S4 by B: nothing but a title; created T-5.
- S5 by C: jazz; 5 streams today; C's account is then deactivated, so S5 is never shown.

Streams: S1: F0@0, F1@0, A@2, F2@3, F3@3 (5; today 2). S2: F0@1, F1@1, F2@1, F5@1, and F3@2 after
F3's vote that day (5). S3: F3@4, F4@4 (2). One more play of S4 by F0 today hears 1 s: no stream. F3 likes S2.

Every account was first seen a year ago and streamed on 30 earlier days (established:
``appview.reputation``'s age and history factors are 1).
Votes (each after the voter's plays that day): S1: F0 up @0 (counts: +1000), A up @2 (the artist:
0), F4 up @1 (never streamed S1: a tenth, 100 x 794 / 1000 = +79), F2 down @1 (streamed @3: -794).
S2: F1 up @1 (+794), F5 up @1 (a split recipient: 0), F3 up @2 (F3 streamed S2 only after voting:
100 x 630 / 1000 = +63). S3: F3 down @4 (-397). S4: F0 up @0 (F0's play of S4 was no stream: +100).

- top, week: S1 5 and S2 5 tie, S2 has a like: S2 (5), S1 (5), S3 (2). Day: S1 (2). All: as week.
- trending (W = 1000, 794, 630, 500, 397 for ages 0..4; each listener once per track and day):
  S2 = 4 x 794 + 630 + 794 + 63 = 4663; S1 = 2 x 1000 + 630 + 2 x 500 + 1000 + 79 - 794 = 3915;
  S3 = 2 x 397 - 397 = 397; S4 = 100.
- new: S4 (T-5), S3 (T-10), S1 (T-30), S2 (T-40); scores are those times in Unix seconds.
- tipped (USD unless said): F0 -> S1 500 @1 settled; F0 -> S1 200 @1 settled then refunded; F1 -> S2
  300 @0 settled; F2 -> S2 400 @10 settled; F4 -> S3 900 @0 not settled; F3 -> S3 1000 EUR @0
  settled. Week: S1 500, S2 300. Month: S2 700, S1 500. EUR: S3 1000.
- browse: 4 tracks; genres jazz 2, rock 1; moods calm 2, energetic 1, night 1; AI levels assisted,
  generated, human 1 each; tools suno 2, logic 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from appview import charts, reputation
from appview.charts import CHART_QUERIES
from appview.views import ViewContext
from appview.xrpc import XrpcError, validate_params
from core import db
from core.lexicons import LIKE, PLAY, TIP, TRACK, VOTE, validator
from firehose.events import AccountEvent
from tests.conftest import eventually
from tests.records import DID, play, track
from tests.test_indexer_units import commit, create, env, rkey  # noqa: F401  (env: a fixture)
from tests.test_social_records import FANS, add_fans

CHART, BROWSE = "fm.openmusic.feed.getChart", "fm.openmusic.catalog.getBrowse"
A, B, C = DID, FANS[7], FANS[6]
F = FANS
S = {n: f"at://{a}/{TRACK}/{rkey(n)}" for n, a in ((1, A), (2, A), (3, B), (4, B), (5, C))}
TODAY = datetime.now(UTC).date()


def at(days_ago: int, seconds: int = 60) -> str:
    """An atproto datetime ``days_ago`` UTC days before today, ``seconds`` after midnight."""
    moment = datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=UTC) - timedelta(days=days_ago, seconds=-seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def epoch(days_ago: int) -> int:
    return int(datetime.fromisoformat(at(days_ago).replace("Z", "+00:00")).timestamp())


class Feed:
    """Applies records as firehose commits: one sequence, and each repo's revisions in order."""

    def __init__(self, ix) -> None:
        self.ix, self.seq, self.revs, self.keys = ix, 0, {}, 100

    async def put(self, did: str, collection: str, record: dict, key: str | None = None) -> str:
        self.seq += 1
        self.revs[did] = self.revs.get(did, 0) + 1
        if key is None:
            self.keys += 1
            key = rkey(self.keys)
        await self.ix.apply([commit(self.seq, did, self.revs[did], create(collection, key, record))], self.seq)
        return f"at://{did}/{collection}/{key}"


def ref(n: int) -> dict:
    return {"uri": S[n], "cid": "bafyreia"}


async def worked_example(ix, views, path: str) -> None:
    await add_fans(views)
    feed = Feed(ix)
    await feed.put(A, TRACK, track("S1", genre="Jazz", moods=["Calm", "Night"], aiDisclosure={"level": "human"},
                                   createdAt=at(30)), rkey(1))
    await feed.put(A, TRACK, track("S2", genre="Rock", moods=["Energetic"], createdAt=at(20), releaseDate=at(40),
                                   aiDisclosure={"level": "assisted", "tools": ["Suno", "Logic"]},
                                   splits=[{"did": A, "shareBps": 6000}, {"did": F[5], "shareBps": 4000}]), rkey(2))
    await feed.put(B, TRACK, track("S3", genre=" Jazz ", moods=["calm"], createdAt=at(10), releaseDate=at(2),
                                   aiDisclosure={"level": "generated", "tools": ["suno"]}), rkey(3))
    await feed.put(B, TRACK, track("S4", createdAt=at(5)), rkey(4))
    await feed.put(C, TRACK, track("S5", genre="jazz", createdAt=at(30)), rkey(5))
    streams = {1: [(F[0], 0), (F[1], 0), (A, 2), (F[2], 3), (F[3], 3)],
               2: [(F[0], 1), (F[1], 1), (F[2], 1), (F[5], 1), (F[3], 2, 300)],
               3: [(F[3], 4), (F[4], 4)], 5: [(F[i], 0) for i in range(5)]}
    for n, plays in streams.items():
        for who, ago, *seconds in plays:
            await feed.put(who, PLAY, play(S[n], "bafyreia", createdAt=at(ago, *seconds)))
    await feed.put(F[0], PLAY, play(S[4], "bafyreia", listened=1000, createdAt=at(0)))
    await feed.put(F[3], LIKE, {"$type": LIKE, "subject": ref(2), "createdAt": at(1)})
    votes = [(1, F[0], "up", 0), (1, A, "up", 2), (1, F[4], "up", 1), (1, F[2], "down", 1), (2, F[1], "up", 1),
             (2, F[5], "up", 1), (2, F[3], "up", 2), (3, F[3], "down", 4), (4, F[0], "up", 0)]
    for n, who, direction, ago in votes:
        await feed.put(who, VOTE, {"$type": VOTE, "subject": ref(n), "direction": direction,
                                   "createdAt": at(ago, 120)})
    tips = [(F[0], 1, 500, "USD", 1, "settled"), (F[0], 1, 200, "USD", 1, "refunded"), (F[1], 2, 300, "USD", 0, "settled"),
            (F[2], 2, 400, "USD", 10, "settled"), (F[4], 3, 900, "USD", 0, None), (F[3], 3, 1000, "EUR", 0, "settled")]
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: the indexer writes in between
    for who, n, amount, currency, ago, outcome in tips:
        artist = S[n].split("/")[2]
        uri = await feed.put(who, TIP, {"$type": TIP, "subject": artist, "track": ref(n), "amount": amount,
                                        "currency": currency, "createdAt": at(ago)})
        # what the broker's signed settlement records and the verifier leave in the index
        for i, status in enumerate(["settled", "refunded"][: 2 if outcome == "refunded" else 1] if outcome else []):
            conn.execute("INSERT INTO settlement (uri, did, rkey, cid, tip_uri, tip_cid, payer, subject, status, "
                         "amount, currency, recipients, settled_at, verified, indexed_at) "
                         "VALUES (?,?,?,?,?,?,?,?,?,?,?,'[]',?,1,?)",
                         (f"{uri}-s{i}", "did:plc:broker", "s", "bafyreia", uri, "bafyreia", who, artist, status,
                          amount, currency, at(ago), at(ago)))
    # every account here is established: first seen a year ago, with 30 days of listening before the
    # window (appview.reputation's age and history factors are 1)
    conn.execute("UPDATE actor SET first_seen = ?", (at(365),))
    for (did,) in conn.execute("SELECT did FROM actor").fetchall():
        conn.executemany("INSERT OR IGNORE INTO listener_day (did, day, stream_ms) VALUES (?, ?, 60000)",
                         [(did, at(days)[:10]) for days in range(40, 70)])
    conn.close()
    writer = await db.connect(path)
    try:
        await reputation.refresh(writer)
    finally:
        await writer.close()
    await ix.apply([AccountEvent(seq=feed.seq + 1, did=C, active=False, status="deactivated", time="")], feed.seq + 1)


@pytest.fixture
async def example(env, monkeypatch):  # noqa: F811
    monkeypatch.setattr(charts, "today", lambda: TODAY)
    charts.clear_cache()
    ix, views, path = env
    await worked_example(ix, views, path)
    yield views, path
    charts.clear_cache()


async def call(views, nsid: str, **params) -> dict:
    """The handler on validated parameters, fresh (no cached skeleton), its output checked against the lexicon."""
    charts.clear_cache()
    pairs = [(k, str(v)) for k, v in params.items() if v is not None]
    out = await CHART_QUERIES[nsid](views, validate_params(nsid, pairs))
    validator().validate(nsid, "output", out)
    return out


def ranked(out: dict) -> list[tuple[str, int, int]]:
    names = {uri: f"S{n}" for n, uri in S.items()}
    return [(names[t["uri"]], t["rank"], t["score"]) for t in out["tracks"]]


async def test_top_by_period_with_ties_by_likes(example):
    views, _ = example
    week = await call(views, CHART, chart="top")
    assert week["period"] == "week" and "cursor" not in week
    assert ranked(week) == [("S2", 1, 5), ("S1", 2, 5), ("S3", 3, 2)]
    assert week["tracks"][0]["likes"] == 1 and week["tracks"][0]["title"] == "S2"  # the track view, hydrated
    assert ranked(await call(views, CHART, chart="top", period="day")) == [("S1", 1, 2)]
    assert ranked(await call(views, CHART, chart="top", period="all")) == ranked(week)


async def test_trending_weighs_days_listeners_and_votes_by_reputation(example):
    views, _ = example
    assert charts.WEIGHTS[:5] == (1000, 794, 630, 500, 397)
    assert ranked(await call(views, CHART, chart="trending")) == [("S2", 1, 4663), ("S1", 2, 3915), ("S3", 3, 397), ("S4", 4, 100)]


async def test_new_releases(example):
    views, _ = example
    out = await call(views, CHART, chart="new", period="day")  # the period does not apply
    assert ranked(out) == [("S4", 1, epoch(5)), ("S3", 2, epoch(10)), ("S1", 3, epoch(30)), ("S2", 4, epoch(40))]


async def test_tipped_by_period_and_currency(example):
    views, _ = example
    week = await call(views, CHART, chart="tipped")
    assert week["currency"] == "USD" and ranked(week) == [("S1", 1, 500), ("S2", 2, 300)]
    assert ranked(await call(views, CHART, chart="tipped", period="month")) == [("S2", 1, 700), ("S1", 2, 500)]
    assert ranked(await call(views, CHART, chart="tipped", currency="EUR")) == [("S3", 1, 1000)]


async def test_filters_apply_to_every_chart(example):
    views, _ = example
    assert ranked(await call(views, CHART, chart="top", genre=" JAZZ")) == [("S1", 1, 5), ("S3", 2, 2)]
    assert ranked(await call(views, CHART, chart="trending", mood="Calm")) == [("S1", 1, 3915), ("S3", 2, 397)]
    assert ranked(await call(views, CHART, chart="new", aiLevel="assisted")) == [("S2", 1, epoch(40))]
    assert ranked(await call(views, CHART, chart="tipped", period="month", genre="rock")) == [("S2", 1, 700)]
    assert ranked(await call(views, CHART, chart="new", genre="jazz", mood="night", aiLevel="human")) == [
        ("S1", 1, epoch(30))]
    assert (await call(views, CHART, chart="top", genre="polka"))["tracks"] == []


async def test_inactive_artists_are_never_charted(example, env):  # noqa: F811
    views, _ = example
    ix, _views, _path = env
    for chart in ("top", "trending", "new"):
        assert S[5] not in [t["uri"] for t in (await call(views, CHART, chart=chart))["tracks"]]
    # back, S5 leads the charts its 5 streams today put it on
    await ix.apply([AccountEvent(seq=10_000, did=C, active=True, status=None, time="")], 10_000)
    assert ranked(await call(views, CHART, chart="top", period="day")) == [("S5", 1, 5), ("S1", 2, 2)]
    assert ranked(await call(views, CHART, chart="trending"))[0] == ("S5", 1, 5000)


async def test_pages_cover_each_track_once(example):
    views, _ = example
    for chart, expected in (("new", 4), ("trending", 4), ("top", 3)):
        for limit in (1, 2, 3):
            seen, cursor, pages = [], None, 0
            while True:
                out = await call(views, CHART, chart=chart, limit=limit, cursor=cursor)
                seen += [(t["uri"], t["rank"]) for t in out["tracks"]]
                pages += 1
                cursor = out.get("cursor")
                if not cursor:
                    break
            assert [r for _, r in seen] == list(range(1, expected + 1))
            assert len({u for u, _ in seen}) == expected
            assert pages == -(-expected // limit)


async def test_cursor_survives_a_recomputed_chart(example, env):  # noqa: F811
    """A page's cursor names its last track: after the ranking changed, the next page starts after it."""
    views, _ = example
    first = await call(views, CHART, chart="new", limit=2)
    assert ranked(first)[-1][0] == "S3"
    ix, _views, _path = env
    await ix.apply([commit(20_000, B, 50, create(TRACK, rkey(9), track("S9", createdAt=at(1))))], 20_000)
    rest = await call(views, CHART, chart="new", cursor=first["cursor"])
    assert [name for name, _, _ in ranked(rest)] == ["S1", "S2"]
    assert [t["rank"] for t in rest["tracks"]] == [4, 5]  # S9 now ranks first


@pytest.mark.parametrize("params, message", [
    ({"chart": "hot"}, "chart must be one of trending, top, new, tipped"),
    ({"chart": "top", "period": "year"}, "period must be one of day, week, month, all"),
    ({"chart": "top", "aiLevel": "robot"}, "aiLevel must be one of human, assisted, generated"),
    ({"chart": "tipped", "currency": "usd"}, "currency must be an ISO 4217 code"),
    ({"chart": "top", "limit": "0"}, "limit"),
    ({"chart": "top", "cursor": "bm90IGEgY3Vyc29y"}, "malformed cursor"),
    ({"chart": "top", "cursor": "Wy0xLCJ4Il0"}, "malformed cursor"),  # [-1, "x"]
    ({}, "chart"),
])
async def test_bad_parameters_are_400(example, params, message):
    views, _ = example
    with pytest.raises(XrpcError) as exc:
        await call(views, CHART, **params)
    assert exc.value.status == 400 and exc.value.error == "InvalidRequest"
    assert message in exc.value.message
    with pytest.raises(XrpcError) as exc:
        await call(views, BROWSE, aiLevel="robot")
    assert exc.value.status == 400 and "aiLevel must be one of" in exc.value.message


async def test_browse_counts(example):
    views, _ = example
    def names(items):
        return [(i["name"], i["count"]) for i in items]
    out = await call(views, BROWSE)
    assert out["total"] == 4
    assert names(out["genres"]) == [("jazz", 2), ("rock", 1)]
    assert names(out["moods"]) == [("calm", 2), ("energetic", 1), ("night", 1)]
    assert names(out["aiLevels"]) == [("assisted", 1), ("generated", 1), ("human", 1)]
    assert names(out["aiTools"]) == [("suno", 2), ("logic", 1)]
    jazz = await call(views, BROWSE, genre="Jazz")
    assert jazz["total"] == 2 and names(jazz["moods"]) == [("calm", 2), ("night", 1)]
    assert names(jazz["aiTools"]) == [("suno", 1)] and names(jazz["genres"]) == [("jazz", 2)]
    calm = await call(views, BROWSE, mood="calm", aiLevel="generated")
    assert calm["total"] == 1 and names(calm["aiTools"]) == [("suno", 1)]


async def test_facets_follow_edits_and_deletes(example, env):  # noqa: F811
    """``track_facet`` (migration 0017's triggers) follows a track's update and deletion."""
    from firehose.events import RecordOp
    views, path = example
    ix, _views, _path = env
    await ix.apply([commit(30_000, B, 60, RecordOp("update", TRACK, rkey(3), "bafyreic",
                                                    track("S3", moods=["Dark"], createdAt=at(10))))], 30_000)
    facets = sqlite3.connect(path).execute("SELECT kind, value FROM track_facet WHERE track_uri = ?", (S[3],)).fetchall()
    assert facets == [("mood", "dark")]
    await ix.apply([commit(30_001, A, 61, RecordOp("delete", TRACK, rkey(1), None))], 30_001)
    assert sqlite3.connect(path).execute("SELECT count(*) FROM track_facet WHERE track_uri = ?", (S[1],)).fetchone() == (0,)
    out = await call(views, BROWSE)
    assert [(i["name"], i["count"]) for i in out["moods"]] == [("dark", 1), ("energetic", 1)]
    assert out["aiTools"] == [{"name": "logic", "count": 1}, {"name": "suno", "count": 1}]


def test_chart_track_view_extends_the_track_view():
    """``feed.defs#chartTrackView`` is ``catalog.defs#trackView`` plus rank and score: it cannot drift."""
    import json
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "lexicons/fm/openmusic"
    track_view = json.loads((root / "catalog/defs.json").read_text())["defs"]["trackView"]
    chart_view = json.loads((root / "feed/defs.json").read_text())["defs"]["chartTrackView"]
    assert set(chart_view["properties"]) == set(track_view["properties"]) | {"rank", "score"}
    assert chart_view["required"] == [*track_view["required"], "rank", "score"]
    for name, prop in track_view["properties"].items():
        if prop.get("type") == "ref" and prop["ref"].startswith("#"):
            assert chart_view["properties"][name]["ref"] == "fm.openmusic.catalog.defs" + prop["ref"]
        else:
            assert chart_view["properties"][name] == prop


def test_chart_queries_are_served_by_the_appview():
    from appview.queries import QUERIES
    assert QUERIES["fm.openmusic.feed.getChart"] is CHART_QUERIES["fm.openmusic.feed.getChart"]
    assert QUERIES["fm.openmusic.catalog.getBrowse"] is CHART_QUERIES["fm.openmusic.catalog.getBrowse"]


async def test_old_trending_totals_are_served_while_the_next_are_computed(example, env):  # noqa: F811
    """Once computed, trending totals older than a minute answer at once; one recomputation runs in
    the background and the next skeleton has the new totals."""
    views, _ = example
    ix, _views, _path = env
    p = validate_params(CHART, [("chart", "trending")])
    charts.clear_cache()
    first = ranked(await CHART_QUERIES[CHART](views, p))
    assert first[:2] == [("S2", 1, 4663), ("S1", 2, 3915)]
    # S4 streamed today by a listener established like the others: +1000 once recomputed
    feed = Feed(ix)
    feed.seq, feed.revs[F[2]] = 20_000, 1_000  # after the example's events and revisions
    await feed.put(F[2], PLAY, play(S[4], "bafyreia", createdAt=at(0, 600)))
    for key, (_at, value) in list(charts._cache.items()):  # everything cached is now a minute old
        charts._cache[key] = (_at - charts.CACHE_SECONDS - 1, value)
    assert ranked(await CHART_QUERIES[CHART](views, p)) == first  # the old totals, at once
    assert len(charts._refreshing) == 1
    await next(iter(charts._refreshing.values()))
    for key in list(charts._cache):  # the skeleton too is old now
        if key[1] == "chart":
            del charts._cache[key]
    assert ranked(await CHART_QUERIES[CHART](views, p))[2] == ("S4", 3, 1100)  # 100 (the vote) + 1000


async def test_the_leaders_stored_totals_rank_as_a_replicas_own(example, monkeypatch):
    """``store_chart_totals`` (the leader) stores trending's and each period's top totals; a replica
    then ranks them (every filter) without computing, equal to its own; stale or of another day, it
    computes its own again."""
    views, path = example
    asked = [validate_params(CHART, list(q.items())) for q in (
        {"chart": "trending"}, {"chart": "trending", "mood": "Calm"}, {"chart": "top", "period": "week"},
        {"chart": "top", "period": "day"}, {"chart": "top", "period": "month", "genre": "jazz"})]
    own = [ranked(await CHART_QUERIES[CHART](views, p)) for p in asked]
    assert own[2] == [("S2", 1, 5), ("S1", 2, 5), ("S3", 3, 2)] and own[3] == [("S1", 1, 2)]
    assert not await charts.shared_totals_fresh(views, TODAY)  # nothing stored yet
    conn = await db.connect(path)
    try:
        done = await charts.store_chart_totals(ViewContext(conn, views.identity, views.base_url), path)
    finally:
        await conn.close()
    # S1-S4 and S5, whose artist is inactive: stored, never ranked
    assert {k: v for k, v in done.items() if "seconds" not in k} == {"trending": 5, "top:day": 2, "top:week": 4,
                                                                "top:month": 4}
    assert await charts.shared_totals_fresh(views, TODAY)

    computed = charts._trending_scores

    async def refuse(*_a):
        raise AssertionError("a replica computed trending totals the leader had stored")
    monkeypatch.setattr(charts, "_trending_scores", refuse)
    charts.clear_cache()
    assert [ranked(await CHART_QUERIES[CHART](views, p)) for p in asked] == own
    # the top is read from the stored sums too: change them and the chart follows
    await views.db.execute("UPDATE chart_total SET score = score * 10 WHERE chart = 'top:week'")
    await views.db.commit()
    charts.clear_cache()
    assert ranked(await CHART_QUERIES[CHART](views, asked[2])) == [("S2", 1, 50), ("S1", 2, 50), ("S3", 3, 20)]

    # past UTC midnight, before the leader's next run: yesterday's totals still serve trending (a
    # day's decay apart), not the top of a period, which this process sums again
    tomorrow = TODAY + timedelta(days=1)
    assert not await charts.shared_totals_fresh(views, tomorrow)
    assert await charts.shared_totals_fresh(views, tomorrow, yesterday_too=True)
    assert not await charts.shared_totals_fresh(views, tomorrow + timedelta(days=1), yesterday_too=True)
    monkeypatch.setattr(charts, "today", lambda: tomorrow)
    charts.clear_cache()
    assert ranked(await CHART_QUERIES[CHART](views, asked[0])) == own[0]  # stored, not computed
    assert ranked(await CHART_QUERIES[CHART](views, asked[2]))[0][2] == 5  # summed here, not the stored 50
    monkeypatch.setattr(charts, "today", lambda: TODAY)
    await views.db.execute("UPDATE derived_state SET computed_at = computed_at - ? WHERE name = 'charts'",
                           (charts.SHARED_MAX_AGE + 1,))
    await views.db.commit()
    assert not await charts.shared_totals_fresh(views, TODAY)  # the leader stalled: compute here
    charts.clear_cache()
    assert ranked(await CHART_QUERIES[CHART](views, asked[2])) == own[2]
    with pytest.raises(AssertionError, match="computed trending"):
        await CHART_QUERIES[CHART](views, asked[0])
    monkeypatch.setattr(charts, "_trending_scores", computed)
    charts.clear_cache()
    assert ranked(await CHART_QUERIES[CHART](views, asked[0])) == own[0]


async def test_keep_chart_totals_stores_again_and_survives_a_failure(example, monkeypatch):
    """A failed store is logged and the loop goes on: the next one stores."""
    views, path = example
    conn = await db.connect(path)
    calls = []
    real = charts.store_chart_totals

    async def store(ctx, database, fence=None):
        calls.append(len(calls))
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return await real(ctx, database, fence)
    monkeypatch.setattr(charts, "store_chart_totals", store)
    task = asyncio.create_task(charts.keep_chart_totals(ViewContext(conn, views.identity, views.base_url), path,
                                                        every=0.05))
    try:
        await eventually(lambda: asyncio.sleep(0, len(calls)), until=lambda n: n >= 3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await conn.close()
    assert len(calls) >= 3  # the failure was logged, the loop went on
    assert await charts.shared_totals_fresh(views, TODAY)


async def test_a_deposed_leader_stores_no_totals(example):
    """The leader's commit fence runs before the totals' COMMIT: raising, nothing is written."""
    from core.leader import LeadershipLost

    views, path = example

    def fence(_conn):
        raise LeadershipLost("the leader lock is lost")
    conn = await db.connect(path)
    try:
        with pytest.raises(LeadershipLost):
            await charts.store_chart_totals(ViewContext(conn, views.identity, views.base_url), path, fence)
    finally:
        await conn.close()
    assert not await charts.shared_totals_fresh(views, TODAY)
    cur = await views.db.execute("SELECT COUNT(*) FROM chart_total")
    assert (await cur.fetchone())[0] == 0
