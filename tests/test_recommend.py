"""Recommendations (``appview.recommend``: ``fm.openmusic.feed.getSimilarTracks``,
``feed.getSuggestions``, ``for_you_uris``).

Model units: ``item_neighbours`` equals cosine similarity computed densely by hand (numpy), however
small the blocks it computes ``X^T X`` in; ``build_model`` leaves out inactive listeners and a
listener's streams of their own tracks.

A worked example on a real SQLite index fed with decoded events (``tests.test_indexer_units``'
``env``); every play hears 60 of 180 s (a stream) unless said. Artists A, B = F7, C = F6:

- T1 by A: jazz, calm. T2 by A: jazz, calm. T3 by B: rock, energetic. T4 by B: rock, energetic.
  T5 by C: jazz, calm (C is deactivated at the end). T6 by B: jazz, calm (nobody streams it).
  T7 by A: rock (nobody streams it).
- Streams: F0: T1 T2 T5; F1: T1 T2; F2: T1 T3; F3: T3 T4; F4: T3 T4; A: T1 (their own: left out)
  and T4. F5 plays T2 for 1 s only (no stream). LISTENER plays nothing.
- Listeners per track: T1 {F0 F1 F2}, T2 {F0 F1}, T3 {F2 F3 F4}, T4 {F3 F4 A}; cosine x 1000:
  T1~T2 = 2 / sqrt(3 x 2) = 816, T1~T3 = 1 / 3 = 333, T3~T4 = 2 / 3 = 667; T1~T4 = 0 (only A's
  own stream of T1 would join them).
- More like T1: T2 (colistening 816), T3 (colistening 333), then T6 (genre: jazz + calm = 3).
  Like T6 (no co-listeners): T1, T2 (genre 3 each; T1 has more listeners). Like T7: T3, T4 (genre 2).
- For you weighs the k-th most recently streamed track 0.95^k (plays at the same time: by URI, and
  A's DID sorts before the fans'). For F2 (streamed T1, then T3): T2 (816), T4 (0.95 x 667 = 633),
  then T6 (genre 3), T7 (genre 2): basis colistening. For A (T1, then T4): T3 (333 + 0.95 x 667 =
  967), then T6 (genre 3); never A's own T2 or T7. For F5 (no stream;
  played jazz/calm T2): T1, T2, T6 (genre 3), then T3, T4 (popular): basis genre. For LISTENER and an
  unknown DID: T1, T3, T4 (3 listeners), T2 (2): basis popular.
- Once B is deactivated, B's tracks leave every answer at once, though the model was built before.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import scipy.sparse as sp

from appview import recommend
from appview.queries import QUERIES
from appview.xrpc import XrpcError, validate_params
from core.lexicons import PLAY, TRACK, validator
from firehose.events import AccountEvent
from tests.records import DID, LISTENER, play, track
from tests.test_charts import Feed as ChartsFeed
from tests.test_indexer_units import commit, create, env, rkey  # noqa: F401  (env: a fixture)
from tests.test_social_records import FANS, add_fans

SIMILAR, SUGGEST = "fm.openmusic.feed.getSimilarTracks", "fm.openmusic.feed.getSuggestions"
A, B, C = DID, FANS[7], FANS[6]
F = FANS
T = {n: f"at://{a}/{TRACK}/{rkey(n)}" for n, a in ((1, A), (2, A), (3, B), (4, B), (5, C), (6, B), (7, A))}
WHEN = (datetime.now(UTC) - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_item_neighbours_is_cosine_similarity():
    rng = np.random.default_rng(5)
    x = sp.csr_matrix((rng.random((120, 60)) < 0.08).astype(np.float32))
    co = (x.T @ x).toarray().astype(np.float64)
    norms = np.sqrt(np.diag(co))
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.nan_to_num(co / np.outer(norms, norms))
    np.fill_diagonal(cosine, 0)
    whole = recommend.item_neighbours(x, k=5)
    blocks = recommend.item_neighbours(x, k=5, block_nnz=3)  # a block per row or so
    assert (whole != blocks).nnz == 0
    for i in range(60):
        row = slice(whole.indptr[i], whole.indptr[i + 1])
        got, sims = whole.indices[row], whole.data[row]
        want = [j for j in np.lexsort((np.arange(60), -cosine[i])) if cosine[i, j] > 0][:5]
        assert list(got) == want
        assert np.allclose(sims, cosine[i, want], atol=1e-6)
    assert whole.indptr[-1] == sum(min(5, int((cosine[i] > 0).sum())) for i in range(60))


def test_build_model_leaves_out_own_and_inactive_streams():
    tracks = [("at://a/t/1", "did:a", "jazz"), ("at://a/t/2", "did:a", "jazz"), ("at://b/t/3", "did:b", None)]
    pairs = [("did:x", "at://a/t/1"), ("did:x", "at://a/t/2"), ("did:a", "at://a/t/1"), ("did:a", "at://b/t/3"),
             ("did:z", "at://b/t/3"), ("did:z", "at://a/t/1"), ("did:y", "at://gone/t/9")]
    m = recommend.build_model(tracks, [("at://b/t/3", "calm")], pairs, inactive={"did:z"})
    assert m.listeners == 2 and m.pairs == 3  # x: 1, 2; a: 3 (a's own 1 is out); z inactive; 9 unknown
    assert m.similar("at://a/t/1") == [("at://a/t/2", 1000)]
    assert m.similar("at://b/t/3") == [] and m.similar("at://nope") == []
    assert list(m.popularity) == [1, 1, 1]
    assert m.for_listener(["at://a/t/1"], {"at://a/t/1"}, "did:x", 10) == [("at://a/t/2", 1000)]
    assert m.for_listener(["at://a/t/1"], set(), "did:a", 10) == []  # did:a's own tracks are never suggested
    assert m.by_taste({"jazz": 1}, {"calm": 1}, {"at://a/t/1"}, None, 10) == [
        ("at://a/t/2", "genre", 2), ("at://b/t/3", "mood", 1)]


class Feed(ChartsFeed):
    """``tests.test_charts.Feed`` (records as firehose commits, revisions in order), and account
    deactivation on the same sequence."""

    async def deactivate(self, did: str) -> None:
        self.seq += 1
        await self.ix.apply([AccountEvent(seq=self.seq, did=did, active=False, status="deactivated", time="")],
                            self.seq)


async def worked_example(ix, views) -> Feed:
    await add_fans(views)
    feed = Feed(ix)
    for n, genre, moods in ((1, "Jazz", ["Calm"]), (2, "jazz", ["calm"]), (3, "Rock", ["Energetic"]),
                            (4, "rock", ["energetic"]), (5, "Jazz", ["Calm"]), (6, " Jazz", ["calm "]), (7, "Rock", [])):
        await feed.put(T[n].split("/")[2], TRACK, track(f"T{n}", genre=genre, moods=moods), rkey(n))
    streams = {F[0]: [1, 2, 5], F[1]: [1, 2], F[2]: [1, 3], F[3]: [3, 4], F[4]: [3, 4], A: [1, 4]}
    for who, numbers in streams.items():
        for n in numbers:
            await feed.put(who, PLAY, play(T[n], "bafyreia", createdAt=WHEN))
    await feed.put(F[5], PLAY, play(T[2], "bafyreia", listened=1000, createdAt=WHEN))
    await feed.deactivate(C)
    return feed


@pytest.fixture
async def example(env):  # noqa: F811
    recommend.clear_models()
    ix, views, _path = env
    feed = await worked_example(ix, views)
    yield views, feed
    recommend.clear_models()


async def call(views, nsid: str, **params) -> dict:
    """The handler on validated parameters, its output checked against the lexicon."""
    pairs = [(k, str(v)) for k, v in params.items() if v is not None]
    out = await QUERIES[nsid](views, validate_params(nsid, pairs))
    validator().validate(nsid, "output", out)
    return out


def names(out: dict) -> list[tuple[str, str, int]]:
    back = {uri: f"T{n}" for n, uri in T.items()}
    return [(back[t["uri"]], t["reason"], t["score"]) for t in out["tracks"]]


async def test_more_like_this(example):
    views, _ = example
    assert names(await call(views, SIMILAR, uri=T[1])) == [
        ("T2", "colistening", 816), ("T3", "colistening", 333), ("T6", "genre", 3)]
    assert names(await call(views, SIMILAR, uri=T[1], limit=1)) == [("T2", "colistening", 816)]
    assert names(await call(views, SIMILAR, uri=T[6])) == [("T1", "genre", 3), ("T2", "genre", 3)]
    assert names(await call(views, SIMILAR, uri=T[7])) == [("T3", "genre", 2), ("T4", "genre", 2)]
    out = await call(views, SIMILAR, uri=T[4])
    assert out["uri"] == T[4] and names(out)[0] == ("T3", "colistening", 667)
    assert out["tracks"][0]["title"] == "T3" and out["tracks"][0]["artist"]["did"] == B  # hydrated trackViews


async def test_for_you(example):
    views, _ = example
    out = await call(views, SUGGEST, actor=F[2])
    assert out["actor"] == F[2] and out["basis"] == "colistening"
    assert names(out) == [("T2", "colistening", 816), ("T4", "colistening", 633), ("T6", "genre", 3),
                          ("T7", "genre", 2)]
    out = await call(views, SUGGEST, actor=A)
    assert names(out) == [("T3", "colistening", 967), ("T6", "genre", 3)]  # never A's own T2 or T7
    out = await call(views, SUGGEST, actor=f"fan{F[5][-2:]}.test")  # a handle (add_fans' handles)
    assert out["actor"] == F[5] and out["basis"] == "genre"
    assert names(out) == [("T1", "genre", 3), ("T2", "genre", 3), ("T6", "genre", 3), ("T3", "popular", 3),
                          ("T4", "popular", 3)]
    for actor in (LISTENER, "did:plc:neverseenneverseenneverse"):
        out = await call(views, SUGGEST, actor=actor, limit=4)
        assert out["basis"] == "popular" and [n for n, _, _ in names(out)] == ["T1", "T3", "T4", "T2"]
        assert all(reason == "popular" for _, reason, _ in names(out))
    assert await recommend.for_you_uris(views, F[2], 2) == [T[2], T[4]]
    assert await recommend.for_you_uris(views, "did:plc:neverseenneverseenneverse", 1) == [T[1]]


async def test_inactive_artists_and_bad_requests(example):
    views, feed = example
    for uri in (T[5], f"at://{A}/{TRACK}/{rkey(99)}", f"at://{A}/fm.openmusic.catalog.album/{rkey(1)}"):
        with pytest.raises(XrpcError) as err:
            await call(views, SIMILAR, uri=uri)
        assert err.value.error == "NotFound"
    for bad in ({"uri": T[1], "limit": "51"}, {"uri": T[1], "limit": "0"}, {"uri": "not a uri"}, {}):
        with pytest.raises(XrpcError) as err:
            validate_params(SIMILAR, list(bad.items()))
        assert err.value.error == "InvalidRequest"
    for actor in (C, "nobody.invalid"):
        with pytest.raises(XrpcError) as err:
            await call(views, SUGGEST, actor=actor)
        assert err.value.error == "ActorNotFound"
    assert all(t["uri"] != T[5] for t in (await call(views, SUGGEST, actor=F[0]))["tracks"])
    built = await recommend.model(views)
    await feed.deactivate(B)  # after the model was built: B's tracks go at once all the same
    assert await recommend.model(views) is built
    assert names(await call(views, SIMILAR, uri=T[1])) == [("T2", "colistening", 816)]
    assert names(await call(views, SUGGEST, actor=F[2])) == [("T2", "colistening", 816), ("T7", "genre", 2)]
    with pytest.raises(XrpcError):
        await call(views, SIMILAR, uri=T[3])


async def test_rebuild_once_in_the_background(example, monkeypatch):
    views, feed = example
    builds = []
    real = recommend.load_model

    def counted(path: str):
        builds.append(path)
        return real(path)

    monkeypatch.setattr(recommend, "load_model", counted)
    recommend.clear_models()
    first = await asyncio.gather(*(recommend.model(views) for _ in range(5)))
    assert len(builds) == 1 and all(m is first[0] for m in first)  # one build, shared
    monkeypatch.setattr(recommend, "REBUILD_SECONDS", 0.0)
    await feed.put(F[1], PLAY, play(T[3], "bafyreia", createdAt=WHEN))  # F1 now streams T1 T2 T3
    stale = await recommend.model(views)
    assert stale is first[0]  # the old model answers while the new one is built
    task = recommend._builds[id(views.db)]
    assert await recommend.model(views) is first[0] and recommend._builds[id(views.db)] is task  # still one build
    fresh = await task
    await asyncio.sleep(0)  # the done callback installs it
    assert len(builds) == 2
    monkeypatch.setattr(recommend, "REBUILD_SECONDS", 600.0)
    assert await recommend.model(views) is fresh
    assert dict(fresh.similar(T[3]))[T[1]] == 577  # T1 {F0 F1 F2}, T3 {F1 F2 F3 F4}: 2 / sqrt(3 x 4)
    assert dict(stale.similar(T[3]))[T[1]] == 333


async def test_web_context_provider(example):
    """``web.recommend.Recommend.provide`` on the worked example: the track page gets its related
    tracks; the home page gets "for you" for a signed-in listener, nothing for one whose only basis
    is popularity, nothing signed out; other pages nothing."""
    from web.pages import Pages
    from web.recommend import Recommend

    views, _ = example
    viewer: dict[str, object] = {"user": None}

    class FakePages:  # Pages.query (the real one) over the example's views; the viewer set here
        def __init__(self) -> None:
            self.views, self.context_providers = views, []

        query = Pages.query

        async def viewer(self, request):
            return viewer["user"], None

    pages = FakePages()
    rec = Recommend(None, pages)
    assert pages.context_providers == [rec.provide]
    track_view = (await call(views, "fm.openmusic.catalog.getTrack", uri=T[1]))["track"]
    got = await rec.provide(None, "track.html", {"track": track_view})
    assert [t["title"] for t in got["related_tracks"]] == ["T2", "T3", "T6"] and got["related_basis"] == "colistening"
    assert await rec.provide(None, "home.html", {}) == {}  # signed out
    viewer["user"] = type("User", (), {"did": F[2]})()
    got = await rec.provide(None, "home.html", {})
    assert got["foryou_basis"] == "colistening" and [t["title"] for t in got["foryou_tracks"]][:2] == ["T2", "T4"]
    assert await rec.provide(None, "artist.html", {"track": track_view}) == {}
    viewer["user"] = type("User", (), {"did": LISTENER})()
    assert await rec.provide(None, "home.html", {}) == {}  # nothing streamed or played: only the charts' picks
