"""Copies of the listeners (issue 15, "Measured"): grow a database built by ``bench.generator``
past what the indexer can write in a session, by copying its listening log under new listener DIDs.

``multiply(target, spec, k)`` turns the database that indexing ``Workload(spec)`` gave into the
database that indexing ``copied_events(Workload(spec), k)`` would give: the same catalog, and the
activity of ``k`` populations of listeners, copy ``c`` being copy 0's commits (the same records,
CIDs, rkeys and revs) by ``listener_did(i + c * spec.listeners)`` instead of ``listener_did(i)``.
``tests/test_bench_copies.py`` checks that claim, table by table, on both engines.

Listeners never touch each other's rows (a stream decision looks at the listener's own plays and
subscription), so each listener-owned row is copied with the DID rewritten (``COPIED``), the
per-listener number of the analytics rollups is shifted (``analytics_listener``), and every
aggregate over listeners (a track's plays, listeners, seconds heard; an artist's followers) is
multiplied by ``k`` (``SUMMED``). A table with rows that is in none of the lists raises
``Unaccounted``: a new table of the indexer must be placed before the copies can be trusted.

The copies are a benchmark fixture, not a model of taste: every copy listens exactly as copy 0 did.
The ingest rate is measured on copy 0 only (through ``Indexer.apply``); the copies are SQL.

    python -m bench.scale --engine postgresql --tracks 100000 --plays 1000000 --copies 10
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

from bench.generator import Spec, Workload, listener_did
from firehose.events import CommitEvent

# table -> the columns holding the owner's DID (rewritten with replace(); the first one is the owner)
COPIED: dict[str, tuple[str, ...]] = {
    "actor": ("did",),
    "actor_count": ("did",),
    "follow": ("did", "uri"),
    "follow_current": ("did", "uri"),
    "like_record": ("did", "uri"),
    "listener_day": ("did",),
    "play": ("did", "uri"),
    "record": ("did", "uri"),
    "repo_state": ("did",),
    "subscription_invoice": ("did", "id", "subscription"),
    "tip": ("did", "uri"),
    "track_listener": ("did",),
}
# table -> its counts over listeners (each copy adds the same again)
SUMMED: dict[str, tuple[str, ...]] = {
    "follow_count": ("followers",),
    "track_day": ("plays", "paid_streams", "free_streams", "listened_ms", "segmented"),
    "track_rank": ("plays",),
    "track_second": ("heard", "replayed", "stops"),
    "track_stats": ("plays", "listeners", "listened_ms", "completions", "likes", "paid_streams", "free_streams"),
}
NUMBERED = ("analytics_listener", "track_day_listener")  # listener numbers, shifted per copy
# what the activity never changes (the catalog, the cursor, migrations' books, search indexes), and
# what the leader derives again (chart totals, the recommendation model)
UNTOUCHED_PREFIXES = ("_yoyo", "album", "chart_total", "cursor", "derived", "profile", "track_fts", "track_search")
UNTOUCHED = frozenset({"track"})


class Unaccounted(RuntimeError):
    """A table holds rows that ``multiply`` does not know how to copy."""


def copied_events(workload: Workload, k: int) -> Iterator[CommitEvent]:
    """The catalog, then copy 0's activity ``k`` times, copy ``c`` with listener ``i`` as
    ``i + c * listeners`` and seqs renumbered: what ``multiply(…, k)`` stands for. Holds the
    activity in memory (for tests and small checks)."""
    yield from workload.catalog()
    activity = list(workload.activity())
    seq = workload.seq
    n = workload.spec.listeners
    for c in range(k):
        for evt in activity:
            seq += 1
            yield dataclasses.replace(evt, seq=seq, did=_shift(evt.did, c, n)) if c else evt


class Copies:
    """``copied_events`` and ``copied_invoices`` in the shape ``bench.generator.ingest`` takes."""

    def __init__(self, workload: Workload, k: int) -> None:
        self.workload, self.k = workload, k

    def events(self) -> Iterator[CommitEvent]:
        """``copied_events(workload, k)``."""
        return copied_events(self.workload, self.k)

    def invoices(self) -> list[tuple]:
        """``copied_invoices(workload, k)``."""
        return copied_invoices(self.workload, self.k)


def copied_invoices(workload: Workload, k: int) -> list[tuple]:
    """``workload.invoices()`` for every copy (the listener's DID and the ids rewritten)."""
    n = workload.spec.listeners
    out = []
    for c in range(k):
        for row in workload.invoices():
            old, new = row[2], _shift(row[2], c, n)
            out.append(tuple(v.replace(old, new) if isinstance(v, str) else v for v in row))
    return out


def _shift(did: str, c: int, listeners: int) -> str:
    if not c or not did.startswith("did:plc:listener"):
        return did
    return listener_did(int(did.removeprefix("did:plc:listener")) + c * listeners)


def columns(conn, table: str, postgres: bool) -> list[str]:
    """The columns of ``table`` one can INSERT into (generated ones left out), in order."""
    if postgres:
        rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                            "AND table_name = ? AND is_generated = 'NEVER' ORDER BY ordinal_position", (table,))
        return [r[0] for r in rows.fetchall()]
    return [r[1] for r in conn.execute(f'PRAGMA table_xinfo("{table}")').fetchall() if r[6] == 0]


def tables_with_rows(conn, postgres: bool) -> list[str]:
    """The tables (on PostgreSQL: not partitions, their parent stands for them) holding a row, sorted."""
    if postgres:
        names = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition").fetchall()]
    else:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall()]
    return sorted(t for t in names if conn.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone())


def check_accounted(conn, postgres: bool) -> None:
    """Raise ``Unaccounted`` if a table with rows is in none of the lists above."""
    known = set(COPIED) | set(SUMMED) | set(NUMBERED) | UNTOUCHED
    stray = [t for t in tables_with_rows(conn, postgres)
             if t not in known and not t.startswith(UNTOUCHED_PREFIXES)]
    if stray:
        raise Unaccounted(f"tables with rows that bench.copies does not place: {', '.join(stray)}")


def multiply(target: str, spec: Spec, k: int, progress: bool = False) -> float:
    """Make the database at ``target`` (indexed from ``Workload(spec)``, nothing else) hold ``k``
    copies of its listeners (module docstring). One transaction per copy, then one for the sums
    (on SQLite the WAL is checkpointed after each, so it holds one copy's pages, not all of them);
    ``ANALYZE`` after. Returns the seconds taken. Raises ``Unaccounted`` before writing anything
    if a table is not placed. A failure midway leaves a database fit only for deleting."""
    from core import db

    if k < 2:
        return 0.0
    postgres = db.is_postgres(target)
    conn = db.connect_sync(target)
    t0 = time.perf_counter()
    try:
        check_accounted(conn, postgres)
        conn.execute("CREATE TEMP TABLE copy_map (c INTEGER NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL)")
        conn.execute("BEGIN")  # one transaction for the map (a temporary table: no write lock)
        conn.executemany("INSERT INTO copy_map (c, old, new) VALUES (?,?,?)",
                         [(c, listener_did(i), listener_did(i + c * spec.listeners))
                          for c in range(1, k) for i in range(spec.listeners)])
        conn.execute("CREATE INDEX copy_map_old ON copy_map(c, old)")
        conn.execute("COMMIT")
        (top,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM analytics_listener").fetchone()
        plans = [(table, rewritten, columns(conn, table, postgres)) for table, rewritten in COPIED.items()]
        for c in range(1, k):
            with db.sync_write_transaction(conn):
                _copy(conn, plans, c, top)
            if not postgres:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if progress:
                print(f"  copy {c} of {k - 1} ({time.perf_counter() - t0:.0f}s)", flush=True)
        with db.sync_write_transaction(conn):
            if postgres:
                conn.execute("SELECT setval(pg_get_serial_sequence('analytics_listener', 'id'), "
                             "(SELECT MAX(id) FROM analytics_listener))")
            for table, counts in SUMMED.items():
                conn.execute(f"UPDATE {table} SET {', '.join(f'{c} = {c} * {int(k)}' for c in counts)}")
        conn.execute("DROP TABLE copy_map")
        conn.execute("ANALYZE")
    finally:
        conn.close()
    return time.perf_counter() - t0


def _copy(conn, plans: list[tuple[str, tuple[str, ...], list[str]]], c: int, top: int) -> None:
    """Copy ``c`` of the listeners: their rows in each ``COPIED`` table with the DIDs rewritten,
    and their analytics numbers shifted by ``c * top``. Inside the caller's transaction.

    Each table is read once, row by row, and each row's copy found in ``copy_map`` by its index:
    ``CROSS JOIN`` keeps SQLite from reading the map first and the table once per listener (most
    tables have no index on their owner's DID); PostgreSQL plans it as any join."""
    for table, rewritten, cols in plans:
        picks = ", ".join(f"replace(t.{col}, m.old, m.new)" if col in rewritten else f"t.{col}" for col in cols)
        conn.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {picks} FROM {table} t "
                     f"CROSS JOIN copy_map m WHERE m.c = ? AND m.old = t.{rewritten[0]}", (c,))
    conn.execute("INSERT INTO track_day_listener (track_uri, day, listener, country, plays, streams, listened_ms) "
                 "SELECT t.track_uri, t.day, t.listener + m.c * ?, t.country, t.plays, t.streams, t.listened_ms "
                 "FROM track_day_listener t CROSS JOIN analytics_listener a CROSS JOIN copy_map m "
                 "WHERE a.id = t.listener AND m.c = ? AND m.old = a.did", (top, c))
    conn.execute("INSERT INTO analytics_listener (id, did) SELECT a.id + m.c * ?, m.new "
                 "FROM analytics_listener a JOIN copy_map m ON m.c = ? AND m.old = a.did", (top, c))
