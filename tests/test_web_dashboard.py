"""The analytics dashboards (``web/dashboard*.py``), for real: the AppView with payments on (Stripe is
localstripe, the network the reference PDS) serves them; Debian's Chromium signs an artist, a manager
and an operator in on the PDS, and each dashboard draws its charts with uPlot (served by us from
web/node_modules) and shows, in its tables, the figures of the plays, subscription and tips this test
wrote. CSV exports, the operator's server-sent events, a non-operator's 403 and a bad date are checked
too; screenshots (1280 px, 390 px, dark) go to the test's tmp dir.

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
from urllib.parse import urljoin

import httpx
import pytest

from core.lexicons import PLAY
from core.publish import now_iso, publish_profile, publish_track, tip
from devkit.demo_payments import card_payment_method
from devkit.media import tune_wav
from tests.conftest import eventually
from tests.test_payments_e2e import buy_credit, call
from tests.test_web_oauth_browser import PASSWORD, pds_sign_in, start_sign_in
from tests.test_web_pages import browser, indexed  # noqa: F401  (browser: a fixture)
from web.dashboard_tables import Column, Table, csv_text

pytestmark = pytest.mark.network
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
    _, rows = await csv_rows(page, await page.get_attribute("#countries .dash-csv a", "href"))
    assert rows == [["Country", "Streams", "Listeners", "Plays"], ["DE", "2", "1", "2"], ["FR", "1", "1", "1"],
                    ["SE", "1", "1", "1"], ["No country given", "0", "1", "1"]]
    _, rows = await csv_rows(page, await page.get_attribute("#earnings .dash-csv a", "href"))
    assert rows[-1] == ["Total", "3.50"] and rows[0] == ["Source", "Earned (USD)"]
    missing = await page.request.get(f"{site}/dashboard?format=csv&table=nothing")
    assert missing.status == 404

    # A week at a time (the plain GET form), and a bad date: a message on the page, not a crash.
    await page.select_option("#dash-granularity", "week")
    await page.get_by_role("button", name="Show", exact=True).click()
    await page.wait_for_url(lambda u: "granularity=week" in u)
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
    await page.screenshot(path=str(tmp_path / "artist-bad-date.png"), full_page=True)

    # Not an operator: the operator's page and its events are refused, clearly.
    refused = await page.goto(f"{site}/dashboard/operator")
    assert refused.status == 403 and "Operators only" in await page.text_content("main")
    assert (await page.request.get(f"{site}/dashboard/operator/events")).status == 403
    # Another artist's figures (no agreement): refused by the AppView, said on the page.
    other = await page.goto(f"{site}/dashboard?artist={world['lone'].handle}")
    assert other.status == 403 and "may not read the analytics" in await page.text_content("#dash-error")

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
    await page.goto(f"{site}/dashboard/manager")
    await no_sideways_scroll(page, "/dashboard/manager", tmp_path / "manager-390.png")
    assert problems == [], problems
    await context.close()


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
