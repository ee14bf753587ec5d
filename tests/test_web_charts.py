"""The charts page (``web.charts``) on a running AppView over the reference PDS: the new-releases
chart lists what was published, a genre filter keeps only that genre, the filters offer the genres
found (``getBrowse``), an unknown chart is a 400 page, and the page is the charts' in Spanish too."""

from __future__ import annotations

import httpx
import pytest

from core.publish import publish_profile, publish_track
from devkit.media import tune_wav
from tests.test_web_profile import indexed

pytestmark = pytest.mark.network


async def test_charts_page_lists_filters_and_refuses(net, make_client, appview, tmp_path):
    artist = make_client("chartsartist")
    publish_profile(artist, "Chart Artist", roles=["artist"])
    refs = []
    for i, (title, genre) in enumerate((("Polar Lights", "Chartwave"), ("Copper Sun", "Chartfolk"))):
        path = tmp_path / f"{i}.wav"
        path.write_bytes(tune_wav(40 + i, seconds=2.0))
        refs.append(publish_track(artist, path, title=title, extra={"genre": genre, "moods": ["bright"]}))
    for ref in refs:
        await indexed(appview, "fm.openmusic.catalog.getTrack", "track", uri=ref.uri)
    async with httpx.AsyncClient(base_url=appview.settings.base_url) as http:
        page = await http.get("/charts", params={"chart": "new"})
        assert page.status_code == 200 and "<h1>New releases</h1>" in page.text
        assert "Polar Lights" in page.text and "Copper Sun" in page.text
        assert page.text.index("Copper Sun") < page.text.index("Polar Lights")  # newest first
        assert '<option value="chartwave">chartwave (1)</option>' in page.text
        one = await http.get("/charts", params={"chart": "new", "genre": "Chartwave"})
        assert "Polar Lights" in one.text and "Copper Sun" not in one.text
        assert '<option value="chartwave" selected>' in one.text
        bad = await http.get("/charts", params={"chart": "loudest"})
        assert bad.status_code == 400 and "Choose a chart" in bad.text
        home = await http.get("/")
        assert 'href="/charts"' in home.text
        es = await http.get("/charts", params={"chart": "new", "lang": "es"})
        assert es.status_code == 200 and "Novedades" in es.text
