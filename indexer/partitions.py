"""The monthly partitions of ``play`` on PostgreSQL (issue 15, "Data at scale"; the layout is
migrations ``0033_play_partitions`` and ``0038_play_bounds``). On SQLite every call here does nothing.

``play`` is ``PARTITION BY RANGE (sort_at)``: ``play_YYYY_MM`` holds ``sort_at`` from ``'YYYY-MM'``
(inclusive) to the next month (exclusive), text bounds compared bytewise; the months are contiguous,
and two bounded partitions hold the rest: ``play_before`` everything before the first month (plays
a client dated long ago), ``play_after`` everything from the month after the last (empty while the
months are kept ahead). No ``DEFAULT`` partition, so PostgreSQL reads the months in order (a
listener's newest plays stop at the newest month that has enough). ``run_periodically`` (the
indexing process, once a day) keeps ``AHEAD_MONTHS`` months ahead, so new plays always find theirs.

Creating a month takes it from the bounded partition next to it (``play_after`` for a month after
the last, ``play_before`` for one before the first), whose bounds PostgreSQL cannot change in place:
that partition is detached, the month created as a partition of ``play``, the detached partition's
rows of that month moved into it (``DELETE ... RETURNING`` into ``INSERT INTO play``), and the
partition attached again with its new bound (a ``CHECK`` of that bound added first, so the attach
need not scan it, and dropped after). All of it runs in the caller's write transaction, so the
indexer (the only writer of ``play``) cannot write meanwhile, and a failure leaves nothing half
done. Locks: detaching takes ``ACCESS EXCLUSIVE`` on ``play`` until the commit, so reads of
``play`` wait for the few milliseconds this takes, once a month; ``LOCK_TIMEOUT`` bounds the wait
for a long reader (the recommendation model's read), after which the transaction fails and the next
round (``RETRY_S``) tries again.
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

#: The partitioned table and its bounded partitions before the first and after the last month (0038).
TABLE = "play"
BEFORE_PARTITION = "play_before"
AFTER_PARTITION = "play_after"
#: Months kept ahead of the current one (the migration creates as many).
AHEAD_MONTHS = 3
#: Seconds between rounds of ``run_periodically``, and after a failed round.
EVERY_S = 86_400.0
RETRY_S = 3_600.0
#: The most months one ``ensure_months`` call creates (each is a table and 8 indexes).
MAX_NEW_MONTHS = 120
#: How long creating a month waits for a lock (a long query on ``play``) before giving up.
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
    included) that has none, moving the rows ``play_before`` or ``play_after`` holds of it; returns
    the months created, oldest first (``[]`` on SQLite, or when all exist).

    ``since`` defaults to the oldest month that has a partition, or the current UTC month when none
    has. The months stay contiguous: the months between those asked for and those that exist are
    created too (``since='2020-01'`` creates every month from January 2020 to the first one). Call it inside a write transaction on
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
    if have:  # the months stay contiguous: whatever lies between the new ones and the old is created too
        month, through = min(month, min(have)), max(through, max(have))
    missing = []
    while month <= through:
        if month not in have:
            missing.append(month)
        month = add_months(month, 1)
    if len(missing) > MAX_NEW_MONTHS:
        raise ValueError(f"{len(missing)} months to create ({missing[0]} .. {missing[-1]}): more than "
                         f"{MAX_NEW_MONTHS} at once")
    if missing:
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    first, last = (min(have), max(have)) if have else (None, None)
    for month in sorted((m for m in missing if first is not None and m < first), reverse=True):
        _split(conn, month, BEFORE_PARTITION)  # from the newest down: each one just before the first
    for month in missing:
        if first is None or first < month < last:  # a gap (made by hand): no row can be of it
            upto = add_months(month, 1)
            conn.execute(f"CREATE TABLE {partition_name(month)} PARTITION OF {TABLE} "
                         f"FOR VALUES FROM ('{month}') TO ('{upto}')")
        elif month > last:
            _split(conn, month, AFTER_PARTITION)  # from the oldest up: each one just after the last
    if missing:
        log.info("created partitions of %s for %s", TABLE, ", ".join(missing))
    return missing


def _split(conn: Any, month: str, holder: str) -> None:
    """Create ``month``'s partition out of ``holder`` (``play_before``, whose upper bound is the
    month after ``month``; or ``play_after``, whose lower bound is ``month``): detach it, create
    the month, move the month's rows over, attach it again with its new bound (module docstring)."""
    name, upto = partition_name(month), add_months(month, 1)
    if holder == AFTER_PARTITION:
        bound, rest = f"FROM ('{upto}') TO (MAXVALUE)", f"sort_at >= '{upto}'"
    else:
        bound, rest = f"FROM (MINVALUE) TO ('{month}')", f"sort_at < '{month}'"
    conn.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {holder}")
    conn.execute(f"CREATE TABLE {name} PARTITION OF {TABLE} FOR VALUES FROM ('{month}') TO ('{upto}')")
    conn.execute(f"WITH moved AS (DELETE FROM {holder} WHERE sort_at >= '{month}' AND sort_at < '{upto}' "
                 f"RETURNING *) INSERT INTO {TABLE} SELECT * FROM moved")
    conn.execute(f"ALTER TABLE {holder} ADD CONSTRAINT {holder}_range CHECK ({rest})")
    conn.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {holder} FOR VALUES {bound}")
    conn.execute(f"ALTER TABLE {holder} DROP CONSTRAINT {holder}_range")


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
