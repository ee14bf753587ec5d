"""``fm.openmusic.listen.play`` -> table ``play`` and the track's aggregates."""

from __future__ import annotations

import json
from typing import Any

from core.db import normalize_datetime, sort_at
from core.lexicons import PLAY, TRACK, TRACK_COLLECTIONS, RecordInvalid
from indexer import rollups, stats, streams
from indexer.base import WriteContext, split_uri

COLLECTION = PLAY


def check(record: dict[str, Any]) -> None:
    """``track`` must point at a track record; each segment must end at or after its start.
    Raises ``RecordInvalid``."""
    if split_uri(record["track"]["uri"])[1] not in TRACK_COLLECTIONS:
        raise RecordInvalid("bad_reference", f"play of {record['track']['uri']}, which is not a {TRACK} record")
    for seg in record.get("segments") or []:
        if seg["endMs"] < seg["startMs"]:
            raise RecordInvalid("bad_segment", f"segment ends ({seg['endMs']}) before it starts ({seg['startMs']})")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one play, decide whether it is a stream (paid or free, ``indexer.streams``; a play of a
    track not indexed yet is decided when the track appears) and count it in the track's stats and
    analytics rollups (``indexer.rollups``; the parts heard twice go to ``play.replayed``)."""
    track_uri = record["track"]["uri"]
    listened = record["listenedMs"]
    completed = bool(record.get("completed"))
    created = normalize_datetime(record["createdAt"])
    at = sort_at(record["createdAt"], ctx.now)
    segments = streams.merge_segments(record.get("segments"))
    s, counted = streams.classify_new(ctx.tx, ctx.did, track_uri, created, at, ctx.now, listened, segments,
                                      ctx.facts)
    heard = s.heard if s.heard is not None or created else 0  # an unreadable date never earns: decided now
    replayed = rollups.replayed_ms(record.get("segments"))
    country = (record.get("country") or "").upper() or None
    ctx.tx.execute(
        "INSERT INTO play (uri, did, rkey, cid, track_uri, track_cid, track_did, created_at, sort_at, listened_ms, "
        "completed, client, country, indexed_at, stream, paid, stream_ms, heard_ms, segments, replayed) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, track_uri, record["track"]["cid"], split_uri(track_uri)[0],
         created or ctx.now, at, listened, 1 if completed else 0, record.get("client"), country, ctx.now,
         int(s.stream), int(s.paid), s.ms, heard, json.dumps(segments, separators=(",", ":")) if segments else None,
         json.dumps(replayed, separators=(",", ":")) if replayed else None))
    if s.stream:
        streams.book(ctx.tx, ctx.did, at, s.ms)
    stats.add_play(ctx.tx, track_uri, ctx.did, heard or 0, completed, stream=s.stream, paid=s.paid, counted=counted)
    rollups.add_play(ctx.tx, ctx.did, track_uri, at, country, heard, s.stream, s.paid, segments, replayed,
                     counted=counted)
    stats.count_actor(ctx.tx, ctx.did, plays=1)


def delete(ctx: WriteContext) -> None:
    """Remove a play and uncount it (its weight leaves its listener's day; its rollups go too)."""
    cur = ctx.tx.execute("DELETE FROM play WHERE uri = ? RETURNING track_uri, heard_ms, completed, stream, paid, "
                         "stream_ms, sort_at, country, segments, replayed", (ctx.uri,))
    row = cur.fetchone()
    if row:
        track_uri, heard, completed, stream, paid, ms, at, country, segments, replayed = row
        if stream:
            streams.book(ctx.tx, ctx.did, at, -ms)
        stats.add_play(ctx.tx, track_uri, ctx.did, heard or 0, bool(completed), sign=-1, stream=bool(stream),
                       paid=bool(paid))
        rollups.add_play(ctx.tx, ctx.did, track_uri, at, country, heard, bool(stream), bool(paid), segments, replayed,
                         sign=-1)
        stats.count_actor(ctx.tx, ctx.did, plays=-1)
