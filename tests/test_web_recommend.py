"""Recommendations in the web app (``web.recommend``), end to end: the reference PDS, the AppView
runtime with the web app (its firehose indexes every record below), Debian's Chromium.

An artist publishes four 3-second tracks of the genre "Recwave": Drift, Ember, Fathom, Glacier.
Two listeners stream (plays written in their own repos, as a player does): L1 Drift and Ember; L2
Drift, Ember and Fathom. Drift's listeners {L1, L2}, Ember's {L1, L2}, Fathom's {L2}: cosine
Drift~Ember = 1, Drift~Fathom = 1 / sqrt(2) (0.707). A fan streams Drift.

- The track page of Drift shows "More like this": Ember, then Fathom (co-listening), then Glacier
  (nobody streamed it: same genre), each with a play button, under the reviews.
- The signed-in fan's home page shows "For you" before the newest tracks: Ember then Fathom first
  (what Drift's listeners also streamed), never Drift (already streamed).
- Signed out, the home page has no "For you".
Screenshots (1280 and 390 px) go to the test's tmp dir; neither page scrolls sideways at 390 px."""

from __future__ import annotations

import httpx
import pytest

from appview import recommend
from core.publish import publish_profile, publish_track, record_play
from devkit.media import tune_wav
from tests.conftest import eventually
from tests.test_web_oauth_browser import browser  # noqa: F401  (a fixture)
from tests.test_web_profile import indexed, no_sideways_scroll, sign_in

pytestmark = pytest.mark.network
TITLES = ("Drift", "Ember", "Fathom", "Glacier")


async def suggested(appview, did: str) -> list[str]:
    """getSuggestions' track titles for ``did`` over HTTP, on a model built afresh."""
    recommend.clear_models()
    resp = await appview.http_client.get("/xrpc/fm.openmusic.feed.getSuggestions", params={"actor": did})
    return [t["title"] for t in resp.json().get("tracks", [])] if resp.status_code == 200 else []


async def both(appview, did: str, uri: str) -> tuple[list[str], list[str]]:
    """(getSuggestions' titles for ``did``, getSimilarTracks' titles for ``uri``) from one model."""
    titles = await suggested(appview, did)
    resp = await appview.http_client.get("/xrpc/fm.openmusic.feed.getSimilarTracks", params={"uri": uri})
    return titles, [t["title"] for t in resp.json().get("tracks", [])] if resp.status_code == 200 else []


async def test_more_like_this_and_for_you_in_chromium(net, make_client, appview, browser, tmp_path):  # noqa: F811
    artist = make_client("recsartist")
    publish_profile(artist, "Recs Artist", roles=["artist"])
    refs = {}
    for i, title in enumerate(TITLES):
        path = tmp_path / f"{i}.wav"
        path.write_bytes(tune_wav(50 + i, seconds=3.0))
        refs[title] = publish_track(artist, path, title=title, extra={"genre": "Recwave", "moods": ["hazy"]})
    for ref in refs.values():
        await indexed(appview, "fm.openmusic.catalog.getTrack", "track", uri=ref.uri)
    fan = make_client("recsfan")
    publish_profile(fan, "Recs Fan", roles=["listener"])
    for who, titles in ((make_client("recsl1"), ("Drift", "Ember")), (make_client("recsl2"), ("Drift", "Ember", "Fathom")),
                        (fan, ("Drift",))):
        for title in titles:
            record_play(who, refs[title], 3000, completed=True)  # the whole track: a stream
    await eventually(lambda: suggested(appview, fan.did), timeout=30, until=lambda got: got[:2] == ["Ember", "Fathom"])
    # and "More like this" from the same fresh model (a build started before the last plays were
    # indexed may land later: wait until the model answers both)
    await eventually(lambda: both(appview, fan.did, refs["Drift"].uri), timeout=30,
                     until=lambda got: got[0][:2] == ["Ember", "Fathom"] and got[1][:1] == ["Ember"])

    site = type("Site", (), {"url": appview.settings.base_url})
    async with httpx.AsyncClient(base_url=site.url) as http:
        home = await http.get("/")
        assert home.status_code == 200 and 'id="home-foryou"' not in home.text  # signed out: no For you

    shots = tmp_path
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, net, site, fan.handle, shots, "00")

    # The track page: More like this, after the reviews, with play buttons.
    track_path = f"/track/{artist.did}/{refs['Drift'].uri.rsplit('/', 1)[1]}"
    await page.goto(f"{site.url}{track_path}")
    related = page.locator("#related")
    assert await related.is_visible()
    assert (await page.text_content("#related-heading")).strip() == "More like this"
    assert "also streamed" in await related.locator(".hint").text_content()
    titles = [t.strip() for t in await related.locator("a.title").all_text_contents()]
    assert titles[:3] == ["Ember", "Fathom", "Glacier"] and "Drift" not in titles
    assert await related.locator("[data-play]").count() == len(titles)
    assert await page.evaluate("document.querySelector('#reviews').compareDocumentPosition("
                               "document.querySelector('#related')) & Node.DOCUMENT_POSITION_FOLLOWING")
    await page.screenshot(path=str(shots / "01-track-related-1280.png"), full_page=True)

    # The home page: For you, before the newest tracks.
    await page.goto(site.url + "/")
    foryou = page.locator("#home-foryou")
    assert await foryou.is_visible()
    assert (await page.text_content("#home-foryou-heading")).strip() == "For you"
    titles = [t.strip() for t in await foryou.locator("a.title").all_text_contents()]
    assert titles[:2] == ["Ember", "Fathom"] and "Drift" not in titles
    assert await page.evaluate("document.querySelector('#home-foryou').compareDocumentPosition("
                               "document.querySelector('main ol.tracks:not(#home-foryou ol)')) "
                               "& Node.DOCUMENT_POSITION_FOLLOWING")
    await page.screenshot(path=str(shots / "02-home-foryou-1280.png"), full_page=True)
    await no_sideways_scroll(page, site, shots, [("01-track-related", track_path), ("02-home-foryou", "/")])
    await context.close()
