"""End to end on the real reference PDS: creators publish through the PDS API, the AppView reads
the PDS's firehose, and its XRPC answers show the records within seconds."""

from __future__ import annotations

import asyncio

import httpx

from core.lexicons import TRACK
from core.publish import PdsClient, like, publish_album, publish_profile, publish_track, record_play
from devkit.media import cover_png, tune_wav
from tests.conftest import eventually


async def xrpc(rt, nsid: str, **params) -> httpx.Response:
    return await rt.http_client.get(f"/xrpc/{nsid}", params=params)


async def ok(rt, nsid: str, **params) -> dict:
    resp = await xrpc(rt, nsid, **params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def publish_wav(client: PdsClient, tmp_path, seed: int, title: str, **kw):
    path = tmp_path / f"{seed}.wav"
    path.write_bytes(tune_wav(seed, seconds=2))
    return publish_track(client, path, title=title, **kw)


async def test_publish_index_edit_delete(appview, make_client, tmp_path):
    artist = make_client("artist")
    listener = make_client("listener")
    publish_profile(artist, "The Testers", description="we test", roles=["artist"])
    cover = artist.upload_blob(cover_png(1, "Cover"), "image/png")
    album = publish_album(artist, "First Album", [], artwork=cover)
    t1 = publish_wav(artist, tmp_path, 1, "Opening Theme", album=album, artwork=cover, extra={"genre": "Rock"})
    t2 = publish_wav(artist, tmp_path, 2, "Closing Theme", album=album, extra={"genre": "Rock",
                     "aiDisclosure": {"level": "assisted", "tools": ["x"]}})
    album = publish_album(artist, "First Album", [t1, t2], rkey=album.uri.rsplit("/", 1)[1], artwork=cover)
    record_play(listener, t1, 1500, completed=True)
    record_play(listener, t1, 700)
    like(listener, t1)

    track = (await eventually(lambda: ok(appview, "fm.openmusic.catalog.getTrack", uri=t1.uri)))["track"]
    assert track["title"] == "Opening Theme" and track["durationMs"] == 2000
    assert track["artist"] == {"did": artist.did, "handle": artist.handle, "displayName": "The Testers",
                               **({"avatarUrl": track["artist"]["avatarUrl"]} if "avatarUrl" in track["artist"] else {})}
    assert track["audioUrl"].endswith(f"/audio/{artist.did}/{track['record']['audio']['ref']['$link']}")

    async def stats_done():
        s = await ok(appview, "fm.openmusic.listen.getTrackStats", uri=t1.uri)
        return s if s["plays"] == 2 and s["likes"] == 1 else None
    stats = await eventually(stats_done)
    assert (stats["uniqueListeners"], stats["listenedMs"], stats["completions"]) == (1, 2200, 1)

    got_album = (await eventually(lambda: ok(appview, "fm.openmusic.catalog.getAlbum", uri=album.uri)))["album"]
    assert [t["title"] for t in got_album["tracks"]] == ["Opening Theme", "Closing Theme"]
    by_handle = await ok(appview, "fm.openmusic.catalog.getArtistTracks", actor=artist.handle)
    assert {t["uri"] for t in by_handle["tracks"]} == {t1.uri, t2.uri}
    found = await ok(appview, "fm.openmusic.catalog.searchTracks", q="closing", aiLevel="assisted")
    assert [t["uri"] for t in found["tracks"]] == [t2.uri]
    plays = await ok(appview, "fm.openmusic.listen.getPlays", actor=listener.handle)
    assert [p["listenedMs"] for p in plays["plays"]] == [700, 1500]
    assert plays["plays"][0]["track"]["uri"] == t1.uri
    profile = await ok(appview, "fm.openmusic.actor.getProfile", actor=artist.did)
    assert (profile["tracksCount"], profile["albumsCount"], profile["playsReceivedCount"]) == (2, 1, 2)
    mine = await ok(appview, "fm.openmusic.actor.getProfile", actor=listener.did)
    assert (mine["playsCount"], mine["likesCount"]) == (2, 1)  # counted as indexed (actor_count)

    # an edit shows the edit
    rkey = t1.uri.rsplit("/", 1)[1]
    current = (await ok(appview, "fm.openmusic.catalog.getTrack", uri=t1.uri))["track"]["record"]
    artist.put_record(TRACK, rkey, {**{k: v for k, v in current.items() if k != "$type"}, "title": "Opening (Remaster)"})

    async def edited():
        t = (await ok(appview, "fm.openmusic.catalog.getTrack", uri=t1.uri))["track"]
        return t["title"] == "Opening (Remaster)"
    await eventually(edited)
    assert (await ok(appview, "fm.openmusic.listen.getTrackStats", uri=t1.uri))["plays"] == 2

    # a delete makes it disappear
    artist.delete_record(TRACK, t2.uri.rsplit("/", 1)[1])

    async def deleted():
        resp = await xrpc(appview, "fm.openmusic.catalog.getTrack", uri=t2.uri)
        return resp.status_code == 400 and resp.json()["error"] == "NotFound"
    await eventually(deleted)
    assert (await ok(appview, "fm.openmusic.catalog.searchTracks", q="closing"))["tracks"] == []


async def test_invalid_record_is_skipped_between_valid_ones(appview, make_client, tmp_path):
    artist = make_client("mixed")
    before = publish_wav(artist, tmp_path, 3, "Valid Before")
    blob = artist.upload_blob(tune_wav(4, seconds=1), "audio/wav")
    # The PDS does not know our lexicon, so it stores anything: an AppView must validate.
    bad = artist._call("POST", "com.atproto.repo.createRecord", json={
        "repo": artist.did, "collection": TRACK,
        "record": {"$type": TRACK, "title": "No Duration", "audio": blob, "createdAt": "2026-11-01T00:00:00Z"}})
    splits = artist._call("POST", "com.atproto.repo.createRecord", json={
        "repo": artist.did, "collection": TRACK,
        "record": {"$type": TRACK, "title": "Bad Splits", "audio": blob, "duration": 1000,
                   "createdAt": "2026-11-01T00:00:00Z", "splits": [{"did": artist.did, "shareBps": 9000}]}})
    after = publish_wav(artist, tmp_path, 5, "Valid After")

    async def both_valid():
        got = await ok(appview, "fm.openmusic.catalog.getArtistTracks", actor=artist.did)
        return {t["title"] for t in got["tracks"]} == {"Valid Before", "Valid After"}
    await eventually(both_valid)
    for uri in (bad["uri"], splits["uri"]):
        resp = await xrpc(appview, "fm.openmusic.catalog.getTrack", uri=uri)
        assert resp.json()["error"] == "NotFound"
    cur = await appview.reader.execute("SELECT uri, reason FROM rejected_record WHERE uri IN (?, ?)",
                                       (bad["uri"], splits["uri"]))
    assert sorted(tuple(r) for r in await cur.fetchall()) == sorted([(bad["uri"], "lexicon"), (splits["uri"], "bad_splits")])
    assert before.uri != after.uri
    health = (await appview.http_client.get("/health")).json()
    assert health["firehose"]["connected"] is True and health["indexer"]["rejected"]["lexicon"] >= 1
    # every commit from the real PDS verified: signature, MST inclusion and prevData inversion
    assert health["verification"]["verified"] >= 4 and set(health["verification"]) == {"verified"}
    assert health["status"] == "ok" and health["firehose"]["current"] is True
    page = (await appview.http_client.get("/metrics")).text
    assert "openmusic_firehose_connected 1.0" in page
    assert 'openmusic_records_rejected_total{reason="lexicon"}' in page
    assert 'openmusic_commits_verified_total{result="verified"}' in page
    assert "openmusic_repos_desynchronized 0.0" in page


async def test_audio_range_requests_match_the_pds_blob(appview, make_client, tmp_path, net):
    artist = make_client("ranger")
    t = publish_wav(artist, tmp_path, 6, "Seekable")
    track = (await eventually(lambda: ok(appview, "fm.openmusic.catalog.getTrack", uri=t.uri)))["track"]
    cid = track["record"]["audio"]["ref"]["$link"]
    original = httpx.get(f"{net.pds_url}/xrpc/com.atproto.sync.getBlob", params={"did": artist.did, "cid": cid}).content
    http = appview.http_client
    full = await http.get(track["audioUrl"])
    assert full.status_code == 200 and full.content == original
    assert full.headers["content-type"] == "audio/wav" and full.headers["accept-ranges"] == "bytes"
    part = await http.get(track["audioUrl"], headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == original[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(original)}"
    cross = await http.get(track["audioUrl"], headers={"Range": "bytes=0-9", "Origin": "https://player.example"})
    assert cross.status_code == 206 and cross.headers["access-control-allow-origin"] == "*"
    assert "content-range" in cross.headers["access-control-expose-headers"].lower()
    tail = await http.get(track["audioUrl"], headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == original[-100:]
    bad = await http.get(track["audioUrl"], headers={"Range": f"bytes={len(original) + 10}-"})
    assert bad.status_code == 416
    # only blobs that indexed records reference are served
    other = await http.get(f"/audio/{artist.did}/bafkreid4uzrxkeq3edn3dop55vtrzmrwp2cgc7hgav36bgrapeqblcvpha")
    assert other.status_code == 404 and other.json()["error"] == "NotFound"


async def test_malformed_requests_get_xrpc_errors(appview):
    cases = [("fm.openmusic.catalog.searchTracks", {"limit": "1000"}, 400, "InvalidRequest"),
             ("fm.openmusic.catalog.getTrack", {}, 400, "InvalidRequest"),
             ("fm.openmusic.catalog.getTrack", {"uri": "at://did:plc:nobody/fm.openmusic.catalog.track/3kabcdefghijk"},
              400, "NotFound"),
             ("fm.openmusic.catalog.searchTracks", {"cursor": "%%%"}, 400, "InvalidRequest"),
             ("fm.openmusic.actor.getProfile", {"actor": "nobody-here.test"}, 400, "ActorNotFound"),
             ("fm.openmusic.unknown.method", {}, 501, "MethodNotImplemented")]
    for nsid, params, status, error in cases:
        resp = await xrpc(appview, nsid, **params)
        assert (resp.status_code, resp.json()["error"]) == (status, error), (nsid, resp.text)
        assert resp.json()["message"]


async def test_handle_change_shows_in_views(appview, make_client, tmp_path, net):
    artist = make_client("renamer")
    t = publish_wav(artist, tmp_path, 7, "Name Game")
    await eventually(lambda: ok(appview, "fm.openmusic.catalog.getTrack", uri=t.uri))
    new_handle = artist.handle.replace("renamer", "renamed")
    artist._call("POST", "com.atproto.identity.updateHandle", json={"handle": new_handle})

    async def renamed():
        got = (await ok(appview, "fm.openmusic.catalog.getTrack", uri=t.uri))["track"]
        return got["artist"]["handle"] == new_handle
    await eventually(renamed)
    found = await ok(appview, "fm.openmusic.catalog.getArtistTracks", actor=new_handle)
    assert [x["uri"] for x in found["tracks"]] == [t.uri]
    await asyncio.sleep(0)
