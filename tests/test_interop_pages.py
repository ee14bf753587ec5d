"""plyr.fm tracks and teal.fm plays where people meet them.

End to end (the reference PDS, the AppView runtime with the web app, Debian's Chromium): a plyr.fm
track whose audio is a blob in its creator's PDS has a track page saying "from plyr.fm" (no sideways
scroll at 390 px) where a listener plays it, likes it (both counted by getTrackStats) and tips it
(the tip indexed against the plyr track); a teal play the listener wrote shows on their listener page
"via teal.fm" beside our play.

Units (the SQLite index fed with decoded events): a teal play indexed before our track links to it
when the track arrives (``tealPlays`` 1), and our play of a plyr track counts like any play."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from appview import queries
from core.publish import publish_profile
from devkit.media import tune_wav
from tests.conftest import eventually
from tests.records import DID, LISTENER, play, track
from tests.records_interop import PLYR, TEAL, plyr_scrobble, plyr_track
from tests.test_indexer_units import commit, create, env, rkey  # noqa: F401  (env: a fixture)
from tests.test_interop_e2e import ok, send_play, write
from tests.test_web_offline import sign_in
from tests.test_web_pages import browser  # noqa: F401


@pytest.mark.network
async def test_plyr_track_page_play_like_tip(net, make_client, appview, browser, tmp_path):  # noqa: F811
    artist = make_client("plyrpage")
    listener = make_client("plyrfan")
    publish_profile(listener, "Plyr Fan")
    blob = artist.upload_blob(tune_wav(44, seconds=2), "audio/wav")
    good = write(artist, PLYR, {"title": "Boardwalk Hum", "artist": "Ada Boardwalk", "fileType": "wav",
                                "duration": 2, "audioBlob": blob, "createdAt": "2026-11-01T10:00:00Z"})
    await eventually(lambda: ok(appview, "fm.openmusic.catalog.getTrack", uri=good["uri"]), timeout=30)
    did, rkey = good["uri"].removeprefix("at://").split(f"/{PLYR}/")
    site = SimpleNamespace(url=appview.settings.base_url)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    try:
        await sign_in(page, net, site, listener.handle, tmp_path, "00")
        resp = await page.goto(f"{site.url}/track/{did}/{rkey}")
        assert resp.status == 200
        assert "from plyr.fm" in await page.text_content("main")
        await page.screenshot(path=str(tmp_path / "plyr-track-1280.png"), full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})
        assert await page.evaluate("document.documentElement.scrollWidth <= 390")
        await page.screenshot(path=str(tmp_path / "plyr-track-390.png"), full_page=True)
        await page.set_viewport_size({"width": 1280, "height": 900})
        sent = await send_play(page, good["uri"], good["cid"], 2000)
        assert sent["status"] == 200, sent
        await page.locator("form.like button").click()
        await page.wait_for_load_state()
        stats = await eventually(lambda: ok(appview, "fm.openmusic.listen.getTrackStats", uri=good["uri"]),
                                 until=lambda s: s["plays"] == 1 and s["likes"] == 1, timeout=30)
        assert stats["plays"] == 1
        tip = listener.create_record("fm.openmusic.payment.tip", {
            "subject": artist.did, "track": {"uri": good["uri"], "cid": good["cid"]}, "amount": 100,
            "currency": "USD", "createdAt": "2026-11-01T12:00:00Z"})

        async def tipped():
            cur = await appview.reader.execute("SELECT track_uri FROM tip WHERE uri = ?", (tip.uri,))
            return await cur.fetchone()
        assert tuple(await eventually(tipped, timeout=30)) == (good["uri"],)
        write(listener, TEAL, {"trackName": "Far Away Song", "artists": [{"artistName": "Someone Else"}],
                               "playedTime": "2026-11-01T09:00:00Z"})
        await eventually(lambda: ok(appview, "fm.openmusic.listen.getPlays", actor=listener.did),
                         until=lambda g: len(g["plays"]) >= 2, timeout=30)
        await page.goto(f"{site.url}/listener/{listener.handle}")
        text = await page.text_content("#plays")
        assert "Far Away Song" in text and "via teal.fm" in text and "Boardwalk Hum" in text
        await page.screenshot(path=str(tmp_path / "listener-teal-1280.png"), full_page=True)
    finally:
        await context.close()




async def test_our_track_links_teal_plays_that_came_first_and_plyr_plays_count(env):  # noqa: F811
    ix, views, path = env
    t_uri = f"at://{DID}/fm.openmusic.catalog.track/{rkey(1)}"
    p_uri = f"at://{DID}/{PLYR}/{rkey(9)}"
    handle = "abcdefgh.test"
    await ix.apply([commit(1, LISTENER, 1, create(TEAL, rkey(2), plyr_scrobble("Neon Harbor", handle)))], 1)
    await ix.apply([commit(2, DID, 1, create("fm.openmusic.catalog.track", rkey(1), track("Neon Harbor")))], 2)
    assert (await queries.get_track_stats(views, {"uri": t_uri}))["tealPlays"] == 1
    await ix.apply([commit(3, DID, 2, create(PLYR, rkey(9), plyr_track()))], 3)
    await ix.apply([commit(4, LISTENER, 2, create("fm.openmusic.listen.play", rkey(3), play(p_uri, "bafyreia", 3000)))], 4)
    assert not ix.rejections
    stats = await queries.get_track_stats(views, {"uri": p_uri})
    assert stats["plays"] == 1 and (await queries.get_track(views, {"uri": p_uri}))["track"]["origin"] == PLYR
