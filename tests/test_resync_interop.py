"""Resyncs and backfills load teal.fm plays, plyr.fm tracks and Bluesky shares too (issue 14), on the
real reference PDS.

Proves: a repo resynced into an empty index (getRepo, verified, ``indexer.resync``) ends with the
same index rows as the live stream of the same records left in the session's AppView, for every
collection we index: our tracks, ``fm.plyr.track``, ``fm.teal.feed.play``, ``fm.teal.alpha.feed.play``
and the ``app.bsky.feed.post`` that shares one of our pages; ordinary posts (and one that names our
host without linking a page) are walked but never indexed or rejected; invalid records are skipped
and counted (``rejected_record``, ``Indexer.rejections``) once, however often the repo is resynced.
Diff-and-replace holds for those collections: a teal play and a share deleted, and a plyr track
edited, while the index was not following, are gone / changed after the next resync. And the
backfill command finds a repo that holds only ``fm.plyr.track`` (``BACKFILL_COLLECTIONS``) and
loads its teal plays and shares with it, while a repo holding only teal plays is not listed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.lexicons import TRACK
from core.publish import PdsClient, publish_track
from devkit.media import tune_wav
from firehose.repo import load_snapshot
from indexer import share
from indexer.backfill import BACKFILL_COLLECTIONS
from openmusic.runtime import Runtime
from tests import dbq
from tests.conftest import devnet_settings, eventually, free_port
from tests.records_interop import PLYR, TEAL, TEAL_ALPHA
from tests.test_backfill import count

pytestmark = pytest.mark.network

POST = "app.bsky.feed.post"
#: What is compared between the live index and the resynced one, per table: the columns that do not
#: depend on when or how a record was indexed (``indexed_at``, ``record.rev``).
TABLES = {
    "record": ("uri", "cid", "collection", "json"),
    "track": ("uri", "cid", "title", "duration_ms", "audio_cid", "audio_mime", "created_at", "sort_at", "origin"),
    "teal_play": ("uri", "cid", "collection", "track_name", "artist_names", "release_name", "duration_s",
                  "music_service", "client_agent", "title_norm", "isrc", "played_at", "sort_at", "track_uri",
                  "duplicate"),
    "share": ("uri", "cid", "subject", "created_at", "sort_at"),
}


def write(client: PdsClient, collection: str, record: dict) -> dict:
    """createRecord as any other app does (the PDS stores records of lexicons it does not know)."""
    return client._call("POST", "com.atproto.repo.createRecord",
                        json={"repo": client.did, "collection": collection, "record": {"$type": collection, **record}})


def backfill(net, db: Path, port: int) -> subprocess.CompletedProcess:
    """``openmusic backfill --exit-when-done`` on ``net`` into ``db``, serving on ``port`` (so its
    base URL, whose pages count in shares, is ``http://127.0.0.1:{port}``)."""
    cmd = [sys.executable, "-m", "openmusic.cli", "backfill", "--firehose-url", net.firehose_url, "--plc-url",
           net.plc_url, "--handle-resolver-url", net.pds_url, "--allow-private-hosts", "--db-path", str(db),
           "--blob-cache-dir", str(db.parent / "blobs"), "--port", str(port), "--log-level", "WARNING",
           "--exit-when-done"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def rkey_of(uri: str) -> str:
    return uri.rsplit("/", 1)[1]


def plain_posts(client: PdsClient, n: int) -> None:
    """``n`` ordinary Bluesky posts (no link of ours), 200 to an applyWrites call."""
    for start in range(0, n, 200):
        writes = [{"$type": "com.atproto.repo.applyWrites#create", "collection": POST,
                   "value": {"$type": POST, "text": f"just a post {i}", "createdAt": "2026-11-02T10:00:00Z"}}
                  for i in range(start, min(n, start + 200))]
        client._call("POST", "com.atproto.repo.applyWrites", json={"repo": client.did, "writes": writes})


def sharing_post(page: str) -> dict:
    """A post whose link card is one of our pages (``app.bsky.embed.external``)."""
    return {"text": "this one", "createdAt": "2026-11-02T11:00:00Z",
            "embed": {"$type": "app.bsky.embed.external",
                      "external": {"uri": page, "title": "A track", "description": ""}}}


def rows(db: str, dids: list[str]) -> dict[str, list[tuple]]:
    """``TABLES``' rows of ``dids``, sorted, from the database ``db`` (``Settings.database``: a
    SQLite file or a PostgreSQL URL)."""
    marks = ",".join("?" * len(dids))
    return {table: sorted(dbq.rows(db, f"SELECT {', '.join(cols)} FROM {table} WHERE did IN ({marks})", *dids))
            for table, cols in TABLES.items()}


async def synchronized(rt: Runtime, net, dids: list[str]) -> bool:
    """Whether every repo of ``dids`` is synchronized at its PDS head rev in ``rt``'s index."""
    for did in dids:
        head = httpx.get(f"{net.pds_url}/xrpc/com.atproto.sync.getLatestCommit", params={"did": did}).json()["rev"]
        cur = await rt.reader.execute("SELECT status, rev FROM repo_state WHERE did = ?", (did,))
        if tuple(await cur.fetchone() or ()) != ("synchronized", head):
            return False
    return True


async def resync(rt: Runtime, net, dids: list[str]) -> None:
    """Mark ``dids`` desynchronized in ``rt`` (no firehose: what the index misses it misses) and wait
    for the resync worker to bring them to their PDS head."""
    await rt.indexer.mark_desynchronized(dids)
    await eventually(lambda: synchronized(rt, net, dids), timeout=60)


async def test_resync_loads_every_collection_as_the_live_stream_does(net, make_client, appview, tmp_path):
    artist, listener = make_client("rsartist"), make_client("rslistener")
    wav = tmp_path / "a.wav"
    wav.write_bytes(tune_wav(71, seconds=1))
    ours = publish_track(artist, wav, title=f"Harbour {artist.handle.split('.')[0]}")
    blob = artist.upload_blob(tune_wav(72, seconds=2), "audio/wav")
    title = f"Quay Static {artist.handle.split('.')[0]}"
    plyr = write(artist, PLYR, {"title": title, "artist": "Ada Quay", "fileType": "wav", "duration": 2,
                                "audioBlob": blob, "createdAt": "2026-11-01T10:00:00Z"})
    url_only = write(artist, PLYR, {"title": "Only A Link", "artist": "Ada Quay", "fileType": "mp3",
                                    "duration": 200, "audioUrl": "https://audio.plyr.fm/audio/q.mp3",
                                    "createdAt": "2026-11-01T10:00:00Z"})
    teal = write(listener, TEAL, {"trackName": title, "artists": [{"artistName": "Ada Quay"}],
                                  "musicServiceUri": "https://plyr.fm", "submissionClientAgent": "plyr.fm/1.0",
                                  "playedTime": "2026-11-01T12:00:00Z", "duration": 2})
    alpha = write(listener, TEAL_ALPHA, {"trackName": "Somewhere Else", "artistNames": ["Someone"],
                                         "musicServiceBaseDomain": "spotify.com",
                                         "playedTime": "2026-11-01T11:00:00Z"})
    bad = write(listener, TEAL, {"trackName": "", "playedTime": "2026-11-01T13:00:00Z"})
    did, rkey = artist.did, rkey_of(ours.uri)
    page = f"{appview.settings.base_url}/track/{did}/{rkey}"
    shared = write(listener, POST, sharing_post(page))
    plain_posts(listener, 300)
    write(listener, POST, {"text": f"our site is {appview.settings.base_url}/about", "createdAt": "2026-11-02T12:00:00Z"})
    dids = [artist.did, listener.did]

    live_db = appview.settings.database
    await eventually(lambda: synchronized(appview, net, dids), timeout=60)
    live = rows(live_db, dids)
    assert [r[0] for r in live["teal_play"]] == sorted([teal["uri"], alpha["uri"]])
    assert [r[:3] for r in live["share"]] == [(shared["uri"], shared["cid"], ours.uri)]
    assert sorted(r[0] for r in live["track"]) == sorted([ours.uri, plyr["uri"]])

    rt = Runtime(devnet_settings(net, tmp_path / "resynced"))
    await rt.start(firehose=False)
    try:
        await resync(rt, net, dids)
        got = rows(rt.settings.database, dids)
        assert got == live
        # linked as live: the teal play to the plyr track (same title, the record's artist name)
        assert [r[13] for r in got["teal_play"] if r[0] == teal["uri"]] == [plyr["uri"]]
        assert sum(1 for r in got["record"] if r[2] == POST) == 1  # 302 posts walked, one indexed
        assert dict(rt.indexer.rejections) == {"lexicon": 1, "no_audio_blob": 1}
        cur = await rt.reader.execute("SELECT uri, reason FROM rejected_record ORDER BY uri")
        assert sorted(tuple(r) for r in await cur.fetchall()) == sorted([(bad["uri"], "lexicon"),
                                                                          (url_only["uri"], "no_audio_blob")])
        assert rt.resyncer.done == 2 and rt.resyncer.failed == 0

        # While the index follows nothing: a teal play and the share are deleted, the plyr track edited.
        listener.delete_record(TEAL, rkey_of(teal["uri"]))
        listener.delete_record(POST, rkey_of(shared["uri"]))
        current = artist._call("GET", "com.atproto.repo.getRecord",
                               params={"repo": artist.did, "collection": PLYR, "rkey": rkey_of(plyr["uri"])})["value"]
        artist.put_record(PLYR, rkey_of(plyr["uri"]), {**current, "title": f"{title} (edit)"})
        await resync(rt, net, dids)
        got = rows(rt.settings.database, dids)
        assert [r[0] for r in got["teal_play"]] == [alpha["uri"]] and got["share"] == []
        assert [r[2] for r in got["track"] if r[0] == plyr["uri"]] == [f"{title} (edit)"]
        assert not any(r[2] == POST for r in got["record"])
        # the bad records were met again, and are still counted once
        assert dict(rt.indexer.rejections) == {"lexicon": 1, "no_audio_blob": 1}
        # and the live stream of the same changes left the same rows
        await eventually(lambda: synchronized(appview, net, dids), timeout=60)
        assert rows(live_db, dids) == got
    finally:
        await rt.stop()


async def test_posts_are_filtered_before_they_are_decoded(net, make_client, appview):
    """The walk of ``app.bsky.feed.post`` is the decoder's filter: only posts that hold our host
    are decoded, only those linking a page are kept, and ``covers`` tells the deletes apart."""
    fan = make_client("rsposts")
    plain_posts(fan, 250)
    page = f"{appview.settings.base_url}/track/{fan.did}/3kabcdefghijk"
    shared = write(fan, POST, sharing_post(page))
    write(fan, POST, {"text": f"see {appview.settings.base_url}/", "createdAt": "2026-11-02T12:00:00Z"})
    write(fan, TEAL, {"trackName": "Any", "playedTime": "2026-11-01T12:00:00Z"})
    car = httpx.get(f"{net.pds_url}/xrpc/com.atproto.sync.getRepo", params={"did": fan.did}, timeout=60).content
    key = await appview.identity.signing_key(fan.did)
    assert key
    decoded: list[str] = []

    class Counting(share.ShareFilter):
        def block(self, did: str, rkey: str, block: bytes) -> bool:
            if any(n in block for n in self._current()):
                decoded.append(rkey)
            return super().block(did, rkey, block)

    collections = [POST, TEAL, TRACK]
    snap = load_snapshot(car, fan.did, key, collections, {POST: Counting()})
    assert [p for p in snap.records if p.startswith(POST)] == [f"{POST}/{rkey_of(shared['uri'])}"]
    assert snap.records[f"{POST}/{rkey_of(shared['uri'])}"][0] == shared["cid"] and not snap.errors
    assert snap.walked == {POST: 252, TEAL: 1} and snap.dropped == {POST: 251}
    assert len(decoded) == 2  # the share and the post naming our host; the 250 others never decoded
    assert snap.covers(POST) and snap.covers(TRACK) and not snap.covers(PLYR)
    default = load_snapshot(car, fan.did, key)
    assert default.records == {} and default.covers(TRACK) and not default.covers(TEAL)


def test_backfill_lists_plyr_creators_and_loads_their_teal_plays_and_shares(net, make_client, tmp_path):
    assert PLYR in BACKFILL_COLLECTIONS and not {TEAL, TEAL_ALPHA, POST} & set(BACKFILL_COLLECTIONS)
    creator, scrobbler = make_client("bfplyr"), make_client("bfteal")
    blob = creator.upload_blob(tune_wav(73, seconds=2), "audio/wav")
    plyr = write(creator, PLYR, {"title": "Backfilled Pier", "artist": "Bo", "fileType": "wav", "duration": 2,
                                 "audioBlob": blob, "createdAt": "2026-11-01T10:00:00Z"})
    own_play = write(creator, TEAL, {"trackName": "Backfilled Pier", "artists": [{"artistName": "Bo"}],
                                     "playedTime": "2026-11-01T12:00:00Z"})
    port = free_port()
    page = f"http://127.0.0.1:{port}/track/{creator.did}/{rkey_of(plyr['uri'])}"
    shared = write(creator, POST, sharing_post(page))
    plain_posts(creator, 20)
    write(scrobbler, TEAL, {"trackName": "Backfilled Pier", "artists": [{"artistName": "Bo"}],
                            "playedTime": "2026-11-01T12:30:00Z"})

    db = Path(tmp_path) / "bf" / "openmusic.sqlite"
    db.parent.mkdir()
    out = backfill(net, db, port)
    assert out.returncode == 0, out.stdout + out.stderr
    assert count(db, "SELECT COUNT(*) FROM track WHERE uri = ? AND origin = ?", plyr["uri"], PLYR) == 1
    assert count(db, "SELECT COUNT(*) FROM teal_play WHERE uri = ? AND track_uri = ?", own_play["uri"], plyr["uri"]) == 1
    assert count(db, "SELECT COUNT(*) FROM share WHERE uri = ?", shared["uri"]) == 1
    assert count(db, "SELECT COUNT(*) FROM record WHERE did = ? AND collection = ?", creator.did, POST) == 1
    # a repo with only teal plays is not listed: too broad to backfill network-wide
    assert count(db, "SELECT COUNT(*) FROM repo_state WHERE did = ?", scrobbler.did) == 0
    assert count(db, "SELECT COUNT(*) FROM teal_play WHERE did = ?", scrobbler.did) == 0
