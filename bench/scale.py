"""Open Music at scale (issue 15, "Measured"): build a database of a given size with the workload
generator (``bench.generator``: every record through ``Indexer.apply``, the indexer's batch path),
then measure the AppView's XRPC under uvicorn with 16 concurrent clients.

Reported: the ingest rate (records/s inside ``Indexer.apply``; event generation not counted, no
signature verification), the database size, p50 / p99 per query (getTrack, searchTracks with one
common word and with two words, getArtistTracks, getTrackStats, getChart trending and top), and the
requests/s of the mix on 1 and on 2 API replicas (separate processes) against the same database.

    python -m bench.scale --engine postgresql|sqlite [--tracks 10000 --plays 100000] [--clients 16]
                          [--seconds 10] [--batch 500] [--copies K] [--db URL-or-PATH [--reuse]]

``--copies K`` grows the listening log K times after the ingest (``bench.copies``: copy 0's
listeners copied under new DIDs by SQL; ``tests/test_bench_copies.py`` checks the result equals
indexing the copies), for sizes the indexer cannot write in a session on this machine.

PostgreSQL: a throwaway cluster (``devkit.pgserver``; fsync off, as in the tests) unless ``--db``
gives a URL. SQLite: a file under a temporary folder unless ``--db`` gives one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from appview import recommend
from bench.copies import multiply
from bench.firehose import cpu_model
from bench.generator import GENRES, WORDS, Spec, Workload, ingest
from bench.http import RawClient, free_port, wait_ready
from bench.http import stop_server as stop_api

NS = "fm.openmusic."


def prepare(target: str) -> tuple[dict[str, list[str]], int]:
    """After the ingest: give every account a handle (as identity resolution would, so that the
    AppView never tries the network), ANALYZE, and sample keys to query. Returns (keys, size in
    bytes of the database)."""
    from core import db

    conn = db.connect_sync(target)
    try:
        conn.execute("UPDATE actor SET handle = substr(did, 9) || '.test', handle_verified = 1, "
                     "pds = 'http://unused.invalid', resolved_at = ?", (time.time() * 2,))
        conn.execute("ANALYZE")
        rng = random.Random(5)
        tracks = [r[0] for r in conn.execute("SELECT uri FROM track").fetchall()]
        artists = sorted({u.split("/")[2] for u in tracks})
        keys = {"tracks": rng.sample(tracks, min(5000, len(tracks))),
                "artists": rng.sample(artists, min(1000, len(artists)))}
        if db.is_postgres(target):
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        else:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = sum(Path(target + s).stat().st_size for s in ("", "-wal") if Path(target + s).exists())
    finally:
        conn.close()
    return keys, size


def start_api(target: str, port: int, workdir: Path, readers: int = 4) -> subprocess.Popen:
    """One API replica (``OPENMUSIC_ROLE=api``: the request side only; the leader's periodic work,
    the reputation refresh and the rest, is not running) on ``port`` (``bench.http --serve``)."""
    env = {**os.environ, "OPENMUSIC_ROLE": "api", "OPENMUSIC_DB_READERS": str(readers), "OPENMUSIC_PORT": str(port),
           "OPENMUSIC_HOST": "127.0.0.1", "OPENMUSIC_VERIFY_COMMITS": "false", "OPENMUSIC_LOG_LEVEL": "WARNING",
           "OPENMUSIC_BLOB_CACHE_DIR": str(workdir / "blobs"), "OPENMUSIC_SESSION_KEY": "ab" * 32}
    if target.startswith("postgres"):
        env["OPENMUSIC_DATABASE_URL"] = target
        env["OPENMUSIC_DB_PATH"] = str(workdir / "unused.sqlite")
    else:
        env["OPENMUSIC_DB_PATH"] = target
    return subprocess.Popen([sys.executable, "-m", "bench.http", "--serve"], env=env)


def queries(keys: dict[str, list[str]]) -> dict[str, object]:
    """Name -> a function of an RNG giving (NSID, parameters)."""
    return {
        "getTrack": lambda r: (NS + "catalog.getTrack", {"uri": r.choice(keys["tracks"])}),
        "searchTracks 1 word": lambda r: (NS + "catalog.searchTracks", {"q": r.choice(WORDS)}),
        "searchTracks 2 words": lambda r: (NS + "catalog.searchTracks", {"q": f"{r.choice(WORDS)} {r.choice(WORDS)}"}),
        "getArtistTracks": lambda r: (NS + "catalog.getArtistTracks", {"actor": r.choice(keys["artists"])}),
        "getTrackStats": lambda r: (NS + "listen.getTrackStats", {"uri": r.choice(keys["tracks"])}),
        "getChart trending": lambda r: (NS + "feed.getChart", {"chart": "trending", "period": "week"}),
        "getChart top genre": lambda r: (NS + "feed.getChart", {"chart": "top", "genre": r.choice(GENRES).lower()}),
    }


async def drive(ports: list[int], makers: list, clients: int, seconds: float) -> tuple[list[float], int, float]:
    """``clients`` keep-alive connections spread over ``ports``, each looping requests drawn from
    ``makers`` for ``seconds`` after a warm-up. Returns (latencies ms, non-200 count, elapsed s)."""
    raws = [RawClient("127.0.0.1", ports[i % len(ports)]) for i in range(clients)]
    lat: list[float] = []
    errors = 0

    async def one(raw: RawClient, rng: random.Random, record: bool) -> None:
        nonlocal errors
        nsid, params = rng.choice(makers)(rng)
        start = time.perf_counter()
        status = await raw.get(f"/xrpc/{nsid}", params)
        if record:
            lat.append((time.perf_counter() - start) * 1000)
            errors += status != 200

    async def loop(i: int, raw: RawClient) -> None:
        rng = random.Random(i)
        for _ in range(5):
            await one(raw, rng, False)
        while time.perf_counter() < deadline:
            await one(raw, rng, True)

    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    try:
        await asyncio.gather(*(loop(i, raw) for i, raw in enumerate(raws)))
    finally:
        for raw in raws:
            await raw.close()
    return lat, errors, time.perf_counter() - started


def pct(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) of ``samples``."""
    if len(samples) < 2:
        return (samples or [0.0])[0], (samples or [0.0])[0]
    q = statistics.quantiles(samples, n=100)
    return q[49], q[98]


def measure(target: str, keys: dict[str, list[str]], clients: int, seconds: float, workdir: Path) -> None:
    """Per-query p50/p99 on one replica, then the mix on 1 and 2 replicas."""
    cases = queries(keys)
    procs: list[subprocess.Popen] = []
    try:
        ports = [free_port(), free_port()]
        for port in ports:
            procs.append(start_api(target, port, workdir))
        for port, proc in zip(ports, procs, strict=True):
            asyncio.run(wait_ready(f"http://127.0.0.1:{port}", proc))
            # the recommendation model is read from the leader's store in the background at start
            # (work that would slow whatever is measured meanwhile): "More like this" answers once it is in
            started = time.perf_counter()
            httpx.get(f"http://127.0.0.1:{port}/xrpc/{NS}feed.getSimilarTracks", params={"uri": keys["tracks"][0]},
                      timeout=3600)
            built = time.perf_counter() - started
            # trending: the stored totals are ranked (per filter) at the first ask, then cached a minute
            started = time.perf_counter()
            httpx.get(f"http://127.0.0.1:{port}/xrpc/{NS}feed.getChart", params={"chart": "trending"}, timeout=3600)
            print(f"replica on :{port}: recommendation model loaded in {built:.0f}s, trending ranked in "
                  f"{time.perf_counter() - started:.0f}s (both before anything is measured)", flush=True)
        print(f"\n{'query (1 replica)':24} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>8} {'errors':>6}"
              f"   ({clients} clients)", flush=True)
        for name, make in cases.items():
            lat, errors, elapsed = asyncio.run(drive(ports[:1], [make], clients, seconds))
            p50, p99 = pct(lat)
            print(f"{name:24} {len(lat):>8} {len(lat) / elapsed:>7.0f} {p50:>7.1f} {p99:>8.1f} {errors:>6}", flush=True)
        mix = list(cases.values())
        print(f"\n{'mix of all':24} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>8} {'errors':>6}")
        for n in (1, 2):
            lat, errors, elapsed = asyncio.run(drive(ports[:n], mix, clients, seconds))
            p50, p99 = pct(lat)
            print(f"{f'{n} replica(s)':24} {len(lat):>8} {len(lat) / elapsed:>7.0f} {p50:>7.1f} {p99:>8.1f} {errors:>6}",
                  flush=True)
    finally:
        for proc in procs:
            stop_api(proc)


def run(target: str, args: argparse.Namespace, workdir: Path) -> None:
    spec = Spec(tracks=args.tracks, plays=args.plays, seed=args.seed)
    k = max(1, args.copies)
    print(f"workload: {spec.tracks:,} tracks by {spec.artists:,} artists, {spec.plays * k:,} plays by "
          f"{spec.listeners * k:,} listeners{f' ({k} copies of the first {spec.plays:,})' if k > 1 else ''}, "
          f"{spec.likes:,} likes, {spec.follows:,} follows, {spec.tips:,} tips", flush=True)
    if args.reuse:
        measure_only(target, args, workdir)
        return
    result = asyncio.run(ingest(target, Workload(spec), args.batch, progress=True))
    print(f"ingest ({args.engine}, batches of {args.batch}): {result.records:,} records ({result.rejected} rejected) in "
          f"{result.apply_s:.0f}s = {result.rate:,.0f} records/s through Indexer.apply "
          f"(generation {result.generate_s:.0f}s not counted); retried batches: "
          f"{result.counters.get('careful_batches', 0)}", flush=True)
    if args.copies > 1:
        took = multiply(target, spec, args.copies, progress=True)
        print(f"copies: the listeners x{args.copies} (bench.copies, SQL, not indexing) in {took:.0f}s: "
              f"{spec.plays * args.copies:,} plays by {spec.listeners * args.copies:,} listeners", flush=True)
    measure_only(target, args, workdir)


def measure_only(target: str, args: argparse.Namespace, workdir: Path) -> None:
    """``prepare``, the leader's chart totals (``appview.charts.store_chart_totals``) and
    recommendation model (``appview.recommend.store_model``), as the leading indexer stores them,
    then ``measure``. Migrates first (a database built by an older checkout, with ``--reuse``),
    as the leading indexer does at its start."""
    from core import db

    db.migrate(target)
    keys, size = prepare(target)
    plays = Spec(tracks=args.tracks, plays=args.plays).plays * max(1, args.copies)
    print(f"database size: {size / 1e6:,.0f} MB ({size / plays:,.0f} bytes a play, all tables counted)", flush=True)
    done = asyncio.run(store_chart_totals(target))
    print(f"chart totals stored by the leader's code: computed in {done.pop('seconds'):.1f}s, written in "
          f"{done.pop('write_seconds'):.1f}s; " + ", ".join(f"{chart} {n:,.0f} tracks" for chart, n in done.items()),
          flush=True)
    done = recommend.store_model(target)
    print(f"recommendation model stored by the leader's code: built in {done['build_seconds']:.1f}s "
          f"({done['tracks']:,} tracks, {done['pairs']:,} listener-track pairs), {done['bytes'] / 1e6:,.0f} MB "
          f"written in {done['store_seconds']:.1f}s", flush=True)
    if args.seconds > 0:
        measure(target, keys, args.clients, args.seconds, workdir)


async def store_chart_totals(target: str) -> dict[str, float]:
    """What the leading indexer's ``keep_chart_totals`` does once: the charts' totals, stored for the replicas."""
    from appview import charts
    from appview.views import ViewContext
    from core import db

    conn = await db.connect(target)
    try:
        return await charts.store_chart_totals(ViewContext(conn, None, ""), target)  # type: ignore[arg-type]
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=("sqlite", "postgresql"), default="postgresql")
    ap.add_argument("--tracks", type=int, default=10_000)
    ap.add_argument("--plays", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--copies", type=int, default=1,
                    help="then copy the listeners this many times over (bench.copies: SQL, checked against the indexer)")
    ap.add_argument("--reuse", action="store_true",
                    help="--db already holds this workload (same --tracks, --plays, --copies): measure only")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0, help="per measured case; 0: ingest only")
    ap.add_argument("--db", help="a PostgreSQL URL (an empty database) or a SQLite path (default: throwaway)")
    args = ap.parse_args()
    if args.reuse and not args.db:
        ap.error("--reuse measures the database --db names")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          f"(shared: other jobs may run)", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="om-scale-"))
    try:
        if args.engine == "postgresql" and not args.db:
            from devkit.pgserver import create_database, throwaway_cluster
            with throwaway_cluster(settings={"shared_buffers": "512MB", "max_wal_size": "4GB"}) as url:
                run(create_database(url, "scale"), args, workdir)
        else:
            run(args.db or str(workdir / "scale.sqlite"), args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
