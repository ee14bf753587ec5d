"""A broken chain (a commit the consumer never saw) marks the repo desynchronized; the resync
worker fetches the repo from the real PDS with getRepo, verifies it, and the index ends equal to
the PDS's actual state."""

from __future__ import annotations

import websockets

from core.lexicons import TRACK
from core.publish import publish_track
from devkit.media import tune_wav
from openmusic.runtime import Runtime
from tests.conftest import devnet_settings, eventually
from tests.test_forged import join, record_frames, split


async def test_missed_commit_triggers_a_verified_resync(net, make_client, tmp_path):
    artist = make_client("resync")
    wav = tmp_path / "a.wav"
    wav.write_bytes(tune_wav(51, seconds=1))
    t1 = publish_track(artist, wav, title="One")
    t2 = publish_track(artist, wav, title="Two")
    t3 = publish_track(artist, wav, title="Three")           # the relay will lose this commit
    artist.delete_record(TRACK, t2.uri.rsplit("/", 1)[1])
    current = artist._call("GET", "com.atproto.repo.getRecord",
                           params={"repo": artist.did, "collection": TRACK, "rkey": t1.uri.rsplit("/", 1)[1]})["value"]
    artist.put_record(TRACK, t1.uri.rsplit("/", 1)[1], {**current, "title": "One (edit)"})
    frames = [f for f in await record_frames(net, artist.did) if split(f)[1]["ops"]]
    assert len(frames) == 5
    served = [frames[0], frames[1], frames[3], frames[4]]
    seq_frames = []
    for i, raw in enumerate(served, start=1):
        header, body = split(raw)
        body["seq"] = i
        seq_frames.append(join(header, body))

    async def relay(ws):
        for frame in seq_frames:
            await ws.send(frame)
        await ws.wait_closed()

    async with websockets.serve(relay, "127.0.0.1", 0) as server:
        settings = devnet_settings(net, tmp_path)
        settings.firehose_url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        rt = Runtime(settings)
        await rt.start()
        try:
            async def synced():
                cur = await rt.reader.execute("SELECT title FROM track WHERE did = ? ORDER BY title", (artist.did,))
                return [r[0] for r in await cur.fetchall()] == ["One (edit)", "Three"]
            await eventually(synced)
            assert rt.indexer.counters["desynchronized"] >= 1 and rt.indexer.counters["resyncs"] >= 1
            cur = await rt.reader.execute("SELECT status, rev FROM repo_state WHERE did = ?", (artist.did,))
            status, rev = await cur.fetchone()
            head = artist._call("GET", "com.atproto.sync.getLatestCommit", params={"did": artist.did})
            assert (status, rev) == ("synchronized", head["rev"])
            cur = await rt.reader.execute("SELECT uri FROM track WHERE did = ? ORDER BY uri", (artist.did,))
            assert [r[0] for r in await cur.fetchall()] == sorted([t1.uri, t3.uri])
        finally:
            await rt.stop()
