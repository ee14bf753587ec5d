"""The full-text index of tracks (SQLite FTS5 table ``track_fts``)."""

from __future__ import annotations

import json
from typing import Any

import aiosqlite


def track_body(record: dict[str, Any], artist_name: str | None, handle: str | None) -> str:
    """The searchable text of a track: title, genre, moods, tags, description, artist name and handle."""
    parts: list[str] = [record.get("title") or "", record.get("genre") or ""]
    parts += [str(m) for m in record.get("moods") or []]
    parts += [str(t) for t in record.get("tags") or []]
    parts += [record.get("description") or "", artist_name or "", handle or ""]
    return " ".join(p for p in parts if p)


async def artist_names(tx: aiosqlite.Connection, did: str) -> tuple[str | None, str | None]:
    """(display name, handle) of ``did`` as indexed."""
    cur = await tx.execute(
        "SELECT (SELECT display_name FROM profile WHERE did = ?), (SELECT handle FROM actor WHERE did = ?)",
        (did, did))
    row = await cur.fetchone()
    return (row[0], row[1]) if row else (None, None)


async def index_track(tx: aiosqlite.Connection, uri: str, did: str, record: dict[str, Any]) -> None:
    """(Re)write the FTS row of one track."""
    name, handle = await artist_names(tx, did)
    await tx.execute("DELETE FROM track_fts WHERE uri = ?", (uri,))
    await tx.execute("INSERT INTO track_fts (uri, body) VALUES (?, ?)", (uri, track_body(record, name, handle)))


async def reindex_artist(tx: aiosqlite.Connection, did: str) -> None:
    """Rewrite the FTS rows of all of ``did``'s tracks (after a profile or handle change)."""
    cur = await tx.execute(
        "SELECT r.uri, r.json FROM record r JOIN track t ON t.uri = r.uri WHERE t.did = ?", (did,))
    for uri, raw in await cur.fetchall():
        await index_track(tx, uri, did, json.loads(raw))


async def unindex_track(tx: aiosqlite.Connection, uri: str) -> None:
    """Remove a track from the FTS index."""
    await tx.execute("DELETE FROM track_fts WHERE uri = ?", (uri,))
