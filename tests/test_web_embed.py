"""Sharing and the pages nobody asked for, for real: a track page's OpenGraph and Twitter-card tags
and its oEmbed link; the oEmbed answer; the embeddable player framed by another page in Chromium
(while every other page refuses to be framed); bad oEmbed requests; unknown paths answered with a
page or JSON. Against the runtime on the reference PDS's firehose."""

from __future__ import annotations

import contextlib
import http.server
import re
import threading
from html import unescape

import httpx
import pytest

from tests.conftest import eventually
from tests.test_web_pages import browser, indexed, path_of, published  # noqa: F401  (fixtures)

pytestmark = pytest.mark.network


def meta(html: str, key: str) -> str | None:
    m = re.search(rf'<meta (?:property|name)="{re.escape(key)}" content="([^"]*)"', html)
    return unescape(m.group(1)) if m else None


async def test_track_page_tags_and_oembed(appview, published):  # noqa: F811
    artist, track = published
    await indexed(appview, track.uri)
    http = appview.http_client
    site = appview.settings.base_url
    page = await http.get(path_of(track.uri))
    assert page.status_code == 200
    html = page.text
    assert meta(html, "og:type") == "music.song" and meta(html, "og:title") == '<b>Tide & "Harbor"</b>'
    assert meta(html, "og:url") == f"{site}{path_of(track.uri)}"
    assert meta(html, "twitter:player") == f"{site}/embed{path_of(track.uri)}"
    link = re.search(r'<link rel="alternate" type="application/json\+oembed" href="([^"]+)"', html)
    assert link is not None
    oembed = await http.get(unescape(link.group(1)))
    assert oembed.status_code == 200, oembed.text
    body = oembed.json()
    assert body["type"] == "rich" and body["version"] == "1.0" and body["title"] == '<b>Tide & "Harbor"</b>'
    assert body["author_name"] == "Page Artist" and (body["width"], body["height"]) == (480, 152)
    assert f'src="{site}/embed{path_of(track.uri)}"' in body["html"]
    assert "<b>" not in body["html"]  # the title is escaped inside the iframe's markup

    small = await http.get("/oembed", params={"url": f"{site}{path_of(track.uri)}", "maxwidth": "300"})
    assert small.json()["width"] == 300
    for params, status in (({"url": f"{site}{path_of(track.uri)}", "format": "xml"}, 501),
                           ({"url": f"https://elsewhere.example{path_of(track.uri)}"}, 404),
                           ({"url": f"{site}/search?q=x"}, 404),
                           ({"url": f"{site}{path_of(track.uri)}", "maxwidth": "wide"}, 400),
                           ({"url": f"{site}/track/did:plc:nobody/3zzzzzzzzzzzz"}, 404)):
        resp = await http.get("/oembed", params=params)
        assert resp.status_code == status, (params, resp.text)
        assert resp.json()["error"]


@contextlib.contextmanager
def blog_server(page: str):
    """Serve ``page`` at ``/`` from a thread on a free loopback port; yields its URL."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


async def _url(frame) -> str:
    return frame.url


async def test_embed_is_framed_by_another_site_and_pages_are_not(appview, published, browser, tmp_path):  # noqa: F811
    _artist, track = published
    await indexed(appview, track.uri)
    site = appview.settings.base_url
    embed = await appview.http_client.get(f"/embed{path_of(track.uri)}")
    assert embed.status_code == 200
    assert "frame-ancestors *" in embed.headers["content-security-policy"]
    assert "x-frame-options" not in embed.headers
    page = await appview.http_client.get(path_of(track.uri))
    assert page.headers["x-frame-options"] == "DENY"

    context = await browser.new_context(viewport={"width": 700, "height": 500})
    tab = await context.new_page()
    host = (f'<h1>A blog</h1><iframe id="player" src="{site}/embed{path_of(track.uri)}" width="480" '
            f'height="152"></iframe><iframe id="page" src="{site}{path_of(track.uri)}"></iframe>')
    # another site: a real server on another loopback port (a page Playwright made up counts as public,
    # and Chromium blocks a public page from framing a local one)
    with blog_server(host) as blog:
        await tab.goto(blog)
        frame = tab.frame_locator("#player")
        await frame.locator("audio").wait_for(state="attached", timeout=15_000)
        assert await frame.locator(".title").text_content() == '<b>Tide & "Harbor"</b>'
        await tab.screenshot(path=str(tmp_path / "embed.png"))
        # the full page refused to be framed: Chromium shows its error page in that frame
        framed = await (await tab.query_selector("#page")).content_frame()
        await eventually(lambda: _url(framed), until=lambda url: url.startswith("chrome-error:"), timeout=15)
        assert await tab.frame_locator("#page").locator("audio").count() == 0
    await context.close()


async def test_unknown_paths_get_a_page_or_json(appview):
    http = appview.http_client
    page = await http.get("/no/such/page", headers={"accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "Page not found" in page.text and '<a href="/">' in page.text
    api = await http.get("/no/such/page", headers={"accept": "application/json"})
    assert api.status_code == 404 and api.json()["error"] == "NotFound"
    xrpc = await http.get("/xrpc/", headers={"accept": "text/html"})
    assert xrpc.status_code == 404 and xrpc.json()["error"] == "NotFound"
    async with httpx.AsyncClient(base_url=appview.settings.base_url) as fresh:  # ?lang= sets a cookie: not on the shared client
        spanish = await fresh.get("/nada?lang=es", headers={"accept": "text/html"})
    assert spanish.status_code == 404 and 'lang="es"' in spanish.text and "om_lang=es" in spanish.headers["set-cookie"]
    wrong_method = await http.delete("/health")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "InvalidRequest"


async def test_search_forgives_bad_links(appview, published):  # noqa: F811
    _artist, track = published
    await indexed(appview, track.uri)
    http = appview.http_client
    odd_sort = await http.get("/search", params={"q": "Tide", "sort": "loudest"})
    assert odd_sort.status_code == 200 and "Tide" in odd_sort.text
    assert '<option value="recent" selected>' in odd_sort.text
    stale = await http.get("/search", params={"q": "Tide", "cursor": "not-a-cursor"})
    assert stale.status_code == 200 and "That page link no longer works" in stale.text and "Tide" in stale.text
    none = await http.get("/search", params={"q": "zzzqqqxxx"})
    assert none.status_code == 200 and "No tracks match" in none.text and "No tracks here yet" not in none.text
    fav = await http.get("/favicon.ico")
    assert fav.status_code == 200 and fav.headers["content-type"] == "image/png" and fav.content[:4] == b"\x89PNG"


async def test_pages_are_gzipped_and_blobs_and_the_api_are_not(appview, published):  # noqa: F811
    _artist, track = published
    await indexed(appview, track.uri)
    http = appview.http_client  # httpx asks for gzip and decodes it
    home = await http.get("/")
    assert home.headers.get("content-encoding") == "gzip" and '<main id="main">' in home.text
    css = await http.get("/static/web/web.css")
    assert css.headers.get("content-encoding") == "gzip" and "player" in css.text
    api = await http.get("/xrpc/fm.openmusic.catalog.getTrack", params={"uri": track.uri})
    assert "content-encoding" not in api.headers
    audio_url = api.json()["track"]["audioUrl"].removeprefix(appview.settings.base_url)
    part = await http.get(audio_url, headers={"range": "bytes=0-99"})
    assert part.status_code == 206 and "content-encoding" not in part.headers and len(part.content) == 100


async def test_bad_addresses_and_sign_only_searches(appview, published):  # noqa: F811
    _artist, track = published
    await indexed(appview, track.uri)
    http = appview.http_client
    bad = await http.get("/track/notadid/xyz")
    assert bad.status_code == 404 and "Nothing is published at this address" in bad.text and "format" not in bad.text
    album = await http.get("/album/did:plc:x/%20")
    assert album.status_code == 404
    for q in ("-", "%", "🎵"):
        page = await http.get("/search", params={"q": q})
        assert page.status_code == 200 and "No tracks match" in page.text and track.uri not in page.text
    twin = appview.settings.base_url.replace("://localhost:", "://127.0.0.1:").replace("://127.0.0.1:", "://localhost:")
    got = await http.get("/oembed", params={"url": f"{twin}{path_of(track.uri)}"})
    assert got.status_code == 200 and got.json()["type"] == "rich"


async def test_track_page_names_its_album(appview, make_client, tmp_path):
    from core.publish import publish_album, publish_track
    from devkit.media import tune_wav

    artist = make_client("albumnamer")
    path = tmp_path / "a.wav"
    path.write_bytes(tune_wav(11, seconds=1.0))
    track = publish_track(artist, path, title="Side A")
    album = publish_album(artist, "Night Drive", [track])
    async with httpx.AsyncClient(base_url=artist.pds_url) as pds:
        record = (await pds.get("/xrpc/com.atproto.repo.getRecord", params={
            "repo": artist.did, "collection": "fm.openmusic.catalog.track",
            "rkey": track.uri.rsplit("/", 1)[-1]})).json()["value"]
    record["album"] = {"uri": album.uri, "cid": album.cid}
    artist.put_record("fm.openmusic.catalog.track", track.uri.rsplit("/", 1)[-1], record)

    async def named():
        page = await appview.http_client.get(path_of(track.uri))
        return page.status_code == 200 and ">Night Drive</a>" in page.text
    await eventually(named, timeout=30)
