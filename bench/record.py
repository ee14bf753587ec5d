"""Record a real firehose from Bluesky's reference PDS under load, for ``bench.firehose``.

Accounts write concurrently through the PDS's XRPC API. As on the real network, music is a small
share: a few accounts write music (half of their writes are our tracks, plays and likes, half are
posts), the others only ``app.bsky.*`` posts and follows; by default about 10% of commits are music.
The frames are saved as received (``bench/data/stream.bin``: 4-byte big-endian length + frame), with
each DID's signing key (``keys.json``), since the local PLC directory does not outlive the run.

    python -m bench.record [--commits 20000] [--accounts 20] [--music-accounts 4] [--music-share 0.5]

``make bench`` also records an all-music stream (``--music-accounts 20 --music-share 1 --commits
10000 --out bench/data/music``) to measure verified music commits/s when every commit is ours.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import websockets

from devkit.devnet import Devnet
from devkit.media import tune_wav

DATA = Path(__file__).resolve().parent / "data"
NOW = "2026-11-21T12:00:00.000Z"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=20000)
    ap.add_argument("--accounts", type=int, default=20)
    ap.add_argument("--music-accounts", type=int, default=4, help="accounts that write music")
    ap.add_argument("--music-share", type=float, default=0.5, help="share of a music account's writes that are music")
    ap.add_argument("--out", default=str(DATA))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with Devnet() as net:
        frames, accounts = asyncio.run(record(net, args))
        save(net, frames, accounts, out)


def save(net: Devnet, frames: list[bytes], accounts: list, out: Path) -> None:
    """Write the frames and the accounts' signing keys (from the PLC directory)."""
    from atproto_crypto.did import get_did_key

    keys = {}
    for acct in accounts:
        doc = httpx.get(f"{net.plc_url}/{acct.did}").json()
        vm = next(m for m in doc["verificationMethod"] if m["id"].endswith("#atproto"))
        keys[acct.did] = {"key": get_did_key(vm["type"], vm["publicKeyMultibase"]), "handle": acct.handle}
    with open(out / "stream.bin", "wb") as f:
        for frame in frames:
            f.write(struct.pack(">I", len(frame)) + frame)
    (out / "keys.json").write_text(json.dumps(keys))
    print(f"recorded {len(frames)} frames, {sum(map(len, frames)) / 1e6:.1f} MB -> {out / 'stream.bin'}")


async def record(net: Devnet, args: argparse.Namespace) -> tuple[list[bytes], list]:
    frames: list[bytes] = []
    done = asyncio.Event()

    async def listen() -> None:
        async with websockets.connect(f"{net.firehose_url}/xrpc/com.atproto.sync.subscribeRepos?cursor=0",
                                      max_size=5 * 1024 * 1024) as ws:
            while True:
                try:
                    frames.append(await asyncio.wait_for(ws.recv(), timeout=5))
                except TimeoutError:
                    if done.is_set():
                        return  # the writers are done and the stream has been quiet for 5 s

    listener = asyncio.create_task(listen())
    accounts = []
    for i in range(args.accounts):
        acct = net.create_account(f"bench{i:03d}.test", "bench-password-1")
        accounts.append(acct)
    print(f"recording {args.commits} commits from {args.accounts} accounts on {net.pds_url} ...", flush=True)
    started = time.monotonic()
    counter = iter(range(args.commits))
    lock = threading.Lock()
    audio = tune_wav(1, seconds=1)

    music_dids = {a.did for a in accounts[:args.music_accounts]}

    def writer(acct) -> int:
        rng = random.Random(acct.did)
        music_share = args.music_share if acct.did in music_dids else 0.0
        http = httpx.Client(base_url=net.pds_url, headers={"authorization": f"Bearer {acct.access_jwt}"}, timeout=60)
        blob = http.post("/xrpc/com.atproto.repo.uploadBlob", content=audio,
                         headers={"content-type": "audio/wav"}).json()["blob"]
        tracks: list[dict] = []
        n = 0
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            if rng.random() < music_share:
                kind = rng.random()
                if kind < 0.2 or not tracks:
                    rec = {"$type": "fm.openmusic.catalog.track", "title": f"Bench {n}", "audio": blob,
                           "duration": 1000, "genre": rng.choice(["Jazz", "Rock", "Ambient"]), "createdAt": NOW}
                    coll = "fm.openmusic.catalog.track"
                elif kind < 0.9:
                    coll, rec = "fm.openmusic.listen.play", {"$type": "fm.openmusic.listen.play",
                                                             "track": rng.choice(tracks), "createdAt": NOW,
                                                             "listenedMs": rng.randrange(1, 1000)}
                else:
                    coll, rec = "fm.openmusic.social.like", {"$type": "fm.openmusic.social.like",
                                                             "subject": rng.choice(tracks), "createdAt": NOW}
            elif rng.random() < 0.7:
                coll, rec = "app.bsky.feed.post", {"$type": "app.bsky.feed.post", "text": f"post {n} " * rng.randrange(1, 20),
                                                   "createdAt": NOW}
            else:
                coll, rec = "app.bsky.graph.follow", {"$type": "app.bsky.graph.follow",
                                                      "subject": rng.choice(accounts).did, "createdAt": NOW}
            resp = http.post("/xrpc/com.atproto.repo.createRecord", json={"repo": acct.did, "collection": coll,
                                                                          "record": rec})
            resp.raise_for_status()
            if coll == "fm.openmusic.catalog.track":
                tracks.append({"uri": resp.json()["uri"], "cid": resp.json()["cid"]})
            n += 1
        return n

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(len(accounts)) as pool:
        written = sum(await asyncio.gather(*(loop.run_in_executor(pool, writer, a) for a in accounts)))
    took = time.monotonic() - started
    done.set()
    await listener
    print(f"wrote {written} records in {took:.1f}s ({written / took:.0f} commits/s through the PDS)")
    return frames, accounts


def load(path: Path = DATA) -> tuple[list[bytes], dict[str, dict[str, str]]]:
    """The recorded frames and keys."""
    data = (path / "stream.bin").read_bytes()
    frames, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        frames.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return frames, json.loads((path / "keys.json").read_text())


if __name__ == "__main__":
    main()
