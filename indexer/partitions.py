"""The monthly partitions of ``play`` on PostgreSQL (issue 15, "Data at scale"; the layout is
migration ``0033_play_partitions``). On SQLite every call here does nothing.

``play`` is ``PARTITION BY RANGE (sort_at)``: ``play_YYYY_MM`` holds ``sort_at`` from ``'YYYY-MM'``
(inclusive) to the next month (exclusive), text bounds compared bytewise; ``play_default`` holds
the rest (plays older than the first month, and months not created yet). A play whose month has no
partition still lands (in ``play_default``); it only costs pruning. ``run_periodically`` (the
indexing process, once a day) keeps ``AHEAD_MONTHS`` months ahead, so new plays always find theirs.

Creating a month that ``play_default`` already holds rows of: PostgreSQL refuses ``CREATE TABLE ...
PARTITION OF`` (and ``ATTACH PARTITION``) while the default partition holds a row the new partition
would take ("updated partition constraint for default partition would be violated"). So a month
is built beside the table and attached: a standalone table shaped like ``play``, with a ``CHECK``
of its range (so that the attach need not scan it), the month's rows moved into it from
``play_default`` (``DELETE ... RETURNING`` into ``INSERT``), then ``ALTER TABLE play ATTACH
PARTITION`` (which scans ``play_default`` once to prove it holds none of the month any more, and
builds the parent's indexes on the new table), and the ``CHECK`` dropped. All of it runs in the
caller's write transaction, so the indexer (the only writer of ``play``) cannot put a row of that
month into ``play_default`` meanwhile, and a failure leaves nothing half done. Locks: ``SHARE UPDATE
EXCLUSIVE`` on ``play`` (reads and writes go on) and ``ACCESS EXCLUSIVE`` on ``play_default`` for the
rest of the transaction; ``LOCK_TIMEOUT`` bounds the wait for a long reader, after which the
transaction fails and the next round tries again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from datetime import UTC, datetime
from typing import Any

from core import periodic
from core.db import connect_sync, is_postgres

log = logging.getLogger("indexer.partitions")

#: The partitioned table and its default partition (migration 0033).
TABLE = "play"
DEFAULT_PARTITION = "play_default"
#: Months kept ahead of the current one (the migration creates as many).
AHEAD_MONTHS = 3
#: Seconds between rounds of ``run_periodically``, and after a failed round.
EVERY_S = 86_400.0
RETRY_S = 3_600.0
#: The most months one ``ensure_months`` call creates (each is a table and 8 indexes).
MAX_NEW_MONTHS = 120
#: How long creating a month waits for a lock (a long query on ``play_default``) before giving up.
LOCK_TIMEOUT = "5s"

_MONTH = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
_BOUND = re.compile(r"^FOR VALUES FROM \('([0-9]{4}-[0-9]{2})'\) TO \('([0-9]{4}-[0-9]{2})'\)$")


def _check(month: str) -> str:
    if not isinstance(month, str) or not _MONTH.match(month):
        raise ValueError(f"{month!r} is not a month (YYYY-MM, 0000-01 .. 9999-12)")
    return month


def add_months(month: str, n: int) -> str:
    """``'YYYY-MM'`` moved by ``n`` months (``n`` may be negative). Raises ``ValueError`` on a bad
    month or a result outside years 0000-9999."""
    year, mon = divmod(int(_check(month)[:4]) * 12 + int(month[5:]) - 1 + n, 12)
    if not 0 <= year <= 9999:
        raise ValueError(f"{month} + {n} months is out of range")
    return f"{year:04d}-{mon + 1:02d}"


def current_month(now: datetime | None = None) -> str:
    """The UTC month of ``now`` (default: this instant), ``'YYYY-MM'``."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m")


def partition_name(month: str) -> str:
    """The partition of ``month``: ``'2026-11'`` -> ``'play_2026_11'``."""
    return f"{TABLE}_{_check(month).replace('-', '_')}"


def is_postgresql(conn: Any) -> bool:
    """Whether ``conn`` is a PostgreSQL connection (``core.pg.SyncConnection`` or a psycopg one),
    not a ``sqlite3`` one."""
    return not isinstance(conn, sqlite3.Connection)


def months(conn: Any) -> list[str]:
    """The months that have a partition of ``play``, oldest first (``['2026-09', '2026-10', ...]``);
    ``[]`` on SQLite. ``conn`` is a sync connection (``core.db.connect_sync``)."""
    if not is_postgresql(conn):
        return []
    rows = conn.execute(
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        f"WHERE i.inhparent = '{TABLE}'::regclass").fetchall()
    found = []
    for (bound,) in rows:
        m = _BOUND.match(bound or "")
        if m and _MONTH.match(m.group(1)) and add_months(m.group(1), 1) == m.group(2):
            found.append(m.group(1))
    return sorted(found)


def ensure_months(conn: Any, through: str, since: str | None = None) -> list[str]:
    """Create the partition of every month from ``since`` to ``through`` (``'YYYY-MM'``, both
    included) that has none, moving the rows ``play_default`` holds of it; returns the months
    created, oldest first (``[]`` on SQLite, or when all exist).

    ``since`` defaults to the oldest month that has a partition (so gaps are filled and the months
    stay contiguous), or the current UTC month when none has. Call it inside a write transaction on
    the indexer's connection (``await indexer.transact(ensure_months, through)``, whose ``BEGIN
    IMMEDIATE`` takes the write lock), never in autocommit. Raises ``ValueError`` on a bad month or
    a span of more than ``MAX_NEW_MONTHS`` months to create, and
    psycopg's ``LockNotAvailable`` when a lock is not granted within ``LOCK_TIMEOUT`` (the caller's
    transaction is then rolled back: nothing was created).
    """
    _check(through)
    if since is not None:
        _check(since)
    if not is_postgresql(conn):
        return []
    have = set(months(conn))
    month = since or (min(have) if have else current_month())
    missing = []
    while month <= through:
        if month not in have:
            missing.append(month)
        month = add_months(month, 1)
    if len(missing) > MAX_NEW_MONTHS:
        raise ValueError(f"{len(missing)} months to create ({missing[0]} .. {missing[-1]}): more than "
                         f"{MAX_NEW_MONTHS} at once")
    created: list[str] = []
    if missing:
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    for month in missing:
        _create(conn, month)
        created.append(month)
    if created:
        log.info("created partitions of %s for %s", TABLE, ", ".join(created))
    return created


def _create(conn: Any, month: str) -> None:
    """Build ``month``'s partition beside ``play``, move its rows out of the default, attach it."""
    name, upto = partition_name(month), add_months(month, 1)
    within = f"sort_at >= '{month}' AND sort_at < '{upto}'"
    conn.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)")
    conn.execute(f"ALTER TABLE {name} ADD CONSTRAINT {name}_range CHECK ({within})")
    conn.execute(f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE {within} RETURNING *) "
                 f"INSERT INTO {name} SELECT * FROM moved")
    conn.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ('{month}') TO ('{upto}')")
    conn.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_range")


def analyze(target: str) -> bool:
    """``ANALYZE play`` on its own connection to ``target`` (a PostgreSQL URL; a SQLite path does
    nothing and gives False). Autovacuum analyzes each partition as it changes but never the
    partitioned table itself, whose statistics the planner uses for joins and groupings over all
    months; this refreshes both (it samples about 30,000 rows per partition). True when it ran."""
    if not is_postgres(target):
        return False
    conn = connect_sync(target)
    try:
        conn.execute(f"ANALYZE {TABLE}")
    finally:
        conn.close()
    return True


async def run_periodically(indexer: Any, every: float = EVERY_S, ahead: int = AHEAD_MONTHS) -> None:
    """Until cancelled: keep ``ahead`` months of partitions after the current one
    (``ensure_months`` through ``indexer.transact``, so it takes turns with the batches), then
    ``ANALYZE play`` on a connection of its own (``analyze``, in a thread: the batches go on); now
    and every ``every`` seconds, or ``RETRY_S`` after a failure, which is logged, not raised. On
    SQLite it returns at once. ``indexer`` is an ``indexer.core.Indexer`` (``db_path``,
    ``transact``)."""
    if not is_postgres(indexer.db_path):
        return

    async def work() -> None:
        created = await indexer.transact(ensure_months, add_months(current_month(), ahead))
        await asyncio.to_thread(analyze, indexer.db_path)
        log.info("partitions of %s: created %s; analyzed", TABLE, ", ".join(created) or "none")
    await periodic.repeat(f"partition maintenance of {TABLE}", work, lambda _: every, min(every, RETRY_S), log)
