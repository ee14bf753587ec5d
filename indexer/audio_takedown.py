"""Taken-down audio (issue 14, copyright cases; ``appview.copyright`` runs the cases): a track's
audio is down while a configured labeler's label ``audio-takedown`` is in force on it or on another
track of the same account with the same audio blob (a re-upload of the file stays down too).

``AUDIO_DOWN_SQL`` is that rule as an SQL condition on a track row (``{alias}``), for SQLite and
PostgreSQL alike (the partial index ``label_audio_takedown`` keeps it to the few labels of that
value). ``taken_down`` asks it for one track inside the indexer's transaction: a play indexed
while its track's audio is down is no stream (``indexer.streams.classify``)."""

from __future__ import annotations

import sqlite3

#: The label that takes a track's audio down and leaves the rest of it shown.
AUDIO_TAKEDOWN = "audio-takedown"
_NOW_SQL = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
#: SQL: the audio of the track ``{alias}`` (a ``track`` row) is taken down.
AUDIO_DOWN_SQL = (
    "EXISTS (SELECT 1 FROM label l JOIN labeler b ON b.did = l.src AND b.configured = 1 "
    "JOIN track o ON o.uri = l.uri "
    f"WHERE l.val = '{AUDIO_TAKEDOWN}' AND l.neg = 0 AND (l.exp IS NULL OR l.exp > {_NOW_SQL}) "
    "AND o.did = {alias}.did AND o.audio_cid = {alias}.audio_cid)")


def taken_down(tx: sqlite3.Connection, track_uri: str) -> bool:
    """Whether the audio of the indexed track ``track_uri`` is taken down now (``AUDIO_DOWN_SQL``).
    False on a database from before labels (migration 0023): an old migration that decides plays
    again (0008) runs this code on its schema."""
    try:
        row = tx.execute(f"SELECT 1 FROM track t WHERE t.uri = ? AND {AUDIO_DOWN_SQL.format(alias='t')}",
                         (track_uri,)).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False
        raise
    return row is not None
