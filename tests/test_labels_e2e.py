"""Labels end to end: a labeler of our own (``devkit.labeler``: a did:web on localhost with an
``#atproto_label`` key and an ``#atproto_labeler`` service, signing as the Labels spec says and
serving ``subscribeLabels`` over a real WebSocket) is configured in ``OPENMUSIC_LABELERS`` of an
AppView on the reference network, where an artist publishes through the PDS.

Proves: a ``!takedown`` of a track takes it out of getTrack, getTrackStats, search, charts, feeds
and the audio proxy, and a negation brings it back; a ``!takedown`` of the account hides the
profile and all its tracks and comes back when negated; labels with a bad signature or from a
labeler not configured change nothing and are counted in ``/health``; an expiring takedown ends by
itself; views carry the labels of the accepted labelers (``atproto-accept-labelers``) and answer
``atproto-content-labelers``.
"""

from __future__ import annotations

import itertools

from appview import charts
from core.publish import publish_profile
from devkit.labeler import Labeler
from tests.conftest import devnet_settings, eventually, serving
from tests.test_e2e import ok, publish_wav, xrpc

_n = itertools.count()


async def gone(rt, nsid: str, error: str = "NotFound", **params) -> bool:
    resp = await xrpc(rt, nsid, **params)
    return resp.status_code == 400 and resp.json()["error"] == error


async def listed(rt, uri: str, title: str, genre: str) -> dict[str, bool]:
    """Where the track ``uri`` shows: search by ``title``, the new chart and the genre feed."""
    charts.clear_cache()  # charts cache their ranking for a minute; takedowns apply on hydration anyway
    search = await ok(rt, "fm.openmusic.catalog.searchTracks", q=title)
    chart = await ok(rt, "fm.openmusic.feed.getChart", chart="new", genre=genre)
    feed = await ok(rt, "fm.openmusic.feed.getFeed", feed=f"genre:{genre}")
    return {"search": uri in {t["uri"] for t in search["tracks"]},
            "chart": uri in {t["uri"] for t in chart["tracks"]},
            "feed": uri in {t["uri"] for t in feed["feed"]}}


async def test_labels_hide_and_restore(net, make_client, tmp_path):
    async with Labeler() as labeler, serving(devnet_settings(net, tmp_path, labelers=labeler.did)) as rt:
        artist = make_client("labelled")
        publish_profile(artist, "Labelled Band", roles=["artist"])
        genre = f"labeltest{next(_n)}{artist.did[-6:]}"
        t1 = publish_wav(artist, tmp_path, 31, "Quartzline Anthem", extra={"genre": genre})
        t2 = publish_wav(artist, tmp_path, 32, "Quartzline Ballad", extra={"genre": genre})
        view = (await eventually(lambda: ok(rt, "fm.openmusic.catalog.getTrack", uri=t1.uri)))["track"]
        await eventually(lambda: ok(rt, "fm.openmusic.catalog.getTrack", uri=t2.uri))
        audio = view["audioUrl"].removeprefix(rt.settings.base_url)
        await eventually(lambda: labeler_connected(rt))
        assert await listed(rt, t1.uri, "quartzline", genre) == {"search": True, "chart": True, "feed": True}
        assert (await rt.http_client.get(audio)).status_code == 200

        # a track taken down disappears everywhere, and comes back when negated
        await labeler.emit(t1.uri, "!takedown")
        await eventually(lambda: gone(rt, "fm.openmusic.catalog.getTrack", uri=t1.uri))
        assert await gone(rt, "fm.openmusic.listen.getTrackStats", uri=t1.uri)
        assert await listed(rt, t1.uri, "quartzline", genre) == {"search": False, "chart": False, "feed": False}
        assert (await rt.http_client.get(audio)).status_code == 404
        assert (await listed(rt, t2.uri, "quartzline", genre))["search"]  # the other track is untouched
        await labeler.emit(t1.uri, "!takedown", neg=True)
        await eventually(lambda: ok(rt, "fm.openmusic.catalog.getTrack", uri=t1.uri))
        assert await listed(rt, t1.uri, "quartzline", genre) == {"search": True, "chart": True, "feed": True}
        assert (await rt.http_client.get(audio)).status_code == 200

        # an account taken down: its profile and every track, until negated
        await labeler.emit(artist.did, "!takedown")
        await eventually(lambda: gone(rt, "fm.openmusic.actor.getProfile", "ActorNotFound", actor=artist.did))
        assert await gone(rt, "fm.openmusic.catalog.getTrack", uri=t2.uri)
        assert await listed(rt, t2.uri, "quartzline", genre) == {"search": False, "chart": False, "feed": False}
        assert (await rt.http_client.get(audio)).status_code == 404
        await labeler.emit(artist.did, "!takedown", neg=True)
        await eventually(lambda: ok(rt, "fm.openmusic.actor.getProfile", actor=artist.did))
        assert (await listed(rt, t2.uri, "quartzline", genre))["feed"]

        # bad input changes nothing and is counted; a good label after it shows the stream went on
        await labeler.emit(t2.uri, "!takedown", bad_signature=True)
        await labeler.emit(t2.uri, "!takedown", src="did:web:stranger.example")
        await labeler.emit(t2.uri, "porn")

        async def marked() -> dict | None:
            track = (await ok(rt, "fm.openmusic.catalog.getTrack", uri=t2.uri))["track"]
            return track if [lb["val"] for lb in track.get("labels", [])] == ["porn"] else None
        track = await eventually(marked)
        assert track["labels"][0]["src"] == labeler.did
        health = (await rt.http_client.get("/health")).json()["labels"]
        assert health["counters"]["bad_signature"] == 1 and health["counters"]["unknown_labeler"] == 1
        assert health["labelers"][0]["did"] == labeler.did and health["labelers"][0]["connected"]

        # the client picks the labelers whose labels it sees
        resp = await xrpc(rt, "fm.openmusic.catalog.getTrack", uri=t2.uri)
        assert resp.headers["atproto-content-labelers"] == f"{labeler.did}, {rt.settings.service_did_resolved}"
        resp = await rt.http_client.get("/xrpc/fm.openmusic.catalog.getTrack", params={"uri": t2.uri},
                                        headers={"atproto-accept-labelers": "did:web:someone.example"})
        assert "labels" not in resp.json()["track"] and resp.headers["atproto-content-labelers"] == ""

        # an expiring takedown ends by itself (the sweep runs every few seconds)
        await labeler.emit(t2.uri, "!takedown", exp_in_s=20)
        await eventually(lambda: gone(rt, "fm.openmusic.catalog.getTrack", uri=t2.uri))
        await eventually(lambda: ok(rt, "fm.openmusic.catalog.getTrack", uri=t2.uri), timeout=60)


async def labeler_connected(rt) -> bool:
    return bool(rt.label_consumers) and rt.label_consumers[0].status.connected
