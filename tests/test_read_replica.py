"""The AppView on a real PostgreSQL streaming replica (issue 15, topology; ``OPENMUSIC_DATABASE_READ_URL``):
a throwaway primary (``devkit.pgserver.throwaway_cluster``) and a hot standby streaming from it
(``devkit.pgserver.streaming_replica``: ``pg_basebackup -R``), never two databases standing in.

Proves, with a ``Runtime`` whose ``database_url`` is the primary and ``database_read_url`` the
replica: every reader connection is on the standby (``pg_is_in_recovery()``) and the writer on the
primary; what the writer indexes on the primary, once replayed, the XRPC reads (getTrack,
searchTracks, getTrackStats, over the runtime's HTTP app) answer from the replica exactly as a
runtime reading the primary does; the replica itself refuses writes (``cannot execute INSERT in a
read-only transaction``) while the API's write paths (notification ``updateSeen`` over service
auth) succeed, on the primary; and a read right after a write may lag but converges.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from appview import notifications as notes
from appview.app import create_app
from core import db
from core.config import Settings
from devkit import pgserver
from indexer.core import Indexer
from openmusic.runtime import Runtime
from payments.auth import ServiceAuth
from tests.conftest import eventually
from tests.records import DID, LISTENER, play, track
from tests.test_auth_units import DID_KEY, jwt
from tests.test_indexer_units import PLAY, TRACK, commit, create, rkey
from tests.test_postgresql import history

pytestmark = pytest.mark.skipif(pgserver.bin_dir() is None, reason="no PostgreSQL server binaries (apt-get install postgresql)")

#: Our service DID for the service-auth JWTs of the write path.
SERVICE = "did:web:music.example"
T1, T2, T5 = (f"at://{DID}/{TRACK}/{rkey(n)}" for n in (1, 2, 5))


async def index_history(url: str) -> None:
    """``tests.test_postgresql.history()`` indexed into ``url`` (the primary), cursor 4."""
    ix = Indexer(url, "test")
    await ix.open()
    try:
        await ix.load_state()
        await ix.apply(history(), 4)
    finally:
        await ix.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str]]:
    """(primary URL, replica URL): database ``openmusic`` migrated on a throwaway primary, with its
    two accounts and ``history()`` indexed, and a streaming replica of that cluster that has replayed
    it all."""
    with pgserver.throwaway_cluster() as cluster:
        primary = pgserver.create_database(cluster, "openmusic")
        db.migrate(primary)
        with psycopg.connect(primary, autocommit=True) as conn:
            for did in (DID, LISTENER):  # known and verified: no identity look-up leaves the machine
                conn.execute("INSERT INTO actor (did, handle, handle_verified, resolved_at) VALUES (%s, %s, 1, %s)",
                             (did, did.split(":")[-1][:8] + ".test", time.time()))
        asyncio.run(index_history(primary))
        with pgserver.streaming_replica(primary) as replica:
            yield primary, replica


@contextlib.asynccontextmanager
async def serving(url: str, read_url: str, tmp: Path) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """An ``api`` runtime writing to ``url`` and reading ``read_url`` (two readers), service auth
    taking the test key for every caller, and an HTTP client on its AppView app."""
    settings = Settings(db_path=str(tmp / "om.sqlite"), blob_cache_dir=str(tmp / "blobs"), database_url=url,
                        database_read_url=read_url, db_readers=2, verify_commits=False, log_level="WARNING")
    rt = Runtime(settings, role="api")
    await rt.start_api()
    try:
        async def key(did: str, refresh: bool) -> str | None:
            return DID_KEY  # every test account signs with the one test key

        rt.auth = ServiceAuth(SERVICE, key, await rt._connect())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt)), base_url="http://t") as http:
            yield rt, http
    finally:
        await rt.stop()


async def where(conn_execute, sql: str = "SELECT pg_is_in_recovery(), inet_server_port()") -> tuple:
    """The first row of ``sql`` on a runtime connection (a reader pool or an ``Indexer``'s ``sql``)."""
    rows = await conn_execute(sql)
    rows = await rows.fetchall() if hasattr(rows, "fetchall") else rows
    return tuple(rows[0])


async def reads(http: httpx.AsyncClient) -> dict[str, object]:
    """The XRPC reads this test compares: status and body of each."""
    asked = {
        "track": ("fm.openmusic.catalog.getTrack", {"uri": T1}),
        "search": ("fm.openmusic.catalog.searchTracks", {"q": "neon", "sort": "recent", "limit": 10}),
        "stats1": ("fm.openmusic.listen.getTrackStats", {"uri": T1}),
        "stats2": ("fm.openmusic.listen.getTrackStats", {"uri": T2}),
    }
    out: dict[str, object] = {}
    for name, (nsid, params) in asked.items():
        resp = await http.get(f"/xrpc/{nsid}", params=params)
        out[name] = (resp.status_code, resp.json())
    return out


def bearer(caller: str, nsid: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt(iss=caller, aud=SERVICE, lxm=nsid, jti=str(time.monotonic_ns()))}


async def test_reads_answer_from_the_replica_as_from_the_primary(servers, tmp_path):
    """Readers on the standby, writer on the primary; the index, and a track the runtime's writer
    indexes (on the primary), once replayed, read the same through the replica-backed runtime as
    through one reading the primary; the replica refuses a write even on a connection of its own
    (not only the pool's read-only sessions)."""
    primary, replica = servers
    primary_port, replica_port = urlsplit(primary).port, urlsplit(replica).port
    async with serving(primary, replica, tmp_path / "r") as (rt, http), \
            serving(primary, "", tmp_path / "p") as (_, on_primary):
        assert rt.reader.size == 2
        for conn in rt.reader.conns:  # every reader connection: the standby, in recovery
            assert await where(conn.execute_fetchall) == (True, replica_port)
        assert await where(rt.writer.sql) == (False, primary_port)

        got = await reads(http)
        assert got == await reads(on_primary)
        status, body = got["track"]
        assert status == 200 and body["track"]["title"] == "Neon Harbor (remaster)"
        status, body = got["search"]
        assert status == 200 and {t["uri"] for t in body["tracks"]} == {T1, T2}
        assert got["stats1"][1]["plays"] == 2 and got["stats2"][1]["likes"] == 1

        # a new track, through the runtime's writer: on the primary only, until replayed
        await rt.writer.apply([commit(6, DID, 4, create(TRACK, rkey(5), track("Neon Drift", genre="synthwave")))], 6)
        await asyncio.to_thread(pgserver.wait_replayed, primary, replica, 20)
        got = await reads(http)
        assert got == await reads(on_primary)
        assert {t["uri"] for t in got["search"][1]["tracks"]} == {T1, T2, T5}

    with psycopg.connect(replica, autocommit=True) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "off"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="cannot execute INSERT in a read-only"):
            conn.execute("INSERT INTO notification_seen (did, seen_at, updated_at) VALUES ('did:plc:x', '', '')")


async def test_writes_go_to_the_primary_and_reads_converge(servers, tmp_path):
    """``updateSeen`` (a write on the request path) succeeds on the replica-backed runtime and lands
    on the primary; the seen time and a newly indexed play reach the replica-backed reads soon after
    (they may lag, never for good), and then match the primary's."""
    primary, replica = servers
    async with serving(primary, replica, tmp_path / "r") as (rt, http), \
            serving(primary, "", tmp_path / "p") as (_, on_primary):
        assert await where(rt.reader.execute) == (True, urlsplit(replica).port)
        seen = "2026-01-07T12:00:00.000Z"
        resp = await http.post(f"/xrpc/{notes.UPDATE_SEEN}", json={"seenAt": seen},
                               headers=bearer(LISTENER, notes.UPDATE_SEEN))
        assert resp.status_code == 200, resp.text
        with psycopg.connect(primary) as conn:  # written on the primary, at once
            assert conn.execute("SELECT seen_at FROM notification_seen WHERE did = %s",
                                (LISTENER,)).fetchone() == (seen,)

        async def seen_on(client: httpx.AsyncClient) -> object:
            resp = await client.get(f"/xrpc/{notes.LIST}", headers=bearer(LISTENER, notes.LIST))
            assert resp.status_code == 200, resp.text
            return resp.json().get("seenAt")

        assert await eventually(lambda: seen_on(http), timeout=10, until=lambda got: got == seen) == seen
        assert await seen_on(on_primary) == seen

        before = (await http.get("/xrpc/fm.openmusic.listen.getTrackStats", params={"uri": T2})).json()["plays"]
        await rt.writer.apply([commit(7, LISTENER, 2, create(PLAY, rkey(30), play(T2, "bafyreia", 90_000)))], 7)

        async def plays_on(client: httpx.AsyncClient) -> object:
            return (await client.get("/xrpc/fm.openmusic.listen.getTrackStats", params={"uri": T2})).json()["plays"]

        assert await plays_on(on_primary) == before + 1  # the primary has it at once
        assert await eventually(lambda: plays_on(http), timeout=10, until=lambda n: n == before + 1) == before + 1
        assert await reads(http) == await reads(on_primary)


def test_a_replica_is_stopped_and_removed_after_an_error(servers):
    """``streaming_replica`` on an error in its body: the standby is stopped, its folder removed and its
    replication slot dropped on the primary (the module's own replica keeps its slot)."""
    primary, _ = servers
    slots = "SELECT slot_name FROM pg_replication_slots ORDER BY slot_name"
    with psycopg.connect(primary, autocommit=True) as conn:
        before = conn.execute(slots).fetchall()
    seen: dict[str, object] = {}
    with pytest.raises(RuntimeError, match="boom"), pgserver.streaming_replica(primary) as url:
        assert urlsplit(url).path == "/openmusic"
        with psycopg.connect(url) as conn:
            seen["dir"] = conn.execute("SHOW data_directory").fetchone()[0]
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with psycopg.connect(primary, autocommit=True) as conn:
            assert len(conn.execute(slots).fetchall()) == len(before) + 1
        seen["url"] = url
        raise RuntimeError("boom")
    assert not Path(str(seen["dir"])).exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(str(seen["url"]), connect_timeout=2)
    with psycopg.connect(primary, autocommit=True) as conn:
        assert conn.execute(slots).fetchall() == before


def test_replication_is_allowed_in_pg_hba(tmp_path):
    """``_allow_replication`` adds the 127.0.0.1 replication line once, and keeps what was there."""
    hba = tmp_path / "pg_hba.conf"
    hba.write_text("# host replication all 127.0.0.1/32 trust\nlocal all all trust\n")
    pgserver._allow_replication(hba)
    pgserver._allow_replication(hba)
    assert hba.read_text() == f"# host replication all 127.0.0.1/32 trust\nlocal all all trust\n{pgserver.REPLICATION_HBA}\n"
