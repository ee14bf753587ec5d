"""teal.fm and plyr.fm records written to the reference PDS show up here (issue 14), end to end:
PDS -> firehose -> indexer -> XRPC and the audio proxy.

Proves: an ``fm.plyr.track`` whose audio is a blob in the creator's PDS is in the catalog (search,
artist tracks) marked ``origin: fm.plyr.track``, and the audio proxy serves its blob byte for byte;
one whose audio is only a URL, and an invalid one, are skipped and counted (``rejected_record``)
while the consumer goes on; the listener's ``fm.teal.feed.play`` and legacy
``fm.teal.alpha.feed.play`` records are listed in ``listen.getPlays`` with their origin, linked to
that track (same title, the record's artist name), and an invalid teal play is skipped and counted.
And in Chromium: a signed-in listener turns on "also write my plays as teal.fm plays" on /me; a play
sent by the web app (``POST /play``) is then written to their PDS twice, as our play and as an
``fm.teal.feed.play`` under the same record key, and the history still lists it once; turned off,
no teal copy is written. Screenshots of /me (1280 and 390 px) go to the test's tmp dir.
"""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from core.publish import publish_profile, publish_track
from core.tid import tid
from devkit.media import tune_wav
from tests.conftest import eventually
from tests.records_interop import PLYR, TEAL, TEAL_ALPHA
from tests.test_web_offline import sign_in
from tests.test_web_pages import browser  # noqa: F401  (a fixture)

pytestmark = pytest.mark.network


async def ok(rt, nsid: str, **params) -> dict:
    resp = await rt.http_client.get(f"/xrpc/{nsid}", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def write(client, collection: str, record: dict) -> dict:
    """createRecord as any other app does (the PDS does not know these lexicons: it stores anything)."""
    return client._call("POST", "com.atproto.repo.createRecord",
                        json={"repo": client.did, "collection": collection, "record": {"$type": collection, **record}})


async def test_plyr_tracks_and_teal_plays_appear(appview, make_client, net):
    artist = make_client("plyrartist")
    listener = make_client("tealfan")
    blob = artist.upload_blob(tune_wav(21, seconds=2), "audio/wav")
    title = f"Pier Static {artist.handle.split('.')[0]}"
    url_only = write(artist, PLYR, {"title": "Only A Link", "artist": "Ada Pier", "fileType": "mp3", "duration": 200,
                                    "audioUrl": "https://audio.plyr.fm/audio/abc.mp3",
                                    "createdAt": "2026-11-01T10:00:00Z"})
    invalid = write(artist, PLYR, {"title": "", "artist": "Ada Pier", "fileType": "wav", "audioBlob": blob,
                                   "duration": 2, "createdAt": "2026-11-01T10:00:00Z"})
    good = write(artist, PLYR, {"title": title, "artist": "Ada Pier", "fileType": "wav", "duration": 2,
                                "album": "Shoreline", "audioBlob": blob, "createdAt": "2026-11-01T10:00:00Z"})

    async def found():
        got = await ok(appview, "fm.openmusic.catalog.searchTracks", q=title.split()[-1], sort="recent")
        return [t for t in got["tracks"] if t["uri"] == good["uri"]]
    (track,) = await eventually(found)
    assert track["origin"] == PLYR and track["title"] == title and track["durationMs"] == 2000
    assert track["record"]["artist"] == "Ada Pier" and track["record"]["audioBlob"]["ref"]["$link"] == blob["ref"]["$link"]
    artist_tracks = await ok(appview, "fm.openmusic.catalog.getArtistTracks", actor=artist.did)
    assert [t["uri"] for t in artist_tracks["tracks"]] == [good["uri"]]
    original = httpx.get(f"{net.pds_url}/xrpc/com.atproto.sync.getBlob",
                         params={"did": artist.did, "cid": blob["ref"]["$link"]}).content
    audio = await appview.http_client.get(track["audioUrl"])
    assert audio.status_code == 200 and audio.content == original and len(original) > 1000
    part = await appview.http_client.get(track["audioUrl"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == original[100:200]
    cur = await appview.reader.execute("SELECT uri, reason FROM rejected_record WHERE uri IN (?, ?)",
                                       (url_only["uri"], invalid["uri"]))
    assert sorted(tuple(r) for r in await cur.fetchall()) == sorted([(url_only["uri"], "no_audio_blob"),
                                                                     (invalid["uri"], "lexicon")])

    stable = write(listener, TEAL, {"trackName": title, "artists": [{"artistName": "Ada Pier"}],
                                    "musicServiceUri": "https://plyr.fm", "submissionClientAgent": "plyr.fm/1.0",
                                    "playedTime": "2026-11-01T12:00:00Z", "duration": 2})
    alpha = write(listener, TEAL_ALPHA, {"trackName": "Something Else", "artistNames": ["Someone"],
                                         "recordingMbId": "0f42ab32-22cd-4dcf-927b-a8d9a183d68b",
                                         "musicServiceBaseDomain": "spotify.com", "playedTime": "2026-11-01T11:00:00Z"})
    bad = write(listener, TEAL, {"trackName": "", "playedTime": "2026-11-01T13:00:00Z"})

    async def history():
        got = await ok(appview, "fm.openmusic.listen.getPlays", actor=listener.did)
        return got["plays"] if len(got["plays"]) == 2 else None
    first, second = await eventually(history)
    assert (first["uri"], first["origin"], first["trackUri"]) == (stable["uri"], TEAL, good["uri"])
    assert first["track"]["origin"] == PLYR and first["teal"]["musicServiceUri"] == "https://plyr.fm"
    assert first["listenedMs"] == 0 and first["createdAt"] == "2026-11-01T12:00:00.000Z"
    assert (second["uri"], second["origin"]) == (alpha["uri"], TEAL_ALPHA) and "trackUri" not in second
    assert second["teal"] == {"trackName": "Something Else", "artistNames": ["Someone"],
                              "musicServiceUri": "spotify.com", "playedTime": "2026-11-01T11:00:00.000Z"}
    cur = await appview.reader.execute("SELECT reason FROM rejected_record WHERE uri = ?", (bad["uri"],))
    assert [tuple(r) for r in await cur.fetchall()] == [("lexicon",)]
    cur = await appview.reader.execute("SELECT COUNT(*) FROM teal_play WHERE track_uri = ? AND duplicate = 0",
                                       (good["uri"],))
    assert tuple(await cur.fetchone()) == (1,)
    health = (await appview.http_client.get("/health")).json()
    assert health["firehose"]["connected"] is True and health["indexer"]["rejected"]["no_audio_blob"] >= 1


async def send_play(page, uri: str, cid: str, ms: int) -> dict:
    """POST /play from the page, as player.js does (its CSRF token from the page's meta tag)."""
    return await page.evaluate("""async ([uri, cid, ms, rkey]) => {
        const token = document.querySelector('meta[name="csrf-token"]').content;
        const body = new URLSearchParams({uri, cid, started: String(Date.now() - ms), completed: "1",
                                          segments: `0-${ms}`, rkey, csrf_token: token});
        const r = await fetch("/play", {method: "POST", body, credentials: "same-origin"});
        return {status: r.status, body: await r.json()};
    }""", [uri, cid, ms, tid()])


def pds_record(net, did: str, collection: str, rkey: str) -> dict:
    resp = httpx.get(f"{net.pds_url}/xrpc/com.atproto.repo.getRecord",
                     params={"repo": did, "collection": collection, "rkey": rkey}, timeout=30)
    return resp.json()


async def test_opt_in_writes_a_teal_play_for_each_play(net, make_client, appview, browser, tmp_path):  # noqa: F811
    artist = make_client("lampartist")
    publish_profile(artist, "Lamp Artist", roles=["artist"])
    path = tmp_path / "lamp.wav"
    path.write_bytes(tune_wav(33, seconds=2))
    ref = publish_track(artist, path, title="Lamp Light", extra={"isrc": "USRC17607840"})
    listener = make_client("tealoptin")
    publish_profile(listener, "Teal Listener")
    await eventually(lambda: ok(appview, "fm.openmusic.catalog.getTrack", uri=ref.uri), timeout=30)
    site = SimpleNamespace(url=appview.settings.base_url)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    try:
        await sign_in(page, net, site, listener.handle, tmp_path, "00")
        await page.goto(f"{site.url}/me")
        toggle = page.locator("#teal-toggle")
        assert (await toggle.text_content()).strip() == "Also write my plays as teal.fm plays"
        await toggle.click()
        await page.wait_for_url(f"{site.url}/me?teal=1#teal")
        assert (await page.locator("#teal-toggle").text_content()).strip() == "Stop writing teal.fm plays"
        await page.screenshot(path=str(tmp_path / "me-teal-1280.png"), full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})
        assert await page.evaluate("document.documentElement.scrollWidth <= 390")
        await page.screenshot(path=str(tmp_path / "me-teal-390.png"), full_page=True)
        await page.set_viewport_size({"width": 1280, "height": 900})

        did, rkey = ref.uri.removeprefix("at://").split("/fm.openmusic.catalog.track/")
        await page.goto(f"{site.url}/track/{did}/{rkey}")
        sent = await send_play(page, ref.uri, ref.cid, 2000)
        assert sent["status"] == 200, sent
        play_rkey = sent["body"]["uri"].rsplit("/", 1)[1]
        assert sent["body"]["tealPlay"] == f"at://{listener.did}/{TEAL}/{play_rkey}"
        teal = pds_record(net, listener.did, TEAL, play_rkey)["value"]
        assert teal["trackName"] == "Lamp Light" and teal["artists"] == [{"artistName": "Lamp Artist"}]
        assert teal["duration"] == 2 and teal["isrc"] == "USRC17607840"
        assert teal["submissionClientAgent"].startswith("fm.openmusic.web/")
        assert teal["originUri"] == f"{site.url.rstrip('/')}/track/{did}/{rkey}"
        ours = pds_record(net, listener.did, "fm.openmusic.listen.play", play_rkey)["value"]
        assert teal["playedTime"] == ours["createdAt"]

        async def mirrored():
            cur = await appview.reader.execute("SELECT duplicate, track_uri FROM teal_play WHERE uri = ?",
                                               (sent["body"]["tealPlay"],))
            return await cur.fetchone()
        row = await eventually(mirrored, timeout=30)
        assert tuple(row) == (2, ref.uri)  # our own copy: linked, neither listed nor counted again
        got = await eventually(lambda: ok(appview, "fm.openmusic.listen.getPlays", actor=listener.did),
                               until=lambda g: len(g["plays"]) == 1)
        assert got["plays"][0]["uri"] == sent["body"]["uri"] and "origin" not in got["plays"][0]
        stats = await ok(appview, "fm.openmusic.listen.getTrackStats", uri=ref.uri)
        assert stats["tealPlays"] == 0

        await page.goto(f"{site.url}/me")
        await page.locator("#teal-toggle").click()
        await page.wait_for_url(f"{site.url}/me?teal=0#teal")
        await page.goto(f"{site.url}/track/{did}/{rkey}")
        again = await send_play(page, ref.uri, ref.cid, 2000)
        assert again["status"] == 200 and "tealPlay" not in again["body"] and "tealError" not in again["body"]
        gone = pds_record(net, listener.did, TEAL, again["body"]["uri"].rsplit("/", 1)[1])
        assert gone.get("error") == "RecordNotFound"
    finally:
        await context.close()
