"""``fm.openmusic.listen.play`` -> table ``play`` and the track's aggregates."""

from __future__ import annotations

from typing import Any

from indexer import stats, streams
from indexer.base import WriteContext, split_uri
from openmusic.db import normalize_datetime, sort_at
from openmusic.lexicons import PLAY, TRACK, RecordInvalid

COLLECTION = PLAY


def check(record: dict[str, Any]) -> None:
    """``track`` must point at a track record; each segment must end at or after its start.
    Raises ``RecordInvalid``."""
    if split_uri(record["track"]["uri"])[1] != TRACK:
        raise RecordInvalid("bad_reference", f"play of {record['track']['uri']}, which is not a {TRACK} record")
    for seg in record.get("segments") or []:
        if seg["endMs"] < seg["startMs"]:
            raise RecordInvalid("bad_segment", f"segment ends ({seg['endMs']}) before it starts ({seg['startMs']})")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one play, decide whether it is a stream (paid or free, ``indexer.streams``) and count
    it in the track's stats."""
    track_uri = record["track"]["uri"]
    listened = record["listenedMs"]
    completed = bool(record.get("completed"))
    at = sort_at(record["createdAt"], ctx.now)
    s = streams.classify(ctx.tx, ctx.did, track_uri, at, listened)
    ctx.tx.execute(
        "INSERT INTO play (uri, did, rkey, cid, track_uri, track_cid, track_did, created_at, sort_at, listened_ms, "
        "completed, client, country, indexed_at, stream, paid, stream_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, track_uri, record["track"]["cid"], split_uri(track_uri)[0],
         normalize_datetime(record["createdAt"]) or ctx.now, at, listened,
         1 if completed else 0, record.get("client"), (record.get("country") or "").upper() or None, ctx.now,
         int(s.stream), int(s.paid), s.ms))
    stats.add_play(ctx.tx, track_uri, ctx.did, listened, completed, stream=s.stream, paid=s.paid)


def delete(ctx: WriteContext) -> None:
    """Remove a play and uncount it."""
    cur = ctx.tx.execute("DELETE FROM play WHERE uri = ? RETURNING track_uri, listened_ms, completed, stream, paid",
                         (ctx.uri,))
    row = cur.fetchone()
    if row:
        stats.add_play(ctx.tx, row[0], ctx.did, row[1], bool(row[2]), sign=-1, stream=bool(row[3]), paid=bool(row[4]))
