"""Interop with teal.fm and plyr.fm (issue 14), through the SQLite index fed with decoded events.

Proves: the sample teal and plyr records (tests/records_interop.py) validate against the vendored
lexicons and bad ones are skipped and counted without stopping the batch; teal plays of both
namespaces are listed in ``listen.getPlays`` with ``origin`` and their fields, linked to our track
by the documented rule (normalized title or ISRC, plus an artist name), counted apart as
``tealPlays`` and never as plays, streams or listeners; one play written in both namespaces counts
once, and deleting the kept copy keeps the other; a teal play that came before its track is linked
when the track appears; plyr.fm tracks with a blob enter the catalog (track view with ``origin``,
search, artist tracks) and leave it on delete, while URL-only and supporter-gated ones are skipped
and counted.
"""

from __future__ import annotations

import copy
import sqlite3

import pytest

from appview import queries
from appview.views import track_views
from core.lexicons import RecordInvalid, validator
from firehose.events import RecordOp
from indexer import plyr_track as plyr_module
from indexer import teal_alpha_play, teal_play
from indexer.core import MODULES, check_foreign
from tests.records import DID, LISTENER, NOW, play, track
from tests.records_interop import (
    PLYR,
    TEAL,
    TEAL_ALPHA,
    piper_alpha_scrobble,
    plyr_scrobble,
    plyr_track,
    plyr_url_track,
    rocksky_scrobble,
)
from tests.test_indexer_units import commit, create, env, rkey  # noqa: F401  (env: the fixture)

TRACK = "fm.openmusic.catalog.track"
PROFILE = "fm.openmusic.actor.profile"
PLAY = "fm.openmusic.listen.play"
PLAYS = "fm.openmusic.listen.getPlays"
STATS = "fm.openmusic.listen.getTrackStats"


def validate(collection: str, record: dict) -> None:
    """What the indexer runs on a foreign record before indexing it (``indexer.core.apply_op``)."""
    check_foreign(collection, rkey(1), record)
    MODULES[collection].check(record)


def test_modules_are_registered_as_foreign():
    assert MODULES[TEAL] is teal_play and MODULES[TEAL_ALPHA] is teal_alpha_play and MODULES[PLYR] is plyr_module
    assert not any(getattr(MODULES[c], "LEXICON", True) for c in (TEAL, TEAL_ALPHA, PLYR))


@pytest.mark.parametrize(("collection", "record"), [
    (TEAL, plyr_scrobble()), (TEAL, rocksky_scrobble()), (TEAL_ALPHA, piper_alpha_scrobble()),
    (TEAL, {"$type": TEAL, "trackName": "Only a name"}), (PLYR, plyr_track()),
    (PLYR, plyr_track(features=[{"did": DID, "handle": "ada.test", "displayName": "Ada"}],
                      labels={"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "nudity"}]})),
])
def test_sample_records_validate_with_their_lexicons(collection, record):
    validate(collection, record)


BAD = [
    (TEAL, lambda r: r.update(trackName=""), "lexicon"),
    (TEAL, lambda r: r.pop("trackName"), "lexicon"),
    (TEAL, lambda r: r.update(artists=[{"artistMbId": "mbid:x"}]), "lexicon"),
    (TEAL, lambda r: r.update(duration="180"), "lexicon"),
    (TEAL, lambda r: r.update(playedTime="yesterday"), "lexicon"),
    (TEAL, lambda r: r.update(recordingMbId="not a uri"), "lexicon"),
    (TEAL, lambda r: r.update({"$type": TEAL_ALPHA}), "wrong_type"),
    (TEAL_ALPHA, lambda r: r.update(artistNames=[""]), "lexicon"),
    (PLYR, lambda r: r.pop("artist"), "lexicon"),
    (PLYR, lambda r: r.update(fileType="x" * 17), "lexicon"),
    (PLYR, lambda r: r["audioBlob"].update(mimeType="image/png"), "lexicon"),
    (PLYR, lambda r: r["audioBlob"].update(mimeType="audio/x,text/html"), "lexicon"),
    (PLYR, lambda r: r["audioBlob"].update(size=200 * 1024 * 1024), "lexicon"),
    (PLYR, lambda r: r.pop("audioBlob"), "no_audio_blob"),
    (PLYR, lambda r: r.pop("duration"), "no_duration"),
    (PLYR, lambda r: r.update(supportGate={"type": "any"}), "support_gated"),
]


@pytest.mark.parametrize(("collection", "mutate", "reason"), BAD)
def test_bad_records_are_refused(collection, mutate, reason):
    record = copy.deepcopy({TEAL: plyr_scrobble(), TEAL_ALPHA: piper_alpha_scrobble(), PLYR: plyr_track()}[collection])
    mutate(record)
    with pytest.raises(RecordInvalid) as exc:
        validate(collection, record)
    assert exc.value.reason == reason


def test_url_only_plyr_track_is_refused_and_bad_rkey_too():
    with pytest.raises(RecordInvalid) as exc:
        validate(PLYR, plyr_url_track())
    assert exc.value.reason == "no_audio_blob"
    with pytest.raises(RecordInvalid) as exc:
        check_foreign(TEAL, "self", plyr_scrobble())
    assert exc.value.reason == "bad_rkey"


def test_normalize_and_tid_time():
    assert teal_play.normalize("  Ｎeon\u00a0 HARBOR ") == "neon harbor"
    assert teal_play.normalize_isrc("us-rc1-76-07839") == "USRC17607839"
    assert teal_play.tid_time("3kabcdefghijk").startswith("20")
    assert teal_play.tid_time("self") is None


async def test_teal_plays_are_listed_linked_and_counted_apart(env):  # noqa: F811
    ix, views, path = env
    t_uri = f"at://{DID}/{TRACK}/{rkey(1)}"
    await ix.apply([commit(1, DID, 1, create(PROFILE, "self", {"$type": PROFILE, "displayName": "Ada",
                                                               "createdAt": NOW}),
                           create(TRACK, rkey(1), track("Neon Harbor")))], 1)
    await ix.apply([commit(2, LISTENER, 1, create(PLAY, rkey(2), play(t_uri, "bafyreia", 90_000, completed=True)),
                           create(TEAL, rkey(3), plyr_scrobble("neon  harbor", "ADA",
                                                               playedTime="2026-11-01T13:00:00Z")),
                           create(TEAL, rkey(4), plyr_scrobble("Some Other Song", "Ada",
                                                               playedTime="2026-11-01T11:00:00Z")),
                           create(TEAL, rkey(5), plyr_scrobble("Neon Harbor", "Not Ada",
                                                               playedTime="2026-11-01T10:00:00Z")))], 2)
    assert not ix.rejections
    got = await queries.get_plays(views, {"actor": LISTENER, "limit": 10})
    validator().validate(PLAYS, "output", got)
    assert [p["uri"].rsplit("/", 1)[1] for p in got["plays"]] == [rkey(3), rkey(2), rkey(4), rkey(5)]
    first, ours, other, wrong_artist = got["plays"]
    assert first["origin"] == TEAL and first["trackUri"] == t_uri and first["track"]["title"] == "Neon Harbor"
    assert first["listenedMs"] == 0 and first["completed"] is False and first["createdAt"] == "2026-11-01T13:00:00.000Z"
    assert first["teal"] == {"trackName": "neon  harbor", "artistNames": ["ADA"], "releaseName": "Harbor Lights",
                             "durationMs": 180_000, "musicServiceUri": "https://plyr.fm",
                             "submissionClientAgent": "plyr.fm/1.0", "playedTime": "2026-11-01T13:00:00.000Z"}
    assert "origin" not in ours and ours["listenedMs"] == 90_000
    assert "trackUri" not in other and "track" not in other  # no track of ours by that name
    assert "trackUri" not in wrong_artist  # the title matches, the artist does not
    stats = await queries.get_track_stats(views, {"uri": t_uri})
    validator().validate(STATS, "output", stats)
    assert (stats["plays"], stats["uniqueListeners"], stats["tealPlays"]) == (1, 1, 1)
    assert stats["paidStreams"] + stats["freeStreams"] <= 1
    page1 = await queries.get_plays(views, {"actor": LISTENER, "limit": 2})
    page2 = await queries.get_plays(views, {"actor": LISTENER, "limit": 2, "cursor": page1["cursor"]})
    assert [p["uri"] for p in page1["plays"] + page2["plays"]] == [p["uri"] for p in got["plays"]]
    assert "cursor" not in page2
    await ix.apply([commit(3, LISTENER, 2, RecordOp("delete", TEAL, rkey(3), None))], 3)
    assert (await queries.get_track_stats(views, {"uri": t_uri}))["tealPlays"] == 0
    c = sqlite3.connect(path)
    assert c.execute("SELECT COUNT(*) FROM play").fetchone() == (1,)  # teal plays never become plays


async def test_isrc_links_with_artist_and_alpha_stable_copies_count_once(env):  # noqa: F811
    ix, views, path = env
    t_uri = f"at://{DID}/{TRACK}/{rkey(1)}"
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track("Neon Harbor (Radio Edit)",
                                                                   isrc="US-RC1-76-07839")))], 1)
    handle = sqlite3.connect(path).execute("SELECT handle FROM actor WHERE did = ?", (DID,)).fetchone()[0]
    stable = rocksky_scrobble("Neon Harbor", handle)  # another title, the same ISRC, the handle as artist
    alpha = piper_alpha_scrobble("Neon Harbor", handle, playedTime="2026-11-01T12:01:00Z", isrc="USRC17607839")
    await ix.apply([commit(2, LISTENER, 1, create(TEAL, rkey(2), stable), create(TEAL_ALPHA, rkey(3), alpha))], 2)
    assert not ix.rejections
    got = await queries.get_plays(views, {"actor": LISTENER, "limit": 10})
    assert [(p["origin"], p.get("trackUri")) for p in got["plays"]] == [(TEAL, t_uri)]
    assert (await queries.get_track_stats(views, {"uri": t_uri}))["tealPlays"] == 1
    await ix.apply([commit(3, LISTENER, 2, RecordOp("delete", TEAL, rkey(2), None))], 3)
    got = await queries.get_plays(views, {"actor": LISTENER, "limit": 10})
    assert [(p["origin"], p.get("trackUri")) for p in got["plays"]] == [(TEAL_ALPHA, t_uri)]
    assert got["plays"][0]["teal"]["musicServiceUri"] == "spotify.com"
    assert got["plays"][0]["teal"]["artistNames"] == [handle]
    assert got["plays"][0]["record"]["recordingMbId"] == alpha["recordingMbId"]  # as published: a bare UUID
    # (which lexrpc, validating the typed record inside ``record``, refuses as a ``uri``: the rest must pass)
    validator().validate(PLAYS, "output", {"plays": [{**got["plays"][0], "record": {}}]})
    assert (await queries.get_track_stats(views, {"uri": t_uri}))["tealPlays"] == 1


async def test_bad_foreign_records_are_skipped_and_counted_in_a_batch(env):  # noqa: F811
    ix, views, path = env
    await ix.apply([commit(1, DID, 1,
                           create(PLYR, rkey(1), plyr_url_track()),
                           create(PLYR, rkey(2), plyr_track(supportGate={"type": "any"})),
                           create(PLYR, rkey(3), {"$type": PLYR, "title": 7}),
                           create(TEAL, rkey(4), {"$type": TEAL, "trackName": ""}),
                           create(TEAL, "self", plyr_scrobble()),
                           create(TEAL_ALPHA, rkey(5), {"$type": TEAL_ALPHA, "trackName": "x", "artists": "Ada"}),
                           create(PLYR, rkey(6), plyr_track("Still Here")))], 1)
    assert ix.rejections == {"no_audio_blob": 1, "support_gated": 1, "lexicon": 3, "bad_rkey": 1}
    c = sqlite3.connect(path)
    assert c.execute("SELECT title, origin FROM track").fetchall() == [("Still Here", PLYR)]
    assert c.execute("SELECT COUNT(*) FROM teal_play").fetchone() == (0,)


async def test_plyr_track_enters_the_catalog_and_links_earlier_teal_plays(env):  # noqa: F811
    ix, views, path = env
    p_uri = f"at://{DID}/{PLYR}/{rkey(1)}"
    # A plyr.fm scrobble of the track arrives first (plyr writes the record's artist string).
    await ix.apply([commit(1, LISTENER, 1, create(TEAL, rkey(2), plyr_scrobble("Tidal Static", "Ada")))], 1)
    await ix.apply([commit(2, DID, 1, create(PLYR, rkey(1), plyr_track()))], 2)
    assert not ix.rejections
    view = (await track_views(views, [p_uri]))[p_uri]
    assert view["origin"] == PLYR and view["title"] == "Tidal Static" and view["durationMs"] == 3000
    assert view["audioMimeType"] == "audio/mpeg" and view["record"]["artist"] == "Ada"
    assert view["audioUrl"].startswith("http://x/") and "bafkrei" in view["audioUrl"]
    found = await queries.search_tracks(views, {"q": "tidal", "sort": "recent", "limit": 10})
    assert [t["uri"] for t in found["tracks"]] == [p_uri] and found["tracks"][0]["origin"] == PLYR
    validator().validate("fm.openmusic.catalog.searchTracks", "output", found)
    artist = await queries.get_artist_tracks(views, {"actor": DID, "limit": 10})
    assert [t["uri"] for t in artist["tracks"]] == [p_uri]
    got = await queries.get_plays(views, {"actor": LISTENER, "limit": 10})
    assert got["plays"][0]["trackUri"] == p_uri and got["plays"][0]["track"]["origin"] == PLYR
    c = sqlite3.connect(path)
    assert c.execute("SELECT COUNT(*) FROM teal_play WHERE track_uri = ?", (p_uri,)).fetchone() == (1,)
    # An edit that drops the blob (plyr's #1904) takes the track out; deleting it leaves nothing behind.
    await ix.apply([commit(3, DID, 2, RecordOp("update", PLYR, rkey(1), "bafyreib", plyr_url_track("Tidal Static")))],
                   3)
    assert ix.rejections == {"no_audio_blob": 1}
    assert await track_views(views, [p_uri]) == {}
    await ix.apply([commit(4, DID, 3, RecordOp("update", PLYR, rkey(1), "bafyreic", plyr_track()))], 4)
    assert p_uri in await track_views(views, [p_uri])
    await ix.apply([commit(5, DID, 4, RecordOp("delete", PLYR, rkey(1), None))], 5)
    assert await track_views(views, [p_uri]) == {}
    assert c.execute("SELECT COUNT(*) FROM track_fts").fetchone() == (0,)
    assert not (await queries.search_tracks(views, {"q": "tidal", "sort": "recent", "limit": 10}))["tracks"]



def test_teal_copy_rule_and_record():
    from web.pages import TEAL_AGENT, teal_counts, teal_record

    assert teal_counts(89_000, 90_000, True) and not teal_counts(80_000, 90_000, True)  # under 2 min: all of it
    assert teal_counts(150_000, 300_000, False) and not teal_counts(149_000, 300_000, False)  # half
    assert teal_counts(240_000, 900_000, False) and not teal_counts(239_000, 900_000, False)  # at most 4 min
    view = {"uri": f"at://{DID}/{TRACK}/{rkey(1)}", "title": "é" * 300, "durationMs": 181_500,
            "artist": {"did": DID, "handle": "ada.test"}, "record": {"isrc": "USRC17607839"}}
    rec = teal_record(view, NOW, "https://music.example")
    validate(TEAL, rec)
    assert len(rec["trackName"].encode()) <= 256 and rec["artists"] == [{"artistName": "ada.test"}]
    assert (rec["duration"], rec["isrc"], rec["playedTime"]) == (181, "USRC17607839", NOW)
    assert rec["originUri"] == f"https://music.example/track/{DID}/{rkey(1)}"
    assert rec["submissionClientAgent"] == TEAL_AGENT and TEAL_AGENT.startswith(teal_play.OWN_AGENT_PREFIX)


async def test_our_own_teal_copy_is_linked_but_not_listed_and_the_opt_in_is_stored(env):  # noqa: F811
    ix, views, path = env
    t_uri = f"at://{DID}/{TRACK}/{rkey(1)}"
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track("Neon Harbor")))], 1)
    handle = sqlite3.connect(path).execute("SELECT handle FROM actor WHERE did = ?", (DID,)).fetchone()[0]
    copy_ = plyr_scrobble("Neon Harbor", handle, submissionClientAgent="fm.openmusic.web/0.1",
                          musicServiceUri="https://music.example")
    await ix.apply([commit(2, LISTENER, 1, create(PLAY, rkey(2), play(t_uri, "bafyreia")),
                           create(TEAL, rkey(2), copy_))], 2)
    row = sqlite3.connect(path).execute("SELECT duplicate, track_uri FROM teal_play").fetchone()
    assert row == (2, t_uri)
    got = await queries.get_plays(views, {"actor": LISTENER, "limit": 10})
    assert [p.get("origin") for p in got["plays"]] == [None]
    assert (await queries.get_track_stats(views, {"uri": t_uri}))["tealPlays"] == 0
    db = views.db
    assert not await teal_play.scrobbles_enabled(db, LISTENER)
    await teal_play.set_scrobbles(db, LISTENER, True, NOW)
    await teal_play.set_scrobbles(db, LISTENER, True, NOW)
    assert await teal_play.scrobbles_enabled(db, LISTENER) and not await teal_play.scrobbles_enabled(db, DID)
    await teal_play.set_scrobbles(db, LISTENER, False, NOW)
    assert not await teal_play.scrobbles_enabled(db, LISTENER)
