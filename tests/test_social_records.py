"""Votes, reviews and follows (``fm.openmusic.social.vote``, ``social.review``, ``graph.follow``).

Units on a real SQLite file fed with decoded events (``tests.test_indexer_units``' ``env``): the
latest vote per listener and track wins (by createdAt, then rkey), a changed or deleted vote moves
the counts, a replayed commit changes nothing, invalid records are rejected and counted, and
accounts that are not active weigh nothing until they come back; ``getReviews``, ``getFollowers``
and ``getFollows`` page over every item once and fit their lexicons. End to end (the reference
PDS): a follow and a vote written to a PDS reach the queries."""

from __future__ import annotations

import sqlite3
import time

import pytest

from appview import queries
from appview.xrpc import XrpcError, validate_params
from core.lexicons import ALBUM, FOLLOW, REVIEW, TRACK, VOTE, validator
from firehose.events import AccountEvent, RecordOp
from tests.conftest import eventually
from tests.records import DID, LISTENER, track
from tests.test_indexer_units import commit, create, env, rkey  # noqa: F401  (env: a fixture)

SONG = f"at://{DID}/{TRACK}/{rkey(1)}"
RECORD = f"at://{DID}/{ALBUM}/{rkey(2)}"
FANS = [f"did:plc:fan{i:021d}" for i in range(8)]


def vote(direction: str, day: int, subject: str = SONG) -> dict:
    return {"$type": VOTE, "subject": {"uri": subject, "cid": "bafyreia"}, "direction": direction,
            "createdAt": f"2026-01-{day:02d}T00:00:00.000Z"}


def review(rating: int, day: int, subject: str = SONG, **extra) -> dict:
    return {"$type": REVIEW, "subject": {"uri": subject, "cid": "bafyreia"}, "rating": rating,
            "createdAt": f"2026-01-{day:02d}T00:00:00.000Z", **extra}


def follow(subject: str, day: int) -> dict:
    return {"$type": FOLLOW, "subject": subject, "createdAt": f"2026-01-{day:02d}T00:00:00.000Z"}


def counts(path: str, table: str, subject: str) -> tuple:
    cols = {"vote_count": "up, down", "review_count": "reviews, rating_sum", "follow_count": "followers"}[table]
    row = sqlite3.connect(path).execute(f"SELECT {cols} FROM {table} WHERE subject = ?", (subject,)).fetchone()
    return row or (0,) * len(cols.split(","))


def snapshot(path: str) -> dict:
    c = sqlite3.connect(path)
    return {t: c.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
            for t in ("vote", "review", "follow", "vote_current", "review_current", "follow_current",
                      "vote_count", "review_count", "follow_count", "record", "rejected_record")}


async def add_fans(views) -> None:
    for did in FANS:
        await views.db.execute("INSERT OR IGNORE INTO actor (did, handle, handle_verified, resolved_at) "
                               "VALUES (?,?,1,?)", (did, f"fan{did[-2:]}.test", time.time()))
    await views.db.commit()


async def call(views, nsid: str, **params) -> dict:
    pairs = [(k, str(v)) for k, v in params.items() if v is not None]
    out = await queries.QUERIES[nsid](views, validate_params(nsid, pairs))
    validator().validate(nsid, "output", out)
    return out


async def every_page(views, nsid: str, key: str, limit: int, **params) -> tuple[list, int, dict]:
    items, cursor, pages = [], None, 0
    while True:
        page = await call(views, nsid, limit=limit, cursor=cursor, **params)
        assert len(page[key]) <= limit
        items += page[key]
        pages += 1
        cursor = page.get("cursor")
        if not cursor:
            return items, pages, page


async def test_latest_vote_wins_changes_and_deletes_recount(env):  # noqa: F811
    ix, _views, path = env
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track()))], 1)
    await ix.apply([commit(2, LISTENER, 1, create(VOTE, rkey(10), vote("up", 5)))], 2)
    assert counts(path, "vote_count", SONG) == (1, 0)
    # A later vote replaces it; an older one written afterwards does not.
    await ix.apply([commit(3, LISTENER, 2, create(VOTE, rkey(11), vote("down", 6)))], 3)
    assert counts(path, "vote_count", SONG) == (0, 1)
    await ix.apply([commit(4, LISTENER, 3, create(VOTE, rkey(12), vote("up", 1)))], 4)
    assert counts(path, "vote_count", SONG) == (0, 1)
    # Same createdAt: the greater record key wins.
    await ix.apply([commit(5, LISTENER, 4, create(VOTE, rkey(13), vote("up", 6)))], 5)
    assert counts(path, "vote_count", SONG) == (1, 0)
    # Another voter adds to the counts; the first one's vote edited in place moves them.
    await ix.apply([commit(6, DID, 2, create(VOTE, rkey(20), vote("down", 2)))], 6)
    assert counts(path, "vote_count", SONG) == (1, 1)
    await ix.apply([commit(7, LISTENER, 5, RecordOp("update", VOTE, rkey(13), "bafyreic", vote("down", 6)))], 7)
    assert counts(path, "vote_count", SONG) == (0, 2)
    # Deletes recount: without rkey(13), rkey(11) (down, day 6) is latest; without it, rkey(10) (up, day 5).
    await ix.apply([commit(8, LISTENER, 6, RecordOp("delete", VOTE, rkey(13), None))], 8)
    assert counts(path, "vote_count", SONG) == (0, 2)
    await ix.apply([commit(9, LISTENER, 7, RecordOp("delete", VOTE, rkey(11), None))], 9)
    assert counts(path, "vote_count", SONG) == (1, 1)
    c = sqlite3.connect(path)
    assert c.execute("SELECT did, uri, value FROM vote_current ORDER BY did").fetchall() == [
        (DID, f"at://{DID}/{VOTE}/{rkey(20)}", -1), (LISTENER, f"at://{LISTENER}/{VOTE}/{rkey(10)}", 1)]
    await ix.apply([commit(10, LISTENER, 8, RecordOp("delete", VOTE, rkey(10), None),
                           RecordOp("delete", VOTE, rkey(12), None)),
                    commit(11, DID, 3, RecordOp("delete", VOTE, rkey(20), None))], 11)
    assert counts(path, "vote_count", SONG) == (0, 0)
    assert c.execute("SELECT count(*) FROM vote_current").fetchone() == (0,)


async def test_replay_and_resync_change_nothing(env):  # noqa: F811
    ix, views, path = env
    await add_fans(views)
    events = [commit(1, DID, 1, create(TRACK, rkey(1), track())),
              commit(2, LISTENER, 1, create(VOTE, rkey(10), vote("up", 5)), create(REVIEW, rkey(11), review(4, 5)),
                     create(FOLLOW, rkey(12), follow(DID, 5)), create(FOLLOW, rkey(13), follow(DID, 6))),
              commit(3, FANS[0], 1, create(VOTE, rkey(10), vote("down", 5)), create(REVIEW, rkey(11), review(1, 5)))]
    await ix.apply(events, 3)
    before = snapshot(path)
    assert counts(path, "vote_count", SONG) == (1, 1) and counts(path, "review_count", SONG) == (2, 5)
    assert counts(path, "follow_count", DID) == (1,)
    await ix.apply(events, 3)  # the same commits again: at or below the stored rev, ignored
    assert snapshot(path) == before
    # Applying the same ops once more below the rev check (as a resync rewrite would) still changes no count.
    def again(conn):
        for seq_evt in events[1:]:
            for op in seq_evt.ops:
                ix.apply_op(seq_evt.did, op, seq_evt.rev, "2026-02-01T00:00:00.000Z")
    await ix.transact(again)
    after = snapshot(path)
    for table in ("vote_count", "review_count", "follow_count", "vote_current", "review_current", "follow_current"):
        assert [r[:3] for r in after[table]] == [r[:3] for r in before[table]], table


async def test_invalid_records_are_rejected_and_counted(env):  # noqa: F811
    ix, _views, path = env
    bad = [create(VOTE, rkey(10), vote("up", 5, subject=RECORD)),               # not a track
           create(VOTE, rkey(11), vote("sideways", 5)),                          # not up or down
           create(REVIEW, rkey(12), review(6, 5)),                                # rating over 5
           create(REVIEW, rkey(13), review(0, 5)),                                # rating under 1
           create(REVIEW, rkey(14), review(3, 5, subject=f"at://{DID}/{VOTE}/{rkey(1)}")),  # not a track/album
           create(REVIEW, rkey(15), review(3, 5, text="x" * 3001)),              # text too long
           create(FOLLOW, rkey(16), follow("not-a-did", 5)),                      # malformed DID
           create(FOLLOW, rkey(17), follow("did:plc:", 5))]                        # malformed DID
    good = create(REVIEW, rkey(18), review(5, 5, subject=RECORD, text="lovely"))
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track())),
                    commit(2, LISTENER, 1, *bad, good)], 2)
    c = sqlite3.connect(path)
    rejected = {uri.rsplit("/", 1)[1]: reason for uri, reason in c.execute("SELECT uri, reason FROM rejected_record")}
    assert set(rejected) == {op.rkey for op in bad}
    assert rejected[rkey(10)] == "bad_reference" and rejected[rkey(11)] == "bad_value"
    assert rejected[rkey(12)] == "lexicon" and rejected[rkey(16)] == "lexicon"
    assert sum(ix.rejections.values()) == len(bad)
    assert c.execute("SELECT count(*) FROM vote").fetchone() == (0,)
    assert c.execute("SELECT uri FROM review").fetchall() == [(f"at://{LISTENER}/{REVIEW}/{rkey(18)}",)]
    assert c.execute("SELECT count(*) FROM follow").fetchone() == (0,)
    assert counts(path, "review_count", RECORD) == (1, 5) and counts(path, "vote_count", SONG) == (0, 0)
    # An edit that makes a counted record invalid uncounts it.
    await ix.apply([commit(3, LISTENER, 2, RecordOp("update", REVIEW, rkey(18), "bafyreic", review(9, 5, RECORD)))], 3)
    assert counts(path, "review_count", RECORD) == (0, 0)


async def test_inactive_accounts_weigh_nothing_until_they_return(env):  # noqa: F811
    ix, views, path = env
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track())),
                    commit(2, LISTENER, 1, create(VOTE, rkey(10), vote("up", 5)), create(REVIEW, rkey(11), review(2, 5)),
                           create(FOLLOW, rkey(12), follow(DID, 5))),
                    commit(3, DID, 2, create(VOTE, rkey(10), vote("down", 5)), create(REVIEW, rkey(11), review(5, 5)))], 3)
    assert counts(path, "vote_count", SONG) == (1, 1) and counts(path, "review_count", SONG) == (2, 7)
    assert counts(path, "follow_count", DID) == (1,)
    await ix.apply([AccountEvent(seq=4, did=LISTENER, active=False, status="takendown", time="")], 4)
    assert counts(path, "vote_count", SONG) == (0, 1) and counts(path, "review_count", SONG) == (1, 5)
    assert counts(path, "follow_count", DID) == (0,)
    got = await call(views, "fm.openmusic.social.getReviews", uri=SONG)
    assert [r["author"]["did"] for r in got["reviews"]] == [DID] and got["averageRating"] == 500
    assert (await call(views, "fm.openmusic.graph.getFollowers", actor=DID))["followers"] == []
    # A vote written while inactive is ignored (commits of inactive accounts are); reactivation recounts.
    await ix.apply([AccountEvent(seq=5, did=LISTENER, active=True, status=None, time="")], 5)
    assert counts(path, "vote_count", SONG) == (1, 1) and counts(path, "review_count", SONG) == (2, 7)
    assert counts(path, "follow_count", DID) == (1,)
    # Deactivated then deleted: purged, and counted nowhere.
    await ix.apply([AccountEvent(seq=6, did=LISTENER, active=False, status="deactivated", time=""),
                    AccountEvent(seq=7, did=LISTENER, active=False, status="deleted", time="")], 7)
    assert counts(path, "vote_count", SONG) == (0, 1) and counts(path, "review_count", SONG) == (1, 5)
    assert counts(path, "follow_count", DID) == (0,)
    c = sqlite3.connect(path)
    for table in ("vote", "review", "follow", "vote_current", "review_current", "follow_current"):
        assert c.execute(f"SELECT count(*) FROM {table} WHERE did = ?", (LISTENER,)).fetchone() == (0,), table


async def test_get_reviews_pages_each_reviewer_once(env):  # noqa: F811
    ix, views, path = env
    await add_fans(views)
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track()),
                           create(ALBUM, rkey(2), {"$type": ALBUM, "title": "LP", "tracks": [],
                                                   "createdAt": "2026-01-01T00:00:00.000Z"}))], 1)
    events = []
    for i, fan in enumerate(FANS[:7]):  # ratings 1..5,1,2 (latest); each fan also wrote an older 5
        ops = [create(REVIEW, rkey(10), review(5, 1)),
               create(REVIEW, rkey(11), review(i % 5 + 1, 10 + i, text=f"take {i}"))]
        events.append(commit(2 + i, fan, 1, *ops))
    events.append(commit(20, LISTENER, 1, create(REVIEW, rkey(10), review(4, 3, subject=RECORD))))
    await ix.apply(events, 20)
    items, pages, last = await every_page(views, "fm.openmusic.social.getReviews", "reviews", 3, uri=SONG)
    assert pages == 3 and len(items) == 7 and len({r["author"]["did"] for r in items}) == 7
    assert [r["text"] for r in items] == [f"take {i}" for i in reversed(range(7))]  # newest first
    ratings = [i % 5 + 1 for i in range(7)]
    assert last["count"] == 7 and sum(ratings) == 18
    assert last["averageRating"] == 257  # 18 / 7 = 2.5714: hundredths, rounded
    album = await call(views, "fm.openmusic.social.getReviews", uri=RECORD)
    assert album["count"] == 1 and album["averageRating"] == 400 and album["reviews"][0]["rating"] == 4
    assert "text" not in album["reviews"][0]
    with pytest.raises(XrpcError) as exc:
        await call(views, "fm.openmusic.social.getReviews", uri=f"at://{DID}/{TRACK}/{rkey(99)}")
    assert exc.value.error == "NotFound"
    with pytest.raises(XrpcError) as exc:
        await call(views, "fm.openmusic.social.getReviews", uri=f"at://{DID}/{VOTE}/{rkey(1)}")
    assert exc.value.error == "InvalidRequest"
    with pytest.raises(XrpcError) as exc:
        await call(views, "fm.openmusic.social.getReviews", uri=SONG, cursor="eyJ4IjoxfQ")
    assert exc.value.error == "InvalidRequest"


async def test_follow_queries_page_each_account_once(env):  # noqa: F811
    ix, views, path = env
    await add_fans(views)
    events = [commit(1, DID, 1, create(TRACK, rkey(1), track()))]
    for i, fan in enumerate(FANS):  # every fan follows DID twice (counted once), fan 0 also follows the listener
        ops = [create(FOLLOW, rkey(10), follow(DID, 1)), create(FOLLOW, rkey(11), follow(DID, 10 + i))]
        if i == 0:
            ops.append(create(FOLLOW, rkey(12), follow(LISTENER, 25)))
        events.append(commit(2 + i, fan, 1, *ops))
    await ix.apply(events, 20)
    items, pages, last = await every_page(views, "fm.openmusic.graph.getFollowers", "followers", 3, actor=DID)
    assert pages == 3 and last["followersCount"] == 8 and last["subject"]["did"] == DID
    assert [f["actor"]["did"] for f in items] == list(reversed(FANS))
    assert items[0]["uri"] == f"at://{FANS[7]}/{FOLLOW}/{rkey(11)}" and items[0]["createdAt"].startswith("2026-01-17")
    follows = await call(views, "fm.openmusic.graph.getFollows", actor=FANS[0])
    assert [f["actor"]["did"] for f in follows["follows"]] == [LISTENER, DID] and "cursor" not in follows
    one, _, _ = await every_page(views, "fm.openmusic.graph.getFollows", "follows", 1, actor=FANS[0])
    assert [f["actor"]["did"] for f in one] == [LISTENER, DID]
    # A follower unfollowing with one record still follows; with both gone it no longer does.
    await ix.apply([commit(30, FANS[3], 2, RecordOp("delete", FOLLOW, rkey(11), None))], 30)
    assert counts(path, "follow_count", DID) == (8,)
    await ix.apply([commit(31, FANS[3], 3, RecordOp("delete", FOLLOW, rkey(10), None))], 31)
    assert counts(path, "follow_count", DID) == (7,)
    got = await call(views, "fm.openmusic.graph.getFollowers", actor=DID, limit=100)
    assert FANS[3] not in [f["actor"]["did"] for f in got["followers"]] and got["followersCount"] == 7
    with pytest.raises(XrpcError) as exc:
        await call(views, "fm.openmusic.graph.getFollowers", actor="did:plc:" + "z" * 24)
    assert exc.value.error == "ActorNotFound"


# --- end to end: the reference PDS -----------------------------------------------------------------

@pytest.mark.network
async def test_follow_and_vote_from_a_pds_reach_the_queries(net, make_client, appview, tmp_path):
    from core.publish import publish_profile, publish_track
    from devkit.media import tune_wav

    artist, fan = make_client("socialartist"), make_client("socialfan")
    publish_profile(artist, "Social Artist", roles=["artist"])
    path = tmp_path / "song.wav"
    path.write_bytes(tune_wav(3, seconds=2.0))
    song = publish_track(artist, path, title="Vote For Me")
    fan.create_record(FOLLOW, {"subject": artist.did, "createdAt": "2026-03-01T00:00:00.000Z"})
    fan.create_record(VOTE, {"subject": song.as_dict(), "direction": "up", "createdAt": "2026-03-01T00:00:00.000Z"})
    fan.create_record(REVIEW, {"subject": song.as_dict(), "rating": 4, "text": "warm",
                               "createdAt": "2026-03-01T00:00:00.000Z"})

    async def followers():
        resp = await appview.http_client.get("/xrpc/fm.openmusic.graph.getFollowers", params={"actor": artist.did})
        body = resp.json()
        return body if resp.status_code == 200 and body["followers"] else None
    got = await eventually(followers, timeout=30)
    assert got["followersCount"] == 1 and got["followers"][0]["actor"]["did"] == fan.did
    validator().validate("fm.openmusic.graph.getFollowers", "output", got)

    async def reviews():
        resp = await appview.http_client.get("/xrpc/fm.openmusic.social.getReviews", params={"uri": song.uri})
        return resp.json() if resp.status_code == 200 and resp.json()["count"] else None
    got = await eventually(reviews, timeout=30)
    assert got["averageRating"] == 400 and got["reviews"][0]["text"] == "warm"

    async def votes():
        rows = await appview.indexer.sql("SELECT up, down FROM vote_count WHERE subject = ?", (song.uri,))
        return rows if rows and rows[0] == (1, 0) else None
    assert await eventually(votes, timeout=30) == [(1, 0)]
