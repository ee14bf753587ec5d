"""Playlists in the web app (``web.playlists``), end to end: the reference PDS + the AppView runtime
with the web app, in Debian's Chromium.

An owner signs in (the header shows "Playlists"), creates a playlist on ``/playlists`` (a record in
the owner's PDS), adds two tracks from their track pages ("Add to playlist", the page says where it
went) and makes a second playlist from a track page; the public page lists the items in order and
"Play all" queues them in the player bar. The edit page moves an item up, removes one, and names a
collaborator by handle (each a new version of the record in the PDS); a form from a page older than
the record gets a 409 page and writes nothing; a blank title, an unknown handle and a forged CSRF
token are refused; adding a track the playlist already holds writes nothing and says so (even sent twice at once). The collaborator adds a track from a track page (a ``playlistItem`` in their own
PDS), shown after the owner's items with "added by", takes it back from the playlist page and adds it
again; once the owner removes them, it is no longer
shown. Deleting needs the confirmation box, then the record is gone. Signed out, the playlist page
shows without edit links and the header without "Playlists". Screenshots (1280 and 390 px) go to the
test's tmp dir; no page scrolls sideways at 390 px."""

from __future__ import annotations

import asyncio

import pytest

from core.lexicons import PLAYLIST, PLAYLIST_ITEM
from core.publish import publish_profile, publish_track
from devkit.media import tune_wav
from tests.test_web_oauth_browser import browser  # noqa: F401  (a fixture)
from tests.test_web_profile import indexed, no_sideways_scroll, sign_in
from tests.test_web_social import form_of, pds_records


@pytest.fixture(scope="module")
def songs(make_client, tmp_path_factory):
    """An artist with a profile and three short tracks."""
    artist = make_client("plwebartist")
    publish_profile(artist, "Playlist Web Artist", roles=["artist"])
    refs = []
    for i, title in enumerate(("Dawn Chorus", "Noon Haze", "Dusk Drive")):
        path = tmp_path_factory.mktemp("audio") / f"s{i}.wav"
        path.write_bytes(tune_wav(i + 2, seconds=2.0))
        refs.append(publish_track(artist, path, title=title))
    return artist, refs


async def post_and_wait(page, button) -> None:
    """Click a form's submit button (a plain POST: the page loads the answer) and wait for it."""
    async with page.expect_navigation(timeout=30_000):
        await button.click()
    await page.wait_for_load_state()


def items_of(net, did: str, rkey: str) -> list[str]:
    rec = next(r for r in pds_records(net, did, PLAYLIST) if r["uri"].endswith(f"/{rkey}"))
    return [i["track"]["uri"] for i in rec["value"].get("items", [])]


@pytest.mark.network
async def test_playlists_in_chromium(net, make_client, appview, songs, browser, tmp_path):  # noqa: F811
    artist, refs = songs
    for ref in refs:
        await indexed(appview, "fm.openmusic.catalog.getTrack", "track", uri=ref.uri)
    owner, friend = make_client("plwebowner"), make_client("plwebfriend")
    publish_profile(owner, "Playlist Owner", roles=["listener"])
    publish_profile(friend, "Playlist Friend", roles=["listener"])
    site = type("Site", (), {"url": appview.settings.base_url})
    shots = tmp_path
    track_page = [f"{site.url}/track/{artist.did}/{r.uri.rsplit('/', 1)[1]}" for r in refs]
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, net, site, owner.handle, shots, "00")

    # Create on /playlists (reached from the header link).
    await page.goto(f"{site.url}/")
    await page.click("header .nav-playlists")
    await page.wait_for_url(f"{site.url}/playlists")
    assert "No playlists yet" in await page.text_content("#my-playlists")
    await page.fill("#playlist-title", "Late  Night <Mix>")
    await page.fill("#playlist-description", "For the drive home.")
    await post_and_wait(page, page.locator("#create-playlist"))
    [rec] = pds_records(net, owner.did, PLAYLIST)
    rkey = rec["uri"].rsplit("/", 1)[1]
    mix_page = f"{site.url}/playlist/{owner.did}/{rkey}"
    assert page.url == mix_page
    assert rec["value"]["title"] == "Late Night <Mix>" and rec["value"]["description"] == "For the drive home."
    assert (await page.text_content("h1")).strip() == "Late Night <Mix>"
    assert (await page.text_content("#item-count")).strip() == "0 tracks"

    # Add two tracks from their pages; make a second playlist from the third's.
    for i in (0, 1):
        await page.goto(track_page[i])
        await page.click("#add-to-playlist summary")
        assert await page.locator("#playlist-choice option").all_text_contents() == ["Late Night <Mix>"]
        await post_and_wait(page, page.locator("#add-to-playlist-button"))
        assert page.url.startswith(track_page[i]) and "added_to=" in page.url
        assert "Added to Late Night <Mix>" in " ".join((await page.text_content("#playlist-added")).split())
    assert items_of(net, owner.did, rkey) == [refs[0].uri, refs[1].uri]
    await page.screenshot(path=str(shots / "01-track-added-1280.png"), full_page=True)
    # Adding a track the playlist already holds writes nothing and says so, even twice at once.
    await page.reload()
    fields = await form_of(page, "form.playlist-pick")
    answers = await asyncio.gather(*(context.request.post(f"{site.url}/playlist/add", form=fields) for _ in range(2)))
    assert [a.status for a in answers] == [200, 200], [await a.text() for a in answers]
    assert all("already_in=" in a.url for a in answers)
    assert items_of(net, owner.did, rkey) == [refs[0].uri, refs[1].uri]
    await page.goto(track_page[1])
    await page.click("#add-to-playlist summary")
    await post_and_wait(page, page.locator("#add-to-playlist-button"))
    assert "Already in Late Night <Mix>" in " ".join((await page.text_content("#playlist-already")).split())
    await page.goto(track_page[2])
    await page.click("#add-to-playlist summary")
    await page.fill("#new-playlist-title", "Second List")
    await post_and_wait(page, page.locator("#new-playlist-button"))
    second = next(r for r in pds_records(net, owner.did, PLAYLIST) if r["value"]["title"] == "Second List")
    assert [i["track"]["uri"] for i in second["value"]["items"]] == [refs[2].uri]
    assert "Added to Second List" in " ".join((await page.text_content("#playlist-added")).split())
    await page.goto(f"{site.url}/playlists")
    assert [t.strip() for t in await page.locator("#my-playlists a").all_text_contents()] == [
        "Second List", "Late Night <Mix>"]
    await page.screenshot(path=str(shots / "02-playlists-1280.png"), full_page=True)

    # The public page: items in order; Play all queues them in the player bar.
    await page.goto(mix_page)
    assert [t.strip() for t in await page.locator("#items .title").all_text_contents()] == ["Dawn Chorus", "Noon Haze"]
    assert (await page.text_content("#item-count")).strip() == "2 tracks"
    assert await page.input_value("#share-link") == mix_page
    await page.click("#play-all")
    await page.locator("#player:not([hidden])").wait_for(timeout=10_000)
    assert (await page.text_content("#player-title")).strip() == "Dawn Chorus"
    assert (await page.text_content("#player-queue-count")).strip() == "2"
    await page.click("#player-toggle")  # pause (the queue stays)
    await page.screenshot(path=str(shots / "03-playlist-1280.png"), full_page=True)

    # Edit: move the second item up, then remove the first (the PDS record follows each time).
    await page.click("#edit-playlist")
    await page.wait_for_url(f"{mix_page}/edit")
    await post_and_wait(page, page.get_by_role("button", name="Move Noon Haze up"))
    assert items_of(net, owner.did, rkey) == [refs[1].uri, refs[0].uri]
    stale = await form_of(page, "form.edit-ops")  # this page's version of the record
    await post_and_wait(page, page.get_by_role("button", name="Remove Noon Haze"))
    assert items_of(net, owner.did, rkey) == [refs[0].uri]
    # A form from before that change: 409, nothing written.
    resp = await context.request.post(f"{mix_page}/items", form={**stale, "op": "down"})
    assert resp.status == 409 and "changed elsewhere" in await resp.text()
    assert items_of(net, owner.did, rkey) == [refs[0].uri]

    # Collaborators by handle; bad input refused with the form kept.
    await page.fill("#playlist-collaborators", f"@{friend.handle}")
    await post_and_wait(page, page.locator("#save-playlist"))
    assert await page.is_visible("#saved")
    rec = next(r for r in pds_records(net, owner.did, PLAYLIST) if r["uri"].endswith(rkey))
    assert rec["value"]["collaborators"] == [friend.did]
    assert await page.input_value("#playlist-collaborators") == f"@{friend.handle}"
    good = await form_of(page, "form.playlist-form")
    for change, status, words in (({"title": "   "}, 400, "Give the playlist a title"),
                                  ({"collaborators": "nobody-here.test"}, 400, "No account was found for @nobody-here.test"),
                                  ({"csrf_token": "forged"}, 403, "Form expired")):
        resp = await context.request.post(f"{mix_page}/edit", form={**good, **change})
        assert resp.status == status, change
        assert words in await resp.text(), change
    await page.screenshot(path=str(shots / "04-edit-1280.png"), full_page=True)

    # The collaborator adds a track from its page: a playlistItem in their own PDS, shown after the owner's.
    other = await browser.new_context(viewport={"width": 1280, "height": 900})
    fpage = await other.new_page()
    await sign_in(fpage, net, site, friend.handle, shots, "10")
    await fpage.goto(track_page[2])
    await fpage.click("#add-to-playlist summary")
    options = await fpage.locator("#playlist-choice option").all_text_contents()
    assert options == [f"Late Night <Mix> (shared by @{owner.handle})"]
    await post_and_wait(fpage, fpage.locator("#add-to-playlist-button"))
    [item] = pds_records(net, friend.did, PLAYLIST_ITEM)
    assert item["value"]["subject"] == f"at://{owner.did}/{PLAYLIST}/{rkey}" and item["value"]["track"]["uri"] == refs[2].uri
    await page.goto(mix_page)
    assert [t.strip() for t in await page.locator("#items .title").all_text_contents()] == ["Dawn Chorus", "Dusk Drive"]
    assert "added by Playlist Friend" in await page.text_content("#items li:nth-child(2) .meta")
    assert "Playlist Friend" in await page.text_content("#collaborators")
    assert await page.locator("form.item-remove").count() == 0  # the owner does not get the collaborator's button
    # The collaborator takes it back from the playlist page, then adds it again.
    await fpage.goto(mix_page)
    await post_and_wait(fpage, fpage.get_by_role("button", name="Remove the track I added"))
    assert pds_records(net, friend.did, PLAYLIST_ITEM) == []
    assert [t.strip() for t in await fpage.locator("#items .title").all_text_contents()] == ["Dawn Chorus"]
    await fpage.goto(track_page[2])
    await fpage.click("#add-to-playlist summary")
    await post_and_wait(fpage, fpage.locator("#add-to-playlist-button"))
    assert len(pds_records(net, friend.did, PLAYLIST_ITEM)) == 1
    await page.goto(mix_page)
    assert [t.strip() for t in await page.locator("#items .title").all_text_contents()] == ["Dawn Chorus", "Dusk Drive"]

    # Removed as a collaborator: their item is no longer shown.
    await page.goto(f"{mix_page}/edit")
    await page.fill("#playlist-collaborators", "")
    await post_and_wait(page, page.locator("#save-playlist"))
    await page.goto(mix_page)
    assert [t.strip() for t in await page.locator("#items .title").all_text_contents()] == ["Dawn Chorus"]
    assert (await page.text_content("#item-count")).strip() == "1 track"

    await no_sideways_scroll(page, site, shots, [
        ("05-playlists", "/playlists"), ("06-playlist", mix_page.removeprefix(site.url)),
        ("07-edit", f"{mix_page.removeprefix(site.url)}/edit")])
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(track_page[0])
    await page.click("#add-to-playlist summary")
    await page.screenshot(path=str(shots / "08-track-add-390.png"), full_page=True)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.set_viewport_size({"width": 1280, "height": 900})

    # Signed out: the page shows, no edit link, no header link.
    anon = await browser.new_context(viewport={"width": 1280, "height": 900})
    apage = await anon.new_page()
    await apage.goto(mix_page)
    assert (await apage.text_content("h1")).strip() == "Late Night <Mix>"
    assert await apage.locator("#edit-playlist, header .nav-playlists").count() == 0
    await apage.goto(f"{site.url}/playlists")
    assert "Sign in to make playlists" in " ".join((await apage.text_content("main")).split())
    assert await apage.locator("form.playlist-form").count() == 0
    await anon.close()

    # Delete: the box must be ticked; then the record is gone.
    await page.goto(f"{mix_page}/edit")
    fields = await form_of(page, "form.playlist-delete")
    resp = await context.request.post(f"{mix_page}/delete", form=fields)  # confirm not ticked
    assert resp.status == 400 and "Tick the box" in await resp.text()
    await page.check("#confirm-delete")
    await post_and_wait(page, page.locator("#delete-playlist"))
    assert page.url == f"{site.url}/playlists?deleted=1"
    assert [r["value"]["title"] for r in pds_records(net, owner.did, PLAYLIST)] == ["Second List"]
    resp = await context.request.get(mix_page)
    assert resp.status == 404
    await asyncio.gather(other.close(), context.close())
