"""Installable and offline, for real: the manifest, the service worker and /offline as served; the
browser's blob-CID check and TIDs (``web/static/ids.js``, run in Node); and in Debian's Chromium
against the reference PDS and the AppView runtime, a listener saves a track and an album for
offline listening, goes offline, opens the saved pages (served by the worker, Range requests
included), plays the track to its end, sees the play kept, comes back online and finds exactly one
play record in their repo, still one after a reload. A play under a record key the PDS already has
is not written twice; a play kept while the session is gone is sent after signing in again; one the
server refuses for good is dropped with its reason. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import io
import json
import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from multiformats import CID, multihash
from PIL import Image

from core.publish import publish_album, publish_profile, publish_track
from devkit import devnet
from devkit.media import tune_wav
from tests.conftest import eventually
from tests.test_web_oauth_browser import PASSWORD, pds_sign_in, start_sign_in
from tests.test_web_pages import browser, indexed, path_of  # noqa: F401  (browser: a fixture)

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
SORTABLE = "234567abcdefghijklmnopqrstuvwxyz"


def raw_cid(data: bytes, codec: str = "raw") -> str:
    return str(CID("base32", 1, codec, multihash.digest(data, "sha2-256")))


def tid_micros(tid: str) -> int:
    value = 0
    for ch in tid:
        value = value * 32 + SORTABLE.index(ch)
    return value >> 10


def tid_now() -> str:
    """A TID for now (as a player would make), from Python."""
    value = (time.time_ns() // 1000) << 10 | 7
    return "".join(SORTABLE[(value >> (5 * i)) & 31] for i in reversed(range(13)))


# -- units ----------------------------------------------------------------------------------------

def test_ids_js_checks_blob_cids_and_makes_tids(tmp_path):
    """The browser's check of saved audio: the bytes of a blob match its CID, and not another
    blob's, nor the same digest under another codec, nor a malformed CID; TIDs sort and tell the time."""
    node = devnet.NODE if devnet.NODE.exists() else Path("/usr/bin/node")
    data = tune_wav(3, seconds=0.5)
    blob = tmp_path / "blob.wav"
    blob.write_bytes(data)
    cases = {"right": raw_cid(data), "other": raw_cid(data + b"\0"), "dagcbor": raw_cid(data, "dag-cbor"),
             "truncated": raw_cid(data)[:-4], "upper": raw_cid(data).upper(), "garbage": "bafk!!", "empty": ""}
    script = """
const [idsUrl, blobPath, casesJson] = process.argv.slice(1);
const { matchesCid, tid } = await import(idsUrl);
const { readFileSync } = await import("node:fs");
const data = readFileSync(blobPath);
const out = {};
for (const [name, cid] of Object.entries(JSON.parse(casesJson))) out[name] = await matchesCid(data, cid);
out.now = Date.now();
out.tids = [tid(), tid(), tid(), tid(1700000000000.5)];
console.log(JSON.stringify(out));
"""
    run = subprocess.run([str(node), "--input-type=module", "-e", script, (STATIC / "ids.js").as_uri(), str(blob),
                          json.dumps(cases)], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["right"] is True
    assert not any(out[name] for name in cases if name != "right"), out
    tids = out["tids"]
    assert all(TID.match(t) for t in tids), tids
    assert tids == sorted(tids) and len(set(tids)) == 4  # increasing, even when asked for an earlier time
    assert abs(tid_micros(tids[0]) // 1000 - out["now"]) < 5_000


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def catalog(make_client, tmp_path_factory):
    """An artist with a single (``single``), and an album of ``b`` and ``c`` (``album``); ``wav``: the bytes
    of each track by name. Each track 3 s."""
    artist = make_client("offlineartist")
    publish_profile(artist, "Offline Artist")
    folder = tmp_path_factory.mktemp("offline-audio")
    tracks, wav = {}, {}
    for name, seed in (("single", 11), ("b", 12), ("c", 13)):
        wav[name] = tune_wav(seed, seconds=3.0)
        (folder / f"{name}.wav").write_bytes(wav[name])
        tracks[name] = publish_track(artist, folder / f"{name}.wav", title=f"Offline {name}")
    album = publish_album(artist, "Offline Album", [tracks["b"], tracks["c"]])
    return SimpleNamespace(artist=artist, tracks=tracks, album=album, wav=wav)




async def sign_in(page, net, site, handle: str, shots: Path, prefix: str) -> None:
    resp = await start_sign_in(page, site, handle)
    assert resp.status == 303
    await pds_sign_in(page, net, PASSWORD, shots, prefix)
    await page.get_by_role("button", name="Authorize").click()
    await page.wait_for_url(re.compile(re.escape(site.url) + r"/(me|welcome)$"), timeout=30_000)


@pytest.fixture(scope="module")
async def listener(net, make_client, appview, catalog, browser, tmp_path_factory):  # noqa: F811
    """A fresh listener signed in in one browser context (its page stays open for the module)."""
    for ref in catalog.tracks.values():
        await indexed(appview, ref.uri)

    async def album_indexed():
        got = await appview.http_client.get("/xrpc/fm.openmusic.catalog.getAlbum", params={"uri": catalog.album.uri})
        return got.status_code == 200 and len(got.json()["album"]["tracks"]) == 2
    await eventually(album_indexed, timeout=30)
    account = make_client("offlinelistener")
    publish_profile(account, "Offline Listener")  # a profile: signing in lands on /me, not /welcome
    site = SimpleNamespace(url=appview.settings.base_url)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, net, site, account.handle, tmp_path_factory.mktemp("offline-sign-in"), "00")
    try:
        yield SimpleNamespace(account=account, context=context, page=page, site=site)
    finally:
        await context.close()


async def plays_in_repo(net, did: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=net.pds_url) as pds:
        got = await pds.get("/xrpc/com.atproto.repo.listRecords",
                            params={"repo": did, "collection": "fm.openmusic.listen.play", "limit": 100})
    return got.json()["records"]


async def kept_plays(page) -> list[dict]:
    return await page.evaluate("""() => Object.keys(localStorage).filter((k) => k.startsWith("om-play:"))
                                   .map((k) => JSON.parse(localStorage.getItem(k)))""")


async def cached(page, name: str) -> list[str]:
    return await page.evaluate("async (name) => (await (await caches.open(name)).keys()).map((r) => r.url)", name)


# -- served as they should be ---------------------------------------------------------------------

async def test_manifest_worker_and_offline_page_as_served(appview):
    http = appview.http_client
    sw = await http.get("/sw.js")
    assert sw.status_code == 200 and sw.headers["content-type"].startswith("text/javascript")
    assert sw.headers["cache-control"] == "no-cache" and sw.content == (STATIC / "sw.js").read_bytes()
    assert "service-worker-allowed" not in sw.headers  # served from the root: its scope is / already

    manifest = await http.get("/manifest.webmanifest")
    assert manifest.status_code == 200 and manifest.headers["content-type"].startswith("application/manifest+json")
    body = manifest.json()
    assert body["start_url"] == "/" and body["display"] == "standalone" and body["name"] == "Open Music"
    assert body["short_name"] and body["theme_color"].startswith("#") and body["background_color"].startswith("#")
    sizes = set()
    for icon in body["icons"]:
        got = await http.get(icon["src"])
        assert got.status_code == 200, icon
        if icon["type"] == "image/png":
            width, height = Image.open(io.BytesIO(got.content)).size
            assert f"{width}x{height}" == icon["sizes"]
            sizes.add(width)
        else:
            assert got.headers["content-type"].startswith("image/svg+xml") and b"<svg" in got.content
    assert {192, 512} <= sizes

    offline = await http.get("/offline")
    assert offline.status_code == 200 and 'id="saved-list"' in offline.text
    assert offline.headers["cache-control"] == "no-store"

    home = await http.get("/")
    assert '<link rel="manifest" href="/manifest.webmanifest">' in home.text
    assert '<meta name="theme-color"' in home.text and '<script type="module" src="/static/web/offline.js">' in home.text
    assert "<script>" not in home.text  # no inline script: the CSP (default-src 'self') allows none
    # The precached shell exists as named in sw.js.
    shell = "".join(re.findall(r"const SHELL_(?:NEEDED|URLS) = \[(.*?)\];", sw.text, re.S))
    paths = re.findall(r'"(/[^"]*)"', shell)
    assert "/static/web/player.js" in paths and "/static/web/icons/icon-192.png" in paths
    for path in [*paths, "/offline", "/static/web/icons/icon-512.png"]:
        assert (await http.get(path)).status_code == 200, path


# -- in Chromium ----------------------------------------------------------------------------------

async def test_save_offline_play_offline_and_write_once(net, appview, catalog, listener, tmp_path):
    page, context, site, did = listener.page, listener.context, listener.site, listener.account.did
    single = catalog.tracks["single"]
    track_url = f"{site.url}{path_of(single.uri)}"
    audio_url = (await appview.http_client.get("/xrpc/fm.openmusic.catalog.getTrack",
                                               params={"uri": single.uri})).json()["track"]["audioUrl"]
    assert audio_url.startswith(f"{site.url}/audio/") and audio_url.endswith(raw_cid(catalog.wav["single"]))

    await page.goto(track_url)
    await page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=15_000)
    save = page.get_by_role("button", name="Save for offline")
    await save.click()
    await page.locator(".offline-save [role=status]").filter(has_text="Saved:").wait_for(timeout=15_000)
    assert await page.get_by_role("button", name="Remove the offline copy").count() == 1
    assert audio_url in await cached(page, "om-media")
    assert track_url in await cached(page, "om-pages")
    await page.screenshot(path=str(tmp_path / "01-track-saved.png"), full_page=True)

    # The album: both its tracks' audio and pages, and its own page.
    album_url = f"{site.url}/album/{catalog.album.uri.removeprefix('at://').replace('/fm.openmusic.catalog.album/', '/')}"
    await page.goto(album_url)
    await page.get_by_role("button", name="Save album").click()
    await page.locator(".offline-save [role=status]").filter(has_text="Saved:").wait_for(timeout=15_000)
    pages_cached = await cached(page, "om-pages")
    assert album_url in pages_cached
    assert all(f"{site.url}{path_of(catalog.tracks[n].uri)}" in pages_cached for n in ("b", "c"))
    assert len(await cached(page, "om-media")) == 3

    # Offline: the saved pages come from the worker, the rest is /offline, listing what was saved.
    await context.set_offline(True)
    resp = await page.goto(f"{site.url}/search?q=offline")
    assert resp is not None and resp.from_service_worker
    await page.locator("#saved-list li").first.wait_for(timeout=10_000)
    listed = await page.text_content("#saved-list")
    assert "Offline single" in listed and "Offline Album" in listed and "Offline b" in listed
    await page.screenshot(path=str(tmp_path / "02-offline-page.png"), full_page=True)
    await page.get_by_role("link", name="Offline c").click()  # a track saved with its album
    await page.wait_for_url(f"{site.url}{path_of(catalog.tracks['c'].uri)}")
    assert "Offline c" in await page.text_content("h1")

    resp = await page.goto(track_url)
    assert resp is not None and resp.from_service_worker and resp.status == 200
    assert "Offline single" in await page.text_content("h1")
    assert await page.locator('meta[name="viewer-did"]').get_attribute("content") == did

    # Range requests are answered from the saved copy (what the audio element asks for).
    wav = catalog.wav["single"]
    ranges = await page.evaluate("""async (url) => {
        const out = {};
        for (const range of ["bytes=10-19", "bytes=-4", "bytes=0-", "bytes=99999999-"]) {
            const r = await fetch(url, { headers: { Range: range } });
            out[range] = { status: r.status, range: r.headers.get("content-range"),
                           bytes: [...new Uint8Array(await r.arrayBuffer())] };
        }
        return out;
    }""", audio_url)
    size = len(wav)
    assert ranges["bytes=10-19"] == {"status": 206, "range": f"bytes 10-19/{size}", "bytes": list(wav[10:20])}
    assert ranges["bytes=-4"] == {"status": 206, "range": f"bytes {size - 4}-{size - 1}/{size}",
                                  "bytes": list(wav[-4:])}
    assert ranges["bytes=0-"]["status"] == 206 and bytes(ranges["bytes=0-"]["bytes"]) == wav
    assert ranges["bytes=99999999-"]["status"] == 416

    # Play it to the end, offline: the play is kept on this device.
    assert await plays_in_repo(net, did) == []
    await page.locator("main").get_by_role("button", name="Play", exact=True).click()  # in the player bar
    status = page.locator("#player-status")
    await status.filter(has_text="Play kept on this device").wait_for(timeout=30_000)
    kept = await kept_plays(page)
    assert len(kept) == 1 and kept[0]["did"] == did and kept[0]["uri"] == single.uri and kept[0]["completed"]
    assert TID.match(kept[0]["rkey"])
    await page.screenshot(path=str(tmp_path / "03-play-kept-offline.png"), full_page=True)

    # Back online: the kept play is written, once, with the heard segments.
    await context.set_offline(False)
    await status.filter(has_text="Play saved").wait_for(timeout=30_000)
    records = await plays_in_repo(net, did)
    assert len(records) == 1, records
    value = records[0]["value"]
    assert records[0]["uri"].endswith(f"/{kept[0]['rkey']}")
    assert value["track"] == {"uri": single.uri, "cid": single.cid} and value["completed"] is True
    assert 2_000 <= value["listenedMs"] <= 3_000
    assert value["listenedMs"] == sum(s["endMs"] - s["startMs"] for s in value["segments"])
    assert await kept_plays(page) == []
    await page.reload()
    await page.wait_for_timeout(1500)
    assert len(await plays_in_repo(net, did)) == 1

    # Removing the album from /offline drops what only it needed.
    await page.goto(f"{site.url}/offline")
    album_row = page.locator("#saved-list > li").filter(has_text="Offline Album")
    await album_row.get_by_role("button", name="Remove").click()
    await album_row.wait_for(state="detached", timeout=10_000)
    assert await cached(page, "om-media") == [audio_url]
    assert await cached(page, "om-pages") == [track_url]


async def test_play_under_a_taken_record_key_is_written_once(net, catalog, listener):
    page, context, site, did = listener.page, listener.context, listener.site, listener.account.did
    track = catalog.tracks["b"]
    await page.goto(f"{site.url}{path_of(track.uri)}")
    token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
    rkey = tid_now()
    form = {"uri": track.uri, "cid": track.cid, "segments": "0-1000", "csrf_token": token, "rkey": rkey}
    first = await context.request.post(f"{site.url}/play", form=form)
    assert first.status == 200, await first.text()
    again = await context.request.post(f"{site.url}/play", form=form)
    assert again.status == 200, await again.text()
    assert (await again.json())["uri"] == (await first.json())["uri"] and (await again.json())["existing"] is True
    assert "existing" not in await first.json()
    other = await context.request.post(f"{site.url}/play", form={**form, "segments": "0-2000"})
    assert other.status == 409 and (await other.json())["error"] == "RecordKeyInUse"
    for bad in ("not-a-tid", rkey.upper(), rkey + "a", "zzzzzzzzzzzzz"):
        refused = await context.request.post(f"{site.url}/play", form={**form, "rkey": bad})
        assert refused.status == 400, bad
    under = [r for r in await plays_in_repo(net, did) if r["uri"].endswith(f"/{rkey}")]
    assert len(under) == 1 and under[0]["value"]["segments"] == [{"startMs": 0, "endMs": 1000}]
    assert sum(r["value"]["track"]["uri"] == track.uri for r in await plays_in_repo(net, did)) == 1


async def test_kept_play_waits_for_sign_in_and_refused_one_is_dropped(net, catalog, listener, tmp_path):
    page, context, site, did = listener.page, listener.context, listener.site, listener.account.did
    track = catalog.tracks["c"]
    track_url = f"{site.url}{path_of(track.uri)}"
    await page.goto(track_url)
    status = page.locator("#player-status")

    # Refused for good (the track's CID is not the indexed one): dropped, and the reason shown.
    stale = {"rkey": tid_now(), "did": did, "uri": track.uri, "cid": raw_cid(b"old", "dag-cbor"),
             "started": int(time.time() * 1000), "completed": False, "segments": "0-1500"}
    await page.evaluate("(p) => localStorage.setItem('om-play:' + p.rkey, JSON.stringify(p))", stale)
    await page.reload()
    await status.filter(has_text="Play not saved").wait_for(timeout=15_000)
    assert "changed" in await status.text_content()
    assert await kept_plays(page) == []

    # The session ends: the play is kept (401), and sent once the listener signs in again.
    play = {**stale, "rkey": tid_now(), "cid": track.cid}
    await page.evaluate("(p) => localStorage.setItem('om-play:' + p.rkey, JSON.stringify(p))", play)
    await context.clear_cookies()
    await page.evaluate("window.dispatchEvent(new Event('online'))")
    await status.filter(has_text="sign in again").wait_for(timeout=15_000)
    assert [p["rkey"] for p in await kept_plays(page)] == [play["rkey"]]
    assert not [r for r in await plays_in_repo(net, did) if r["uri"].endswith(play["rkey"])]
    await page.screenshot(path=str(tmp_path / "04-kept-session-ended.png"), full_page=True)

    await sign_in(page, net, site, listener.account.handle, tmp_path, "05")
    await status.filter(has_text="Play saved").wait_for(timeout=30_000)
    assert await kept_plays(page) == []
    written = [r for r in await plays_in_repo(net, did) if r["uri"].endswith(f"/{play['rkey']}")]
    assert len(written) == 1 and written[0]["value"]["listenedMs"] == 1500
    assert not [r for r in await plays_in_repo(net, did) if r["uri"].endswith(stale["rkey"])]

    # Signing out: the saved page is fetched again, signed out, so its copy no longer names the account.
    await page.goto(track_url)
    await page.get_by_role("button", name="Save for offline").click()
    await page.locator(".offline-save [role=status]").filter(has_text="Saved:").wait_for(timeout=15_000)

    async def saved_copy() -> str:
        return await page.evaluate("async (u) => (await (await caches.open('om-pages')).match(u)).text()", track_url)
    assert f'name="viewer-did" content="{did}"' in await saved_copy()
    await page.goto(f"{site.url}/me")
    await page.get_by_role("button", name="Sign out", exact=True).click()
    await page.wait_for_url(f"{site.url}/login?signed_out=1")
    copy = await eventually(saved_copy, until=lambda html: 'name="viewer-did"' not in html)
    assert "Offline c" in copy and 'name="csrf-token"' not in copy
