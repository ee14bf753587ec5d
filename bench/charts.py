"""Latency of the charts (``fm.openmusic.feed.getChart``) and browse counts
(``fm.openmusic.catalog.getBrowse``) on ``bench.analytics``' database (``bench.queries``' 100,000
tracks by 2,000 artists and 1,000,000 plays by 20,000 listeners in November 2026, with the streams
decisions and rollups ``bench.analytics`` adds), copied first: the original is never changed.

On the copy, before migration 0017 fills ``track_facet`` from the records: every track record gets
one to three of 12 moods, a third an ``aiDisclosure`` naming one or two of 8 tools, a tenth ``splits`` with a listener, a
fifth a ``releaseDate``. Then (deterministic) 200,000 votes (each by a listener on a track they played, a
minute after the play, one in six down) and 20,000 votes by listeners who never played the track,
10,000 by artists on their own tracks; ``track_stats``' streams recounted from the plays' decisions; 50,000 tips naming tracks (Zipf-like), 90% settled, a tenth
in EUR. "Today" is 2026-11-20, the last day with plays.

Each case is measured twice, calling the handler on validated parameters through the runtime's
reader pool (``CHART_QUERIES`` are not yet routed by ``appview.queries``): **cold**, the cache
cleared before every request (the skeleton's SQL plus one page's hydration: what the first request
in a minute pays), and **warm** (the skeleton cached: what the others pay). p50 / p99 ms.

    python -m bench.charts [--source bench/data/analytics.sqlite] [--db bench/data/charts.sqlite]
                           [--cold 100] [--warm 1000] [--reuse]

Build ``--source`` first with ``python -m bench.analytics``. ``--reuse`` measures an earlier copy again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bench.firehose import cpu_model
from bench.record import DATA
from core import db
from core.config import Settings
from indexer import stats

MOODS = ["calm", "dark", "energetic", "happy", "melancholic", "dreamy", "aggressive", "romantic", "uplifting",
         "tense", "playful", "epic"]
TOOLS = ["Suno", "Udio", "Logic Pro", "Ableton", "Stable Audio", "MusicGen", "iZotope", "LANDR"]
TODAY = date(2026, 11, 20)
#: split recipients: some of bench.queries' listeners
SPLIT_DIDS = [f"did:plc:listener{i:018d}" for i in range(0, 20_000, 97)]
CHART, BROWSE = "fm.openmusic.feed.getChart", "fm.openmusic.catalog.getBrowse"
BREAKDOWN, STATS = "fm.openmusic.social.getVoteBreakdown", "fm.openmusic.listen.getTrackStats"


def enrich_tracks(conn: sqlite3.Connection, rng: random.Random) -> int:
    """Moods, AI tools and release dates in the track records (before migration 0017 reads them)."""
    rows = conn.execute("SELECT uri, json FROM record WHERE collection = 'fm.openmusic.catalog.track'").fetchall()
    updates = []
    for uri, raw in rows:
        rec = json.loads(raw)
        rec["moods"] = rng.sample(MOODS, rng.randint(1, 3))
        if rng.random() < 1 / 3:
            rec["aiDisclosure"] = {"level": rng.choice(["assisted", "generated"]), "tools": rng.sample(TOOLS, rng.randint(1, 2))}
        if rng.random() < 0.1:
            rec["splits"] = [{"did": uri.split("/")[2], "shareBps": 7000}, {"did": rng.choice(SPLIT_DIDS), "shareBps": 3000}]
        if rng.random() < 0.2:
            rec["releaseDate"] = f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T00:00:00.000Z"
        updates.append((json.dumps(rec), uri))
    conn.executemany("UPDATE record SET json = ? WHERE uri = ?", updates)
    return len(updates)


def votes_and_tips(conn: sqlite3.Connection, rng: random.Random) -> dict[str, int]:
    """Votes (``vote`` and what ``indexer.stats`` keeps: ``vote_current``) and settled tips."""
    for table in ("vote", "vote_current", "vote_count", "tip", "settlement"):
        conn.execute(f"DELETE FROM {table}")
    plays = conn.execute("SELECT did, track_uri, sort_at FROM play WHERE rowid % 5 = 0").fetchall()
    tracks = [r[0] for r in conn.execute("SELECT uri FROM track ORDER BY uri")]
    listeners = [r[0] for r in conn.execute("SELECT DISTINCT did FROM play")]
    votes = []
    for did, track, at in plays:
        votes.append((did, track, -1 if rng.random() < 1 / 6 else 1, at[:17] + "59.000Z"))
    for _ in range(20_000):
        votes.append((rng.choice(listeners), rng.choice(tracks), 1, f"2026-11-{rng.randint(7, 20):02d}T12:00:00.000Z"))
    for _ in range(10_000):
        track = rng.choice(tracks)
        votes.append((track.split("/")[2], track, 1, f"2026-11-{rng.randint(7, 20):02d}T12:00:00.000Z"))
    rows, current = [], []
    for i, (did, track, value, at) in enumerate(votes):
        uri = f"at://{did}/fm.openmusic.social.vote/v{i}"
        rows.append((uri, did, f"v{i}", "bafyrei", track, "up" if value > 0 else "down", at, at))
        current.append((track, did, uri, value, at))
    conn.executemany("INSERT INTO vote (uri, did, rkey, cid, subject, direction, created_at, indexed_at) "
                     "VALUES (?,?,?,?,?,?,?,?)", rows)
    conn.executemany("INSERT OR REPLACE INTO vote_current (subject, did, uri, value, sort_at) VALUES (?,?,?,?,?)", current)
    weights = [1 / (1 + r) ** 0.8 for r in range(len(tracks))]
    tips, settlements = [], []
    for i, track in enumerate(rng.choices(tracks, weights=weights, k=50_000)):
        did = rng.choice(listeners)
        uri = f"at://{did}/fm.openmusic.payment.tip/t{i}"
        at = f"2026-11-{rng.randint(1, 20):02d}T{rng.randint(0, 23):02d}:00:00.000Z"
        amount, currency = rng.choice([100, 200, 500, 1000, 2000]), "EUR" if rng.random() < 0.1 else "USD"
        tips.append((uri, did, f"t{i}", "bafyrei", track.split("/")[2], track, "bafyrei", amount, currency, at, at, at))
        if rng.random() < 0.9:
            settlements.append((f"{uri}-s", "did:plc:broker", f"s{i}", "bafyrei", uri, "bafyrei", did,
                                track.split("/")[2], "settled", amount, currency, "[]", at, 1, at))
    conn.executemany("INSERT INTO tip (uri, did, rkey, cid, subject, track_uri, track_cid, amount, currency, created_at, "
                     "sort_at, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", tips)
    conn.executemany("INSERT INTO settlement (uri, did, rkey, cid, tip_uri, tip_cid, payer, subject, status, amount, "
                     "currency, recipients, settled_at, verified, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     settlements)
    return {"votes": len(rows), "vote_current": conn.execute("SELECT count(*) FROM vote_current").fetchone()[0],
            "tips": len(tips), "settled": len(settlements)}


def prepare(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path``, enrich the copy and migrate it (0017 fills ``track_facet``)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(path)
    src.backup(dst)  # a consistent copy, WAL included
    src.close()
    rng = random.Random(13)
    dst.execute("PRAGMA synchronous = OFF")
    started = time.perf_counter()
    n = enrich_tracks(dst, rng)
    dst.commit()
    dst.close()
    print(f"  {n:,} track records given moods, tools, release dates in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    db.migrate(str(path))
    print(f"  migrated (0016, 0017: track_facet backfilled) in {time.perf_counter() - started:.1f} s", flush=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    started = time.perf_counter()
    stats.recount_all(conn)  # bench.analytics decides streams in ``play`` only; ``top all`` reads track_stats
    counts = votes_and_tips(conn, rng)
    conn.commit()
    conn.execute("ANALYZE")
    facets = dict(conn.execute("SELECT kind, count(*) FROM track_facet GROUP BY kind").fetchall())
    conn.close()
    print(f"  {', '.join(f'{k} {v:,}' for k, v in counts.items())} written in {time.perf_counter() - started:.0f} s; "
          f"track_facet: {facets}", flush=True)


async def measure(path: Path, cold: int, warm: int, only: list[str] = ()) -> dict[str, tuple[list[float], list[float]]]:
    """Each case's (cold, warm) latencies, ms; ``only``: case name prefixes to keep. Refreshes the
    reputation table first (timed)."""
    from appview import charts, reputation
    from openmusic.runtime import Runtime

    charts.today = lambda: TODAY
    rt = Runtime(Settings(db_path=str(path), blob_cache_dir=str(path.parent / "blobs"), log_level="WARNING"))
    # the request side only: a leader would store chart totals (appview.charts.keep_chart_totals),
    # and the cold cases here time a replica computing its own
    await rt.start_api()
    cases: dict[str, tuple[str, dict[str, str]]] = {
        "top day": (CHART, {"chart": "top", "period": "day"}),
        "top week": (CHART, {"chart": "top"}),
        "top month": (CHART, {"chart": "top", "period": "month"}),
        "top all": (CHART, {"chart": "top", "period": "all"}),
        "top week genre": (CHART, {"chart": "top", "genre": "jazz"}),
        "top week mood": (CHART, {"chart": "top", "mood": "calm"}),
        "trending": (CHART, {"chart": "trending"}),
        "trending aiLevel": (CHART, {"chart": "trending", "aiLevel": "generated"}),
        "new": (CHART, {"chart": "new"}),
        "new mood": (CHART, {"chart": "new", "mood": "dreamy"}),
        "tipped week": (CHART, {"chart": "tipped"}),
        "tipped month EUR": (CHART, {"chart": "tipped", "period": "month", "currency": "EUR"}),
        "browse": (BROWSE, {}),
        "browse genre": (BROWSE, {"genre": "rock"}),
        "browse mood + aiLevel": (BROWSE, {"mood": "calm", "aiLevel": "assisted"}),
    }
    reader = await db.connect(str(path))
    try:
        cur = await reader.execute("SELECT subject, COUNT(*) FROM vote_current GROUP BY subject ORDER BY 2 DESC LIMIT 1")
        voted, n_votes = await cur.fetchone()
        started = time.perf_counter()
        counts = await reputation.refresh(reader, datetime(TODAY.year, TODAY.month, TODAY.day, 23, tzinfo=UTC))
        print(f"reputation.refresh: {time.perf_counter() - started:.1f} s ({counts})", flush=True)
        # bench.queries' synthetic plays of a listener all begin at midnight of their day, which the farm
        # check rightly calls plays no person produces; forget those marks so the charts weigh the votes
        await reader.execute("DELETE FROM reputation WHERE farm = 1")
        print("  (the synthetic plays all begin at midnight: farm marks dropped before measuring)", flush=True)
    finally:
        await reader.close()
    cases |= {f"vote breakdown ({n_votes} votes)": (BREAKDOWN, {"uri": voted}),
              "track stats (most voted)": (STATS, {"uri": voted})}
    if only:
        cases = {k: v for k, v in cases.items() if any(k.startswith(o) for o in only)}
    out = {}
    try:
        await _run(cases, cold, warm, rt, out)
    finally:
        await rt.stop()
    return out


async def _run(cases: dict, cold: int, warm: int, rt: Any, out: dict) -> None:
    from appview import charts
    from appview.queries import QUERIES
    from appview.xrpc import validate_params

    for name, (nsid, params) in cases.items():
        handler = QUERIES[nsid]
        p = validate_params(nsid, list(params.items()))
        first = await handler(rt.views, p)
        assert first.get("tracks", first.get("genres", first.get("votes", first.get("plays")))), (name, first)
        samples: tuple[list[float], list[float]] = ([], [])
        for kind, n in ((0, cold), (1, warm)):
            for i in range(n + 5):
                if kind == 0:
                    charts.clear_cache()
                start = time.perf_counter()
                await handler(rt.views, p)
                if i >= 5:
                    samples[kind].append((time.perf_counter() - start) * 1000)
        out[name] = samples
        c, w = statistics.quantiles(samples[0], n=100), statistics.quantiles(samples[1], n=100)
        print(f"{name:24} {c[49]:9.2f} {c[98]:9.2f} {w[49]:9.2f} {w[98]:9.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(DATA / "analytics.sqlite"), help="bench.analytics' database (read only)")
    ap.add_argument("--db", default=str(DATA / "charts.sqlite"), help="the copy to build and measure")
    ap.add_argument("--cold", type=int, default=100, help="requests per case with the cache cleared")
    ap.add_argument("--warm", type=int, default=1000, help="requests per case with the skeleton cached")
    ap.add_argument("--reuse", action="store_true", help="measure the copy an earlier run built (migrated first)")
    ap.add_argument("--only", default="", help="comma-separated case name prefixes to measure (default: all)")
    args = ap.parse_args()
    path, source = Path(args.db), Path(args.source)
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs", flush=True)
    if not args.reuse or not path.exists():
        if not source.exists():
            raise SystemExit(f"{source} is missing: build it with python -m bench.analytics")
        print(f"copying {source} to {path} ...", flush=True)
        started = time.perf_counter()
        prepare(source, path)
        print(f"prepared in {time.perf_counter() - started:.0f} s; database {path.stat().st_size / 1e6:.0f} MB", flush=True)
    print(f"\n{'case':24} {'cold p50':>9} {'cold p99':>9} {'warm p50':>9} {'warm p99':>9}   "
          f"(ms; cold: {args.cold} requests, cache cleared; warm: {args.warm})", flush=True)
    asyncio.run(measure(path, args.cold, args.warm, [o.strip() for o in args.only.split(",") if o.strip()]))


if __name__ == "__main__":
    main()
