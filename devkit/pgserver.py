"""A throwaway PostgreSQL cluster for the tests and the no-Docker topology (issue 15).

``throwaway_cluster()`` runs ``initdb`` into a fresh folder under the system temp dir and starts a
server there on a free loopback port (its unix socket in the same folder), tuned for tests
(``fsync``, ``synchronous_commit`` and ``full_page_writes`` off: a crash loses the cluster, which is
thrown away anyway). The cluster is ``UTF8`` with the ``C`` locale, so text sorts bytewise like
SQLite's ``BINARY`` collation and ``lower()``/``upper()`` fold ASCII only, as SQLite's do
(docs/plans/postgresql.md, "text ordering / collation"). On exit, even after an error, the server is
stopped (fast, then immediate, then ``SIGKILL`` of its postmaster) and the folder removed.

The cluster may be streamed from (``wal_level=replica``, ``max_wal_senders``, a ``host replication``
trust line for 127.0.0.1): ``streaming_replica(url)`` makes a hot standby of it with ``pg_basebackup
-R`` on another free port, for tests that read from a real replica (``OPENMUSIC_DATABASE_READ_URL``);
``wait_replayed`` waits until a replica has replayed what its primary has written.

``initdb`` refuses to run as root: as root the server runs as the ``postgres`` user (``runuser``),
who owns the folder. The binaries are the newest ``/usr/lib/postgresql/<major>/bin`` (Debian's
``postgresql`` package), or ``$OPENMUSIC_PG_BIN``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

#: Where Debian's ``postgresql-<major>`` packages put their binaries.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
#: Seconds ``pg_ctl`` waits for the server to start or stop.
PG_CTL_TIMEOUT_S = 60
#: Settings for a server whose data may be lost: no fsync, no full-page writes, async commit.
TEST_SETTINGS: dict[str, str] = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
#: Settings that let a standby stream from the cluster (PostgreSQL's defaults since 10, made explicit).
REPLICATION_SETTINGS: dict[str, str] = {"wal_level": "replica", "max_wal_senders": "10"}
#: What ``pg_hba.conf`` must allow for ``pg_basebackup`` and a standby's WAL receiver (``initdb -A
#: trust`` writes it already; added when missing).
REPLICATION_HBA = "host    replication     all             127.0.0.1/32            trust"
#: Settings a hot standby needs at least as high as its primary's, or it refuses to start.
STANDBY_MINIMUMS = ("max_connections", "max_worker_processes", "max_wal_senders",
                    "max_prepared_transactions", "max_locks_per_transaction")
#: Seconds ``streaming_replica`` waits for a new standby to replay its primary's WAL.
REPLAY_TIMEOUT_S = 60.0


def bin_dir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``: ``$OPENMUSIC_PG_BIN`` when set,
    else the newest major version under ``/usr/lib/postgresql``; ``None`` when there is none."""
    env = os.environ.get("OPENMUSIC_PG_BIN")
    if env:
        return Path(env) if (Path(env) / "initdb").exists() else None
    found = sorted(DEBIAN_ROOT.glob("*/bin/initdb"), key=lambda p: _major(p.parent.parent.name))
    return found[-1].parent if found else None


def _major(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (-1, name)


def run_as_postgres() -> list[str]:
    """The command prefix that runs a server binary as a user it accepts: ``runuser -u postgres --``
    as root (``initdb`` and ``postgres`` refuse root), nothing otherwise."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may take it before we bind it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClusterError(RuntimeError):
    """``initdb`` or ``pg_ctl start`` failed; the message carries their output and the server log."""


@contextlib.contextmanager
def throwaway_cluster(*, max_connections: int = 300, settings: dict[str, str] | None = None,
                      pg_bin: Path | None = None) -> Iterator[str]:
    """Start a fresh cluster and yield its URL, ``postgresql://postgres@127.0.0.1:<port>/postgres``
    (superuser ``postgres``, trust authentication, loopback only).

    ``settings`` adds or overrides server settings (``-c name=value``) on top of ``TEST_SETTINGS``
    and ``max_connections``. Raises ``ClusterError`` when the binaries are missing or the server does
    not start (with ``initdb``/``pg_ctl`` output and the server log). Stops the server and removes its
    folder on exit, also when the body raises.
    """
    bins = pg_bin or bin_dir()
    if bins is None:
        raise ClusterError(f"no PostgreSQL server binaries under {DEBIAN_ROOT}/*/bin "
                           "(apt-get install postgresql, or set OPENMUSIC_PG_BIN)")
    as_pg = run_as_postgres()
    tmp = Path(tempfile.mkdtemp(prefix="om-pg-"))
    data, log = tmp / "data", tmp / "server.log"
    started = False
    try:
        if as_pg:
            shutil.chown(tmp, "postgres")
        _run([*as_pg, str(bins / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
              "-E", "UTF8", "--locale=C", "--no-sync"], "initdb", log)
        _allow_replication(data / "pg_hba.conf")
        conf = {**TEST_SETTINGS, **REPLICATION_SETTINGS, "max_connections": str(max_connections), **(settings or {})}
        started = True
        port = _start(bins, data, tmp, log, conf, as_pg)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            _stop(bins, data, as_pg)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def streaming_replica(primary_url: str, *, settings: dict[str, str] | None = None,
                      pg_bin: Path | None = None, timeout: float = REPLAY_TIMEOUT_S) -> Iterator[str]:
    """Make a hot standby of the server of ``primary_url`` (a superuser URL on 127.0.0.1, e.g. one
    ``throwaway_cluster`` yields or a database ``create_database`` made on it) and yield its URL,
    ``postgresql://postgres@127.0.0.1:<port>/<the database of primary_url>``.

    ``pg_basebackup -R -X stream`` copies the primary into a fresh folder through a physical
    replication slot of its own (so the primary keeps the WAL the standby has yet to fetch), then
    the standby starts on a free loopback port with ``hot_standby=on``, ``TEST_SETTINGS``, the
    settings a standby needs at least as high as its primary's (``STANDBY_MINIMUMS``, read from the
    primary) and ``settings`` on top. It is yielded once it is in recovery and has replayed the
    primary's WAL up to its LSN at that moment (``wait_replayed``). Every later write on the primary
    reaches it asynchronously: wait with ``wait_replayed`` before reading what was just written.

    Raises ``ClusterError`` when the binaries are missing or ``pg_basebackup``/``pg_ctl start``
    fail (with their output and the standby's log), ``TimeoutError`` when the standby has not caught
    up within ``timeout`` seconds, ``psycopg.Error`` when the primary cannot be reached. On exit,
    also when the body raises, the standby is stopped, its folder removed and its slot dropped on
    the primary (when the primary is still there).
    """
    import psycopg

    bins = pg_bin or bin_dir()
    if bins is None:
        raise ClusterError(f"no PostgreSQL server binaries under {DEBIAN_ROOT}/*/bin "
                           "(apt-get install postgresql, or set OPENMUSIC_PG_BIN)")
    parts = urlsplit(primary_url)
    host, primary_port = parts.hostname or "127.0.0.1", parts.port or 5432
    user = parts.username or "postgres"
    with psycopg.connect(primary_url, autocommit=True) as conn:
        minimums = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                                     (list(STANDBY_MINIMUMS),)).fetchall())
    as_pg = run_as_postgres()
    tmp = Path(tempfile.mkdtemp(prefix="om-pg-replica-"))
    data, log = tmp / "data", tmp / "server.log"
    slot = f"om_replica_{secrets.token_hex(4)}"
    started = False
    try:
        if as_pg:
            shutil.chown(tmp, "postgres")
        _run([*as_pg, str(bins / "pg_basebackup"), "-h", host, "-p", str(primary_port), "-U", user, "-w",
              "-D", str(data), "-R", "-X", "stream", "-C", "-S", slot, "-c", "fast", "--no-sync"],
             "pg_basebackup", log)
        conf = {**TEST_SETTINGS, **minimums, "hot_standby": "on", "hot_standby_feedback": "on", **(settings or {})}
        started = True
        port = _start(bins, data, tmp, log, conf, as_pg)
        url = with_database(f"postgresql://{user}@127.0.0.1:{port}/", parts.path.lstrip("/") or "postgres")
        with psycopg.connect(url, autocommit=True) as conn:
            if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                raise ClusterError(f"the server on port {port} started from the base backup is not a standby")
        wait_replayed(primary_url, url, timeout)
        yield url
    finally:
        if started:
            _stop(bins, data, as_pg)
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(psycopg.Error):  # the primary may be gone, or the slot never made
            with psycopg.connect(primary_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                             "WHERE slot_name = %s AND NOT active", (slot,))


def wait_replayed(primary_url: str, replica_url: str, timeout: float = REPLAY_TIMEOUT_S,
                  interval: float = 0.05) -> str:
    """Wait until the standby of ``replica_url`` has replayed its primary's WAL up to the primary's
    ``pg_current_wal_lsn()`` read when called, after a synchronous commit (so that what was committed
    asynchronously before the call counts too): ``pg_last_wal_replay_lsn()`` at or past it, polling
    every ``interval`` seconds. Returns that LSN (text, e.g. ``0/3000148``). Raises ``TimeoutError``
    after ``timeout`` seconds (with both LSNs), ``ValueError`` when ``replica_url`` is not in
    recovery, ``psycopg.Error`` when a server cannot be reached."""
    import psycopg

    with psycopg.connect(primary_url) as conn:
        # a commit that wrote WAL (a logical decoding message, which no table sees), committed with
        # synchronous_commit on, flushes the WAL of every commit before it: the test clusters commit
        # asynchronously, and pg_current_wal_lsn() counts written WAL only
        conn.execute("SET synchronous_commit = on")
        conn.execute("SELECT pg_logical_emit_message(true, 'openmusic.wait_replayed', '')")
        conn.commit()
        target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        conn.rollback()
    deadline = time.monotonic() + timeout
    with psycopg.connect(replica_url, autocommit=True) as conn:
        while True:
            recovering, replayed, caught_up = conn.execute(
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), "
                "pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
            if not recovering:
                raise ValueError(f"{replica_url} is not a standby (not in recovery)")
            if caught_up:
                return str(target)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{replica_url} replayed up to {replayed}, not {target}, within {timeout}s")
            time.sleep(interval)


def _allow_replication(hba: Path) -> None:
    """Add ``REPLICATION_HBA`` to ``hba`` (a ``pg_hba.conf``) unless a line like it is there."""
    text = hba.read_text()
    lines = [line.split() for line in text.splitlines() if not line.lstrip().startswith("#")]
    if not any(f[:2] == ["host", "replication"] and len(f) > 3 and f[3] == "127.0.0.1/32" for f in lines):
        hba.write_text(text.rstrip("\n") + "\n" + REPLICATION_HBA + "\n")


def _start(bins: Path, data: Path, sockets: Path, log: Path, conf: dict[str, str], as_pg: list[str]) -> int:
    """Start the server of ``data`` on a free loopback port (its unix socket in ``sockets``), with
    ``conf`` as ``-c`` options; returns the port. Tries three ports: one may be taken between
    ``free_port()`` and the bind. Raises ``ClusterError`` (stopping what it started)."""
    for attempt in range(3):
        port = free_port()
        opts = " ".join([f"-p {port}", f"-k {sockets}", "-c listen_addresses=127.0.0.1",
                         *(f"-c {k}={v}" for k, v in conf.items())])
        try:
            _run([*as_pg, str(bins / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts,
                  "-t", str(PG_CTL_TIMEOUT_S), "-w", "start"], "pg_ctl start", log)
            return port
        except ClusterError:
            _stop(bins, data, as_pg)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _run(cmd: list[str], what: str, log: Path) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PG_CTL_TIMEOUT_S + 30, check=False)
    if proc.returncode != 0:
        server_log = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        raise ClusterError(f"{what} failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
                           f"\n--- server log ---\n{server_log}")


def _stop(bins: Path, data: Path, as_pg: list[str]) -> None:
    """Stop the server of ``data``: ``pg_ctl stop`` fast, then immediate, then ``SIGKILL`` of the
    postmaster named in ``postmaster.pid`` (its children exit when it dies)."""
    for mode in ("fast", "immediate"):
        if not (data / "postmaster.pid").exists():
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run([*as_pg, str(bins / "pg_ctl"), "-D", str(data), "-m", mode, "-t", "30", "-w", "stop"],
                           capture_output=True, timeout=40, check=False)
    pid_file = data / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            os.kill(pid, 0)  # raises ProcessLookupError once it is gone
            time.sleep(0.05)


def with_database(url: str, name: str) -> str:
    """``url`` with its database (the path) replaced by ``name``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def create_database(url: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` on the server of ``url`` (a superuser URL, e.g. the one
    ``throwaway_cluster`` yields), copied from ``template`` when given (``STRATEGY FILE_COPY`` on
    PostgreSQL 15 and later: fast with fsync off; nobody may be connected to the template). Returns
    the new database's URL. Raises ``psycopg.Error`` (e.g. ``DuplicateDatabase``)."""
    import psycopg
    from psycopg import sql

    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    with psycopg.connect(url, autocommit=True) as conn:
        if template is not None:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            if conn.info.server_version >= 150000:
                query += sql.SQL(" STRATEGY FILE_COPY")
        conn.execute(query)
    return with_database(url, name)
