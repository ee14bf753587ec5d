"""PostgreSQL through psycopg 3, shaped like the SQLite connections the rest of the code uses
(issue 15; the plan is ``docs/plans/postgresql.md``).

The SQL in this project is written once, for SQLite, in a portable subset; ``to_pg`` rewrites what
differs on the way to PostgreSQL (cached per statement text):

- ``?`` -> ``%s``, ``?N`` -> ``%(pN)s`` (the parameters given as a list become ``{pN: ...}``) and
  ``:name`` -> ``%(name)s`` (never inside ``'...'``, ``"..."`` or ``--`` comments,
  and never ``::`` casts), and every ``%`` doubled (psycopg's own placeholder syntax);
- ``INSERT OR IGNORE INTO`` -> ``INSERT INTO ... ON CONFLICT DO NOTHING``;
- ``strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`` -> ``iso_now()`` (created by the baseline schema);
- SQLite's planner hints: ``INDEXED BY x`` dropped, ``CROSS JOIN t a ON`` -> ``JOIN t a ON``;
- ``track_fts MATCH ?`` (FTS5) -> ``track_fts.tsv @@ fts_match_query(?)`` (migration 0030), and
  the schema names ``main.``/``temp.`` -> ``public.``/``pg_temp.``;
- a condition written as a partial index spells it on SQLite -> as the baseline spells it (``_SPELLINGS``).

The wrappers answer like ``sqlite3`` (``SyncConnection``, for the indexer's batches in one thread)
and ``aiosqlite`` (``AsyncConnection``): ``execute(sql, params)`` returns a cursor with
``fetchone``/``fetchall``/``rowcount`` and iteration; ``BEGIN IMMEDIATE`` is ``BEGIN`` plus a
transaction-scoped advisory lock (``WRITE_LOCK``), so writers still take turns as on SQLite;
``PRAGMA`` statements do nothing. Rows are ``Row``: tuples that also answer ``row["name"]`` and
``keys()``, like ``sqlite3.Row``. ``NUMERIC`` results (``SUM`` of integers) come back as ``int``
(``float`` when they have a fraction), and Python ``bool`` parameters are sent as integers, as the
schema keeps SQLite's 0/1 flags.

Connections run in autocommit mode: a statement outside ``BEGIN`` ... ``COMMIT`` commits alone, as
with ``isolation_level=None`` on SQLite.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format

#: The advisory lock key every ``BEGIN IMMEDIATE`` takes for its transaction ("om-write").
WRITE_LOCK = 0x6F6D2D7772697465
#: Errors that say the database (not the data) failed: SQLSTATE classes 08 (connection), 40
#: (serialization, deadlock), 53 (resources), 57 (operator intervention), 58 (system).
INFRASTRUCTURE_CLASSES = ("08", "40", "53", "57", "58")

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")
_NUMBERED = re.compile(r"\?([0-9]+)")
_STRFTIME_NOW = re.compile(r"strftime\(\s*'%Y-%m-%dT%H:%M:%fZ'\s*,\s*'now'\s*\)", re.IGNORECASE)
_INDEXED_BY = re.compile(r"\s+INDEXED\s+BY\s+\w+", re.IGNORECASE)
_CROSS_JOIN_ON = re.compile(r"\bCROSS\s+JOIN\s+(\w+(?:\s+(?!ON\b)\w+)?)\s+ON\b", re.IGNORECASE)
#: Conditions spelled exactly as a partial index's WHERE on each engine (so each planner uses it):
#: SQLite compares an integer with a boolean, PostgreSQL needs the cast (``indexer.standing.STALE``,
#: the baseline's ``actor_counted_stale``).
_SPELLINGS = {"counted <> (active = 1 AND hidden < 2)": "counted <> CAST((active = 1 AND hidden < 2) AS INTEGER)",
              # a JSON object of numbers as rows (``appview.charts``' trending totals): PostgreSQL's
              # json_each gives json values, which neither sort nor add as numbers
              "FROM json_each(?)": "FROM (SELECT key, CAST(value AS DOUBLE PRECISION) AS value "
                                   "FROM json_each_text(CAST(? AS json))) AS json_each"}
_FTS_MATCH = re.compile(r"\btrack_fts\s+MATCH\s+%s", re.IGNORECASE)
_SCHEMA_MAIN = re.compile(r"\bmain\.(?=\w)")
_SCHEMA_TEMP = re.compile(r"\btemp\.(?=\w)")
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)
_RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)
_BEGIN_IMMEDIATE = re.compile(r"^\s*BEGIN\s+(IMMEDIATE|EXCLUSIVE)\s*;?\s*$", re.IGNORECASE)
_PRAGMA = re.compile(r"^\s*PRAGMA\b", re.IGNORECASE)
_OPENS = re.compile(r"^\s*(BEGIN|START\s+TRANSACTION)\b", re.IGNORECASE)
_ENDS = re.compile(r"^\s*(COMMIT|END|ROLLBACK)\s*(TRANSACTION|WORK)?\s*;?\s*$", re.IGNORECASE)


class _Session:
    """Whether our code has a transaction open on a connection (by the statements it ran), so that a
    connection the server dropped (a restart, a failover, an idle timeout) is opened again before
    the next statement outside a transaction, and never inside one: a statement after a lost
    ``BEGIN`` must fail, not run on its own in autocommit. Inside one, ``ROLLBACK`` ends it quietly
    and ``COMMIT`` raises (the transaction is gone)."""

    def __init__(self) -> None:
        self.open_tx = False

    def before(self, sql: str, lost: bool) -> str:
        """What to do before ``sql`` on a connection that is ``lost`` or not: ``run`` it,
        ``reconnect`` first, ``skip`` it (a ROLLBACK of a lost transaction) or ``fail`` (a COMMIT of
        one). Updates the transaction flag."""
        ends = bool(_ENDS.match(sql))
        if lost and self.open_tx:
            if ends:
                self.open_tx = False
                return "fail" if sql.strip().upper().startswith(("COMMIT", "END")) else "skip"
            return "run"  # psycopg raises: the connection is closed
        action = "reconnect" if lost else "run"
        if _OPENS.match(sql):
            self.open_tx = True
        elif ends:
            self.open_tx = False
        return action


def _lost(conn: psycopg.Connection | psycopg.AsyncConnection) -> bool:
    return conn.closed or conn.broken


class ConnectionLost(psycopg.OperationalError):
    """A COMMIT on a connection the server dropped inside the transaction: nothing was committed."""


def _segments(sql: str) -> Iterator[tuple[bool, str]]:
    """``sql`` cut into (is code, text): string literals, quoted identifiers and ``--`` comments
    are not code."""
    i, n, start = 0, len(sql), 0
    while i < n:
        c = sql[i]
        if c in "'\"":
            if i > start:
                yield True, sql[start:i]
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # '' or "" escapes
                        j += 2
                        continue
                    break
                j += 1
            yield False, sql[i:j + 1]
            i = start = j + 1
        elif c == "-" and sql.startswith("--", i):
            if i > start:
                yield True, sql[start:i]
            j = sql.find("\n", i)
            j = n if j < 0 else j
            yield False, sql[i:j]
            i = start = j
        else:
            i += 1
    if start < n:
        yield True, sql[start:]


@lru_cache(maxsize=4096)
def to_pg(sql: str) -> str:
    """``sql`` (written for SQLite) as PostgreSQL runs it (module docstring). Pure, cached."""
    sql = _STRFTIME_NOW.sub("iso_now()", sql)
    for sqlite_text, pg_text in _SPELLINGS.items():
        sql = sql.replace(sqlite_text, pg_text)
    ignore = bool(_OR_IGNORE.match(sql))
    if ignore:
        sql = _OR_IGNORE.sub("INSERT INTO", sql, count=1)
    parts = []
    for code, text in _segments(sql):
        text = text.replace("%", "%%")
        if code:
            text = _INDEXED_BY.sub("", text)
            text = _CROSS_JOIN_ON.sub(r"JOIN \1 ON", text)
            text = _NAMED.sub(r"%(\1)s", _NUMBERED.sub(r"%(p\1)s", text).replace("?", "%s"))
            text = _FTS_MATCH.sub("track_fts.tsv @@ fts_match_query(%s)", text)
            text = _SCHEMA_TEMP.sub("pg_temp.", _SCHEMA_MAIN.sub("public.", text))
        parts.append(text)
    out = "".join(parts).rstrip().rstrip(";")
    if ignore:
        found = [m for m in _RETURNING.finditer(out)]
        at = found[-1].start() if found else len(out)
        out = f"{out[:at].rstrip()} ON CONFLICT DO NOTHING{(' ' + out[at:]) if found else ''}"
    return out


class Row(tuple):
    """A result row: a tuple that also answers ``row["column"]`` and ``keys()`` (``sqlite3.Row``)."""

    _index: dict[str, int] = {}
    _names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._index[key])
            except KeyError:
                raise IndexError(f"no such column: {key}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._names)


@lru_cache(maxsize=1024)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    index = {}
    for i, name in enumerate(names):
        index.setdefault(name, i)
    return type("Row", (Row,), {"_index": index, "_names": names})


def _row_factory(cursor: Any) -> Any:
    desc = cursor.description
    if desc is None:
        return tuple
    cls = _row_class(tuple(d.name for d in desc))
    return lambda values: tuple.__new__(cls, values)


class _NumericLoader(Loader):
    """NUMERIC -> int when whole, else float (``SUM`` over BIGINT is NUMERIC on PostgreSQL)."""

    def load(self, data: Any) -> int | float:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


class _BoolDumper(Dumper):
    """Python bool -> a BIGINT 0 or 1 (the schema keeps SQLite's integer flags)."""

    format = Format.TEXT
    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


def configure(conn: psycopg.Connection | psycopg.AsyncConnection) -> None:
    """Our adapters and row factory on a fresh connection."""
    conn.adapters.register_loader("numeric", _NumericLoader)
    conn.adapters.register_dumper(bool, _BoolDumper)
    conn.row_factory = _row_factory


@lru_cache(maxsize=4096)
def _is_numbered(sql: str) -> bool:
    """Whether ``sql`` uses SQLite's numbered parameters (``?1``, ``?2``: ``to_pg`` names them ``p1``...)."""
    return any(code and _NUMBERED.search(text) for code, text in _segments(sql))


def _params(params: Any, sql: str = "") -> Any:
    if params is None:
        return ()
    if not isinstance(params, dict | Sequence):
        params = tuple(params)
    if sql and not isinstance(params, dict) and _is_numbered(sql):
        return {f"p{i}": value for i, value in enumerate(params, 1)}
    return params


class _EmptyCursor:
    """What a ``PRAGMA`` answers on PostgreSQL: nothing."""

    rowcount = -1
    lastrowid = None
    description = None

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())


class SyncCursor:
    """A psycopg cursor answering like a ``sqlite3`` cursor (the rewrite on ``execute``)."""

    def __init__(self, cur: psycopg.Cursor) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Any = None) -> SyncCursor:
        """Run one statement (``to_pg``). Raises psycopg errors."""
        self._cur.execute(to_pg(sql), _params(params, sql))
        return self

    def executemany(self, sql: str, seq: Iterable[Any]) -> SyncCursor:
        """Run one statement for each parameter set."""
        self._cur.executemany(to_pg(sql), [_params(p) for p in seq])
        return self

    def _arrived(self) -> psycopg.Cursor:
        """The psycopg cursor, with its result received: in pipeline mode (``SyncConnection.pipeline``)
        a statement's result (rows, ``rowcount``, ``description``) arrives only when asked for."""
        if self._cur.connection._pipeline is not None:
            self._cur._fetch_pipeline()  # psycopg 3's own step before a fetch (flush, wait for this result)
        return self._cur

    def fetchone(self) -> Any:
        cur = self._arrived()
        return cur.fetchone() if cur.description is not None else None

    def fetchall(self) -> list[Any]:
        cur = self._arrived()
        return cur.fetchall() if cur.description is not None else []

    def fetchmany(self, size: int = 1) -> list[Any]:
        cur = self._arrived()
        return cur.fetchmany(size) if cur.description is not None else []

    @property
    def rowcount(self) -> int:
        return self._arrived().rowcount

    @property
    def description(self) -> Any:
        return self._arrived().description

    @property
    def row_factory(self) -> Any:
        return None

    @row_factory.setter
    def row_factory(self, _value: Any) -> None:
        """Ignored: rows answer by name already (code written for ``sqlite3.Row`` sets this)."""

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())

    def close(self) -> None:
        self._cur.close()


class SyncConnection:
    """A psycopg connection answering like a ``sqlite3`` connection opened with
    ``isolation_level=None`` (module docstring). Use ``SyncConnection.open(url)``."""

    def __init__(self, conn: psycopg.Connection, url: str = "") -> None:
        self.raw = conn
        self.url = url
        self._session = _Session()

    @staticmethod
    def _connect(url: str) -> psycopg.Connection:
        conn = psycopg.connect(url, autocommit=True)
        configure(conn)
        return conn

    @classmethod
    def open(cls, url: str) -> SyncConnection:
        """Connect to ``url`` (``postgresql://...``) in autocommit mode. Raises ``psycopg.OperationalError``."""
        return cls(cls._connect(url), url)

    def cursor(self) -> SyncCursor:
        return SyncCursor(self.raw.cursor())

    def execute(self, sql: str, params: Any = None) -> SyncCursor | _EmptyCursor:
        """One statement: ``BEGIN IMMEDIATE`` takes the write lock, ``PRAGMA`` does nothing. A
        connection the server dropped is opened again before a statement outside a transaction
        (``_Session``); raises psycopg errors (``ConnectionLost`` for a COMMIT of a lost transaction)."""
        action = self._session.before(sql, _lost(self.raw))
        if action == "skip":
            return _EmptyCursor()
        if action == "fail":
            raise ConnectionLost("the connection to PostgreSQL was lost inside the transaction: nothing committed")
        if action == "reconnect" and self.url:
            with contextlib.suppress(Exception):
                self.raw.close()
            self.raw = self._connect(self.url)
        if _BEGIN_IMMEDIATE.match(sql):
            self.raw.execute("BEGIN")
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            return _EmptyCursor()
        if _PRAGMA.match(sql):
            return _EmptyCursor()
        return self.cursor().execute(sql, params)

    def executemany(self, sql: str, seq: Iterable[Any]) -> SyncCursor:
        if self._session.before(sql, _lost(self.raw)) == "reconnect" and self.url:
            self.raw = self._connect(self.url)
        return self.cursor().executemany(sql, seq)

    def pipeline(self) -> psycopg.Pipeline:
        """psycopg's pipeline mode, as a context manager: statements are sent without waiting for
        their results, which arrive when the code reads them (``fetchone``, ``rowcount``: one round
        trip for everything sent before); leaving it waits for all. An error makes every later
        statement of the pipeline fail (``psycopg.errors.PipelineAborted``) and is raised when a
        result is read or on leaving; inside a transaction, roll it back after leaving."""
        return self.raw.pipeline()

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def commit(self) -> None:
        if self.in_transaction:
            self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()


class AsyncCursor:
    """A psycopg async cursor answering like an ``aiosqlite`` cursor."""

    def __init__(self, cur: psycopg.AsyncCursor | None) -> None:
        self._cur = cur

    async def fetchone(self) -> Any:
        if self._cur is None or self._cur.description is None:
            return None
        return await self._cur.fetchone()

    async def fetchall(self) -> list[Any]:
        if self._cur is None or self._cur.description is None:
            return []
        return await self._cur.fetchall()

    async def fetchmany(self, size: int = 1) -> list[Any]:
        if self._cur is None or self._cur.description is None:
            return []
        return await self._cur.fetchmany(size)

    @property
    def rowcount(self) -> int:
        return -1 if self._cur is None else self._cur.rowcount

    @property
    def description(self) -> Any:
        return None if self._cur is None else self._cur.description

    def __aiter__(self) -> AsyncCursor:
        return self

    async def __anext__(self) -> Any:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row

    async def close(self) -> None:
        if self._cur is not None:
            await self._cur.close()


class AsyncConnection:
    """A psycopg async connection answering like an ``aiosqlite`` connection opened with
    ``isolation_level=None``. Use ``await AsyncConnection.open(url)``. Statements on one
    connection run one at a time (psycopg serializes them)."""

    def __init__(self, conn: psycopg.AsyncConnection, url: str = "", readonly: bool = False) -> None:
        self.raw = conn
        self.url = url
        self.readonly = readonly
        self._session = _Session()
        self.row_factory: Any = None  # set by code written for aiosqlite; rows answer by name anyway

    @staticmethod
    async def _connect(url: str, readonly: bool) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        configure(conn)
        if readonly:
            await conn.execute("SET default_transaction_read_only = on")
        return conn

    @classmethod
    async def open(cls, url: str, readonly: bool = False) -> AsyncConnection:
        """Connect to ``url`` in autocommit mode (``readonly``: every transaction read-only). Raises
        ``psycopg.OperationalError``."""
        return cls(await cls._connect(url, readonly), url, readonly)

    async def execute(self, sql: str, params: Any = None) -> AsyncCursor:
        """One statement: ``BEGIN IMMEDIATE`` takes the write lock, ``PRAGMA`` does nothing. A
        connection the server dropped is opened again before a statement outside a transaction
        (``_Session``). Raises psycopg errors (``ConnectionLost`` for a COMMIT of a lost transaction)."""
        action = self._session.before(sql, _lost(self.raw))
        if action == "skip":
            return AsyncCursor(None)
        if action == "fail":
            raise ConnectionLost("the connection to PostgreSQL was lost inside the transaction: nothing committed")
        if action == "reconnect" and self.url:
            with contextlib.suppress(Exception):
                await self.raw.close()
            self.raw = await self._connect(self.url, self.readonly)
        if _BEGIN_IMMEDIATE.match(sql):
            await self.raw.execute("BEGIN")
            await self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            return AsyncCursor(None)
        if _PRAGMA.match(sql):
            return AsyncCursor(None)
        cur = self.raw.cursor()
        await cur.execute(to_pg(sql), _params(params, sql))
        return AsyncCursor(cur)

    async def execute_fetchall(self, sql: str, params: Any = None) -> list[Any]:
        """Run one statement and return all its rows."""
        cur = await self.execute(sql, params)
        return await cur.fetchall()

    async def executemany(self, sql: str, seq: Iterable[Any]) -> AsyncCursor:
        if self._session.before(sql, _lost(self.raw)) == "reconnect" and self.url:
            self.raw = await self._connect(self.url, self.readonly)
        cur = self.raw.cursor()
        await cur.executemany(to_pg(sql), [_params(p) for p in seq])
        return AsyncCursor(cur)

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    async def commit(self) -> None:
        if self.in_transaction:
            await self.raw.execute("COMMIT")

    async def rollback(self) -> None:
        if self.in_transaction:
            await self.raw.execute("ROLLBACK")

    async def close(self) -> None:
        await self.raw.close()


def is_infrastructure_error(exc: BaseException) -> bool:
    """Whether ``exc`` says PostgreSQL itself failed (its SQLSTATE class is one of
    ``INFRASTRUCTURE_CLASSES``, or it has none and the connection is gone), not the data: then the
    work must stop and resume, never skip the record. By SQLSTATE, not by Python class: psycopg
    raises ``OperationalError`` for some errors of the data too (54000, an index row too large)."""
    state = getattr(exc, "sqlstate", None)
    if state:
        return state[:2] in INFRASTRUCTURE_CLASSES
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
