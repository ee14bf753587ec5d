"""Notifications in the web app (``web.notifications``): the header's link with the unread count,
the ``/notifications`` page, and the home page's "New from artists you follow".

Units (templates only): the header shows nothing signed out, the link alone when no count was
provided (pages not rendered through ``Pages.page``), "30+" when the count is capped; the page says
who tipped how much for which track (names and messages escaped), links an album release to its
page and the author to theirs, marks only unread ones New, and links the next page.

End to end (the reference PDS + the AppView runtime with the web app, Debian's Chromium): a listener
follows an artist (a record in the listener's PDS), the artist then publishes a track, and another
account follows the listener. Signed in, the listener sees "Notifications 2" in the header and the
track under "New from artists you follow" on the home page; the notifications page lists the
follower ("followed you") and the release ("released ...", linking to the track page), both marked
New, and opening it marks them read: the header's count is gone on that page and on the next, and
a reload shows nothing New. Signed out, the header has no link and ``/notifications`` goes to the
sign-in page and back. Screenshots (1280 and 390 px) go to the test's tmp dir; no page scrolls
sideways at 390 px."""

from __future__ import annotations

import time

import pytest

from appview.views import ViewContext
from core import db
from core.config import Settings
from core.lexicons import FOLLOW
from core.publish import publish_profile, publish_track
from devkit.media import tune_wav
from tests.conftest import eventually
from tests.test_web_oauth_browser import browser  # noqa: F401  (a fixture)
from tests.test_web_profile import indexed, no_sideways_scroll, sign_in
from web.app import WebApp, routes
from web.i18n import current_locale


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def test_header_link_and_count(tmp_path):
    web = WebApp(Settings(db_path=str(tmp_path / "t.sqlite")))
    token = current_locale.set("en")
    try:
        nav = web.templates.environment().get_template("_nav_notifications.html")
        user = {"did": "did:plc:" + "a" * 24, "handle": "me.test"}
        assert nav.render(user=None).strip() == ""
        assert nav.render().strip() == ""  # no user in the context at all
        plain = nav.render(user=user)
        assert 'href="/notifications"' in plain and "unread-count" not in plain  # no count provided
        assert "unread-count" not in nav.render(user=user, notifications_unread={"count": 0})
        assert '<span class="unread-count" id="unread-count">7</span>' in nav.render(
            user=user, notifications_unread={"count": 7})
        assert '<span class="unread-count" id="unread-count">30+</span>' in nav.render(
            user=user, notifications_unread={"count": 30, "capped": True})
        home = web.templates.environment().get_template("_home_following.html")
        assert home.render(user=user, following_tracks=[]).strip() == ""
        assert home.render(user=None, following_tracks=[{"x": 1}]).strip() == ""
    finally:
        current_locale.reset(token)


def test_the_page_says_who_what_and_when(tmp_path):
    path = str(tmp_path / "t.sqlite")
    db.migrate(path)
    web = WebApp(Settings(db_path=path), views=ViewContext(None, None, "http://x"))  # type: ignore[arg-type]
    routes(web)  # every room's filters (money, when, actor_path, track_path, ...)
    fan, artist = "did:plc:" + "f" * 24, "did:plc:" + "b" * 24
    notes = [{"uri": f"at://{fan}/fm.openmusic.payment.tip/3kz2222222222", "cid": "bafyreia",
              "author": {"did": fan, "handle": "fan.test", "displayName": "Fan <b>"}, "reason": "tip",
              "reasonSubject": f"at://{artist}/fm.openmusic.catalog.track/3kz2222222223",
              "record": {"amount": 350, "currency": "USD", "message": "<i>thanks</i>"},
              "indexedAt": "2026-01-02T10:00:00.000Z", "isRead": False,
              "track": {"uri": f"at://{artist}/fm.openmusic.catalog.track/3kz2222222223", "title": "Song"}},
             {"uri": f"at://{artist}/fm.openmusic.catalog.album/3kz2222222224", "cid": "bafyreia",
              "author": {"did": artist, "handle": "handle.invalid"}, "reason": "release", "record": {"title": "LP"},
              "indexedAt": "2026-01-01T00:00:00.000Z", "isRead": True}]
    token = current_locale.set("en")
    try:
        html = web.render("notifications.html", user={"did": "did:plc:" + "a" * 24, "handle": "me.test"},
                          notifications=notes, cursor="abc=", paged=False, csrf_token=None).body.decode()
    finally:
        current_locale.reset(token)
    text = " ".join(html.split())
    assert ('<a class="who-link" href="/artist/fan.test">Fan &lt;b&gt;</a> tipped you $3.50 for <a class="subject" '
            f'href="/track/{artist}/3kz2222222223">Song</a>.') in text
    assert '<q class="message">&lt;i&gt;thanks&lt;/i&gt;</q>' in text and "<i>thanks" not in text
    assert (f'<a class="who-link" href="/artist/{artist}">handle.invalid</a> released the album <a class="subject" '
            f'href="/album/{artist}/3kz2222222224">LP</a>.') in text
    assert text.count('class="new"') == 1 and "Jan 2, 2026 10:00 UTC" in text
    assert 'href="/notifications?cursor=abc%3D">Older</a>' in text


@pytest.mark.network
async def test_notifications_in_chromium(net, make_client, appview, browser, tmp_path):  # noqa: F811
    artist, fan, follower = make_client("notewebartist"), make_client("notewebfan"), make_client("notewebfollower")
    publish_profile(artist, "Note Web Artist", roles=["artist"])
    publish_profile(fan, "Note <Web> Fan", roles=["listener"])
    publish_profile(follower, "Note Web Follower", roles=["listener"])
    fan.create_record(FOLLOW, {"subject": artist.did, "createdAt": now()})
    follower.create_record(FOLLOW, {"subject": fan.did, "createdAt": now()})
    await indexed(appview, "fm.openmusic.graph.getFollows", "follows", actor=fan.did)
    await indexed(appview, "fm.openmusic.graph.getFollowers", "followers", actor=fan.did)
    time.sleep(0.01)  # the release comes after the follow
    path = tmp_path / "fresh.wav"
    path.write_bytes(tune_wav(11, seconds=2.0))
    song = publish_track(artist, path, title="Fresh From The Studio")
    await indexed(appview, "fm.openmusic.catalog.getTrack", "track", uri=song.uri)

    site = type("Site", (), {"url": appview.settings.base_url})
    shots = tmp_path
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, net, site, fan.handle, shots, "00")

    # Home: the header's count and "New from artists you follow".
    async def home_ready():
        await page.goto(f"{site.url}/")
        return await page.locator("#unread-count").count()
    await eventually(home_ready, timeout=30)
    assert (await page.text_content("#unread-count")).strip() == "2"
    assert "Notifications" in await page.text_content("#nav-notifications")
    strip = page.locator("#home-following")
    assert "New from artists you follow" in await strip.text_content()
    assert await strip.locator("a.title").all_text_contents() == ["Fresh From The Studio"]
    await page.screenshot(path=str(shots / "01-home-following-1280.png"), full_page=True)

    # The notifications page: both New, with links; opening it marks them read.
    await page.click("#nav-notifications")
    await page.wait_for_url(f"{site.url}/notifications")
    items = page.locator("li.notification")
    assert await items.count() == 2
    assert await page.locator("li.notification.unread").count() == 2
    texts = [" ".join(t.split()) for t in await items.all_text_contents()]  # newest first: the release, the follow
    assert "Note Web Artist released Fresh From The Studio." in texts[0]
    assert "Note Web Follower followed you." in texts[1]
    assert await page.locator("li.reason-release a.subject").get_attribute("href") == \
        f"/track/{artist.did}/{song.uri.rsplit('/', 1)[1]}"
    assert await page.locator("#unread-count").count() == 0  # rendered after they were marked read
    await page.screenshot(path=str(shots / "02-notifications-1280.png"), full_page=True)
    await page.reload()
    assert await page.locator("li.notification").count() == 2
    assert await page.locator("li.notification.unread").count() == 0
    await page.goto(f"{site.url}/")
    assert await page.locator("#unread-count").count() == 0
    await no_sideways_scroll(page, site, shots, [("03-notifications", "/notifications"), ("04-home", "/")])

    # Signed out: no link, and the page sends to the sign-in page and back.
    anon = await browser.new_context(viewport={"width": 1280, "height": 900})
    other = await anon.new_page()
    await other.goto(f"{site.url}/")
    assert await other.locator("#nav-notifications").count() == 0
    assert await other.locator("#home-following").count() == 0
    await other.goto(f"{site.url}/notifications")
    assert other.url == f"{site.url}/login?next=%2Fnotifications"
    await anon.close()
    await context.close()
