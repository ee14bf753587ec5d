"""Per-track aggregates (``track_stats``, ``track_listener``), changed in the same transaction as
the plays and likes they count, so they can never drift from the rows under a crash or replay."""

from __future__ import annotations

import sqlite3


def add_play(tx: sqlite3.Connection, track_uri: str, listener: str, listened_ms: int,
             completed: bool, sign: int = 1, stream: bool = False, paid: bool = False) -> None:
    """Count (``sign=1``) or uncount (``sign=-1``) one play of ``track_uri`` by ``listener``;
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
        (sign, listener_delta, sign * listened_ms, sign * (1 if completed else 0), sign * int(stream and paid),
         sign * int(stream and not paid), track_uri))


def count_account(tx: sqlite3.Connection, did: str, sign: int) -> None:
    """Count (``sign=1``) or uncount (``sign=-1``) every play and like ``did`` made: an account
    that is not active must not weigh in anyone's stats (atproto account spec), and comes back
    when it is reactivated."""
    cur = tx.execute("SELECT track_uri, listened_ms, completed, stream, paid FROM play WHERE did = ?", (did,))
    for track_uri, listened, completed, stream, paid in cur.fetchall():
        add_play(tx, track_uri, did, listened, bool(completed), sign, bool(stream), bool(paid))
    cur = tx.execute("SELECT subject_uri FROM like_record WHERE did = ?", (did,))
    for (subject,) in cur.fetchall():
        add_like(tx, subject, sign)


def add_like(tx: sqlite3.Connection, subject_uri: str, sign: int = 1) -> None:
    """Count or uncount one like of ``subject_uri``."""
    tx.execute("INSERT OR IGNORE INTO track_stats (track_uri) VALUES (?)", (subject_uri,))
    tx.execute("UPDATE track_stats SET likes = likes + ? WHERE track_uri = ?", (sign, subject_uri))
