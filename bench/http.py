"""Query throughput and latency through real HTTP: the AppView under uvicorn (its own process, on
loopback) on the large database of ``bench.queries`` (100,000 tracks, 1,000,000 plays), driven by
16 and 64 concurrent clients (asyncio, each on its own keep-alive connection; ``--client httpx`` for
httpx's async pool instead) with a mix of queries; p50 / p99 and requests/s, with one
reader connection and with the reader pool (``OPENMUSIC_DB_READERS``).

    python -m bench.http [--readers 1,4] [--clients 16,64] [--seconds 20] [--max-requests 20000]
                         [--tracks 100000] [--plays 1000000] [--db PATH] [--rebuild] [--by-query]
                         [--client raw|httpx] [--mix all|fast]

The database is ``bench.queries``' (``bench/data/queries.sqlite``), built with its builder unless one
of the same sizes is there. Each run is bounded by ``--seconds`` and ``--max-requests``, after a
warm-up. ``--server-dir`` runs the server from another checkout, for a before/after comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

from bench.firehose import cpu_model
from bench.queries import GENRES, WORDS, build
from bench.record import DATA

NS = "fm.openmusic."
#: The query mix: (name, weight); parameters are drawn by ``_request``. "searchTracks q plays" (a
#: word, most played first: ~35 ms of SQLite on the bench database) is the one slow query; ``--mix
#: fast`` leaves it out.
MIX = [("getTrack", 20), ("searchTracks q", 15), ("searchTracks plays", 5), ("searchTracks genre", 5),
       ("searchTracks q plays", 5), ("getArtistTracks", 15), ("getTrackStats", 15), ("getProfile", 10),
       ("getPlays", 15)]
SLOW = {"searchTracks q plays"}


def ensure_db(path: Path, tracks: int, plays: int, rebuild: bool) -> None:
    """Build the bench database at ``path`` unless one with as many tracks and plays is there
    (e.g. the one ``bench.queries`` just built)."""
    if not rebuild and path.exists():
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                have = conn.execute("SELECT (SELECT COUNT(*) FROM track), (SELECT COUNT(*) FROM play)").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            have = None
        if have == (tracks, plays):
            return
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"building {tracks:,} tracks and {plays:,} plays in {path} ...", flush=True)
    started = time.perf_counter()
    build(str(path), tracks, plays)
    print(f"built in {time.perf_counter() - started:.0f}s, {path.stat().st_size / 1e6:.0f} MB", flush=True)


def sample(path: Path) -> dict[str, list[str]]:
    """Keys to query: tracks, artists and listeners taken from the database."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {"tracks": [r[0] for r in conn.execute("SELECT uri FROM track ORDER BY random() LIMIT 5000")],
                "artists": [r[0] for r in conn.execute("SELECT DISTINCT did FROM track LIMIT 1000")],
                "listeners": [r[0] for r in conn.execute("SELECT did FROM actor WHERE did LIKE 'did:plc:listener%' "
                                                         "LIMIT 1000")]}
    finally:
        conn.close()


def _request(name: str, keys: dict[str, list[str]], rng: random.Random) -> tuple[str, dict[str, str]]:
    if name == "getTrack":
        return NS + "catalog.getTrack", {"uri": rng.choice(keys["tracks"])}
    if name == "searchTracks q":
        return NS + "catalog.searchTracks", {"q": rng.choice(WORDS)}
    if name == "searchTracks q plays":
        return NS + "catalog.searchTracks", {"q": rng.choice(WORDS), "sort": "plays"}
    if name == "searchTracks plays":
        return NS + "catalog.searchTracks", {"sort": "plays"}
    if name == "searchTracks genre":
        return NS + "catalog.searchTracks", {"genre": rng.choice(GENRES)}
    if name == "getArtistTracks":
        return NS + "catalog.getArtistTracks", {"actor": rng.choice(keys["artists"])}
    if name == "getTrackStats":
        return NS + "listen.getTrackStats", {"uri": rng.choice(keys["tracks"])}
    if name == "getProfile":
        return NS + "actor.getProfile", {"actor": rng.choice(keys["artists"])}
    return NS + "listen.getPlays", {"actor": rng.choice(keys["listeners"])}


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, port: int, readers: int, server_dir: str | None = None) -> subprocess.Popen:
    """The AppView (no firehose, no commit verification) under uvicorn in a child process; from the
    checkout ``server_dir`` when given (another commit, for a before/after comparison; it needs
    this file as ``bench/http.py``)."""
    env = {**os.environ, "OPENMUSIC_DB_PATH": str(db), "OPENMUSIC_DB_READERS": str(readers),
           "OPENMUSIC_PORT": str(port), "OPENMUSIC_HOST": "127.0.0.1", "OPENMUSIC_VERIFY_COMMITS": "false",
           "OPENMUSIC_BLOB_CACHE_DIR": str(db.parent / "blobs"), "OPENMUSIC_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "bench.http", "--serve"], env=env, cwd=server_dir)


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the child started by ``start_server`` (SIGINT, then SIGKILL after 15 s)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def serve() -> None:
    """Child process: the runtime from ``OPENMUSIC_*`` and its HTTP server, until interrupted. With
    ``OPENMUSIC_ROLE=api`` only the request side (``Runtime.start_api``: an API replica, no periodic
    work); otherwise everything but the firehose (one process owning its database)."""
    from core.config import Settings
    from openmusic.runtime import Runtime

    settings = Settings.from_env()
    rt = Runtime(settings)
    if settings.role == "api":
        await rt.start_api()
    else:
        await rt.start(firehose=False)
    try:
        await rt.serve()
    finally:
        await rt.stop()


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on one connection, GET only: the default load generator.
    (httpx's async pool spends more CPU per request than the server does: on 2 cores it capped a
    64-client run at ~250 requests/s even against ``/health``, which serves thousands.)"""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, params: dict[str, str]) -> int:
        """GET ``path?params``; the status (the body is read and dropped)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path}?{urlencode(params)} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return int(lines[0].split(" ", 2)[1])

    async def close(self) -> None:
        """Close the connection (the next ``get`` opens another)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = self.reader = None


async def drive(port: int, keys: dict[str, list[str]], clients: int, seconds: float, max_requests: int,
                client: str = "raw", mix: str = "all") -> tuple[list[float], dict[str, list[float]], int, float]:
    """``clients`` concurrent loops of requests from the mix (``all``, or ``fast`` without the slow
    query), each on its own keep-alive connection, for at most ``seconds`` and ``max_requests`` in
    all (``client``: ``raw`` or ``httpx``). Returns (latencies in ms, the same by query, errors,
    elapsed seconds)."""
    rng = random.Random(clients)
    chosen = [(n, w) for n, w in MIX if mix == "all" or n not in SLOW]
    names = [n for n, _ in chosen]
    weights = [w for _, w in chosen]
    latencies: list[float] = []
    by_query: dict[str, list[float]] = {}
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    raws = [RawClient("127.0.0.1", port) for _ in range(clients)]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30) as http:
        async def one(raw: RawClient) -> None:
            nonlocal errors
            name = rng.choices(names, weights)[0]
            nsid, params = _request(name, keys, rng)
            start = time.perf_counter()
            if client == "httpx":
                status = (await http.get(f"/xrpc/{nsid}", params=params)).status_code
            else:
                status = await raw.get(f"/xrpc/{nsid}", params)
            latencies.append((time.perf_counter() - start) * 1000)
            by_query.setdefault(name, []).append(latencies[-1])
            if status != 200:
                errors += 1

        async def warm(raw: RawClient) -> None:  # the page cache, each reader's statement cache
            for _ in range(8):
                await one(raw)

        await asyncio.gather(*(warm(raw) for raw in raws))
        latencies.clear()
        by_query.clear()
        errors = 0
        deadline = time.perf_counter() + seconds
        budget = [max_requests]

        async def loop(raw: RawClient) -> None:
            while time.perf_counter() < deadline and budget[0] > 0:
                budget[0] -= 1
                await one(raw)

        started = time.perf_counter()
        try:
            await asyncio.gather(*(loop(raw) for raw in raws))
        finally:
            for raw in raws:
                await raw.close()
        return latencies, by_query, errors, time.perf_counter() - started


async def wait_ready(base: str, proc: subprocess.Popen) -> None:
    """Until the child answers ``/health`` (raises when it exits first or after 120 s)."""
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        for _ in range(1200):
            if proc.poll() is not None:
                raise RuntimeError(f"the AppView exited with {proc.returncode}")
            try:
                await http.get("/health")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise RuntimeError("the AppView did not start within 120 s")


def main() -> None:
    """Build (or reuse) the database, then measure each reader count at each client count."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readers", default="1,4", help="reader pool sizes to compare (comma-separated)")
    ap.add_argument("--clients", default="16,64", help="concurrent clients (comma-separated)")
    ap.add_argument("--seconds", type=float, default=20.0, help="longest measured run per case")
    ap.add_argument("--max-requests", type=int, default=20_000, help="most measured requests per case")
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--plays", type=int, default=1_000_000)
    ap.add_argument("--db", default=str(DATA / "queries.sqlite"), help="reused when its sizes match")
    ap.add_argument("--client", choices=("raw", "httpx"), default="raw",
                    help="load generator: a minimal keep-alive HTTP/1.1 client (default) or httpx's async pool")
    ap.add_argument("--mix", choices=("all", "fast"), default="all",
                    help="the query mix, or it without its one slow query (a word's tracks, most played first)")
    ap.add_argument("--by-query", action="store_true", help="also p50 / p99 per query of the mix")
    ap.add_argument("--rebuild", action="store_true", help="build the database even when one is there")
    ap.add_argument("--server-dir", help="run the AppView from this checkout (e.g. a git worktree of an "
                    "older commit, with this file copied in as bench/http.py)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        try:
            asyncio.run(serve())
        except KeyboardInterrupt:
            pass
        return
    db = Path(args.db)
    ensure_db(db, args.tracks, args.plays, args.rebuild)
    keys = sample(db)
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; {args.client} client and server on one host, loopback; "
          f"mix {args.mix}; load average {os.getloadavg()[0]:.1f}")
    print(f"\n{'readers':>7} {'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>8} {'errors':>6}")
    for readers in (int(r) for r in args.readers.split(",")):
        port = free_port()
        proc = start_server(db.resolve(), port, readers, args.server_dir)
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_ready(base, proc))
            for clients in (int(c) for c in args.clients.split(",")):
                lat, by_query, errors, elapsed = asyncio.run(
                    drive(port, keys, clients, args.seconds, args.max_requests, args.client, args.mix))
                q = statistics.quantiles(lat, n=100)
                print(f"{readers:>7} {clients:>7} {len(lat):>8} {len(lat) / elapsed:>7.0f} {q[49]:>7.1f} "
                      f"{q[98]:>8.1f} {errors:>6}", flush=True)
                if args.by_query:
                    for name, samples in sorted(by_query.items()):
                        qq = statistics.quantiles(samples, n=100) if len(samples) > 1 else samples * 99
                        print(f"{'':>16}{name:>22} {len(samples):>6} {qq[49]:>7.1f} {qq[98]:>8.1f}")
        finally:
            stop_server(proc)


if __name__ == "__main__":
    main()
