"""The AppView database: SQLite through aiosqlite (the default), or PostgreSQL through psycopg 3
(``core.pg``) when given a ``postgresql://`` URL (``Settings.database``); schema migrations through
yoyo-migrations (``core/migrations/``). One writer connection (the indexer) and a pool of reader
connections (the AppView, ``ReaderPool``); WAL lets them all run concurrently on SQLite.

Every function here takes ``target``: a SQLite file path or a PostgreSQL URL (``is_postgres``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import psycopg
from yoyo import get_backend, read_migrations

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
log = logging.getLogger("core.db")


#: Errors after which the work stops and resumes from the durable cursor (the firehose consumer
#: reconnects): SQLite's "database is locked" and the like, PostgreSQL's lost connections (a
#: restart, a failover; ``core.pg`` opens the connection again before the next transaction).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError, psycopg.OperationalError)

#: The first migration written for PostgreSQL: it creates the whole schema there, and the ones
#: before it (SQLite's history) are marked applied without running.
PG_BASELINE = "0028_postgresql_baseline"


def is_postgres(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL database (a ``postgresql://`` or ``postgres://`` URL)."""
    return target.startswith(("postgresql://", "postgres://"))


def _yoyo_url(target: str) -> str:
    if is_postgres(target):
        return "postgresql+psycopg://" + target.split("://", 1)[1]
    return f"sqlite:///{target}"


def migrate(target: str) -> int:
    """Apply pending migrations to ``target`` (a SQLite file, created if missing, or a PostgreSQL
    URL). On PostgreSQL the migrations before ``PG_BASELINE`` are marked applied, never run: the
    baseline creates their schema. Returns the number applied. Raises yoyo / driver errors on a
    broken migration."""
    if not is_postgres(target):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    else:
        check_postgres(target)
    backend = get_backend(_yoyo_url(target))
    migrations = read_migrations(str(MIGRATIONS_DIR))
    if not is_postgres(target):  # a PostgreSQL lock's holder may be on another machine: never broken here
        _break_stale_lock(backend)
    with backend.lock():
        pending = backend.to_apply(migrations)
        if is_postgres(target):
            history = [m for m in pending if m.id < PG_BASELINE]
            if history:
                backend.mark_migrations(history)
                pending = backend.to_apply(migrations)
        if pending:
            backend.apply_migrations(pending)
            log.info("applied %d migration(s) to %s", len(pending), shown_target(target))
    return len(pending)


#: The oldest PostgreSQL server we run on (``server_version_num``): 14, for ``idle_session_timeout``,
#: which ends a frozen leader's session so that a standby takes over (``core.leader``); tests and CI
#: run Debian 12's 15.
PG_MIN_VERSION = 140000


class UnsuitableDatabase(RuntimeError):
    """The PostgreSQL server or database cannot hold our index (the message says why and what to do)."""


def check_postgres(url: str) -> None:
    """Refuse a PostgreSQL server older than ``PG_MIN_VERSION`` or a database whose collation does
    not compare bytewise: text ordering (keyset cursors ``(sort_at, uri) < (?, ?)``, ISO dates kept
    as text) must be SQLite's. Raises ``UnsuitableDatabase``; driver errors when it cannot connect."""
    from core import pg
    conn = pg.SyncConnection.open(url)
    try:
        version = int(conn.execute("SHOW server_version_num").fetchone()[0])
        name, collate = conn.execute("SELECT datname, datcollate FROM pg_database "
                                     "WHERE datname = current_database()").fetchone()
        # by behaviour, not by name: an ICU default collation keeps datcollate 'C' (PostgreSQL 15+)
        bytewise = conn.execute("SELECT 'Z' < 'a' AND 'a' > 'B' AND 'e' < 'é'").fetchone()[0]
    finally:
        conn.close()
    if version < PG_MIN_VERSION:
        raise UnsuitableDatabase(f"PostgreSQL {version // 10000} is too old: Open Music needs "
                                 f"{PG_MIN_VERSION // 10000} or later")
    if not bytewise:
        raise UnsuitableDatabase(
            f"database {name!r} has a default collation ({collate!r}) that does not order text bytewise: create "
            f"it with the C collation (createdb -l C -T template0 {name}, or CREATE DATABASE {name} "
            "LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0)")


def shown_target(target: str) -> str:
    """``target`` for logs: a URL without its password."""
    if not is_postgres(target):
        return target
    scheme, rest = target.split("://", 1)
    creds, at, host = rest.rpartition("@")
    return f"{scheme}://{creds.split(':', 1)[0]}{at}{host}" if at else target


def _break_stale_lock(backend) -> None:
    """Remove yoyo's migration lock when the process that took it is gone (killed while migrating):
    otherwise every later start would wait for it and fail with ``LockTimeout``. The lock's process
    ID is checked on this machine (``os.kill(pid, 0)``); a lock of a live process is left alone."""
    try:
        rows = backend.execute(f"SELECT pid FROM {backend.lock_table_quoted}").fetchall()
    except Exception:  # no lock table yet: a new database
        return
    for (pid,) in rows:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            log.warning("breaking the migration lock of process %s, which is gone", pid)
            backend.break_lock()
        except (PermissionError, ValueError, TypeError):
            pass  # alive (another user's) or not a PID: leave it


#: Page cache per connection, KiB (a reader pool shares this much among its connections).
CACHE_KIB = 65536


async def connect(db_path: str, readonly: bool = False, cache_kib: int = CACHE_KIB) -> aiosqlite.Connection:
    """Open a connection with the pragmas we rely on (WAL, NORMAL sync, 10 s busy timeout); to a
    PostgreSQL URL, a ``core.pg.AsyncConnection`` that answers the same calls.

    Rows come back as ``sqlite3.Row`` (``core.pg.Row``). The writer uses explicit ``BEGIN``/``COMMIT``.
    """
    if is_postgres(db_path):
        from core import pg
        return await pg.AsyncConnection.open(db_path, readonly=readonly)  # type: ignore[return-value]
    if readonly:
        conn = await aiosqlite.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    else:
        conn = await aiosqlite.connect(db_path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    await conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
    return conn


class Rows:
    """The rows of one statement run by ``ReaderPool.execute``, read like an aiosqlite cursor
    (``await fetchone()``, ``await fetchall()``, ``async for``)."""

    def __init__(self, rows: Iterable[sqlite3.Row]) -> None:
        self._rows = list(rows)
        self._next = 0

    async def fetchone(self) -> sqlite3.Row | None:
        """The next row, or None."""
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    async def fetchall(self) -> list[sqlite3.Row]:
        """The rows not fetched yet."""
        rest, self._next = self._rows[self._next:], len(self._rows)
        return rest

    def __aiter__(self) -> Rows:
        return self

    async def __anext__(self) -> sqlite3.Row:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


class ReaderPool:
    """Reader connections for the AppView's queries (``query_only``). Each statement runs on the
    connection with the fewest statements in flight, in one hop to its thread (execute and fetch
    together), so a slow query holds up one connection, not every request. With WAL, readers
    do not block each other or the writer. Use ``await ReaderPool.open(path, size)``."""

    def __init__(self, conns: Sequence[aiosqlite.Connection]) -> None:
        if not conns:
            raise ValueError("a reader pool needs at least one connection")
        self.conns = list(conns)
        self._busy = [0] * len(self.conns)
        self._turn = 0

    @classmethod
    async def open(cls, db_path: str, size: int) -> ReaderPool:
        """``size`` (at least 1) reader connections to ``db_path``, sharing ``CACHE_KIB`` of page cache."""
        size = max(1, int(size))
        cache = max(16384, CACHE_KIB // size)
        conns = []
        try:
            for _ in range(size):
                conn = await connect(db_path, cache_kib=cache, readonly=is_postgres(db_path))
                conns.append(conn)
                await conn.execute("PRAGMA query_only = ON")
        except BaseException:
            for conn in conns:
                await conn.close()
            raise
        return cls(conns)

    @property
    def size(self) -> int:
        """How many connections the pool holds."""
        return len(self.conns)

    def _pick(self) -> int:
        n = len(self.conns)
        self._turn = (self._turn + 1) % n  # ties go round-robin
        return min(((self._turn + k) % n for k in range(n)), key=self._busy.__getitem__)

    async def execute(self, sql: str, parameters: Iterable[Any] | dict[str, Any] = ()) -> Rows:
        """Run one statement on the least busy connection; its rows, read. Raises sqlite3 errors."""
        i = self._pick()
        self._busy[i] += 1
        try:
            return Rows(await self.conns[i].execute_fetchall(sql, parameters))
        finally:
            self._busy[i] -= 1

    async def close(self) -> None:
        """Close every connection."""
        await asyncio.gather(*(conn.close() for conn in self.conns), return_exceptions=True)


@contextlib.asynccontextmanager
async def write_transaction(conn: Any) -> AsyncIterator[Any]:
    """``async with write_transaction(conn): ...``: one write transaction on an async writer
    connection (aiosqlite, or ``core.pg.AsyncConnection``): ``BEGIN IMMEDIATE`` (on PostgreSQL
    ``BEGIN`` + the write advisory lock, ``core.pg``), then ``COMMIT`` when the block ends, or
    ``ROLLBACK`` and re-raise when it raises. A failed ROLLBACK (no transaction is open: BEGIN
    itself failed or was cancelled) never replaces the block's error, above all not a
    cancellation. Yields ``conn``. Callers that share ``conn`` between tasks hold their own lock
    around it (one transaction at a time per connection)."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        await conn.execute("COMMIT")  # a COMMIT that fails (busy, cancelled) is rolled back too
    except BaseException:
        with contextlib.suppress(Exception):
            await conn.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def sync_write_transaction(conn: Any) -> Iterator[Any]:
    """``with sync_write_transaction(conn): ...``: ``write_transaction`` for a ``connect_sync``
    connection (in a worker thread): ``BEGIN IMMEDIATE`` (on PostgreSQL ``BEGIN`` + the write
    advisory lock), ``COMMIT`` when the block ends, or ``ROLLBACK`` and re-raise when it raises; a
    failed ROLLBACK never replaces the block's error. Yields ``conn``."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
        raise


def connect_sync(db_path: str) -> sqlite3.Connection:
    """A plain ``sqlite3`` writer connection (autocommit; explicit ``BEGIN``/``COMMIT``) with the
    same pragmas, for code that runs a whole batch in one worker thread (the indexer).
    It may be used from one thread at a time only. To a PostgreSQL URL: a ``core.pg.SyncConnection``."""
    if is_postgres(db_path):
        from core import pg
        return pg.SyncConnection.open(db_path)  # type: ignore[return-value]
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -65536")
    return conn


def now_iso() -> str:
    """Current UTC time as an ISO 8601 string with milliseconds and ``Z`` (atproto datetime)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_datetime(value: object) -> datetime | None:
    """An atproto datetime string -> an aware ``datetime`` (no zone means UTC); None when ``value``
    is empty, not a string, or unparsable."""
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def normalize_datetime(value: str | None) -> str | None:
    """An atproto datetime string -> UTC ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (sortable as text); None if unparsable."""
    parsed = parse_datetime(value)
    if parsed is None:
        return None
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sort_at(created_at: str | None, indexed_at: str) -> str:
    """Sort key for "newest first": the record's createdAt, but never later than when we indexed it."""
    created = normalize_datetime(created_at)
    return min(created, indexed_at) if created else indexed_at
