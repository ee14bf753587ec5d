"""``fm.openmusic.graph.follow`` -> table ``follow``; a follower counts once per followed account
(``stats.FOLLOWS``: ``follow_current``, ``follow_count``)."""

from __future__ import annotations

import re
from typing import Any

from core.db import normalize_datetime
from core.lexicons import FOLLOW, RecordInvalid
from indexer import stats
from indexer.base import WriteContext

COLLECTION = FOLLOW
#: DID syntax (atproto DID spec); the lexicon's ``format: did`` checks it as well.
DID_RE = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$")


def check(record: dict[str, Any]) -> None:
    """The subject must be a DID (at most 2048 characters). Raises ``RecordInvalid``."""
    subject = record["subject"]
    if not isinstance(subject, str) or len(subject) > 2048 or not DID_RE.match(subject):
        raise RecordInvalid("bad_reference", f"follow of {str(subject)[:64]!r}, which is not a DID")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one follow and recount the follower's follow of that account."""
    ctx.tx.execute(
        "INSERT INTO follow (uri, did, rkey, cid, subject, created_at, indexed_at) VALUES (?,?,?,?,?,?,?)",
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, record["subject"],
         normalize_datetime(record["createdAt"]) or ctx.now, ctx.now))
    stats.recount(ctx.tx, stats.FOLLOWS, ctx.did, record["subject"])


def delete(ctx: WriteContext) -> None:
    """Remove a follow; the account still follows while another of its follow records remains."""
    row = ctx.tx.execute("DELETE FROM follow WHERE uri = ? RETURNING subject", (ctx.uri,)).fetchone()
    if row:
        stats.recount(ctx.tx, stats.FOLLOWS, ctx.did, row[0])
