"""``bench.copies.multiply`` (the copied listeners of the large benchmarks) gives, table by table
and column by column, the database that indexing the copies through ``Indexer.apply`` gives. On
the engine of ``OPENMUSIC_TEST_ENGINE``."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import copies
from bench.generator import Spec, Workload, ingest, listener_did
from core import db
from tests.conftest import runtime_database

#: set from the wall clock when a row is written: two runs differ there
CLOCK = {"indexed_at", "updated_at", "first_seen", "resolved_at"}
SPEC = dict(tracks=80, plays=1500, tips=12, seed=4)


def target(tmp_path: Path, name: str) -> str:
    """A fresh database for one run: a SQLite file under ``tmp_path``, or a PostgreSQL one."""
    return runtime_database(tmp_path / name) or str(tmp_path / f"{name}.sqlite")


def dump(where: str) -> dict[str, list[tuple]]:
    """Every table with rows (but the cursor, migrations and full-text shadows), every column but
    the clock's, sorted; listeners' analytics numbers read as their DIDs."""
    postgres = db.is_postgres(where)
    conn = db.connect_sync(where)
    try:
        out = {}
        for table in copies.tables_with_rows(conn, postgres):
            if table == "cursor" or table.startswith(("_yoyo", "track_fts")):
                continue
            if table == "track_day_listener":
                sql = ("SELECT t.track_uri, t.day, a.did, t.country, t.plays, t.streams, t.listened_ms "
                       "FROM track_day_listener t JOIN analytics_listener a ON a.id = t.listener")
            else:
                cols = [c for c in copies.columns(conn, table, postgres) if c not in CLOCK]
                if table == "analytics_listener":
                    cols.remove("id")
                sql = f"SELECT {', '.join(cols)} FROM {table}"
            out[table] = sorted(tuple(r) for r in conn.execute(sql).fetchall())
        return out
    finally:
        conn.close()


async def test_multiplied_listeners_equal_the_copies_indexed(tmp_path):
    spec = Spec(**SPEC)
    fast = target(tmp_path, "fast")
    await ingest(fast, Workload(spec), batch=200)
    base = dump(fast)
    copies.multiply(fast, spec, 3)

    slow = target(tmp_path, "slow")
    result = await ingest(slow, copies.Copies(Workload(spec), 3), batch=200)
    assert result.rejected == 0

    a, b = dump(fast), dump(slow)
    assert set(a) == set(b)
    for table in sorted(b):
        assert a[table] == b[table], table
    # the copies are there: three times the plays, under three sets of listeners
    assert len(a["play"]) == 3 * len(base["play"]) == 3 * spec.plays
    assert any(r[0] == listener_did(2 * spec.listeners + 1) for r in a["actor_count"])
    assert {"tip", "follow_count", "track_second", "subscription_invoice"} <= set(a)


async def test_a_table_no_list_places_stops_the_copies(tmp_path):
    """A table with rows that bench.copies does not place stops it before it writes anything."""
    spec = Spec(tracks=20, plays=100, seed=1)
    where = target(tmp_path, "stray")
    await ingest(where, Workload(spec), batch=100)
    conn = db.connect_sync(where)
    try:
        conn.execute("CREATE TABLE listener_extra (did TEXT)")
        conn.execute("INSERT INTO listener_extra VALUES (?)", (listener_did(1),))
    finally:
        conn.close()
    before = dump(where)
    with pytest.raises(copies.Unaccounted, match="listener_extra"):
        copies.multiply(where, spec, 2)
    assert dump(where) == before and len(before["play"]) == 100  # nothing was written
