"""``fm.openmusic.payment.tip`` (in the tipper's repo) -> table ``tip``. The broker settles what
is indexed here (``payments.settle``); deleting a tip removes it from the index but never the
money or the settlement already decided."""

from __future__ import annotations

import re
from typing import Any

from core.db import normalize_datetime, sort_at
from core.lexicons import TIP, TRACK, TRACK_COLLECTIONS, RecordInvalid
from indexer.base import WriteContext, split_uri

COLLECTION = TIP
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def check(record: dict[str, Any]) -> None:
    """ISO 4217 upper-case currency; a track reference must name a track of the tipped artist.
    Raises ``RecordInvalid``."""
    if not _CURRENCY.match(record["currency"]):
        raise RecordInvalid("lexicon", f"currency {record['currency']!r} is not an ISO 4217 code like USD")
    track = record.get("track")
    if track:
        did, collection, _ = split_uri(track["uri"])
        if collection not in TRACK_COLLECTIONS:
            raise RecordInvalid("bad_reference", f"tip track {track['uri']} is not a {TRACK} record")
        if did != record["subject"]:
            raise RecordInvalid("bad_reference", f"tip track {track['uri']} is not by the tipped artist {record['subject']}")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one tip."""
    track = record.get("track") or {}
    ctx.tx.execute(
        "INSERT INTO tip (uri, did, rkey, cid, subject, track_uri, track_cid, amount, currency, message, created_at, "
        "sort_at, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, record["subject"], track.get("uri"), track.get("cid"), record["amount"],
         record["currency"], record.get("message"), normalize_datetime(record["createdAt"]) or ctx.now,
         sort_at(record["createdAt"], ctx.now), ctx.now))


def delete(ctx: WriteContext) -> None:
    """Remove a tip from the index (its settlement and ledger entries stay)."""
    ctx.tx.execute("DELETE FROM tip WHERE uri = ?", (ctx.uri,))
