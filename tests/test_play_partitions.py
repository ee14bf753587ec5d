"""Plays partitioned by month on PostgreSQL (issue 15; migrations ``0033_play_partitions`` and
``0038_play_bounds``, ``indexer.partitions``), on a throwaway PostgreSQL server
(``devkit.pgserver``; never a mock).

Proves: plays indexed over several months land in their month's partition (an instant on either
side of a month's edge included) and a play older than the first month in ``play_before``; the
queries ``tests.test_postgresql`` compares (getPlays, getTrackStats, getTrack, search, the
reputation refresh, trending) answer as on SQLite for the same commits, a play update that changes
its month and a play delete included; a replayed create of a play URI in another month leaves
one row (the indexer's ``record`` keeps ``uri`` unique); ``ensure_months`` moves the rows
``play_before`` and ``play_after`` hold of a new month into its partition (which gets the parent's
indexes), keeps the months contiguous and is idempotent; an ``UPDATE`` of ``sort_at`` moves the
row; ``EXPLAIN`` of a month-bounded query reads one partition (at plan time with a literal, at run
time with a parameter), and a listener's newest plays are read month by month in order (no merge of
every month); the migrations move existing rows and their rollbacks give the default partition,
then the unpartitioned table, back with the same rows and indexes; on SQLite all of it does nothing.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

import pytest
from yoyo import get_backend, read_migrations

from core import db
from core.lexicons import LIKE
from devkit import pgserver
from firehose.events import RecordOp
from indexer import partitions
from indexer.core import Indexer
from tests import test_postgresql as same
from tests.records import DID, LISTENER, play, track
from tests.test_indexer_units import PLAY, TRACK, commit, create, rkey

needs_pg = pytest.mark.skipif(pgserver.bin_dir() is None, reason="no PostgreSQL binaries (make setup installs them)")

T1, T2, T3 = (f"at://{DID}/{TRACK}/{rkey(n)}" for n in (1, 2, 3))
OLD = "2019-03-01T10:00:00.000Z"  # before the first month: stays in play_before
NOW_MONTH = same.NOW[:7]
#: play rkey -> (track, createdAt) of the plays indexed by ``history``
PLAYS = {rkey(10): (T1, "2024-06-15T08:00:00.000Z"), rkey(11): (T1, "2025-01-10T12:00:00.000Z"),
         rkey(12): (T2, "2025-06-20T00:00:00.000Z"), rkey(13): (T2, "2026-10-05T09:30:00.000Z"),
         rkey(14): (T3, same.NOW), rkey(15): (T1, OLD), rkey(16): (T2, "2025-06-30T23:59:59.999Z"),
         rkey(17): (T2, "2025-07-01T00:00:00.000Z")}
#: where each play is at the end of ``history`` (rkey(11) moved to June by an update, rkey(13) deleted)
PLACED = {rkey(10): "play_2024_06", rkey(11): "play_2025_06", rkey(12): "play_2025_06",
          rkey(14): partitions.partition_name(NOW_MONTH), rkey(15): "play_before", rkey(16): "play_2025_06",
          rkey(17): "play_2025_07"}


def history() -> list:
    """Tracks, plays over several months, a like, a play moved to another month, a play deleted."""
    return [
        commit(1, DID, 1, create(TRACK, rkey(1), track("Neon Harbor", genre="synthwave")),
               create(TRACK, rkey(2), track("Neon Tide", genre="synthwave")), create(TRACK, rkey(3), track("Quiet"))),
        commit(2, LISTENER, 1, *[create(PLAY, k, play(t, "bafyreia", 90_000, createdAt=at))
                                 for k, (t, at) in PLAYS.items()],
               create(LIKE, rkey(20), {"$type": LIKE, "subject": {"uri": T2, "cid": "bafyreia"}, "createdAt": same.NOW})),
        commit(3, LISTENER, 2, RecordOp("update", PLAY, rkey(11), "bafyreic",
                                        play(T1, "bafyreia", 120_000, createdAt="2025-06-02T10:00:00.000Z"))),
        commit(4, LISTENER, 3, RecordOp("delete", PLAY, rkey(13), None, None)),
    ]


@contextlib.contextmanager
def writer(url: str) -> Iterator:
    """A sync connection (``core.db.connect_sync``), in one write transaction committed at the end."""
    conn = db.connect_sync(url)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


def rows(url: str, sql: str, *args) -> list[tuple]:
    conn = db.connect_sync(url)
    try:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def months(url: str) -> list[str]:
    conn = db.connect_sync(url)
    try:
        return partitions.months(conn)
    finally:
        conn.close()


def placement(url: str) -> dict[str, str]:
    return dict(rows(url, "SELECT rkey, CAST(CAST(tableoid AS regclass) AS text) FROM play"))


async def index(url: str, events: list) -> None:
    ix = Indexer(url, "test")
    await ix.open()
    await ix.load_state()
    try:
        await ix.apply(events, len(events))
    finally:
        await ix.close()


@needs_pg
async def test_plays_land_in_their_month_and_every_answer_equals_sqlite(cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(same, "history", history)
    on_sqlite = await same.answers(str(tmp_path / "t.sqlite"))
    url = pgserver.create_database(cluster, "answers")
    db.migrate(url)
    with writer(url) as conn:
        made = partitions.ensure_months(conn, partitions.add_months(NOW_MONTH, 3), since="2024-06")
    assert made[0] == "2024-06" and made[-1] < NOW_MONTH  # the current month and 3 ahead came with the migration
    on_postgres = await same.answers(url)
    got = [p["uri"].rsplit("/", 1)[1] for p in on_sqlite["plays"]["plays"]]
    assert got == sorted(PLACED, key=lambda k: (PLAYS[k][1] if k != rkey(11) else "2025-06-02", k), reverse=True)
    assert on_sqlite["stats"]["plays"] == 3  # T1: rkey(10), the updated rkey(11), rkey(15)
    for key in on_sqlite:
        assert on_postgres[key] == on_sqlite[key], key
    assert placement(url) == PLACED


@needs_pg
async def test_ensure_months_moves_rows_out_of_the_bounded_partitions(cluster):
    url = pgserver.create_database(cluster, "moves")
    db.migrate(url)
    assert months(url) == [partitions.add_months(NOW_MONTH, n) for n in range(4)]
    await index(url, history())
    before = rows(url, "SELECT * FROM play ORDER BY uri")
    assert set(placement(url).values()) == {"play_before", partitions.partition_name(NOW_MONTH)}
    with writer(url) as conn:  # June 2025, and every month up to the first: the months stay contiguous
        made = partitions.ensure_months(conn, "2025-06", since="2025-06")
    assert made[0] == "2025-06" and made[-1] == partitions.add_months(NOW_MONTH, -1) and len(set(made)) == len(made)
    assert placement(url)[rkey(12)] == "play_2025_06" and placement(url)[rkey(17)] == "play_2025_07"
    assert placement(url)[rkey(10)] == "play_before"  # June 2024: older than the first month still
    with writer(url) as conn:  # the rest, from the oldest month given; then nothing left to do
        made = partitions.ensure_months(conn, partitions.add_months(NOW_MONTH, 3), since="2024-06")
        assert "2025-06" not in made and made[0] == "2024-06"
        assert partitions.ensure_months(conn, partitions.add_months(NOW_MONTH, 3)) == []
    assert placement(url) == PLACED
    assert rows(url, "SELECT * FROM play ORDER BY uri") == before
    assert rows(url, "SELECT count(*) FROM pg_constraint WHERE conname LIKE 'play_%_range'") == [(0,)]
    n_parts = len(months(url)) + 2  # and play_before, play_after
    for index_name in ("play_pkey", "play_did_sort", "play_track", "play_track_did", "play_streams", "play_pending",
                       "play_listener_track_streams"):
        assert rows(url, "SELECT count(*) FROM pg_inherits WHERE inhparent = CAST(? AS regclass)", index_name) == [
            (n_parts,)], index_name
    # an UPDATE of sort_at moves the row
    uri = f"at://{LISTENER}/{PLAY}/{rkey(10)}"
    with writer(url) as conn:
        conn.execute("UPDATE play SET sort_at = ? WHERE uri = ?", ("2025-01-31T00:00:00.000Z", uri))
    assert placement(url)[rkey(10)] == "play_2025_01"
    with pytest.raises(ValueError, match="not a month"):
        partitions.ensure_months(None, "2025-13")
    with pytest.raises(ValueError, match="more than 120 at once"), writer(url) as conn:
        partitions.ensure_months(conn, "2030-01", since="2015-01")
    assert months(url)[0] == "2024-06"  # nothing was created
    # a play dated past the last month (the upkeep stopped for months) waits in play_after, then
    # moves into its month when the upkeep comes back
    later = partitions.add_months(NOW_MONTH, 5)
    with writer(url) as conn:
        conn.execute("UPDATE play SET sort_at = ? WHERE uri = ?", (later + "-15T00:00:00.000Z", uri))
    assert placement(url)[rkey(10)] == "play_after"
    with writer(url) as conn:
        assert partitions.ensure_months(conn, later) == [partitions.add_months(NOW_MONTH, 4), later]
    assert placement(url)[rkey(10)] == partitions.partition_name(later)
    assert rows(url, "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE relname = 'play_after'") == [
        (f"FOR VALUES FROM ('{partitions.add_months(later, 1)}') TO (MAXVALUE)",)]
    assert rows(url, "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE relname = 'play_before'") == [
        ("FOR VALUES FROM (MINVALUE) TO ('2024-06')",)]


@needs_pg
async def test_a_replayed_create_of_a_play_leaves_one_row(cluster):
    """A create of a play URI the index holds (a replayed event), with another month: one row, the
    new one. ``play``'s key is ``(uri, sort_at)``: the uniqueness of ``uri`` comes from ``record``."""
    url = pgserver.create_database(cluster, "replay")
    db.migrate(url)
    await index(url, history())
    await index(url, [commit(5, LISTENER, 4, create(PLAY, rkey(12), play(T2, "bafyreia", 1000,
                                                                         createdAt="2024-06-01T00:00:00.000Z")))])
    assert rows(url, "SELECT sort_at, listened_ms FROM play WHERE rkey = ?", rkey(12)) == [
        ("2024-06-01T00:00:00.000Z", 1000)]


@needs_pg
def test_a_month_bounded_query_reads_one_partition(cluster):
    url = pgserver.create_database(cluster, "prune")
    db.migrate(url)
    with writer(url) as conn:
        partitions.ensure_months(conn, partitions.add_months(NOW_MONTH, 3), since="2024-01")
    bounded = "SELECT count(*) FROM play WHERE did = 'did:plc:x' AND sort_at >= '2025-06' AND sort_at < '2025-07'"
    plan = "\n".join(r[0] for r in rows(url, "EXPLAIN " + bounded))
    assert "play_2025_06" in plan and plan.count(" on play_") == 1, plan
    everything = "\n".join(r[0] for r in rows(url, "EXPLAIN SELECT count(*) FROM play WHERE did = 'did:plc:x'"))
    assert "play_before" in everything and everything.count(" on play_") > 20
    # a listener's newest plays: the months in order, newest first, stopping when the page is full
    newest = "\n".join(r[0] for r in rows(url, "EXPLAIN SELECT uri FROM play WHERE did = 'did:plc:x' "
                                                 "ORDER BY sort_at DESC LIMIT 20"))
    assert "Append" in newest and "Merge Append" not in newest, newest
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:  # a parameter: pruned when the plan runs
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("PREPARE month_plays (text, text) AS SELECT count(*) FROM play WHERE did = 'did:plc:x' "
                     "AND sort_at >= $1 AND sort_at < $2")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                                                    "EXECUTE month_plays ('2025-06', '2025-07')"))
    assert "Subplans Removed:" in plan and "play_2025_06" in plan and plan.count(" on play_") == 1, plan


@needs_pg
async def test_the_migration_moves_existing_plays_and_rolls_back(cluster):
    url = pgserver.create_database(cluster, "migration")
    db.migrate(url)
    await index(url, history())
    before = rows(url, "SELECT * FROM play ORDER BY uri")
    ix_sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'play' ORDER BY 1"
    indexes = rows(url, ix_sql)
    backend = get_backend("postgresql+psycopg://" + url.split("://", 1)[1])
    migrations = read_migrations(str(db.MIGRATIONS_DIR))
    with backend.lock():  # 0038 first: the default partition back, holding what play_before held
        backend.rollback_migrations(migrations.filter(lambda m: m.id == "0038_play_bounds"))
    assert placement(url)[rkey(15)] == "play_default"
    assert rows(url, "SELECT count(*) FROM pg_class WHERE relname IN ('play_before', 'play_after')") == [(0,)]
    assert rows(url, "SELECT * FROM play ORDER BY uri") == before
    with backend.lock():
        backend.rollback_migrations(migrations.filter(lambda m: m.id == "0033_play_partitions"))
    assert rows(url, "SELECT relkind FROM pg_class WHERE relname = 'play'") == [("r",)]
    assert rows(url, "SELECT count(*) FROM pg_class WHERE relname LIKE 'play_20%' OR relname = 'play_default'") == [
        (0,)]
    assert rows(url, "SELECT * FROM play ORDER BY uri") == before and rows(url, ix_sql) == indexes
    assert rows(url, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'play_pkey'") == [
        ("PRIMARY KEY (uri)",)]
    assert db.migrate(url) == 2
    assert rows(url, "SELECT * FROM play ORDER BY uri") == before and rows(url, ix_sql) == indexes
    assert months(url)[0] == "2024-06"  # the first month holding plays (2019 is older
    assert months(url)[-1] == partitions.add_months(NOW_MONTH, 3)  # than FIRST_MONTH)
    assert placement(url) == PLACED


async def test_nothing_to_do_on_sqlite(tmp_path):
    path = str(tmp_path / "t.sqlite")
    db.migrate(path)
    conn = sqlite3.connect(path)
    try:
        assert partitions.months(conn) == [] and partitions.ensure_months(conn, "2030-01") == []
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE 'play_20%'").fetchone() == (0,)
    finally:
        conn.close()
    assert not partitions.analyze(path)
    ix = Indexer(path, "test")
    await partitions.run_periodically(ix)  # returns at once
    ix._thread.shutdown()
    assert partitions.add_months("2026-11", 3) == "2027-02" and partitions.add_months("2025-01", -1) == "2024-12"
    assert partitions.partition_name("2026-11") == "play_2026_11"
