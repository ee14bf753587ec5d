"""What a new user met on a first visit, in Debian's Chromium against the AppView runtime: the service
worker lets nav.js's failed fetches through while online (on http://localhost, "Sign in" redirects to
127.0.0.1 and lands on the sign-in form, not on the offline page); POST forms offline (Like, Send tip)
say so on the page instead of loading the browser's error page; the wallet takes the test card as
printed, with spaces, says "Enter your card first." without one, and shows its status under the button
pressed (on a phone); no focus ring on a heading focused after a page change; "Sign in to have your
plays counted" once per session, then gone; a "Skip to content" link first. Screenshots go to tmp_path."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from core.publish import publish_album, publish_profile, publish_track
from devkit.media import tune_wav
from tests.conftest import eventually
from tests.test_web_money import CARD
from tests.test_web_oauth_browser import PASSWORD, pds_sign_in, start_sign_in
from tests.test_web_pages import browser, indexed, path_of  # noqa: F401  (browser: a fixture)
from tests.test_web_player import until

pytestmark = pytest.mark.network
OFFLINE_NOTE = "You are offline: nothing was sent. Try again when you are back online."
SIGNIN = "Sign in to have your plays counted."


@pytest.fixture(scope="module")
async def music(make_client, appview, tmp_path_factory):
    """An artist with an album of two 1-second tracks."""
    artist = make_client("newuserartist")
    publish_profile(artist, "First Visit Band", roles=["artist"])
    folder = tmp_path_factory.mktemp("newuser-audio")
    tracks = []
    for i in range(2):
        (folder / f"{i}.wav").write_bytes(tune_wav(60 + i, seconds=1.0))
        tracks.append(publish_track(artist, folder / f"{i}.wav", title=f"First Visit {i}"))
    album = publish_album(artist, "First Visit", tracks)
    for ref in tracks:
        await indexed(appview, ref.uri)

    async def album_indexed():
        got = await appview.http_client.get("/xrpc/fm.openmusic.catalog.getAlbum", params={"uri": album.uri})
        return got.status_code == 200 and len(got.json()["album"]["tracks"]) == 2
    await eventually(album_indexed, timeout=30)
    return SimpleNamespace(artist=artist, tracks=tracks, album=album,
                           album_path="/album/" + album.uri.removeprefix("at://").replace("/fm.openmusic.catalog.album/", "/"))


async def focused(page) -> dict:
    return await page.evaluate("""() => { const e = document.activeElement;
        return { tag: e.tagName, cls: e.className, text: e.textContent.trim(), outline: getComputedStyle(e).outlineStyle,
                 inMain: document.querySelector("main").contains(e) }; }""")


async def test_sign_in_from_localhost_while_online(appview, music, browser, tmp_path):  # noqa: F811
    port = appview.settings.port
    local, loopback = f"http://localhost:{port}", f"http://127.0.0.1:{port}"
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(f"{local}/")
    await until(page, "navigator.serviceWorker.controller !== null")
    # nav.js's fetch of a page that redirects to another origin fails: the worker lets it fail (nav.js
    # then navigates), it does not answer the offline page.
    got = await page.evaluate("""async () => {
        try {
            const r = await fetch("/login", { headers: { Accept: "text/html", "X-OM-Navigation": "1" } });
            return `answered ${r.status} ${(await r.text()).includes("saved-list") ? "offline page" : ""}`;
        } catch (err) {
            return "failed";
        }
    }""")
    assert got == "failed"
    await page.locator("header").get_by_role("link", name="Sign in").click()
    await page.wait_for_url(re.compile(re.escape(f"{loopback}/login") + r"(\?|$)"), timeout=15_000)
    await page.locator("#identifier").wait_for(timeout=10_000)
    assert await page.locator("#saved-list").count() == 0
    await page.screenshot(path=str(tmp_path / "01-sign-in-from-localhost.png"))

    # Offline, a page change still ends on the offline page (the worker answers it).
    await page.goto(f"{local}/")
    await until(page, "navigator.serviceWorker.controller !== null")
    await context.set_offline(True)
    await page.get_by_role("link", name="First Visit 0").first.click()
    await page.locator("#saved-list").wait_for(state="attached", timeout=15_000)
    await context.set_offline(False)
    await context.close()


async def test_skip_link_and_no_ring_on_focused_headings(appview, music, browser, tmp_path):  # noqa: F811
    site = appview.settings.base_url
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(f"{site}{path_of(music.tracks[0].uri)}")

    # The first Tab: "Skip to content", on screen; it leads into <main>.
    await page.keyboard.press("Tab")
    first = await focused(page)
    assert first["cls"] == "skip-link" and first["text"] == "Skip to content", first
    box = await page.locator(".skip-link").bounding_box()
    assert box and box["y"] >= 0 and box["width"] > 20 and box["height"] > 10
    await page.screenshot(path=str(tmp_path / "02-skip-link.png"))
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"#main$"))
    await page.keyboard.press("Tab")
    assert (await focused(page))["inMain"]

    # A page change by keyboard (search, Enter) and by mouse (a link): the heading takes focus, unringed.
    await page.fill("#q", "First Visit")
    await page.press("#q", "Enter")
    await page.wait_for_url(f"{site}/search?q=First+Visit")
    heading = await focused(page)
    assert heading["tag"] == "H1" and heading["outline"] == "none", heading
    await page.screenshot(path=str(tmp_path / "03-heading-after-search.png"))
    await page.get_by_role("link", name="First Visit 1").first.click()
    await page.wait_for_url(f"{site}{path_of(music.tracks[1].uri)}")
    heading = await focused(page)
    assert heading["tag"] == "H1" and heading["outline"] == "none", heading
    # Keyboard focus on a control keeps its ring.
    await page.keyboard.press("Tab")
    control = await focused(page)
    assert control["tag"] in ("A", "BUTTON") and control["outline"] != "none", control
    await context.close()


async def test_sign_in_status_once_per_session_then_gone(appview, music, browser):  # noqa: F811
    site = appview.settings.base_url
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    watch = """() => {
        window.omSignin = 0;
        const status = document.getElementById("player-status");
        new MutationObserver(() => { if (status.textContent === status.dataset.signin) window.omSignin++; })
            .observe(status, { childList: true, characterData: true, subtree: true });
    }"""
    played = ("document.getElementById('player-title').textContent === 'First Visit 1'"
              " && document.getElementById('player-audio').ended")

    await page.goto(f"{site}{music.album_path}")
    await page.evaluate(watch)
    await page.get_by_role("button", name="Play all").click()  # both tracks end: two listenings, signed out
    await until(page, played, timeout=20)
    await page.wait_for_timeout(300)
    assert await page.evaluate("window.omSignin") == 1
    assert (await page.text_content("#player-status")) == SIGNIN
    await until(page, "document.getElementById('player-status').textContent === ''", timeout=15)

    # Later in the same session (a reload): not again.
    await page.reload()
    await page.evaluate(watch)
    await page.get_by_role("button", name="Play all").click()
    await until(page, played, timeout=20)
    await page.wait_for_timeout(300)
    assert await page.evaluate("window.omSignin") == 0
    assert (await page.text_content("#player-status")) == ""
    await context.close()


async def test_wallet_and_forms_for_a_new_listener_on_a_phone(net, make_client, paid_appview, browser,  # noqa: F811
                                                              tmp_path):
    rt = paid_appview
    artist = make_client("newusertipped")
    publish_profile(artist, "Tipped Artist")
    (tmp_path / "tip.wav").write_bytes(tune_wav(5, seconds=1.0))
    track = publish_track(artist, tmp_path / "tip.wav", title="Tip Me")
    await indexed(rt, track.uri)
    listener = make_client("newuserpayer")
    site = SimpleNamespace(url=f"http://127.0.0.1:{rt.settings.port}")
    context = await browser.new_context(viewport={"width": 390, "height": 844})
    page = await context.new_page()
    assert (await start_sign_in(page, site, listener.handle)).status == 303
    await pds_sign_in(page, net, PASSWORD, tmp_path, "04")
    await page.get_by_role("button", name="Authorize").click()
    await page.wait_for_url(lambda u: "/oauth/callback" not in u and u.startswith(site.url), timeout=30_000)

    # No card typed: asked for one, under the button pressed, on screen.
    await page.goto(f"{site.url}/wallet")
    status = page.locator("#wallet-status")

    async def under(button) -> None:
        b, s = await button.bounding_box(), await status.bounding_box()
        assert b and s and 0 <= s["y"] - (b["y"] + b["height"]) < 60, (b, s)
        assert s["y"] + s["height"] <= 844 and s["y"] >= 0, s  # in the viewport

    buy = page.get_by_role("button", name="Buy credit")
    await buy.click()
    await status.filter(has_text="Enter your card first.").wait_for(timeout=5_000)
    assert "Cannot read" not in await status.text_content()
    await under(buy)
    await page.screenshot(path=str(tmp_path / "05-wallet-no-card-390.png"))

    # The test card as printed, typed with its spaces: digits only, then on to the month.
    await page.click('#card input[placeholder="number"]')
    await page.keyboard.type("4242 4242 4242 4242")
    assert await page.input_value('#card input[placeholder="number"]') == "4242424242424242"
    assert await page.input_value('#card input[placeholder="exp_month"]') == ""
    for field, value in CARD.items():
        if field != "number":
            await page.fill(f'#card input[placeholder="{field}"]', value)
    await buy.click()
    await page.wait_for_url(f"{site.url}/wallet?paid=1", timeout=30_000)
    subscribe = page.get_by_role("button", name="Subscribe to Plus")
    await subscribe.click()
    await status.filter(has_text="Enter your card first.").wait_for(timeout=5_000)
    await under(subscribe)

    # Offline, POST forms are not sent: Like and Send tip say so on the page, which stays.
    track_url = f"{site.url}{path_of(track.uri)}"
    await page.goto(track_url)
    title = await page.text_content("main h1")
    await context.set_offline(True)
    like = page.locator("form.like")
    await like.get_by_role("button").click()
    await page.locator("form.like + .om-offline").filter(has_text=OFFLINE_NOTE).wait_for(timeout=5_000)
    await page.get_by_role("button", name="Send tip").click()
    await page.locator("form.tip + .om-offline").filter(has_text=OFFLINE_NOTE).wait_for(timeout=5_000)
    assert page.url == track_url and await page.text_content("main h1") == title
    await page.screenshot(path=str(tmp_path / "06-offline-forms-390.png"), full_page=True)
    await context.set_offline(False)
    await until(page, "document.querySelectorAll('.om-offline').length === 0", timeout=5)

    # Online as far as the browser knows, but the like's request finds no network: the same.
    await page.route("**/like", lambda route: route.abort("internetdisconnected"))
    await like.get_by_role("button").click()
    await page.locator("form.like + .om-offline").filter(has_text=OFFLINE_NOTE).wait_for(timeout=5_000)
    assert page.url == track_url and await page.text_content("main h1") == title
    await page.unroute("**/like")
    await context.close()
