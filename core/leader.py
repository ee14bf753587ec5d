"""Leader election: exactly one process at a time does the work that must happen once per database
(the indexer: firehose, resync, label streams and sweeps, the payment broker, periodic jobs; and,
under a name of its own, ``PAYOUTS``: payout runs and period closes).

``Leadership`` is what the runtime (``openmusic run --role indexer|all``) uses:

- ``await acquire()``: try once, without waiting; True when this process holds it now.
- ``await wait()``: until this process holds it (tries again every ``poll_s`` seconds).
- ``await holding()``: whether it is still held. The runtime asks every few seconds while it leads
  and stops writing (it exits) when the answer is no.
- ``await release()``: let it go (the next ``wait`` elsewhere returns within ``poll_s``).

Whoever holds it must not write before ``acquire``/``wait`` returns, and must stop writing when
``holding()`` says no; a standby starts from the durable cursor once it holds it.

Implementations:

- ``FileLeadership`` (SQLite): ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<db>.leader`` beside the
  database (``<db>.<what>.leader`` for another name: ``leader_file``). The kernel drops the lock when the last descriptor of the open file closes, which
  happens when the process dies however it dies (SIGKILL, OOM killer), so a standby takes over
  within ``poll_s`` of the leader's death. The file's content names the holder (``holder()``: pid,
  host, since), for people. The file is never deleted: a process waiting on an unlinked inode would
  lead beside one that locked a new file. Like SQLite's WAL itself, it needs every process on the
  same machine and a local file system (``flock`` is not reliable over NFS). The descriptor is not
  inherited by spawned or exec'd children (Python opens files non-inheritable), so worker processes
  (commit verification) never keep a dead leader's lock.
- ``PgLeadership`` (PostgreSQL): ``pg_try_advisory_lock(key)`` on a dedicated connection opened for
  it alone (advisory locks belong to the session: never a pooled connection), with ``key`` a fixed
  64-bit number (``lock_key(name)``). ``acquire`` = one ``pg_try_advisory_lock``; ``wait`` = that
  every ``poll_s``; ``holding`` = a query on that session which succeeds and finds the lock still
  granted to that session's backend in ``pg_locks`` (the server drops the lock when the session
  ends, so a lost connection means a lost lock: at once when the leader's process dies, within about
  11 s through TCP keepalives on both ends when its machine or network does, and after
  ``IDLE_SESSION_S`` of silence, the server's ``idle_session_timeout``, when it hangs); ``release`` =
  ``pg_advisory_unlock(key)`` and close. The session's ``application_name`` names the holder
  (``om:<pid>:<since>:<host>``), which ``holder()`` reads back from ``pg_stat_activity``. A leader
  cut off from the server may still run until its next ``holding()``: so each of its writer's
  transactions checks, just before COMMIT, that the lock is still granted to the leadership
  session's backend (``PgLeadership.fence``, set as ``Indexer.fence`` by the runtime); a leader
  whose session is gone cannot commit. What is left is the moment between that check and the
  COMMIT itself: a standby that took over in it reads the cursor before that batch lands, and reads
  its events again, which changes nothing (replays are idempotent, ``indexer.core``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import Settings

log = logging.getLogger("openmusic.leader")
#: Seconds between attempts of a standby (``Leadership.wait``): the takeover delay after the
#: leader dies, before the new leader's start-up.
POLL_S = 0.5
#: The name of the indexer's leadership (the PostgreSQL lock key is derived from it).
INDEXER = "openmusic:indexer"
#: The name of the payout runs' and period closes' leadership (``payments.service``).
PAYOUTS = "openmusic:payouts"
#: PostgreSQL: seconds a leadership session may stay idle before the server ends it (and drops its
#: lock): a frozen leader (SIGSTOP, a hung event loop) loses the lock this long after its last check.
IDLE_SESSION_S = 30.0
#: PostgreSQL: seconds each statement of the leadership session (and its connecting) may take before
#: it counts as lost.
STATEMENT_TIMEOUT_S = 5.0


class LeadershipLost(RuntimeError):
    """Raised by a commit fence (``PgLeadership.fence``) when this process no longer holds the lock:
    the transaction is rolled back instead of committed."""


def lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name`` (first 8 bytes of its SHA-256), as
    PostgreSQL's ``pg_try_advisory_lock(bigint)`` takes it."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Leadership(ABC):
    """One process at a time holds it (see the module docstring). ``name``: what is led (for logs);
    ``poll_s``: seconds between attempts in ``wait``."""

    def __init__(self, name: str = INDEXER, poll_s: float = POLL_S) -> None:
        self.name = name
        self.poll_s = poll_s
        #: ``time.monotonic()`` when this process took it, or None while it does not hold it
        self.since: float | None = None

    @abstractmethod
    async def acquire(self) -> bool:
        """Try once, without waiting. True when this process holds it now (also when it already did)."""

    async def wait(self) -> None:
        """Return once this process holds it, trying every ``poll_s`` seconds; cancellable."""
        logged = False
        while not await self.acquire():
            if not logged:
                log.info("%s is held by another process (%s); standing by", self.name, self.holder() or "unknown")
                logged = True
            await asyncio.sleep(self.poll_s)

    @abstractmethod
    async def holding(self) -> bool:
        """Whether this process still holds it."""

    @abstractmethod
    async def release(self) -> None:
        """Let it go (nothing when not held). Call only once this process writes no more."""

    def holder(self) -> dict[str, Any] | None:
        """What is known of the current holder (``pid``, ``host``, ``since`` epoch seconds), or None."""
        return None

    def commit_fence(self) -> Callable[[Any], None] | None:
        """A check to run in each write transaction just before COMMIT (``Indexer.fence``), raising
        ``LeadershipLost`` when this process no longer leads; None when the lock cannot be lost
        while this process lives (``FileLeadership``)."""
        return None


class FileLeadership(Leadership):
    """``Leadership`` through ``flock`` on the file ``path`` (created when missing, never deleted).
    Raises ``OSError`` when the file cannot be opened."""

    def __init__(self, path: str, name: str = INDEXER, poll_s: float = POLL_S) -> None:
        super().__init__(name, poll_s)
        self.path = path
        self._fd: int | None = None

    async def acquire(self) -> bool:
        """``flock(LOCK_EX | LOCK_NB)``; on success write our pid, host and the time into the file."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.since = time.monotonic()
        note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 3)})
        with contextlib.suppress(OSError):  # the note is for people; the lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode() + b"\n", 0)
        log.info("%s: this process (pid %d) leads now (%s)", self.name, os.getpid(), self.path)
        return True

    async def holding(self) -> bool:
        """True while our descriptor is open (the kernel keeps the lock as long as it is)."""
        return self._fd is not None

    async def release(self) -> None:
        """Unlock and close; the file stays (see the module docstring)."""
        fd, self._fd, self.since = self._fd, None, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        log.info("%s: released by pid %d", self.name, os.getpid())

    def holder(self) -> dict[str, Any] | None:
        """The note the holder wrote into the file (``pid``, ``host``, ``since``), or None when there is
        none (nobody leads, or the last leader was killed: a dead leader's note stays until the next
        leader overwrites it, so check ``pid`` on ``host`` before trusting it)."""
        try:
            with open(self.path) as f:
                text = f.read().strip()
            return json.loads(text) if text else None
        except (OSError, ValueError):
            return None


def _advisory_lock_rows(key: int) -> str:
    """``FROM pg_locks WHERE ...`` selecting the granted session lock ``pg_advisory_lock(key)`` (a
    bigint key is listed as ``classid`` = its high 32 bits, ``objid`` = its low 32 bits, ``objsubid``
    = 1) in the current database. ``key`` is ours (``lock_key``), so it is written in as a number."""
    high, low = (int(key) >> 32) & 0xFFFFFFFF, int(key) & 0xFFFFFFFF
    return ("FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            f"AND CAST(classid AS bigint) = {high} AND CAST(objid AS bigint) = {low} "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


def _application_name(since: float | None) -> str:
    """``om:<pid>:<since epoch s, or empty>:<host>`` (PostgreSQL keeps the first 63 bytes)."""
    return f"om:{os.getpid()}:{'' if since is None else int(since)}:{socket.gethostname()}"[:63]


_APP_NAME = re.compile(r"^om:(\d+):(\d*):(.*)$")


class PgLeadership(Leadership):
    """``Leadership`` through ``pg_try_advisory_lock(lock_key(name))`` on a psycopg
    ``AsyncConnection`` to ``url`` opened for it alone (autocommit, TCP keepalives, the server's
    ``idle_session_timeout`` = ``idle_s`` on PostgreSQL 14 and later; module docstring). Every
    statement is bounded by ``timeout_s``; a failed or slow one counts as a lost session (it is
    closed, and the server drops the lock with it). ``backend_pid``: the server process of our
    session while we hold the lock, else None. Never raises on a database error: ``acquire`` says
    False (and logs), ``holding`` says False."""

    def __init__(self, url: str, name: str = INDEXER, poll_s: float = POLL_S, idle_s: float = IDLE_SESSION_S,
                 timeout_s: float = STATEMENT_TIMEOUT_S) -> None:
        super().__init__(name, poll_s)
        self.url = url
        self.key = lock_key(name)
        self.idle_s = idle_s
        self.timeout_s = timeout_s
        self.backend_pid: int | None = None
        self._conn: Any = None  # psycopg.AsyncConnection
        self._holder: dict[str, Any] | None = None
        self._failing = False

    async def _session(self) -> Any:
        """Our connection, opened when there is none (or it broke)."""
        import psycopg

        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = await asyncio.wait_for(psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name=_application_name(None),
            connect_timeout=max(2, int(self.timeout_s)), keepalives=1, keepalives_idle=5, keepalives_interval=2,
            keepalives_count=3, tcp_user_timeout=int(self.timeout_s * 1000)), self.timeout_s * 2)
        try:
            # the server's side of the same: it notices a vanished leader and ends its session
            await conn.execute("SELECT set_config('tcp_keepalives_idle', '5', false), "
                               "set_config('tcp_keepalives_interval', '2', false), "
                               "set_config('tcp_keepalives_count', '3', false)")
            if conn.info.server_version >= 140000:
                await conn.execute("SELECT set_config('idle_session_timeout', %s, false)",
                                   (str(int(self.idle_s * 1000)),))
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def _drop(self) -> None:
        """Forget the session (closing it ends the lock with it, if we held it)."""
        conn, self._conn = self._conn, None
        self.backend_pid = self.since = None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self.timeout_s)

    async def _value(self, sql: str, params: tuple = ()) -> Any:
        """The first column of the first row of ``sql`` on our session, within ``timeout_s``."""
        conn = await self._session()

        async def run() -> Any:
            cur = await conn.execute(sql, params)
            row = await cur.fetchone()
            return row[0] if row else None
        return await asyncio.wait_for(run(), self.timeout_s)

    async def acquire(self) -> bool:
        """One ``pg_try_advisory_lock``; on success ``application_name`` is set to name us as the
        holder. False while another session holds it (``holder()`` then names that one), and when
        the server cannot be reached now (logged once until it can be again)."""
        import psycopg

        if self.backend_pid is not None:
            return True
        try:
            if await self._value("SELECT pg_try_advisory_lock(%s)", (self.key,)):
                now = time.time()
                await self._value("SELECT set_config('application_name', %s, false)", (_application_name(now),))
                self.backend_pid = self._conn.info.backend_pid
                self.since = time.monotonic()
                self._holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": float(int(now)),
                                "backendPid": self.backend_pid}
                self._failing = False
                log.info("%s: this process (pid %d) leads now (PostgreSQL backend %d)", self.name, os.getpid(),
                         self.backend_pid)
                return True
            self._holder = await self._find_holder()
            self._failing = False
            return False
        except (psycopg.Error, OSError, TimeoutError) as exc:
            if not self._failing:
                log.warning("%s: the lock cannot be asked for now (%s); trying again", self.name,
                            type(exc).__name__)
                self._failing = True
            await self._drop()
            return False
        except BaseException:  # cancelled mid-way: the lock may be ours, and must not outlive us
            await asyncio.shield(self._drop())
            raise

    async def _find_holder(self) -> dict[str, Any] | None:
        """The session holding the lock, from ``pg_locks`` and ``pg_stat_activity``."""
        conn = await self._session()

        async def run() -> Any:
            cur = await conn.execute(
                "SELECT a.pid, a.application_name, host(a.client_addr), "
                "CAST(extract(epoch FROM a.backend_start) AS double precision) "
                f"FROM pg_stat_activity a WHERE a.pid IN (SELECT pid {_advisory_lock_rows(self.key)})")
            return await cur.fetchone()
        row = await asyncio.wait_for(run(), self.timeout_s)
        if row is None:
            return None
        backend, app, addr, started = row
        m = _APP_NAME.match(app or "")
        if m is None:  # not one of ours (or not visible to our role)
            return {"pid": None, "host": addr, "since": started, "backendPid": backend}
        return {"pid": int(m.group(1)), "host": m.group(3) or addr,
                "since": float(m.group(2)) if m.group(2) else started, "backendPid": backend}

    async def holding(self) -> bool:
        """True while our session answers and ``pg_locks`` lists the lock as granted to it; on
        False the session is closed (the lock, if the server still had it, goes with it)."""
        import psycopg

        if self.backend_pid is None:
            return False
        if self._conn is None or self._conn.closed:  # the server or the network ended it
            await self._drop()
            return False
        try:
            held = bool(await self._value(
                f"SELECT EXISTS (SELECT 1 {_advisory_lock_rows(self.key)} AND pid = pg_backend_pid())"))
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("%s: the leadership session failed (%s)", self.name, type(exc).__name__)
            held = False
        if not held:
            await self._drop()
        return held

    async def release(self) -> None:
        """``pg_advisory_unlock`` when held, then close the session (also a standby's)."""
        held = self.backend_pid is not None
        if held and self._conn is not None and not self._conn.closed:
            with contextlib.suppress(Exception):
                await self._value("SELECT pg_advisory_unlock(%s)", (self.key,))
        await self._drop()
        self._holder = None
        if held:
            log.info("%s: released by pid %d", self.name, os.getpid())

    def holder(self) -> dict[str, Any] | None:
        """The holder seen by the last ``acquire`` (``pid`` and ``host`` of the process, ``since``
        epoch seconds, ``backendPid`` of its session): this process while it leads; None when
        nobody held it then, or nothing was asked yet. ``pid`` is None for a session that is not
        one of ours."""
        return dict(self._holder) if self._holder else None

    def fence(self, conn: Any) -> None:
        """Raise ``LeadershipLost`` unless the lock is granted, right now, to our leadership
        session's backend: for ``Indexer.fence``, called on the writer connection ``conn`` (a
        ``core.pg.SyncConnection``, in the writer's thread) just before its COMMIT. ``pg_locks``
        shows the live lock table, not a snapshot, so a session the server has ended is absent."""
        backend = self.backend_pid
        if backend is None:
            raise LeadershipLost(f"{self.name}: this process does not lead; the transaction is not committed")
        row = conn.execute(f"SELECT 1 {_advisory_lock_rows(self.key)} AND pid = {int(backend)}").fetchone()
        if row is None:
            raise LeadershipLost(f"{self.name}: the leader lock (PostgreSQL backend {backend}) is lost; "
                                 "the transaction is not committed")

    def commit_fence(self) -> Callable[[Any], None]:
        """``fence`` (the lock of a PostgreSQL session can be lost while this process lives)."""
        return self.fence


def leader_file(db_path: str, name: str = INDEXER) -> str:
    """The lock file of ``FileLeadership`` for ``name`` beside the SQLite file ``db_path``:
    ``<db>.leader`` for the indexer, ``<db>.<what>.leader`` for another (``PAYOUTS``:
    ``<db>.payouts.leader``)."""
    if name == INDEXER:
        return f"{db_path}.leader"
    what = re.sub(r"[^A-Za-z0-9_-]+", "-", name.rsplit(":", 1)[-1]).strip("-") or "lock"
    return f"{db_path}.{what}.leader"


def leadership_for(settings: Settings, name: str = INDEXER) -> Leadership:
    """The ``Leadership`` called ``name`` of ``settings``' database: ``PgLeadership`` on the
    primary (``Settings.database``, never the read replica) when it is PostgreSQL, else
    ``FileLeadership`` on ``leader_file(db_path, name)``."""
    from core.db import is_postgres

    if is_postgres(settings.database):
        return PgLeadership(settings.database, name)
    return FileLeadership(leader_file(settings.db_path, name), name)
