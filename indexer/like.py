"""``fm.openmusic.social.like`` -> table ``like_record`` and the subject's like count."""

from __future__ import annotations

from typing import Any

from core.db import normalize_datetime
from core.lexicons import ALBUM, LIKE, TRACK_COLLECTIONS, RecordInvalid
from indexer import stats
from indexer.base import WriteContext, split_uri

COLLECTION = LIKE


def check(record: dict[str, Any]) -> None:
    """The subject must be a track or an album. Raises ``RecordInvalid``."""
    if split_uri(record["subject"]["uri"])[1] not in (*TRACK_COLLECTIONS, ALBUM):
        raise RecordInvalid("bad_reference", f"like of {record['subject']['uri']}, which is not a track or album")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one like and count it: once per (account, subject), and only while the subject is an
    indexed track (``stats.like_changed``)."""
    subject = record["subject"]
    ctx.tx.execute(
        "INSERT INTO like_record (uri, did, rkey, cid, subject_uri, subject_cid, created_at, indexed_at) "
        "VALUES (?,?,?,?,?,?,?,?)",
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, subject["uri"], subject["cid"],
         normalize_datetime(record["createdAt"]) or ctx.now, ctx.now))
    stats.like_changed(ctx.tx, ctx.did, subject["uri"], 1)
    stats.count_actor(ctx.tx, ctx.did, likes=1)


def delete(ctx: WriteContext) -> None:
    """Remove a like and uncount it (when it was the account's last like of that subject)."""
    cur = ctx.tx.execute("DELETE FROM like_record WHERE uri = ? RETURNING subject_uri", (ctx.uri,))
    row = cur.fetchone()
    if row:
        stats.like_changed(ctx.tx, ctx.did, row[0], -1)
        stats.count_actor(ctx.tx, ctx.did, likes=-1)
