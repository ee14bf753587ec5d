"""Follows, votes and reviews in the web app (``web.social``) and the numbers under them.

Units (no network, a real SQLite index fed with decoded events): ``listen.getTrackStats`` counts
each active voter's latest vote once (``votesUp``, ``votesDown``) and fits its lexicon; the viewer
helpers (``appview.social.viewer_vote``, ``viewer_follows``, ``viewer_review``) answer the latest
record and every record URI; the average rating is formatted per language.

End to end (the reference PDS + the AppView runtime with the web app, Debian's Chromium): a listener
follows an artist (a record in the listener's PDS, "1 follower", the button says Following) and
unfollows (the record gone); the same follow form sent twice at once writes one record; no follow
button on one's own artist page. Votes up (count 1, ``aria-pressed``), switches to down (0 / 1, one
vote record left in the PDS), votes down again (0 / 0, no record); the vote's breakdown page
explains its weight (0.002 of a vote: a new account, no listening history, no stream first). A 4-star review with text (in the
PDS; "1 review", "4 out of 5", the text escaped), edited to 5 (one record left, average 5); an
album is reviewed the same way. A forged CSRF token, a rating of 7, a text too long and a subject
not indexed are refused with an error page and write nothing. Screenshots (1280 and 390 px) go to the
test's tmp dir; no page scrolls sideways at 390 px."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from appview.social import viewer_follows, viewer_review, viewer_vote
from core.lexicons import FOLLOW, REVIEW, TRACK, VOTE, validator
from core.publish import publish_album, publish_profile, publish_track
from devkit.media import tune_wav
from firehose.events import AccountEvent
from tests.records import DID, LISTENER, track
from tests.test_indexer_units import commit, create, env, rkey  # noqa: F401  (env: a fixture)
from tests.test_social_records import FANS, SONG, add_fans, call, follow, review, vote
from tests.test_web_oauth_browser import browser  # noqa: F401  (a fixture)
from tests.test_web_profile import indexed, no_sideways_scroll, sign_in
from web.i18n import current_locale
from web.social import average_rating

STATS = "fm.openmusic.listen.getTrackStats"


# --- units ---------------------------------------------------------------------------------------------

async def test_track_stats_count_each_active_voters_latest_vote(env):  # noqa: F811
    ix, views, _path = env
    await add_fans(views)
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track()))], 1)
    got = await call(views, STATS, uri=SONG)  # validated against the lexicon's output
    assert (got["votesUp"], got["votesDown"]) == (0, 0)
    await ix.apply([commit(2, LISTENER, 1, create(VOTE, rkey(10), vote("up", 5)), create(VOTE, rkey(11), vote("down", 6))),
                    commit(3, FANS[0], 1, create(VOTE, rkey(10), vote("up", 5))),
                    commit(4, FANS[1], 1, create(VOTE, rkey(10), vote("up", 5)), create(VOTE, rkey(11), vote("up", 7))),
                    commit(5, FANS[2], 1, create(VOTE, rkey(10), vote("down", 5)))], 5)
    got = await call(views, STATS, uri=SONG)
    assert (got["votesUp"], got["votesDown"]) == (2, 2)  # LISTENER's latest is down; FANS[1] counts once
    await ix.apply([AccountEvent(seq=6, did=FANS[2], active=False, status="deactivated", time="")], 6)
    got = await call(views, STATS, uri=SONG)
    assert (got["votesUp"], got["votesDown"]) == (2, 1)
    validator().validate("fm.openmusic.listen.getTrackStats", "output", got)

    # The viewer's own state: the latest vote and every vote record.
    direction, uris = await viewer_vote(views, LISTENER, SONG)
    assert direction == "down" and sorted(uris) == [f"at://{LISTENER}/{VOTE}/{rkey(n)}" for n in (10, 11)]
    assert await viewer_vote(views, FANS[3], SONG) == (None, [])


async def test_viewer_follows_and_review(env):  # noqa: F811
    ix, views, _path = env
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track())),
                    commit(2, LISTENER, 1, create(FOLLOW, rkey(12), follow(DID, 5)), create(FOLLOW, rkey(13), follow(DID, 6)),
                           create(REVIEW, rkey(20), review(2, 5)), create(REVIEW, rkey(21), review(4, 7, text="<b>ok</b>")))], 2)
    assert await viewer_follows(views, LISTENER, DID) == [f"at://{LISTENER}/{FOLLOW}/{rkey(n)}" for n in (12, 13)]
    assert await viewer_follows(views, DID, LISTENER) == []
    mine = await viewer_review(views, LISTENER, SONG)
    assert mine["uri"] == f"at://{LISTENER}/{REVIEW}/{rkey(21)}" and mine["rating"] == 4
    assert mine["text"] == "<b>ok</b>" and mine["older"] == [f"at://{LISTENER}/{REVIEW}/{rkey(20)}"]
    assert await viewer_review(views, DID, SONG) is None


def test_average_rating_per_language():
    token = current_locale.set("en")
    try:
        assert [average_rating(v) for v in (425, 500, 333, 100)] == ["4.25", "5", "3.33", "1"]
        current_locale.set("de")
        assert average_rating(425) == "4,25"
    finally:
        current_locale.reset(token)


# --- end to end in Chromium ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def song(make_client, tmp_path_factory):
    """An artist with a profile, one 3-second track and an album of it."""
    artist = make_client("socialwebartist")
    publish_profile(artist, "Social Web Artist", roles=["artist"])
    path = tmp_path_factory.mktemp("audio") / "song.wav"
    path.write_bytes(tune_wav(7, seconds=3.0))
    ref = publish_track(artist, path, title="Vote Me Up", extra={"genre": "Ambient"})
    album = publish_album(artist, "Votes And Reviews", [ref])
    return artist, ref, album


def pds_records(net, did: str, collection: str) -> list[dict]:
    resp = httpx.get(f"{net.pds_url}/xrpc/com.atproto.repo.listRecords",
                     params={"repo": did, "collection": collection, "limit": 100}, timeout=30)
    resp.raise_for_status()
    return resp.json()["records"]


async def form_of(page, selector: str) -> dict[str, str]:
    """The named fields of the form ``selector`` as the page has them (radios: the checked one)."""
    return await page.eval_on_selector(selector, "f => Object.fromEntries(new FormData(f))")


async def submit(page, button) -> None:
    """Click a form's submit button and wait until the page its POST leads to is shown (nav.js posts
    these forms with fetch and swaps the answer in, so the player keeps playing: no navigation)."""
    async with page.expect_response(lambda r: r.request.method == "POST", timeout=30_000):
        await button.click()
    await page.locator("html:not(.om-navigating)").wait_for(state="attached", timeout=30_000)
    await page.wait_for_load_state()


@pytest.mark.network
async def test_follow_vote_and_review_in_chromium(net, make_client, appview, song, browser, tmp_path):  # noqa: F811
    artist, ref, album = song
    await indexed(appview, "fm.openmusic.catalog.getTrack", "track", uri=ref.uri)
    await indexed(appview, "fm.openmusic.catalog.getAlbum", "album", uri=album.uri)
    fan = make_client("socialwebfan")
    publish_profile(fan, "Fan <Of> Votes", roles=["listener"])
    site = type("Site", (), {"url": appview.settings.base_url})
    shots = tmp_path
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, net, site, fan.handle, shots, "00")
    artist_page = f"{site.url}/artist/{artist.handle}"
    track_page = f"{site.url}/track/{artist.did}/{ref.uri.rsplit('/', 1)[1]}"
    album_page = f"{site.url}/album/{artist.did}/{album.uri.rsplit('/', 1)[1]}"

    # Follow: a record in the fan's repo, "1 follower", the button says Following; unfollow removes it.
    await page.goto(artist_page)
    assert (await page.text_content("#followers")).strip() == "0 followers"
    button = page.locator("#follow-button")
    assert (await button.text_content()).strip() == "Follow" and await button.get_attribute("aria-pressed") == "false"
    await submit(page, button)
    assert page.url == artist_page
    follows = pds_records(net, fan.did, FOLLOW)
    assert [r["value"]["subject"] for r in follows] == [artist.did]
    assert (await page.text_content("#followers")).strip() == "1 follower"
    assert (await button.text_content()).strip() == "Following" and await button.get_attribute("aria-pressed") == "true"
    await page.screenshot(path=str(shots / "01-artist-following-1280.png"), full_page=True)
    await submit(page, button)
    assert pds_records(net, fan.did, FOLLOW) == []
    assert (await page.text_content("#followers")).strip() == "0 followers"
    assert (await button.text_content()).strip() == "Follow"

    # The same follow form sent twice at once (a double click) writes one follow.
    fields = await form_of(page, "form.follow")
    answers = await asyncio.gather(*(context.request.post(f"{site.url}/follow", form=fields) for _ in range(2)))
    assert [a.status for a in answers] == [200, 200], [await a.text() for a in answers]
    assert len(pds_records(net, fan.did, FOLLOW)) == 1
    await page.reload()
    assert (await page.text_content("#followers")).strip() == "1 follower"

    # No follow button on one's own artist page.
    await page.goto(f"{site.url}/artist/{fan.did}")
    assert await page.locator("#follow-button").count() == 0

    # Votes: up, then down (one record left), then down again (none).
    await page.goto(track_page)
    up, down = page.locator("#vote-up"), page.locator("#vote-down")
    assert (await page.text_content("#votes-up"), await page.text_content("#votes-down")) == ("0", "0")
    await submit(page, up)
    assert page.url == track_page
    assert (await page.text_content("#votes-up"), await page.text_content("#votes-down")) == ("1", "0")
    assert await up.get_attribute("aria-pressed") == "true" and await down.get_attribute("aria-pressed") == "false"
    assert [r["value"]["direction"] for r in pds_records(net, fan.did, VOTE)] == ["up"]
    # How it counts: a new account (under a day: 0.25) with no listening history (a tenth) that did not
    # stream the song first (a tenth): 1000 -> 100 -> 25 -> 2 thousandths
    await page.click("#vote-breakdown")
    await page.wait_for_url(f"{track_page}/votes")
    row = page.locator(f'#vote-table tr[data-did="{fan.did}"]')
    assert (await row.locator("td.num").text_content()).strip() == "0.002"
    why = " ".join((await row.locator(".vote-math").text_content()).split())
    assert why == ("1 × 0.1 (not streamed first) × 0.25 (new account) × 0.1 (little listening history) = 0.002")
    assert "1 vote:" in await page.text_content('#vote-reasons li[data-reason="unheard"]')
    assert (await page.text_content("#human-score")).strip() == "0.002 votes"
    assert await page.locator('#vote-reasons li[data-reason="unheard"]').count() == 1
    await page.screenshot(path=str(shots / "02-vote-breakdown-1280.png"), full_page=True)
    await no_sideways_scroll(page, site, shots, [("02-vote-breakdown", f"{track_page.removeprefix(site.url)}/votes")])
    await page.goto(track_page)
    await submit(page, down)
    assert (await page.text_content("#votes-up"), await page.text_content("#votes-down")) == ("0", "1")
    assert await up.get_attribute("aria-pressed") == "false" and await down.get_attribute("aria-pressed") == "true"
    votes = pds_records(net, fan.did, VOTE)
    assert [(r["value"]["direction"], r["value"]["subject"]["uri"]) for r in votes] == [("down", ref.uri)]
    await submit(page, down)
    assert (await page.text_content("#votes-up"), await page.text_content("#votes-down")) == ("0", "0")
    assert await down.get_attribute("aria-pressed") == "false"
    assert pds_records(net, fan.did, VOTE) == []

    # A review: 4 stars and a text with markup, shown escaped.
    assert "No reviews yet" in await page.text_content("#reviews")
    text = "<b>Warm</b> & slow, like <script>alert(1)</script> a harbour"
    await page.get_by_label("4 stars").check()
    await page.fill("#review-text", text)
    await submit(page, page.get_by_role("button", name="Post review"))
    # nav.js swapped the answer in (the player goes on) and kept the focus on the form's button
    assert page.url == track_page
    assert await page.evaluate("document.activeElement.closest('form')?.action ?? ''") == f"{site.url}/review"
    reviews = pds_records(net, fan.did, REVIEW)
    assert [(r["value"]["rating"], r["value"]["text"], r["value"]["subject"]["uri"]) for r in reviews] == [
        (4, text, ref.uri)]
    assert (await page.text_content("#review-count")).strip() == "1 review"
    assert (await page.text_content("#review-average")).strip() == "4 out of 5"
    assert await page.get_by_role("img", name="4 out of 5").count() == 1
    assert (await page.text_content(".review-text")) == text
    assert "&lt;script&gt;" in await page.inner_html(".review-text")
    assert (await page.text_content(".review-head a")).strip() == "Fan <Of> Votes"
    await page.screenshot(path=str(shots / "02-track-voted-reviewed-1280.png"), full_page=True)

    # Edited to 5: the form is prefilled, one review record is left, the average is 5.
    assert await page.get_by_label("4 stars").is_checked()
    assert await page.input_value("#review-text") == text
    await page.get_by_label("5 stars").check()
    await submit(page, page.get_by_role("button", name="Update review"))
    reviews = pds_records(net, fan.did, REVIEW)
    assert [r["value"]["rating"] for r in reviews] == [5]
    assert (await page.text_content("#review-average")).strip() == "5 out of 5"
    assert (await page.text_content("#review-count")).strip() == "1 review"

    # Refused: a forged CSRF token, a rating of 7, a text too long, a subject not indexed. Nothing written.
    good = await form_of(page, "form.review-form")
    before = pds_records(net, fan.did, REVIEW)
    missing = f"at://{artist.did}/{TRACK}/3zzzzzzzzzzzz"
    for change, status, words in (({"csrf_token": "forged", "rating": "3"}, 403, "Form expired"),
                                  ({"rating": "7"}, 400, "from 1 to 5"),
                                  ({"rating": "3", "text": "x" * 3001}, 400, "at most 3000"),
                                  ({"rating": "3", "uri": missing}, 404, "Not found")):
        resp = await context.request.post(f"{site.url}/review", form={**good, "key": "", **change})
        assert resp.status == status, (change, resp.status)
        assert words in await resp.text(), change
    forged = await context.request.post(f"{site.url}/vote", form={**await form_of(page, "form.vote"),
                                                                   "csrf_token": "forged", "direction": "up"})
    assert forged.status == 403 and "Form expired" in await forged.text()
    await asyncio.sleep(1)  # anything written would have reached the PDS by now
    assert pds_records(net, fan.did, REVIEW) == before and pds_records(net, fan.did, VOTE) == []

    # An album is reviewed the same way.
    await page.goto(album_page)
    await page.get_by_label("3 stars").check()
    await submit(page, page.get_by_role("button", name="Post review"))
    assert (await page.text_content("#review-average")).strip() == "3 out of 5"
    assert sorted(r["value"]["subject"]["uri"] for r in pds_records(net, fan.did, REVIEW)) == sorted(
        [ref.uri, album.uri])
    await page.screenshot(path=str(shots / "03-album-reviewed-1280.png"), full_page=True)

    await no_sideways_scroll(page, site, shots, [
        ("04-artist", f"/artist/{artist.handle}"), ("05-track", track_page.removeprefix(site.url)),
        ("06-album", album_page.removeprefix(site.url))])

    # Signed out: the counts and reviews show, no forms.
    anon = await browser.new_context(viewport={"width": 1280, "height": 900})
    other = await anon.new_page()
    await other.goto(track_page)
    assert "Votes: 0 up, 0 down" in await other.text_content("main")
    assert await other.locator("form.vote, form.review-form").count() == 0
    assert (await other.text_content("#review-average")).strip() == "5 out of 5"
    await other.goto(artist_page)
    assert (await other.text_content("#followers")).strip() == "1 follower"
    assert await other.locator("#follow-button").count() == 0
    await anon.close()
    await context.close()
    print(f"screenshots in {shots} ({time.strftime('%H:%M:%S')})")
