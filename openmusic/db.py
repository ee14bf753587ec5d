"""The AppView database: SQLite through aiosqlite, schema migrations through yoyo-migrations
(``openmusic/migrations/``). One writer connection (the indexer) and separate reader connections
(the AppView); WAL lets them run concurrently."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
from yoyo import get_backend, read_migrations

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
log = logging.getLogger("openmusic.db")


def migrate(db_path: str) -> int:
    """Apply pending migrations to the SQLite file ``db_path`` (created if missing).

    Returns the number applied. Raises yoyo / sqlite3 errors on a broken migration.
    """
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    backend = get_backend(f"sqlite:///{db_path}")
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with backend.lock():
        pending = backend.to_apply(migrations)
        if pending:
            backend.apply_migrations(pending)
            log.info("applied %d migration(s) to %s", len(pending), db_path)
    return len(pending)


async def connect(db_path: str, readonly: bool = False) -> aiosqlite.Connection:
    """Open a connection with the pragmas we rely on (WAL, NORMAL sync, 10 s busy timeout).

    Rows come back as ``sqlite3.Row``. The writer uses explicit ``BEGIN``/``COMMIT``.
    """
    if readonly:
        conn = await aiosqlite.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    else:
        conn = await aiosqlite.connect(db_path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    await conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.execute("PRAGMA cache_size = -65536")
    return conn


def connect_sync(db_path: str) -> sqlite3.Connection:
    """A plain ``sqlite3`` writer connection (autocommit; explicit ``BEGIN``/``COMMIT``) with the
    same pragmas, for code that runs a whole batch in one worker thread (the indexer).
    It may be used from one thread at a time only."""
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -65536")
    return conn


def now_iso() -> str:
    """Current UTC time as an ISO 8601 string with milliseconds and ``Z`` (atproto datetime)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def normalize_datetime(value: str | None) -> str | None:
    """An atproto datetime string -> UTC ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (sortable as text); None if unparsable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sort_at(created_at: str | None, indexed_at: str) -> str:
    """Sort key for "newest first": the record's createdAt, but never later than when we indexed it."""
    created = normalize_datetime(created_at)
    return min(created, indexed_at) if created else indexed_at
