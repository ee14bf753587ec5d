"""The same index on PostgreSQL as on SQLite (issue 15, step 1), on a throwaway PostgreSQL server
started from the machine's binaries (``devkit.pgserver``; never a mock).

Proves: the migrations build the schema on an empty PostgreSQL database (SQLite's history marked
applied, then the baseline and the later migrations) and a second run applies nothing; the indexer
writes through ``core.pg`` (the rewrite, the advisory write lock, rows by name); the same commits
(tracks, an update, plays, likes, a delete, a bad record) give the same answers on both engines for
getTrack, getTracks, searchTracks (one word, two words, a prefix), getArtistTracks (both pages),
getTrackStats, getPlays, getProfile, the reputation refresh and the trending chart; and
``BEGIN IMMEDIATE`` makes two writers take turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from appview import charts, queries, reputation
from appview.views import ViewContext
from core import db
from core.config import Settings
from core.identity import IdentityResolver, IdentityService
from core.lexicons import LIKE
from devkit import pgserver
from indexer.core import Indexer
from tests.records import DID, LISTENER, play, track
from tests.test_indexer_units import PLAY, TRACK, commit, create, rkey

pytestmark = pytest.mark.skipif(pgserver.bin_dir() is None, reason="no PostgreSQL binaries (make setup installs them)")


@pytest.fixture(scope="module")
def cluster():
    with pgserver.throwaway_cluster() as url:
        yield url


def _delete(coll: str, key: str):
    from firehose.events import RecordOp
    return RecordOp("delete", coll, key, None, None)


#: When the plays say they were made: the same for both engines' runs.
NOW = db.now_iso()


def history() -> list:
    """Commits touching most of the indexer: tracks (one updated, one deleted), plays, likes, a bad record."""
    t1, t2, t3 = (f"at://{DID}/{TRACK}/{rkey(n)}" for n in (1, 2, 3))
    now = NOW
    return [
        commit(1, DID, 1, create(TRACK, rkey(1), track("Neon Harbor", genre="synthwave")),
               create(TRACK, rkey(2), track("Neon Tide", genre="synthwave")),
               create(TRACK, rkey(3), track("Quiet Field")),
               create(TRACK, rkey(4), {"title": "no audio"})),
        commit(2, DID, 2, create(TRACK, rkey(1), track("Neon Harbor (remaster)", genre="synthwave"), cid="bafyreib")),
        commit(3, LISTENER, 1, *[create(PLAY, rkey(10 + n), play(t, "bafyreia", 90_000, createdAt=now))
                                 for n, t in enumerate([t1, t1, t2, t3])],
               create(LIKE, rkey(20), {"$type": LIKE, "subject": {"uri": t2, "cid": "bafyreia"}, "createdAt": now})),
        commit(4, DID, 3, _delete(TRACK, rkey(3))),
    ]


async def answers(target: str) -> dict:
    """Index ``history()`` into ``target`` (a SQLite file or a PostgreSQL URL) and ask the queries."""
    db.migrate(target)
    conn = await db.connect(target)
    for did in (DID, LISTENER):
        await conn.execute("INSERT INTO actor (did, handle, handle_verified, resolved_at) VALUES (?,?,1,?)",
                           (did, did.split(":")[-1][:8] + ".test", time.time()))
    settings = Settings(db_path="/nonexistent/x.sqlite", database_url=target if db.is_postgres(target) else "")
    identity = IdentityService(settings, conn, IdentityResolver(settings, None))
    ix = Indexer(target, "test")
    await ix.open()
    await ix.load_state()
    try:
        await ix.apply(history(), 4)
        ctx = ViewContext(conn, identity, "http://x")
        t1, t2 = f"at://{DID}/{TRACK}/{rkey(1)}", f"at://{DID}/{TRACK}/{rkey(2)}"
        page1 = await queries.get_artist_tracks(ctx, {"actor": DID, "limit": 1})
        out = {
            "track": await queries.get_track(ctx, {"uri": t1}),
            "tracks": await queries.get_tracks(ctx, {"uris": [t1, t2]}),
            "search_one": await queries.search_tracks(ctx, {"q": "neon", "sort": "recent", "limit": 10}),
            "search_two": await queries.search_tracks(ctx, {"q": "neon tide", "sort": "recent", "limit": 10}),
            "search_prefix": await queries.search_tracks(ctx, {"q": "remast", "sort": "plays", "limit": 10}),
            "artist_1": page1,
            "artist_2": await queries.get_artist_tracks(ctx, {"actor": DID, "limit": 1, "cursor": page1["cursor"]}),
            "stats": await queries.get_track_stats(ctx, {"uri": t1}),
            "plays": await queries.get_plays(ctx, {"actor": LISTENER, "limit": 10}),
            "profile": await queries.get_profile(ctx, {"actor": DID}),
            "rejected": await ix.sql("SELECT reason, count(*) FROM rejected_record GROUP BY reason ORDER BY reason"),
            "reputation": await reputation.refresh(conn),
            "trending": await charts.get_chart(ctx, {"chart": "trending", "period": "week", "limit": 10}),
        }
    finally:
        await ix.close()
        await conn.close()
    return _plain(out)


def _plain(value):
    """Rows and tuples as lists, and the moments of indexing out (they differ between the runs)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in ("indexedAt",)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


async def test_migrations_on_postgresql(cluster):
    url = pgserver.create_database(cluster, "migrations")
    applied = db.migrate(url)
    assert applied >= 2  # the baseline and what came after it
    assert db.migrate(url) == 0
    conn = await db.connect(url)
    try:
        cur = await conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' "
                                 "AND table_name IN ('track', 'play', 'ledger_entry', 'label', 'copyright_case')")
        assert (await cur.fetchone())[0] == 5
        cur = await conn.execute("SHOW lc_collate")
        assert (await cur.fetchone())[0] in ("C", "C.UTF-8", "POSIX")
    finally:
        await conn.close()


def test_a_database_that_does_not_order_text_bytewise_is_refused(cluster):
    """Keyset cursors and ISO dates kept as text need SQLite's bytewise order: a database whose
    default collation is ICU's en-US is refused before any migration, saying how to create one."""
    import psycopg
    with psycopg.connect(cluster, autocommit=True) as conn:
        conn.execute("CREATE DATABASE icu_en LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C' TEMPLATE template0")
    url = pgserver.with_database(cluster, "icu_en")
    with pytest.raises(db.UnsuitableDatabase, match="createdb -l C -T template0 icu_en"):
        db.migrate(url)
    with psycopg.connect(url) as conn:  # nothing was created
        assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                            ).fetchone()[0] == 0


async def test_the_same_answers_on_both_engines(cluster, tmp_path):
    on_sqlite = await answers(str(tmp_path / "t.sqlite"))
    on_postgres = await answers(pgserver.create_database(cluster, "answers"))
    assert on_sqlite["track"]["track"]["title"] == "Neon Harbor (remaster)"
    assert [t["title"] for t in on_sqlite["search_one"]["tracks"]]
    assert on_sqlite["rejected"]  # the record without audio was skipped and counted
    assert on_sqlite["trending"]["tracks"] and "accounts" in on_sqlite["reputation"]
    for key in on_sqlite:
        assert on_postgres[key] == on_sqlite[key], key


async def test_begin_immediate_makes_writers_take_turns(cluster):
    url = pgserver.create_database(cluster, "turns")
    db.migrate(url)
    a, b = await db.connect(url), await db.connect(url)
    try:
        await a.execute("BEGIN IMMEDIATE")
        await a.execute("INSERT INTO actor (did) VALUES (?)", ("did:plc:first",))
        second = asyncio.create_task(b.execute("BEGIN IMMEDIATE"))
        await asyncio.sleep(0.3)
        assert not second.done()  # waits for the first writer's transaction
        await a.execute("COMMIT")
        await asyncio.wait_for(second, 5)
        await b.execute("INSERT INTO actor (did) VALUES (?)", ("did:plc:second",))
        await b.execute("COMMIT")
        cur = await a.execute("SELECT did FROM actor ORDER BY did")
        assert [r["did"] for r in await cur.fetchall()] == ["did:plc:first", "did:plc:second"]
    finally:
        with contextlib.suppress(Exception):
            await a.close()
            await b.close()


def test_the_ledger_on_postgresql(cluster):
    """Posting is idempotent by key and ``ledger.check`` finds the books balanced (its integer check
    runs through the ``typeof`` of migration 0031); an unbalanced posting is refused."""
    from payments import ledger

    url = pgserver.create_database(cluster, "ledger")
    db.migrate(url)
    tx = db.connect_sync(url)
    try:
        tx.execute("BEGIN IMMEDIATE")
        assert ledger.post(tx, "k1", "credit", "USD", [("cash", 500), ("credit:did:plc:a", -500)])
        assert not ledger.post(tx, "k1", "credit", "USD", [("cash", 500), ("credit:did:plc:a", -500)])
        tx.execute("COMMIT")
        with pytest.raises(ledger.LedgerError):
            ledger.post(tx, "k2", "credit", "USD", [("cash", 500)])
        assert ledger.check(tx) == []
        assert ledger.balance(tx, "cash", "USD") == 500 and isinstance(ledger.balance(tx, "cash", "USD"), int)
    finally:
        tx.close()


def _terminate(cluster_db: str, backend_pid: int) -> None:
    import psycopg
    with psycopg.connect(cluster_db, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend_pid,))
        deadline = time.monotonic() + 5
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend_pid,)).fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.05)


async def test_a_connection_the_server_dropped_is_opened_again_outside_a_transaction(cluster):
    """A restart or failover ends our sessions: the statement that meets the dead connection fails
    (a transient error: the consumer resumes from its cursor), the next one runs on a new
    connection; but a transaction that lost its connection never goes on in autocommit: its
    statements fail, its COMMIT raises ConnectionLost, and nothing of it is kept."""
    import psycopg

    from core import pg
    url = pgserver.create_database(cluster, "dropped")
    db.migrate(url)
    sync = pg.SyncConnection.open(url)
    reader = await pg.AsyncConnection.open(url, readonly=True)
    try:
        _terminate(url, sync.raw.info.backend_pid)
        with pytest.raises(psycopg.OperationalError) as lost:
            sync.execute("SELECT 1").fetchone()
        assert isinstance(lost.value, db.TRANSIENT_ERRORS)
        assert sync.execute("SELECT 1").fetchone()[0] == 1  # a new connection

        sync.execute("BEGIN IMMEDIATE")
        sync.execute("INSERT INTO cursor (source, seq, updated_at) VALUES ('lost', 1, 'x')")
        _terminate(url, sync.raw.info.backend_pid)
        with pytest.raises(psycopg.OperationalError):
            sync.execute("INSERT INTO cursor (source, seq, updated_at) VALUES ('lost2', 2, 'x')")
        with pytest.raises(psycopg.OperationalError):  # still inside the lost transaction: no autocommit
            sync.execute("INSERT INTO cursor (source, seq, updated_at) VALUES ('lost3', 3, 'x')")
        with pytest.raises(pg.ConnectionLost):
            sync.execute("COMMIT")
        assert sync.execute("SELECT count(*) FROM cursor WHERE source LIKE 'lost%'").fetchone()[0] == 0

        _terminate(url, reader.raw.info.backend_pid)
        with pytest.raises(psycopg.OperationalError):
            await (await reader.execute("SELECT 1")).fetchone()
        assert (await (await reader.execute("SELECT 1")).fetchone())[0] == 1
        assert (await (await reader.execute("SHOW default_transaction_read_only")).fetchone())[0] == "on"
    finally:
        sync.close()
        await reader.close()
