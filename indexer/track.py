"""``fm.openmusic.catalog.track`` -> tables ``track`` and ``track_fts``."""

from __future__ import annotations

from typing import Any

from core.db import normalize_datetime, sort_at
from core.lexicons import ALBUM, TRACK, RecordInvalid
from core.mediatype import blob_media_type
from indexer import search, stats, streams, teal_play
from indexer.base import WriteContext, blob_cid, blob_mime, split_uri, upsert

COLLECTION = TRACK

#: The row of one record (``INSERT OR REPLACE`` in SQL both engines run: ``indexer.base.upsert``).
_UPSERT = upsert("track", "uri", [
    "uri", "did", "rkey", "cid", "title", "duration_ms", "genre", "genre_norm", "ai_level", "album_uri",
    "album_cid", "track_number", "audio_cid", "audio_mime", "audio_size", "artwork_cid", "artwork_mime",
    "explicit", "created_at", "sort_at", "indexed_at"])



def check(record: dict[str, Any]) -> None:
    """Rules the lexicon cannot state: ``splits`` name distinct DIDs and sum to 10000 bps;
    ``album`` points at an album record; ``audio`` declares exactly one audio type and ``artwork`` one
    raster image type (``core.mediatype``: the lexicon's ``audio/*`` admits ``audio/x,text/html``).
    Raises ``RecordInvalid``."""
    check_blob_type(record, "audio", "audio")
    check_blob_type(record, "artwork", "image")
    splits = record.get("splits")
    if splits is not None:
        total = sum(s["shareBps"] for s in splits)
        if total != 10000:
            raise RecordInvalid("bad_splits", f"splits sum to {total} bps, not 10000")
        if len({s["did"] for s in splits}) != len(splits):
            raise RecordInvalid("bad_splits", "splits name the same DID twice")
    if album := record.get("album"):
        if split_uri(album["uri"])[1] != ALBUM:
            raise RecordInvalid("bad_reference", f"album {album['uri']} is not an {ALBUM} record")


def check_blob_type(record: dict[str, Any], name: str, kind: str) -> None:
    """Raise ``RecordInvalid`` (``lexicon``) when the blob ``record[name]``, if present, does not declare
    a ``kind`` media type it may be served as (``core.mediatype.blob_media_type``)."""
    if name in record and blob_media_type(blob_mime(record[name]), kind) is None:
        raise RecordInvalid("lexicon", f"{name} mimeType {blob_mime(record[name])!r} is not a single {kind} type")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one track record (create, or the insert half of an update). Plays of it that arrived
    before it are decided now (``indexer.streams.track_appeared``) and its likes recounted."""
    album = record.get("album") or {}
    audio = record["audio"]
    created = normalize_datetime(record["createdAt"]) or ctx.now
    search.unindex_track(ctx.tx, ctx.uri)  # an update: the row is replaced, its sort_at may change
    ctx.tx.execute(
        _UPSERT,
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, record["title"], record["duration"], record.get("genre"),
         (record.get("genre") or "").strip().lower() or None, (record.get("aiDisclosure") or {}).get("level"),
         album.get("uri"), album.get("cid"), record.get("trackNumber"), blob_cid(audio), audio["mimeType"],
         audio.get("size"), blob_cid(record.get("artwork")), blob_mime(record.get("artwork")), 1 if record.get("explicit") else 0,
         created, sort_at(record["createdAt"], ctx.now), ctx.now))
    ctx.tx.execute("INSERT OR IGNORE INTO track_stats (track_uri) VALUES (?)", (ctx.uri,))
    search.index_track(ctx.tx, ctx.uri, ctx.did, record)
    streams.track_appeared(ctx.tx, ctx.uri)
    stats.recount_likes(ctx.tx, ctx.uri)
    teal_play.track_appeared(ctx.tx, ctx.uri, ctx.did, record)  # teal.fm plays of it that came first


def delete(ctx: WriteContext) -> None:
    """Remove a track from the catalog. Its plays stay (they belong to the listeners) and keep their
    decisions, but the period close pays only indexed tracks (``indexer.streams``); its likes stop
    counting."""
    search.unindex_track(ctx.tx, ctx.uri)
    stats.clear_likes(ctx.tx, ctx.uri)
    ctx.tx.execute("DELETE FROM track WHERE uri = ?", (ctx.uri,))
