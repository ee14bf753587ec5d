"""The full-text index of tracks (SQLite FTS5 table ``track_fts``).

Each FTS row's rowid is its track's ``search_key``: ``sort_at`` in epoch milliseconds times 1000,
plus a slot (0..999) for tracks with the same millisecond. Keys are unique and ordered like
"newest first", so a search walks the matching rowids from the highest down and stops after a
page (``ORDER BY rowid DESC LIMIT n``): its cost follows the page size, not how many tracks match.
Beside each FTS row, ``track_rank`` keeps the track's play count and URI under the same key (its
plays follow ``track_stats`` through a trigger, migration 0012), so a search sorted by plays sorts
those small rows and looks up only the tracks of the page.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from indexer.base import upsert

#: Slots per millisecond of ``sort_at``.
SLOTS = 1000

#: The row of one record (``INSERT OR REPLACE`` in SQL both engines run: ``indexer.base.upsert``).
_UPSERT = upsert("track_rank", "search_key", [
    "search_key", "plays", "uri"],
    "?, COALESCE((SELECT plays FROM track_stats WHERE track_uri = ?), 0), ?")



def track_body(record: dict[str, Any], artist_name: str | None, handle: str | None) -> str:
    """The searchable text of a track: title, genre, moods, tags, description, artist name and handle."""
    parts: list[str] = [record.get("title") or "", record.get("genre") or ""]
    parts += [str(m) for m in record.get("moods") or []]
    parts += [str(t) for t in record.get("tags") or []]
    parts += [record.get("description") or "", artist_name or "", handle or ""]
    return " ".join(p for p in parts if p)


def key_base(sort_at: str) -> int:
    """The lowest ``search_key`` for an ISO 8601 ``sort_at`` (``...Z``): epoch ms times ``SLOTS``.
    Raises ``ValueError`` on a timestamp that does not parse."""
    ms = int(datetime.fromisoformat(sort_at.replace("Z", "+00:00")).timestamp() * 1000)
    return ms * SLOTS


def new_search_key(tx: sqlite3.Connection, sort_at: str) -> int:
    """A free ``search_key`` for a track sorted at ``sort_at``: the next slot of its millisecond
    (past it, should a thousand tracks share one millisecond)."""
    base = key_base(sort_at)
    while True:
        top = tx.execute("SELECT max(search_key) FROM track WHERE search_key BETWEEN ? AND ?",
                         (base, base + SLOTS - 1)).fetchone()[0]
        if top is None:
            return base
        if top < base + SLOTS - 1:
            return top + 1
        base += SLOTS


def artist_names(tx: sqlite3.Connection, did: str) -> tuple[str | None, str | None]:
    """(display name, handle) of ``did`` as indexed."""
    cur = tx.execute(
        "SELECT (SELECT display_name FROM profile WHERE did = ?), (SELECT handle FROM actor WHERE did = ?)",
        (did, did))
    row = cur.fetchone()
    return (row[0], row[1]) if row else (None, None)


def index_track(tx: sqlite3.Connection, uri: str, did: str, record: dict[str, Any]) -> None:
    """(Re)write the FTS row of one track (its ``track`` row must exist); gives the track a
    ``search_key`` when it has none."""
    key, sort_at = tx.execute("SELECT search_key, sort_at FROM track WHERE uri = ?", (uri,)).fetchone()
    if key is None:
        key = new_search_key(tx, sort_at)
        tx.execute("UPDATE track SET search_key = ? WHERE uri = ?", (key, uri))
    else:
        tx.execute("DELETE FROM track_fts WHERE rowid = ?", (key,))
    name, handle = artist_names(tx, did)
    tx.execute("INSERT INTO track_fts (rowid, body) VALUES (?, ?)", (key, track_body(record, name, handle)))
    tx.execute(_UPSERT, (key, uri, uri))


def reindex_artist(tx: sqlite3.Connection, did: str) -> None:
    """Rewrite the FTS rows of all of ``did``'s tracks (after a profile or handle change)."""
    cur = tx.execute(
        "SELECT r.uri, r.json FROM record r JOIN track t ON t.uri = r.uri WHERE t.did = ?", (did,))
    for uri, raw in cur.fetchall():
        index_track(tx, uri, did, json.loads(raw))


def unindex_track(tx: sqlite3.Connection, uri: str) -> None:
    """Remove a track from the FTS index (before its ``track`` row is replaced or deleted)."""
    row = tx.execute("SELECT search_key FROM track WHERE uri = ?", (uri,)).fetchone()
    if row and row[0] is not None:
        tx.execute("DELETE FROM track_fts WHERE rowid = ?", (row[0],))
        tx.execute("DELETE FROM track_rank WHERE search_key = ?", (row[0],))
