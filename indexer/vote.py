"""``fm.openmusic.social.vote`` -> table ``vote``; each voter's latest vote on a track counts
(``stats.VOTES``: ``vote_current``, ``vote_count``)."""

from __future__ import annotations

from typing import Any

from core.db import normalize_datetime
from core.lexicons import TRACK_COLLECTIONS, VOTE, RecordInvalid
from indexer import stats
from indexer.base import WriteContext, split_uri

COLLECTION = VOTE
DIRECTIONS = ("up", "down")


def check(record: dict[str, Any]) -> None:
    """The subject must be a track and the direction up or down. Raises ``RecordInvalid``."""
    if split_uri(record["subject"]["uri"])[1] not in TRACK_COLLECTIONS:
        raise RecordInvalid("bad_reference", f"vote on {record['subject']['uri']}, which is not a track")
    if record["direction"] not in DIRECTIONS:
        raise RecordInvalid("bad_value", f"vote direction {record['direction'][:32]!r} is not up or down")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one vote and recount the voter's vote on that track."""
    subject = record["subject"]
    ctx.tx.execute(
        "INSERT INTO vote (uri, did, rkey, cid, subject, subject_cid, direction, created_at, indexed_at) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, subject["uri"], subject["cid"], record["direction"],
         normalize_datetime(record["createdAt"]) or ctx.now, ctx.now))
    stats.recount(ctx.tx, stats.VOTES, ctx.did, subject["uri"])


def delete(ctx: WriteContext) -> None:
    """Remove a vote; the voter's previous vote on the track, if any, counts again."""
    row = ctx.tx.execute("DELETE FROM vote WHERE uri = ? RETURNING subject", (ctx.uri,)).fetchone()
    if row:
        stats.recount(ctx.tx, stats.VOTES, ctx.did, row[0])
