"""Latency of the music feeds (``fm.openmusic.feed.getFeed``: following, genre:<name>, trending,
for-you) and of the Bluesky feed generator's skeletons (``app.bsky.feed.getFeedSkeleton``: fresh,
artists-you-follow) on ``bench.charts``' database (100,000 tracks by 2,000 artists, 50 each;
1,000,000 plays by 20,000 listeners in November 2026; 230,000 votes), copied first: the original
is never changed.

On the copy (deterministic, seeded), written straight into the tables the indexer fills, with the
rows ``indexer.stats`` derives:

- **votes** up to 1,000,000 ``vote`` rows: 600,000 more by listeners on tracks they played (a minute
  after the play, one in six down) and 170,000 by listeners on tracks they never played (Zipf-like
  popularity); ``vote_current`` is then rebuilt from ``vote`` (each account's latest per track, as
  ``stats.recount`` picks it) and ``vote_count`` from it.
- **follows**: every listener follows 5 to 300 artists (``min(300, 5 / u)``, u uniform: a Pareto
  tail, median 10, about 2% at 300), drawn by artist popularity ``1 / (rank + 1) ** 0.8``, over
  2026; ``follow`` rows and their ``follow_current`` and ``follow_count``.
- **shares**: 300,000 Bluesky posts (``app.bsky.feed.post`` AT-URIs with TID record keys) in the 7
  days up to 2026-11-20 23:59 UTC, 70% by listeners (a track drawn by popularity, 1% a track that
  does not exist) and 30% by artists (one of their own tracks); ``share`` rows as
  ``indexer.share.insert`` writes them (no ``record`` rows: nothing measured here reads the posts).
- **a rare genre**: every 500th track is retagged ``bossa nova`` (200 tracks, in ``track`` and in its
  record), beside the ten common ones (about 10,000 tracks each).
- every account's ``first_seen`` set to 2025-11-01 (migration 0018 stamped them when it ran, after
  the data's days, which makes every vote "young").

Before measuring, after the runtime has started (it refreshes reputation itself when it starts),
``reputation.refresh`` as of 2026-11-20 23:00 (timed), farm marks then dropped as ``bench.charts``
does (the synthetic plays all begin at midnight: left marked, every listener and vote weighs
nothing and trending is empty).

"Today" is 2026-11-20 (``charts.today``) and the skeletons' "now" is 2026-11-21 00:00 UTC.

**getFeed** is called as ``bench.charts`` calls its handlers: ``appview.queries.QUERIES`` on
validated parameters (default ``limit`` 25) with ``Runtime(...).start(firehose=False)``'s
``rt.views`` (the reader pool), so every figure includes hydration of the page's track views.
**getFeedSkeleton** calls ``feedgen.skeleton.fresh`` / ``following`` with the runtime's
``rt.reader.execute``, exactly as ``feedgen.app.FeedGenerator.get_skeleton`` does after it has
checked the service-auth JWT (not measured: one ES256/K-256 signature check per request), limit 50.
Each feed is measured on its first page and on its 3rd (the cursor of page 2). ``trending`` is
**warm**: the chart skeleton is cached (``appview.charts``, one computation a minute, timed once).
``for-you`` is warm too: the recommendation model is built once first (timed).

Each case: ``--requests`` requests one after the other (after 5 unmeasured), then the same request
from 16 concurrent clients (``--concurrent`` each): p50 / p99 ms per request, and requests/s.

    python -m bench.feeds [--source bench/data/charts.sqlite] [--db bench/data/feeds.sqlite]
                          [--requests 300] [--concurrent 20] [--reuse] [--only following,fresh]

Build ``--source`` first with ``python -m bench.charts``. ``--reuse`` measures an earlier copy again.
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
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.firehose import cpu_model
from bench.record import DATA
from core import db
from core.config import Settings

TODAY = date(2026, 11, 20)
#: The skeletons' "now": the end of the shares' week.
NOW = datetime(2026, 11, 21, tzinfo=UTC)
SHARE_DAYS = 7
RARE_GENRE = "bossa nova"
#: Every account's ``first_seen`` on the copy (before the plays and votes).
FIRST_SEEN = "2025-11-01T00:00:00.000Z"
CLIENTS = 16
FEED = "fm.openmusic.feed.getFeed"
_TID_CHARS = "234567abcdefghijklmnopqrstuvwxyz"


def tid(at: datetime, clock: int) -> str:
    """An atproto TID (record key) for ``at`` and a clock id (0..1023)."""
    n = (int(at.timestamp() * 1_000_000) << 10) | (clock & 1023)
    return "".join(_TID_CHARS[(n >> (5 * i)) & 31] for i in range(12, -1, -1))


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _zipf_cum(n: int, s: float) -> list[float]:
    total, out = 0.0, []
    for r in range(n):
        total += 1 / (r + 1) ** s
        out.append(total)
    return out


def _draw(rng: random.Random, items: list, cum: list[float]) -> Any:
    import bisect
    return items[bisect.bisect(cum, rng.random() * cum[-1])]


def more_votes(conn: sqlite3.Connection, rng: random.Random, total: int = 1_000_000) -> dict[str, int]:
    """``vote`` rows up to ``total`` (module docstring); ``vote_current`` and ``vote_count`` rebuilt."""
    have = conn.execute("SELECT count(*) FROM vote").fetchone()[0]
    want = max(0, total - have)
    played = int(want * 600 / 770)
    plays = conn.execute("SELECT did, track_uri, sort_at FROM play WHERE rowid % 5 IN (1, 2, 3) ORDER BY rowid").fetchall()
    plays = plays[:played]
    tracks = [r[0] for r in conn.execute("SELECT uri FROM track ORDER BY uri")]
    rng.shuffle(tracks)
    cum = _zipf_cum(len(tracks), 0.8)
    listeners = [r[0] for r in conn.execute("SELECT DISTINCT did FROM play ORDER BY did")]
    rows = []
    for i, (did, track, at) in enumerate(plays):
        d = "down" if rng.random() < 1 / 6 else "up"
        rows.append((f"at://{did}/fm.openmusic.social.vote/w{i}", did, f"w{i}", "bafyrei", track, d,
                     at[:17] + "59.000Z", at[:17] + "59.000Z"))
    for i in range(want - len(plays)):
        did, track = rng.choice(listeners), _draw(rng, tracks, cum)
        at = f"2026-11-{rng.randint(1, 20):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00.000Z"
        rows.append((f"at://{did}/fm.openmusic.social.vote/x{i}", did, f"x{i}", "bafyrei", track,
                     "down" if rng.random() < 1 / 6 else "up", at, at))
    conn.executemany("INSERT INTO vote (uri, did, rkey, cid, subject, direction, created_at, indexed_at) "
                     "VALUES (?,?,?,?,?,?,?,?)", rows)
    # what stats.recount keeps: each active account's latest vote per subject by (created_at, rkey)
    conn.execute("DELETE FROM vote_current")
    conn.execute(
        "INSERT INTO vote_current (subject, did, uri, value, sort_at) "
        "SELECT subject, did, uri, value, sort_at FROM (SELECT r.subject, r.did, r.uri, "
        "CASE r.direction WHEN 'up' THEN 1 ELSE -1 END AS value, MIN(r.created_at, r.indexed_at) AS sort_at, "
        "ROW_NUMBER() OVER (PARTITION BY r.did, r.subject ORDER BY r.created_at DESC, r.rkey DESC) AS n "
        "FROM vote r LEFT JOIN actor a ON a.did = r.did WHERE a.active IS NULL OR a.active = 1) WHERE n = 1")
    conn.execute("DELETE FROM vote_count")
    conn.execute("INSERT INTO vote_count (subject, up, down) SELECT subject, SUM(value > 0), SUM(value < 0) "
                 "FROM vote_current GROUP BY subject")
    return {"votes": conn.execute("SELECT count(*) FROM vote").fetchone()[0],
            "vote_current": conn.execute("SELECT count(*) FROM vote_current").fetchone()[0]}


def follows(conn: sqlite3.Connection, rng: random.Random) -> dict[str, int]:
    """``follow``, ``follow_current``, ``follow_count`` (module docstring)."""
    for table in ("follow", "follow_current", "follow_count"):
        conn.execute(f"DELETE FROM {table}")
    artists = [r[0] for r in conn.execute("SELECT DISTINCT did FROM track ORDER BY did")]
    rng.shuffle(artists)
    cum = _zipf_cum(len(artists), 0.8)
    listeners = [r[0] for r in conn.execute("SELECT DISTINCT did FROM play ORDER BY did")]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    span = (datetime(2026, 11, 20, 23, tzinfo=UTC) - start).total_seconds()
    rows, current = [], []
    for did in listeners:
        n = min(300, int(5 / (1 - rng.random())))
        chosen: dict[str, None] = {}
        while len(chosen) < n:
            chosen[_draw(rng, artists, cum)] = None
        for subject in chosen:
            at = start + timedelta(seconds=rng.random() * span)
            rkey = tid(at, len(rows))
            uri, stamp = f"at://{did}/fm.openmusic.graph.follow/{rkey}", iso(at)
            rows.append((uri, did, rkey, "bafyrei", subject, stamp, stamp))
            current.append((subject, did, uri, 1, stamp))
    conn.executemany("INSERT INTO follow (uri, did, rkey, cid, subject, created_at, indexed_at) VALUES (?,?,?,?,?,?,?)",
                     rows)
    conn.executemany("INSERT INTO follow_current (subject, did, uri, value, sort_at) VALUES (?,?,?,?,?)", current)
    conn.execute("INSERT INTO follow_count (subject, followers) SELECT subject, count(*) FROM follow_current "
                 "GROUP BY subject")
    return {"follows": len(rows), "followers": len(listeners)}


def shares(conn: sqlite3.Connection, rng: random.Random, n: int = 300_000) -> dict[str, int]:
    """``share`` rows (module docstring)."""
    conn.execute("DELETE FROM share")
    tracks = [r[0] for r in conn.execute("SELECT uri FROM track ORDER BY uri")]
    by_artist: dict[str, list[str]] = {}
    for uri in tracks:
        by_artist.setdefault(uri.split("/")[2], []).append(uri)
    artists = sorted(by_artist)
    rng.shuffle(tracks)
    cum = _zipf_cum(len(tracks), 0.8)
    listeners = [r[0] for r in conn.execute("SELECT DISTINCT did FROM play ORDER BY did")]
    end = NOW
    rows = []
    for i in range(n):
        at = end - timedelta(seconds=rng.random() * SHARE_DAYS * 86400)
        if rng.random() < 0.3:
            did = rng.choice(artists)
            subject = rng.choice(by_artist[did])
        else:
            did = rng.choice(listeners)
            subject = _draw(rng, tracks, cum)
            if rng.random() < 0.01:
                subject = subject[:-4] + "gone"  # a link to a page that does not exist
        rkey = tid(at, i)
        stamp = iso(at)
        rows.append((f"at://{did}/app.bsky.feed.post/{rkey}", did, rkey, "bafyrei", subject, stamp, stamp,
                     iso(at + timedelta(seconds=2))))
    conn.executemany("INSERT OR IGNORE INTO share (uri, did, rkey, cid, subject, created_at, sort_at, indexed_at) "
                     "VALUES (?,?,?,?,?,?,?,?)", rows)
    return {"shares": conn.execute("SELECT count(*) FROM share").fetchone()[0]}


def rare_genre(conn: sqlite3.Connection) -> int:
    """Every 500th track (by URI) becomes ``RARE_GENRE``, in ``track`` and in its record."""
    uris = [r[0] for r in conn.execute("SELECT uri FROM track ORDER BY uri")][::500]
    for uri in uris:
        (raw,) = conn.execute("SELECT json FROM record WHERE uri = ?", (uri,)).fetchone()
        rec = json.loads(raw)
        rec["genre"] = RARE_GENRE
        conn.execute("UPDATE record SET json = ? WHERE uri = ?", (json.dumps(rec), uri))
        conn.execute("UPDATE track SET genre = ?, genre_norm = ? WHERE uri = ?", (RARE_GENRE, RARE_GENRE, uri))
    return len(uris)


async def _reputation(path: Path) -> None:
    from appview import reputation

    conn = await db.connect(str(path))
    try:
        started = time.perf_counter()
        counts = await reputation.refresh(conn, datetime(TODAY.year, TODAY.month, TODAY.day, 23, tzinfo=UTC))
        print(f"  reputation.refresh: {time.perf_counter() - started:.1f} s ({counts})", flush=True)
    finally:
        await conn.close()
    conn2 = sqlite3.connect(path)
    dropped = conn2.execute("DELETE FROM reputation WHERE farm = 1").rowcount
    conn2.commit()
    conn2.close()
    print(f"  {dropped:,} farm marks dropped (the synthetic plays all begin at midnight)", flush=True)


def prepare(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path``, migrate the copy and add votes, follows, shares, a rare genre."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(path)
    src.backup(dst)  # a consistent copy, WAL included
    src.close()
    dst.close()
    print(f"  copied in {time.perf_counter() - started:.0f} s", flush=True)
    db.migrate(str(path))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    rng = random.Random(13)
    for name, step in (("votes", more_votes), ("follows", follows), ("shares", shares)):
        started = time.perf_counter()
        counts = step(conn, rng)
        conn.commit()
        print(f"  {name}: {', '.join(f'{k} {v:,}' for k, v in counts.items())} in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    print(f"  {rare_genre(conn)} tracks retagged {RARE_GENRE!r}", flush=True)
    # migration 0018 stamped every account first seen when it ran (after the data's days): make them
    # older than the data, or every vote weighs nothing ("young") and trending is empty
    conn.execute("UPDATE actor SET first_seen = ?", (FIRST_SEEN,))
    conn.commit()
    started = time.perf_counter()
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    print(f"  ANALYZE in {time.perf_counter() - started:.0f} s", flush=True)


Call = Callable[[], Awaitable[dict[str, Any]]]


async def _cases(rt: Any, conn: sqlite3.Connection) -> list[tuple[str, Call, Call | None]]:
    """(name, first page, 3rd page) per case, with the chosen accounts and genres printed."""
    from appview.queries import QUERIES
    from appview.xrpc import validate_params
    from feedgen import skeleton

    handler = QUERIES[FEED]

    def feed(**params: str) -> Callable[[str | None], Call]:
        def at(cursor: str | None) -> Call:
            p = validate_params(FEED, list((params | ({"cursor": cursor} if cursor else {})).items()))
            return lambda: handler(rt.views, p)
        return at

    def skel(name: str, viewer: str = "") -> Callable[[str | None], Call]:
        def at(cursor: str | None) -> Call:
            if name == "fresh":
                return lambda: skeleton.fresh(rt.reader.execute, skeleton.DEFAULT_LIMIT, cursor, now=NOW)
            return lambda: skeleton.following(rt.reader.execute, viewer, skeleton.DEFAULT_LIMIT, cursor)
        return at

    counts = conn.execute("SELECT did, count(*) AS n FROM follow_current GROUP BY did ORDER BY n, did").fetchall()
    top = next(did for did, n in counts if n == 300)
    median_did, median_n = counts[len(counts) // 2]
    common = conn.execute("SELECT genre_norm FROM track GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").fetchone()[0]
    n_common, n_rare = (conn.execute("SELECT count(*) FROM track WHERE genre_norm = ?", (g,)).fetchone()[0]
                        for g in (common, RARE_GENRE))
    streams = conn.execute("SELECT count(*) FROM play WHERE did = ? AND stream = 1", (top,)).fetchone()[0]
    shared_top = conn.execute("SELECT count(*) FROM share WHERE did IN (SELECT subject FROM follow WHERE did = ?)",
                              (top,)).fetchone()[0]
    shared_med = conn.execute("SELECT count(*) FROM share WHERE did IN (SELECT subject FROM follow WHERE did = ?)",
                              (median_did,)).fetchone()[0]
    print(f"listener with 300 follows: {top} ({streams} streams; the artists it follows shared {shared_top:,} posts)\n"
          f"median listener: {median_did} ({median_n} follows; its artists shared {shared_med:,} posts)\n"
          f"genres: {common!r} ({n_common:,} tracks), {RARE_GENRE!r} ({n_rare} tracks)", flush=True)
    makers: list[tuple[str, Callable[[str | None], Call]]] = [
        ("getFeed following (300 follows)", feed(feed="following", actor=top)),
        (f"getFeed following ({median_n} follows)", feed(feed="following", actor=median_did)),
        (f"getFeed genre:{common}", feed(feed=f"genre:{common}")),
        (f"getFeed genre:{RARE_GENRE}", feed(feed=f"genre:{RARE_GENRE}")),
        ("getFeed trending (warm)", feed(feed="trending")),
        ("getFeed for-you (warm)", feed(feed="for-you", actor=top)),
        ("skeleton fresh", skel("fresh")),
        ("skeleton artists-you-follow (300)", skel("following", top)),
        (f"skeleton artists-you-follow ({median_n})", skel("following", median_did)),
    ]
    out = []
    for name, make in makers:
        first = make(None)
        page = await first()
        cursor = page.get("cursor")
        if not page["feed"]:  # measured all the same, and said
            print(f"WARNING: {name} is EMPTY on this data: its first page only, an empty one", flush=True)
            out.append((name + " [EMPTY]", first, None))
            continue
        assert cursor, (name, page)
        page2 = await make(cursor)()
        assert page2["feed"] and page2.get("cursor"), (name, "page 2", page2)
        out.append((name, first, make(page2["cursor"])))
    return out


async def _time(call: Call) -> float:
    start = time.perf_counter()
    await call()
    return (time.perf_counter() - start) * 1000


async def measure(path: Path, requests: int, concurrent: int, only: list[str]) -> list[tuple[str, float, float, float, float, float]]:
    """Rows (case, p50, p99, 16-client p50, p99, requests/s), ms, printed as they come."""
    from appview import charts, recommend
    from openmusic.runtime import Runtime

    charts.today = lambda: TODAY
    charts.clear_cache()
    recommend.clear_models()
    rt = Runtime(Settings(db_path=str(path), blob_cache_dir=str(path.parent / "blobs"), log_level="WARNING"))
    await rt.start_api()  # the request side only: no leader storing chart totals meanwhile
    await _reputation(path)  # after the start, as bench.charts does
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = []
    try:
        started = time.perf_counter()
        model = await recommend.model(rt.views)
        print(f"recommendation model: build {model.build_seconds:.1f} s, waited {time.perf_counter() - started:.1f} s "
              f"({model.listeners:,} listeners, {model.pairs:,} pairs)", flush=True)
        started = time.perf_counter()
        from appview.queries import QUERIES
        from appview.xrpc import validate_params
        await QUERIES[FEED](rt.views, validate_params(FEED, [("feed", "trending")]))
        print(f"trending chart computed (cold, then cached) in {(time.perf_counter() - started) * 1000:.0f} ms", flush=True)
        cases = await _cases(rt, conn)
        print(f"\n{'case':42} {'p50':>7} {'p99':>7} {f'{CLIENTS}c p50':>8} {f'{CLIENTS}c p99':>8} {'req/s':>6}   "
              f"(ms; {requests} requests in a row, then {CLIENTS} clients x {concurrent})", flush=True)
        for name, first, third in cases:
            for label, call in (("", first), (", page 3", third)):
                if call is None:
                    continue
                full = name + label
                if only and not any(o in full for o in only):
                    continue
                for _ in range(5):
                    await _time(call)
                seq = [await _time(call) for _ in range(requests)]

                async def client(call: Call = call) -> list[float]:
                    return [await _time(call) for _ in range(concurrent)]

                started = time.perf_counter()
                par = [t for ts in await asyncio.gather(*(client() for _ in range(CLIENTS))) for t in ts]
                rate = len(par) / (time.perf_counter() - started)
                s, c = statistics.quantiles(seq, n=100), statistics.quantiles(par, n=100)
                rows.append((full, s[49], s[98], c[49], c[98], rate))
                print(f"{full:42} {s[49]:7.2f} {s[98]:7.2f} {c[49]:8.2f} {c[98]:8.2f} {rate:6.0f}", flush=True)
    finally:
        conn.close()
        await rt.stop()
    return rows


def markdown(rows: list[tuple[str, float, float, float, float, float]]) -> str:
    lines = [f"| case | p50 ms | p99 ms | {CLIENTS} clients p50 ms | {CLIENTS} clients p99 ms | req/s ({CLIENTS} clients) |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | {a:.1f} | {b:.1f} | {c:.1f} | {d:.1f} | {r:.0f} |" for n, a, b, c, d, r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(DATA / "charts.sqlite"), help="bench.charts' database (read only)")
    ap.add_argument("--db", default=str(DATA / "feeds.sqlite"), help="the copy to build and measure")
    ap.add_argument("--requests", type=int, default=300, help="requests per case, one after the other")
    ap.add_argument("--concurrent", type=int, default=20, help=f"requests per client with {CLIENTS} clients at once")
    ap.add_argument("--reuse", action="store_true", help="measure the copy an earlier run built (migrated first)")
    ap.add_argument("--only", default="", help="comma-separated case name parts to measure (default: all)")
    args = ap.parse_args()
    path, source = Path(args.db), Path(args.source)
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs", flush=True)
    if not args.reuse or not path.exists():
        if not source.exists():
            raise SystemExit(f"{source} is missing: build it with python -m bench.charts")
        print(f"copying {source} to {path} ...", flush=True)
        started = time.perf_counter()
        prepare(source, path)
        print(f"prepared in {time.perf_counter() - started:.0f} s; database {path.stat().st_size / 1e6:.0f} MB", flush=True)
    else:
        db.migrate(str(path))
    rows = asyncio.run(measure(path, args.requests, args.concurrent,
                               [o.strip() for o in args.only.split(",") if o.strip()]))
    print("\n" + markdown(rows), flush=True)


if __name__ == "__main__":
    main()
