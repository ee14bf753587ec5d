"""Fake plays must not take the ad pool (issue 10, item 11).

A play record is written by the listener, about a track URI the listener chooses, with a
``listenedMs`` and a ``createdAt`` the listener chooses. Before this fix a play of a track that does
not exist counted as a stream weighted by its own claimed ``listenedMs`` (up to 24 h), the daily
cap was per track URI (a new rkey, a new allowance), and the close paid the DID inside the URI:
two such plays took 99.95% of a $1,000 ad pool. The rules now (``indexer.streams``): a play earns
only when its track is indexed, for at most what the track lasts, within a week of being written
and not before the track existed, within a listener's 24 h a day.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from contextlib import contextmanager
from unittest import mock

import pytest

from appview import queries
from appview.views import ViewContext
from core import db
from core.config import Settings
from core.identity import IdentityResolver, IdentityService
from firehose.events import AccountEvent, RecordOp
from indexer import streams
from indexer.core import Indexer
from payments import ledger, period
from tests.records import track as track_record
from tests.test_indexer_units import PLAY, TRACK, commit, create, rkey

LIKE = "fm.openmusic.social.like"
CID = "bafyreia"
HONEST = "did:plc:honestartisthonestartist"
OTHER = "did:plc:otherartistotherartistab"
MALLORY = "did:plc:mallorymallorymallorymal"  # the attacker: listener and artist
FANS = [f"did:plc:fan{i:021d}" for i in range(10)]
SONG = f"at://{HONEST}/{TRACK}/{rkey(1)}"
NOW = "2026-11-20T12:00:00.000Z"  # the indexer's clock in these tests
CLOSED = "2026-12-02T00:00:00.000Z"


class Clock:
    """The indexer's ``now``, set by the test (the rules compare a play's date with its indexing)."""

    def __init__(self, now: str = NOW) -> None:
        self.now = now

    def __call__(self) -> str:
        return self.now


@contextmanager
def frozen(clock: Clock):
    """Patch the indexer's clock with ``clock``."""
    with mock.patch("indexer.core.now_iso", clock):
        yield clock


def song(title: str = "Honest Song", duration: int = 180_000, created: str = "2026-10-01T00:00:00.000Z") -> dict:
    return track_record(title, duration=duration, createdAt=created)


def play(track_uri: str, ms: int, at: str, **extra) -> dict:
    return {"$type": PLAY, "track": {"uri": track_uri, "cid": CID}, "listenedMs": ms, "createdAt": at, **extra}


def like(subject: str) -> dict:
    return {"$type": LIKE, "subject": {"uri": subject, "cid": CID}, "createdAt": NOW}


async def open_indexer(path: str, dids) -> tuple[Indexer, object]:
    conn = await db.connect(path)
    for did in dids:
        await conn.execute("INSERT OR IGNORE INTO actor (did, handle, handle_verified, active, resolved_at) "
                           "VALUES (?,?,1,1,?)", (did, did[8:20] + ".test", time.time()))
    await conn.commit()
    ix = Indexer(path, "test")
    await ix.open()
    await ix.load_state()
    settings = Settings(db_path=path)
    ix.views = ViewContext(conn, IdentityService(settings, conn, IdentityResolver(settings, None)), "http://x")
    return ix, conn


@pytest.fixture
async def ix(tmp_path):
    path = str(tmp_path / "f.sqlite")
    db.migrate(path)
    with frozen(Clock()) as clock:
        ix, conn = await open_indexer(path, [HONEST, OTHER, MALLORY, *FANS])
        ix.clock = clock
        yield ix
        await ix.close()
        await conn.close()


def earnings_of(tx, *dids: str) -> dict[str, int]:
    return {d: ledger.balance(tx, ledger.earnings(d), "USD") for d in dids}


async def close_ads(ix, amount: int = 100_000) -> dict[str, int]:
    """Enter ``amount`` of ad revenue for 2026-11, close the month, return everyone's earnings."""
    assert await ix.transact(period.enter_ad_revenue, "2026-11", amount, "USD")
    await ix.transact(period.close_period, "2026-11", 3000, "salt", CLOSED)
    rows = await ix.sql("SELECT account, SUM(amount) FROM ledger_entry WHERE account LIKE 'earnings:%' GROUP BY account")
    assert await ix.run(lambda: ledger.check(ix.conn)) == []
    return {acct.split(":", 1)[1]: total for acct, total in rows if total}


async def honest_listening(ix, seq: int = 1) -> int:
    """The honest song and ten fans who each heard it once, in full, on 2026-11-19. Returns the next seq."""
    await ix.apply([commit(seq, HONEST, 1, create(TRACK, rkey(1), song()))], seq)
    for i, fan in enumerate(FANS):
        seq += 1
        await ix.apply([commit(seq, fan, 1, create(PLAY, rkey(100 + i), play(SONG, 180_000,
                                                                             f"2026-11-19T1{i % 10}:00:00.000Z")))], seq)
    return seq + 1


async def stats(ix, uri: str) -> dict:
    return await queries.get_track_stats(ix.views, {"uri": uri})


# -- the attack ---------------------------------------------------------------------------


async def test_two_fake_plays_do_not_take_the_ad_pool(ix):
    """The issue's reproduction: two plays of tracks that do not exist, 24 h each, against ten
    honest full listens of a real song. Before the fix the attacker's DID got 98.96% of the pool."""
    seq = await honest_listening(ix)
    fake = [f"at://{MALLORY}/{TRACK}/{rkey(900 + i)}" for i in range(2)]
    await ix.apply([commit(seq, MALLORY, 1, *(create(PLAY, rkey(800 + i), play(uri, 86_400_000, "2026-11-19T00:00:00.000Z"))
                                              for i, uri in enumerate(fake)))], seq)
    paid = await close_ads(ix)
    assert paid == {HONEST: 100_000}


async def test_varied_rkeys_and_huge_claims_earn_nothing_beyond_real_listening(ix):
    """Unlimited rkeys of tracks that do not exist (in anyone's repo) are no streams; a real track
    weighs at most its duration however long the claim; the cap of 10 a day is per real track."""
    seq = await honest_listening(ix)
    ghosts = [f"at://{d}/{TRACK}/{rkey(5000 + i)}" for i, d in enumerate([HONEST, MALLORY] * 25)]
    await ix.apply([commit(seq, MALLORY, 1, *(create(PLAY, rkey(700 + i), play(uri, 86_400_000, "2026-11-19T08:00:00.000Z"))
                                              for i, uri in enumerate(ghosts)))], seq)
    burst = [create(PLAY, rkey(600 + i), play(SONG, 86_400_000, f"2026-11-18T{i:02d}:00:00.000Z")) for i in range(12)]
    await ix.apply([commit(seq + 1, MALLORY, 2, *burst)], seq + 1)
    rows = await ix.sql("SELECT stream, stream_ms, heard_ms FROM play WHERE did = ? AND track_uri = ?", (MALLORY, SONG))
    assert sorted(rows) == [(0, 0, 180_000)] * 2 + [(1, 180_000, 180_000)] * 10
    assert await ix.sql("SELECT count(*) FROM play WHERE did = ? AND track_uri != ? AND (stream OR heard_ms IS NOT NULL)",
                        (MALLORY, SONG)) == [(0,)]
    s = await stats(ix, SONG)
    assert (s["plays"], s["freeStreams"], s["listenedMs"]) == (22, 20, 22 * 180_000)
    paid = await close_ads(ix)
    assert paid == {HONEST: 100_000}  # Mallory's real listening of the song pays its artist, nobody else


async def test_weight_is_capped_by_duration_and_the_segments_heard(ix):
    await ix.apply([commit(1, HONEST, 1, create(TRACK, rkey(1), song()))], 1)
    segments = [{"startMs": 0, "endMs": 60_000}, {"startMs": 30_000, "endMs": 90_000},
                {"startMs": 170_000, "endMs": 400_000}]  # union within the song: 90 s + 10 s
    await ix.apply([commit(2, FANS[0], 1, create(PLAY, rkey(10), play(SONG, 36_000_000, "2026-11-19T10:00:00.000Z",
                                                                     segments=segments)),
                           create(PLAY, rkey(11), play(SONG, 36_000_000, "2026-11-19T11:00:00.000Z")))], 2)
    rows = await ix.sql("SELECT rkey, heard_ms, stream_ms FROM play ORDER BY rkey")
    assert rows == [(rkey(10), 100_000, 100_000), (rkey(11), 180_000, 180_000)]
    assert (await stats(ix, SONG))["listenedMs"] == 280_000


async def test_plays_before_their_track_are_decided_when_it_appears_and_deletion_stops_pay(ix):
    ix.clock.now = "2026-11-19T12:00:00.000Z"
    await ix.apply([commit(1, FANS[0], 1, create(PLAY, rkey(10), play(SONG, 999_000, "2026-11-19T10:00:00.000Z"))),
                    commit(2, HONEST, 1, create(LIKE, rkey(11), like(SONG)))], 2)
    assert await ix.sql("SELECT heard_ms, stream FROM play") == [(None, 0)]
    ix.clock.now = "2026-11-19T12:01:00.000Z"  # the track arrives later (another repo, or a backfill)
    await ix.apply([commit(3, HONEST, 2, create(TRACK, rkey(1), song()))], 3)
    assert await ix.sql("SELECT heard_ms, stream, stream_ms FROM play") == [(180_000, 1, 180_000)]
    s = await stats(ix, SONG)
    assert (s["plays"], s["freeStreams"], s["listenedMs"], s["likes"]) == (1, 1, 180_000, 1)

    def weights():
        return period.stream_weights(ix.conn, "2026-11-01T00:00:00.000Z", "2026-12-01T00:00:00.000Z", None, False)
    assert [k[:2] for k, _w in await ix.run(weights)] == [(SONG, HONEST)]
    await ix.apply([commit(4, HONEST, 3, RecordOp("delete", TRACK, rkey(1), None))], 4)
    assert await ix.run(weights) == []  # a deleted track earns nothing in any period not yet closed
    await ix.apply([commit(5, HONEST, 4, create(TRACK, rkey(1), song()))], 5)
    assert [k[:2] for k, _w in await ix.run(weights)] == [(SONG, HONEST)]  # re-created: its streams are back
    assert (await stats(ix, SONG))["likes"] == 1


async def test_backdated_and_future_plays_earn_nothing(ix):
    ix.clock.now = "2026-11-14T12:00:00.000Z"
    await ix.apply([commit(1, HONEST, 1, create(TRACK, rkey(1), song(created="2026-11-10T00:00:00.000Z")))], 1)
    cases = [("2026-11-09T23:00:00.000Z", 0),  # before the track existed
             ("2026-11-09T23:57:00.000Z", 1)]  # within the 5 minutes' tolerance
    await ix.apply([commit(2 + i, FANS[i], 1, create(PLAY, rkey(10 + i), play(SONG, 180_000, at)))
                    for i, (at, _) in enumerate(cases)], 3)
    ix.clock.now = "2026-11-20T12:00:00.000Z"
    later = [("2026-11-13T11:59:00.000Z", 0),  # more than 7 days before we saw it
             ("2026-11-13T12:01:00.000Z", 1),
             ("2026-11-20T12:06:00.000Z", 0),  # 6 minutes in the future
             ("2026-11-20T11:57:00.000Z", 1)]
    await ix.apply([commit(4 + i, FANS[2 + i], 1, create(PLAY, rkey(20 + i), play(SONG, 180_000, at)))
                    for i, (at, _) in enumerate(later)], 8)
    rows = dict(await ix.sql("SELECT did, stream FROM play"))
    assert [rows[FANS[i]] for i in range(6)] == [want for _, want in cases + later]


async def test_a_listener_streams_at_most_the_day(ix):
    """Mallory publishes 24-hour tracks of her own and claims to hear each in full, many times a
    day: her streams weigh at most 24 h a UTC day, and on the current day at most what has passed."""
    day_long = [f"at://{MALLORY}/{TRACK}/{rkey(50 + i)}" for i in range(3)]
    await ix.apply([commit(1, MALLORY, 1, *(create(TRACK, rkey(50 + i), song(f"Long {i}", duration=86_400_000))
                                            for i in range(3)))], 1)
    ops = [create(PLAY, rkey(100 + n), play(uri, 86_400_000, f"2026-11-18T0{n % 10}:00:00.000Z"))
           for n, uri in enumerate(day_long * 3)]
    await ix.apply([commit(2, MALLORY, 2, *ops)], 2)
    assert await ix.sql("SELECT sum(stream_ms), count(*) FILTER (WHERE stream) FROM play") == [(86_400_000, 1)]
    ix.clock.now = "2026-11-20T01:00:00.000Z"
    await ix.apply([commit(3, MALLORY, 3, create(PLAY, rkey(200), play(day_long[0], 86_400_000,
                                                                        "2026-11-20T00:00:00.000Z")))], 3)
    assert await ix.sql("SELECT stream_ms FROM play WHERE rkey = ?", (rkey(200),)) == [(65 * 60_000,)]
    assert await ix.sql("SELECT day, stream_ms FROM listener_day ORDER BY day") == [
        ("2026-11-18", 86_400_000), ("2026-11-20", 65 * 60_000)]
    await ix.apply([commit(4, MALLORY, 4, RecordOp("delete", PLAY, rkey(200), None))], 4)
    assert await ix.sql("SELECT day, stream_ms FROM listener_day WHERE stream_ms > 0") == [("2026-11-18", 86_400_000)]


async def test_likes_count_once_per_account_and_never_for_deleted_subjects(ix):
    ghost = f"at://{HONEST}/{TRACK}/{rkey(77)}"
    await ix.apply([commit(1, FANS[0], 1, *(create(LIKE, rkey(10 + i), like(SONG)) for i in range(3)),
                           create(LIKE, rkey(20), like(ghost)))], 1)
    await ix.apply([commit(2, HONEST, 1, create(TRACK, rkey(1), song()))], 2)
    assert (await stats(ix, SONG))["likes"] == 1
    await ix.apply([commit(3, FANS[1], 1, create(LIKE, rkey(30), like(SONG)), create(LIKE, rkey(31), like(SONG)))], 3)
    assert (await stats(ix, SONG))["likes"] == 2
    await ix.apply([commit(4, FANS[0], 2, RecordOp("delete", LIKE, rkey(10), None), RecordOp("delete", LIKE, rkey(11), None))], 4)
    assert (await stats(ix, SONG))["likes"] == 2  # FANS[0] still likes it once
    await ix.apply([commit(5, FANS[0], 3, RecordOp("delete", LIKE, rkey(12), None))], 5)
    assert (await stats(ix, SONG))["likes"] == 1
    await ix.apply([commit(6, HONEST, 2, RecordOp("delete", TRACK, rkey(1), None))], 6)
    assert await ix.sql("SELECT track_uri, likes FROM track_stats WHERE track_uri IN (?, ?)", (SONG, ghost)) == [(SONG, 0)]
    await ix.apply([commit(7, FANS[1], 2, RecordOp("delete", LIKE, rkey(30), None))], 7)
    await ix.apply([commit(8, HONEST, 3, create(TRACK, rkey(1), song()))], 8)
    assert (await stats(ix, SONG))["likes"] == 1  # FANS[1]'s other like
    await ix.apply([AccountEvent(9, FANS[1], False, "deactivated", "")], 9)
    assert (await stats(ix, SONG))["likes"] == 0
    await ix.apply([AccountEvent(10, FANS[1], True, None, "")], 10)
    assert (await stats(ix, SONG))["likes"] == 1


def test_migration_decides_existing_plays_again(tmp_path):
    """A database from before the rules (0006): the migration decides every play again and recounts
    the stats; the ghost plays lose their streams."""
    from yoyo import get_backend, read_migrations

    from core.db import MIGRATIONS_DIR, connect_sync

    path = str(tmp_path / "old.sqlite")
    backend = get_backend(f"sqlite:///{path}")
    with backend.lock():
        backend.apply_migrations(backend.to_apply(read_migrations(str(MIGRATIONS_DIR)).filter(
            lambda m: m.id <= "0006_streams_and_subscriptions")))
    tx = connect_sync(path)
    tx.execute("INSERT INTO track (uri, did, rkey, cid, title, duration_ms, audio_cid, audio_mime, created_at, sort_at, "
               "indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)", (SONG, HONEST, rkey(1), CID, "s", 180_000, "a", "audio/wav",
                                                             "2026-10-01T00:00:00.000Z", "2026-10-01T00:00:00.000Z", NOW))
    tx.execute("INSERT INTO record (uri, did, collection, rkey, cid, json, indexed_at) VALUES (?,?,?,?,?,?,?)",
               (SONG, HONEST, TRACK, rkey(1), CID, "{}", NOW))
    ghost = f"at://{MALLORY}/{TRACK}/{rkey(9)}"
    old = [(FANS[0], SONG, 86_400_000, "2026-11-19T10:00:00.000Z", "2026-11-19T10:05:00.000Z", '[[0,60000]]'),
           (FANS[1], SONG, 100_000, "2026-10-02T10:00:00.000Z", NOW, None),  # imported 7 weeks late
           (MALLORY, ghost, 86_400_000, "2026-11-19T10:00:00.000Z", "2026-11-19T10:05:00.000Z", None)]
    for n, (did, track_uri, ms, at, indexed, segments) in enumerate(old):
        uri = f"at://{did}/{PLAY}/{rkey(10 + n)}"
        rec = {"track": {"uri": track_uri, "cid": CID}, "listenedMs": ms, "createdAt": at}
        if segments:
            rec["segments"] = [{"startMs": 0, "endMs": 60_000}]
        tx.execute("INSERT INTO play (uri, did, rkey, cid, track_uri, track_cid, track_did, created_at, sort_at, "
                   "listened_ms, indexed_at, stream, stream_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,1,?)",
                   (uri, did, rkey(10 + n), CID, track_uri, CID, track_uri.split("/")[2], at, at, ms, indexed, ms))
        tx.execute("INSERT INTO record (uri, did, collection, rkey, cid, json, indexed_at) VALUES (?,?,?,?,?,?,?)",
                   (uri, did, PLAY, rkey(10 + n), CID, json.dumps(rec), indexed))
        tx.execute("INSERT INTO track_stats (track_uri, plays, listened_ms, free_streams) VALUES (?,1,?,1) "
                   "ON CONFLICT (track_uri) DO UPDATE SET plays = plays + 1, listened_ms = listened_ms + excluded.listened_ms, "
                   "free_streams = free_streams + 1", (track_uri, ms))
    for i in range(3):  # one account, three likes
        tx.execute("INSERT INTO like_record (uri, did, rkey, cid, subject_uri, subject_cid, created_at, indexed_at) "
                   "VALUES (?,?,?,?,?,?,?,?)", (f"at://{FANS[0]}/{LIKE}/{rkey(40 + i)}", FANS[0], rkey(40 + i), CID, SONG,
                                                CID, NOW, NOW))
    tx.execute("UPDATE track_stats SET likes = 3 WHERE track_uri = ?", (SONG,))
    tx.commit()
    tx.close()
    db.migrate(path)
    tx = connect_sync(path)
    assert tx.execute("SELECT did, heard_ms, stream, stream_ms FROM play ORDER BY did").fetchall() == sorted([
        (FANS[0], 60_000, 1, 60_000), (FANS[1], 100_000, 0, 0), (MALLORY, None, 0, 0)])
    assert tx.execute("SELECT listened_ms, free_streams, likes FROM track_stats WHERE track_uri = ?", (SONG,)).fetchone() \
        == (160_000, 1, 1)
    assert tx.execute("SELECT listened_ms, free_streams FROM track_stats WHERE track_uri = ?", (ghost,)).fetchone() == (0, 0)
    assert tx.execute("SELECT did, day, stream_ms FROM listener_day").fetchall() == [(FANS[0], "2026-11-19", 60_000)]
    tx.close()


# -- the property -----------------------------------------------------------------------------------

SOCKS = [MALLORY, "did:plc:sockpuppetsockpuppetsoc1", "did:plc:sockpuppetsockpuppetsoc2"]
HONEST_TRACKS = [(HONEST, 1, 180_000), (HONEST, 2, 240_000), (OTHER, 3, 200_000)]
NOV = 1_793_491_200_000  # 2026-11-01T00:00:00Z, ms
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000


def iso_ms(ms: int) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def honest_events(listens) -> list[tuple[int, str, RecordOp]]:
    """The honest world: three songs by two artists, indexed on Nov 1; each listen (fan, song, day,
    hour, % heard) written by the fan's player right after it ends."""
    events = [(NOV, did, create(TRACK, rkey(n), song(f"Song {n}", duration=dur))) for did, n, dur in HONEST_TRACKS]
    for i, (fan, t, day, hour, pct) in enumerate(listens):
        did, n, dur = HONEST_TRACKS[t]
        began = NOV + (9 + day) * DAY + hour * HOUR + fan * 7 * MIN
        heard = dur * pct // 100
        events.append((began + heard + MIN, FANS[fan], create(PLAY, rkey(1000 + i), play(
            f"at://{did}/{TRACK}/{rkey(n)}", heard, iso_ms(began)))))
    return events


def attack_events(tracks, plays) -> tuple[list[tuple[int, str, RecordOp]], int]:
    """Whatever Mallory (and two sock puppets) write: 24-hour tracks of her own, backdated or not,
    indexed whenever; plays of tracks that do not exist (in her repo or the honest artists'), of her
    tracks (before or after they exist) and of the honest songs, claiming up to 24 h, dated from 40
    days before to 2 days after being written, with or without segments, in bursts of new rkeys.

    Returns the events and the most the attacker can really have listened, computed from what it
    wrote alone: per listener and UTC day, at most 24 h of plays of tracks that exist, each at most
    the track's length, 10 a day per track (plays of tracks that do not exist: nothing)."""
    events = []
    lengths = {f"at://{did}/{TRACK}/{rkey(k)}": dur for did, k, dur in HONEST_TRACKS}
    for i, (duration, created_days, indexed_day) in enumerate(tracks):
        events.append((NOV + (4 + indexed_day) * DAY, MALLORY, create(TRACK, rkey(50 + i), song(
            f"Mine {i}", duration=duration, created=iso_ms(NOV + created_days * DAY)))))
        lengths[f"at://{MALLORY}/{TRACK}/{rkey(50 + i)}"] = duration
    claims: dict[tuple[str, int], dict[str, list[int]]] = {}
    n = 0
    for who, target, idx, listened, offset, when, burst, segments in plays:
        for _ in range(burst):
            n += 1
            if target == "ghost":
                uri = f"at://{[HONEST, OTHER, MALLORY][idx % 3]}/{TRACK}/{rkey(5000 + n)}"  # a new rkey each time
            elif target == "honest":
                did, k, _dur = HONEST_TRACKS[idx % 3]
                uri = f"at://{did}/{TRACK}/{rkey(k)}"
            else:
                uri = f"at://{MALLORY}/{TRACK}/{rkey(50 + idx % 2)}"  # hers, whether it exists or not
            extra = {"segments": [{"startMs": a, "endMs": a + b} for a, b in segments]} if segments else {}
            events.append((when, SOCKS[who], create(PLAY, rkey(3000 + n), play(uri, listened, iso_ms(when + offset),
                                                                                   **extra))))
            if uri in lengths:
                day = claims.setdefault((SOCKS[who], (when + min(offset, 0)) // DAY), {})
                day.setdefault(uri, []).append(min(listened, lengths[uri]))
    real = sum(min(DAY, sum(sum(sorted(ms)[-10:]) for ms in day.values())) for day in claims.values())
    return events, real


async def run_world(path: str, events, clock: Clock) -> dict:
    """Index ``events`` (each at its own time), close November's ad pool; return the honest plays'
    decisions, the attacker's streams and the split."""
    ix, conn = await open_indexer(path, [HONEST, OTHER, *FANS, *SOCKS])
    try:
        revs: dict[str, int] = {}
        for seq, (when, did, op) in enumerate(sorted(events, key=lambda e: e[0]), start=1):
            clock.now = iso_ms(when)
            revs[did] = revs.get(did, 0) + 1
            await ix.apply([commit(seq, did, revs[did], op)], seq)

        def read(tx) -> dict:
            start, end = period.period_bounds("2026-11")
            honest = tx.execute("SELECT uri, heard_ms, stream, paid, stream_ms FROM play WHERE did LIKE 'did:plc:fan%' "
                                "ORDER BY uri").fetchall()
            attack = tx.execute(
                "SELECT p.did, p.track_uri, p.sort_at, p.created_at, p.indexed_at, p.stream_ms, t.duration_ms, t.sort_at "
                "FROM play p LEFT JOIN track t ON t.uri = p.track_uri WHERE p.stream = 1 AND p.did IN (?,?,?)",
                SOCKS).fetchall()
            return {"honest": honest, "attack": attack, "weights": period.stream_weights(tx, start, end, None, False)}
        out = await ix.run(read, ix.conn)
        assert await ix.transact(period.enter_ad_revenue, "2026-11", 100_000, "USD")
        await ix.transact(period.close_period, "2026-11", 3000, "salt", CLOSED)
        out["earned"] = await ix.run(lambda: earnings_of(ix.conn, HONEST, OTHER, MALLORY, *SOCKS[1:], *FANS))
        assert await ix.run(lambda: ledger.check(ix.conn)) == []
        return out
    finally:
        await ix.close()
        await conn.close()


def by_artist(weights) -> tuple[dict[str, int], dict[str, int]]:
    """Weights (ms x bps) and (track, recipient) keys per recipient DID."""
    w: dict[str, int] = {}
    keys: dict[str, int] = {}
    for (_track, did, _bps, _ms), weight in weights:
        w[did] = w.get(did, 0) + weight
        keys[did] = keys.get(did, 0) + 1
    return w, keys


def test_no_fake_play_lowers_an_honest_artists_share(tmp_path_factory):
    """Whatever plays an attacker writes:

    1. every honest listener's play is decided exactly as without the attack (same heard ms, same
       stream, same weight): the caps are per listener, and nothing else an attacker writes counts;
    2. the attacker's streams are all of tracks indexed by the close, each weighing at most the
       track's duration, dated within the rules, at most 10 a day per (listener, track) and at most
       24 h a day per listener: their "real capped listening";
    3. so for every honest artist X, with W_h(X) the weight of the honest plays of X's tracks and W
       the total weight (honest + attacker), X's share is at least pool x W_h(X) / W (less a cent per
       (track, recipient) line for rounding), and W exceeds the honest weight by at most the
       attacker's real capped listening computed from its records alone (``attack_events``): the
       attacker can dilute the pool only by that much listening, never by anything else, and
    4. two honest artists whose songs the attacker did not stream keep their ratio (to the cent),
       and when none of the attacker's plays is a stream, every honest artist's earnings are the
       same, to the cent, as without the attack.
    """
    from hypothesis import HealthCheck, event, given, settings
    from hypothesis import strategies as st

    template = str(tmp_path_factory.mktemp("template") / "t.sqlite")
    db.migrate(template)
    listens = st.lists(st.tuples(st.integers(0, len(FANS) - 1), st.integers(0, 2), st.integers(0, 9),
                                 st.integers(0, 23), st.integers(0, 100)), min_size=1, max_size=10)
    mine = st.lists(st.tuples(st.one_of(st.just(DAY), st.integers(1, DAY)), st.integers(-60, 25), st.integers(0, 20)),
                    max_size=2)
    attack = st.lists(st.tuples(
        st.integers(0, 2), st.sampled_from(["ghost", "honest", "mine", "mine"]), st.integers(0, 5),
        st.one_of(st.just(DAY), st.integers(0, DAY)),
        st.one_of(st.integers(-HOUR, 0), st.integers(-40 * DAY, 2 * DAY),  # createdAt - when written
                  st.sampled_from([-7 * DAY - MIN, -7 * DAY + MIN, -8 * DAY, -20 * DAY, 4 * MIN, 6 * MIN])),
        st.integers(NOV + 2 * DAY, NOV + 28 * DAY), st.integers(1, 12),
        st.one_of(st.none(), st.lists(st.tuples(st.integers(0, DAY), st.integers(0, DAY)), max_size=4))),
        min_size=1, max_size=8)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])
    @given(listens, mine, attack)
    def check(honest_listens, my_tracks, my_plays):
        clock = Clock()
        honest = honest_events(honest_listens)
        worlds = []
        with frozen(clock):
            attack, real_ms = attack_events(my_tracks, my_plays)
            for events in (honest, honest + attack):
                path = str(tmp_path_factory.mktemp("world") / "w.sqlite")
                shutil.copy(template, path)
                worlds.append(asyncio.run(run_world(path, events, clock)))
        alone, attacked = worlds

        # 1. honest decisions do not move
        assert attacked["honest"] == alone["honest"]

        # 2. the attacker's streams are capped, real listening
        per_day: dict[tuple[str, str], int] = {}
        per_track_day: dict[tuple[str, str, str], int] = {}
        for did, track_uri, sort_at, created, indexed, ms, duration, since in attacked["attack"]:
            assert duration is not None and 0 < ms <= duration  # an indexed track, at most its length
            c, i, t = (streams.epoch_ms(v) for v in (created, indexed, since))
            assert i - streams.MAX_AGE_MS <= c <= i + streams.FUTURE_TOLERANCE_MS
            assert c >= t - streams.TRACK_TOLERANCE_MS
            per_day[(did, sort_at[:10])] = per_day.get((did, sort_at[:10]), 0) + ms
            key = (did, track_uri, sort_at[:10])
            per_track_day[key] = per_track_day.get(key, 0) + 1
        assert all(v <= streams.DAILY_MS_CAP for v in per_day.values())
        assert all(v <= streams.DAILY_CAP for v in per_track_day.values())

        # 3. an honest artist's share is at least the honest plays' share of the whole weight
        honest_w, _ = by_artist(alone["weights"])
        all_w, keys = by_artist(attacked["weights"])
        total = sum(all_w.values())
        attacker_ms = sum(per_day.values())
        honest_total = sum(w for _k, w in alone["weights"])
        assert total - honest_total <= attacker_ms * 10_000 <= real_ms * 10_000
        pool = 100_000
        event(f"attacker streams: {'some' if attacker_ms else 'none'}")
        for artist in (HONEST, OTHER):
            if honest_w.get(artist):
                assert (attacked["earned"][artist] + keys[artist]) * total >= pool * honest_w[artist]
                bound = honest_total + real_ms * 10_000  # the worst the attacker can do
                assert (attacked["earned"][artist] + keys[artist]) * bound >= pool * honest_w[artist]
        assert not any(attacked["earned"][d] for d in SOCKS[1:] + FANS)  # nobody else is ever paid

        # 4. untouched honest artists keep their ratio; no attacking stream, no change at all
        targeted = {uri.split("/")[2] for _d, uri, *_ in attacked["attack"]}
        for artist in (HONEST, OTHER):
            if artist not in targeted and honest_w.get(artist):
                exact = pool * honest_w[artist]
                assert abs(attacked["earned"][artist] * total - exact) <= keys[artist] * total
        if not attacked["attack"]:
            assert attacked["earned"] == alone["earned"]

    check()
