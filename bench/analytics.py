"""Latency of the analytics queries (``fm.openmusic.analytics.*``) and the time to rebuild their
rollups, on ``bench.queries``' database (100,000 tracks by 2,000 artists, 1,000,000 plays by 20,000
listeners, November 2026), whose plays are given here what real players send: segments heard (most
from the start until the listener stops, some skipping ahead, some seeking back to hear a part
again), an opt-in country on 60% of them, and the streams decisions (``heard_ms``, paid for the 20%
of listeners on a paid tier).

The money queries (getRevenue, getConversion, getOverview) read what ``money`` writes beside the
plays (deterministic, replaced on every run, ``--reuse`` too): the paid listeners' monthly invoices
(the first from a month and day of the year before, so conversions spread over it), every listener's stream
days (``listener_day``, from the plays), November's close as earning lines (one subscription line
per paid listener and track streamed, one ad line per track with free streams, both posted
2026-11-30), 50,000 settled tips (half naming a track), credit purchases, a payout per artist (a
tenth still pending), the ad pool, purchase-link clicks on a fifth of the tracks and 10,000 rejected
records.

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
from core import db
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


def money(path: str, seed: int = 5) -> dict[str, int]:
    """Write the money the money queries read (see the module docstring), replacing what an earlier
    run wrote. Returns rows per table."""
    rng = random.Random(seed)
    db.migrate(path)  # a database an earlier run built may predate purchase_click
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    tables = ("subscription_invoice", "listener_day", "earning_line", "ledger_day", "ledger_entry", "ledger_txn", "payout",
              "ad_pool", "purchase_click", "rejected_record")
    for table in tables:
        conn.execute(f"DELETE FROM {table}")
    listeners = [r[0] for r in conn.execute("SELECT DISTINCT did FROM play ORDER BY did")]
    paid = [d for d in listeners if int(d[-2:]) % 5 == 0]  # as ``enrich`` decides
    artists = [r[0] for r in conn.execute("SELECT DISTINCT did FROM track ORDER BY did")]
    tracks = [r[0] for r in conn.execute("SELECT uri FROM track ORDER BY uri")]
    txns: list[tuple[str, str, str]] = []  # (idem_key, kind, created_at)
    entries: list[tuple[str, str, int]] = []  # (idem_key, account, amount)

    def post(key: str, kind: str, at: str, *postings: tuple[str, int]) -> None:
        txns.append((key, kind, at))
        entries.extend((key, account, amount) for account, amount in postings)

    months = [f"{2025 + (m + 11) // 12}-{(m + 11) % 12 + 1:02d}" for m in range(12)]  # 2025-12 .. 2026-11
    invoices = []
    for did in paid:
        day = 1 + rng.randrange(28)  # the day of the month their service periods start
        for month in months[rng.randrange(12):]:
            y, m = int(month[:4]), int(month[5:])
            start, end = f"{month}-{day:02d}T00:00:00.000Z", f"{y + m // 12}-{m % 12 + 1:02d}-{day:02d}T00:00:00.000Z"
            inv = f"in_{did[-10:]}_{month}"
            invoices.append((inv, "sub_" + did[-10:], did, "plus", "paid", start, end, 999, 30, "USD", start,
                             f"share:{inv}" if month < "2026-11" else None, start))
            post(f"stripe:{inv}", "subscription_payment", start, ("stripe:holding", -969), (f"subscription:{did}", 969))
    conn.executemany("INSERT INTO subscription_invoice (id, subscription, did, tier, status, period_start, period_end, "
                     "amount_paid, fee, currency, paid_at, distributed_txn, updated_at) "
                     "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", invoices)
    conn.execute("INSERT INTO listener_day (did, day, stream_ms) SELECT did, substr(sort_at, 1, 10), SUM(stream_ms) "
                 "FROM play WHERE stream = 1 GROUP BY 1, 2")
    # November's close: the paid listeners' shares by (listener, track), the ad pool by track
    closed = "2026-11-30T23:00:00.000Z"
    lines = []
    for did, track_uri, artist, ms in conn.execute(
            "SELECT p.did, p.track_uri, t.did, SUM(p.stream_ms) FROM play p JOIN track t ON t.uri = p.track_uri "
            "WHERE p.stream = 1 AND p.paid = 1 GROUP BY p.did, p.track_uri").fetchall():
        lines.append((f"share:in_{did[-10:]}_2026-11", "2026-11", "subscription_share", artist, track_uri, ms,
                      ms // 3, 678, 10000, 1 + ms // 20000, "USD", "invoice:" + did[-16:]))
    for track_uri, artist, ms in conn.execute(
            "SELECT p.track_uri, t.did, SUM(p.stream_ms) FROM play p JOIN track t ON t.uri = p.track_uri "
            "WHERE p.stream = 1 AND p.paid = 0 GROUP BY p.track_uri").fetchall():
        lines.append(("ads:2026-11", "2026-11", "ad_share", artist, track_uri, ms, 0, 0, 10000, 1 + ms // 50000,
                      "USD", "ads:2026-11"))
    for key in sorted({x[0] for x in lines if x[0].startswith("share:")}):
        post(key, "subscription_share", closed, ("platform:revenue", 291))
    post("ads:2026-11", "ad_share", closed, ("ads:pool", -1_000_000))
    conn.execute("INSERT INTO ad_pool (period, amount, currency, entered_at, distributed_txn) VALUES "
                 "('2026-11', 1000000, 'USD', '2026-11-25T00:00:00.000Z', 'ads:2026-11')")
    post("adrev:2026-11", "ad_revenue", "2026-11-25T00:00:00.000Z", ("ads:income", -1_000_000), ("ads:pool", 1_000_000))
    # tips, settled through November, bought with credit
    for i, did in enumerate(listeners):
        post(f"stripe:pi_{i}", "credit_purchase", f"2026-11-{1 + i % 20:02d}T08:00:00.000Z",
             ("stripe:holding", -2000), (f"credit:{did}", 2000))
    for i in range(50_000):
        payer, track_uri = rng.choice(listeners), rng.choice(tracks)
        artist = track_uri.split("/")[2]
        uri, amount = f"at://{payer}/fm.openmusic.payment.tip/t{i:08d}", rng.choice((100, 200, 500, 1000))
        at = f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:00:00.000Z"
        post(f"tip:{uri}", "tip", at, (f"credit:{payer}", -amount), (f"earnings:{artist}", amount))
        lines.append((f"tip:{uri}", "2026-11", "tip", artist, track_uri if i % 2 else None, None, None, amount, None,
                      amount, "USD", uri))
    conn.executemany("INSERT INTO earning_line (txn, period, kind, artist, track_uri, listened_ms, pool_ms, pool, "
                     "share_bps, amount, currency, source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", lines)
    payouts = []
    for i, artist in enumerate(artists):
        pid, status = f"po_bench{i:06d}", "pending" if i % 10 == 0 else "paid"
        made = f"2026-11-{1 + i % 28:02d}T12:00:00.000Z"
        payouts.append((pid, artist, artist, "acct_" + artist[-8:], "2026-10", 5000, "USD", "{}", status,
                        None if status == "pending" else "tr_" + pid, "r" + pid, made, made))
        post(f"payout:{pid}", "payout_reserve", made, (f"earnings:{artist}", -5000), ("payouts:pending", 5000))
        if status == "paid":
            post(f"payout-sent:{pid}", "payout", made, ("payouts:pending", -5000), ("stripe:holding", 5000))
    conn.executemany("INSERT INTO payout (id, did, payee, account, period, amount, currency, covers, status, transfer, "
                     "rkey, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", payouts)
    conn.executemany("INSERT INTO ledger_txn (idem_key, kind, created_at) VALUES (?,?,?)", txns)
    ids = dict(conn.execute("SELECT idem_key, id FROM ledger_txn"))
    conn.executemany("INSERT INTO ledger_entry (txn_id, account, currency, amount) VALUES (?,?,'USD',?)",
                     [(ids[k], account, amount) for k, account, amount in entries])
    clicks = [(uri, uri.split("/")[2], f"2026-11-{d:02d}", rng.randrange(1, 20))
              for uri in tracks[::5] for d in sorted(rng.sample(range(1, 31), 10))]
    conn.executemany("INSERT INTO purchase_click (track_uri, did, day, clicks) VALUES (?,?,?,?)", clicks)
    reasons = ("lexicon", "too_large", "bad_reference", "blob", "invalid_commit")
    conn.executemany("INSERT INTO rejected_record (uri, reason, rejected_at) VALUES (?,?,?)",
                     [(f"at://did:plc:x{i}/x/1", reasons[i % 5], f"2026-11-{1 + i % 28:02d}T00:00:00.000Z")
                      for i in range(10_000)])
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
    conn.close()
    return counts


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
        "getRevenue artist, by day": lambda: ("getRevenue", {"artist": rng.choice(artists), **month}),
        "getRevenue top artist, by day": lambda: ("getRevenue", {"artist": rng.choice(hot_artists), **month}),
        "getRevenue top artist, by week, 1 year": lambda: ("getRevenue", {"artist": rng.choice(hot_artists),
                                                                          "granularity": "week", **year}),
        "getConversion top artist, by day": lambda: ("getConversion", {"artist": rng.choice(hot_artists), **month}),
        "getConversion top artist, by month, 1 year": lambda: ("getConversion", {"artist": rng.choice(hot_artists),
                                                                                 "granularity": "month", **year}),
        "getConversion network, by day": lambda: ("getConversion", month),
        "getConversion network, by month, 1 year": lambda: ("getConversion", {"granularity": "month", **year}),
        "getOverview 30 days": lambda: ("getOverview", month),
        "getOverview 1 year": lambda: ("getOverview", year),
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
    started = time.perf_counter()
    rows = money(str(path))
    print(f"money written in {time.perf_counter() - started:.0f} s ({', '.join(f'{t} {n:,}' for t, n in rows.items())})",
          flush=True)
    timings = asyncio.run(measure(str(path), args.requests))
    print(f"\n{'query':42} {'p50 ms':>8} {'p99 ms':>8}   ({args.requests} requests each, in-process ASGI, JWT verified)")
    for name, samples in timings.items():
        q = statistics.quantiles(samples, n=100)
        print(f"{name:42} {q[49]:8.2f} {q[98]:8.2f}")


if __name__ == "__main__":
    main()
