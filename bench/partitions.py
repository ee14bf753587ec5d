"""What monthly partitions of ``play`` cost and save on PostgreSQL (issue 15; migrations
``0033_play_partitions`` and ``0038_play_bounds``, ``indexer.partitions``): the same plays in three
tables, queried alike.

- ``flat``: unpartitioned, primary key ``(uri)`` (the baseline's ``play``);
- ``monthly``: the migrated ``play``, by month with ``MINVALUE``..first-month and
  last-month..``MAXVALUE`` range partitions (what we ship since 0038);
- ``withdefault``: by month plus a ``DEFAULT`` partition (what 0033 shipped: a default partition
  keeps the planner from reading the months in order).

``--plays`` rows (default 1,000,000) by ``plays / 50`` listeners over ``--months`` months (default
24, ending at the current month), written with ``COPY``, each table with the baseline's indexes,
then ``VACUUM ANALYZE``. One client, ``--runs`` queries each, random keys; p50 / p99 in µs, with
psycopg's server-side prepared statements (``prepared``: generic plans with run-time pruning once
PostgreSQL picks them) and without (``planned``: each query planned anew, the cost of planning
over N partitions included). The queries:

- ``uri``: point lookup by URI (``rollups``, ``streams.settle``; not bounded by month: every
  partition is probed);
- ``getPlays``: a listener's newest 51 plays (``appview.queries.get_plays`` without the record join);
- ``delete``: ``DELETE ... WHERE uri = ? RETURNING`` (``indexer.play.delete``), rolled back;
- ``track``: a track's streams counted (``getTrackStats``' farm check: not bounded by month);
- ``month``: a listener's plays in one month (bounded: one partition is read);
- ``today``: a listener's streams of a track in one day (``indexer.streams``' check for each new
  play, on the ingest path; bounded);
- ``insert``: one play inserted in the current month (``indexer.play.insert``), rolled back.

``--ingest N`` measures the ingest path instead: ``bench.generator``'s workload (N plays, N / 10
tracks) through ``Indexer.apply`` into a database partitioned as shipped (with ``--months`` months
created) and into one with migration 0033 rolled back (unpartitioned), ``--rounds`` times each,
alternating; records/s of each round.

    python -m bench.partitions [--plays 1000000] [--months 24] [--runs 2000] [--url postgresql://...]
    python -m bench.partitions --ingest 20000 [--rounds 2]

Without ``--url`` it starts a throwaway server (``devkit.pgserver``) and removes it at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time
from collections.abc import Iterator

import psycopg

from bench.firehose import cpu_model
from bench.generator import tid
from core import db
from devkit import pgserver
from indexer import partitions

COLUMNS = ("uri", "did", "rkey", "cid", "track_uri", "track_cid", "track_did", "created_at", "sort_at", "listened_ms",
           "completed", "client", "country", "indexed_at", "stream", "paid", "stream_ms", "heard_ms")
CID = "bafyreib2okcprhcpr2odq2acxrtvdvym57eldhqtuv6ynhih2aezrcveqa"
TABLES = ("flat", "monthly", "withdefault")
QUERIES = {
    "uri": "SELECT did, track_uri, sort_at, stream FROM {t} WHERE uri = %s",
    "getPlays": "SELECT uri, cid, track_uri, created_at, listened_ms, completed, sort_at FROM {t} WHERE did = %s "
                "ORDER BY sort_at DESC, uri DESC LIMIT 51",
    "delete": "DELETE FROM {t} WHERE uri = %s RETURNING track_uri, heard_ms, completed, stream, paid, stream_ms, "
              "sort_at, country",
    "track": "SELECT count(*) FROM {t} WHERE track_uri = %s AND stream = 1",
    "month": "SELECT count(*) FROM {t} WHERE did = %s AND sort_at >= %s AND sort_at < %s",
    "today": "SELECT count(*) FROM {t} WHERE did = %s AND track_uri = %s AND stream = 1 AND sort_at >= %s "
             "AND sort_at < %s",
    "insert": "INSERT INTO {t} (uri, did, rkey, cid, track_uri, track_cid, track_did, created_at, sort_at, listened_ms, "
              "completed, indexed_at, stream, stream_ms, heard_ms) VALUES (%s, %s, 'r', 'c', %s, 'c', 'd', %s, %s, "
              "180000, 1, %s, 1, 180000, 180000)",
}
#: Statements rolled back after each run.
WRITES = ("delete", "insert")



def rows(n_plays: int, first: str, n_months: int, seed: int = 15) -> Iterator[tuple]:
    """``n_plays`` play rows over ``n_months`` months from ``first`` (uniform), tracks Zipf-like."""
    rng = random.Random(seed)
    n_listeners, n_tracks = max(1, n_plays // 50), max(1, n_plays // 20)
    for i in range(n_plays):
        did = f"did:plc:listener{rng.randrange(n_listeners):018d}"
        artist = f"did:plc:artist{rng.randrange(max(1, n_tracks // 50)):020d}"
        track = f"at://{artist}/fm.openmusic.catalog.track/{tid(int(n_tracks * rng.random() ** 3))}"
        month = partitions.add_months(first, rng.randrange(n_months))
        at = f"{month}-{rng.randint(1, 28):02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:" \
             f"{rng.randrange(60):02d}.{rng.randrange(1000):03d}Z"
        stream = int(rng.random() < 0.6)
        yield (f"at://{did}/fm.openmusic.listen.play/{tid(i)}", did, tid(i), CID, track, CID, artist, at, at,
               180_000, 1, None, "US", at, stream, 0, 180_000 * stream, 180_000)


def build(url: str, n_plays: int, n_months: int) -> str:
    """Migrate ``url``, fill ``play`` (months created first) and copy it into the other two tables.
    Returns the first month."""
    db.migrate(url)
    last = partitions.current_month()
    first = partitions.add_months(last, 1 - n_months)
    with psycopg.connect(url) as conn:
        partitions.ensure_months(conn, partitions.add_months(last, partitions.AHEAD_MONTHS), since=first)
        conn.commit()
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY play ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows(n_plays, first, n_months):
                copy.write_row(row)
        conn.commit()
        print(f"  COPY {n_plays:,} plays into the monthly table: {time.perf_counter() - t0:.1f} s")
        indexes = [r[0] for r in conn.execute(
            "SELECT replace(pg_get_indexdef(indexrelid), ' ON ONLY ', ' ON ') FROM pg_index "
            "WHERE indrelid = 'play'::regclass AND NOT indisprimary")]
        conn.execute("CREATE TABLE flat (LIKE play INCLUDING DEFAULTS)")
        conn.execute("INSERT INTO flat SELECT * FROM play")
        conn.execute("ALTER TABLE flat ADD PRIMARY KEY (uri)")
        conn.execute("CREATE TABLE withdefault (LIKE play INCLUDING DEFAULTS) PARTITION BY RANGE (sort_at)")
        ahead = partitions.add_months(last, partitions.AHEAD_MONTHS + 1)
        conn.execute("CREATE TABLE withdefault_default PARTITION OF withdefault DEFAULT")
        month = first
        while month < ahead:
            conn.execute(f"CREATE TABLE withdefault_{month.replace('-', '_')} PARTITION OF withdefault "
                         f"FOR VALUES FROM ('{month}') TO ('{partitions.add_months(month, 1)}')")
            month = partitions.add_months(month, 1)
        conn.execute("INSERT INTO withdefault SELECT * FROM play")
        conn.execute("ALTER TABLE withdefault ADD PRIMARY KEY (uri, sort_at)")
        for table in ("flat", "withdefault"):
            for ddl in indexes:
                name = ddl.split()[2]
                conn.execute(ddl.replace(f" {name} ON public.play ", f" {table}_{name} ON public.{table} "))
        conn.execute("ALTER TABLE play RENAME TO monthly")
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return first


def keys(url: str, n: int, first: str, n_months: int, seed: int = 7) -> dict[str, list[tuple]]:
    """Random parameters for each query, drawn from the data."""
    rng = random.Random(seed)
    with psycopg.connect(url) as conn:
        sample = conn.execute("SELECT uri, did, track_uri FROM flat TABLESAMPLE SYSTEM (2) LIMIT %s",
                              (n,)).fetchall()
    rng.shuffle(sample)
    months = [partitions.add_months(first, rng.randrange(n_months)) for _ in sample]
    return {"uri": [(u,) for u, _, _ in sample], "getPlays": [(d,) for _, d, _ in sample],
            "delete": [(u,) for u, _, _ in sample], "track": [(t,) for _, _, t in sample],
            "month": [(d, m, partitions.add_months(m, 1)) for (_, d, _), m in zip(sample, months, strict=True)],
            "today": [(d, t, f"{m}-14", f"{m}-14T99") for (_, d, t), m in zip(sample, months, strict=True)],
            "insert": [(f"{u}x", d, t, at, at, at) for (u, d, t), at in
                       zip(sample, [f"{partitions.current_month()}-01T00:00:00.000Z"] * len(sample), strict=True)]}


def measure(url: str, table: str, query: str, params: list[tuple], prepare: bool) -> tuple[float, float]:
    """p50 and p99 of ``query`` on ``table`` over ``params`` (one at a time), µs."""
    sql = QUERIES[query].format(t=table)
    took = []
    with psycopg.connect(url, autocommit=query not in WRITES) as conn:
        for p in params[:20]:  # warm up (and let PostgreSQL settle on a generic plan when prepared)
            cur = conn.execute(sql, p, prepare=prepare)
            if query in WRITES:
                conn.rollback()
        for p in params:
            t0 = time.perf_counter()
            cur = conn.execute(sql, p, prepare=prepare)
            if cur.description:
                cur.fetchall()
            if query in WRITES:
                conn.rollback()
            took.append((time.perf_counter() - t0) * 1e6)
    took.sort()
    return statistics.median(took), took[min(len(took) - 1, int(len(took) * 0.99))]


def ingest_both(cluster: str, n_plays: int, n_months: int, rounds: int) -> None:
    """Print the records/s of ``bench.generator.ingest`` on a partitioned and an unpartitioned ``play``."""
    import asyncio

    from yoyo import get_backend, read_migrations

    from bench.generator import Spec, Workload, ingest

    workload = Workload(Spec(tracks=max(10, n_plays // 10), plays=n_plays))
    for n in range(rounds):
        for layout in ("monthly", "flat"):
            url = pgserver.create_database(cluster, f"ingest_{layout}_{n}")
            db.migrate(url)
            if layout == "flat":  # 0033 rolled back, and marked applied so that ingest's migrate leaves it so
                backend = get_backend("postgresql+psycopg://" + url.split("://", 1)[1])
                step = read_migrations(str(db.MIGRATIONS_DIR)).filter(lambda m: m.id == "0033_play_partitions")
                with backend.lock():
                    backend.rollback_migrations(step)
                    backend.mark_migrations(step)
            else:
                with psycopg.connect(url) as conn:
                    last = partitions.current_month()
                    partitions.ensure_months(conn, partitions.add_months(last, partitions.AHEAD_MONTHS),
                                             since=partitions.add_months(last, 1 - n_months))
            r = asyncio.run(ingest(url, workload))
            print(f"  round {n + 1} {layout:8} {r.records:,} records in {r.apply_s:.1f} s: {r.rate:,.0f} records/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plays", type=int, default=1_000_000)
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--url", help="an empty PostgreSQL database (default: a throwaway server)")
    ap.add_argument("--ingest", type=int, metavar="PLAYS", help="measure ingest instead (see above)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.ingest:
        with pgserver.throwaway_cluster() as cluster:
            print(f"{cpu_model()}; ingest of {args.ingest:,} plays (bench.generator), {args.months} months")
            ingest_both(cluster, args.ingest, args.months, args.rounds)
        return
    with contextlib.ExitStack() as stack:
        url = args.url or pgserver.create_database(stack.enter_context(pgserver.throwaway_cluster(
            settings={"shared_buffers": "1GB", "max_wal_size": "4GB"})), "bench")
        print(f"{cpu_model()}; PostgreSQL at {db.shown_target(url)}")
        t0 = time.perf_counter()
        first = build(url, args.plays, args.months)
        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            n_parts = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'monthly'::regclass").fetchone()[0]
            sizes = {t: conn.execute("SELECT pg_size_pretty(sum(pg_total_relation_size(relid))) "
                                     "FROM pg_partition_tree(%s) WHERE isleaf", (t,)).fetchone()[0]
                     or conn.execute("SELECT pg_size_pretty(pg_total_relation_size(%s))", (t,)).fetchone()[0]
                     for t in TABLES}
        print(f"  built in {time.perf_counter() - t0:.0f} s; PostgreSQL {version}; {args.plays:,} plays over "
              f"{args.months} months from {first}; monthly: {n_parts} partitions (with play_before and play_after); sizes {sizes}")
        params = keys(url, args.runs, first, args.months)
        print(f"\n{'query':10} {'mode':9} " + " ".join(f"{t + ' p50/p99 µs':>24}" for t in TABLES))
        for query in QUERIES:
            for prepare in (True, False):
                figures = [measure(url, t, query, params[query], prepare) for t in TABLES]
                print(f"{query:10} {'prepared' if prepare else 'planned':9} "
                      + " ".join(f"{p50:>12.0f} / {p99:>9.0f}" for p50, p99 in figures))


if __name__ == "__main__":
    main()
