"""Share to Bluesky in the web app (``web.share``).

Units: link facets carry the UTF-8 byte offsets of every URL in a post's text (trailing punctuation
left out); the prefilled text is "title — artist <link>" and fits Bluesky's 300 characters.

End to end (the reference PDS + the AppView runtime with the web app, Debian's Chromium): an artist
publishes a track with artwork; a signed-in listener edits the prefilled text on the track page and
posts; the page confirms with a link to the post on bsky.app; the listener's PDS holds an
``app.bsky.feed.post`` with the text, a link facet on the page URL and an ``app.bsky.embed.external``
card (our page, title, "by artist", the artwork uploaded to the listener's PDS as its thumb); the
AppView indexes it as a share, served by the feed generator's "fresh" feed. The same form sent twice
writes one post. A forged CSRF token, an empty text, a text too long and a subject we do not index
are refused with an error page and write nothing. The album page has the form too; signed out, no
form. Screenshots (1280 and 390 px) go to the test's tmp dir; no page scrolls sideways at 390 px."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from core.publish import publish_album, publish_profile, publish_track
from devkit.media import cover_png, tune_wav
from tests.conftest import eventually
from tests.test_web_oauth_browser import browser  # noqa: F401  (a fixture)
from tests.test_web_profile import indexed, no_sideways_scroll, sign_in
from tests.test_web_social import form_of, pds_records, submit
from web.share import MAX_POST_CHARS, bsky_post_url, link_facets

POST = "app.bsky.feed.post"


def test_link_facets_use_utf8_byte_offsets():
    text = "Écoute « ça » https://music.example/track/did:plc:x/3kabc. Et https://b.example/x)"
    facets = link_facets(text)
    raw = text.encode()
    got = [raw[f["index"]["byteStart"]:f["index"]["byteEnd"]].decode() for f in facets]
    assert got == ["https://music.example/track/did:plc:x/3kabc", "https://b.example/x"]
    assert [f["features"][0]["uri"] for f in facets] == got
    assert link_facets("no links here") == []
    assert bsky_post_url(f"at://did:plc:abc/{POST}/3kabc") == "https://bsky.app/profile/did:plc:abc/post/3kabc"


@pytest.fixture(scope="module")
def shared_song(make_client, tmp_path_factory):
    """An artist with a profile, one track with artwork and an album of it."""
    artist = make_client("shareartist")
    publish_profile(artist, "Share Artist", roles=["artist"])
    path = tmp_path_factory.mktemp("audio") / "song.wav"
    path.write_bytes(tune_wav(11, seconds=3.0))
    art = artist.upload_blob(cover_png(3, "Card"), "image/png")
    ref = publish_track(artist, path, title="Card Song", artwork=art, extra={"genre": "Ambient"})
    album = publish_album(artist, "Card Album", [ref])
    return artist, ref, album, art


@pytest.mark.network
async def test_share_to_bluesky_in_chromium(net, make_client, appview, shared_song, browser, tmp_path):  # noqa: F811
    artist, ref, album, art = shared_song
    await indexed(appview, "fm.openmusic.catalog.getTrack", "track", uri=ref.uri)
    await indexed(appview, "fm.openmusic.catalog.getAlbum", "album", uri=album.uri)
    fan = make_client("sharefan")
    publish_profile(fan, "Share Fan", roles=["listener"])
    site = type("Site", (), {"url": appview.settings.base_url})
    shots = tmp_path
    track_path = f"/track/{artist.did}/{ref.uri.rsplit('/', 1)[1]}"
    album_path = f"/album/{artist.did}/{album.uri.rsplit('/', 1)[1]}"
    page_url = site.url + track_path

    # Signed out: no form.
    anon = await browser.new_context(viewport={"width": 1280, "height": 900})
    other = await anon.new_page()
    await other.goto(page_url)
    assert await other.locator("form.bsky-share-form").count() == 0
    await anon.close()

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, net, site, fan.handle, shots, "00")
    await page.goto(page_url)
    text_box = page.locator("#bsky-text")
    assert await text_box.input_value() == f"Card Song — Share Artist {page_url}"
    await page.screenshot(path=str(shots / "01-track-share-form-1280.png"), full_page=True)
    mine = f"This one is lovely ♪ {page_url}"
    await text_box.fill(mine)
    await submit(page, page.get_by_role("button", name="Post to Bluesky"))
    posted = page.locator("#bsky-posted")
    assert "Posted to Bluesky" in await posted.text_content()
    posts = pds_records(net, fan.did, POST)
    assert len(posts) == 1
    post = posts[0]
    link = await posted.locator("a").get_attribute("href")
    assert link == bsky_post_url(post["uri"])
    await page.screenshot(path=str(shots / "02-track-shared-1280.png"), full_page=True)

    value = post["value"]
    assert value["text"] == mine
    start = len(mine.encode()) - len(page_url.encode())
    assert value["facets"] == [{"index": {"byteStart": start, "byteEnd": len(mine.encode())},
                                "features": [{"$type": "app.bsky.richtext.facet#link", "uri": page_url}]}]
    external = value["embed"]["external"]
    assert value["embed"]["$type"] == "app.bsky.embed.external"
    assert (external["uri"], external["title"], external["description"]) == (
        page_url, "Card Song", "by Share Artist · Open Music")
    thumb = external["thumb"]
    assert thumb["mimeType"] == "image/png" and thumb["ref"]["$link"] == art["ref"]["$link"]
    blob = httpx.get(f"{net.pds_url}/xrpc/com.atproto.sync.getBlob",
                     params={"did": fan.did, "cid": thumb["ref"]["$link"]}, timeout=30)
    assert blob.status_code == 200 and blob.content == cover_png(3, "Card")  # in the fan's own PDS

    # The AppView indexes it as a share: the feed generator serves it.
    described = (await appview.http_client.get("/xrpc/app.bsky.feed.describeFeedGenerator")).json()
    fresh = next(f["uri"] for f in described["feeds"] if f["uri"].endswith("/fresh"))

    async def fresh_posts():
        resp = await appview.http_client.get("/xrpc/app.bsky.feed.getFeedSkeleton", params={"feed": fresh})
        return [i["post"] for i in resp.json()["feed"]]
    await eventually(fresh_posts, timeout=30, until=lambda got: post["uri"] in got)

    # The same form sent twice writes one post.
    fields = await form_of(page, "form.bsky-share-form")
    answers = await asyncio.gather(*(context.request.post(f"{site.url}/share/bluesky", form=fields)
                                     for _ in range(2)))
    assert [a.status for a in answers] == [200, 200], [await a.text() for a in answers]
    assert len(pds_records(net, fan.did, POST)) == 2

    # Refused, nothing written.
    good = await form_of(page, "form.bsky-share-form")
    missing = f"at://{artist.did}/fm.openmusic.catalog.track/3zzzzzzzzzzzz"
    for change, status, words in (({"csrf_token": "forged"}, 403, "Form expired"),
                                  ({"text": "   "}, 400, "Write something"),
                                  ({"text": "x" * (MAX_POST_CHARS + 1)}, 400, "at most 300"),
                                  ({"uri": missing}, 404, "Not found"),
                                  ({"uri": f"at://{artist.did}/fm.openmusic.social.like/3kabc"}, 400, "Only tracks")):
        resp = await context.request.post(f"{site.url}/share/bluesky", form={**good, **change})
        assert resp.status == status, (change, resp.status)
        assert words in await resp.text(), change
    await asyncio.sleep(1)  # anything written would have reached the PDS by now
    assert len(pds_records(net, fan.did, POST)) == 2

    # The album page has the form, prefilled with the album.
    await page.goto(site.url + album_path)
    assert await page.locator("#bsky-text").input_value() == f"Card Album — Share Artist {site.url}{album_path}"
    await page.screenshot(path=str(shots / "03-album-share-form-1280.png"), full_page=True)

    await no_sideways_scroll(page, site, shots, [("04-track", track_path), ("05-album", album_path),
                                                 ("06-track-shared", f"{track_path}?shared=3kabcabcabcab")])
    await context.close()
