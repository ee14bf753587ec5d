"""Music feeds (``appview.feeds``, ``fm.openmusic.feed.getFeed``, issue 13).

Units on a real SQLite index fed with decoded events (``tests.test_indexer_units``' ``env``). ME
follows ART and BEA (not CAT). ART has tracks on Jan 1, 3 and 5 (Ambient, " ambient ", Rock), BEA
on Jan 2 and 4 (Jazz), CAT on Jan 6 (Ambient). Proved: ``following`` lists the followed artists'
tracks newest first and pages of two give each once; an artist deactivated drops out; an actor
given by handle works and one unknown is ``ActorNotFound``; ``genre:ambient`` matches the genre
trimmed and lower-cased across artists; ``trending`` is the trending chart
(``appview.charts.get_chart``: its ranking stubbed here, tested in tests/test_charts.py) as plain
track views, paged by the chart's cursor; ``for-you`` pages what
``appview.recommend.for_you_uris`` gives and, while it is not there, answers a clear 501; bad
feeds, a missing actor and forged cursors are 400s. Every answer fits the lexicon; over HTTP (the
AppView's Starlette app) the same answers come back, and the 501 is an XRPC error body."""

from __future__ import annotations

import httpx
import pytest

from appview import charts, feeds, queries, recommend
from appview.app import create_app
from appview.xrpc import XrpcError, encode_cursor, validate_params
from core.config import Settings
from core.lexicons import FOLLOW, TRACK, validator
from firehose.events import AccountEvent
from openmusic.runtime import Runtime
from tests.records import DID as ART
from tests.records import LISTENER as ME
from tests.records import track
from tests.test_indexer_units import commit, create, env, rkey  # noqa: F401  (env: a fixture)
from tests.test_notifications import add_actors

NSID = "fm.openmusic.feed.getFeed"
BEA, CAT = "did:plc:beaaaaaaaaaaaaaaaaaaaaaa", "did:plc:cataaaaaaaaaaaaaaaaaaaaa"


def uri(did: str, n: int) -> str:
    return f"at://{did}/{TRACK}/{rkey(n)}"


def day(d: int) -> str:
    return f"2026-01-{d:02d}T00:00:00.000Z"


async def example(ix, views) -> None:
    await add_actors(views, [BEA, CAT])
    await ix.apply([
        commit(1, ART, 1, create(TRACK, rkey(1), track("A1", genre="Ambient", createdAt=day(1))),
               create(TRACK, rkey(3), track("A3", genre=" ambient ", createdAt=day(3))),
               create(TRACK, rkey(5), track("A5", genre="Rock", createdAt=day(5)))),
        commit(2, BEA, 1, create(TRACK, rkey(2), track("B2", genre="Jazz", createdAt=day(2))),
               create(TRACK, rkey(4), track("B4", genre="Jazz", createdAt=day(4)))),
        commit(3, CAT, 1, create(TRACK, rkey(6), track("C6", genre="Ambient", createdAt=day(6)))),
        commit(4, ME, 1, create(FOLLOW, rkey(10), {"$type": FOLLOW, "subject": ART, "createdAt": day(9)}),
               create(FOLLOW, rkey(11), {"$type": FOLLOW, "subject": BEA, "createdAt": day(9)})),
    ], 4)


async def call(views, **params) -> dict:
    out = await queries.QUERIES[NSID](views, validate_params(NSID, [(k, str(v)) for k, v in params.items()
                                                                      if v is not None]))
    validator().validate(NSID, "output", out)
    return out


async def every(views, **params) -> tuple[list[str], int]:
    items, cursor, pages = [], None, 0
    while True:
        got = await call(views, cursor=cursor, **params)
        items += [t["uri"] for t in got["feed"]]
        pages += 1
        if not (cursor := got.get("cursor")):
            return items, pages


@pytest.mark.parametrize("many", [False, True], ids=["few follows", "many follows (the track_sort walk)"])
async def test_following_newest_first_each_once(env, monkeypatch, many):  # noqa: F811
    if many:  # the query for listeners who follow many artists gives the same answers
        from appview import feeds
        monkeypatch.setattr(feeds, "MANY_FOLLOWS", 1)
    ix, views, _ = env
    await example(ix, views)
    got = await call(views, feed="following", actor=ME)
    assert [t["uri"] for t in got["feed"]] == [uri(ART, 5), uri(BEA, 4), uri(ART, 3), uri(BEA, 2), uri(ART, 1)]
    assert got["feed"][0]["title"] == "A5" and "cursor" not in got
    assert await every(views, feed="following", actor=ME, limit=2) == ([t["uri"] for t in got["feed"]], 3)
    assert [t["uri"] for t in (await call(views, feed="following", actor="listener.test"))["feed"]] == \
        [t["uri"] for t in got["feed"]]  # by handle
    assert (await call(views, feed="following", actor=CAT))["feed"] == []  # follows nobody
    await ix.apply([AccountEvent(seq=5, did=BEA, active=False, status="deactivated", time="")], 5)
    assert [t["uri"] for t in (await call(views, feed="following", actor=ME))["feed"]] == \
        [uri(ART, 5), uri(ART, 3), uri(ART, 1)]
    with pytest.raises(XrpcError) as exc:
        await call(views, feed="following", actor="did:plc:" + "z" * 24)
    assert exc.value.error == "ActorNotFound"


async def test_genre_and_bad_requests(env):  # noqa: F811
    ix, views, _ = env
    await example(ix, views)
    assert await every(views, feed="genre:ambient", limit=1) == ([uri(CAT, 6), uri(ART, 3), uri(ART, 1)], 3)
    assert [t["uri"] for t in (await call(views, feed="genre: AMBIENT "))["feed"]] == [uri(CAT, 6), uri(ART, 3), uri(ART, 1)]
    assert (await call(views, feed="genre:polka"))["feed"] == []
    for params, says in [({"feed": "popular"}, "feed must be one of"), ({"feed": "genre:  "}, "needs a name"),
                         ({"feed": "following"}, "needs actor"), ({"feed": "for-you"}, "needs actor"),
                         ({"feed": "following", "actor": ME, "cursor": "bm9wZQ"}, "malformed cursor"),
                         ({"feed": "genre:jazz", "cursor": encode_cursor(1, 2)}, "malformed cursor")]:
        with pytest.raises(XrpcError) as exc:
            await call(views, **params)
        assert exc.value.status == 400 and says in exc.value.message, (params, exc.value.message)


async def test_trending_is_the_chart(env, monkeypatch):  # noqa: F811
    ix, views, _ = env
    await example(ix, views)

    async def ranked(ctx, day, where, args):  # the chart's own ranking is tested in tests/test_charts.py
        return [(uri(BEA, 2), 900), (uri(CAT, 6), 500), (uri(ART, 1), 300)]
    monkeypatch.setattr(charts, "_trending", ranked)
    charts.clear_cache()
    try:
        chart = await charts.get_chart(views, {"chart": "trending", "period": "week", "limit": 25})
        got = await call(views, feed="trending")
        want = [uri(BEA, 2), uri(CAT, 6), uri(ART, 1)]
        assert [t["uri"] for t in got["feed"]] == [t["uri"] for t in chart["tracks"]] == want
        assert not any("rank" in t or "score" in t for t in got["feed"])
        assert got["feed"][0] == {k: v for k, v in chart["tracks"][0].items() if k not in ("rank", "score")}
        assert await every(views, feed="trending", limit=2) == (want, 2)
    finally:
        charts.clear_cache()


async def test_for_you_pages_the_recommendations_or_says_it_is_not_there(env, monkeypatch):  # noqa: F811
    ix, views, _ = env
    await example(ix, views)
    asked = []

    async def picks(ctx, did, limit):
        asked.append((did, limit))
        return [uri(CAT, 6), uri(ART, 3), uri(CAT, 6), uri(BEA, 4)]  # a repeat is shown once
    monkeypatch.setattr(recommend, "for_you_uris", picks, raising=False)
    assert await every(views, feed="for-you", actor=ME, limit=2) == ([uri(CAT, 6), uri(ART, 3), uri(BEA, 4)], 2)
    assert asked[0] == (ME, 3)
    monkeypatch.delattr(recommend, "for_you_uris", raising=False)
    with pytest.raises(XrpcError) as exc:
        await call(views, feed="for-you", actor=ME)
    assert (exc.value.status, exc.value.error, exc.value.message) == (
        501, "MethodNotImplemented", "for-you is not available yet")


async def test_for_you_with_the_real_recommendations(env):  # noqa: F811
    """Once ``appview.recommend.for_you_uris`` is there, the feed serves what it ranks (fits the lexicon)."""
    ix, views, _ = env
    await example(ix, views)
    if not hasattr(recommend, "for_you_uris"):
        pytest.skip("appview.recommend.for_you_uris is not there yet")
    want = await recommend.for_you_uris(views, ME, 25)
    got = await call(views, feed="for-you", actor=ME)
    assert [t["uri"] for t in got["feed"]] == list(dict.fromkeys(want))[:25]


async def test_over_http(env, tmp_path, monkeypatch):  # noqa: F811
    ix, views, path = env
    await example(ix, views)
    monkeypatch.delattr(recommend, "for_you_uris", raising=False)
    rt = Runtime(Settings(db_path=path, blob_cache_dir=str(tmp_path / "blobs"), verify_commits=False, log_level="WARNING"))
    await rt.start(firehose=False)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt)), base_url="http://t") as http:
            resp = await http.get(f"/xrpc/{NSID}", params={"feed": "following", "actor": ME, "limit": 2})
            assert resp.status_code == 200 and [t["title"] for t in resp.json()["feed"]] == ["A5", "B4"]
            resp = await http.get(f"/xrpc/{NSID}", params={"feed": "for-you", "actor": ME})
            assert resp.status_code == 501 and resp.json() == {"error": "MethodNotImplemented",
                                                               "message": "for-you is not available yet"}
            resp = await http.get(f"/xrpc/{NSID}", params={"feed": "nope"})
            assert resp.status_code == 400 and resp.json()["error"] == "InvalidRequest"
    finally:
        await rt.stop()
    assert feeds.FEED_QUERIES[NSID] is queries.QUERIES[NSID]
