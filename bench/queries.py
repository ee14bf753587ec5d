"""Query latency of the AppView on a large database: 100,000 tracks by 2,000 artists and
1,000,000 plays by 20,000 listeners (with their records, FTS rows and aggregates, in the schema
the indexer writes). Requests go through the real Starlette app (routing, lexicon parameter
validation, hydration, JSON) in-process over ASGI; p50 / p99 per query.

    python -m bench.queries [--tracks 100000] [--plays 1000000] [--requests 2000] [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import time
from pathlib import Path

import httpx

from bench.firehose import cpu_model
from bench.generator import tid
from bench.record import DATA
from core import db
from core.config import Settings
from indexer.search import key_base, track_body

WORDS = ("neon harbor midnight glass lantern coast loop blue kettle rainy tuesday walking bass late set boss "
         "level save point extra life credits roll river echo velvet static ember orbit silver northern").split()
GENRES = ["Jazz", "Rock", "Ambient", "Synthwave", "Chiptune", "Folk", "Techno", "Classical", "Hip Hop", "Soul"]
CID = "bafkreid4uzrxkeq3edn3dop55vtrzmrwp2cgc7hgav36bgrapeqblcvpha"
REC_CID = "bafyreib2okcprhcpr2odq2acxrtvdvym57eldhqtuv6ynhih2aezrcveqa"



def build(path: str, n_tracks: int, n_plays: int, seed: int = 1) -> dict[str, list[str]]:
    """Write the synthetic catalog into a fresh database at ``path``. Returns sample keys."""
    rng = random.Random(seed)
    db.migrate(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    artists = [f"did:plc:artist{i:020d}" for i in range(max(1, n_tracks // 50))]
    listeners = [f"did:plc:listener{i:018d}" for i in range(max(1, n_plays // 50))]
    now = "2026-11-21T00:00:00.000Z"
    conn.executemany("INSERT INTO actor (did, handle, handle_verified, pds, resolved_at) VALUES (?,?,1,'x',?)",
                     [(d, f"{d[8:]}.test", time.time() * 2) for d in artists + listeners])
    conn.executemany("INSERT INTO profile (did, uri, cid, display_name, indexed_at) VALUES (?,?,?,?,?)",
                     [(d, f"at://{d}/fm.openmusic.actor.profile/self", REC_CID, f"Artist {i}", now)
                      for i, d in enumerate(artists)])
    tracks, rows, recs, fts = [], [], [], []
    for i in range(n_tracks):
        did = artists[i % len(artists)]
        uri = f"at://{did}/fm.openmusic.catalog.track/{tid(i)}"
        title = " ".join(rng.choice(WORDS).title() for _ in range(2)) + f" {i}"
        genre = rng.choice(GENRES)
        created = f"2026-{1 + i % 10:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00.000Z"
        record = {"$type": "fm.openmusic.catalog.track", "title": title, "duration": 180000, "genre": genre,
                  "audio": {"$type": "blob", "ref": {"$link": CID}, "mimeType": "audio/mpeg", "size": 1},
                  "createdAt": created}
        tracks.append(uri)
        rows.append((uri, did, tid(i), REC_CID, title, 180000, genre, genre.lower(),
                     rng.choice(["human", "assisted", "generated"]), CID, "audio/mpeg", created, created, now))
        recs.append((uri, did, "fm.openmusic.catalog.track", tid(i), REC_CID, json.dumps(record), now))
        fts.append((uri, track_body(record, f"Artist {i % len(artists)}", f"{did[8:]}.test")))
    rows.sort(key=lambda r: (r[12], r[0]))  # by sort_at, to give each its search_key in order
    last = None
    for n, row in enumerate(rows):
        key = key_base(row[12])
        last = key = key if last is None or key > last else last + 1
        rows[n] = (*row, key)
    conn.executemany("INSERT INTO track (uri, did, rkey, cid, title, duration_ms, genre, genre_norm, ai_level, "
                     "audio_cid, audio_mime, created_at, sort_at, indexed_at, search_key) "
                     "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.executemany("INSERT INTO record (uri, did, collection, rkey, cid, json, indexed_at) VALUES (?,?,?,?,?,?,?)", recs)
    conn.executemany("INSERT INTO track_fts (rowid, body) SELECT search_key, ? FROM track WHERE uri = ?",
                     [(body, uri) for uri, body in fts])
    conn.commit()
    weights = [1 / (1 + r) ** 0.8 for r in range(len(tracks))]  # a long tail: some tracks are played far more
    chosen = rng.choices(tracks, weights=weights, k=n_plays)
    batch_p, batch_r = [], []
    for i, track_uri in enumerate(chosen):
        did = listeners[i % len(listeners)]
        uri = f"at://{did}/fm.openmusic.listen.play/{tid(i)}"
        listened = rng.randrange(1000, 180000)
        created = f"2026-11-{1 + i % 20:02d}T{i % 24:02d}:{i % 60:02d}:{i % 60:02d}.000Z"
        batch_p.append((uri, did, tid(i), REC_CID, track_uri, REC_CID, track_uri.split("/")[2], created, created,
                        listened, 1 if listened > 170000 else 0, now))
        batch_r.append((uri, did, "fm.openmusic.listen.play", tid(i), REC_CID, json.dumps(
            {"$type": "fm.openmusic.listen.play", "track": {"uri": track_uri, "cid": REC_CID}, "createdAt": created,
             "listenedMs": listened}), now))
        if len(batch_p) == 50000:
            conn.executemany("INSERT INTO play (uri, did, rkey, cid, track_uri, track_cid, track_did, created_at, "
                             "sort_at, listened_ms, completed, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", batch_p)
            conn.executemany("INSERT INTO record (uri, did, collection, rkey, cid, json, indexed_at) "
                             "VALUES (?,?,?,?,?,?,?)", batch_r)
            batch_p, batch_r = [], []
    if batch_p:
        conn.executemany("INSERT INTO play (uri, did, rkey, cid, track_uri, track_cid, track_did, created_at, "
                         "sort_at, listened_ms, completed, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", batch_p)
        conn.executemany("INSERT INTO record (uri, did, collection, rkey, cid, json, indexed_at) VALUES (?,?,?,?,?,?,?)",
                         batch_r)
    # the aggregates the indexer keeps incrementally, computed in one go
    conn.execute("INSERT INTO track_listener (track_uri, did, plays) SELECT track_uri, did, COUNT(*) FROM play "
                 "GROUP BY track_uri, did")
    conn.execute("INSERT INTO track_stats (track_uri, plays, listeners, listened_ms, completions) "
                 "SELECT track_uri, COUNT(*), COUNT(DISTINCT did), SUM(listened_ms), SUM(completed) FROM play "
                 "GROUP BY track_uri")
    conn.execute("INSERT OR IGNORE INTO track_stats (track_uri) SELECT uri FROM track")
    conn.execute("INSERT OR REPLACE INTO track_rank (search_key, plays, uri) SELECT t.search_key, s.plays, t.uri "
                 "FROM track t JOIN track_stats s ON s.track_uri = t.uri WHERE t.search_key IS NOT NULL")
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    return {"tracks": tracks, "artists": artists}


async def measure(path: str, sample: dict[str, list[str]], requests: int) -> dict[str, list[float]]:
    from openmusic.runtime import Runtime

    rt = Runtime(Settings(db_path=path, blob_cache_dir=str(Path(path).parent / "blobs")))
    await rt.start(firehose=False)
    from appview.app import create_app

    rng = random.Random(2)
    cases = {
        "getTrack": lambda: ("fm.openmusic.catalog.getTrack", {"uri": rng.choice(sample["tracks"])}),
        "searchTracks q=<word>": lambda: ("fm.openmusic.catalog.searchTracks", {"q": rng.choice(WORDS)}),
        "searchTracks q=<2 words>": lambda: ("fm.openmusic.catalog.searchTracks",
                                             {"q": f"{rng.choice(WORDS)} {rng.choice(WORDS)}"}),
        "searchTracks sort=plays": lambda: ("fm.openmusic.catalog.searchTracks", {"sort": "plays"}),
        "searchTracks q=<word> sort=plays": lambda: ("fm.openmusic.catalog.searchTracks",
                                                     {"q": rng.choice(WORDS), "sort": "plays"}),
        "searchTracks genre (recent)": lambda: ("fm.openmusic.catalog.searchTracks",
                                                {"genre": rng.choice(GENRES)}),
        "getArtistTracks": lambda: ("fm.openmusic.catalog.getArtistTracks", {"actor": rng.choice(sample["artists"])}),
        "getTrackStats": lambda: ("fm.openmusic.listen.getTrackStats", {"uri": rng.choice(sample["tracks"])}),
    }
    timings: dict[str, list[float]] = {}
    transport = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
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
    await rt.stop()
    return timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--plays", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--db", default=str(DATA / "queries.sqlite"))
    args = ap.parse_args()
    path = Path(args.db)
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    print(f"machine: {cpu_model()}; building {args.tracks:,} tracks and {args.plays:,} plays ...", flush=True)
    started = time.perf_counter()
    sample = build(str(path), args.tracks, args.plays)
    print(f"built in {time.perf_counter() - started:.0f}s, {path.stat().st_size / 1e6:.0f} MB", flush=True)
    timings = asyncio.run(measure(str(path), sample, args.requests))
    print(f"\n{'query':32} {'p50 ms':>8} {'p99 ms':>8}   ({args.requests} requests each, in-process ASGI)")
    for name, samples in timings.items():
        q = statistics.quantiles(samples, n=100)
        print(f"{name:32} {q[49]:8.2f} {q[98]:8.2f}")


if __name__ == "__main__":
    main()
