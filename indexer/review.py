"""``fm.openmusic.social.review`` -> table ``review``; each reviewer's latest review of a track or
album counts (``stats.REVIEWS``: ``review_current``, ``review_count``)."""

from __future__ import annotations

from typing import Any

from core.db import normalize_datetime
from core.lexicons import ALBUM, REVIEW, TRACK, RecordInvalid
from indexer import stats
from indexer.base import WriteContext, split_uri

COLLECTION = REVIEW


def check(record: dict[str, Any]) -> None:
    """The subject must be a track or album, the rating 1 to 5 (the lexicon says so too). Raises
    ``RecordInvalid``."""
    if split_uri(record["subject"]["uri"])[1] not in (TRACK, ALBUM):
        raise RecordInvalid("bad_reference", f"review of {record['subject']['uri']}, which is not a track or album")
    rating = record["rating"]
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise RecordInvalid("bad_value", f"rating {rating!r} is not 1 to 5")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one review and recount the reviewer's review of that subject."""
    subject = record["subject"]
    ctx.tx.execute(
        "INSERT INTO review (uri, did, rkey, cid, subject, subject_cid, rating, text, created_at, indexed_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?)",
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, subject["uri"], subject["cid"], record["rating"],
         record.get("text") or None, normalize_datetime(record["createdAt"]) or ctx.now, ctx.now))
    stats.recount(ctx.tx, stats.REVIEWS, ctx.did, subject["uri"])


def delete(ctx: WriteContext) -> None:
    """Remove a review; the reviewer's previous review of the subject, if any, counts again."""
    row = ctx.tx.execute("DELETE FROM review WHERE uri = ? RETURNING subject", (ctx.uri,)).fetchone()
    if row:
        stats.recount(ctx.tx, stats.REVIEWS, ctx.did, row[0])
