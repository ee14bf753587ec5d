"""Indexer and query units on a real SQLite file, fed with decoded events (no network)."""

import sqlite3
import time

import pytest

from appview import queries
from appview.views import ViewContext
from appview.xrpc import XrpcError
from core import db
from core.config import Settings
from core.identity import IdentityResolver, IdentityService
from firehose.events import AccountEvent, CommitEvent, RecordOp
from indexer.core import Indexer
from tests.records import DID, LISTENER, play, track

TRACK = "fm.openmusic.catalog.track"
PLAY = "fm.openmusic.listen.play"


def rkey(i: int) -> str:
    alphabet = "234567abcdefghijklmnopqrstuvwxyz"
    s = ""
    for _ in range(10):
        s = alphabet[i % 32] + s
        i //= 32
    return "3kz" + s


def commit(seq: int, did: str, rev_n: int, *ops: RecordOp) -> CommitEvent:
    return CommitEvent(seq=seq, did=did, rev=rkey(rev_n), since=None, commit="bafy", time="", ops=list(ops))


def create(coll: str, key: str, record: dict, cid: str = "bafyreia") -> RecordOp:
    return RecordOp("create", coll, key, cid, record)


@pytest.fixture
async def env(tmp_path):
    path = str(tmp_path / "t.sqlite")
    db.migrate(path)
    conn = await db.connect(path)
    for did in (DID, LISTENER):
        await conn.execute("INSERT INTO actor (did, handle, handle_verified, resolved_at) VALUES (?,?,1,?)",
                           (did, did.split(":")[-1][:8] + ".test", time.time()))
    settings = Settings(db_path=path)
    identity = IdentityService(settings, conn, IdentityResolver(settings, None))
    ix = Indexer(path, "test")
    await ix.open()
    await ix.load_state()
    yield ix, ViewContext(conn, identity, "http://x"), path
    await ix.close()
    await conn.close()


def dump(path: str) -> dict:
    c = sqlite3.connect(path)
    out = {}
    for table, cols in (("record", "uri, cid, json"), ("track", "uri, title, duration_ms"), ("play", "uri, listened_ms"),
                        ("track_stats", "*"), ("track_listener", "*"), ("cursor", "source, seq")):
        out[table] = c.execute(f"SELECT {cols} FROM {table} ORDER BY 1").fetchall()
    out["fts"] = c.execute("SELECT t.uri, f.body FROM track_fts f JOIN track t ON t.search_key = f.rowid "
                           "ORDER BY t.uri").fetchall()
    out["fts_rows"] = c.execute("SELECT count(*) FROM track_fts").fetchone()
    out["rank"] = c.execute("SELECT search_key, plays, uri FROM track_rank ORDER BY 1").fetchall()
    return out


def rank_is_derived(path: str) -> list[tuple]:
    """``track_rank`` equals what it is derived from (every searchable track's key, plays and URI)."""
    c = sqlite3.connect(path)
    rank = c.execute("SELECT search_key, plays, uri FROM track_rank ORDER BY 1").fetchall()
    want = c.execute("SELECT t.search_key, COALESCE(s.plays, 0), t.uri FROM track t LEFT JOIN track_stats s "
                     "ON s.track_uri = t.uri WHERE t.search_key IS NOT NULL ORDER BY 1").fetchall()
    assert rank == want
    return rank


async def test_create_update_delete_and_stats(env):
    ix, views, path = env
    t_uri = f"at://{DID}/{TRACK}/{rkey(1)}"
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track("First")))], 1)
    await ix.apply([commit(2, LISTENER, 1, create(PLAY, rkey(2), play(t_uri, "bafyreia", 1000, completed=True)),
                                        create(PLAY, rkey(3), play(t_uri, "bafyreia", 500)))], 2)
    stats = await queries.get_track_stats(views, {"uri": t_uri})
    assert (stats["plays"], stats["uniqueListeners"], stats["listenedMs"], stats["completions"]) == (2, 1, 1500, 1)
    await ix.apply([commit(3, DID, 2, RecordOp("update", TRACK, rkey(1), "bafyreib", track("Second")))], 3)
    got = await queries.get_track(views, {"uri": t_uri})
    assert got["track"]["title"] == "Second" and got["track"]["cid"] == "bafyreib"
    assert (await queries.search_tracks(views, {"q": "second", "sort": "recent", "limit": 10}))["tracks"]
    assert not (await queries.search_tracks(views, {"q": "first", "sort": "recent", "limit": 10}))["tracks"]
    await ix.apply([commit(4, LISTENER, 2, RecordOp("delete", PLAY, rkey(2), None))], 4)
    stats = await queries.get_track_stats(views, {"uri": t_uri})
    assert (stats["plays"], stats["listenedMs"], stats["completions"]) == (1, 500, 0)
    await ix.apply([commit(5, DID, 3, RecordOp("delete", TRACK, rkey(1), None))], 5)
    with pytest.raises(XrpcError):
        await queries.get_track(views, {"uri": t_uri})
    assert dump(path)["fts"] == []


async def test_replay_and_stale_revs_change_nothing(env):
    ix, _views, path = env
    t_uri = f"at://{DID}/{TRACK}/{rkey(1)}"
    events = [commit(1, DID, 1, create(TRACK, rkey(1), track())),
              commit(2, LISTENER, 1, create(PLAY, rkey(2), play(t_uri, "bafyreia"))),
              commit(3, LISTENER, 2, create(PLAY, rkey(3), play(t_uri, "bafyreia"))),
              commit(4, DID, 2, RecordOp("update", TRACK, rkey(1), "bafyreic", track("Edited")))]
    await ix.apply(events, 4)
    before = dump(path)
    await ix.apply(events, 4)  # the whole stream again, as after a rewound cursor
    await ix.apply([commit(5, DID, 1, RecordOp("update", TRACK, rkey(1), "bafyreid", track("Old")))], 5)
    after = dump(path)
    assert after["cursor"] == [("test", 5)]
    after["cursor"] = before["cursor"]
    assert after == before
    assert ix.counters["stale_commits"] == 5


async def test_invalid_record_is_skipped_and_counted(env):
    ix, views, _path = env
    bad = track("Bad")
    del bad["duration"]
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track("Good one")), create(TRACK, rkey(2), bad),
                           create(TRACK, "not-a-tid", track("Bad key")), create(TRACK, rkey(3), track("Good two")),
                           RecordOp("create", TRACK, rkey(4), "bafyreimissing", None))], 1)
    titles = sorted(t["title"] for t in (await queries.search_tracks(views, {"sort": "recent", "limit": 10}))["tracks"])
    assert titles == ["Good one", "Good two"]
    assert ix.rejections == {"lexicon": 1, "bad_rkey": 1, "missing_block": 1}
    cur = await views.db.execute("SELECT reason, COUNT(*) FROM rejected_record GROUP BY reason ORDER BY 1")
    assert [tuple(r) for r in await cur.fetchall()] == [("bad_rkey", 1), ("lexicon", 1), ("missing_block", 1)]


async def test_deactivated_account_is_hidden_and_deleted_is_purged(env):
    ix, views, path = env
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track()))], 1)
    await ix.apply([AccountEvent(2, DID, False, "deactivated", "")], 2)
    assert (await queries.search_tracks(views, {"sort": "recent", "limit": 10}))["tracks"] == []
    await ix.apply([AccountEvent(3, DID, True, None, "")], 3)
    assert len((await queries.search_tracks(views, {"sort": "recent", "limit": 10}))["tracks"]) == 1
    await ix.apply([AccountEvent(4, DID, False, "deleted", "")], 4)
    assert dump(path)["record"] == [] and dump(path)["track"] == []


async def test_pagination_covers_everything_once(env):
    ix, views, _path = env
    n = 23
    ops = [create(TRACK, rkey(i), track(f"Song {i}", createdAt=f"2026-01-{1 + i % 5:02d}T00:00:00.000Z"))
           for i in range(n)]
    await ix.apply([commit(1, DID, 1, *ops)], 1)
    plays = [create(PLAY, rkey(100 + i), play(f"at://{DID}/{TRACK}/{rkey(i % 7)}", "bafyreia")) for i in range(30)]
    await ix.apply([commit(2, LISTENER, 1, *plays)], 2)
    for handler, params, key in (
        (queries.search_tracks, {"sort": "recent"}, "tracks"),
        (queries.search_tracks, {"sort": "plays"}, "tracks"),
        (queries.search_tracks, {"sort": "recent", "q": "song"}, "tracks"),
        (queries.search_tracks, {"sort": "plays", "q": "song"}, "tracks"),
        (queries.get_artist_tracks, {"actor": DID}, "tracks"),
        (queries.get_plays, {"actor": LISTENER}, "plays"),
    ):
        seen, cursor, pages = [], None, 0
        while True:
            page = await handler(views, {**params, "limit": 4, **({"cursor": cursor} if cursor else {})})
            seen += [item["uri"] for item in page[key]]
            pages += 1
            cursor = page.get("cursor")
            if not cursor:
                break
        expected = 30 if key == "plays" else n
        assert len(seen) == expected and len(set(seen)) == expected, (handler.__name__, params)
        assert pages == -(-expected // 4) or pages == -(-expected // 4) + 1
    newest = [t["uri"] for t in (await queries.search_tracks(views, {"sort": "recent", "limit": 100}))["tracks"]]
    found = [t["uri"] for t in (await queries.search_tracks(views, {"sort": "recent", "q": "song", "limit": 100}))["tracks"]]
    assert [u for u in newest if u in found] == found and len(found) == n  # search keeps "newest first"
    by_plays = (await queries.search_tracks(views, {"sort": "plays", "limit": 7}))["tracks"]
    counts = [t["plays"] for t in by_plays]
    assert counts == sorted(counts, reverse=True) and counts[0] == 5


async def test_search_by_plays_follows_plays_edits_and_accounts(env):
    """``track_rank`` (migration 0012) behind words sorted by plays stays equal to the tracks and
    their stats through plays, a track edit (a new search key), deletions and a deactivated listener,
    and the search answers in plays order with the artist's inactive tracks left out."""
    ix, views, path = env
    uris = [f"at://{DID}/{TRACK}/{rkey(i)}" for i in range(3)]
    await ix.apply([commit(1, DID, 1, *[create(TRACK, rkey(i), track(f"Neon {i}")) for i in range(3)])], 1)
    plays = [create(PLAY, rkey(10 + i), play(uris[0], "bafyreia")) for i in range(3)]
    plays.append(create(PLAY, rkey(20), play(uris[1], "bafyreia")))
    await ix.apply([commit(2, LISTENER, 1, *plays)], 2)
    assert [r[1] for r in sorted(rank_is_derived(path), key=lambda r: r[2])] == [3, 1, 0]

    async def order(**extra) -> list[str]:
        page = await queries.search_tracks(views, {"q": "neon", "sort": "plays", "limit": 10, **extra})
        return [t["uri"] for t in page["tracks"]]

    assert await order() == [uris[0], uris[1], uris[2]]
    await ix.apply([commit(3, DID, 2, RecordOp("update", TRACK, rkey(1), "bafyreib", track("Neon one, edited")))], 3)
    rank_is_derived(path)
    assert await order() == [uris[0], uris[1], uris[2]]
    await ix.apply([commit(4, LISTENER, 2, RecordOp("delete", PLAY, rkey(10), None),
                           RecordOp("delete", PLAY, rkey(11), None), RecordOp("delete", PLAY, rkey(12), None))], 4)
    rank_is_derived(path)
    assert (await order())[0] == uris[1]
    await ix.apply([commit(5, DID, 3, RecordOp("delete", TRACK, rkey(2), None))], 5)
    assert len(rank_is_derived(path)) == 2 and await order() == [uris[1], uris[0]]
    await ix.apply([AccountEvent(6, LISTENER, False, "deactivated", "")], 6)
    assert [r[1] for r in rank_is_derived(path)] == [0, 0]
    first = await queries.search_tracks(views, {"q": "neon", "sort": "plays", "limit": 1})
    second = await queries.search_tracks(views, {"q": "neon", "sort": "plays", "limit": 1, "cursor": first["cursor"]})
    assert {first["tracks"][0]["uri"], second["tracks"][0]["uri"]} == {uris[0], uris[1]} and "cursor" not in second
    await ix.apply([AccountEvent(7, DID, False, "deactivated", "")], 7)
    assert await order() == []
