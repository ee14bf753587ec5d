"""Account lifecycle on the reference PDS (atproto account spec): deactivation, takedown and
reactivation through the PDS's own API emit ``#account`` events; the AppView hides an inactive
account's records, views, stats and audio at once, brings them back (with a resync) on
reactivation, and purges them when the account is deleted."""

from __future__ import annotations

import httpx

from core.publish import like, publish_track, record_play
from devkit.media import tune_wav
from tests.conftest import eventually
from tests.test_e2e import ok, xrpc


async def visible(rt, uri: str) -> bool:
    resp = await xrpc(rt, "fm.openmusic.catalog.getTrack", uri=uri)
    return resp.status_code == 200


async def test_deactivate_takedown_reactivate_delete(appview, make_client, net, tmp_path):
    artist, fan, other = make_client("lifeartist"), make_client("lifefan"), make_client("lifeother")
    wav = tmp_path / "a.wav"
    wav.write_bytes(tune_wav(41, seconds=1))
    t = publish_track(artist, wav, title="Lifecycle Song")
    own = publish_track(fan, wav, title="Fan Made")
    record_play(fan, t, 900, completed=True)
    record_play(other, t, 400)
    like(fan, t)
    await eventually(lambda: visible(appview, own.uri))

    async def stats():
        return await ok(appview, "fm.openmusic.listen.getTrackStats", uri=t.uri)
    assert (await eventually(lambda: _when(stats, lambda s: s["plays"] == 2 and s["likes"] == 1)))["listenedMs"] == 1300
    audio_url = (await ok(appview, "fm.openmusic.catalog.getTrack", uri=t.uri))["track"]["audioUrl"]
    assert (await appview.http_client.get(audio_url)).status_code == 200

    # the fan deactivates: their track, profile and history vanish, and their plays and like leave the stats
    fan._call("POST", "com.atproto.server.deactivateAccount", json={})
    await eventually(lambda: _not(visible(appview, own.uri)))
    s = await stats()
    assert (s["plays"], s["uniqueListeners"], s["listenedMs"], s["likes"]) == (1, 1, 400, 0)
    resp = await xrpc(appview, "fm.openmusic.listen.getPlays", actor=fan.did)
    assert resp.json()["error"] == "ActorNotFound"

    # ... and comes back
    fan._call("POST", "com.atproto.server.activateAccount")
    await eventually(lambda: visible(appview, own.uri))
    s = await eventually(lambda: _when(stats, lambda s: s["plays"] == 2))
    assert (s["uniqueListeners"], s["listenedMs"], s["completions"], s["likes"]) == (2, 1300, 1, 1)
    assert len((await ok(appview, "fm.openmusic.listen.getPlays", actor=fan.did))["plays"]) == 1

    # the artist is taken down by the PDS's admin: track, stats and audio go at once
    admin = net.admin_headers()
    subject = {"$type": "com.atproto.admin.defs#repoRef", "did": artist.did}
    httpx.post(f"{net.pds_url}/xrpc/com.atproto.admin.updateSubjectStatus", headers=admin,
               json={"subject": subject, "takedown": {"applied": True, "ref": "test"}}).raise_for_status()
    await eventually(lambda: _not(visible(appview, t.uri)))
    assert (await xrpc(appview, "fm.openmusic.listen.getTrackStats", uri=t.uri)).json()["error"] == "NotFound"
    assert (await appview.http_client.get(audio_url)).status_code == 404
    assert (await xrpc(appview, "fm.openmusic.catalog.getArtistTracks", actor=artist.did)).json()["error"] == "ActorNotFound"
    httpx.post(f"{net.pds_url}/xrpc/com.atproto.admin.updateSubjectStatus", headers=admin,
               json={"subject": subject, "takedown": {"applied": False}}).raise_for_status()
    await eventually(lambda: visible(appview, t.uri))

    # the fan's account is deleted: everything of theirs is purged, stats shrink
    httpx.post(f"{net.pds_url}/xrpc/com.atproto.admin.deleteAccount", headers=admin,
               json={"did": fan.did}).raise_for_status()
    await eventually(lambda: _not(visible(appview, own.uri)))
    s = await eventually(lambda: _when(stats, lambda s: s["plays"] == 1))
    assert (s["uniqueListeners"], s["listenedMs"], s["likes"]) == (1, 400, 0)
    cur = await appview.reader.execute("SELECT COUNT(*) FROM record WHERE did = ?", (fan.did,))
    assert (await cur.fetchone())[0] == 0


async def _when(fetch, predicate):
    value = await fetch()
    return value if predicate(value) else None


async def _not(awaitable) -> bool:
    return not await awaitable
