"""The web app's catalog pages and the listener's writes, for real: the AppView runtime (firehose
from the reference PDS, indexer, the web app mounted on the same origin) serves the pages; Debian's
Chromium signs a listener in on the PDS, plays a track to its end, and the play record lands in the
listener's own repo and comes back through the firehose into the index; likes and unlikes likewise.
Bad input along the way: forged CSRF tokens, malformed segments, a stale track CID, unknown pages,
forged cursors, markup in titles. Screenshots (1280 and 390 px) go to the test's tmp dir."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from core.publish import publish_profile, publish_track
from devkit.media import tune_wav
from tests.conftest import eventually
from tests.test_web_oauth_browser import CHROMIUM, FLAGS, PASSWORD, pds_sign_in, start_sign_in

pytestmark = pytest.mark.network
TITLE = '<b>Tide & "Harbor"</b>'


@pytest.fixture(scope="module")
def published(make_client, tmp_path_factory):
    """An artist with a profile and one 3-second track whose title carries markup."""
    artist = make_client("pagesartist")
    publish_profile(artist, "Page Artist", description="Makes <i>tests</i>.")
    path = tmp_path_factory.mktemp("audio") / "tide.wav"
    path.write_bytes(tune_wav(7, seconds=3.0))
    track = publish_track(artist, path, title=TITLE, extra={"genre": "Synthwave"})
    return artist, track


async def indexed(appview, uri: str) -> dict:
    async def check():
        resp = await appview.http_client.get("/xrpc/fm.openmusic.catalog.getTrack", params={"uri": uri})
        return resp.json() if resp.status_code == 200 else None
    return await eventually(check, timeout=30)


def path_of(uri: str) -> str:
    did, _, rkey = uri.removeprefix("at://").partition("/fm.openmusic.catalog.track/")
    return f"/track/{did}/{rkey}"


async def test_pages_signed_out(appview, published):
    artist, track = published
    await indexed(appview, track.uri)
    http = appview.http_client

    home = await http.get("/")
    assert home.status_code == 200 and "text/html" in home.headers["content-type"]
    assert "&lt;b&gt;Tide &amp; &#34;Harbor&#34;&lt;/b&gt;" in home.text and TITLE not in home.text
    assert f'href="{path_of(track.uri)}"' in home.text
    assert "script-src" not in home.headers["content-security-policy"]  # default-src 'self' covers scripts
    assert "default-src 'self'" in home.headers["content-security-policy"]
    assert home.headers["cache-control"] == "no-store"

    page = await http.get(path_of(track.uri))
    assert page.status_code == 200
    assert f'data-uri="{track.uri}"' in page.text and f'data-cid="{track.cid}"' in page.text
    assert "Sign in</a> to have your plays counted" in page.text and 'name="csrf-token"' not in page.text
    assert "0:03" in page.text  # duration as m:ss

    profile = await http.get(f"/artist/{artist.handle}")
    assert profile.status_code == 200 and "Page Artist" in profile.text and "Makes &lt;i&gt;tests" in profile.text
    assert "1 track ·" in profile.text  # singular

    found = await http.get("/search", params={"q": "tide harb"})
    assert found.status_code == 200 and path_of(track.uri) in found.text
    none = await http.get("/search", params={"q": "zzzznothing"})
    assert none.status_code == 200 and "No tracks match" in none.text

    # Bad input gets a page saying what went wrong, with its status.
    bad_cursor = await http.get("/search", params={"cursor": "eyJ4IjoxfQ"})  # a forged page link: the first page
    assert bad_cursor.status_code == 200 and "That page link no longer works" in bad_cursor.text
    missing = await http.get(f"/track/{artist.did}/3kzzzzzzzzz2a")
    assert missing.status_code == 404 and "not indexed" in missing.text, missing.text.split('<main id="main">')[1][:400]
    unknown = await http.get("/artist/nobody-here.test")
    assert unknown.status_code == 404

    # Writes need a signed-in session.
    play = await http.post("/play", data={"uri": track.uri, "cid": track.cid, "segments": "0-1000"})
    assert play.status_code == 401 and play.json()["error"] == "AuthRequired"
    like = await http.post("/like", data={"uri": track.uri})
    assert like.status_code == 401 and "Sign in" in like.text

    # Spanish, by Accept-Language or by ?lang= (remembered in a cookie); plural forms from the catalog.
    es = await http.get(f"/artist/{artist.handle}", headers={"accept-language": "es-ES,es;q=0.9,en;q=0.5"})
    assert '<html lang="es">' in es.text and "1 canción ·" in es.text and "Canciones" in es.text
    chosen = await http.get("/?lang=es")
    assert "Música nueva" in chosen.text and "om_lang=es" in chosen.headers["set-cookie"]
    http.cookies.delete("om_lang")  # the shared client serves later tests: no Spanish cookie left behind
    english = await http.get("/", cookies={"om_lang": "en"}, headers={"accept-language": "es"})
    assert "New music" in english.text and '<html lang="en">' in english.text

    # The XRPC API is still served under the web app, with its CORS headers.
    api = await http.get("/xrpc/fm.openmusic.catalog.getTrack", params={"uri": track.uri},
                         headers={"origin": "https://other.example"})
    assert api.status_code == 200 and api.headers["access-control-allow-origin"] == "*"


@pytest.fixture(scope="module")
async def browser():
    """Debian's Chromium through Playwright (no browser download); audio may start without a gesture."""
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium` (apt-get install chromium)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM,
                                    args=[*FLAGS, "--autoplay-policy=no-user-gesture-required"])
        try:
            yield b
        finally:
            await b.close()


async def test_listen_like_and_unlike_in_chromium(net, make_client, appview, published, browser, tmp_path):
    artist, track = published
    await indexed(appview, track.uri)
    listener = make_client("pageslistener")
    site = type("Site", (), {"url": appview.settings.base_url})
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()

    resp = await start_sign_in(page, site, listener.handle)
    assert resp.status == 303
    await pds_sign_in(page, net, PASSWORD, tmp_path, "01")
    await page.get_by_role("button", name="Authorize").click()
    await page.wait_for_url(f"{site.url}/welcome", timeout=30_000)  # a new account: onboarding first

    await page.goto(f"{site.url}{path_of(track.uri)}")
    await page.screenshot(path=str(tmp_path / "02-track-1280.png"), full_page=True)
    assert await page.locator('meta[name="csrf-token"]').count() == 1
    assert f"@{listener.handle}" in await page.text_content("header")

    # Play to the end (the page's Play button, in the player bar): player.js asks our server to write
    # the play to the listener's PDS.
    await page.locator("main").get_by_role("button", name="Play", exact=True).click()
    status = page.locator("#player-status")
    await status.filter(has_text="Play saved").wait_for(timeout=30_000)
    assert "s heard" in await status.text_content()
    async with httpx.AsyncClient(base_url=net.pds_url) as pds:
        records = (await pds.get("/xrpc/com.atproto.repo.listRecords", params={
            "repo": listener.did, "collection": "fm.openmusic.listen.play"})).json()["records"]
    assert len(records) == 1
    value = records[0]["value"]
    assert value["track"] == {"uri": track.uri, "cid": track.cid} and value["completed"] is True
    assert 2_000 <= value["listenedMs"] <= 3_000 and value["client"].startswith("openmusic-web/")
    assert value["listenedMs"] == sum(s["endMs"] - s["startMs"] for s in value["segments"])

    async def plays():
        got = await appview.http_client.get("/xrpc/fm.openmusic.listen.getPlays", params={"actor": listener.did})
        return got.json().get("plays")
    indexed_plays = await eventually(plays, timeout=30)
    assert indexed_plays[0]["trackUri"] == track.uri and indexed_plays[0]["listenedMs"] == value["listenedMs"]

    # Like, then unlike: records in the listener's repo, the page shows the indexed state.
    await page.reload()
    await page.get_by_role("button", name="♡ Like").click()
    await page.get_by_role("button", name="♥ Liked").wait_for(timeout=15_000)
    assert (await page.text_content("#likes")).strip() == "1"
    await page.screenshot(path=str(tmp_path / "03-liked-1280.png"), full_page=True)
    await page.get_by_role("button", name="♥ Liked").click()
    await page.get_by_role("button", name="♡ Like").wait_for(timeout=15_000)
    assert (await page.text_content("#likes")).strip() == "0"

    # The like form sent twice (a double click) writes one like; an unlike removes every like of the
    # track, also duplicates another client wrote.
    async def likes_in_repo() -> list[dict]:
        async with httpx.AsyncClient(base_url=net.pds_url) as pds:
            return (await pds.get("/xrpc/com.atproto.repo.listRecords", params={
                "repo": listener.did, "collection": "fm.openmusic.social.like"})).json()["records"]

    form = {name: await page.locator(f'form.like input[name="{name}"]').input_value()
            for name in ("csrf_token", "uri", "key")}
    sent = [await context.request.post(f"{site.url}/like", form=form, max_redirects=0) for _ in range(2)]
    assert [r.status for r in sent] == [303, 303] and len(await likes_in_repo()) == 1
    listener.create_record("fm.openmusic.social.like", {  # a duplicate from another client
        "$type": "fm.openmusic.social.like", "subject": {"uri": track.uri, "cid": track.cid},
        "createdAt": "2026-01-01T00:00:00.000Z"})
    await eventually(lambda: appview.http_client.get("/xrpc/fm.openmusic.social.getActorLikes",
                                                     params={"actor": listener.did}),
                     until=lambda r: len(r.json()["likes"]) == 2)
    await page.reload()
    await page.get_by_role("button", name="♥ Liked").click()
    await page.get_by_role("button", name="♡ Like").wait_for(timeout=15_000)
    assert await likes_in_repo() == []

    # Forged and malformed writes are refused and write nothing.
    token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
    base = {"uri": track.uri, "cid": track.cid, "segments": "0-1000", "csrf_token": token}
    cases = [({**base, "csrf_token": "forged"}, 403), ({**base, "segments": "0-abc"}, 400),
             ({**base, "segments": "5000-5000"}, 400), ({**base, "cid": "bafyreiold"}, 409),
             ({**base, "uri": f"at://{artist.did}/fm.openmusic.catalog.track/3kzzzzzzzzz2a"}, 404),
             ({**base, "segments": ",".join(["0-1"] * 1001)}, 400)]
    for form, status_code in cases:
        refused = await context.request.post(f"{site.url}/play", form=form)
        assert refused.status == status_code, (form, await refused.text())
        assert set(await refused.json()) == {"error", "message"}
    async with httpx.AsyncClient(base_url=net.pds_url) as pds:
        after = (await pds.get("/xrpc/com.atproto.repo.listRecords", params={
            "repo": listener.did, "collection": "fm.openmusic.listen.play"})).json()["records"]
    assert len(after) == 1

    # A narrow screen, home and artist pages.
    await page.set_viewport_size({"width": 390, "height": 844})
    for name, path in (("home", "/"), ("track", path_of(track.uri)), ("artist", f"/artist/{artist.handle}")):
        await page.goto(f"{site.url}{path}")
        await page.screenshot(path=str(tmp_path / f"04-{name}-390.png"), full_page=True)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} scrolls sideways at 390 px ({width})"
    await context.close()
