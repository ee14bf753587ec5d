"""The player bar, for real: Debian's Chromium against the AppView runtime on the reference PDS. A
listener presses Play on an album's first row; the bar's one <audio> keeps playing while links, the
search form, like/unlike and the back button change the page (no reload: a window marker survives,
currentTime keeps growing); the queue moves on at the end of a track, next/previous work from the bar
and from the keyboard, the next track is preloaded, Media Session metadata follows the track; and
each listening lands in the listener's repo as one play record, with its segments. Without JavaScript
the bar stays hidden and the pages' own players remain. At 390 px nothing scrolls sideways.
Screenshots (1280 and 390 px) go to the test's tmp dir."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

from core.publish import publish_album, publish_profile, publish_track
from devkit.media import cover_png, tune_wav
from tests.conftest import eventually
from tests.test_web_offline import plays_in_repo, sign_in
from tests.test_web_pages import browser, indexed, path_of  # noqa: F401  (fixtures)

pytestmark = pytest.mark.network
TITLES = ["Lantern One", "Lantern Two", "Lantern Three"]
BAR = "document.getElementById('player-audio')"


@pytest.fixture(scope="module")
def album(make_client, tmp_path_factory):
    """An artist with an album of three 2.5-second tracks (the third without artwork)."""
    artist = make_client("playerartist")
    publish_profile(artist, "Lantern Band", roles=["artist"])
    folder = tmp_path_factory.mktemp("player-audio")
    cover = artist.upload_blob(cover_png(5, "Lanterns"), "image/png")
    tracks = []
    for i, title in enumerate(TITLES):
        path = folder / f"{i}.wav"
        path.write_bytes(tune_wav(40 + i, seconds=2.5))
        tracks.append(publish_track(artist, path, title=title, artwork=cover if i < 2 else None))
    ref = publish_album(artist, "Lanterns", tracks, artwork=cover)
    return SimpleNamespace(artist=artist, tracks=tracks, ref=ref,
                           path="/album/" + ref.uri.removeprefix("at://").replace("/fm.openmusic.catalog.album/", "/"))


@pytest.fixture(scope="module")
async def listener(net, make_client, appview, album, browser, tmp_path_factory):  # noqa: F811
    for ref in album.tracks:
        await indexed(appview, ref.uri)

    async def album_indexed():
        got = await appview.http_client.get("/xrpc/fm.openmusic.catalog.getAlbum", params={"uri": album.ref.uri})
        return got.status_code == 200 and len(got.json()["album"]["tracks"]) == 3
    await eventually(album_indexed, timeout=30)
    account = make_client("playerlistener")
    publish_profile(account, "Bar Listener")
    site = SimpleNamespace(url=appview.settings.base_url)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, net, site, account.handle, tmp_path_factory.mktemp("player-sign-in"), "00")
    try:
        yield SimpleNamespace(account=account, context=context, page=page, site=site)
    finally:
        await context.close()


async def until(page, expression: str, timeout: float = 15) -> None:
    """Poll a JavaScript expression in the page until it is true (page.wait_for_function's predicates are
    evaluated with eval, which the pages' CSP refuses)."""
    await eventually(lambda: page.evaluate(expression), timeout=timeout, interval=0.05)


async def now_playing(page) -> str:
    return (await page.text_content("#player-title")).strip()


async def wait_playing(page, title: str, past: float = 0.6) -> None:
    """Until the bar plays `title` and has played at least `past` seconds of it."""
    await until(page, f"document.getElementById('player-title').textContent === {json.dumps(title)}"
                      f" && !{BAR}.paused && {BAR}.currentTime >= {past}")


async def still_playing(page) -> None:
    """The bar's audio element is the one from before, still playing, its currentTime growing."""
    assert await page.evaluate(f"window.omMarker === 42 && window.omAudio === {BAR}")
    before = await page.evaluate(f"{BAR}.currentTime")
    await until(page, f"{BAR}.currentTime > {before} && !{BAR}.paused", timeout=5)


async def test_pages_without_javascript_keep_their_own_players(album, listener, browser):  # noqa: F811
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await page.goto(f"{listener.site.url}{album.path}")
    assert await page.locator("#player").is_hidden()
    assert await page.locator("main audio[data-uri]").count() == 3
    assert await page.locator("main audio[data-uri]").first.is_visible()
    assert await page.locator("[data-play]").first.is_hidden()
    assert await page.locator("[data-play-all]").is_hidden()
    await context.close()


async def test_bar_plays_across_pages_and_writes_one_play_per_listening(net, album, listener, tmp_path):
    page, site, did = listener.page, listener.site, listener.account.did
    uris = [t.uri for t in album.tracks]
    assert await plays_in_repo(net, did) == []

    await page.goto(f"{site.url}{album.path}")
    assert await page.locator("#player").is_hidden()
    assert await page.locator("main audio[data-uri]").first.is_hidden()  # the page's own players give way
    assert await page.get_by_role("button", name="Play all").is_visible()
    await page.evaluate("window.omMarker = 42")

    # Play on the first row: the bar plays it, the album is the queue, the next track is preloaded.
    await page.get_by_role("button", name=f"Play {TITLES[0]}", exact=True).click()
    await page.evaluate(f"window.omAudio = {BAR}")
    await wait_playing(page, TITLES[0], past=0.2)
    assert await page.locator("#player").is_visible()
    assert await page.get_by_role("button", name=f"Pause {TITLES[0]}", exact=True).is_visible()
    queue = await page.evaluate("(async () => (await import('/static/web/bar.js')).player.queue.map((t) => t.title))()")
    assert queue == TITLES
    preloaded = await page.evaluate("(async () => (await import('/static/web/bar.js')).player.preloader.src)()")
    track2 = (await page.locator("[data-play]").nth(1).get_attribute("data-audio"))
    assert preloaded == track2
    meta = await page.evaluate("({ title: navigator.mediaSession.metadata?.title,"
                               " artist: navigator.mediaSession.metadata?.artist,"
                               " state: navigator.mediaSession.playbackState })")
    assert meta == {"title": TITLES[0], "artist": "Lantern Band", "state": "playing"}
    await page.screenshot(path=str(tmp_path / "01-album-playing-1280.png"), full_page=True)

    # A link to the artist's page while it plays: no reload, the same audio goes on.
    await page.locator("main .by a").first.click()
    await page.wait_for_url(f"{site.url}/artist/{album.artist.handle}")
    assert (await page.text_content("main h1")).strip() == "Lantern Band"
    await still_playing(page)
    assert await page.evaluate("document.activeElement === document.querySelector('main h1')")
    assert await page.title() == "Lantern Band · Open Music"
    assert (await page.text_content("#nav-status")).strip() == "Lantern Band · Open Music"
    assert await page.locator("main audio[data-uri]").first.is_hidden()  # the new page is set up too
    await page.screenshot(path=str(tmp_path / "02-artist-while-playing-1280.png"), full_page=True)

    # The end of the first track: the queue moves on by itself (the album's order, not this page's).
    await wait_playing(page, TITLES[1])
    assert await page.evaluate("navigator.mediaSession.metadata.title") == TITLES[1]
    assert await page.evaluate("window.omMarker") == 42

    # The keyboard (focus on the page, not in a text field): N next, P previous.
    await page.keyboard.press("n")
    await wait_playing(page, TITLES[2])
    await page.keyboard.press("p")
    await wait_playing(page, TITLES[1])
    # The bar's buttons.
    await page.get_by_role("button", name="Next track").click()
    await wait_playing(page, TITLES[2])
    await page.get_by_role("button", name="Previous track").click()
    await wait_playing(page, TITLES[1], past=0.3)
    # Space and K pause and play; in the search box they are typed.
    await page.locator("main h1").focus()
    await page.keyboard.press("Space")
    await until(page, f"{BAR}.paused")
    await page.locator("#player").get_by_role("button", name="Play", exact=True).wait_for(timeout=5_000)  # the toggle says so
    await page.keyboard.press("k")
    await until(page, f"!{BAR}.paused")
    await page.locator("#q").focus()
    await page.keyboard.type("k n")
    assert not await page.evaluate(f"{BAR}.paused") and await now_playing(page) == TITLES[1]
    assert await page.input_value("#q") == "k n"
    await page.locator("main h1").focus()

    # The second track to its end, then the third: the end of the queue (repeat is off).
    await wait_playing(page, TITLES[2])
    await until(page, f"{BAR}.ended")
    assert await now_playing(page) == TITLES[2]

    # One play per listening, in order: whole listenings completed, cut ones not, each with segments.
    expected = [(uris[0], True), (uris[1], False), (uris[2], False), (uris[1], False), (uris[2], False),
                (uris[1], True), (uris[2], True)]
    records = await eventually(lambda: plays_in_repo(net, did), timeout=30,
                               until=lambda got: len(got) >= len(expected))
    await page.wait_for_timeout(1000)
    records = sorted(await plays_in_repo(net, did), key=lambda r: r["uri"].rsplit("/", 1)[1])
    got = [(r["value"]["track"]["uri"], r["value"]["completed"]) for r in records]
    assert got == expected, got
    for record in records:
        value = record["value"]
        assert value["segments"] and value["listenedMs"] == sum(s["endMs"] - s["startMs"] for s in value["segments"])
        assert value["client"].startswith("openmusic-web/")
        if value["completed"]:
            assert 2_000 <= value["listenedMs"] <= 2_500, value
        else:
            assert 200 <= value["listenedMs"] < 2_500, value
    paused_one = records[5]["value"]  # paused with Space and played on with K: still one play
    assert paused_one["listenedMs"] >= 2_000
    assert records[0]["value"]["track"]["cid"] == album.tracks[0].cid


async def test_bar_survives_forms_likes_and_the_back_button(net, album, listener, tmp_path):
    page, site = listener.page, listener.site
    # Repeat on: the album loops while we move around.
    await page.goto(f"{site.url}{album.path}")
    await page.evaluate("window.omMarker = 42")
    if await page.get_by_role("button", name="Repeat the queue").get_attribute("aria-pressed") != "true":
        await page.get_by_role("button", name="Repeat the queue").click()
    await page.get_by_role("button", name="Play all").click()
    await page.evaluate(f"window.omAudio = {BAR}")
    await wait_playing(page, TITLES[0], past=0.2)

    # The search form (GET): the results page is swapped in.
    await page.fill("#q", "Lantern")
    await page.press("#q", "Enter")
    await page.wait_for_url(f"{site.url}/search?q=Lantern")
    assert (await page.text_content("main h1")).strip() == "Tracks matching “Lantern”"
    await still_playing(page)
    # Play on a search result row: that list is the queue now, that row plays.
    row = page.get_by_role("button", name=f"Play {TITLES[2]}", exact=True)
    await row.click()
    await wait_playing(page, TITLES[2], past=0.1)

    # The bar's title leads to the track's page; its offline button is set up (offline.js ran again).
    await page.locator("#player-title").click()
    await page.wait_for_url(f"{site.url}{path_of(album.tracks[2].uri)}")
    assert (await page.text_content("main h1")).strip() == TITLES[2]
    await still_playing(page)
    await page.get_by_role("button", name="Save for offline").wait_for(timeout=5_000)
    assert await page.get_by_role("button", name="Pause", exact=True).count() == 2  # the page's and the bar's

    # Like and unlike (POST forms) are sent without a reload.
    await page.get_by_role("button", name="♡ Like").click()
    await page.get_by_role("button", name="♥ Liked").wait_for(timeout=15_000)
    assert (await page.text_content("#likes")).strip() == "1"
    assert await page.evaluate("document.activeElement.getAttribute('aria-pressed')") == "true"
    await still_playing(page)
    await page.get_by_role("button", name="♥ Liked").click()
    await page.get_by_role("button", name="♡ Like").wait_for(timeout=15_000)
    await still_playing(page)

    # Back twice: the search results, then the album; forward again.
    heading = "document.querySelector('main h1').textContent.trim()"
    await page.go_back()
    await page.wait_for_url(f"{site.url}/search?q=Lantern")
    await until(page, f"{heading} === 'Tracks matching “Lantern”'")
    await page.go_back()
    await page.wait_for_url(f"{site.url}{album.path}")
    await until(page, f"{heading} === 'Lanterns'")
    await page.go_forward()
    await page.wait_for_url(f"{site.url}/search?q=Lantern")
    await until(page, f"{heading} === 'Tracks matching “Lantern”'")
    await still_playing(page)

    # The queue list: open it, jump to a track, close it with Escape.
    toggle = page.locator("#player-queue-toggle")
    await toggle.click()
    assert await toggle.get_attribute("aria-expanded") == "true"
    await page.locator("#player-queue").get_by_role("button", name=TITLES[0]).click()
    await wait_playing(page, TITLES[0], past=0.1)
    await page.screenshot(path=str(tmp_path / "03-queue-open-1280.png"))
    await page.keyboard.press("Escape")
    assert await page.locator("#player-queue").is_hidden()
    assert await page.evaluate("document.activeElement.id") == "player-queue-toggle"

    # A narrow screen: the bar fits, nothing scrolls sideways.
    await page.set_viewport_size({"width": 390, "height": 844})
    for name, path in (("album", album.path), ("artist", f"/artist/{album.artist.handle}"),
                       ("track", path_of(album.tracks[0].uri)), ("search", "/search?q=Lantern")):
        await page.goto(f"{site.url}{path}")  # a full load: the bar comes back, paused where it was
        await page.locator("#player").wait_for(state="visible")
        await page.screenshot(path=str(tmp_path / f"04-{name}-390.png"), full_page=True)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} scrolls sideways at 390 px with the bar ({width})"
    await page.locator("#player-queue-toggle").click()
    await page.screenshot(path=str(tmp_path / "05-queue-390.png"))
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.keyboard.press("Escape")
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.emulate_media(color_scheme="dark")
    await page.goto(f"{site.url}{album.path}")
    await page.locator("#player-queue-toggle").click()
    await page.screenshot(path=str(tmp_path / "06-album-dark-1280.png"))
    await page.emulate_media(color_scheme="light")


async def test_an_album_is_liked_and_unliked(net, album, listener):
    """Albums are liked like tracks: a like record whose subject is the album, written once, removed by unlike."""
    page, site = listener.page, listener.site

    async def likes() -> list[dict]:
        async with httpx.AsyncClient(base_url=net.pds_url) as pds:
            return (await pds.get("/xrpc/com.atproto.repo.listRecords", params={
                "repo": listener.account.did, "collection": "fm.openmusic.social.like"})).json()["records"]

    await page.goto(f"{site.url}{album.path}")
    await page.locator("main form.like").get_by_role("button", name="♡ Like").click()
    await page.locator("main form.like").get_by_role("button", name="♥ Liked").wait_for(timeout=15_000)
    mine = [r for r in await likes() if r["value"]["subject"]["uri"] == album.ref.uri]
    assert len(mine) == 1 and mine[0]["value"]["subject"]["cid"] == album.ref.cid
    await page.locator("main form.like").get_by_role("button", name="♥ Liked").click()
    await page.locator("main form.like").get_by_role("button", name="♡ Like").wait_for(timeout=15_000)
    assert not [r for r in await likes() if r["value"]["subject"]["uri"] == album.ref.uri]
