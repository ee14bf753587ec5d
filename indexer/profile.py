"""``fm.openmusic.actor.profile`` (rkey ``self``) -> table ``profile``."""

from __future__ import annotations

import json
from typing import Any

from core.db import normalize_datetime
from core.lexicons import PROFILE, to_json
from indexer import search
from indexer.base import WriteContext, blob_cid, blob_mime, upsert
from indexer.track import check_blob_type

COLLECTION = PROFILE

#: The row of one record (``INSERT OR REPLACE`` in SQL both engines run: ``indexer.base.upsert``).
_UPSERT = upsert("profile", "did", [
    "did", "uri", "cid", "display_name", "description", "location", "avatar_cid", "avatar_mime",
    "banner_cid", "banner_mime", "roles", "links", "created_at", "indexed_at", "bot"])



def check(record: dict[str, Any]) -> None:
    """``avatar`` and ``banner`` must declare one raster image type (``indexer.track.check_blob_type``).
    Raises ``RecordInvalid``."""
    check_blob_type(record, "avatar", "image")
    check_blob_type(record, "banner", "image")


def is_bot(record: dict[str, Any]) -> bool:
    """Whether the profile self-labels the account as automated (``labels``, a
    ``com.atproto.label.defs#selfLabels`` with the value ``bot``)."""
    labels = record.get("labels")
    values = labels.get("values") if isinstance(labels, dict) else None
    return isinstance(values, list) and any(isinstance(v, dict) and v.get("val") == "bot" for v in values)


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index the profile (``bot`` from its self-labels) and refresh the search text of the artist's tracks (their name is in it)."""
    ctx.tx.execute(
        _UPSERT,
        (ctx.did, ctx.uri, ctx.cid, record.get("displayName"), record.get("description"), record.get("location"),
         blob_cid(record.get("avatar")), blob_mime(record.get("avatar")),
         blob_cid(record.get("banner")), blob_mime(record.get("banner")), json.dumps(record.get("roles") or []),
         json.dumps(to_json(record.get("links") or [])), normalize_datetime(record.get("createdAt")), ctx.now,
         1 if is_bot(record) else 0))
    search.reindex_artist(ctx.tx, ctx.did)


def delete(ctx: WriteContext) -> None:
    """Remove the profile."""
    ctx.tx.execute("DELETE FROM profile WHERE did = ?", (ctx.did,))
    search.reindex_artist(ctx.tx, ctx.did)
