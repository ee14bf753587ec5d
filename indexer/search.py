"""The full-text index of tracks (SQLite FTS5 table ``track_fts``)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any


def track_body(record: dict[str, Any], artist_name: str | None, handle: str | None) -> str:
    """The searchable text of a track: title, genre, moods, tags, description, artist name and handle."""
    parts: list[str] = [record.get("title") or "", record.get("genre") or ""]
    parts += [str(m) for m in record.get("moods") or []]
    parts += [str(t) for t in record.get("tags") or []]
    parts += [record.get("description") or "", artist_name or "", handle or ""]
    return " ".join(p for p in parts if p)


def artist_names(tx: sqlite3.Connection, did: str) -> tuple[str | None, str | None]:
    """(display name, handle) of ``did`` as indexed."""
    cur = tx.execute(
        "SELECT (SELECT display_name FROM profile WHERE did = ?), (SELECT handle FROM actor WHERE did = ?)",
        (did, did))
    row = cur.fetchone()
    return (row[0], row[1]) if row else (None, None)


def index_track(tx: sqlite3.Connection, uri: str, did: str, record: dict[str, Any]) -> None:
    """(Re)write the FTS row of one track."""
    name, handle = artist_names(tx, did)
    tx.execute("DELETE FROM track_fts WHERE uri = ?", (uri,))
    tx.execute("INSERT INTO track_fts (uri, body) VALUES (?, ?)", (uri, track_body(record, name, handle)))


def reindex_artist(tx: sqlite3.Connection, did: str) -> None:
    """Rewrite the FTS rows of all of ``did``'s tracks (after a profile or handle change)."""
    cur = tx.execute(
        "SELECT r.uri, r.json FROM record r JOIN track t ON t.uri = r.uri WHERE t.did = ?", (did,))
    for uri, raw in cur.fetchall():
        index_track(tx, uri, did, json.loads(raw))


def unindex_track(tx: sqlite3.Connection, uri: str) -> None:
    """Remove a track from the FTS index."""
    tx.execute("DELETE FROM track_fts WHERE uri = ?", (uri,))
