"""The PostgreSQL leader lock (issue 15, topology; ``core.leader.PgLeadership``) on a throwaway
server (``devkit.pgserver``): one holder at a time, a standby that takes over within a poll of the
holder's session ending, ``holding()`` turning False when the server ends the session, the commit
fence that keeps a leader which lost its lock from committing a batch (alone, and wired by
``Runtime.run``), the payouts lock (``payments.service.Payments.once``) on both engines, and the
reader pool on ``OPENMUSIC_DATABASE_READ_URL``."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import psycopg
import pytest

from core import db
from core.config import Settings
from core.leader import (
    INDEXER,
    PAYOUTS,
    FileLeadership,
    LeadershipLost,
    PgLeadership,
    leader_file,
    leadership_for,
    lock_key,
)
from devkit import pgserver

pytestmark = pytest.mark.skipif(pgserver.bin_dir() is None, reason="no PostgreSQL server binaries (apt-get install postgresql)")

_names = iter(range(1, 1000))


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A throwaway cluster for this module; its superuser URL."""
    with pgserver.throwaway_cluster() as url:
        yield url


@pytest.fixture
def database(server: str) -> str:
    """A fresh, empty database on ``server``; its URL."""
    return pgserver.create_database(server, f"lead{next(_names)}")


def terminate(url: str, backend: int) -> None:
    """End the session of server process ``backend`` (``pg_terminate_backend``), as an operator or a
    network failure would; returns once the server has removed it."""
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (backend,)).fetchone()[0]
        for _ in range(200):
            if not conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)).fetchone():
                return
            time.sleep(0.01)
    raise AssertionError(f"backend {backend} is still there")


def test_lock_key_and_lock_files():
    """The key is a signed 64-bit number fixed by the name; SQLite's lock files stay apart per name
    (the indexer's is ``<db>.leader``, as before); ``leadership_for`` picks the engine's kind."""
    assert lock_key(INDEXER) == lock_key("openmusic:indexer") != lock_key(PAYOUTS)
    assert -2 ** 63 <= lock_key(INDEXER) < 2 ** 63
    assert leader_file("/d/om.sqlite") == "/d/om.sqlite.leader"
    assert leader_file("/d/om.sqlite", PAYOUTS) == "/d/om.sqlite.payouts.leader"
    lite = leadership_for(Settings(db_path="/d/om.sqlite"), PAYOUTS)
    assert isinstance(lite, FileLeadership) and lite.path == "/d/om.sqlite.payouts.leader"
    assert lite.commit_fence() is None
    url = "postgresql://u@127.0.0.1:1/x"
    pg = leadership_for(Settings(db_path="/d/om.sqlite", database_url=url,
                                 database_read_url="postgresql://u@127.0.0.1:2/x"))
    assert isinstance(pg, PgLeadership) and pg.url == url and pg.key == lock_key(INDEXER)  # the primary
    assert pg.commit_fence() == pg.fence


async def test_one_holder_and_the_standby_takes_over_when_its_session_ends(database):
    """Two sessions: only one acquires, and the other names it as the holder; ``holding()`` is True
    for the holder only. When the server ends the holder's session (``pg_terminate_backend``), its
    ``holding()`` turns False and a waiting standby holds the lock within ``poll_s``."""
    first = PgLeadership(database, poll_s=0.1)
    second = PgLeadership(database, poll_s=0.1)
    try:
        assert await first.acquire()
        assert await first.acquire()  # already held: still True
        assert not await second.acquire()
        holder = second.holder()
        assert holder is not None and holder["pid"] == os.getpid() and holder["backendPid"] == first.backend_pid
        assert holder["host"] and abs(holder["since"] - time.time()) < 60
        assert await first.holding() and not await second.holding()

        waiting = asyncio.create_task(second.wait())
        await asyncio.sleep(0.5)
        assert not waiting.done()  # still one at a time
        backend = first.backend_pid
        assert backend is not None
        await asyncio.to_thread(terminate, database, backend)
        ended = time.monotonic()
        await asyncio.wait_for(waiting, timeout=5)
        assert time.monotonic() - ended < second.poll_s + 0.5
        assert second.backend_pid is not None and second.backend_pid != backend
        assert await second.holding()
        assert not await first.holding()  # its session is gone, and so is its lock
        assert first.backend_pid is None
        assert not await first.acquire()  # a new session of its own: the lock is the other's now
        assert first.holder()["backendPid"] == second.backend_pid

        # a release lets the next one in at once
        await second.release()
        assert not await second.holding()
        assert await first.acquire()
    finally:
        await first.release()
        await second.release()


async def test_a_frozen_leaders_session_is_ended_by_the_server(database):
    """A leader that stops asking (a hung process) loses the lock once its session has been idle for
    ``idle_s`` (the server's ``idle_session_timeout``), so a standby is not kept out for ever."""
    frozen = PgLeadership(database, idle_s=1.0)
    standby = PgLeadership(database, poll_s=0.1)
    try:
        assert await frozen.acquire()
        assert not await standby.acquire()
        started = time.monotonic()
        await asyncio.wait_for(standby.wait(), timeout=10)
        assert 0.8 < time.monotonic() - started < 5
        assert not await frozen.holding()
    finally:
        await frozen.release()
        await standby.release()


async def test_a_leader_that_lost_its_lock_cannot_commit(database):
    """The commit fence (``PgLeadership.fence`` as ``Indexer.fence``): while the lock is held, a
    batch commits (its cursor is stored) and so does a ledger-style transaction; once the server has
    ended the leadership session, the next batch raises ``LeadershipLost`` and nothing of it is
    committed, not even when the standby has not taken the lock yet."""
    from indexer.core import Indexer

    await asyncio.to_thread(db.migrate, database)
    leader = PgLeadership(database)
    writer = Indexer(database, "wss://relay.example/xrpc/com.atproto.sync.subscribeRepos")
    await writer.open()
    try:
        assert await leader.acquire()
        writer.fence = leader.commit_fence()
        await writer.apply([], 41)
        assert await writer.load_cursor() == 41

        def payout_account(conn, did: str) -> None:
            conn.execute("INSERT INTO payout_account (did, account, created_at, updated_at) VALUES (?,?,?,?)",
                         (did, f"acct_{did[-3:]}", db.now_iso(), db.now_iso()))
        await writer.transact(payout_account, "did:plc:fenceok")

        backend = leader.backend_pid
        assert backend is not None
        await asyncio.to_thread(terminate, database, backend)
        with pytest.raises(LeadershipLost, match="lock .* is lost"):
            await writer.apply([], 42)
        assert await writer.load_cursor() == 41  # the batch was rolled back
        with pytest.raises(LeadershipLost):
            await writer.transact(payout_account, "did:plc:fenced")
        rows = await writer.sql("SELECT did FROM payout_account ORDER BY did")
        assert [r[0] for r in rows] == ["did:plc:fenceok"]

        # and once it knows (``holding``), it does not even try
        assert not await leader.holding()
        with pytest.raises(LeadershipLost, match="does not lead"):
            await writer.apply([], 43)
        assert await writer.load_cursor() == 41
    finally:
        await writer.close()
        await leader.release()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_payout_runs_and_closes_take_turns(engine, server, tmp_path):
    """``Payments.once`` (payout runs, period closes): refused with a clear error while another process
    holds the payouts lock, and free again after the body (also when it raised)."""
    from payments.errors import PaymentError
    from payments.service import Payments

    url = pgserver.create_database(server, f"pay{next(_names)}") if engine == "postgresql" else ""
    settings = Settings(db_path=str(tmp_path / "om.sqlite"), database_url=url, attestation_key="11" * 32)
    payments = Payments(settings, None, "did:plc:broker")  # type: ignore[arg-type]
    other = leadership_for(settings, PAYOUTS)
    try:
        assert await other.acquire()
        with pytest.raises(PaymentError, match=f"cannot run payouts now: process {os.getpid()} on .* is running"):
            await payments.run_payouts()
        with pytest.raises(PaymentError, match="cannot close 2026-01 now") as refused:
            await payments.close_period("2026-01")
        assert refused.value.status == 409 and refused.value.error == "Busy"
        await other.release()

        with pytest.raises(RuntimeError, match="inside"):
            async with payments.once("test"):
                assert not await other.acquire()  # held while the body runs
                raise RuntimeError("inside")
        assert await other.acquire()  # released after it
    finally:
        await other.release()
        await payments.close()


async def test_the_runtime_fences_its_writer_and_stops_when_the_lock_is_lost(database, tmp_path):
    """``Runtime.run`` (role ``indexer``) on PostgreSQL: once it leads, its writer carries the fence
    of its ``PgLeadership``; when the server ends the leadership session, the writer's next batch is
    refused and ``run`` stops with exit status 1 within a few leadership checks."""
    from openmusic.runtime import LEADERSHIP_CHECK_S, Runtime
    from tests.conftest import free_port

    settings = Settings(db_path=str(tmp_path / "om.sqlite"), blob_cache_dir=str(tmp_path / "blobs"),
                        database_url=database, host="127.0.0.1", port=free_port(), verify_commits=False,
                        log_level="WARNING", role="indexer")
    rt = Runtime(settings)
    stop = asyncio.Event()
    running = asyncio.create_task(rt.run(stop, firehose=False))
    try:
        for _ in range(300):
            if rt.indexer is not None or running.done():
                break
            await asyncio.sleep(0.05)
        assert rt.indexer is not None and isinstance(rt.leadership, PgLeadership)
        assert rt.writer is rt.indexer and rt.writer.fence == rt.leadership.fence
        await rt.writer.apply([], 7)
        backend = rt.leadership.backend_pid
        assert backend is not None
        await asyncio.to_thread(terminate, database, backend)
        with pytest.raises(LeadershipLost):
            await rt.writer.apply([], 8)
        assert await asyncio.wait_for(running, timeout=LEADERSHIP_CHECK_S * 3 + 20) == 1
    finally:
        stop.set()
        if not running.done():
            await asyncio.wait_for(running, timeout=60)
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT seq FROM cursor").fetchall() == [(7,)]


async def test_a_long_payout_run_keeps_its_lock(server, tmp_path, monkeypatch):
    """A payout run outlasting the server's idle timeout of the lock's session keeps the lock: ``once``
    asks ``holding()`` every ``KEEP_S`` seconds, so the session never counts as idle."""
    from payments import service
    from payments.service import Payments

    url = pgserver.create_database(server, f"pay{next(_names)}")
    settings = Settings(db_path=str(tmp_path / "om.sqlite"), database_url=url, attestation_key="11" * 32)
    monkeypatch.setattr(service, "leadership_for", lambda s, name: PgLeadership(s.database, name, idle_s=1.0))
    monkeypatch.setattr(service, "KEEP_S", 0.2)
    payments = Payments(settings, None, "did:plc:broker")  # type: ignore[arg-type]
    other = PgLeadership(url, PAYOUTS)
    try:
        async with payments.once("test"):
            await asyncio.sleep(3.0)  # three idle timeouts
            assert not await other.acquire()
        assert await other.acquire()
    finally:
        await other.release()
        await payments.close()


async def test_readers_read_the_replica_and_writes_go_to_the_primary(server, tmp_path):
    """``OPENMUSIC_DATABASE_READ_URL``: the runtime's reader pool (the AppView's queries) reads there,
    read-only, while its writer writes to ``OPENMUSIC_DATABASE_URL``. (Two databases stand in for a
    primary and its replica: what each connection reads tells which one it is on.)"""
    from openmusic.runtime import Runtime

    primary = pgserver.create_database(server, f"primary{next(_names)}")
    replica = pgserver.create_database(server, f"replica{next(_names)}")
    for url in (primary, replica):
        await asyncio.to_thread(db.migrate, url)
    with psycopg.connect(replica, autocommit=True) as conn:
        conn.execute("INSERT INTO cursor (source, seq, updated_at) VALUES ('on-the-replica', 1, '')")
    settings = Settings.from_env({"OPENMUSIC_DATABASE_URL": primary, "OPENMUSIC_DATABASE_READ_URL": replica},
                                 db_path=str(tmp_path / "om.sqlite"), blob_cache_dir=str(tmp_path / "blobs"),
                                 verify_commits=False, log_level="WARNING")
    assert settings.database == primary and settings.database_read == replica
    assert Settings(database_url=primary).database_read == primary  # empty: the primary serves reads too
    rt = Runtime(settings, role="api")
    await rt.start_api()
    try:
        await rt.writer.sql("INSERT INTO cursor (source, seq, updated_at) VALUES ('on-the-primary', 2, '')")
        rows = await (await rt.reader.execute("SELECT source FROM cursor")).fetchall()
        assert [r[0] for r in rows] == ["on-the-replica"]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await rt.reader.execute("INSERT INTO cursor (source, seq, updated_at) VALUES ('x', 3, '')")
    finally:
        await rt.stop()
    for url, source in ((primary, "on-the-primary"), (replica, "on-the-replica")):
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT source FROM cursor").fetchall() == [(source,)]
