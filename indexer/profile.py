"""``fm.openmusic.actor.profile`` (rkey ``self``) -> table ``profile``."""

from __future__ import annotations

import json
from typing import Any

from core.db import normalize_datetime
from core.lexicons import PROFILE, to_json
from indexer import search
from indexer.base import WriteContext, blob_cid, blob_mime
from indexer.track import check_blob_type

COLLECTION = PROFILE


def check(record: dict[str, Any]) -> None:
    """``avatar`` and ``banner`` must declare one raster image type (``indexer.track.check_blob_type``).
    Raises ``RecordInvalid``."""
    check_blob_type(record, "avatar", "image")
    check_blob_type(record, "banner", "image")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index the profile and refresh the search text of the artist's tracks (their name is in it)."""
    ctx.tx.execute(
        "INSERT OR REPLACE INTO profile (did, uri, cid, display_name, description, location, avatar_cid, "
        "avatar_mime, banner_cid, banner_mime, roles, links, created_at, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (ctx.did, ctx.uri, ctx.cid, record.get("displayName"), record.get("description"), record.get("location"),
         blob_cid(record.get("avatar")), blob_mime(record.get("avatar")),
         blob_cid(record.get("banner")), blob_mime(record.get("banner")), json.dumps(record.get("roles") or []),
         json.dumps(to_json(record.get("links") or [])), normalize_datetime(record.get("createdAt")), ctx.now))
    search.reindex_artist(ctx.tx, ctx.did)


def delete(ctx: WriteContext) -> None:
    """Remove the profile."""
    ctx.tx.execute("DELETE FROM profile WHERE did = ?", (ctx.did,))
    search.reindex_artist(ctx.tx, ctx.did)
