"""The lexicon reference in the web app (``web.lexicons``): generated from the lexicon JSON, a record
shows its key and fields with types, constraints, required and nullable marks, knownValues and
descriptions; a query its parameters, output and errors; a procedure its input; local refs (``#x``)
link within the page, refs to our other lexicons link to their page and anchor, refs to lexicons that
are not ours (``com.atproto.*``) are named without a link; unions list their members. ``/lexicons``
lists every NSID of ``lexicons/fm/openmusic`` by namespace; an unknown NSID is a 404 page. In
Debian's Chromium the pages load with no console error (the CSP forbids inline styles and scripts),
a ref is followed by a click, and at 390 px nothing scrolls sideways (screenshots at 1280 and
390 px in the test's tmp dir)."""

from __future__ import annotations

import asyncio
import re
from html import unescape

import httpx
import pytest
from starlette.applications import Starlette

from core.lexicon_publish import OUR_LEXICONS
from core.lexicons import load_documents
from tests.conftest import free_port
from tests.test_web_pages import browser  # noqa: F401  (a fixture)
from tests.test_web_units import fake_settings
from web import WebSettings
from web.app import WebApp, create_web_app, middleware
from web.lexicons import Reference, routes
from web.sealing import new_key_text

RECORD = {"lexicon": 1, "id": "com.example.music.song", "defs": {
    "main": {"type": "record", "key": "tid", "description": "A song.", "record": {
        "type": "object", "required": ["title", "parts"], "nullable": ["mood"], "properties": {
            "title": {"type": "string", "maxLength": 300, "maxGraphemes": 100, "description": "The title."},
            "mood": {"type": "string", "knownValues": ["calm", "com.example.music.defs#loud"]},
            "parts": {"type": "array", "maxLength": 10, "items": {"type": "ref", "ref": "#part"}},
            "embed": {"type": "union", "refs": ["com.example.music.defs#video", "com.atproto.repo.strongRef"]},
            "cover": {"type": "blob", "accept": ["image/png"], "maxSize": 1000000},
        }}},
    "part": {"type": "object", "required": ["startMs"], "properties": {"startMs": {"type": "integer", "minimum": 0}}},
}}
DEFS = {"lexicon": 1, "id": "com.example.music.defs", "defs": {
    "video": {"type": "object", "properties": {"url": {"type": "string", "format": "uri"}}},
    "loud": {"type": "token", "description": "Played loud."}}}
QUERY = {"lexicon": 1, "id": "com.example.music.getSong", "defs": {"main": {
    "type": "query", "description": "One song.",
    "parameters": {"type": "params", "required": ["uri"], "properties": {
        "uri": {"type": "string", "format": "at-uri"}, "limit": {"type": "integer", "minimum": 1, "default": 50}}},
    "output": {"encoding": "application/json", "schema": {"type": "object", "required": ["song"], "properties": {
        "song": {"type": "ref", "ref": "com.example.music.song"}}}},
    "errors": [{"name": "NotFound", "description": "No such song."}]}}}
PROCEDURE = {"lexicon": 1, "id": "com.example.music.vote", "defs": {"main": {
    "type": "procedure", "input": {"encoding": "application/json", "schema": {"type": "object", "properties": {
        "direction": {"type": "string", "enum": ["up", "down"]}}}},
    "errors": [{"name": "AuthRequired"}]}}}


def test_reference_of_a_record_query_and_procedure():
    ref = Reference([RECORD, DEFS, QUERY, PROCEDURE])
    song = ref.view("com.example.music.song")
    assert song is not None and song.kind == "record" and song.description == "A song."
    assert [d.name for d in song.defs] == ["main", "part"]
    main = song.defs[0]
    assert main.key == "tid"
    fields = {f.name: f for f in main.fields}
    assert list(fields) == ["title", "mood", "parts", "embed", "cover"]
    assert fields["title"].required and not fields["mood"].required and fields["mood"].nullable
    assert fields["title"].type.constraints == [("maxLength", "300"), ("maxGraphemes", "100")]
    assert fields["mood"].type.known == ["calm", "com.example.music.defs#loud"]
    parts = fields["parts"].type
    assert parts.kind == "array" and parts.constraints == [("maxItems", "10")]
    assert (parts.items.refs[0].text, parts.items.refs[0].href) == ("com.example.music.song#part", "#part")
    embed = fields["embed"].type
    assert [(r.text, r.href) for r in embed.refs] == [
        ("com.example.music.defs#video", "/lexicons/com.example.music.defs#video"),
        ("com.atproto.repo.strongRef", None)]
    assert fields["cover"].type.constraints == [("accept", '["image/png"]'), ("maxSize", "1000000")]

    get = ref.view("com.example.music.getSong").defs[0]
    assert get.kind == "query" and [(p.name, p.required) for p in get.parameters] == [("uri", True), ("limit", False)]
    assert ("default", "50") in get.parameters[1].type.constraints
    assert get.output.encoding == "application/json"
    assert get.output.schema.fields[0].type.refs[0].href == "/lexicons/com.example.music.song"
    assert get.errors == [("NotFound", "No such song.")]

    vote = ref.view("com.example.music.vote").defs[0]
    assert vote.kind == "procedure" and vote.output is None
    assert vote.input.schema.fields[0].type.constraints == [("enum", '["up", "down"]')]
    assert ref.view("com.example.music.defs").kind == "defs" and ref.view("nope.nope.nope") is None
    assert [ns for ns, _ in ref.index()] == ["com.example.music"]


def test_odd_documents_do_not_crash_the_reference():
    ref = Reference([{"lexicon": 1, "id": "a.b.c", "defs": {"main": "not an object", "x": {"type": "object",
                                                                                      "properties": []}}},
                     {"id": 5}, "junk"])  # type: ignore[list-item]
    view = ref.view("a.b.c")
    assert [d.kind for d in view.defs] == ["unknown", "object"] and view.defs[1].fields == []


@pytest.fixture
async def site(tmp_path):
    web = WebApp(fake_settings(tmp_path), WebSettings(session_key=new_key_text()),
                 transport=httpx.MockTransport(lambda r: httpx.Response(404)))
    await web.start()
    app = Starlette(routes=routes(web), middleware=middleware(web))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1:8123") as http:
        yield http
    await web.stop()


def text_of(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


async def test_pages_list_and_render_our_lexicons(site):
    ours = load_documents(OUR_LEXICONS)
    index = await site.get("/lexicons")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert 'href="/static/web/lexicons.css"' in index.text
    for doc in ours:
        assert f'href="/lexicons/{doc["id"]}"' in index.text
    assert 'id="ns-fm.openmusic.catalog"' in index.text and "fm.plyr" not in index.text
    assert "One listen of a track" in index.text  # the main def's description

    play = await site.get("/lexicons/fm.openmusic.listen.play")
    assert play.status_code == 200
    assert 'id="segment"' in play.text and '<a href="#segment"><code>fm.openmusic.listen.play#segment</code></a>' in play.text
    listened = re.search(r'data-field="listenedMs">(.*?)</div>', play.text, re.S).group(1)
    assert "required" in text_of(listened) and "maximum 86400000" in text_of(listened)
    assert "Milliseconds of audio actually heard." in listened
    assert "<code>com.atproto.repo.strongRef</code>" in play.text and 'href="/lexicons/com.atproto' not in play.text
    assert "Record key: tid" in text_of(play.text)

    vote = await site.get("/lexicons/fm.openmusic.social.vote")
    assert "Known values: up , down" in text_of(vote.text)

    track = await site.get("/lexicons/fm.openmusic.catalog.getTrack")
    assert "GET /xrpc/fm.openmusic.catalog.getTrack" in text_of(track.text)
    assert '<a href="/lexicons/fm.openmusic.catalog.defs#trackView">' in track.text
    assert "NotFound" in track.text and "No such track is indexed" in track.text

    seen = await site.get("/lexicons/fm.openmusic.notification.updateSeen")
    assert "POST /xrpc/fm.openmusic.notification.updateSeen" in text_of(seen.text)
    assert "Input" in seen.text and 'data-field="seenAt"' in seen.text

    defs = await site.get("/lexicons/fm.openmusic.catalog.defs")
    assert 'id="trackView"' in defs.text

    missing = await site.get("/lexicons/fm.openmusic.nothing.here")
    assert missing.status_code == 404 and "No such lexicon" in missing.text
    assert (await site.get("/lexicons/%3Cscript%3E")).status_code == 404


async def test_browser_pages_follow_refs_and_fit_a_phone(browser, tmp_path):  # noqa: F811
    settings = fake_settings(tmp_path, port=free_port())
    app = create_web_app(settings, WebSettings(session_key=new_key_text()),
                         transport=httpx.MockTransport(lambda r: httpx.Response(404)))
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        base = f"http://127.0.0.1:{settings.port}"
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.goto(f"{base}/lexicons")
        await page.screenshot(path=str(tmp_path / "lexicons-1280.png"), full_page=True)
        await page.click('a[href="/lexicons/fm.openmusic.catalog.getTrack"]')
        await page.wait_for_url(f"{base}/lexicons/fm.openmusic.catalog.getTrack")
        await page.click('a[href="/lexicons/fm.openmusic.catalog.defs#trackView"]')
        await page.wait_for_url(f"{base}/lexicons/fm.openmusic.catalog.defs#trackView")
        assert await page.locator("#trackView").is_visible()
        await page.goto(f"{base}/lexicons/fm.openmusic.catalog.track")
        border = await page.eval_on_selector(".lex-field", "e => getComputedStyle(e).borderLeftStyle")
        assert border == "solid"  # the stylesheet applied (no inline styles)
        await page.screenshot(path=str(tmp_path / "track-1280.png"), full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})
        for path in ("/lexicons", "/lexicons/fm.openmusic.catalog.track", "/lexicons/fm.openmusic.payment.defs",
                     "/lexicons/fm.openmusic.authFull", "/lexicons/fm.openmusic.notification.updateSeen"):
            await page.goto(base + path)
            await page.click("details.lex-json summary") if path != "/lexicons" else None
            await page.screenshot(path=str(tmp_path / f"{path.strip('/').replace('/', '_')}-390.png"), full_page=True)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{path} scrolls sideways at 390 px ({width} px)"
        assert errors == []
        print(f"screenshots in {tmp_path}")
        await context.close()
    finally:
        server.should_exit = True
        await task
