"""Recommendations (``appview.recommend``): offline hit rate at 10 against a popularity baseline,
the model's build time, and the latency of ``fm.openmusic.feed.getSimilarTracks`` and
``feed.getSuggestions`` at 100,000 tracks and 1,000,000 plays.

**The listening log** (deterministic, seeded) has the structure real logs have:

- ``--clusters`` taste clusters (default 40), each with its own genre and two moods; every artist
  (``--tracks`` / 50 of them, 50 tracks each) belongs to one cluster, and 80% of their tracks carry
  the cluster's genre (the rest a random one).
- Zipf popularity twice: clusters are popular by ``1 / (rank + 1) ** 0.7`` (how many listeners call
  them home), and tracks within a cluster by ``1 / (rank + 1) ** 1.0``; a global chart (every
  track, by its rank within its cluster times its cluster's) feeds the stray plays.
- Listeners (``--plays`` / 50 of them) have a home cluster and a second one; how much each listens
  is log-normal. Their plays come in sessions of 5 to 20 plays, a few minutes apart: a session
  draws from the home cluster (70%), the second one (20%) or the global chart (10%), and a third of
  the time the next track is another by the same artist (an album played on).
- 85% of plays are streams (heard long enough); the rest are skips (``play.stream = 0``).

**Held out**: for every listener with at least two distinct streamed tracks, the track they
streamed for the first time last; all their plays of it are left out of the database. **Hit rate at
10**: the share of those listeners whose held-out track is among the 10 suggested (what
``getSuggestions`` ranks: ``Model.for_listener`` on their streams, most recent first, excluding
what they streamed) and, as the baseline, among the 10 most streamed tracks they have not
streamed. Also, for "more like this": whether the held-out track is among the 10 most similar to
the last track they streamed before it.

**The database** is written with direct inserts (as ``bench.queries`` does, not the indexer's batch
path): actors, artist profiles, track rows and their records (moods in the records, so migration
0017's triggers fill ``track_facet``), play rows with the streams decision already made (no play
records: nothing here reads them), and ``track_stats``. The model is then built from it by the
code the AppView runs (``load_model``), and the requests go through the real Starlette app in-process
over ASGI (routing, lexicon validation, hydration, JSON), after a first request that builds the model;
last, getSuggestions is measured again while a rebuild runs in its worker thread.

    python -m bench.recs [--tracks 100000] [--plays 1000000] [--clusters 40] [--requests 1000]
                         [--db bench/data/recs.sqlite] [--reuse] [--big]

The defaults take about five minutes on 2 CPUs (under two with ``--reuse``); ``--big`` is the bigger
run (300,000 tracks, 3,000,000 plays, its own database). ``--reuse`` measures the database an
earlier run built (with the same sizes and seed) again.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import math
import os
import random
import sqlite3
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.firehose import cpu_model
from bench.queries import CID, GENRES, REC_CID, tid
from bench.record import DATA
from core import db
from core.config import Settings

MOODS = ["calm", "dark", "energetic", "happy", "melancholic", "dreamy", "aggressive", "romantic", "uplifting",
         "tense", "playful", "epic"]
START = datetime(2026, 11, 1, tzinfo=UTC)
K = 10


def _cumulative(weights: list[float]) -> list[float]:
    return list(itertools.accumulate(weights))


def _draw(rng: random.Random, items: list, cum: list[float]):
    return items[bisect.bisect_left(cum, rng.random() * cum[-1])]


def generate(n_tracks: int, n_plays: int, n_clusters: int, seed: int = 13) -> dict:
    """The catalog and the listening log (see the module docstring). Returns ``tracks`` [(uri,
    artist, genre, moods)], ``listeners`` [DID], ``plays`` [(listener index, track index, datetime,
    stream)] in time order per listener."""
    rng = random.Random(seed)
    n_artists = max(1, n_tracks // 50)
    n_listeners = max(1, n_plays // 50)
    cluster_genre = [GENRES[c % len(GENRES)] for c in range(n_clusters)]
    cluster_moods = [rng.sample(MOODS, 2) for _ in range(n_clusters)]
    artists = [f"did:plc:artist{i:020d}" for i in range(n_artists)]
    artist_cluster = [rng.randrange(n_clusters) for _ in range(n_artists)]
    tracks, by_artist = [], [[] for _ in range(n_artists)]
    members: list[list[int]] = [[] for _ in range(n_clusters)]
    for i in range(n_tracks):
        a = i % n_artists
        c = artist_cluster[a]
        genre = cluster_genre[c] if rng.random() < 0.8 else rng.choice(GENRES)
        moods = cluster_moods[c] if rng.random() < 0.7 else rng.sample(MOODS, 2)
        tracks.append((f"at://{artists[a]}/fm.openmusic.catalog.track/{tid(i)}", artists[a], genre, moods))
        by_artist[a].append(i)
        members[c].append(i)
    cluster_weight = [1 / (c + 1) ** 0.7 for c in range(n_clusters)]
    cluster_cum = _cumulative(cluster_weight)
    in_cluster = []
    global_weight = [0.0] * n_tracks
    for c in range(n_clusters):
        rng.shuffle(members[c])
        weights = [1 / (r + 1) for r in range(len(members[c]))]
        in_cluster.append(_cumulative(weights))
        for r, t in enumerate(members[c]):
            global_weight[t] = weights[r] * cluster_weight[c]
    all_tracks = list(range(n_tracks))
    global_cum = _cumulative(global_weight)
    activity = [rng.lognormvariate(0, 1) for _ in range(n_listeners)]
    scale = n_plays / sum(activity)
    listeners = [f"did:plc:listener{i:018d}" for i in range(n_listeners)]
    plays = []
    for u in range(n_listeners):
        home = _draw(rng, list(range(n_clusters)), cluster_cum)
        other = _draw(rng, list(range(n_clusters)), cluster_cum)
        left = max(2, round(activity[u] * scale))
        at = START + timedelta(seconds=rng.randrange(0, 86_400 * 3))
        while left > 0:
            size = min(left, rng.randint(5, 20))
            left -= size
            source = rng.random()
            cluster = home if source < 0.7 else other if source < 0.9 else None
            previous = None
            for _ in range(size):
                if previous is not None and rng.random() < 1 / 3:
                    t = rng.choice(by_artist[previous % n_artists])
                elif cluster is None:
                    t = _draw(rng, all_tracks, global_cum)
                else:
                    t = _draw(rng, members[cluster], in_cluster[cluster])
                plays.append((u, t, at, rng.random() < 0.85))
                at += timedelta(seconds=rng.randint(150, 260))
                previous = t
            at += timedelta(hours=rng.uniform(2, 40))
    return {"tracks": tracks, "listeners": listeners, "plays": plays, "artists": artists}


def hold_out(plays: list[tuple]) -> tuple[list[tuple], dict[int, int]]:
    """Split ``plays``: for each listener with two or more distinct streamed tracks, the track first
    streamed last is held out (every play of it by them). Returns (training plays, {listener: track})."""
    first: dict[int, dict[int, datetime]] = {}
    for u, t, at, stream in plays:
        if stream:
            first.setdefault(u, {}).setdefault(t, at)
    held = {u: max(seen, key=lambda t: (seen[t], t)) for u, seen in first.items() if len(seen) >= 2}
    return [p for p in plays if held.get(p[0]) != p[1]], held


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def write(path: Path, data: dict, plays: list[tuple]) -> None:
    """A fresh database at ``path`` with the catalog and the training ``plays`` (direct inserts)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db.migrate(str(path))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    now = "2026-11-30T00:00:00.000Z"
    conn.executemany("INSERT INTO actor (did, handle, handle_verified, pds, resolved_at) VALUES (?,?,1,'x',?)",
                     [(d, f"{d[8:]}.test", time.time() * 2) for d in data["artists"] + data["listeners"]])
    conn.executemany("INSERT INTO profile (did, uri, cid, display_name, indexed_at) VALUES (?,?,?,?,?)",
                     [(d, f"at://{d}/fm.openmusic.actor.profile/self", REC_CID, f"Artist {i}", now)
                      for i, d in enumerate(data["artists"])])
    rows, recs = [], []
    for i, (uri, did, genre, moods) in enumerate(data["tracks"]):
        created = "2026-10-01T00:00:00.000Z"
        record = {"$type": "fm.openmusic.catalog.track", "title": f"Track {i}", "duration": 180000, "genre": genre,
                  "moods": moods, "audio": {"$type": "blob", "ref": {"$link": CID}, "mimeType": "audio/mpeg", "size": 1},
                  "createdAt": created}
        rows.append((uri, did, tid(i), REC_CID, f"Track {i}", 180000, genre, genre.lower(), "human", CID, "audio/mpeg",
                     created, created, now))
        recs.append((uri, did, "fm.openmusic.catalog.track", tid(i), REC_CID, json.dumps(record), now))
    conn.executemany("INSERT INTO track (uri, did, rkey, cid, title, duration_ms, genre, genre_norm, ai_level, "
                     "audio_cid, audio_mime, created_at, sort_at, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.executemany("INSERT INTO record (uri, did, collection, rkey, cid, json, indexed_at) VALUES (?,?,?,?,?,?,?)",
                     recs)  # migration 0017's trigger fills track_facet from the moods
    conn.commit()
    tracks, listeners = data["tracks"], data["listeners"]
    batch = []
    for n, (u, t, at, stream) in enumerate(plays):
        did, track_uri = listeners[u], tracks[t][0]
        heard = 180000 if stream else 10000
        batch.append((f"at://{did}/fm.openmusic.listen.play/{tid(n)}", did, tid(n), REC_CID, track_uri, REC_CID,
                      tracks[t][1], _iso(at), _iso(at), heard, int(stream), now, int(stream), heard if stream else 0,
                      heard))
        if len(batch) == 50_000:
            _plays(conn, batch)
            batch = []
    _plays(conn, batch)
    conn.execute("INSERT INTO track_stats (track_uri, plays, listeners, listened_ms, completions, free_streams) "
                 "SELECT track_uri, COUNT(*), COUNT(DISTINCT did), SUM(heard_ms), SUM(completed), SUM(stream) "
                 "FROM play GROUP BY track_uri")
    conn.execute("INSERT OR IGNORE INTO track_stats (track_uri) SELECT uri FROM track")
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def _plays(conn: sqlite3.Connection, batch: list[tuple]) -> None:
    conn.executemany("INSERT INTO play (uri, did, rkey, cid, track_uri, track_cid, track_did, created_at, sort_at, "
                     "listened_ms, completed, indexed_at, stream, stream_ms, heard_ms) "
                     "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)


def hit_rates(model, data: dict, plays: list[tuple], held: dict[int, int]) -> dict[str, float]:
    """Hit rate at ``K`` of "for you" (co-listening), of the popularity baseline and of "more like
    this" from the last stream before the held-out track, over the listeners in ``held``."""
    history: dict[int, dict[str, datetime]] = {}
    for u, t, at, stream in plays:
        if stream and u in held:
            history.setdefault(u, {})[data["tracks"][t][0]] = at  # the last stream of each track
    hits = {"item-item (for you)": 0, "popularity": 0, "item-item (more like this, last stream)": 0}
    for u, t in held.items():
        seen = history.get(u, {})
        recent = sorted(seen, key=seen.__getitem__, reverse=True)
        did, target = data["listeners"][u], data["tracks"][t][0]
        ours = [uri for uri, _ in model.for_listener(recent, set(seen), did, K)]
        hits["item-item (for you)"] += target in ours
        hits["popularity"] += target in [uri for uri, _ in model.most_popular(set(seen), did, K)]
        like = [uri for uri, _ in model.similar(recent[0]) if uri not in seen][:K] if recent else []
        hits["item-item (more like this, last stream)"] += target in like
    return {name: n / max(1, len(held)) for name, n in hits.items()}


async def latency(path: Path, data: dict, requests: int) -> tuple[float, dict[str, list[float]]]:
    """Build time of the model inside the AppView (first request), then p50/p99 samples per case,
    and of getSuggestions while a rebuild runs."""
    from appview import recommend
    from appview.app import create_app
    from openmusic.runtime import Runtime

    rt = Runtime(Settings(db_path=str(path), blob_cache_dir=str(path.parent / "blobs"), log_level="WARNING"))
    await rt.start(firehose=False)
    rng = random.Random(7)
    tracks, listeners = [t[0] for t in data["tracks"]], data["listeners"]
    cases = {
        "getSimilarTracks": lambda: ("fm.openmusic.feed.getSimilarTracks", {"uri": rng.choice(tracks)}),
        "getSimilarTracks limit=50": lambda: ("fm.openmusic.feed.getSimilarTracks",
                                              {"uri": rng.choice(tracks), "limit": "50"}),
        "getSuggestions": lambda: ("fm.openmusic.feed.getSuggestions", {"actor": rng.choice(listeners)}),
        "getSuggestions new listener": lambda: ("fm.openmusic.feed.getSuggestions",
                                                {"actor": f"did:plc:newcomer{rng.randrange(10**9):019d}"}),
    }
    timings: dict[str, list[float]] = {}
    try:
        recommend.clear_models()
        transport = httpx.ASGITransport(app=create_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            started = time.perf_counter()
            resp = await client.get("/xrpc/fm.openmusic.feed.getSimilarTracks", params={"uri": tracks[0]})
            build = time.perf_counter() - started
            assert resp.status_code == 200 and resp.json()["tracks"], resp.text
            for name, make in cases.items():
                for _ in range(50):  # warm the page cache and statement cache
                    nsid, params = make()
                    await client.get(f"/xrpc/{nsid}", params=params)
                samples = []
                for _ in range(requests):
                    nsid, params = make()
                    start = time.perf_counter()
                    resp = await client.get(f"/xrpc/{nsid}", params=params)
                    samples.append((time.perf_counter() - start) * 1000)
                    assert resp.status_code == 200, resp.text
                timings[name] = samples
            # the same requests while the model is rebuilt in a worker thread (it holds the GIL at times)
            build_task = asyncio.create_task(recommend._build(rt.views))
            samples, make = [], cases["getSuggestions"]
            while not build_task.done():
                nsid, params = make()
                start = time.perf_counter()
                resp = await client.get(f"/xrpc/{nsid}", params=params)
                samples.append((time.perf_counter() - start) * 1000)
                assert resp.status_code == 200, resp.text
            await build_task
            timings["getSuggestions during a rebuild"] = samples
    finally:
        await rt.stop()
    return build, timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--plays", type=int, default=1_000_000)
    ap.add_argument("--clusters", type=int, default=40)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--db", default=str(DATA / "recs.sqlite"))
    ap.add_argument("--reuse", action="store_true", help="measure the database an earlier run built again")
    ap.add_argument("--big", action="store_true", help="300,000 tracks and 3,000,000 plays (bench/data/recs-big.sqlite)")
    args = ap.parse_args()
    if args.big:
        args.tracks, args.plays = 300_000, 3_000_000
        if args.db == str(DATA / "recs.sqlite"):
            args.db = str(DATA / "recs-big.sqlite")
    from appview.recommend import load_model

    path = Path(args.db)
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs", flush=True)
    started = time.perf_counter()
    data = generate(args.tracks, args.plays, args.clusters)
    plays, held = hold_out(data["plays"])
    streams = sum(1 for p in plays if p[3])
    print(f"log: {len(data['tracks']):,} tracks, {len(data['listeners']):,} listeners, {len(data['plays']):,} plays "
          f"({len(plays):,} kept, {streams:,} of them streams; {len(held):,} listeners hold one track out), "
          f"generated in {time.perf_counter() - started:.0f} s", flush=True)
    if not args.reuse or not path.exists():
        started = time.perf_counter()
        write(path, data, plays)
        print(f"database written (direct inserts) in {time.perf_counter() - started:.0f} s, "
              f"{path.stat().st_size / 1e6:.0f} MB", flush=True)
    model = load_model(str(path))
    print(f"model: {model.listeners:,} listeners x {len(model.uris):,} tracks, {model.pairs:,} distinct streamed "
          f"pairs, {model.neighbours.nnz:,} neighbour entries; built in {model.build_seconds:.1f} s "
          f"(read + similarity)", flush=True)
    rates = hit_rates(model, data, plays, held)
    base = rates["popularity"]
    print(f"\nhit rate at {K} ({len(held):,} held-out listeners):")
    for name, rate in rates.items():
        ratio = f"  ({rate / base:.1f}x popularity)" if base and name != "popularity" else ""
        print(f"  {name:42} {rate:7.3f}{ratio}")
    ours = rates["item-item (for you)"]
    print(f"  item-item beats popularity: {'yes' if ours > base else 'NO'} "
          f"(ratio {ours / base if base else math.inf:.2f})", flush=True)
    build, timings = asyncio.run(latency(path, data, args.requests))
    print(f"\nfirst request (builds the model in the AppView, off the event loop): {build:.1f} s")
    print(f"{'query':32} {'p50 ms':>8} {'p99 ms':>8}   ({args.requests} requests each, in-process ASGI)")
    for name, samples in timings.items():
        q = statistics.quantiles(samples, n=100)
        print(f"{name:32} {q[49]:8.2f} {q[98]:8.2f}   ({len(samples)} requests)")


if __name__ == "__main__":
    main()
