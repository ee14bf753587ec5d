"""Signing in brings the reader back: from a track page's "Sign in" link through the PDS's pages and
the first-time /welcome (skipped) back to that track; the footer's language link keeps a search's
words; a like is not written twice by a double submit (see test_web_pages). Chromium on the real
runtime and reference PDS."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.test_web_oauth_browser import PASSWORD, pds_sign_in
from tests.test_web_pages import browser, indexed, path_of, published  # noqa: F401  (fixtures)

pytestmark = pytest.mark.network


async def test_sign_in_comes_back_to_the_page(net, make_client, appview, published, browser, tmp_path):  # noqa: F811
    _artist, track = published
    await indexed(appview, track.uri)
    site = appview.settings.base_url
    reader = make_client("comesback")
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(f"{site}{path_of(track.uri)}")
    link = page.locator("header a.who")
    href = await link.get_attribute("href")
    assert parse_qs(urlsplit(href).query)["next"] == [path_of(track.uri)]
    await link.click()
    await page.fill("#identifier", reader.handle)
    await page.get_by_role("button", name="Sign in").click()
    await pds_sign_in(page, net, PASSWORD, tmp_path, "01")
    await page.get_by_role("button", name="Authorize").click()
    await page.wait_for_url(lambda u: "/welcome" in u, timeout=30_000)  # a new account: onboarding first
    await page.locator("#skip").click()
    await page.wait_for_url(f"{site}{path_of(track.uri)}", timeout=15_000)
    assert f"@{reader.handle}" in await page.text_content("header")

    # The language link keeps the search.
    await page.goto(f"{site}/search?q=tide&sort=plays")
    spanish = page.locator('footer a[hreflang="es"]')
    assert parse_qs(urlsplit(await spanish.get_attribute("href")).query) == {
        "q": ["tide"], "sort": ["plays"], "lang": ["es"]}
    await spanish.click()
    await page.wait_for_url(lambda u: "lang=es" in u)
    assert await page.locator('input[name="q"]').first.input_value() == "tide"
    await context.close()
