"""Replay a recorded firehose (``bench.record``) through our consumer and indexer, and print figures.

A relay process serves the recorded frames over a loopback WebSocket as fast as it can; the real
``FirehoseConsumer`` + ``Indexer`` (SQLite, 500 events a transaction) consume them in another
process, once with commit verification off and once on, each into a fresh database. Signing keys
are pre-loaded into the identity cache (the recording's PLC directory is gone), so no network is
involved. In the same run a baseline loop decodes every frame with the atproto SDK
(``parse_subscribe_repos_message``), and our decoder alone runs over the same frames.

    python -m bench.firehose [--data bench/data] [--music-data bench/data/music]

With an all-music recording (``--music-data``), a third run replays it with verification on: every
commit is ours, so it measures verified music commits indexed per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.record import DATA, load


def best_rate(fn, frames: list[bytes], rounds: int = 3) -> float:
    """Best frames/s of ``fn(frame)`` over ``rounds`` passes."""
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for raw in frames:
            fn(raw)
        best = max(best, len(frames) / (time.perf_counter() - start))
    return best


def decode_rates(frames: list[bytes]) -> dict[str, float]:
    from atproto_firehose import parse_subscribe_repos_message
    from atproto_subscription.frames import MessageFrame

    from firehose.events import decode_frame
    from indexer.core import wanted

    return {
        "sdk_decode": best_rate(lambda raw: parse_subscribe_repos_message(MessageFrame.from_bytes(raw)), frames),
        "our_decode": best_rate(lambda raw: decode_frame(raw, wanted), frames),
    }


async def serve(port: int, data: Path) -> None:
    import websockets

    frames, _ = load(data)

    async def relay(ws) -> None:
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    async with websockets.serve(relay, "127.0.0.1", port, max_size=None, write_limit=1 << 22, compression=None):
        print("ready", flush=True)
        await asyncio.Future()


async def consume(port: int, data: Path, verify: bool) -> dict[str, float]:
    import httpx
    import libipld

    from core import db
    from core.config import Settings
    from core.identity import DidInfo, IdentityResolver, IdentityService
    from firehose.consumer import FirehoseConsumer
    from firehose.verify import Verifier
    from indexer.core import Indexer, wanted

    class RecordedResolver(IdentityResolver):
        """DID documents as recorded with the stream (the local PLC does not outlive the recording).
        ``#identity`` events in the stream make the consumer re-resolve, as it must on the network."""

        async def resolve_did(self, did: str) -> DidInfo:
            return DidInfo(did=did, handle=keys[did]["handle"], pds=None, signing_key=keys[did]["key"])

    frames, keys = load(data)
    last_seq = 0
    for raw in frames:
        header, body = libipld.decode_dag_cbor_multi(raw)
        last_seq = max(last_seq, body.get("seq", 0))
    del frames
    tmp = tempfile.mkdtemp(prefix="openmusic-bench-")
    path = f"{tmp}/bench.sqlite"
    db.migrate(path)
    conn = await db.connect(path)  # identity cache (pre-loaded keys); the indexer has its own writer
    for did, info in keys.items():
        await conn.execute("INSERT INTO actor (did, handle, handle_verified, pds, signing_key, resolved_at) "
                           "VALUES (?,?,1,'http://unused.invalid',?,?)", (did, info["handle"], info["key"], time.time()))
    settings = Settings(db_path=path)
    async with httpx.AsyncClient() as http:
        identity = IdentityService(settings, conn, RecordedResolver(settings, http))
        verifier = Verifier(identity, workers=settings.verify_workers) if verify else None
        if verifier:
            await verifier.start()
        indexer = Indexer(path, "bench", verifier=verifier)
        await indexer.open()
        consumer = FirehoseConsumer(f"ws://127.0.0.1:{port}", indexer, wanted, start_cursor=0,
                                    tracked=indexer.is_tracked)
        task = asyncio.create_task(consumer.run())
        while consumer.status.frames == 0:  # noqa: ASYNC110 (polling keeps the timer honest)
            await asyncio.sleep(0.001)
        start = time.perf_counter()
        while (consumer.status.last_seq or 0) < last_seq:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        consumer.stop()
        await task
        took = time.perf_counter() - start
    cur = await conn.execute("SELECT (SELECT COUNT(*) FROM record), (SELECT seq FROM cursor)")
    records, cursor = await cur.fetchone()
    await indexer.close()
    if verifier:
        verifier.close()
    await conn.close()
    assert cursor == last_seq, (cursor, last_seq)
    return {"seconds": took, "frames": consumer.status.frames, "records": records,
            "records_indexed": indexer.counters["records_indexed"],
            "verified": verifier.counters["verified"] if verifier else 0,
            "rejected": sum(v for k, v in (verifier.counters if verifier else {}).items() if k not in
                            ("verified", "not_inverted")),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def stream_stats(frames: list[bytes]) -> dict[str, int]:
    import libipld

    from indexer.core import wanted

    commits = music_commits = music_ops = 0
    for raw in frames:
        header, body = libipld.decode_dag_cbor_multi(raw)
        if header.get("t") == "#commit":
            commits += 1
            ops = [op for op in body.get("ops") or [] if wanted(op["path"].split("/")[0])]
            music_commits += bool(ops)
            music_ops += len(ops)
    return {"commits": commits, "music_commits": music_commits, "music_ops": music_ops}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--music-data", default=str(DATA / "music"), help="an all-music recording (optional)")
    ap.add_argument("--role", choices=["main", "relay", "consume"], default="main", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--verify", choices=["on", "off"], default="on", help=argparse.SUPPRESS)
    args = ap.parse_args()
    data = Path(args.data)
    if args.role == "relay":
        asyncio.run(serve(args.port, data))
        return
    if args.role == "consume":
        print(json.dumps(asyncio.run(consume(args.port, data, args.verify == "on"))))
        return
    if not (data / "stream.bin").exists():
        sys.exit(f"no recording in {data}: run `python -m bench.record` first")
    frames, _keys = load(data)
    st = stream_stats(frames)
    size = sum(map(len, frames)) / 1e6
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"stream: {len(frames)} frames ({size:.1f} MB), {st['commits']} commits, {st['music_commits']} with music "
          f"({100 * st['music_commits'] / max(1, st['commits']):.0f}%), {st['music_ops']} music records")
    rates = decode_rates(frames)
    del frames
    music = Path(args.music_data)
    runs = [("off", data), ("on", data)] + ([("music", music)] if (music / "stream.bin").exists() else [])
    results = {}
    for name, path in runs:
        port = 20000 + os.getpid() % 20000
        relay = subprocess.Popen([sys.executable, "-m", "bench.firehose", "--role", "relay", "--port", str(port),
                                  "--data", str(path)], stdout=subprocess.PIPE, text=True)
        try:
            assert relay.stdout.readline().strip() == "ready"
            out = subprocess.run([sys.executable, "-m", "bench.firehose", "--role", "consume", "--port", str(port),
                                  "--verify", "off" if name == "off" else "on", "--data", str(path)],
                                 capture_output=True, text=True, check=True)
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            relay.terminate()
            relay.wait()
    sdk = rates["sdk_decode"]
    print(f"\nbaseline, atproto SDK decode only (parse_subscribe_repos_message): {sdk:,.0f} frames/s")
    print(f"our decoder only (filter to fm.openmusic.*):                 {rates['our_decode']:,.0f} frames/s "
          f"({rates['our_decode'] / sdk:.2f}x the baseline)")
    for verify in ("off", "on"):
        r = results[verify]
        fps = r["frames"] / r["seconds"]
        print(f"\nconsumer + indexer over WebSocket into SQLite, verification {verify}:")
        print(f"  {fps:,.0f} frames/s ({fps / sdk:.2f}x the baseline), {r['seconds']:.2f}s for {r['frames']} frames")
        print(f"  {st['music_commits'] / r['seconds']:,.0f} music commits/s, {r['records_indexed'] / r['seconds']:,.0f} "
              f"music records indexed/s ({r['records']} records in the database)")
        if verify == "on":
            print(f"  {r['verified'] / r['seconds']:,.0f} commits verified/s ({r['verified']} verified: signature, "
                  f"MST inclusion, prevData inversion; {r['rejected']} rejected)")
        print(f"  peak memory of the consumer process: {r['peak_rss_mb']:.0f} MB")
    if "music" in results:
        r = results["music"]
        print(f"\nall-music stream ({music}), every commit verified and indexed:")
        print(f"  {r['verified'] / r['seconds']:,.0f} verified music commits/s indexed ({r['verified']} commits, "
              f"{r['records_indexed']} records, {r['rejected']} rejected, {r['seconds']:.2f}s); "
              f"peak memory {r['peak_rss_mb']:.0f} MB")
    else:
        print(f"\n(no all-music recording in {music}: `python -m bench.record --music-accounts 20 --music-share 1 "
              f"--commits 10000 --out {music}` measures verified music commits/s)")

if __name__ == "__main__":
    main()
