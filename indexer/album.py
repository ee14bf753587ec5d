"""``fm.openmusic.catalog.album`` -> tables ``album`` and ``album_track``."""

from __future__ import annotations

from typing import Any

from core.db import normalize_datetime, sort_at
from core.lexicons import ALBUM, TRACK, RecordInvalid
from indexer.base import WriteContext, blob_cid, blob_mime, split_uri, upsert
from indexer.track import check_blob_type

COLLECTION = ALBUM

#: The row of one record (``INSERT OR REPLACE`` in SQL both engines run: ``indexer.base.upsert``).
_UPSERT = upsert("album", "uri", [
    "uri", "did", "rkey", "cid", "title", "genre", "artwork_cid", "artwork_mime", "release_date",
    "created_at", "sort_at", "indexed_at"])



def check(record: dict[str, Any]) -> None:
    """Every entry of ``tracks`` must point at a track record; ``artwork`` must declare one raster
    image type (``indexer.track.check_blob_type``). Raises ``RecordInvalid``."""
    check_blob_type(record, "artwork", "image")
    for ref in record.get("tracks") or []:
        if split_uri(ref["uri"])[1] != TRACK:
            raise RecordInvalid("bad_reference", f"album entry {ref['uri']} is not a {TRACK} record")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one album record and its ordered track list."""
    ctx.tx.execute(
        _UPSERT,
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, record["title"], record.get("genre"),
         blob_cid(record.get("artwork")), blob_mime(record.get("artwork")), normalize_datetime(record.get("releaseDate")),
         normalize_datetime(record["createdAt"]) or ctx.now, sort_at(record["createdAt"], ctx.now), ctx.now))
    ctx.tx.executemany(
        "INSERT INTO album_track (album_uri, position, track_uri, track_cid) VALUES (?,?,?,?)",
        [(ctx.uri, i, ref["uri"], ref["cid"]) for i, ref in enumerate(record.get("tracks") or [])])


def delete(ctx: WriteContext) -> None:
    """Remove an album (its tracks stay: they are records of their own)."""
    ctx.tx.execute("DELETE FROM album WHERE uri = ?", (ctx.uri,))
    ctx.tx.execute("DELETE FROM album_track WHERE album_uri = ?", (ctx.uri,))
