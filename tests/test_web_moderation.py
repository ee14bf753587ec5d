"""Reports and the moderation queue in the web app, for real (``web.moderation``, ``appview.moderation``,
``indexer.labeler_issue``): the AppView runtime with the web app on the reference PDS's firehose, and
Debian's Chromium signed in through the PDS's own OAuth pages.

Proves: a listener reports a track with the Report form (reason and text, CSRF, signed in) and the
page says it was sent; the operator (``operator_dids``) sees the report in /moderation with the
track's title, artist, reason and text, and takes the track down: at once it is gone from
``getTrack`` and from search; the operator brings it back from "Our labels in force" and it
returns; the audit log shows both actions, by the operator, naming the report; our did:web
document publishes the labeler's key and service, ``queryLabels`` answers the label's current state,
and a ``LabelConsumer`` (what another AppView runs) that resolves our DID follows our
``subscribeLabels`` through the whole HTTP stack and verifies both labels; a listener asking for /moderation or posting an
action gets 403 and a forged CSRF token is refused, both changing nothing. Screenshots of the queue
and the track page at 1280 and 390 px go to the test's tmp dir, and neither scrolls sideways at 390 px.

A copyright report taken to a case from the queue answers the audio with 451 while the track and its
page stay (saying why, with no player); the artist is notified, sends the counter-notice form from
the track page, the claimant is notified of it, and the operator's "Restore the audio now" brings it back.
A viewer's content-label preferences at /me (show, warn, hide) change what search and the track page
show for them only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from core.config import Settings
from core.identity import IdentityResolver
from core.publish import publish_track
from devkit.media import cover_png, tune_wav
from firehose.labels import LabelConsumer
from tests.conftest import devnet_settings, eventually, serving
from tests.test_labels import Recorder
from tests.test_web_oauth_browser import browser  # noqa: F401  (a fixture)
from tests.test_web_pages import indexed
from tests.test_web_profile import sign_in

network = pytest.mark.network
TEMPLATES = Path(__file__).resolve().parent.parent / "web" / "templates"


@pytest.fixture(scope="module")
async def moderated(net, tmp_path_factory):
    """A runtime of its own with an operator."""
    async with serving(devnet_settings(net, tmp_path_factory.mktemp("moderation"))) as rt:
        yield rt


async def hidden(rt, uri: str, title: str) -> bool:
    """True when the track is gone from getTrack and from search."""
    got = await rt.http_client.get("/xrpc/fm.openmusic.catalog.getTrack", params={"uri": uri})
    found = await rt.http_client.get("/xrpc/fm.openmusic.catalog.searchTracks", params={"q": title})
    return got.status_code != 200 and uri not in [t["uri"] for t in found.json()["tracks"]]


async def no_sideways_scroll(page, shot: Path) -> None:
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.reload()
    await page.screenshot(path=str(shot), full_page=True)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"{page.url} scrolls sideways at 390 px ({width})"
    await page.set_viewport_size({"width": 1280, "height": 900})


async def report_track(page, site: str, path: str, tmp_path: Path) -> None:
    """The listener reports the track from its page: copyright, with a text."""
    await page.goto(site + path)
    await page.locator("#report summary").click()
    await page.select_option("#report-reason-type", "fm.openmusic.moderation.defs#reasonCopyright")
    await page.fill("#report-reason", "This is my song, uploaded without my permission.")
    await page.screenshot(path=str(tmp_path / "track-report-1280.png"), full_page=True)
    await page.click("#report-send")
    await page.wait_for_url(lambda u: "reported=1" in u)
    assert await page.locator("#report-sent").is_visible()
    await no_sideways_scroll(page, tmp_path / "track-report-390.png")


@network
async def test_report_takedown_and_bring_back_in_chromium(net, make_client, moderated, browser, tmp_path):  # noqa: F811
    rt = moderated
    site = rt.settings.base_url
    artist, listener, operator = make_client("modartist"), make_client("modlistener"), make_client("modops")
    (tmp_path / "a.wav").write_bytes(tune_wav(31, seconds=2.0))
    song = publish_track(artist, tmp_path / "a.wav", title="Borrowed Tune")
    await indexed(rt, song.uri)
    rt.settings.operator_dids = operator.did
    path = "/track/" + song.uri.removeprefix("at://").replace("/fm.openmusic.catalog.track/", "/")

    doc = (await rt.http_client.get("/.well-known/did.json")).json()
    assert {"id": "#atproto_labeler", "type": "AtprotoLabeler", "serviceEndpoint": site} in doc["service"]
    assert any(vm["id"].endswith("#atproto_label") for vm in doc["verificationMethod"])

    site_ref = type("Site", (), {"url": site})
    lctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    lpage = await lctx.new_page()
    octx = await browser.new_context(viewport={"width": 1280, "height": 900})
    opage = await octx.new_page()
    try:
        await sign_in(lpage, net, site_ref, listener.handle, tmp_path, "listener")
        await report_track(lpage, site, path, tmp_path)

        # a listener is not an operator: the queue and its actions are refused, and nothing changes
        assert (await lpage.goto(site + "/moderation")).status == 403
        token = await lpage.evaluate("(document.querySelector('input[name=csrf_token]') || {}).value || ''")
        refused = await lpage.request.post(site + "/moderation/act", form={
            "csrf_token": token, "subject": song.uri, "action": "takedown"}, max_redirects=0)
        assert refused.status == 403
        assert not await hidden(rt, song.uri, "Borrowed Tune")

        await sign_in(opage, net, site_ref, operator.handle, tmp_path, "operator")
        assert (await opage.goto(site + "/moderation")).status == 200
        item = opage.locator(f'#queue .queue-item[data-subject="{song.uri}"]')
        await item.wait_for()
        text = await item.inner_text()
        assert "Borrowed Tune" in text and (artist.handle in text or artist.did in text) and "Copyright" in text
        assert "uploaded without my permission" in text and (listener.handle in text or listener.did in text)
        await opage.screenshot(path=str(tmp_path / "moderation-1280.png"), full_page=True)
        await no_sideways_scroll(opage, tmp_path / "moderation-390.png")

        # a forged CSRF token: refused, the track stays
        forged = await opage.request.post(site + "/moderation/act", form={
            "csrf_token": "forged", "subject": song.uri, "action": "takedown"}, max_redirects=0)
        assert forged.status == 403
        assert not await hidden(rt, song.uri, "Borrowed Tune")
        assert await opage.locator("#audit .audit-row").count() == 0

        await item.locator("button.takedown").click()
        await opage.wait_for_url(lambda u: "done=" in u)
        assert await hidden(rt, song.uri, "Borrowed Tune")  # at once: applied in-process, no round trip
        assert await opage.locator(f'#queue .queue-item[data-subject="{song.uri}"]').count() == 0
        labelled = opage.locator(f'#labelled .queue-item[data-subject="{song.uri}"]')
        assert "Taken down" in await labelled.inner_text()

        await labelled.locator("button.bring-back").click()
        await opage.wait_for_url(lambda u: "done=" in u)
        await eventually(lambda: _not(hidden(rt, song.uri, "Borrowed Tune")))
        rows = opage.locator("#audit .audit-row")
        assert [await r.get_attribute("data-action") for r in await rows.all()] == ["negate", "takedown"]
        takedown_row = await rows.nth(1).inner_text()
        assert (operator.handle in takedown_row or operator.did in takedown_row) and song.uri in takedown_row
        cur = await rt.reader.execute("SELECT id FROM report WHERE subject = ?", (song.uri,))
        report_ids = [str(r[0]) for r in await cur.fetchall()]
        assert len(report_ids) == 1 and report_ids[0] in takedown_row.split()[-1]
        await opage.screenshot(path=str(tmp_path / "moderation-audit-1280.png"), full_page=True)

        # another AppView that configures our DID honours the takedown: it resolves our did:web
        # document, follows our subscribeLabels from 0 and verifies every label with our key
        own = rt.settings.service_did_resolved
        queried = (await rt.http_client.get("/xrpc/com.atproto.label.queryLabels",
                                            params={"uriPatterns": song.uri})).json()["labels"]
        assert [(lb["src"], lb["val"], lb.get("neg", False)) for lb in queried] == [(own, "!takedown", True)]
        async with httpx.AsyncClient() as http:
            sink = Recorder()
            consumer = LabelConsumer(own, IdentityResolver(Settings(allow_private_hosts=True), http), sink,
                                     allow_private=True)
            task = asyncio.create_task(consumer.run())
            try:
                await eventually(lambda: _is(sink.cursor == 2))
                assert [[(lb.uri, lb.val, lb.neg) for lb in labels] for _seq, labels in sink.applied] == [
                    [(song.uri, "!takedown", False)], [(song.uri, "!takedown", True)]]
                assert sink.counts == {}
            finally:
                consumer.stop()
                await task
    finally:
        await lctx.close()
        await octx.close()


async def _is(value: bool) -> bool:
    return value


async def _not(pending) -> bool:
    return not await pending


@network
async def test_copyright_claim_counter_notice_and_restore_in_chromium(net, make_client, moderated, browser, tmp_path):  # noqa: F811
    """A copyright report, taken to a case in the queue: the audio answers 451 and the track page
    says why, keeping the track; the artist answers with the counter-notice form; the claimant is
    notified of it; the operator restores the audio and it plays again."""
    rt = moderated
    site = rt.settings.base_url
    artist, claimant, operator = make_client("cpartist"), make_client("cpclaimant"), make_client("cpops")
    (tmp_path / "c.wav").write_bytes(tune_wav(37, seconds=2.0))
    song = publish_track(artist, tmp_path / "c.wav", title="Contested Song")
    await indexed(rt, song.uri)
    rt.settings.operator_dids = operator.did
    path = "/track/" + song.uri.removeprefix("at://").replace("/fm.openmusic.catalog.track/", "/")
    audio_url = (await rt.http_client.get("/xrpc/fm.openmusic.catalog.getTrack",
                                          params={"uri": song.uri})).json()["track"]["audioUrl"]
    audio_path = audio_url.removeprefix(site)
    assert (await rt.http_client.get(audio_path)).status_code == 200

    site_ref = type("Site", (), {"url": site})
    contexts = [await browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(3)]
    cpage, opage, apage = [await c.new_page() for c in contexts]
    try:
        await sign_in(cpage, net, site_ref, claimant.handle, tmp_path, "claimant")
        await cpage.goto(site + path)
        await cpage.locator("#report summary").click()
        await cpage.select_option("#report-reason-type", "fm.openmusic.moderation.defs#reasonCopyright")
        await cpage.fill("#report-reason", "This is my label's master recording.")
        await cpage.click("#report-send")
        await cpage.wait_for_url(lambda u: "reported=1" in u)

        await sign_in(opage, net, site_ref, operator.handle, tmp_path, "cpoperator")
        await opage.goto(site + "/moderation")
        item = opage.locator(f'#queue .queue-item[data-subject="{song.uri}"]')
        await item.locator("button.copyright-open").click()
        await opage.wait_for_url(lambda u: "done=" in u)
        case = opage.locator("#copyright .copyright-item")
        assert await case.get_attribute("data-status") == "down"
        assert "master recording" in await case.inner_text()
        assert await opage.locator("#audit .audit-row").first.get_attribute("data-action") == "copyright"

        # the audio is refused with 451, the track and its page stay, saying why
        blocked = await rt.http_client.get(audio_path)
        assert blocked.status_code == 451 and blocked.json()["error"] == "AudioTakenDown"
        assert (await rt.http_client.get("/xrpc/fm.openmusic.catalog.getTrack", params={"uri": song.uri})).status_code == 200
        await cpage.goto(site + path)
        assert await cpage.locator("#audio-down").is_visible()
        assert await cpage.locator(".track-page audio").count() == 0 and await cpage.locator(".track-page [data-play]").count() == 0
        assert await cpage.locator("#counter-send").count() == 0  # the claimant cannot answer for the artist

        # the artist is told, sees the case on the track page and sends a counter-notice
        await sign_in(apage, net, site_ref, artist.handle, tmp_path, "cpartist")
        await apage.goto(site + "/notifications")
        assert "taken down after a copyright claim" in await apage.locator(".reason-copyrightClaim").inner_text()
        await apage.locator(".reason-copyrightClaim a.subject").click()
        await apage.locator("#counter-statement").wait_for()
        assert "master recording" in await apage.locator("#copyright").inner_text()
        await apage.screenshot(path=str(tmp_path / "copyright-counter-1280.png"), full_page=True)
        await no_sideways_scroll(apage, tmp_path / "copyright-counter-390.png")
        await apage.fill("#counter-statement", "I composed and recorded this song myself; the claim is a mistake.")
        await apage.check("#counter-sworn")
        await apage.click("#counter-send")
        await apage.wait_for_url(lambda u: "notice=countered" in u)
        assert await apage.locator("#counter-sent").is_visible()
        assert await apage.locator("#counter-send").count() == 0
        assert (await rt.http_client.get(audio_path)).status_code == 451  # still down for 14 days

        # the claimant is told of the counter-notice
        await cpage.goto(site + "/notifications")
        assert "counter-notice" in await cpage.locator(".reason-copyrightCounter").inner_text()

        # the operator sees it and restores the audio now
        await opage.goto(site + "/moderation")
        assert await case.get_attribute("data-status") == "countered"
        assert await case.locator("button.copyright-uphold").count() == 1
        await case.locator("button.copyright-restore").click()
        await opage.wait_for_url(lambda u: "done=" in u)
        assert await opage.locator("#copyright .copyright-item").count() == 0
        assert (await rt.http_client.get(audio_path)).status_code == 200
        await apage.goto(site + path)
        assert await apage.locator(".track-page audio").count() == 1
        assert "restored" in await apage.locator("#case-state").inner_text()
        await opage.screenshot(path=str(tmp_path / "copyright-audit-1280.png"), full_page=True)
    finally:
        for c in contexts:
            await c.close()


@network
async def test_content_label_preferences_in_chromium(net, make_client, moderated, browser, tmp_path):  # noqa: F811
    """A viewer's content-label preferences at /me: by default a nudity-labelled track's artwork
    waits behind a warning; "Hide" leaves it out of search while its own page still warns; "Show"
    shows the artwork with no warning. Each viewer has their own: another viewer still gets warned."""
    from appview.moderation import moderate

    rt = moderated
    site = rt.settings.base_url
    artist, viewer = make_client("lpartist"), make_client("lpviewer")
    (tmp_path / "l.wav").write_bytes(tune_wav(41, seconds=2.0))
    cover = artist.upload_blob(cover_png(3, "Quiltwork"), "image/png")
    song = publish_track(artist, tmp_path / "l.wav", title="Quiltwork Nocturne", artwork=cover)
    await indexed(rt, song.uri)
    await moderate(rt.label_issuer, "did:plc:operator", song.uri, "label", "nudity")
    path = "/track/" + song.uri.removeprefix("at://").replace("/fm.openmusic.catalog.track/", "/")
    site_ref = type("Site", (), {"url": site})
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await ctx.new_page()
    try:
        await sign_in(page, net, site_ref, viewer.handle, tmp_path, "lpviewer")
        await page.goto(site + "/search?q=quiltwork")
        assert await page.locator(".track .warned").count() == 1  # the default: warn
        await page.goto(site + "/me#labels")
        assert await page.locator("#pref-nudity").input_value() == "warn"
        await page.select_option("#pref-nudity", "hide")
        await page.click("#labels-save")
        await page.wait_for_url(lambda u: "labels=1" in u)
        assert await page.locator("#labels-saved").is_visible()
        assert await page.locator("#pref-nudity").input_value() == "hide"
        await page.screenshot(path=str(tmp_path / "label-prefs-1280.png"), full_page=True)
        await no_sideways_scroll(page, tmp_path / "label-prefs-390.png")
        await page.goto(site + "/search?q=quiltwork")
        assert await page.locator(".track").count() == 0
        await page.goto(site + path)  # reached by its link: still there, behind the warning
        assert await page.locator("#content-warning").count() == 1

        await page.goto(site + "/me#labels")
        await page.select_option("#pref-nudity", "show")
        await page.click("#labels-save")
        await page.wait_for_url(lambda u: "labels=1" in u)
        await page.goto(site + path)
        assert await page.locator("#content-warning").count() == 0 and await page.locator("img.cover").count() == 1
        assert await page.locator("#label-notice").count() == 0

        # signed out (the defaults): warned again
        anon = await browser.new_context()
        try:
            apage = await anon.new_page()
            await apage.goto(site + path)
            assert await apage.locator("#content-warning").count() == 1
        finally:
            await anon.close()
    finally:
        await ctx.close()

