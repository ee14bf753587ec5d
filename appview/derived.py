"""Derived data the leader computes once and every replica reads (issue 15: many AppView replicas).

A blob (``derived_blob``, migration 0037) is stored in parts of at most ``PART_BYTES`` under a name
and a stamp, and stamped in ``derived_state`` (migration 0036: name, UTC day, ``computed_at`` in
epoch seconds, the computing ``seconds``) in the same write transaction. A reader looks at the
stamp first (one primary-key look-up), then reads the parts of that stamp only: a blob replaced
while it is read comes back incomplete (``None``), never mixed. The recommendation model
(``appview.recommend.keep_model``) is the first user; ``appview.charts`` keeps its totals in rows
and stamps them here too (``put_stamp``, ``stamp_of``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core import db

#: The largest part of a blob, in bytes (one row of ``derived_blob``).
PART_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Stamp:
    """What ``derived_state`` says of a derived value: ``day`` (UTC, ISO), ``computed_at`` (epoch
    seconds when computing began), ``seconds`` (how long computing took)."""

    day: str
    computed_at: float
    seconds: float


def write_blob(database: str, name: str, data: bytes, stamp: Stamp,
               fence: Callable[[Any], None] | None = None) -> int:
    """Replace the blob ``name`` with ``data`` and stamp it, in one write transaction on a
    connection of its own (blocking: call it in a worker thread; the write lock is held only while
    the parts are written). ``fence(conn)`` runs just before COMMIT (the leader's
    ``core.leader.Leadership.commit_fence``: a deposed leader's write raises ``LeadershipLost``
    and is rolled back). Returns the number of parts. Raises the database's errors."""
    parts = [data[i:i + PART_BYTES] for i in range(0, len(data), PART_BYTES)] or [b""]
    conn = db.connect_sync(database)
    try:
        with db.sync_write_transaction(conn):
            conn.execute("DELETE FROM derived_blob WHERE name = ?", (name,))
            for seq, part in enumerate(parts):
                conn.execute("INSERT INTO derived_blob (name, part, stamp, data) VALUES (?, ?, ?, ?)",
                             (name, seq, stamp.computed_at, part))
            put_stamp(conn, name, stamp)
            if fence is not None:
                fence(conn)
    finally:
        conn.close()
    return len(parts)


def put_stamp(conn: Any, name: str, stamp: Stamp) -> None:
    """Stamp ``name`` in ``derived_state`` on the sync connection ``conn``, inside the caller's
    write transaction (with the data it stamps)."""
    conn.execute("INSERT INTO derived_state (name, day, computed_at, seconds) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT (name) DO UPDATE SET day = excluded.day, computed_at = excluded.computed_at, "
                 "seconds = excluded.seconds", (name, stamp.day, stamp.computed_at, stamp.seconds))


async def stamp_of(conn: Any, name: str) -> Stamp | None:
    """The ``derived_state`` stamp of ``name`` read through ``conn`` (an async connection), or None."""
    cur = await conn.execute("SELECT day, computed_at, seconds FROM derived_state WHERE name = ?", (name,))
    row = await cur.fetchone()
    return Stamp(row[0], float(row[1]), float(row[2])) if row else None


async def read_blob(conn: Any, name: str, stamp: Stamp) -> bytes | None:
    """The blob ``name`` as stored with ``stamp`` (``stamp_of``), read through ``conn``; None when
    it was replaced or removed meanwhile (its parts are gone or incomplete)."""
    cur = await conn.execute("SELECT part, data FROM derived_blob WHERE name = ? AND stamp = ? ORDER BY part",
                             (name, stamp.computed_at))
    rows = await cur.fetchall()
    if not rows or [r[0] for r in rows] != list(range(len(rows))):
        return None
    return b"".join(bytes(r[1]) for r in rows)
