"""Latency of the analytics queries (``fm.openmusic.analytics.*``) and the time to rebuild their
rollups, on ``bench.queries``' database (100,000 tracks by 2,000 artists, 1,000,000 plays by 20,000
listeners, November 2026), whose plays are given here what real players send: segments heard (most
from the start until the listener stops, some skipping ahead, some seeking back to hear a part
again), an opt-in country on 60% of them, and the streams decisions (``heard_ms``, paid for the 20%
of listeners on a paid tier).

Requests go through the real Starlette app in-process over ASGI, each with its own service-auth
JWT (ES256K, verified by ``payments.auth.ServiceAuth``: signature and replay check included), from
an operator. p50 / p99 per query.

    python -m bench.analytics [--tracks 100000] [--plays 1000000] [--requests 1000] [--db PATH] [--reuse]

``--reuse`` measures the queries again on a database an earlier run built (no build, no rebuild).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import sqlite3
import statistics
import time
from pathlib import Path

import coincurve
import httpx
from atproto_crypto.consts import SECP256K1_JWT_ALG
from atproto_crypto.did import format_did_key

from bench.firehose import cpu_model
from bench.queries import build
from bench.record import DATA
from core.config import Settings
from indexer import rollups, streams

NS = "fm.openmusic.analytics."
OPERATOR = "did:plc:" + "o" * 24
SERVICE = "did:web:bench.example"
KEY = coincurve.PrivateKey()
#: (country, weight): where the plays that give a country come from
COUNTRIES = [("US", 30), ("DE", 12), ("GB", 10), ("BR", 8), ("FR", 7), ("JP", 6), ("MX", 5), ("SE", 4), ("ES", 4),
             ("IT", 3), ("CA", 3), ("NL", 2), ("AR", 2), ("KR", 2), ("PL", 1), ("AU", 1)]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def token(lxm: str, n: int) -> str:
    """A service-auth JWT from the operator for ``lxm`` (jti ``n``)."""
    payload = {"iss": OPERATOR, "aud": SERVICE, "lxm": lxm, "exp": int(time.time()) + 60, "jti": f"bench-{n}"}
    signing_input = f"{_b64(json.dumps({'alg': 'ES256K', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(payload).encode())}"
    sig = KEY.sign_recoverable(signing_input.encode(), hasher=lambda m: hashlib.sha256(m).digest())[:64]
    return f"{signing_input}.{_b64(sig)}"


def listening(rng: random.Random, listened: int, duration: int) -> list[dict[str, int]]:
    """The segments a player would send for ``listened`` ms of a ``duration`` ms track."""
    kind = rng.random()
    end = min(listened, duration)
    if kind < 0.75 or end < 20_000:  # from the start until the listener stops
        return [{"startMs": 0, "endMs": end}]
    cut = rng.randrange(5_000, end - 10_000)
    if kind < 0.9:  # skips ahead once
        jump = rng.randrange(cut, duration - (end - cut) + 1)
        return [{"startMs": 0, "endMs": cut}, {"startMs": jump, "endMs": jump + end - cut}]
    back = rng.randrange(0, cut)  # seeks back and hears a part again
    return [{"startMs": 0, "endMs": cut}, {"startMs": back, "endMs": back + end - cut}]


def enrich(path: str, seed: int = 3) -> None:
    """Give every play segments, maybe a country, and its decisions, as the indexer would store them."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    codes, weights = zip(*COUNTRIES, strict=True)
    paid_listeners = set()
    rows = conn.execute("SELECT p.uri, p.did, p.listened_ms, t.duration_ms FROM play p JOIN track t ON t.uri = p.track_uri "
                        "ORDER BY p.rowid").fetchall()
    updates = []
    for uri, did, listened, duration in rows:
        if did not in paid_listeners and int(did[-2:]) % 5 == 0:  # a fifth of the listeners
            paid_listeners.add(did)
        raw = listening(rng, listened, duration)
        merged = streams.merge_segments(raw)
        again = rollups.replayed_ms(raw)
        heard = streams.heard_ms(listened, merged, duration)
        stream = heard >= streams.threshold_ms(duration)
        country = rng.choices(codes, weights)[0] if rng.random() < 0.6 else None
        updates.append((json.dumps(merged, separators=(",", ":")), json.dumps(again, separators=(",", ":")) if again
                        else None, country, heard, int(stream), int(stream and did in paid_listeners),
                        heard if stream else 0, uri))
    conn.executemany("UPDATE play SET segments = ?, replayed = ?, country = ?, heard_ms = ?, stream = ?, paid = ?, "
                     "stream_ms = ? WHERE uri = ?", updates)
    conn.commit()
    conn.close()


def rebuild(path: str) -> tuple[float, dict[str, int], float]:
    """Rebuild the rollups (timed), then check them against a recount (timed): (rebuild s, rows, check s)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    counts = rollups.rebuild(conn)
    conn.execute("COMMIT")
    took = time.perf_counter() - started
    conn.execute("ANALYZE")
    started = time.perf_counter()
    conn.execute("BEGIN")
    differing, lines = rollups.check(conn)
    conn.execute("ROLLBACK")
    checked = time.perf_counter() - started
    conn.close()
    assert not any(differing.values()), lines
    return took, counts, checked


async def measure(path: str, requests: int) -> dict[str, list[float]]:
    from appview.app import create_app
    from openmusic.runtime import Runtime
    from payments.auth import ServiceAuth

    rt = Runtime(Settings(db_path=path, blob_cache_dir=str(Path(path).parent / "blobs"), operator_dids=OPERATOR,
                          log_level="WARNING"))
    await rt.start(firehose=False)
    did_key = format_did_key(SECP256K1_JWT_ALG, KEY.public_key.format(compressed=True))

    async def key(did: str, refresh: bool) -> str | None:
        return did_key if did == OPERATOR else None

    rt.auth = ServiceAuth(SERVICE, key, await rt._connect())
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    hot_tracks = [r[0] for r in reader.execute("SELECT track_uri FROM track_stats ORDER BY plays DESC LIMIT 20")]
    tracks = [r[0] for r in reader.execute("SELECT uri FROM track")]
    artists = [r[0] for r in reader.execute("SELECT DISTINCT did FROM track")]
    hot_artists = [r[0] for r in reader.execute(
        "SELECT t.did FROM track t JOIN track_stats s ON s.track_uri = t.uri GROUP BY t.did "
        "ORDER BY SUM(s.plays) DESC LIMIT 5")]
    reader.close()
    rng = random.Random(4)
    month = {"start": "2026-11-01", "end": "2026-11-30"}
    year = {"start": "2026-01-01", "end": "2026-12-31"}
    cases = {
        "getStreams track, by day, 30 days": lambda: ("getStreams", {"track": rng.choice(tracks), **month}),
        "getStreams hot track, by day": lambda: ("getStreams", {"track": rng.choice(hot_tracks), **month}),
        "getStreams artist, by day": lambda: ("getStreams", {"artist": rng.choice(artists), **month}),
        "getStreams top artist, by day": lambda: ("getStreams", {"artist": rng.choice(hot_artists), **month}),
        "getStreams top artist, by week, 1 year": lambda: ("getStreams", {"artist": rng.choice(hot_artists),
                                                                          "granularity": "week", **year}),
        "getStreams top artist, by month, 1 year": lambda: ("getStreams", {"artist": rng.choice(hot_artists),
                                                                           "granularity": "month", **year}),
        "getRetention track": lambda: ("getRetention", {"track": rng.choice(tracks)}),
        "getRetention hot track": lambda: ("getRetention", {"track": rng.choice(hot_tracks)}),
        "getCountries hot track": lambda: ("getCountries", {"track": rng.choice(hot_tracks), **month}),
        "getCountries top artist": lambda: ("getCountries", {"artist": rng.choice(hot_artists), **month}),
        "getTopTracks artist": lambda: ("getTopTracks", {"artist": rng.choice(artists), **month}),
        "getTopTracks top artist": lambda: ("getTopTracks", {"artist": rng.choice(hot_artists), **month}),
        "getTopListeners hot track": lambda: ("getTopListeners", {"track": rng.choice(hot_tracks), **month}),
        "getTopListeners top artist": lambda: ("getTopListeners", {"artist": rng.choice(hot_artists), **month}),
    }
    timings: dict[str, list[float]] = {}
    n = 0
    transport = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for name, make in cases.items():
            samples = []
            for i in range(requests + 50):  # the first 50 warm the page and statement caches
                method, params = make()
                n += 1
                headers = {"Authorization": f"Bearer {token(NS + method, n)}"}
                start = time.perf_counter()
                resp = await client.get(f"/xrpc/{NS}{method}", params=params, headers=headers)
                took = (time.perf_counter() - start) * 1000
                assert resp.status_code == 200, resp.text
                if i >= 50:
                    samples.append(took)
            timings[name] = samples
    await rt.stop()
    return timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--plays", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--db", default=str(DATA / "analytics.sqlite"))
    ap.add_argument("--reuse", action="store_true", help="measure the queries on the database an earlier run built")
    args = ap.parse_args()
    path = Path(args.db)
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs", flush=True)
    if not args.reuse or not path.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        print(f"building {args.tracks:,} tracks and {args.plays:,} plays ...", flush=True)
        started = time.perf_counter()
        build(str(path), args.tracks, args.plays)
        enrich(str(path))
        print(f"built in {time.perf_counter() - started:.0f} s", flush=True)
        took, counts, checked = rebuild(str(path))
        print(f"rollup rebuild: {took:.1f} s ({', '.join(f'{t} {n:,} rows' for t, n in counts.items())}); "
              f"analytics check (recount and compare): {checked:.1f} s; database {path.stat().st_size / 1e6:.0f} MB",
              flush=True)
    timings = asyncio.run(measure(str(path), args.requests))
    print(f"\n{'query':42} {'p50 ms':>8} {'p99 ms':>8}   ({args.requests} requests each, in-process ASGI, JWT verified)")
    for name, samples in timings.items():
        q = statistics.quantiles(samples, n=100)
        print(f"{name:42} {q[49]:8.2f} {q[98]:8.2f}")


if __name__ == "__main__":
    main()
