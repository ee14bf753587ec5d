"""The creator's studio (``web.studio``, ``web.studio_album``, ``web.studio_form``).

Units (no network): the form -> record rules (shares in percent to basis points summing to 100 %,
handles to DIDs, the AI disclosure, lists, ISRC, dates, purchase links), a record back to the form,
the album's order; the upload's checks over a stand-in session (not audio, too large for the
lexicon, too large for the PDS: 413 with the words, nothing else tried).

End to end (the reference PDS + the AppView runtime with the web app, Debian's Chromium): an artist
signs in, uploads a real WAV (tags read from it fill the form) and a PNG with progress, names a
collaborator in the splits and discloses AI use; the record is in the artist's own PDS with the
blobs, the splits as DIDs and basis points, and the AppView indexes and serves it, playable. Refused
forms (shares not adding up, an unknown handle, a file that is not audio) write nothing. An edit
shows on the track page; the purchase link counts its clicks; an album of two tracks is reordered
with the keyboard and then with a button; the form also works without JavaScript (files in the form);
deletes take the track and the album out of the PDS and the catalog. Screenshots go to the test's
tmp dir."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from mutagen.id3 import TCON, TIT2
from mutagen.wave import WAVE

from core.lexicons import ALBUM, TRACK
from core.publish import publish_profile
from devkit.media import cover_png, tune_wav
from tests import dbq
from tests.conftest import eventually
from tests.test_web_oauth_browser import browser  # noqa: F401  (a fixture)
from tests.test_web_profile import indexed, no_sideways_scroll, pds_record, sign_in
from web.studio import Studio, UploadRefused
from web.studio_album import AlbumRow, order_rows
from web.studio_form import (
    FormProblem,
    SplitRow,
    TrackForm,
    bps_to_percent,
    percent_to_bps,
    splits,
    track_fields,
)


def _(text: str) -> str:
    return text


ME, BOB = "did:plc:" + "a" * 24, "did:plc:" + "b" * 24


# -- units -------------------------------------------------------------------------------------------

def test_percent_and_basis_points():
    assert percent_to_bps("50", _) == 5000 and percent_to_bps("33.33", _) == 3333 and percent_to_bps("0,5", _) == 50
    assert percent_to_bps("100 %", _) == 10_000
    for bad in ("0", "-5", "100.01", "33.333", "abc", "NaN", "inf", ""):
        with pytest.raises(FormProblem):
            percent_to_bps(bad, _)
    assert [bps_to_percent(b) for b in (5000, 3333, 50, 10_000, 1)] == ["50", "33.33", "0.5", "100", "0.01"]


def test_splits_must_sum_to_100_and_name_each_once():
    dids = {"me.test": ME, "bob.test": BOB}
    assert splits([], dids, ME, _) is None
    assert splits([SplitRow("me.test", "70"), SplitRow("@bob.test", "30")], dids, ME, _) == [
        {"did": ME, "shareBps": 7000}, {"did": BOB, "shareBps": 3000}]
    assert splits([SplitRow("me.test", "100")], dids, ME, _) is None  # all to the creator: the default
    with pytest.raises(FormProblem, match="add up to 90 %"):
        splits([SplitRow("me.test", "60"), SplitRow("bob.test", "30")], dids, ME, _)
    with pytest.raises(FormProblem, match="named twice"):
        splits([SplitRow("bob.test", "50"), SplitRow("@bob.test", "50")], dids, ME, _)
    with pytest.raises(FormProblem, match="both a handle and a share"):
        splits([SplitRow("bob.test", "")], dids, ME, _)


def test_track_fields_from_a_full_form():
    form = TrackForm.from_fields({
        "title": ["  Night Bus "], "genre": ["Ambient"], "moods": ["calm, late,calm"], "tags": ["city\nnight"],
        "bpm": ["92"], "isrc": ["us-rc1-76-07839"], "releaseDate": ["2026-11-20"], "description": ["A ride."],
        "explicit": ["1"], "license": ["cc-by-4.0"], "featured": ["@bob.test, bob.test"], "aiLevel": ["assisted"],
        "aiTools": ["Stem splitter"], "aiNote": ["Stems only."], "purchaseUrl": ["https://shop.example/night-bus"],
        "splitWho": ["me.test", "bob.test", ""], "splitPercent": ["80", "20", ""]})
    assert form.people() == ["bob.test", "me.test", "bob.test"]
    out = track_fields(form, {"me.test": ME, "bob.test": BOB}, ME, _)
    assert out == {
        "title": "Night Bus", "genre": "Ambient", "moods": ["calm", "late"], "tags": ["city", "night"], "bpm": 92,
        "isrc": "USRC17607839", "releaseDate": "2026-11-20T00:00:00.000Z", "description": "A ride.", "explicit": True,
        "license": "cc-by-4.0", "featuredArtists": [BOB],
        "aiDisclosure": {"level": "assisted", "tools": ["Stem splitter"], "note": "Stems only."},
        "splits": [{"did": ME, "shareBps": 8000}, {"did": BOB, "shareBps": 2000}],
        "purchaseUrl": "https://shop.example/night-bus"}
    # and back: a record -> the form shows people by handle, shares in percent
    record = {"title": "Night Bus", **{k: v for k, v in out.items() if v is not None and k != "title"}}
    again = TrackForm.from_record(record, {ME: "me.test", BOB: "bob.test"}, "bafycid")
    assert again.featured == "bob.test" and [(r.who, r.percent) for r in again.splits] == [("me.test", "80"), ("bob.test", "20")]
    assert again.release_date == "2026-11-20" and again.isrc == "USRC17607839" and again.swap == "bafycid"
    assert track_fields(again, {"me.test": ME, "bob.test": BOB}, ME, _) == out


@pytest.mark.parametrize(("fields", "words"), [
    ({"title": [""]}, "title"),
    ({"title": ["x"], "bpm": ["fast"]}, "BPM"),
    ({"title": ["x"], "isrc": ["123"]}, "ISRC"),
    ({"title": ["x"], "releaseDate": ["2026-13-01"]}, "release date"),
    ({"title": ["x"], "license": ["mine"]}, "licence"),
    ({"title": ["x"], "aiLevel": ["robot"]}, "AI"),
    ({"title": ["x"], "aiTools": ["Thing"]}, "how much AI"),
    ({"title": ["x"], "moods": [",".join(f"m{i}" for i in range(11))]}, "at most 10"),
    ({"title": ["x"], "purchaseUrl": ["http://shop.example/x"]}, "https"),
    ({"title": ["x"], "purchaseUrl": ["javascript:alert(1)"]}, "https"),
])
def test_track_fields_refusals(fields, words):
    with pytest.raises(FormProblem, match=words):
        track_fields(TrackForm.from_fields(fields), {}, ME, _)


def test_album_order_ticked_first_then_by_number():
    rows = [AlbumRow("a", "", "A", False, ""), AlbumRow("b", "", "B", True, "2"),
            AlbumRow("c", "", "C", True, "1"), AlbumRow("d", "", "D", True, ""),
            AlbumRow("e", "", "E", True, "1")]
    assert [r.uri for r in order_rows(rows)] == ["c", "e", "b", "d", "a"]


class StandInSession:
    """Only what ``Studio.store_file`` calls: ``upload_blob``, answering like a PDS at its limit."""

    def __init__(self, limit: int) -> None:
        self.limit, self.uploaded = limit, 0

    async def upload_blob(self, data: bytes, mime_type: str) -> dict:
        from web.oauth.client import PdsError
        if len(data) > self.limit:
            raise PdsError(413, "PayloadTooLarge", "request entity too large")
        self.uploaded += 1
        return {"$type": "blob", "ref": {"$link": "bafkrei"}, "mimeType": mime_type, "size": len(data)}


async def test_store_file_refusals():
    studio = object.__new__(Studio)
    studio._ = _
    wav = tune_wav(3, seconds=1.0)
    small = StandInSession(limit=len(wav) - 1)
    with pytest.raises(UploadRefused) as caught:
        await studio.store_file(small, "audio", wav, "a.wav")
    assert caught.value.status == 413 and "own limit" in caught.value.message
    for data in (b"not audio at all" * 100, cover_png(1, "x")):
        with pytest.raises(UploadRefused) as caught:
            await studio.store_file(small, "audio", data, "a.mp3")
        assert caught.value.status == 415 and "MP3, FLAC" in caught.value.message
    with pytest.raises(UploadRefused) as caught:
        await studio.store_file(small, "artwork", wav)
    assert caught.value.status == 415
    with pytest.raises(UploadRefused) as caught:
        await studio.store_file(small, "artwork", b"\x89PNG" + b"0" * 2_000_001)
    assert caught.value.status == 413 and "at most 2 MB" in caught.value.message
    assert small.uploaded == 0
    roomy = StandInSession(limit=10**9)
    blob, info = await studio.store_file(roomy, "audio", wav, "a.wav")
    assert blob["mimeType"] == "audio/wav" and info["durationMs"] == 1000 and info["format"] == "WAV"


# -- end to end ----------------------------------------------------------------------------------------

def tagged_wav(seed: int, seconds: float, title: str, genre: str, path: Path) -> bytes:
    """A real WAV with ID3 tags (title, genre), as a creator's file would be."""
    path.write_bytes(tune_wav(seed, seconds=seconds))
    audio = WAVE(path)
    audio.add_tags()
    audio.tags.add(TIT2(encoding=3, text=title))
    audio.tags.add(TCON(encoding=3, text=genre))
    audio.save()
    return path.read_bytes()


def pds_list(net, did: str, collection: str) -> list[dict]:
    return httpx.get(f"{net.pds_url}/xrpc/com.atproto.repo.listRecords",
                     params={"repo": did, "collection": collection}, timeout=30).json()["records"]


async def wait_upload(page, kind: str) -> str:
    async def done():
        return await page.input_value(f"#{kind}Blob")
    return await eventually(done, timeout=30, interval=0.2)


@pytest.mark.network
async def test_studio_upload_edit_album_delete_in_chromium(net, make_client, appview, browser, tmp_path):  # noqa: F811
    artist = make_client("studioartist")
    publish_profile(artist, "Studio Artist", roles=["artist"])
    bob = make_client("studiobob")
    publish_profile(bob, "Bob Collaborator", roles=["artist"])
    await indexed(appview, "fm.openmusic.actor.getProfile", "did", actor=bob.did)
    site = SimpleNamespace(url=appview.settings.base_url)
    shots = tmp_path
    wav = tagged_wav(11, 4.0, "Tagged Title", "Dub", tmp_path / "night.wav")
    art = cover_png(11, "Night")
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, net, site, artist.handle, shots, "00")
    await page.goto(f"{site.url}/me")
    await page.click("#studio")
    await page.wait_for_url(f"{site.url}/studio")
    assert "No tracks yet." in await page.text_content("main")
    await page.click("#new-track")
    await page.wait_for_url(f"{site.url}/studio/track/new")

    # Not audio: refused at upload, nothing kept; then the real file, with its tags read.
    await page.set_input_files("#audio", files=[{"name": "fake.mp3", "mimeType": "audio/mpeg", "buffer": b"ID3 no" * 50}])
    await eventually(lambda: page.text_content("#audio-status"), timeout=30, until=lambda t: "Not uploaded" in (t or ""))
    assert "MP3, FLAC, Ogg, WAV or M4A" in await page.text_content("#audio-status")
    assert await page.input_value("#audioBlob") == ""
    await page.set_input_files("#audio", files=[{"name": "night.wav", "mimeType": "audio/wav", "buffer": wav}])
    audio_ref = json.loads(await wait_upload(page, "audio"))
    assert audio_ref["mimeType"] == "audio/wav" and audio_ref["size"] == len(wav)
    assert await page.input_value("#title") == "Tagged Title" and await page.input_value("#genre") == "Dub"
    assert await page.input_value("#durationMs") == "4000"
    assert await page.get_attribute("#audio-progress", "value") == "100"
    await page.set_input_files("#artwork", files=[{"name": "art.png", "mimeType": "image/png", "buffer": art}])
    await wait_upload(page, "artwork")
    await page.fill("#title", "Night Bus")
    await page.fill("#moods", "calm, late")
    await page.check("#ai-assisted")
    await page.fill("#aiTools", "Stem splitter")
    await page.fill("#purchaseUrl", "https://shop.example/night-bus")
    who = page.locator("input[name=splitWho]")
    share = page.locator("input[name=splitPercent]")
    await who.nth(0).fill(artist.handle)
    await share.nth(0).fill("70")
    await who.nth(1).fill(f"@{bob.handle}")
    await share.nth(1).fill("20")
    assert (await page.text_content("#split-total")).strip() == "90 %"

    # Shares not adding up, then an unknown handle: the form comes back, nothing is written.
    async def submit(status: int) -> None:
        async with page.expect_response(lambda r: r.request.method == "POST" and "/studio/track" in r.url) as info:
            await page.click("#publish")
        assert (await info.value).status == status
    await submit(400)
    assert "add up to 90 %" in await page.text_content("[role=alert]")
    assert await page.input_value("#audioBlob")  # the upload is kept in the form
    await share.nth(1).fill("30")
    await who.nth(2).fill("nobody-at-all.test")
    await share.nth(2).fill("10")
    await share.nth(0).fill("60")
    await submit(400)
    assert "@nobody-at-all.test" in await page.text_content("[role=alert]")
    await page.screenshot(path=str(shots / "01-track-refused.png"), full_page=True)
    assert pds_list(net, artist.did, TRACK) == []
    await who.nth(2).fill("")
    await share.nth(2).fill("")
    await share.nth(0).fill("70")
    await page.screenshot(path=str(shots / "02-track-form-1280.png"), full_page=True)
    await page.click("#publish")
    await page.wait_for_url(lambda u: "/track/" in u, timeout=30_000)
    rkey = page.url.split("?")[0].rsplit("/", 1)[1]
    assert "Saved in your PDS" in await page.text_content("#saved")
    assert await page.locator(".track-words li").all_text_contents() == ["calm", "late"]
    value = pds_record(net, artist.did, TRACK, rkey)["value"]
    assert value["title"] == "Night Bus" and value["genre"] == "Dub" and value["duration"] == 4000
    assert value["audio"]["ref"]["$link"] == audio_ref["ref"]["$link"] and value["artwork"]["mimeType"] == "image/png"
    assert value["splits"] == [{"did": artist.did, "shareBps": 7000}, {"did": bob.did, "shareBps": 3000}]
    assert value["aiDisclosure"] == {"level": "assisted", "tools": ["Stem splitter"]} and value["moods"] == ["calm", "late"]
    assert value["purchaseUrl"] == "https://shop.example/night-bus"
    assert await page.text_content("h1") == "Night Bus"
    audio_url = await page.get_attribute("audio", "src")
    served = await appview.http_client.get(audio_url.removeprefix(site.url))
    assert served.status_code == 200 and served.content == wav
    await page.screenshot(path=str(shots / "03-track-page.png"), full_page=True)

    # The same audio again: refused with a link to the track that has it, unless ticked knowingly.
    await page.goto(f"{site.url}/studio/track/new")
    await page.set_input_files("#audio", files=[{"name": "night.wav", "mimeType": "audio/wav", "buffer": wav}])
    await wait_upload(page, "audio")
    async with page.expect_response(lambda r: r.request.method == "POST" and "/studio/track" in r.url) as info:
        await page.click("#publish")
    assert (await info.value).status == 409 and "already published this audio" in await page.text_content("[role=alert]")
    assert await page.get_attribute("[role=alert] a", "href") == f"/studio/track/{rkey}"
    assert await page.is_visible("#againOk") and len(pds_list(net, artist.did, TRACK)) == 1
    await page.goto(f"{site.url}/track/{artist.did}/{rkey}")

    # The purchase link: a click on our page counts once per clicker and day, then the store (in a
    # new tab). A bare request (no Sec-Fetch-Site: same-origin, as a script or curl sends) counts nothing.
    def clicks() -> tuple | None:
        return dbq.one(appview.settings, "SELECT clicks FROM purchase_click WHERE track_uri = ?",
                       f"at://{artist.did}/{TRACK}/{rkey}")
    href = await page.get_attribute("#buy", "href")
    assert await page.get_attribute("#buy", "target") == "_blank"
    buy = await appview.http_client.get(href)
    assert buy.status_code == 303 and buy.headers["location"] == "https://shop.example/night-bus"
    assert clicks() is None
    for _i in range(2):
        same = await appview.http_client.get(href, headers={"sec-fetch-site": "same-origin"})
        assert same.status_code == 303
    assert clicks() == (1,)
    await context.route("https://shop.example/**", lambda route: route.fulfill(body="<h1>Shop</h1>",
                                                                             content_type="text/html"))
    async with context.expect_page() as popup:
        await page.click("#buy")
    shop = await popup.value
    await shop.wait_for_load_state()
    assert shop.url == "https://shop.example/night-bus" and page.url.startswith(f"{site.url}/track/")
    await shop.close()
    assert clicks() == (2,)  # the signed-in artist: another clicker than the address above

    # On their own track the artist gets no vote buttons (their votes would weigh nothing), but a note.
    assert await page.locator("form.vote").count() == 0 and await page.locator("#own-track-votes").count() == 1
    # Edit: the form comes back filled in, by handle and percent; the change shows on the track page.
    await page.click("#edit-track")
    await page.wait_for_url(f"{site.url}/studio/track/{rkey}")
    assert await page.input_value("#title") == "Night Bus"
    assert await who.nth(1).input_value() == bob.handle and await share.nth(1).input_value() == "30"
    assert (await page.get_attribute(".current-art img", "src")).endswith(value["artwork"]["ref"]["$link"])
    await page.fill("#title", "Night Bus (Edit)")
    await page.click("#publish")
    await page.wait_for_url(lambda u: f"/track/{artist.did}/{rkey}" in u, timeout=30_000)
    assert await page.text_content("h1") == "Night Bus (Edit)"
    edited = pds_record(net, artist.did, TRACK, rkey)["value"]
    assert edited["splits"] == value["splits"] and edited["artwork"] == value["artwork"]
    await page.goto(f"{site.url}/studio/track/{rkey}")  # and the artwork can be taken off
    await page.check("input[name=removeArtwork]")
    await page.click("#publish")
    await page.wait_for_url(lambda u: f"/track/{artist.did}/{rkey}" in u, timeout=30_000)
    assert "artwork" not in pds_record(net, artist.did, TRACK, rkey)["value"]

    # Without JavaScript: the files travel in the form itself.
    plain = await browser.new_context(java_script_enabled=False, storage_state=await context.storage_state())
    nojs = await plain.new_page()
    await nojs.goto(f"{site.url}/studio/track/new")
    await nojs.set_input_files("#audio", files=[{"name": "second.wav", "mimeType": "audio/wav",
                                                 "buffer": tune_wav(12, seconds=2.0)}])
    await nojs.fill("#title", "Second Song")
    await nojs.click("#publish")
    await nojs.wait_for_url(lambda u: "/track/" in u, timeout=30_000)
    second = nojs.url.split("?")[0].rsplit("/", 1)[1]
    assert pds_record(net, artist.did, TRACK, second)["value"]["duration"] == 2000
    await plain.close()

    # An album of both, reordered with the keyboard (Alt+ArrowUp), then with a button.
    await page.goto(f"{site.url}/studio/album/new")
    await page.fill("#title", "Late Rides")
    rows = page.locator(".album-row")
    assert await rows.count() == 2
    async with page.expect_response(lambda r: r.request.method == "POST" and "/studio/album" in r.url) as info:
        await page.click("#save-album")  # no track ticked
    assert (await info.value).status == 400 and "at least one track" in await page.text_content("[role=alert]")
    assert pds_list(net, artist.did, ALBUM) == []
    rows = page.locator(".album-row")
    for i in range(2):
        await rows.nth(i).locator("input[name=on]").check()
    first_title = await rows.nth(0).get_attribute("data-title")
    await rows.nth(1).locator("input[name=position]").focus()
    await page.keyboard.press("Alt+ArrowUp")
    assert await rows.nth(0).get_attribute("data-title") != first_title
    assert "moved to position 1" in await page.text_content("#order-status")
    order = [await rows.nth(i).get_attribute("data-title") for i in range(2)]
    await page.screenshot(path=str(shots / "04-album-form.png"), full_page=True)
    await page.click("#save-album")
    await page.wait_for_url(lambda u: "/album/" in u, timeout=30_000)
    album_rkey = page.url.split("?")[0].rsplit("/", 1)[1]
    assert "Saved in your PDS" in await page.text_content("#saved")
    assert await page.get_attribute("#edit-album", "href") == f"/studio/album/{album_rkey}"
    titles = {f"at://{artist.did}/{TRACK}/{rkey}": "Night Bus (Edit)", f"at://{artist.did}/{TRACK}/{second}": "Second Song"}
    listed = [titles[t["uri"]] for t in pds_record(net, artist.did, ALBUM, album_rkey)["value"]["tracks"]]
    assert listed == order
    await page.goto(f"{site.url}/studio/album/{album_rkey}")
    await rows.nth(0).locator("button.down").click()
    await page.click("#save-album")
    await page.wait_for_url(lambda u: "/album/" in u, timeout=30_000)
    listed = [titles[t["uri"]] for t in pds_record(net, artist.did, ALBUM, album_rkey)["value"]["tracks"]]
    assert listed == order[::-1]

    # The studio lists both; 390 px wide it does not scroll sideways.
    await page.goto(f"{site.url}/studio")
    assert await page.locator("#studio-tracks li").count() == 2 and await page.locator("#studio-albums li").count() == 1
    assert await page.locator(f'#studio-tracks a[href="/track/{artist.did}/{rkey}"]').count() == 1  # indexed
    await page.screenshot(path=str(shots / "05-studio.png"), full_page=True)
    await no_sideways_scroll(page, site, shots, [("06-studio", "/studio"), ("07-track-form", "/studio/track/new"),
                                                 ("08-album-form", f"/studio/album/{album_rkey}"),
                                                 ("09-track-form-es", "/studio/track/new?lang=es")])
    assert await page.text_content("h1") == "Subir una canción"  # the language stays chosen (om_lang)
    assert "Reparto" in await page.text_content("#splits legend")
    await page.screenshot(path=str(shots / "09-track-form-es-1280.png"), full_page=True)
    await page.goto(f"{site.url}/studio?lang=en")

    # Delete the album and a track: gone from the PDS and, soon, from the catalog.
    await page.goto(f"{site.url}/studio")
    album_row = page.locator("#studio-albums li").first
    await album_row.locator("summary").click()
    await album_row.get_by_role("button").click()
    await page.wait_for_url(f"{site.url}/studio?notice=deleted")
    assert pds_list(net, artist.did, ALBUM) == []
    row = page.locator("#studio-tracks li", has_text="Second Song")
    await row.locator("summary").click()
    await row.get_by_role("button").click()
    await page.wait_for_url(f"{site.url}/studio?notice=deleted")
    assert [r["uri"].rsplit("/", 1)[1] for r in pds_list(net, artist.did, TRACK)] == [rkey]
    gone = await appview.http_client.get("/xrpc/fm.openmusic.catalog.getTrack",
                                         params={"uri": f"at://{artist.did}/{TRACK}/{second}"})
    assert gone.status_code == 400 and gone.json()["error"] == "NotFound"
    await context.close()


@pytest.mark.network
async def test_studio_refuses_without_sign_in_or_token(appview):
    async with httpx.AsyncClient(base_url=appview.settings.base_url) as anon:
        page = await anon.get("/studio")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fstudio"
        up = await anon.post("/studio/upload?kind=audio", content=b"x")
        assert up.status_code == 401 and up.json()["error"] == "AuthRequired"
        nobuy = await anon.get(f"/buy/did:plc:{'z' * 24}/{'3' * 13}")
        assert nobuy.status_code == 404
