"""Per-track aggregates (``track_stats``, ``track_listener``), changed in the same transaction as
the plays and likes they count, so they can never drift from the rows under a crash or replay.

- ``plays``, ``listeners``, ``completions``: every play of the track's URI by an active account.
- ``listened_ms``: the plays' ``heard_ms`` (``indexer.streams``): what each can have been heard, at
  most the track's duration; a play that arrived before its track adds it when the track appears.
- ``paid_streams``, ``free_streams``: the plays ``indexer.streams`` decided are streams.
- ``likes``: the accounts (active) that like the track, each once however many like records it
  wrote, and only while the track is indexed (0 for a deleted track, recounted when it comes back).

Votes, reviews and follows (``Tally``) count one record per (account, subject): the account's
latest by (``created_at``, ``rkey``), only while the account is active. ``*_current`` holds the
record that counts, and the per-subject counters follow it (``recount``), so an edit, a delete, a
replay or an account going away and coming back leaves the counts equal to the records.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from indexer import rollups

_ACTIVE = "(a.active IS NULL OR a.active = 1)"


def add_play(tx: sqlite3.Connection, track_uri: str, listener: str, heard_ms: int,
             completed: bool, sign: int = 1, stream: bool = False, paid: bool = False) -> None:
    """Count (``sign=1``) or uncount (``sign=-1``) one play of ``track_uri`` by ``listener``;
    ``heard_ms`` (ms, capped by the track's duration; 0 while the track is unknown) and
    ``stream``/``paid`` as decided by ``indexer.streams``."""
    tx.execute("INSERT OR IGNORE INTO track_stats (track_uri) VALUES (?)", (track_uri,))
    listener_delta = 0
    if sign > 0:
        cur = tx.execute(
            "INSERT INTO track_listener (track_uri, did, plays) VALUES (?, ?, 1) "
            "ON CONFLICT (track_uri, did) DO UPDATE SET plays = plays + 1 RETURNING plays",
            (track_uri, listener))
        row = cur.fetchone()
        listener_delta = 1 if row and row[0] == 1 else 0
    else:
        cur = tx.execute(
            "UPDATE track_listener SET plays = plays - 1 WHERE track_uri = ? AND did = ? RETURNING plays",
            (track_uri, listener))
        row = cur.fetchone()
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
    """Count (``sign=1``) or uncount (``sign=-1``) every play and like ``did`` made: an account
    that is not active must not weigh in anyone's stats (atproto account spec), and comes back
    when it is reactivated. The analytics rollups follow (``indexer.rollups``), and so do its
    votes, reviews and follows (``recount_account``, which reads the account's state from ``actor``:
    call this after updating it)."""
    cur = tx.execute("SELECT track_uri, COALESCE(heard_ms, 0), completed, stream, paid FROM play WHERE did = ?", (did,))
    for track_uri, heard, completed, stream, paid in cur.fetchall():
        add_play(tx, track_uri, did, heard, bool(completed), sign, bool(stream), bool(paid))
    rollups.count_account(tx, did, sign)
    cur = tx.execute("SELECT DISTINCT l.subject_uri FROM like_record l JOIN track t ON t.uri = l.subject_uri "
                     "WHERE l.did = ?", (did,))
    for (subject,) in cur.fetchall():
        tx.execute("UPDATE track_stats SET likes = likes + ? WHERE track_uri = ?", (sign, subject))
    for tally in TALLIES:
        recount_account(tx, tally, did)


def like_changed(tx: sqlite3.Connection, did: str, subject_uri: str, sign: int) -> None:
    """After one like record of ``subject_uri`` by ``did`` was inserted (``sign=1``) or deleted
    (``sign=-1``): count the account's like when it is its first, uncount it when it was its last,
    and only while the subject is an indexed track."""
    if tx.execute("SELECT 1 FROM track WHERE uri = ?", (subject_uri,)).fetchone() is None:
        return
    (left,) = tx.execute("SELECT count(*) FROM (SELECT 1 FROM like_record WHERE did = ? AND subject_uri = ? LIMIT 2)",
                         (did, subject_uri)).fetchone()
    if left == (1 if sign > 0 else 0):
        tx.execute("INSERT OR IGNORE INTO track_stats (track_uri) VALUES (?)", (subject_uri,))
        tx.execute("UPDATE track_stats SET likes = likes + ? WHERE track_uri = ?", (sign, subject_uri))


def recount_likes(tx: sqlite3.Connection, track_uri: str) -> None:
    """A track was indexed: its likes are the active accounts with a like of it, once each."""
    tx.execute("INSERT OR IGNORE INTO track_stats (track_uri) VALUES (?)", (track_uri,))
    tx.execute(f"UPDATE track_stats SET likes = (SELECT count(DISTINCT l.did) FROM like_record l LEFT JOIN actor a "
               f"ON a.did = l.did WHERE l.subject_uri = ? AND {_ACTIVE}) WHERE track_uri = ?", (track_uri, track_uri))


def clear_likes(tx: sqlite3.Connection, track_uri: str) -> None:
    """A track was deleted: its likes no longer count (``recount_likes`` when it comes back)."""
    tx.execute("UPDATE track_stats SET likes = 0 WHERE track_uri = ?", (track_uri,))


def recount_all(tx: sqlite3.Connection) -> None:
    """Recompute ``listened_ms``, ``paid_streams``, ``free_streams`` and ``likes`` of every
    ``track_stats`` row from the plays and likes (the migration that brought these rules)."""
    tx.execute("UPDATE track_stats SET listened_ms = 0, paid_streams = 0, free_streams = 0, likes = 0")
    tx.execute(
        f"UPDATE track_stats SET listened_ms = agg.heard, paid_streams = agg.paid, free_streams = agg.free FROM "
        f"(SELECT p.track_uri AS uri, SUM(COALESCE(p.heard_ms, 0)) AS heard, SUM(p.stream AND p.paid) AS paid, "
        f"SUM(p.stream AND NOT p.paid) AS free FROM play p LEFT JOIN actor a ON a.did = p.did WHERE {_ACTIVE} "
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
    rkey) while ``did`` is active, nothing otherwise; move the subject's counters by the difference.
    Idempotent: calling it again changes nothing."""
    old = tx.execute(f"SELECT uri, value, sort_at FROM {tally.current} WHERE subject = ? AND did = ?",
                     (subject, did)).fetchone()
    new = tx.execute(
        f"SELECT r.uri, {tally.value}, MIN(r.created_at, r.indexed_at) FROM {tally.table} r "
        f"LEFT JOIN actor a ON a.did = r.did WHERE r.did = ? AND r.subject = ? AND {_ACTIVE} "
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
    """``recount`` every subject ``did`` has records of or is counted for (its account became
    active or not, or is being purged)."""
    cur = tx.execute(f"SELECT subject FROM {tally.table} WHERE did = ? UNION "
                     f"SELECT subject FROM {tally.current} WHERE did = ?", (did, did))
    for (subject,) in cur.fetchall():
        recount(tx, tally, did, subject)
