"""Analytics rollups (``fm.openmusic.analytics.*``), changed in the same transaction as the plays
they count, like ``indexer.stats``: every call that counts or uncounts a play in ``track_stats``
does the same here, so the rollups count the plays of the accounts in standing (``indexer.standing``:
active, not taken down by a label), exactly those whose ``actor.counted`` is 1. A listener who is
suspended or taken down later is taken out by ``stats.refresh_account`` (``count_account`` here:
its plays summed per day and second in one pass and subtracted, about 25 ms per 1,000 plays of that
listener, paid once per change of standing, while the queries stay as fast as they were), and put
back the same way.

Tables (migration 0011):

- ``track_day`` (track, UTC day of the play's ``sort_at``): ``plays``, ``paid_streams``,
  ``free_streams`` (as ``indexer.streams`` decided), ``listened_ms`` (the plays' ``heard_ms``,
  ms), ``segmented`` (plays that list segments: the retention curve's denominator).
- ``track_day_listener`` (track, day, listener, country or ''): ``plays``, ``streams``,
  ``listened_ms``. Unique listeners are exact for any range: ``COUNT(DISTINCT listener)`` over its
  days. ``listener`` is the listener's number in ``analytics_listener`` (DID -> a small integer,
  given on first sight and kept), which makes that count about twice as fast as on DIDs.
- ``track_second`` (track, second): a per-second histogram of the plays' segments kept as a
  difference array, so that a play costs a few rows however long it is: ``heard`` and
  ``replayed`` are the change, from the second before, in the number of plays that heard the
  second (any part of it) once or more / twice or more (a passage heard again after seeking
  back); ``stops`` counts the segments (merged) whose last second heard it is. Seconds at or past
  ``MAX_SECOND`` (no track lasts longer) are dropped; readers cap at the track's own duration.

A play's day, segments and replays never depend on its track, so only the decisions
(``streams.track_appeared``, ``streams.mark_paid``) move rollups after the insert. Day rows that
fall back to zero plays are deleted; ``track_second`` rows that fall back to all zeros stay (at most
``MAX_SECOND`` per track) and read as no row. So the tables equal a recount (``check``, ``rebuild``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from indexer import standing

#: Seconds are kept below this: the track lexicon's longest duration (86,400,000 ms = 24 h).
MAX_SECOND = 86_400
#: The plays the rollups count: those of accounts counted in the aggregates (``actor.counted``).
_COUNTED = standing.COUNTED
#: The rollup tables and their columns: key columns first, then counters.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "track_day": (("track_uri", "day"), ("plays", "paid_streams", "free_streams", "listened_ms", "segmented")),
    "track_day_listener": (("track_uri", "day", "listener", "country"), ("plays", "streams", "listened_ms")),
    "track_second": (("track_uri", "second"), ("heard", "replayed", "stops")),
}


def replayed_ms(segments: Iterable[dict] | None) -> list[list[int]] | None:
    """A play record's raw ``segments`` [{startMs, endMs}] -> the parts heard twice or more (two
    segments overlap: the listener sought back), as sorted, disjoint [start, end) pairs in ms, or
    None. Segments that only touch (a pause) do not overlap."""
    events: list[tuple[int, int]] = []
    for seg in segments or []:
        start, end = int(seg["startMs"]), int(seg["endMs"])
        if end > start:
            events += [(start, 1), (end, -1)]
    events.sort()  # at one position ends (-1) come before starts (+1)
    out: list[list[int]] = []
    depth, opened = 0, 0
    for pos, step in events:
        before, depth = depth, depth + step
        if before < 2 <= depth:
            opened = pos
        elif depth < 2 <= before and pos > opened:
            if out and out[-1][1] == opened:
                out[-1][1] = pos
            else:
                out.append([opened, pos])
    return out or None


def second_ranges(intervals: Iterable[Iterable[int]] | None) -> list[list[int]]:
    """ms intervals [start, end) -> the seconds they touch as merged [first, after) ranges, below
    ``MAX_SECOND`` (a second counts once however many intervals touch it)."""
    out: list[list[int]] = []
    for start, end in sorted((int(a), int(b)) for a, b in intervals or []):
        if end <= start or start // 1000 >= MAX_SECOND:
            continue
        first, after = start // 1000, min(-(-end // 1000), MAX_SECOND)
        if out and first <= out[-1][1]:
            out[-1][1] = max(out[-1][1], after)
        else:
            out.append([first, after])
    return out


def histogram(segments: list[list[int]] | None, replayed: list[list[int]] | None) -> dict[int, list[int]]:
    """One play's rows of ``track_second``: second -> [heard, replayed, stops] changes, from its
    merged ``segments`` and ``replayed`` parts (ms). Zero rows left out."""
    rows: dict[int, list[int]] = {}

    def bump(second: int, col: int, n: int) -> None:
        if second < MAX_SECOND:
            rows.setdefault(second, [0, 0, 0])[col] += n
    for col, intervals in ((0, segments), (1, replayed)):
        for first, after in second_ranges(intervals):
            bump(first, col, 1)
            bump(after, col, -1)
    for start, end in segments or []:
        if end > start:
            bump((end - 1) // 1000, 2, 1)
    return {s: v for s, v in rows.items() if any(v)}


def _sql(table: str) -> tuple[str, str]:
    """(upsert adding to the counters, delete of the row when every counter is 0) for ``table``."""
    keys, cols = TABLES[table]
    upsert = (f"INSERT INTO {table} ({', '.join(keys + cols)}) VALUES ({', '.join('?' * (len(keys) + len(cols)))}) "
              f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(f'{c} = {table}.{c} + excluded.{c}' for c in cols)}")
    vanish = (f"DELETE FROM {table} WHERE {' AND '.join(f'{k} = ?' for k in keys)} "
              f"AND {' AND '.join(f'{c} = 0' for c in cols)}")
    return upsert, vanish


_SQL = {table: _sql(table) for table in TABLES}
#: ``track_second`` rows whose counters are all 0 (left behind when plays are taken away) mean no row.
_NONZERO_SECOND = "NOT (heard = 0 AND replayed = 0 AND stops = 0)"


def _upsert(tx: sqlite3.Connection, table: str, key: tuple, deltas: tuple[int, ...], may_vanish: bool = True) -> None:
    """Add ``deltas`` to the counters of ``table``'s row ``key``; with ``may_vanish``, delete the row
    if every counter is then 0."""
    if any(deltas):
        upsert, vanish = _SQL[table]
        tx.execute(upsert, (*key, *deltas))
        if may_vanish:
            tx.execute(vanish, key)


def listener_id(tx: sqlite3.Connection, did: str) -> int:
    """``did``'s number in ``analytics_listener``, given now if it has none."""
    row = tx.execute("SELECT id FROM analytics_listener WHERE did = ?", (did,)).fetchone()
    if row is not None:
        return row[0]
    return tx.execute("INSERT INTO analytics_listener (did) VALUES (?) RETURNING id", (did,)).fetchone()[0]


def add_play(tx: sqlite3.Connection, did: str, track_uri: str, sort_at: str, country: str | None,
             heard_ms: int | None, stream: bool, paid: bool, segments: str | list | None,
             replayed: str | list | None, sign: int = 1, counted: bool | None = None) -> None:
    """Count (``sign=1``) or uncount (``sign=-1``) one play of ``track_uri`` by ``did``: its day
    (``sort_at[:10]``), ``country`` (None: none given), ``heard_ms`` (ms; None while the track is
    unknown), its decision, and its merged ``segments`` and ``replayed`` parts ([[start, end]] ms,
    as lists or as the JSON ``play`` stores). Nothing while ``did`` is not counted
    (``standing.is_counted``; ``counted`` when the caller read it already)."""
    if standing.is_counted(tx, did) if counted is None else counted:
        _add_play(tx, did, track_uri, sort_at, country, heard_ms, stream, paid, segments, replayed, sign)


#: ``listener_id`` without reading its answer: the DID is numbered when it has no number yet (no
#: identity value is drawn when it has one, as ``INSERT .. ON CONFLICT`` would on PostgreSQL).
_NUMBER_LISTENER = ("INSERT INTO analytics_listener (did) SELECT ? WHERE NOT EXISTS "
                    "(SELECT 1 FROM analytics_listener WHERE did = ?)")
_LISTENER_DAY = _sql("track_day_listener")[0].replace(
    "VALUES (?, ?, ?,", "VALUES (?, ?, (SELECT id FROM analytics_listener WHERE did = ?),", 1)


def _add_play(tx: sqlite3.Connection, did: str, track_uri: str, sort_at: str, country: str | None,
              heard_ms: int | None, stream: bool, paid: bool, segments: str | list | None,
              replayed: str | list | None, sign: int) -> None:
    segs = json.loads(segments) if isinstance(segments, str) else segments
    again = json.loads(replayed) if isinstance(replayed, str) else replayed
    day, heard = sort_at[:10], heard_ms or 0
    # a day's rows count plays: they fall to 0 only when a play is taken away
    _upsert(tx, "track_day", (track_uri, day), (sign, sign * int(stream and paid), sign * int(stream and not paid),
                                               sign * heard, sign * int(segs is not None)), may_vanish=sign < 0)
    if sign > 0:  # written without waiting for the listener's number (pipeline mode on PostgreSQL)
        tx.execute(_NUMBER_LISTENER, (did, did))
        tx.execute(_LISTENER_DAY, (track_uri, day, did, country or "", 1, int(stream), heard))
    else:
        _upsert(tx, "track_day_listener", (track_uri, day, listener_id(tx, did), country or ""),
                (sign, sign * int(stream), sign * heard), may_vanish=True)
    # a difference array: rows that fall back to 0 stay (they read as no row, and a track has at most
    # MAX_SECOND of them); deleting them would cost as much again on every play
    tx.executemany(_SQL["track_second"][0], [(track_uri, sec, sign * h, sign * r, sign * st)
                                             for sec, (h, r, st) in histogram(segs, again).items()])


def decided(tx: sqlite3.Connection, play_uri: str) -> None:
    """A play counted while its track was unknown (no ``heard_ms``, no stream) has just been decided
    (``streams.track_appeared``): count its ``heard_ms`` and stream, if its listener is counted."""
    row = tx.execute("SELECT did, track_uri, sort_at, country, heard_ms, stream, paid FROM play WHERE uri = ?",
                     (play_uri,)).fetchone()
    if row is None or not standing.is_counted(tx, row[0]):
        return
    did, track_uri, sort_at, country, heard, stream, paid = row
    day = sort_at[:10]
    _upsert(tx, "track_day", (track_uri, day), (0, int(stream and paid), int(stream and not paid), heard or 0, 0))
    _upsert(tx, "track_day_listener", (track_uri, day, listener_id(tx, did), country or ""),
            (0, int(bool(stream)), heard or 0))


def became_paid(tx: sqlite3.Connection, track_uri: str, sort_at: str) -> None:
    """A free stream of ``track_uri`` on ``sort_at``'s day became a paid one (``streams.mark_paid``)."""
    _upsert(tx, "track_day", (track_uri, sort_at[:10]), (0, 1, -1, 0, 0))


def count_account(tx: sqlite3.Connection, did: str, sign: int) -> None:
    """Count (``sign=1``) or uncount (``sign=-1``) every play of ``did``, whatever its flag: for
    ``stats.refresh_account`` only, which flips ``actor.counted`` with it (an account out of
    standing weighs in no one's figures). What ``add_play`` would do play by play, summed in one
    pass over the account's plays: one write per (track, day), (track, day, country) and second
    touched, however many plays the account made."""
    by_day = tx.execute(
        "SELECT track_uri, substr(sort_at, 1, 10), COUNT(*), SUM(CASE WHEN stream = 1 AND paid = 1 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN stream = 1 AND paid = 0 THEN 1 ELSE 0 END), SUM(COALESCE(heard_ms, 0)), "
        "SUM(CASE WHEN segments IS NOT NULL THEN 1 ELSE 0 END) FROM play WHERE did = ? GROUP BY 1, 2",
        (did,)).fetchall()
    for track_uri, day, *counts in by_day:
        _upsert(tx, "track_day", (track_uri, day), tuple(sign * n for n in counts), may_vanish=sign < 0)
    by_country = tx.execute(
        "SELECT track_uri, substr(sort_at, 1, 10), COALESCE(country, ''), COUNT(*), SUM(stream), "
        "SUM(COALESCE(heard_ms, 0)) FROM play WHERE did = ? GROUP BY 1, 2, 3", (did,)).fetchall()
    if by_country:
        listener = listener_id(tx, did)
        for track_uri, day, country, *counts in by_country:
            _upsert(tx, "track_day_listener", (track_uri, day, listener, country), tuple(sign * n for n in counts),
                    may_vanish=sign < 0)
    seconds: dict[tuple[str, int], list[int]] = {}
    for track_uri, segments, replayed in tx.execute(
            "SELECT track_uri, segments, replayed FROM play WHERE did = ? AND segments IS NOT NULL", (did,)):
        for second, delta in histogram(json.loads(segments), json.loads(replayed) if replayed else None).items():
            acc = seconds.setdefault((track_uri, second), [0, 0, 0])
            for i in range(3):
                acc[i] += delta[i]
    tx.executemany(_SQL["track_second"][0], [(track_uri, second, sign * h, sign * r, sign * st)
                                             for (track_uri, second), (h, r, st) in seconds.items() if h or r or st])


# -- recount, check, rebuild ---------------------------------------------------------------------

_DAY_SQL = (f"SELECT p.track_uri, substr(p.sort_at, 1, 10), COUNT(*), "
            f"SUM(CASE WHEN p.stream = 1 AND p.paid = 1 THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN p.stream = 1 AND p.paid = 0 THEN 1 ELSE 0 END), SUM(COALESCE(p.heard_ms, 0)), "
            f"SUM(CASE WHEN p.segments IS NOT NULL THEN 1 ELSE 0 END) "
            f"FROM play p LEFT JOIN actor a ON a.did = p.did WHERE {_COUNTED} GROUP BY 1, 2")
_LISTENER_SQL = (f"SELECT p.track_uri AS track_uri, substr(p.sort_at, 1, 10) AS day, p.did AS did, "
                 f"COALESCE(p.country, '') AS country, COUNT(*) AS plays, SUM(p.stream) AS streams, "
                 f"SUM(COALESCE(p.heard_ms, 0)) AS ms "
                 f"FROM play p LEFT JOIN actor a ON a.did = p.did WHERE {_COUNTED} GROUP BY 1, 2, 3, 4")


def recount_seconds(tx: sqlite3.Connection) -> Iterator[tuple[str, int, int, int, int]]:
    """``track_second`` rows recounted from the plays (of counted accounts), one track at a time:
    (track_uri, second, heard, replayed, stops)."""
    cur = tx.execute(f"SELECT p.track_uri, p.segments, p.replayed FROM play p LEFT JOIN actor a ON a.did = p.did "
                     f"WHERE p.segments IS NOT NULL AND {_COUNTED} ORDER BY p.track_uri")
    current, acc = None, {}
    for track_uri, segments, replayed in cur:
        if track_uri != current:
            yield from ((current, s, *v) for s, v in sorted(acc.items()) if any(v))
            current, acc = track_uri, {}
        for second, delta in histogram(json.loads(segments), json.loads(replayed) if replayed else None).items():
            row = acc.setdefault(second, [0, 0, 0])
            for i in range(3):
                row[i] += delta[i]
    yield from ((current, s, *v) for s, v in sorted(acc.items()) if any(v))


def fill(tx: sqlite3.Connection, page: int = 50_000) -> dict[str, int]:
    """Recount every rollup from the play rows into the (empty) rollup tables, numbering listeners
    not numbered yet. Returns rows written per table."""
    counts = {}
    keys, cols = TABLES["track_day"]
    counts["track_day"] = tx.execute(f"INSERT INTO track_day ({', '.join(keys + cols)}) {_DAY_SQL}").rowcount
    tx.execute("INSERT OR IGNORE INTO analytics_listener (did) SELECT DISTINCT did FROM play")
    keys, cols = TABLES["track_day_listener"]
    counts["track_day_listener"] = tx.execute(
        f"INSERT INTO track_day_listener ({', '.join(keys + cols)}) SELECT x.track_uri, x.day, i.id, x.country, "
        f"x.plays, x.streams, x.ms FROM ({_LISTENER_SQL}) AS x "
        f"JOIN analytics_listener i ON i.did = x.did").rowcount
    counts["track_second"] = _insert_seconds(tx, "track_second", page)
    return counts


def _insert_seconds(tx: sqlite3.Connection, table: str, page: int = 50_000) -> int:
    insert = f"INSERT INTO {table} (track_uri, second, heard, replayed, stops) VALUES (?,?,?,?,?)"
    batch: list[tuple] = []
    written = 0
    for row in recount_seconds(tx):
        batch.append(row)
        if len(batch) >= page:
            tx.executemany(insert, batch)
            written, batch = written + len(batch), []
    tx.executemany(insert, batch)
    return written + len(batch)


def rebuild(tx: sqlite3.Connection) -> dict[str, int]:
    """Empty the rollups and recount them from the plays (inside the caller's transaction).
    Returns rows written per table."""
    for table in TABLES:
        tx.execute(f"DELETE FROM {table}")
    return fill(tx)


#: Each rollup as compared by ``check``: (key columns, counters, its stored rows in those columns),
#: listeners by DID, ``track_second`` rows at all 0 left out (they mean no row).
_STORED = {
    "track_day": (TABLES["track_day"][0], TABLES["track_day"][1],
                  "SELECT track_uri, day, plays, paid_streams, free_streams, listened_ms, segmented FROM main.track_day"),
    "track_day_listener": (("track_uri", "day", "did", "country"), TABLES["track_day_listener"][1],
                           "SELECT l.track_uri, l.day, i.did, l.country, l.plays, l.streams, l.listened_ms "
                           "FROM main.track_day_listener l LEFT JOIN main.analytics_listener i ON i.id = l.listener"),
    "track_second": (TABLES["track_second"][0], TABLES["track_second"][1],
                     f"SELECT track_uri, second, heard, replayed, stops FROM main.track_second "
                     f"WHERE {_NONZERO_SECOND}"),
}


def _show(cols: tuple[str, ...], values: tuple | None) -> str:
    return "no row" if values is None else ", ".join(f"{c}={v}" for c, v in zip(cols, values, strict=True))


def check(tx: sqlite3.Connection, examples: int = 20) -> tuple[dict[str, int], list[str]]:
    """Recount the rollups from the plays into temporary tables and compare them with the stored
    ones (listeners by DID). Returns (differing rows per table, up to ``examples`` lines per table
    saying which key differs, stored values against recounted ones). Writes only temporary tables;
    run it inside one transaction for a consistent snapshot."""
    recount = {"track_day": _DAY_SQL, "track_day_listener": _LISTENER_SQL, "track_second": None}
    differing: dict[str, int] = {}
    lines: list[str] = []
    for table, (keys, cols, stored_sql) in _STORED.items():
        name = f"temp.recount_{table}"
        tx.execute(f"DROP TABLE IF EXISTS {name}")
        tx.execute(f"CREATE TABLE {name} ({', '.join(keys + cols)})")
        if recount[table]:
            tx.execute(f"INSERT INTO {name} {recount[table]}")
        else:
            _insert_seconds(tx, name)
        stored = tx.execute(f"{stored_sql} EXCEPT SELECT * FROM {name}").fetchall()
        recounted = tx.execute(f"SELECT * FROM {name} EXCEPT {stored_sql}").fetchall()
        tx.execute(f"DROP TABLE {name}")
        by_key: dict[tuple, list[Any]] = {}
        for row in stored:
            by_key.setdefault(tuple(row[:len(keys)]), [None, None])[0] = row[len(keys):]
        for row in recounted:
            by_key.setdefault(tuple(row[:len(keys)]), [None, None])[1] = row[len(keys):]
        differing[table] = len(by_key)
        for key, (have, want) in sorted(by_key.items(), key=lambda kv: tuple(map(str, kv[0])))[:examples]:
            lines.append(f"{table} {' '.join(map(str, key))}: stored {_show(cols, have)}; recount {_show(cols, want)}")
    return differing, lines
