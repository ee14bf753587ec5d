"""What a resync costs for a big Bluesky repo: the posts it walks to find the few that share our pages.

Starts the reference PDS (``devkit.devnet``), writes ``--posts`` ordinary ``app.bsky.feed.post``
records (``applyWrites``, 200 a call), two posts that share an Open Music page and ten
``fm.teal.feed.play`` records to one account, fetches its repo with ``com.atproto.sync.getRepo``
and times, best of ``--rounds``, in this process:

- ``read_car``: parsing the CAR and checking every block against its CID (every resync pays it);
- ``load_snapshot`` over the ``fm.openmusic.*`` range only (what resync loaded before issue 14);
- ``load_snapshot`` over every collection the indexer indexes, posts through the decoder's
  ``ShareFilter`` (what ``indexer.resync`` does now);
- for comparison, decoding every post block (what walking posts without the filter would cost).

    python -m bench.resync [--posts 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import cbrrr
import httpx

from core.publish import PdsClient
from devkit import devnet
from firehose.car import read_car
from firehose.repo import load_snapshot
from indexer import share
from indexer.core import MODULES, SHARES

POST = "app.bsky.feed.post"
SITE = "http://127.0.0.1:9"


def best_ms(fn: Callable[[], object], rounds: int) -> float:
    """Best wall time of ``fn()`` over ``rounds`` calls, in milliseconds."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def fill(client: PdsClient, posts: int) -> None:
    """``posts`` ordinary posts, two shares of our pages and ten teal plays in ``client``'s repo."""
    def create(collection: str, value: dict) -> dict:
        return {"$type": "com.atproto.repo.applyWrites#create", "collection": collection,
                "value": {"$type": collection, **value}}
    writes = [create(POST, {"text": f"an ordinary post about nothing in particular, number {i}",
                            "createdAt": "2026-11-02T10:00:00Z", "langs": ["en"]}) for i in range(posts)]
    writes += [create(POST, {"text": f"listen {SITE}/track/{client.did}/3kabcdefghij{c}",
                             "createdAt": "2026-11-02T11:00:00Z"}) for c in "ab"]
    writes += [create("fm.teal.feed.play", {"trackName": f"Song {i}", "artists": [{"artistName": "Ada"}],
                                            "playedTime": "2026-11-01T12:00:00Z"}) for i in range(10)]
    for start in range(0, len(writes), 200):
        client._call("POST", "com.atproto.repo.applyWrites", json={"repo": client.did, "writes": writes[start:start + 200]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--posts", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    share.configure([SITE])
    if not devnet.NODE.exists():
        devnet.install()
    with devnet.Devnet() as net:
        net.create_account("poster.test", "bench-password-1234")
        client = PdsClient(net.pds_url, "poster.test", "bench-password-1234")
        start = time.perf_counter()
        fill(client, args.posts)
        written = time.perf_counter() - start
        car = httpx.get(f"{net.pds_url}/xrpc/com.atproto.sync.getRepo", params={"did": client.did}, timeout=120).content
        doc = httpx.get(f"{net.plc_url}/{client.did}/data", timeout=30).json()
        key = doc["verificationMethods"]["atproto"]
    _roots, blocks = read_car(car)
    collections = sorted(MODULES)
    keep = {POST: SHARES}
    snap = load_snapshot(car, client.did, key, collections, keep)
    assert snap.walked[POST] == args.posts + 2 and len(snap.records) == 12, (snap.walked, len(snap.records))

    def decode_all_posts() -> None:
        for path, (_cid, _record) in load_snapshot(car, client.did, key, [POST]).records.items():
            assert path.startswith(POST)

    print(f"python {platform.python_version()} on {platform.machine()}; {args.posts} posts + 2 shares + 10 teal "
          f"plays written in {written:.1f} s; repo CAR {len(car) / 1024:.0f} KiB, {len(blocks)} blocks")
    print(f"  read_car (parse + verify every block)          {best_ms(lambda: read_car(car), args.rounds):8.1f} ms")
    print(f"  load_snapshot, fm.openmusic.* only             "
          f"{best_ms(lambda: load_snapshot(car, client.did, key), args.rounds):8.1f} ms")
    print(f"  load_snapshot, all {len(collections)} collections, posts filtered "
          f"{best_ms(lambda: load_snapshot(car, client.did, key, collections, keep), args.rounds):8.1f} ms"
          f"  ({snap.walked[POST]} posts walked, {snap.dropped[POST]} dropped, {len(snap.records)} records kept)")
    print(f"  load_snapshot, posts decoded unfiltered        {best_ms(decode_all_posts, args.rounds):8.1f} ms")
    print(f"  cbrrr decode of every block in the CAR         "
          f"{best_ms(lambda: [cbrrr.decode_dag_cbor(b) for b in blocks.values()], args.rounds):8.1f} ms")


if __name__ == "__main__":
    main()
