"""``fm.openmusic.catalog.playlistItem`` -> table ``playlist_item`` (issue 13; migration
``0019_playlists``). Every valid item is stored, whoever wrote it; ``appview.playlists`` shows it only
while the playlist lists its author as a collaborator (and the author and the track's artist are
active), so a collaborator added or removed later needs no rewrite here."""

from __future__ import annotations

from typing import Any

from core.db import normalize_datetime, sort_at
from core.lexicons import PLAYLIST, PLAYLIST_ITEM, TRACK_COLLECTIONS, RecordInvalid
from indexer.base import WriteContext, split_uri

COLLECTION = PLAYLIST_ITEM


def check(record: dict[str, Any]) -> None:
    """The subject must be a playlist and the track a track (AT-URIs of those collections).
    Raises ``RecordInvalid``."""
    if split_uri(record["subject"])[1] != PLAYLIST:
        raise RecordInvalid("bad_reference", f"playlist item for {record['subject'][:300]}, which is not a playlist")
    if split_uri(record["track"]["uri"])[1] not in TRACK_COLLECTIONS:
        raise RecordInvalid("bad_reference", f"playlist item {record['track']['uri'][:300]} is not a track")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one collaborator item."""
    ctx.tx.execute(
        "INSERT INTO playlist_item (uri, did, rkey, cid, subject, track_uri, track_cid, created_at, sort_at, "
        "indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, record["subject"], record["track"]["uri"], record["track"]["cid"],
         normalize_datetime(record["createdAt"]) or ctx.now, sort_at(record["createdAt"], ctx.now), ctx.now))


def delete(ctx: WriteContext) -> None:
    """Remove a collaborator item."""
    ctx.tx.execute("DELETE FROM playlist_item WHERE uri = ?", (ctx.uri,))
