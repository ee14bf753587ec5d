"""Analytics (issue 12): the rollups the indexer keeps (``indexer.rollups``), the queries on them
(``appview.analytics``, ``fm.openmusic.analytics.*``), who may read them, migration 0011's
backfill, and ``openmusic analytics check | rebuild``.

The worked example, by hand. Artist ART holds SONG (10 s: a stream needs 5 s) and SONG2 (60 s).
Indexer clock 2026-11-20T12:00Z; 2026-11-16 is a Monday. BEN has a paid tier for November, recorded
after his first play (``streams.mark_paid`` turns it from free to paid). DAN's handle is not verified.

====  ========  =========  ===================  ==========  =======  =====  ===================
play  listener  day (11-)  segments (s)         listenedMs  country  heard  decision
====  ========  =========  ===================  ==========  =======  =====  ===================
P1    ana       16         0-10                 10 000      de       10 s   free (indexed before
                                                                            SONG: decided later)
P2    ben       16         0-4, 7-10            7 000       FR       7 s    free, then paid
P3    cat       17         0-3                  3 000       -        3 s    short (< 5 s)
P4    ana       17         0-6, 2-6 (replay)    10 000      DE       6 s    free
P5    dan       19         0-10                 10 000      DE       -      deleted
P6    cat       19         0-2, edited to 0-8   8 000       - -> se  8 s    short, then free
P7    dan       19         none                 10 000      DE       10 s   free
P8    ben       18 (SONG2) none                 60 000      FR       60 s   paid
====  ========  =========  ===================  ==========  =======  =====  ===================

Retention of SONG, over the 5 plays with segments (P1 P2 P3 P4 P6; P7 has none), second by second:
P1 hears 0-9, P2 0-3 and 7-9, P3 0-2, P4 0-5, P6 0-7, so heard = 5 5 5 4 3 3 2 3 2 2 (shares 10000
10000 10000 8000 6000 6000 4000 6000 4000 4000 bps). P4's 2-6 s overlaps its 0-6 s: replayed = 1 on
seconds 2-5, one passage [2, 6) with peak 1. Segments end in second 9 (P1, P2: the end, not a skip),
3 (P2), 2 (P3), 5 (P4), 7 (P6): skip points 2, 3, 5, 7, one stop each (2000 bps).

SONG by day, 16 to 19: 16: 2 plays (P1 free, P2 paid), 2 listeners, 17 s heard; 17: 2 plays (P4 free,
P3 short), 2 listeners, 9 s; 18: nothing; 19: 2 plays (P6, P7 free), 2 listeners, 18 s. Totals: 6
plays, 1 paid, 4 free, 1 short, 4 listeners, 44 s. The artist adds 18: P8 (paid, ben, 60 s): 7 plays,
2 paid, 4 free, 1 short, 4 listeners, 104 s.

Countries of SONG: DE 3 plays, 3 streams, 2 listeners (ana, dan); FR 1/1/1; SE 1/1/1 (FR before SE:
a tie, by code); none: P3, 1 play, 0 streams, 1 listener (cat also counts in SE). The artist's FR
has 2 plays and 2 streams (P8).

Top listeners of ART (streams, then plays, then who was seen first): ana (2 streams, 2 plays, 16 s), ben (2, 2,
67 s), cat (1, 2, 11 s), dan (1, 1, 10 s; shown as handle.invalid).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import httpx
import pytest

from appview import analytics
from appview.app import create_app
from appview.xrpc import XrpcError, validate_params
from core import db
from core.config import Settings
from core.lexicons import validator
from firehose.events import AccountEvent, RecordOp
from indexer import rollups, streams
from openmusic import cli
from openmusic.runtime import Runtime
from payments.auth import ServiceAuth
from tests.records import track as track_record
from tests.test_auth_units import DID_KEY, jwt
from tests.test_fake_plays_property import Clock, frozen, open_indexer
from tests.test_indexer_units import PLAY, TRACK, commit, create, rkey

PROFILE = "fm.openmusic.actor.profile"
NS = "fm.openmusic.analytics."
SERVICE = "did:web:music.example"


def did(name: str) -> str:
    """A valid did:plc made of ``name`` repeated (letters only)."""
    return "did:plc:" + (name * 24)[:24]


ART, ANA, BEN, CAT, DAN = did("art"), did("ana"), did("ben"), did("cat"), did("dan")
MAX, MEG, SUE, OPS = did("max"), did("meg"), did("sue"), did("ops")  # agreed manager, one-sided, stranger, operator
SONG, SONG2 = f"at://{ART}/{TRACK}/{rkey(1)}", f"at://{ART}/{TRACK}/{rkey(2)}"
CID = "bafyreia"


def play(track_uri: str, ms: int, at: str, segments: list[tuple[int, int]] | None = None, **extra) -> dict:
    rec = {"$type": PLAY, "track": {"uri": track_uri, "cid": CID}, "listenedMs": ms, "createdAt": at, **extra}
    if segments is not None:
        rec["segments"] = [{"startMs": a, "endMs": b} for a, b in segments]
    return rec


def profile(**fields) -> dict:
    return {"$type": PROFILE, "createdAt": "2026-11-01T00:00:00.000Z", **fields}


def day(d: int, hour: int) -> str:
    return f"2026-11-{d:02d}T{hour:02d}:00:00.000Z"


async def pay_november(ix, listener: str) -> int:
    """A paid invoice covering November for ``listener``; their free streams in it become paid."""
    def work(tx):
        tx.execute("INSERT INTO subscription_invoice (id, subscription, did, tier, status, period_start, period_end, "
                   "amount_paid, currency, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                   (f"in_{listener[-6:]}", "sub", listener, "plus", "paid", "2026-11-01T00:00:00.000Z",
                    "2026-12-01T00:00:00.000Z", 999, "USD", "2026-11-20T12:00:00.000Z"))
        return streams.mark_paid(tx, listener, "2026-11-01T00:00:00.000Z", "2026-12-01T00:00:00.000Z")
    return await ix.transact(work)


async def worked_example(ix) -> None:
    """The docstring's plays, in this order, through the real indexer."""
    seq = iter(range(1, 100))

    async def send(who: str, n: int, *ops: RecordOp) -> None:
        s = next(seq)
        await ix.apply([commit(s, who, n, *ops)], s)
    await send(ANA, 1, create(PLAY, rkey(11), play(SONG, 10_000, day(16, 10), [(0, 10_000)], country="de")))
    await send(ART, 1, create(TRACK, rkey(1), track_record("Song", duration=10_000, createdAt="2026-11-01T00:00:00.000Z")),
               create(TRACK, rkey(2), track_record("Song Two", duration=60_000, createdAt="2026-11-01T00:00:00.000Z")),
               create(PROFILE, "self", profile(managers=[MAX, MEG])))
    await send(BEN, 1, create(PLAY, rkey(12), play(SONG, 7_000, day(16, 11), [(0, 4_000), (7_000, 10_000)], country="FR")))
    assert await pay_november(ix, BEN) == 1
    await send(CAT, 1, create(PLAY, rkey(13), play(SONG, 3_000, day(17, 9), [(0, 3_000)])))
    await send(ANA, 2, create(PLAY, rkey(14), play(SONG, 10_000, day(17, 10), [(0, 6_000), (2_000, 6_000)],
                                                   country="DE")))
    await send(DAN, 1, create(PLAY, rkey(15), play(SONG, 10_000, day(19, 8), [(0, 10_000)], country="DE")))
    await send(CAT, 2, create(PLAY, rkey(16), play(SONG, 2_000, day(19, 9), [(0, 2_000)])))
    await send(DAN, 2, create(PLAY, rkey(17), play(SONG, 10_000, day(19, 10), country="DE")))
    await send(BEN, 2, create(PLAY, rkey(18), play(SONG2, 60_000, day(18, 10), country="FR")))
    await send(DAN, 3, RecordOp("delete", PLAY, rkey(15), None))
    await send(CAT, 3, RecordOp("update", PLAY, rkey(16), "bafyreib", play(SONG, 8_000, day(19, 9), [(0, 8_000)],
                                                                         country="se")))
    await send(MAX, 1, create(PROFILE, "self", profile(manages=[ART])))
    await send(MEG, 1, create(PROFILE, "self", profile(manages=[])))


@pytest.fixture(scope="module")
async def example(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("analytics") / "a.sqlite")
    db.migrate(path)
    with frozen(Clock("2026-11-20T12:00:00.000Z")):
        ix, conn = await open_indexer(path, [ART, ANA, BEN, CAT, DAN, MAX, MEG, SUE, OPS])
        await ix.sql("UPDATE actor SET handle = NULL, handle_verified = 0 WHERE did = ?", (DAN,))
        await worked_example(ix)
    yield ix, path
    await ix.close()
    await conn.close()


async def ask(ix, name: str, caller: str = ART, **params) -> dict:
    """One analytics query through its handler, params checked by its lexicon like over XRPC; the
    answer is checked against the lexicon's output."""
    p = validate_params(NS + name, [(k, str(v)) for k, v in params.items()])
    out = await analytics.ANALYTICS[NS + name](ix.views, frozenset({OPS}), caller, p)
    validator().validate(NS + name, "output", out)
    return out


def counts(bucket: str | None, plays: int, paid: int, free: int, short: int, listeners: int, ms: int) -> dict:
    out = {"plays": plays, "paidStreams": paid, "freeStreams": free, "shortPlays": short, "uniqueListeners": listeners,
           "listenedMs": ms}
    return out if bucket is None else {"bucket": bucket, **out}


async def test_worked_example_retention(example):
    ix, _ = example
    r = await ask(ix, "getRetention", track=SONG)
    assert (r["artist"], r["track"], r["durationMs"], r["plays"], r["playsWithoutSegments"]) == (ART, SONG, 10_000, 5, 1)
    assert r["heard"] == [5, 5, 5, 4, 3, 3, 2, 3, 2, 2]
    assert r["shareBps"] == [10000, 10000, 10000, 8000, 6000, 6000, 4000, 6000, 4000, 4000]
    assert r["replayed"] == [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    assert r["skipPoints"] == [{"second": s, "stops": 1, "shareBps": 2000} for s in (2, 3, 5, 7)]
    assert r["replayedPassages"] == [{"start": 2, "end": 6, "peak": 1}]
    r2 = await ask(ix, "getRetention", track=SONG2)  # 60 s, one play without segments
    assert (r2["plays"], r2["playsWithoutSegments"], len(r2["heard"]), set(r2["heard"])) == (0, 1, 60, {0})
    assert r2["skipPoints"] == r2["replayedPassages"] == []


async def test_worked_example_streams(example):
    ix, _ = example
    s = await ask(ix, "getStreams", track=SONG, start="2026-11-16", end="2026-11-19")
    assert (s["artist"], s["track"], s["granularity"]) == (ART, SONG, "day")
    assert s["buckets"] == [counts("2026-11-16", 2, 1, 1, 0, 2, 17_000), counts("2026-11-17", 2, 0, 1, 1, 2, 9_000),
                            counts("2026-11-18", 0, 0, 0, 0, 0, 0), counts("2026-11-19", 2, 0, 2, 0, 2, 18_000)]
    assert s["totals"] == counts(None, 6, 1, 4, 1, 4, 44_000)
    a = await ask(ix, "getStreams", artist=ART, start="2026-11-16", end="2026-11-19")
    assert "track" not in a and a["buckets"][2] == counts("2026-11-18", 1, 1, 0, 0, 1, 60_000)
    assert a["totals"] == counts(None, 7, 2, 4, 1, 4, 104_000)
    w = await ask(ix, "getStreams", artist=ART, start="2026-11-10", end="2026-11-19", granularity="week")
    assert w["buckets"] == [counts("2026-11-09", 0, 0, 0, 0, 0, 0), counts("2026-11-16", 7, 2, 4, 1, 4, 104_000)]
    m = await ask(ix, "getStreams", artist="artartartart.test", start="2026-10-20", end="2026-11-19",
                  granularity="month")  # a handle, resolved as the other queries resolve one
    assert [b["bucket"] for b in m["buckets"]] == ["2026-10-01", "2026-11-01"]
    assert m["buckets"][1] == counts("2026-11-01", 7, 2, 4, 1, 4, 104_000)
    one = await ask(ix, "getStreams", track=SONG, start="2026-11-17", end="2026-11-17")
    assert one["buckets"] == [counts("2026-11-17", 2, 0, 1, 1, 2, 9_000)]


async def test_worked_example_countries_and_tops(example):
    ix, _ = example
    c = await ask(ix, "getCountries", track=SONG, start="2026-11-16", end="2026-11-19")
    assert c["countries"] == [{"country": "DE", "plays": 3, "streams": 3, "listeners": 2},
                              {"country": "FR", "plays": 1, "streams": 1, "listeners": 1},
                              {"country": "SE", "plays": 1, "streams": 1, "listeners": 1}]
    assert c["withoutCountry"] == {"plays": 1, "streams": 0, "listeners": 1}
    a = await ask(ix, "getCountries", artist=ART, start="2026-11-16", end="2026-11-19")
    assert a["countries"][1] == {"country": "FR", "plays": 2, "streams": 2, "listeners": 1}
    assert (await ask(ix, "getCountries", track=SONG, start="2026-11-18", end="2026-11-18"))["countries"] == []
    t = await ask(ix, "getTopTracks", artist=ART, start="2026-11-16", end="2026-11-19")
    assert t["tracks"] == [
        {"uri": SONG, "title": "Song", "plays": 6, "paidStreams": 1, "freeStreams": 4, "uniqueListeners": 4,
         "listenedMs": 44_000},
        {"uri": SONG2, "title": "Song Two", "plays": 1, "paidStreams": 1, "freeStreams": 0, "uniqueListeners": 1,
         "listenedMs": 60_000}]
    assert len((await ask(ix, "getTopTracks", artist=ART, start="2026-11-16", end="2026-11-19", limit=1))["tracks"]) == 1
    top = await ask(ix, "getTopListeners", artist=ART, start="2026-11-16", end="2026-11-19")
    assert top["listeners"] == [
        {"handle": "anaanaanaana.test", "plays": 2, "streams": 2, "listenedMs": 16_000},
        {"handle": "benbenbenben.test", "plays": 2, "streams": 2, "listenedMs": 67_000},
        {"handle": "catcatcatcat.test", "plays": 2, "streams": 1, "listenedMs": 11_000},
        {"handle": "handle.invalid", "plays": 1, "streams": 1, "listenedMs": 10_000}]
    assert all(set(x) == {"handle", "plays", "streams", "listenedMs"} for x in top["listeners"])  # no DID


async def test_worked_example_rollups_equal_a_recount(example):
    ix, _ = example
    differing, lines = await ix.run(rollups.check, ix.conn)
    assert differing == {"track_day": 0, "track_day_listener": 0, "track_second": 0}, lines
    rows = await ix.sql("SELECT second, heard, replayed, stops FROM track_second WHERE track_uri = ? AND "
                        "NOT (heard = 0 AND replayed = 0 AND stops = 0) ORDER BY 1", (SONG,))
    # the difference array: +5 at 0; at 2 P4's replay begins and P3 stops; at 3 P3 is gone and P2 stops; ...
    # at 10 (past the end) P1 and P2 are gone: ten rows for the whole curve
    assert rows == [(0, 5, 0, 0), (2, 0, 1, 1), (3, -1, 0, 1), (4, -1, 0, 0), (5, 0, 0, 1), (6, -1, -1, 0),
                    (7, 1, 0, 1), (8, -1, 0, 0), (9, 0, 0, 2), (10, -2, 0, 0)]


async def test_who_may_read(example):
    ix, _ = example
    assert await analytics.authorize(ix.views, frozenset({OPS}), ART, ART) == "artist"
    assert await analytics.authorize(ix.views, frozenset({OPS}), MAX, ART) == "manager"
    assert await analytics.authorize(ix.views, frozenset({OPS}), OPS, ART) == "operator"
    for caller in (SUE, MEG, ANA):  # a stranger; named by the artist but not naming back; a listener
        with pytest.raises(XrpcError) as refused:
            await analytics.authorize(ix.views, frozenset({OPS}), caller, ART)
        assert (refused.value.status, refused.value.error) == (403, "Forbidden")
    with pytest.raises(XrpcError) as refused:
        await analytics.authorize(ix.views, frozenset(), OPS, ART)  # no longer an operator
    assert refused.value.status == 403


@pytest.mark.parametrize("params,status,error,says", [
    ({"track": SONG, "start": "yesterday"}, 400, "InvalidRequest", "start must be a date, YYYY-MM-DD"),
    ({"track": SONG, "end": "2026-02-30"}, 400, "InvalidRequest", "end must be a date"),
    ({"track": SONG, "start": "2026-11-01T00:00:00Z"}, 400, "InvalidRequest", "start must be a date"),
    ({"track": SONG, "start": "2026-11-19", "end": "2026-11-16"}, 400, "InvalidRequest", "is before start"),
    ({"track": SONG, "start": "2025-01-01", "end": "2026-11-19"}, 400, "InvalidRequest",
     "a series by day covers at most 366"),
    ({"track": SONG, "start": "2025-01-01", "end": "2026-11-19", "granularity": "week"}, 200, None, None),
    ({"track": SONG, "start": "2016-01-01", "end": "2026-11-19", "granularity": "month"}, 400, "InvalidRequest",
     "at most 3660"),
    ({"track": SONG, "granularity": "year"}, 400, "InvalidRequest", "granularity"),
    ({"track": f"at://{ART}/{TRACK}/{rkey(99)}"}, 400, "TrackNotFound", "is not indexed"),
    ({"track": f"at://{ART}/{PLAY}/{rkey(11)}"}, 400, "InvalidRequest", "is not a fm.openmusic.catalog.track"),
    ({"artist": did("zzz")}, 400, "ActorNotFound", "no active account"),
    ({"artist": ART, "track": SONG}, 400, "InvalidRequest", "not both"),
    ({}, 400, "InvalidRequest", "give artist or track"),
])
async def test_bad_requests_say_what_is_wrong(example, params, status, error, says):
    ix, _ = example
    try:
        await ask(ix, "getStreams", **params)
    except XrpcError as exc:
        assert (exc.status, exc.error) == (status, error) and says in exc.message, exc.message
    else:
        assert status == 200


# -- over HTTP: the real Starlette app, service-auth JWTs ----------------------------------------

@pytest.fixture(scope="module")
async def http(example, tmp_path_factory):
    _, path = example
    rt = Runtime(Settings(db_path=path, blob_cache_dir=str(tmp_path_factory.mktemp("blobs")), verify_commits=False,
                          log_level="WARNING", operator_dids=f" {OPS}, "))
    await rt.start(firehose=False)

    async def key(did_: str, refresh: bool) -> str | None:
        return DID_KEY  # every test account signs with the one test key

    rt.auth = ServiceAuth(SERVICE, key, await rt._connect())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt)), base_url="http://t") as client:
        yield client
    await rt.stop()


def bearer(caller: str, nsid: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt(iss=caller, aud=SERVICE, lxm=nsid, jti=str(time.monotonic_ns()))}


async def test_http_artist_manager_operator_and_stranger(http):
    nsid = NS + "getCountries"
    params = {"artist": ART, "start": "2026-11-16", "end": "2026-11-19"}
    for caller in (ART, MAX, OPS):
        resp = await http.get(f"/xrpc/{nsid}", params=params, headers=bearer(caller, nsid))
        assert resp.status_code == 200, (caller, resp.text)
        assert resp.json()["countries"][0] == {"country": "DE", "plays": 3, "streams": 3, "listeners": 2}
    for caller in (SUE, MEG):
        resp = await http.get(f"/xrpc/{nsid}", params=params, headers=bearer(caller, nsid))
        assert resp.status_code == 403 and resp.json()["error"] == "Forbidden"
        assert "may not read the analytics" in resp.json()["message"]
    resp = await http.get(f"/xrpc/{nsid}", params=params)
    assert resp.status_code == 401 and resp.json()["error"] == "AuthRequired"
    resp = await http.get(f"/xrpc/{nsid}", params=params, headers=bearer(ART, NS + "getStreams"))  # wrong lxm
    assert resp.status_code == 401 and resp.json()["error"] == "InvalidToken"
    resp = await http.get(f"/xrpc/{NS}getRetention", params={"track": SONG}, headers=bearer(MAX, NS + "getRetention"))
    assert resp.status_code == 200 and resp.json()["heard"][0] == 5
    resp = await http.get(f"/xrpc/{NS}getStreams", params={"track": SONG, "start": "2026-13-01"},
                          headers=bearer(ART, NS + "getStreams"))
    assert resp.status_code == 400 and resp.json() == {
        "error": "InvalidRequest", "message": "start must be a date, YYYY-MM-DD (UTC), got '2026-13-01'"}
    head = await http.head(f"/xrpc/{nsid}", params=params, headers=bearer(ART, nsid))
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
    resp = await http.post(f"/xrpc/{nsid}", json={}, headers=bearer(ART, nsid))
    assert resp.status_code == 405


GARBAGE = ["", " ", "0", "-1", "99999999999999999999999", "NaN", "[]", "%00", "\x00", "did:plc:../../admin",
           "at://did:plc:x/fm.openmusic.catalog.track/../../x", "a" * 5000, "'; DROP TABLE track; --", "@handle.invalid",
           "é" * 300, "2026-11-01", "9999-12-31", "0001-01-01"]


async def test_http_garbage_in_every_parameter_is_a_4xx(http):
    """Every parameter of every analytics query, given garbage (with the others sane): an answer or
    an XRPC error, never a 5xx."""
    sane = {"track": SONG, "start": "2026-11-16", "end": "2026-11-19"}
    for nsid in analytics.ANALYTICS:
        props = validator().defs[nsid]["parameters"]["properties"]
        base = {k: v for k, v in sane.items() if k in props}
        if "track" not in props:
            base["artist"] = ART
        for name in props:
            for value in GARBAGE:
                resp = await http.get(f"/xrpc/{nsid}", params={**base, name: value}, headers=bearer(ART, nsid))
                assert resp.status_code < 500, (nsid, name, value, resp.text)
                if resp.status_code >= 400:
                    assert set(resp.json()) == {"error", "message"}, resp.text


# -- the migration, the command --------------------------------------------------------------------

ROLLUP_TABLES = ("track_day", "track_day_listener", "track_second")


def snapshot(path: str) -> dict[str, list]:
    conn = db.connect_sync(path)
    try:
        out = {"track_day": conn.execute("SELECT * FROM track_day ORDER BY 1, 2").fetchall(),
               "track_day_listener": conn.execute(  # listeners by DID: the numbers depend on the order seen
                   "SELECT l.track_uri, l.day, i.did, l.country, l.plays, l.streams, l.listened_ms FROM "
                   "track_day_listener l JOIN analytics_listener i ON i.id = l.listener ORDER BY 1, 2, 3").fetchall()}
        out["track_second"] = conn.execute("SELECT * FROM track_second WHERE NOT (heard = 0 AND replayed = 0 AND "
                                           "stops = 0) ORDER BY 1, 2").fetchall()  # rows at 0 read as none
        out["replayed"] = conn.execute("SELECT uri, replayed FROM play ORDER BY uri").fetchall()
        return out
    finally:
        conn.close()


async def test_migration_backfills_what_the_indexer_keeps(example, tmp_path):
    """The example's database taken back to before 0011 (no rollups, no ``play.replayed``): the
    migration rebuilds exactly what the indexer kept play by play."""
    ix, path = example
    await ix.sql("PRAGMA wal_checkpoint(TRUNCATE)")
    old = str(tmp_path / "old.sqlite")
    shutil.copy(path, old)
    want = snapshot(old)
    assert want["track_day"] and want["track_second"] and any(r[1] for r in want["replayed"])
    conn = db.connect_sync(old)
    for table in (*ROLLUP_TABLES, "analytics_listener"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("ALTER TABLE play DROP COLUMN replayed")
    conn.execute("DELETE FROM _yoyo_migration WHERE migration_id = '0011_analytics_rollups'")
    conn.close()
    assert db.migrate(old) == 1
    assert snapshot(old) == want


def test_cli_check_finds_a_difference_and_rebuild_repairs_it(example, tmp_path, capsys):
    _, path = example
    copy = str(tmp_path / "c.sqlite")
    conn = db.connect_sync(path)
    conn.execute(f"VACUUM INTO '{copy}'")
    conn.close()
    assert cli.main(["analytics", "check", "--db-path", copy]) == 0
    assert "the analytics rollups match the recount" in capsys.readouterr().out
    conn = db.connect_sync(copy)
    conn.execute("UPDATE track_day SET plays = plays + 1 WHERE track_uri = ? AND day = '2026-11-17'", (SONG,))
    conn.execute("DELETE FROM track_second WHERE track_uri = ? AND second = 0", (SONG,))
    conn.close()
    assert cli.main(["analytics", "check", "--db-path", copy]) == 1
    out = capsys.readouterr().out
    assert f"DIFFERENT: track_day {SONG} 2026-11-17: stored plays=3" in out and "recount plays=2" in out
    assert f"DIFFERENT: track_second {SONG} 0: stored no row; recount heard=5" in out
    assert "track_day: 1 row differ" in out and "track_second: 1 row differ" in out
    assert cli.main(["analytics", "rebuild", "--db-path", copy]) == 0
    assert "track_day 4 rows, track_day_listener 7 rows" in capsys.readouterr().out
    assert cli.main(["analytics", "check", "--db-path", copy]) == 0
    assert cli.main(["analytics", "check", "--db-path", str(tmp_path / "missing.sqlite")]) == 2


# -- hypothesis: whatever happens to plays, the rollups equal a recount ----------------------------

def test_rollups_equal_a_recount_after_any_sequence(tmp_path_factory):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    listeners = [ANA, BEN, CAT]
    tracks = [(SONG, 10_000), (SONG2, 12_500)]
    template = str(tmp_path_factory.mktemp("template") / "t.sqlite")
    db.migrate(template)
    edges = st.sampled_from([0, 999, 1_000, 4_999, 5_000, 9_999, 10_000, 12_500, 86_399_500, 86_400_000, 90_000_000])
    ms = st.one_of(st.integers(0, 20_000), edges)
    segment = st.tuples(ms, st.integers(0, 15_000)).map(lambda s: (s[0], s[0] + s[1]))
    write = st.tuples(st.just("play"), st.integers(0, 2), st.integers(0, 5), st.integers(0, 1),
                      st.sampled_from([day(17, 3), day(18, 20), day(19, 23), day(20, 11), "2026-11-30T00:00:00.000Z"]),
                      st.integers(0, 20_000), st.none() | st.lists(segment, max_size=4),
                      st.sampled_from([None, "de", "FR"]))
    op = st.one_of(write, write,
                   st.tuples(st.just("delete"), st.integers(0, 2), st.integers(0, 5)),
                   st.tuples(st.just("track"), st.integers(0, 1)),
                   st.tuples(st.just("untrack"), st.integers(0, 1)),
                   st.tuples(st.just("paid"), st.integers(0, 2)),
                   st.tuples(st.just("account"), st.integers(0, 2)))

    async def run(path: str, first: list[bool], ops: list[tuple]) -> list[str]:
        ix, conn = await open_indexer(path, listeners + [ART])
        problems: list[str] = []
        try:
            revs = {d: 1 for d in listeners + [ART]}
            written: set[tuple[int, int]] = set()
            active = {d: True for d in listeners}
            ops = [("track", i) for i, yes in enumerate(first) if yes] + ops  # tracks there from the start, or not

            def next_rev(who: str) -> int:
                revs[who] += 1
                return revs[who]
            for seq, o in enumerate(ops, start=1):
                kind = o[0]
                if kind == "play":
                    _, who, key, t, at, listened, segs, country = o
                    rec = play(tracks[t][0], listened, at, segs, **({"country": country} if country else {}))
                    action = "update" if (who, key) in written else "create"
                    written.add((who, key))
                    evt = commit(seq, listeners[who], next_rev(listeners[who]),
                                 RecordOp(action, PLAY, rkey(key), CID, rec))
                elif kind == "delete":
                    written.discard((o[1], o[2]))
                    evt = commit(seq, listeners[o[1]], next_rev(listeners[o[1]]),
                                 RecordOp("delete", PLAY, rkey(o[2]), None))
                elif kind in ("track", "untrack"):
                    uri, duration = tracks[o[1]]
                    rec = track_record("T", duration=duration, createdAt="2026-11-01T00:00:00.000Z")
                    evt = commit(seq, ART, next_rev(ART), create(TRACK, uri.rsplit("/", 1)[1], rec) if kind == "track"
                                 else RecordOp("delete", TRACK, uri.rsplit("/", 1)[1], None))
                elif kind == "paid":
                    await ix.transact(lambda tx, who=listeners[o[1]]: streams.mark_paid(
                        tx, who, "2026-11-18T00:00:00.000Z", "2026-11-20T00:00:00.000Z"))
                    continue
                else:  # deactivate or reactivate
                    who = listeners[o[1]]
                    active[who] = not active[who]
                    evt = AccountEvent(seq, who, active[who], None if active[who] else "deactivated", "")
                await ix.apply([evt], seq)
                differing, lines = await ix.run(rollups.check, ix.conn)
                if any(differing.values()):
                    problems += [f"after op {seq} {o}: {line}" for line in lines]
                    break
            return problems
        finally:
            await ix.close()
            await conn.close()

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])
    @given(st.lists(st.booleans(), min_size=2, max_size=2), st.lists(op, min_size=1, max_size=25))
    def check(first, ops):
        path = str(tmp_path_factory.mktemp("world") / "w.sqlite")
        shutil.copy(template, path)
        with frozen(Clock("2026-11-20T12:00:00.000Z")):
            problems = asyncio.run(run(path, first, ops))
        assert not problems, problems

    check()


def test_replays_and_second_ranges():
    """The pieces of a play's contribution: parts heard twice, seconds touched, the difference rows."""
    seg = [{"startMs": a, "endMs": b} for a, b in [(0, 6_000), (2_000, 6_000), (6_000, 9_000), (8_500, 8_500)]]
    assert rollups.replayed_ms(seg) == [[2_000, 6_000]]  # touching at 6 s is no replay; empty segments count nothing
    assert rollups.replayed_ms([{"startMs": 0, "endMs": 5}]) is None
    assert rollups.replayed_ms([{"startMs": 0, "endMs": 10}] * 3) == [[0, 10]]
    assert rollups.second_ranges([[0, 1_500], [1_800, 3_000]]) == [[0, 3]]  # second 1 once, though touched twice
    assert rollups.second_ranges([[86_399_500, 90_000_000], [90_000_000, 90_000_001]]) == [[86_399, 86_400]]
    assert rollups.histogram([[0, 1_500], [1_800, 3_000]], None) == {0: [1, 0, 0], 1: [0, 0, 1], 2: [0, 0, 1],
                                                                     3: [-1, 0, 0]}
    assert rollups.histogram([[5_000, 5_000]], None) == {}
    assert json.loads(json.dumps(rollups.histogram([[0, 86_400_000]], [[0, 1]]))) == {
        "0": [1, 1, 0], "1": [0, -1, 0], "86399": [0, 0, 1]}  # nothing past the last second a track can have


def test_period_and_buckets():
    from datetime import date

    assert analytics.period({}, 366, "x", today=date(2026, 11, 20)) == (date(2026, 10, 22), date(2026, 11, 20))
    assert analytics.buckets(date(2026, 11, 14), date(2026, 11, 24), "week") == ["2026-11-09", "2026-11-16",
                                                                                 "2026-11-23"]
    assert analytics.buckets(date(2026, 12, 31), date(2027, 1, 1), "month") == ["2026-12-01", "2027-01-01"]
    assert (analytics.bps(1, 3), analytics.bps(2, 3), analytics.bps(1, 8), analytics.bps(0, 0)) == (3333, 6667, 1250, 0)
    with pytest.raises(XrpcError, match="holds 367 days; a series by day covers at most 366"):
        analytics.period({"start": "2026-01-01", "end": "2027-01-02"}, 366, "a series by day")
    analytics.period({"start": "2026-01-01", "end": "2027-01-01"}, 366, "a series by day")


@pytest.mark.network
async def test_served_by_an_appview_without_payments(appview):
    """The runtime verifies service-auth JWTs with payments off too: analytics asks for a token (401
    AuthRequired, where a runtime without a verifier answers 501)."""
    anon = await appview.http_client.get("/xrpc/fm.openmusic.analytics.getTopTracks",
                                         params={"artist": "did:plc:" + "a" * 24})
    assert anon.status_code == 401 and anon.json()["error"] == "AuthRequired"
