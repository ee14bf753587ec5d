"""The recommendation model built once by the leader and read by every replica (issue 15):
``appview.recommend.store_model`` / ``keep_model`` write it (``appview.derived``, migration 0037),
``recommend.model`` reads it instead of building. On the engine of ``OPENMUSIC_TEST_ENGINE``, with
a catalog and listening log from ``bench.generator`` written through ``Indexer.apply``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from appview import derived, recommend
from appview.views import ViewContext
from bench.generator import Spec, Workload, ingest, listener_did
from core import db
from tests.conftest import eventually, runtime_database

SPEC = Spec(tracks=120, plays=2500, seed=7)


@pytest.fixture
async def indexed(tmp_path: Path):
    """A database indexed from ``SPEC``: its target (SQLite path or PostgreSQL URL)."""
    where = runtime_database(tmp_path / "rec") or str(tmp_path / "rec.sqlite")
    result = await ingest(where, Workload(SPEC), batch=250)
    assert result.rejected == 0
    recommend.clear_models()
    yield where
    recommend.clear_models()


def answers(m: recommend.Model) -> dict:
    """What a model answers: every track's neighbours, every listener's suggestions, each genre's
    and mood's fallback, the most popular."""
    out: dict = {"similar": {u: m.similar(u) for u in m.uris}, "popular": m.most_popular(set(), None, 50)}
    for i in range(SPEC.listeners):
        did = listener_did(i)
        out[did] = m.for_listener(m.uris[i::7], set(m.uris[i::11]), did, 20)
    for g in m.genre_codes:
        out[f"genre {g}"] = m.by_taste(Counter([g]), Counter(), set(), None, 30)
    for mood in m.mood_codes:
        out[f"mood {mood}"] = m.by_taste(Counter(), Counter([mood]), set(), None, 30)
    return out


def read(where: str) -> recommend.Model:
    conn = db.connect_sync(where)
    try:
        return recommend.read_model(conn, db.is_postgres(where))
    finally:
        conn.close()


def test_any_text_survives_the_store():
    """Genres and moods are any text a record holds (a line break, a NUL, non-ASCII): the stored
    model keeps every name and code, and answers as the one built."""
    a = "did:plc:" + "a" * 24
    uris = [f"at://{a}/fm.openmusic.track/{n}" for n in range(4)]
    tracks = [(uris[0], a, "rock\nroll"), (uris[1], a, "jazz"), (uris[2], a, "\u00e9lectro\u0000x"), (uris[3], a, None)]
    moods = [(uris[0], "chill\n"), (uris[1], "calm"), (uris[2], "calm"), (uris[3], "\n")]
    pairs = [(f"did:plc:{n:024d}", uris[t]) for n in range(6) for t in range(4) if (n + t) % 3]
    built = recommend.build_model(tracks, moods, pairs, set())
    again = recommend.loads(recommend.dumps(built))
    assert again.genre_codes == built.genre_codes and len(built.genre_codes) == 3
    assert again.mood_codes == built.mood_codes and len(built.mood_codes) == 3
    for g in built.genre_codes:
        assert again.by_taste(Counter([g]), Counter(), set(), None, 5) == built.by_taste(Counter([g]), Counter(), set(), None, 5)
    for m in built.mood_codes:
        assert again.by_taste(Counter(), Counter([m]), set(), None, 5) == built.by_taste(Counter(), Counter([m]), set(), None, 5)
    assert [again.similar(u) for u in uris] == [built.similar(u) for u in uris]
    empty = recommend.build_model([], [], [], set())
    assert recommend.loads(recommend.dumps(empty)).uris == []


async def test_the_stored_model_answers_as_one_built_here(indexed, monkeypatch):
    where = indexed
    built = read(where)
    assert built.pairs > 100 and len(built.uris) == SPEC.tracks and not built.stored
    again = recommend.loads(recommend.dumps(built))
    assert again.stored and again.uris == built.uris and again.artists == built.artists
    assert again.genre_codes == built.genre_codes and again.mood_codes == built.mood_codes
    assert (again.neighbours != built.neighbours).nnz == 0 and (again.mood_matrix != built.mood_matrix).nnz == 0
    assert np.array_equal(again.popularity, built.popularity) and np.array_equal(again.popular, built.popular)
    assert (again.listeners, again.pairs, again.as_of) == (built.listeners, built.pairs, built.as_of)
    expected = answers(built)
    assert answers(again) == expected

    conn = await db.connect(where)
    ctx = ViewContext(conn, None, "")  # type: ignore[arg-type]
    try:
        own = await recommend._build(ctx)  # a replica's own build (on PostgreSQL: rows through ctx.db)
        assert answers(own) == expected
        done = await asyncio.to_thread(recommend.store_model, where)
        assert done["tracks"] == SPEC.tracks and done["bytes"] > 1000

        async def refuse(_ctx):
            raise AssertionError("a replica built the model the leader had stored")
        monkeypatch.setattr(recommend, "_build", refuse)
        served = await recommend.model(ctx)
        assert served.stored and answers(served) == expected
        # the answers through the XRPC skeletons come from it as well
        items = await recommend.similar_tracks(ctx, built.uris[int(built.popular[0])], 10)
        assert items and all(reason in ("colistening", "genre", "mood") for _, reason, _ in items)
    finally:
        await conn.close()


async def test_replicas_follow_the_store_and_build_when_it_cannot_serve(indexed, monkeypatch):
    where = indexed
    conn = await db.connect(where)
    ctx = ViewContext(conn, None, "")  # type: ignore[arg-type]
    builds: list[float] = []
    real_build = recommend._build

    async def counted(c):
        builds.append(time.time())
        return await real_build(c)
    monkeypatch.setattr(recommend, "_build", counted)
    monkeypatch.setattr(recommend, "STORE_CHECK_SECONDS", 0.0)

    async def settled() -> recommend.Model:
        """The model once no refresh runs any more."""
        await recommend.model(ctx)
        while (task := recommend._builds.get(id(ctx.db))) is not None:
            await asyncio.wait({task})
        return recommend._models[id(ctx.db)]
    try:
        # nothing stored: the replica builds its own, as before
        first = await settled()
        assert not first.stored and len(builds) == 1
        # the leader stores a newer one: the replica takes it at its next refresh, without building
        await asyncio.to_thread(recommend.store_model, where)
        monkeypatch.setattr(recommend, "rest_after", lambda _s: 0.0)
        second = await settled()
        assert second.stored and second.as_of > first.as_of and len(builds) == 1
        # the same one still stored: kept, not read again
        assert await settled() is second and len(builds) == 1
        # a newer store replaces it
        await asyncio.to_thread(recommend.store_model, where)
        third = await settled()
        assert third is not second and third.stored and third.as_of > second.as_of
        # a blob replaced while read comes back incomplete, never mixed
        stamp = await derived.stamp_of(conn, recommend.STORE_NAME)
        assert stamp is not None and await derived.read_blob(conn, recommend.STORE_NAME, stamp) is not None
        gone = derived.Stamp(stamp.day, stamp.computed_at - 1, stamp.seconds)
        assert await derived.read_blob(conn, recommend.STORE_NAME, gone) is None
        # the leader went quiet: past store_max_age the replica builds its own again
        monkeypatch.setattr(recommend, "store_max_age", lambda _s: -1.0)
        fourth = await settled()
        assert not fourth.stored and len(builds) == 2
        monkeypatch.undo()
        monkeypatch.setattr(recommend, "_build", counted)
        monkeypatch.setattr(recommend, "STORE_CHECK_SECONDS", 0.0)
        # a broken blob is never installed: the replica builds
        recommend.clear_models()
        await asyncio.sleep(0.01)
        broken = derived.Stamp(stamp.day, time.time(), 0.1)
        await asyncio.to_thread(derived.write_blob, where, recommend.STORE_NAME, b"not a model", broken)
        fifth = await settled()
        assert not fifth.stored and len(builds) == 3
        # clear_models ignores what was stored before it
        await asyncio.to_thread(recommend.store_model, where)
        recommend.clear_models()
        assert not (await settled()).stored and len(builds) == 4
    finally:
        await conn.close()


async def test_keep_model_stores_again_and_survives_a_failure(indexed, monkeypatch):
    """The leader's loop: a failed store is logged and tried again; each success replaces the blob."""
    where = indexed
    calls: list[int] = []
    real = recommend.store_model

    def store(database, fence=None):
        calls.append(len(calls))
        if len(calls) == 1:
            raise OSError("disk full")
        return real(database, fence)
    monkeypatch.setattr(recommend, "store_model", store)
    monkeypatch.setattr(recommend, "MIN_REBUILD_SECONDS", 0.01)
    monkeypatch.setattr(recommend, "REBUILD_FACTOR", 0.0)
    task = asyncio.create_task(recommend.keep_model(where))
    conn = await db.connect(where)
    try:
        await eventually(lambda: asyncio.sleep(0, len(calls)), until=lambda n: n >= 3)
        stamp = await derived.stamp_of(conn, recommend.STORE_NAME)
        assert stamp is not None and time.time() - stamp.computed_at < 60
        cur = await conn.execute("SELECT COUNT(DISTINCT stamp) FROM derived_blob WHERE name = ?", (recommend.STORE_NAME,))
        assert (await cur.fetchone())[0] == 1  # each store replaced the last
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await conn.close()


async def test_a_deposed_leader_stores_nothing(indexed):
    """The leader's commit fence runs before the store's COMMIT: raising, nothing is written."""
    from core.leader import LeadershipLost

    where = indexed
    asked: list[object] = []

    def fence(conn):
        asked.append(conn)
        raise LeadershipLost("the leader lock is lost")
    with pytest.raises(LeadershipLost):
        await asyncio.to_thread(recommend.store_model, where, fence)
    assert len(asked) == 1
    conn = await db.connect(where)
    try:
        assert await derived.stamp_of(conn, recommend.STORE_NAME) is None
        cur = await conn.execute("SELECT COUNT(*) FROM derived_blob")
        assert (await cur.fetchone())[0] == 0
    finally:
        await conn.close()
    await asyncio.to_thread(recommend.store_model, where, lambda conn: None)  # a fence that passes
    conn = await db.connect(where)
    try:
        assert await derived.stamp_of(conn, recommend.STORE_NAME) is not None
    finally:
        await conn.close()
