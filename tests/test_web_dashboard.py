"""The analytics dashboards (``web/dashboard*.py``), for real: the AppView with payments on (Stripe is
localstripe, the network the reference PDS) serves them; Debian's Chromium signs an artist, a manager
and an operator in on the PDS, and each dashboard draws its charts with uPlot (served by us from
web/node_modules) and shows, in its tables, the figures of the plays, subscription and tips this test
wrote. CSV exports, the operator's server-sent events, a non-operator's 403 and a bad date are checked
too; so are what a listener (no track, no artist role) sees: a page saying what the dashboard is for,
a plain 403 for another artist's figures and for the operator's page; screenshots (1280 px, 390 px,
dark) go to the test's tmp dir. Unit tests: the period's length per granularity, the tabs a viewer is
shown, the first bucket of a series labelled from the period's first day.

What the test writes, all today (UTC). Track A of ARTIST lasts 4 s (a stream needs 2 s); track B of
ARTIST2 too. L4 subscribes to Plus first, so L4's play is a paid stream; the others are free.

====  ========  =====  =================  ==========  =======  ========
play  listener  track  segments (ms)      listenedMs  country  decision
====  ========  =====  =================  ==========  =======  ========
1     L1        A      0-4000             4000        DE       free
2     L2        A      0-3000             3000        FR       free
3     L3        A      0-1000             1000        -        short (< 2 s)
4     L1        A      0-2000, 1000-4000  4000        DE       free (second 1 replayed)
5     L4        A      0-4000             4000        SE       paid
6     L2        B      0-4000             4000        -        free
====  ========  =====  =================  ==========  =======  ========

ARTIST today: 5 plays, 1 paid, 3 free, 1 short, 4 listeners. Retention of A (5 plays with segments):
heard 5 4 4 3 (10000 8000 8000 6000 bps), second 1 replayed once. Countries: DE 2 streams, 1 listener,
2 plays; FR 1/1/1; SE 1/1/1; no country 0 streams, 1 listener, 1 play. L1 tips ARTIST $2.00 and song A
$1.50 (from $10 of credit): revenue $3.50, tips to the artist $2.00, on songs $1.50.
MANAGER manages ARTIST (who routes payouts to MANAGER) and ARTIST2 (both sides agree), and names LONE,
who does not name MANAGER back: combined 6 plays, 1 paid, 4 free, 1 short; revenue $3.50 and $0.00."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from types import SimpleNamespace
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import jinja2
import pytest
from starlette.requests import Request

from core.lexicons import PLAY
from core.publish import now_iso, publish_profile, publish_track, tip
from devkit.demo_payments import card_payment_method
from devkit.media import tune_wav
from tests.conftest import eventually
from tests.test_payments_e2e import buy_credit, call
from tests.test_web_oauth_browser import PASSWORD, pds_sign_in, start_sign_in
from tests.test_web_pages import browser, indexed  # noqa: F401  (browser: a fixture)
from web.dashboard_core import Dashboards, Viewer
from web.dashboard_tables import Column, Table, csv_text, shown_buckets
from web.i18n import Languages

network = pytest.mark.network
AN = "fm.openmusic.analytics."


def play(client, track, ms: int, segments: list[tuple[int, int]], country: str | None = None) -> None:
    """A play record in the listener's repo, as a player writes it (with the opt-in country)."""
    record = {"track": track.as_dict(), "createdAt": now_iso(), "listenedMs": ms, "completed": False,
              "client": "dashboard-test/0.1", "segments": [{"startMs": a, "endMs": b} for a, b in segments]}
    if country:
        record["country"] = country
    client.create_record(PLAY, record)


async def ask(rt, client, nsid: str, **params) -> httpx.Response:
    """An analytics query as ``client``'s user, with a service-auth JWT their PDS mints."""
    token = client.service_auth(rt.payments.service_did, nsid)
    return await rt.http_client.get(f"/xrpc/{nsid}", params=params, headers={"authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
async def world(net, make_client, paid_appview, localstripe, tmp_path_factory):
    """The accounts, tracks, plays, subscription and tips of the module docstring, indexed; the
    operator's DID added to the running AppView's ``operator_dids`` (restored after)."""
    rt = paid_appview
    names = ("dashartist", "dashsecond", "dashlone", "dashmanager", "dashops", "dashla", "dashlb", "dashlc", "dashld")
    artist, artist2, lone, manager, operator, l1, l2, l3, l4 = (make_client(n) for n in names)
    publish_profile(manager, "Mia Manager", roles=["manager"],
                    extra={"manages": [artist.did, artist2.did, lone.did]})
    publish_profile(artist, "Dash Artist", roles=["artist"], extra={"managers": [manager.did], "payoutTo": manager.did})
    publish_profile(artist2, "Second Artist", roles=["artist"], extra={"managers": [manager.did]})
    publish_profile(lone, "Lone Artist", roles=["artist"])
    for who in (operator, l1, l2, l3, l4):
        publish_profile(who, who.handle.split(".")[0], roles=["listener"])
    tmp = tmp_path_factory.mktemp("dash-audio")
    (tmp / "a.wav").write_bytes(tune_wav(21, seconds=4.0))
    (tmp / "b.wav").write_bytes(tune_wav(22, seconds=4.0))
    song_a = publish_track(artist, tmp / "a.wav", title="Harbor Lights")
    song_b = publish_track(artist2, tmp / "b.wav", title="Second Song")
    await indexed(rt, song_a.uri)
    await indexed(rt, song_b.uri)

    pm = await asyncio.to_thread(card_payment_method, localstripe)
    sub = await call(rt, l4, "fm.openmusic.payment.createSubscription", {"tier": "plus", "paymentMethod": pm})
    assert sub.status_code == 200 and sub.json()["status"] == "active", sub.text
    play(l1, song_a, 4000, [(0, 4000)], "DE")
    play(l2, song_a, 3000, [(0, 3000)], "FR")
    play(l3, song_a, 1000, [(0, 1000)])
    play(l1, song_a, 4000, [(0, 2000), (1000, 4000)], "DE")
    play(l4, song_a, 4000, [(0, 4000)], "SE")
    play(l2, song_b, 4000, [(0, 4000)])

    await buy_credit(rt, localstripe, l1, 1000)

    async def credited():
        resp = await call(rt, l1, "fm.openmusic.payment.getBalance")
        return resp.json().get("credit") == 1000
    await eventually(credited, timeout=30)
    tip(l1, artist.did, 200)
    tip(l1, artist.did, 150, track=song_a)

    async def streams_done():
        got = (await ask(rt, artist, AN + "getStreams", artist=artist.did)).json().get("totals", {})
        return (got.get("plays"), got.get("paidStreams"), got.get("freeStreams")) == (5, 1, 3)
    await eventually(streams_done, timeout=30)

    async def tips_settled():
        body = (await rt.http_client.get("/xrpc/fm.openmusic.payment.getTips", params={"artist": artist.did})).json()
        return body.get("totalSettled") == 350
    await eventually(tips_settled, timeout=30)
    await eventually(lambda: ask(rt, artist2, AN + "getStreams", artist=artist2.did),
                     until=lambda r: r.json().get("totals", {}).get("freeStreams") == 1, timeout=30)

    before = rt.settings.operator_dids
    rt.settings.operator_dids = ",".join(d for d in (before, operator.did) if d)
    try:
        yield {"rt": rt, "artist": artist, "artist2": artist2, "lone": lone, "manager": manager, "operator": operator,
               "listeners": (l1, l2, l3, l4), "song_a": song_a, "site": f"http://127.0.0.1:{rt.settings.port}"}
    finally:
        rt.settings.operator_dids = before


async def sign_in(browser, net, world, client, shots, prefix: str, **options):  # noqa: F811
    """A new browser context signed in as ``client`` through the PDS's own OAuth pages."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, **options)
    page = await context.new_page()
    site = type("Site", (), {"url": world["site"]})
    assert (await start_sign_in(page, site, client.handle)).status == 303
    await pds_sign_in(page, net, PASSWORD, shots, prefix)
    await page.get_by_role("button", name="Authorize").click()
    await page.wait_for_url(lambda u: "/oauth/callback" not in u and u.startswith(world["site"]), timeout=30_000)
    return context, page


def watch(page) -> list[str]:
    """Script errors and refused resources (CSP) on ``page``, collected as they happen (not the 4xx
    answers the test asks for on purpose)."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"error: {exc}"))
    page.on("console", lambda msg: problems.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    return problems


async def cells(page, table: str, key: str, where: str = "tbody") -> list[str]:
    """The raw values (``data-value``) of column ``key`` of ``table``'s body (or ``tfoot``)."""
    return [await td.get_attribute("data-value")
            for td in await page.locator(f"#table-{table} {where} td[data-key={key}]").all()]


async def csv_rows(page, href: str) -> tuple[dict, list[list[str]]]:
    resp = await page.request.get(urljoin(page.url, href))
    assert resp.status == 200, await resp.text()
    return resp.headers, list(csv.reader(io.StringIO(await resp.text())))


async def no_sideways_scroll(page, path: str, shot) -> None:
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.reload()
    await page.locator(".dash-canvas canvas").first.wait_for(timeout=15_000)
    await page.screenshot(path=str(shot), full_page=True)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"{path} scrolls sideways at 390 px ({width})"
    await page.set_viewport_size({"width": 1280, "height": 900})


@network
async def test_artist_dashboard_in_chromium(net, world, browser, tmp_path):  # noqa: F811
    site, artist = world["site"], world["artist"]
    l1 = world["listeners"][0]
    context, page = await sign_in(browser, net, world, artist, tmp_path, "artist")
    problems = watch(page)
    resp = await page.goto(f"{site}/dashboard")
    assert resp.status == 200
    for chart in ("streams-chart", "retention-chart", "countries-chart"):
        await page.locator(f"#{chart} canvas").first.wait_for(timeout=15_000)  # drawn by uPlot
        assert await page.locator(f"#{chart} .uplot").count() == 1
    await page.screenshot(path=str(tmp_path / "artist-1280.png"), full_page=True)
    assert await page.text_content("h1") == "Dashboard: Dash Artist"

    # Streams today (the last bucket) and in total: paid and free apart, plays that were not streams.
    assert (await cells(page, "streams", "paidStreams"))[-1] == "1"
    assert [await cells(page, "streams", k, "tfoot") for k in ("paidStreams", "freeStreams", "shortPlays", "plays",
                                                               "uniqueListeners")] == [["1"], ["3"], ["1"], ["5"], ["4"]]
    assert (await page.text_content("#fig-paid")).strip() == "1" and (await page.text_content("#fig-free")).strip() == "3"
    # The retention curve of the top (only) track, second by second, with the replayed second.
    assert await page.input_value("#dash-track") == world["song_a"].uri.rsplit("/", 1)[-1]
    assert await cells(page, "retention", "heard") == ["5", "4", "4", "3"]
    assert await cells(page, "retention", "shareBps") == ["10000", "8000", "8000", "6000"]
    assert await cells(page, "retention", "replayed") == ["0", "1", "0", "0"]
    assert await cells(page, "replays", "peak") == ["1"]
    # Countries, most streams first, then the plays without one.
    countries = [await th.text_content() for th in await page.locator("#table-countries tbody th").all()]
    assert countries == ["Germany (DE)", "France (FR)", "Sweden (SE)"]
    assert await cells(page, "countries", "streams") == ["2", "1", "1"]
    assert await cells(page, "countries", "plays", "tfoot") == ["1"]
    # Top tracks and listeners (by handle only), money.
    assert await page.text_content("#table-top-tracks tbody th") == "Harbor Lights"
    assert (await page.text_content("#table-top-listeners tbody th")).strip() == l1.handle
    assert await cells(page, "top-listeners", "streams") == ["2", "1", "1", "0"]
    assert await cells(page, "earnings", "amount", "tfoot") == ["350"]
    # getRevenue: tips to the artist and on songs, the top tipper; getConversion: L4 moved to Plus.
    assert await cells(page, "revenue", "tipsArtist") == ["200"] and await cells(page, "revenue", "tipsSong") == ["150"]
    assert (await page.text_content("#table-tippers tbody th")).strip() == l1.handle
    assert await cells(page, "tips-songs", "amount") == ["150"]
    assert int(await page.get_attribute("#table-conversion tfoot td[data-key=converters]", "data-value")) >= 1

    # CSV exports: the streams table and the countries table, as a spreadsheet reads them.
    href = await page.get_attribute("#streams .dash-csv a", "href")
    headers, rows = await csv_rows(page, href)
    assert headers["content-type"] == "text/csv; charset=utf-8"
    assert headers["content-disposition"].startswith('attachment; filename="openmusic-artist-streams-')
    assert rows[0][:5] == ["Day", "Paid streams", "Free streams", "Plays not streams", "Plays"]
    assert len(rows) == 1 + 30 + 1 and rows[-2][1:6] == ["1", "3", "1", "5", "4"] and rows[-1][1:6] == ["1", "3", "1", "5", "4"]
    assert rows[-1][0] == "Total"
    # A 30-row table is closed (a phone sees the charts first), its caption and CSV link in view.
    assert await page.locator("#streams details.dash-details").count() == 1
    assert await page.locator("#streams details.dash-details[open]").count() == 0
    assert await page.locator("#streams .dash-caption").is_visible()
    assert await page.locator("#streams .dash-csv a").is_visible()
    # An artist who manages nobody and operates nothing is shown no tabs (no "Manager" tab).
    assert await page.locator("#tab-manager").count() == 0 and await page.locator("#tab-operator").count() == 0
    # One listener moved to a paid tier: said in the singular (plural forms, not "1 listeners").
    converters = int(await page.get_attribute("#table-conversion tfoot td[data-key=converters]", "data-value"))
    summary = (await page.text_content("#conversion-summary")).strip()
    assert summary.startswith(f"{converters} listener moved " if converters == 1 else f"{converters} listeners moved ")
    _, rows = await csv_rows(page, await page.get_attribute("#countries .dash-csv a", "href"))
    assert rows == [["Country", "Streams", "Listeners", "Plays"], ["DE", "2", "1", "2"], ["FR", "1", "1", "1"],
                    ["SE", "1", "1", "1"], ["No country given", "0", "1", "1"]]
    _, rows = await csv_rows(page, await page.get_attribute("#earnings .dash-csv a", "href"))
    assert rows[-1] == ["Total", "3.50"] and rows[0] == ["Source", "Earned (USD)"]
    missing = await page.request.get(f"{site}/dashboard?format=csv&table=nothing")
    assert missing.status == 404

    # A week at a time (the plain GET form, which keeps the chosen track), and a bad date: a message on
    # the page, not a crash.
    rkey = world["song_a"].uri.rsplit("/", 1)[-1]
    await page.goto(f"{site}/dashboard?track={rkey}")
    assert await page.get_attribute("form.dash-period input[name=track]", "value") == rkey
    await page.select_option("#dash-granularity", "week")
    await page.get_by_role("button", name="Show", exact=True).click()
    await page.wait_for_url(lambda u: "granularity=week" in u)
    assert parse_qs(urlsplit(page.url).query).get("track") == [rkey]
    assert await page.input_value("#dash-track") == rkey
    await page.locator("#streams-chart canvas").first.wait_for(timeout=15_000)
    assert (await cells(page, "streams", "paidStreams", "tfoot")) == ["1"]
    bad = await page.goto(f"{site}/dashboard?start=2026-02-30&end=2026-03-01")
    assert bad.status == 400
    text = await page.text_content("#dash-error")
    assert "The start is not a date: “2026-02-30”" in text and "YYYY-MM-DD" in text
    backwards = await page.goto(f"{site}/dashboard?start=2026-03-05&end=2026-03-01")
    assert backwards.status == 400 and "is before the start" in await page.text_content("#dash-error")
    too_long = await page.goto(f"{site}/dashboard?start=2020-01-01&end=2026-01-01&granularity=day")
    assert too_long.status == 400 and "366" in await page.text_content("#dash-error")
    too_long = await page.goto(f"{site}/dashboard?start=1900-01-01&end=2100-01-01")
    text = " ".join((await page.text_content("#dash-error")).split())
    assert too_long.status == 400 and "This period is 73,050 days long; a series by day covers at most 366 days. " \
        "Choose week or month, or a shorter period." in text, text
    assert "the period holds" not in text
    await page.screenshot(path=str(tmp_path / "artist-bad-date.png"), full_page=True)

    # Not an operator: the operator's page and its events are refused, clearly.
    refused = await page.goto(f"{site}/dashboard/operator")
    main = await page.text_content("main")
    assert refused.status == 403 and "Operators only" in main and "This page is for the operators of this server." in main
    assert await page.locator("main a[href='/dashboard']").count() == 1  # an artist: their dashboard
    assert (await page.request.get(f"{site}/dashboard/operator/events")).status == 403
    # Another artist's figures (no agreement): refused by the AppView, said in words, no DIDs, no form.
    other = await page.goto(f"{site}/dashboard?artist={world['lone'].handle}")
    main = await page.text_content("main")
    assert other.status == 403 and await page.text_content("h1") == "Not your artist"
    assert "you manage them" in main and "did:" not in main and "may not read the analytics" not in main
    assert await page.locator("form.dash-period").count() == 0

    # A phone, Spanish, the dark scheme.
    await page.goto(f"{site}/dashboard")
    await no_sideways_scroll(page, "/dashboard", tmp_path / "artist-390.png")
    await page.goto(f"{site}/dashboard?lang=es")
    await page.locator("#streams-chart canvas").first.wait_for(timeout=15_000)
    assert await page.get_attribute("html", "lang") == "es"
    assert "Alemania (DE)" in await page.text_content("#table-countries")
    await page.goto(f"{site}/dashboard?lang=en")
    dark = await browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="dark",
                                     storage_state=await context.storage_state())
    night = await dark.new_page()
    await night.goto(f"{site}/dashboard")
    await night.locator("#streams-chart canvas").first.wait_for(timeout=15_000)
    assert await night.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--dash-fg').trim()") == "#ddd"
    await night.screenshot(path=str(tmp_path / "artist-dark-1280.png"), full_page=True)
    await dark.close()
    assert problems == [], problems
    await context.close()


@network
async def test_manager_dashboard_in_chromium(net, world, browser, tmp_path):  # noqa: F811
    site = world["site"]
    context, page = await sign_in(browser, net, world, world["manager"], tmp_path, "manager")
    problems = watch(page)
    assert (await page.goto(f"{site}/dashboard/manager")).status == 200
    for chart in ("artists-chart", "revenue-by-artist-chart"):
        await page.locator(f"#{chart} canvas").first.wait_for(timeout=15_000)
    await page.screenshot(path=str(tmp_path / "manager-1280.png"), full_page=True)
    names = [await a.text_content() for a in await page.locator("#table-artists tbody th a").all()]
    assert names == ["Dash Artist", "Second Artist"]  # not Lone Artist: one side only
    assert world["lone"].handle in await page.text_content("#one-sided")
    assert await cells(page, "artists", "paidStreams") == ["1", "0"]
    assert await cells(page, "artists", "freeStreams") == ["3", "1"]
    assert [await cells(page, "artists", k, "tfoot") for k in ("paidStreams", "freeStreams", "shortPlays", "plays")] \
        == [["1"], ["4"], ["1"], ["6"]]
    assert await cells(page, "revenue-by-artist", "total") == ["350", "0"]
    assert await cells(page, "revenue-by-artist", "total", "tfoot") == ["350"]
    goes = [await td.text_content() for td in await page.locator("#table-payouts-to tbody td[data-key=to]").all()]
    assert goes == ["you", "the artist"]
    _, rows = await csv_rows(page, await page.get_attribute("#payouts-to .dash-csv a", "href"))
    assert [r[:2] for r in rows] == [["Artist", "Paid out to"], ["Dash Artist", "you"], ["Second Artist", "the artist"]]
    # An artist's own dashboard, opened from the table: the manager may read it (both sides agree).
    await page.locator("#table-artists tbody th a").first.click()
    await page.wait_for_url(lambda u: "/dashboard?artist=" in u)
    await page.locator("#streams-chart canvas").first.wait_for(timeout=15_000)
    assert await cells(page, "streams", "plays", "tfoot") == ["5"]
    # Their own /dashboard: no track, no artist role: what it is for, the studio and their artists.
    assert (await page.goto(f"{site}/dashboard")).status == 200
    assert await page.get_attribute("#dashboard-notice", "data-kind") == "listener"
    assert await page.locator(".dash-links a[href='/studio']").count() == 1
    assert await page.locator(".dash-links a[href='/dashboard/manager']").count() == 1
    await page.goto(f"{site}/dashboard/manager")
    await no_sideways_scroll(page, "/dashboard/manager", tmp_path / "manager-390.png")
    assert problems == [], problems
    await context.close()


@network
async def test_operator_dashboard_live_in_chromium(net, world, browser, tmp_path):  # noqa: F811
    site, rt, operator = world["site"], world["rt"], world["operator"]
    context, page = await sign_in(browser, net, world, operator, tmp_path, "operator")
    problems = watch(page)
    resp = await page.goto(f"{site}/dashboard/operator")
    assert resp.status == 200
    await page.locator("#money-chart canvas").first.wait_for(timeout=15_000)
    overview = (await ask(rt, operator, AN + "getOverview")).json()
    usd = next(m for m in overview["money"] if m["currency"] == "USD")
    assert usd["creditSold"] >= 1000 and usd["tips"] >= 350 and overview["subscriptions"]["active"] >= 1
    assert await page.get_attribute("#live-creditSold", "data-value") == str(usd["creditSold"])
    assert await page.get_attribute("#live-active", "data-value") == str(overview["subscriptions"]["active"])
    assert await page.get_attribute("#live-conversionRateBps", "data-value") == \
        str(overview["conversion"]["conversionRateBps"])
    # Live: an event arrives and the script writes its figures (the same numbers) and the time.
    status = page.locator("#live-status[data-events]")
    await status.wait_for(timeout=15_000)
    assert (await status.text_content()).startswith("Updated at")
    assert await page.get_attribute("#live-tips", "data-value") == str(usd["tips"])
    await page.screenshot(path=str(tmp_path / "operator-1280.png"), full_page=True)

    # The event stream itself, read as any client would (with the operator's session cookie).
    cookies = {c["name"]: c["value"] for c in await context.cookies() if c["name"] == "om_session"}
    async with httpx.AsyncClient(base_url=site, cookies=cookies, timeout=30) as http:
        async with http.stream("GET", "/dashboard/operator/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines: list[str] = []
            async for line in stream.aiter_lines():
                lines.append(line)
                if line.startswith("data:") and any(x == "event: overview" for x in lines):
                    break
        figures = json.loads(lines[-1].removeprefix("data:"))
        assert lines[0] == "retry: 3000"
        assert figures["creditSold"] == usd["creditSold"] and figures["currency"] == "USD"
        assert figures["active"] == overview["subscriptions"]["active"] and "firehoseCurrent" in figures
        bad = await http.get("/dashboard/operator/events", params={"start": "yesterday"})
        assert bad.status_code == 400 and "not a date" in bad.text
    async with httpx.AsyncClient(base_url=site) as anon:
        assert (await anon.get("/dashboard/operator/events")).status_code == 401

    _, rows = await csv_rows(page, await page.get_attribute("#subscribers .dash-csv a", "href"))
    assert rows[0] == ["Subscribers", "Listeners"] and rows[-1] == ["Active at the end",
                                                                     str(overview["subscriptions"]["active"])]
    await no_sideways_scroll(page, "/dashboard/operator", tmp_path / "operator-390.png")
    assert problems == [], problems
    await context.close()


@network
async def test_signed_out_static_files_and_csv_units(world):
    site = world["site"]
    async with httpx.AsyncClient(base_url=site) as http:
        for path in ("/dashboard", "/dashboard/manager", "/dashboard/operator"):
            resp = await http.get(path)
            assert resp.status_code == 303 and resp.headers["location"].startswith("/login?next=")
        js = await http.get("/static/vendor/uplot/uPlot.iife.min.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "uPlot" in js.text[:4000]
        style = await http.get("/static/vendor/uplot/uPlot.min.css")
        assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
        for other in ("package.json", "uPlot.esm.js", "..%2F..%2Fpackage.json"):
            assert (await http.get(f"/static/vendor/uplot/{other}")).status_code == 404
    table = Table("t", "T", [Column("title", "Title", "text"), Column("n", "Plays"), Column("m", "Earned", "money"),
                             Column("s", "Share", "bps")],
                  rows=[{"title": "=HYPERLINK(1)", "n": 3, "m": 1234, "s": 2500}], currency="USD")
    assert csv_text(table) == "Title,Plays,Earned (USD),Share (%)\r\n'=HYPERLINK(1),3,12.34,25.00\r\n"


@network
async def test_listener_sees_plain_pages_in_chromium(net, world, browser, tmp_path):  # noqa: F811
    """A listener (no track, no artist role): /dashboard says what it is for; another artist's
    figures and the operator's page are refused in plain words."""
    site, artist = world["site"], world["artist"]
    context, page = await sign_in(browser, net, world, world["listeners"][0], tmp_path, "listener")
    problems = watch(page)
    resp = await page.goto(f"{site}/dashboard")
    assert resp.status == 200
    await page.screenshot(path=str(tmp_path / "listener-1280.png"), full_page=True)
    assert await page.get_attribute("#dashboard-notice", "data-kind") == "listener"
    main = " ".join((await page.text_content("main")).split())
    assert "shows an artist's figures" in main and "no tracks here yet" in main
    assert await page.locator(".dash-links a[href='/studio']").count() == 1
    assert await page.locator(".dash-links a[href='/dashboard/manager']").count() == 0  # no manager role
    assert await page.locator("#figures").count() == 0 and await page.locator("form.dash-period").count() == 0
    assert "Dashboard:" not in await page.text_content("h1")

    other = await page.goto(f"{site}/dashboard?artist={artist.handle}")
    assert other.status == 403
    await page.screenshot(path=str(tmp_path / "listener-403-1280.png"), full_page=True)
    main = await page.text_content("main")
    assert await page.text_content("h1") == "Not your artist" and "Dash Artist" not in main
    assert "did:" not in main and await page.locator("form.dash-period").count() == 0
    assert await page.get_attribute("#dashboard-notice", "data-kind") == "not-your-artist"

    ops = await page.goto(f"{site}/dashboard/operator")
    main = await page.text_content("main")
    assert ops.status == 403 and "This page is for the operators of this server." in main
    assert "/dashboard" not in main and await page.locator("main a[href='/dashboard']").count() == 0
    assert await page.locator("main a[href='/me']").count() == 1
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{site}/dashboard")
    await page.screenshot(path=str(tmp_path / "listener-390.png"), full_page=True)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    assert problems == [], problems
    await context.close()


def dashboards() -> Dashboards:
    """``Dashboards`` over just what ``period`` needs (the English catalog)."""
    web = SimpleNamespace(settings=SimpleNamespace(currency="usd"), templates=Languages(jinja2.DictLoader({}), {}))
    return Dashboards(web, None)  # type: ignore[arg-type]


def query(text: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/dashboard", "query_string": text.encode(),
                    "headers": []})


def test_period_too_long_for_its_granularity_in_words():
    dash = dashboards()
    got = dash.period(query("start=1900-01-01&end=2100-01-01"))
    assert got.errors == ["This period is 73,050 days long; a series by day covers at most 366 days. "
                          "Choose week or month, or a shorter period."]
    got = dash.period(query("start=2020-01-01&end=2023-01-01&granularity=week"))
    assert got.errors == ["This period is 1,097 days long; a series by week covers at most 731 days. "
                          "Choose month, or a shorter period."]
    got = dash.period(query("start=1900-01-01&end=2100-01-01&granularity=month"))
    assert got.errors[0].endswith("a series by month covers at most 3,660 days. Choose a shorter period.")
    assert dash.period(query("start=2025-01-01&end=2025-12-31")).errors == []  # 365 days by day
    assert dash.period(query("start=2020-01-01&end=2026-01-01&granularity=month")).errors == []
    assert dash.period(query("start=2026-03-05&end=2026-03-01")).errors == [
        "The end (Mar 1, 2026) is before the start (Mar 5, 2026)."]  # not also "too long"


def test_tabs_follow_who_the_viewer_is():
    def tabs(current: str, **who: bool) -> list[str]:
        v = Viewer("did:plc:x", None, who.get("artist", False), who.get("manager", False), who.get("operator", False))
        return [t["id"] for t in v.tabs(current, lambda s: s)]
    assert tabs("artist", artist=True) == []  # an artist who manages nobody: no "Manager" tab
    assert tabs("artist", artist=True, manager=True) == ["artist", "manager"]
    assert tabs("manager", manager=True) == []
    assert tabs("manager", manager=True, operator=True) == ["manager", "operator"]
    assert tabs("operator", artist=True, operator=True) == ["artist", "operator"]
    assert tabs("artist", artist=True, manager=True, operator=True) == ["artist", "manager", "operator"]


def test_first_bucket_shown_from_the_period_start():
    data = {"start": "2026-11-01", "buckets": [{"bucket": "2026-10-26", "plays": 1}, {"bucket": "2026-11-02", "plays": 2}]}
    assert shown_buckets(data) == [{"bucket": "2026-11-01", "plays": 1}, {"bucket": "2026-11-02", "plays": 2}]
    assert data["buckets"][0]["bucket"] == "2026-10-26"  # the answer itself is left as it is
