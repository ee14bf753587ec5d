"""``fm.openmusic.catalog.playlist`` -> tables ``playlist``, ``playlist_entry`` (the owner's items, one
row per index) and ``playlist_collaborator`` (issue 13; migration ``0019_playlists``).

Items are stored as written, whether or not their track is indexed: the queries
(``appview.playlists``) show only those that resolve, so a track published later appears and a
deleted one disappears without touching the playlist. An update is the indexer's delete then insert.
"""

from __future__ import annotations

from typing import Any

from core.db import normalize_datetime, sort_at
from core.lexicons import PLAYLIST, RecordInvalid
from indexer.base import WriteContext, blob_cid, blob_mime

COLLECTION = PLAYLIST


def check(record: dict[str, Any]) -> None:
    """The lexicon caps items (500) and collaborators (50); here: the title must have more than
    spaces. Raises ``RecordInvalid``."""
    if not record["title"].strip():
        raise RecordInvalid("bad_value", "a playlist title of only spaces")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one playlist, its items in order and its collaborators (each DID once, first place kept)."""
    created = normalize_datetime(record["createdAt"]) or ctx.now
    description = (record.get("description") or "").strip() or None
    ctx.tx.execute(
        "INSERT INTO playlist (uri, did, rkey, cid, title, description, artwork_cid, artwork_mime, created_at, sort_at, "
        "indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, record["title"].strip(), description, blob_cid(record.get("artwork")),
         blob_mime(record.get("artwork")), created, sort_at(record["createdAt"], ctx.now), ctx.now))
    ctx.tx.executemany(
        "INSERT INTO playlist_entry (playlist_uri, position, track_uri, track_cid) VALUES (?,?,?,?)",
        [(ctx.uri, i, item["track"]["uri"], item["track"]["cid"]) for i, item in enumerate(record.get("items") or [])])
    ctx.tx.executemany(
        "INSERT OR IGNORE INTO playlist_collaborator (playlist_uri, did, position) VALUES (?,?,?)",
        [(ctx.uri, did, i) for i, did in enumerate(record.get("collaborators") or []) if did != ctx.did])


def delete(ctx: WriteContext) -> None:
    """Remove a playlist, its items and its collaborator list (the collaborators' own item records
    stay in ``playlist_item``: they are theirs, and shown again if the playlist comes back)."""
    ctx.tx.execute("DELETE FROM playlist WHERE uri = ?", (ctx.uri,))
    ctx.tx.execute("DELETE FROM playlist_entry WHERE playlist_uri = ?", (ctx.uri,))
    ctx.tx.execute("DELETE FROM playlist_collaborator WHERE playlist_uri = ?", (ctx.uri,))
