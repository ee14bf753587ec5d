"""Per-track aggregates (``track_stats``, ``track_listener``), changed in the same transaction as
the plays and likes they count, so they can never drift from the rows under a crash or replay.

Whose records count: the accounts in standing (``indexer.standing``: active, not taken down by a
label). The aggregates here and in ``indexer.rollups`` hold exactly the records of the accounts
whose ``actor.counted`` is 1: adding or taking away one record checks it (``standing.is_counted``),
and ``refresh_account`` moves a whole account in or out when its standing changes (``count_account``
on a firehose ``#account`` event, ``catch_up`` after a label changed ``actor.hidden``).

- ``plays``, ``listeners``, ``completions``: every play of the track's URI by a counted account.
- ``listened_ms``: the plays' ``heard_ms`` (``indexer.streams``): what each can have been heard, at
  most the track's duration; a play that arrived before its track adds it when the track appears.
- ``paid_streams``, ``free_streams``: the plays ``indexer.streams`` decided are streams.
- ``likes``: the (counted) accounts that like the track, each once however many like records it
  wrote, and only while the track is indexed (0 for a deleted track, recounted when it comes back).

Votes, reviews and follows (``Tally``) count one record per (account, subject): the account's
latest by (``created_at``, ``rkey``), only while the account is counted. ``*_current`` holds the
record that counts, and the per-subject counters follow it (``recount``), so an edit, a delete, a
replay or an account going away and coming back leaves the counts equal to the records.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import aiosqlite

from core.db import connect_sync
from indexer import rollups, standing

log = logging.getLogger("openmusic.stats")
#: SQL on ``actor a`` (LEFT JOINed): the account is active. Only ``recount_all`` (migration 0008,
#: before ``actor.counted`` and ``actor.hidden`` existed) still counts by it.
_ACTIVE = "(a.active IS NULL OR a.active = 1)"


def add_play(tx: sqlite3.Connection, track_uri: str, listener: str, heard_ms: int,
             completed: bool, sign: int = 1, stream: bool = False, paid: bool = False,
             counted: bool | None = None) -> None:
    """Count (``sign=1``) or uncount (``sign=-1``) one play of ``track_uri`` by ``listener``;
    ``heard_ms`` (ms, capped by the track's duration; 0 while the track is unknown) and
    ``stream``/``paid`` as decided by ``indexer.streams``. Nothing while ``listener`` is not
    counted (``standing.is_counted``; ``counted`` when the caller read it already): its plays are
    not in the stats."""
    if standing.is_counted(tx, listener) if counted is None else counted:
        _add_play(tx, track_uri, listener, heard_ms, completed, sign, stream, paid)


#: A play counted in ``track_stats`` in one statement, after its ``track_listener`` row was bumped:
#: the listener is new when that row now holds 1 play. The row is created when missing (with 0 in
#: the other counters, their defaults); the conflict path is an UPDATE of ``plays`` (the
#: ``track_rank_plays`` trigger follows it, as it followed the UPDATE this replaces).
_COUNT_PLAY = (
    "INSERT INTO track_stats (track_uri, plays, listeners, listened_ms, completions, paid_streams, free_streams) "
    "VALUES (?, 1, (SELECT CASE WHEN plays = 1 THEN 1 ELSE 0 END FROM track_listener WHERE track_uri = ? AND did = ?), "
    "?, ?, ?, ?) ON CONFLICT (track_uri) DO UPDATE SET plays = track_stats.plays + excluded.plays, "
    "listeners = track_stats.listeners + excluded.listeners, listened_ms = track_stats.listened_ms + excluded.listened_ms, "
    "completions = track_stats.completions + excluded.completions, "
    "paid_streams = track_stats.paid_streams + excluded.paid_streams, "
    "free_streams = track_stats.free_streams + excluded.free_streams")


def _add_play(tx: sqlite3.Connection, track_uri: str, listener: str, heard_ms: int, completed: bool, sign: int,
              stream: bool, paid: bool) -> None:
    if sign > 0:  # two writes whose results nobody waits for (pipeline mode on PostgreSQL)
        tx.execute("INSERT INTO track_listener (track_uri, did, plays) VALUES (?, ?, 1) "
                   "ON CONFLICT (track_uri, did) DO UPDATE SET plays = track_listener.plays + 1", (track_uri, listener))
        tx.execute(_COUNT_PLAY, (track_uri, track_uri, listener, heard_ms, 1 if completed else 0,
                                 int(stream and paid), int(stream and not paid)))
        return
    tx.execute("INSERT OR IGNORE INTO track_stats (track_uri) VALUES (?)", (track_uri,))
    listener_delta = 0
    row = tx.execute("UPDATE track_listener SET plays = plays - 1 WHERE track_uri = ? AND did = ? RETURNING plays",
                     (track_uri, listener)).fetchone()
    if row and row[0] <= 0:
        tx.execute("DELETE FROM track_listener WHERE track_uri = ? AND did = ?", (track_uri, listener))
        listener_delta = -1
    tx.execute(
        "UPDATE track_stats SET plays = plays + ?, listeners = listeners + ?, listened_ms = listened_ms + ?, "
        "completions = completions + ?, paid_streams = paid_streams + ?, free_streams = free_streams + ? "
        "WHERE track_uri = ?",
        (sign, listener_delta, sign * heard_ms, sign * (1 if completed else 0), sign * int(stream and paid),
         sign * int(stream and not paid), track_uri))


def add_decision(tx: sqlite3.Connection, track_uri: str, heard_ms: int, stream: bool, paid: bool,
                 sign: int = 1) -> None:
    """Count (or uncount) what ``indexer.streams`` decided about one play already counted as a
    play: its ``heard_ms`` (ms) and whether it is a paid or free stream."""
    tx.execute(
        "UPDATE track_stats SET listened_ms = listened_ms + ?, paid_streams = paid_streams + ?, "
        "free_streams = free_streams + ? WHERE track_uri = ?",
        (sign * heard_ms, sign * int(stream and paid), sign * int(stream and not paid), track_uri))


def count_account(tx: sqlite3.Connection, did: str, sign: int) -> None:
    """``did``'s ``actor.active`` has just changed (``sign`` says which way; kept for the callers,
    the new standing is read from ``actor``): ``refresh_account``. An account that is not active must
    not weigh in anyone's stats (atproto account spec) and comes back when it is reactivated, unless
    a label still holds it out (``indexer.standing``)."""
    refresh_account(tx, did)


def refresh_account(tx: sqlite3.Connection, did: str) -> int:
    """Bring ``did``'s ``actor.counted`` in step with its standing (``indexer.standing``): when it
    differs, count (+1) or uncount (-1) every play, like, vote, review and follow ``did`` made, in
    ``track_stats``, ``track_listener``, the analytics rollups (``indexer.rollups``) and the tallies,
    and flip the flag, inside the caller's transaction. Returns the move: 1, -1 or 0 (in step
    already, or no ``actor`` row). Idempotent."""
    row = tx.execute(f"SELECT counted, {standing.RULE} FROM actor WHERE did = ?", (did,)).fetchone()
    if row is None or bool(row[0]) == bool(row[1]):
        return 0
    sign = 1 if row[1] else -1
    tx.execute("UPDATE actor SET counted = ? WHERE did = ?", (int(sign > 0), did))
    # what add_play does play by play, summed per track: the account's track_listener row (all its
    # plays of the track) comes or goes whole, and with it one listener
    cur = tx.execute("SELECT track_uri, COUNT(*), SUM(COALESCE(heard_ms, 0)), SUM(completed), "
                     "SUM(CASE WHEN stream = 1 AND paid = 1 THEN 1 ELSE 0 END), "
                     "SUM(CASE WHEN stream = 1 AND paid = 0 THEN 1 ELSE 0 END) FROM play WHERE did = ? "
                     "GROUP BY track_uri", (did,))
    for track_uri, plays, heard, completed, paid, free in cur.fetchall():
        tx.execute("INSERT OR IGNORE INTO track_stats (track_uri) VALUES (?)", (track_uri,))
        if sign > 0:
            tx.execute("INSERT INTO track_listener (track_uri, did, plays) VALUES (?, ?, ?)", (track_uri, did, plays))
        else:
            tx.execute("DELETE FROM track_listener WHERE track_uri = ? AND did = ?", (track_uri, did))
        tx.execute("UPDATE track_stats SET plays = plays + ?, listeners = listeners + ?, listened_ms = listened_ms + ?, "
                   "completions = completions + ?, paid_streams = paid_streams + ?, free_streams = free_streams + ? "
                   "WHERE track_uri = ?", (sign * plays, sign, sign * heard, sign * completed, sign * paid, sign * free,
                                           track_uri))
    rollups.count_account(tx, did, sign)
    cur = tx.execute("SELECT DISTINCT l.subject_uri FROM like_record l JOIN track t ON t.uri = l.subject_uri "
                     "WHERE l.did = ?", (did,))
    for (subject,) in cur.fetchall():
        tx.execute("UPDATE track_stats SET likes = likes + ? WHERE track_uri = ?", (sign, subject))
    for tally in TALLIES:
        recount_account(tx, tally, did)  # reads the flag just set
    return sign


def catch_up(tx: sqlite3.Connection) -> dict[str, int]:
    """``refresh_account`` every account whose ``counted`` flag differs from its standing (a label
    changed ``actor.hidden``; migration 0026's partial index finds them), inside the caller's
    transaction. Returns {DID: move} for those moved."""
    stale = [did for (did,) in tx.execute(f"SELECT did FROM actor WHERE {standing.STALE}").fetchall()]
    return {did: move for did in stale if (move := refresh_account(tx, did))}


def catch_up_file(path: str) -> dict[str, int]:
    """``refresh_account`` every account out of step (``catch_up``), each in a write transaction of
    its own (so that many accounts labelled at once never hold the write lock for long), on a
    connection of its own to the database file ``path`` (blocking; for a worker thread). Takes the
    write lock only when an account is out of step. Returns {DID: move}. Raises sqlite3 errors
    (busy past the timeout, I/O): the accounts moved before stay moved, the others stay out of step."""
    conn = connect_sync(path)
    moved: dict[str, int] = {}
    try:
        for (did,) in conn.execute(f"SELECT did FROM actor WHERE {standing.STALE}").fetchall():
            conn.execute("BEGIN IMMEDIATE")
            try:
                move = refresh_account(conn, did)  # again, in the transaction: it may have moved since
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if move:
                moved[did] = move
        return moved
    finally:
        conn.close()


async def catch_up_async(conn: aiosqlite.Connection) -> dict[str, int]:
    """After ``conn`` (a writer of the label store, ``indexer.labels``) committed changes to
    ``actor.hidden``: ``catch_up_file`` on its database in a worker thread, when any account is out
    of step. Returns {DID: move}; {} for an in-memory database (nothing to reopen: its accounts
    stay counted by their flag until the indexer moves them) and after a failure, which is logged,
    never raised (the store's next sweep tries again)."""
    cur = await conn.execute(f"SELECT 1 FROM actor WHERE {standing.STALE} LIMIT 1")
    if await cur.fetchone() is None:
        return {}
    cur = await conn.execute("PRAGMA database_list")
    path = next((row[2] for row in await cur.fetchall() if row[1] == "main"), "")
    if not path:
        return {}
    try:
        moved = await asyncio.to_thread(catch_up_file, path)
    except Exception:
        log.exception("bringing the counted accounts in step with their standing failed; the next sweep retries")
        return {}
    if moved:
        log.info("accounts moved in (+1) or out (-1) of the counts: %s", moved)
    return moved


def count_actor(tx: sqlite3.Connection, did: str, plays: int = 0, likes: int = 0) -> None:
    """Add ``plays`` and ``likes`` (each +1, -1 or 0) to the records ``did`` holds (``actor_count``,
    migration 0034: getProfile's ``playsCount`` and ``likesCount``)."""
    tx.execute("INSERT INTO actor_count (did, plays, likes) VALUES (?,?,?) ON CONFLICT (did) DO UPDATE SET "
               "plays = actor_count.plays + excluded.plays, likes = actor_count.likes + excluded.likes",
               (did, plays, likes))


def like_changed(tx: sqlite3.Connection, did: str, subject_uri: str, sign: int) -> None:
    """After one like record of ``subject_uri`` by ``did`` was inserted (``sign=1``) or deleted
    (``sign=-1``): count the account's like when it is its first, uncount it when it was its last,
    and only while the subject is an indexed track and the account is counted."""
    if tx.execute("SELECT 1 FROM track WHERE uri = ?", (subject_uri,)).fetchone() is None \
            or not standing.is_counted(tx, did):
        return
    (left,) = tx.execute("SELECT count(*) FROM (SELECT 1 FROM like_record WHERE did = ? AND subject_uri = ? LIMIT 2) AS x",
                         (did, subject_uri)).fetchone()
    if left == (1 if sign > 0 else 0):
        tx.execute("INSERT OR IGNORE INTO track_stats (track_uri) VALUES (?)", (subject_uri,))
        tx.execute("UPDATE track_stats SET likes = likes + ? WHERE track_uri = ?", (sign, subject_uri))


def recount_likes(tx: sqlite3.Connection, track_uri: str) -> None:
    """A track was indexed: its likes are the counted accounts with a like of it, once each."""
    tx.execute("INSERT OR IGNORE INTO track_stats (track_uri) VALUES (?)", (track_uri,))
    tx.execute(f"UPDATE track_stats SET likes = (SELECT count(DISTINCT l.did) FROM like_record l LEFT JOIN actor a "
               f"ON a.did = l.did WHERE l.subject_uri = ? AND {standing.COUNTED}) WHERE track_uri = ?",
               (track_uri, track_uri))


def clear_likes(tx: sqlite3.Connection, track_uri: str) -> None:
    """A track was deleted: its likes no longer count (``recount_likes`` when it comes back)."""
    tx.execute("UPDATE track_stats SET likes = 0 WHERE track_uri = ?", (track_uri,))


def recount_all(tx: sqlite3.Connection) -> None:
    """Recompute ``listened_ms``, ``paid_streams``, ``free_streams`` and ``likes`` of every
    ``track_stats`` row from the plays and likes of active accounts (migration 0008, which brought
    these rules, on its schema: before ``actor.hidden`` and ``actor.counted``)."""
    tx.execute("UPDATE track_stats SET listened_ms = 0, paid_streams = 0, free_streams = 0, likes = 0")
    tx.execute(
        f"UPDATE track_stats SET listened_ms = agg.heard, paid_streams = agg.paid, free_streams = agg.free FROM "
        f"(SELECT p.track_uri AS uri, SUM(COALESCE(p.heard_ms, 0)) AS heard, "
        f"SUM(CASE WHEN p.stream = 1 AND p.paid = 1 THEN 1 ELSE 0 END) AS paid, "
        f"SUM(CASE WHEN p.stream = 1 AND p.paid = 0 THEN 1 ELSE 0 END) AS free "
        f"FROM play p LEFT JOIN actor a ON a.did = p.did WHERE {_ACTIVE} "
        f"GROUP BY p.track_uri) AS agg WHERE track_stats.track_uri = agg.uri")
    tx.execute(
        f"UPDATE track_stats SET likes = agg.n FROM (SELECT l.subject_uri AS uri, count(DISTINCT l.did) AS n "
        f"FROM like_record l JOIN track t ON t.uri = l.subject_uri LEFT JOIN actor a ON a.did = l.did "
        f"WHERE {_ACTIVE} GROUP BY l.subject_uri) AS agg WHERE track_stats.track_uri = agg.uri")


@dataclass(frozen=True, slots=True)
class Tally:
    """One collection counted once per (account, subject): its records' ``table`` (with ``did``,
    ``rkey``, ``subject``, ``created_at``, ``indexed_at``), the SQL ``value`` of a record (an integer),
    the ``current`` table of counted records and the per-subject ``counts`` table, whose columns
    ``columns(value)`` says how to move."""

    table: str
    value: str
    counts: str
    columns: Callable[[int], dict[str, int]]

    @property
    def current(self) -> str:
        return f"{self.table}_current"


VOTES = Tally("vote", "CASE r.direction WHEN 'up' THEN 1 ELSE -1 END", "vote_count",
              lambda v: {"up": int(v > 0), "down": int(v < 0)})
REVIEWS = Tally("review", "r.rating", "review_count", lambda v: {"reviews": 1, "rating_sum": v})
FOLLOWS = Tally("follow", "1", "follow_count", lambda v: {"followers": 1})
TALLIES = (VOTES, REVIEWS, FOLLOWS)


def _move(tx: sqlite3.Connection, tally: Tally, subject: str, value: int, sign: int) -> None:
    cols = tally.columns(value)
    tx.execute(f"INSERT OR IGNORE INTO {tally.counts} (subject) VALUES (?)", (subject,))
    sets = ", ".join(f"{c} = {c} + ?" for c in cols)
    tx.execute(f"UPDATE {tally.counts} SET {sets} WHERE subject = ?", (*(sign * n for n in cols.values()), subject))


def recount(tx: sqlite3.Connection, tally: Tally, did: str, subject: str) -> None:
    """Make what counts for (``did``, ``subject``) equal its records: the latest by (created_at,
    rkey) while ``did`` is counted (``actor.counted``), nothing otherwise; move the subject's counters
    by the difference. Idempotent: calling it again changes nothing."""
    old = tx.execute(f"SELECT uri, value, sort_at FROM {tally.current} WHERE subject = ? AND did = ?",
                     (subject, did)).fetchone()
    new = tx.execute(
        f"SELECT r.uri, {tally.value}, MIN(r.created_at, r.indexed_at) FROM {tally.table} r "
        f"LEFT JOIN actor a ON a.did = r.did WHERE r.did = ? AND r.subject = ? AND {standing.COUNTED} "
        f"ORDER BY r.created_at DESC, r.rkey DESC LIMIT 1", (did, subject)).fetchone()
    if old == new:
        return
    if old:
        _move(tx, tally, subject, old[1], -1)
        tx.execute(f"DELETE FROM {tally.current} WHERE subject = ? AND did = ?", (subject, did))
    if new:
        _move(tx, tally, subject, new[1], 1)
        tx.execute(f"INSERT INTO {tally.current} (subject, did, uri, value, sort_at) VALUES (?,?,?,?,?)",
                   (subject, did, *new))


def recount_account(tx: sqlite3.Connection, tally: Tally, did: str) -> None:
    """``recount`` every subject ``did`` has records of or is counted for (its account was counted
    or uncounted, ``refresh_account``)."""
    cur = tx.execute(f"SELECT subject FROM {tally.table} WHERE did = ? UNION "
                     f"SELECT subject FROM {tally.current} WHERE did = ?", (did, did))
    for (subject,) in cur.fetchall():
        recount(tx, tally, did, subject)
