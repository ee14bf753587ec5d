"""plyr.fm tracks (``fm.plyr.track``) whose audio is a blob in the creator's PDS -> our catalog
(tables ``track`` with ``origin = 'fm.plyr.track'``, ``track_fts``; issue 14, "Interop with the
other music apps on ATProto").

The record shape is plyr.fm's published lexicon (zzstoatzz/plyr.fm ``lexicons/track.json`` at
``b156152f``, vendored as ``lexicons/fm/plyr/track.json``): required ``title``, ``artist`` (a
display string), ``fileType``, ``createdAt``; the audio is ``audioBlob`` (a blob, ``audio/*``, up to
100 MB, "canonical when present") and/or ``audioUrl`` (a URL on plyr's CDN); ``duration`` is in
**seconds**; ``imageUrl`` is a URL, not a blob (so no artwork here); ``supportGate`` asks for
atprotofans supporters only.

A track enters the catalog under its own AT-URI (``at://did/fm.plyr.track/rkey``) with the fields
our catalog holds (title, ``duration * 1000`` ms, the audio blob's CID, media type and size,
``createdAt``), and the record as published in ``record``: search, the audio proxy (which serves
blobs that an indexed ``track`` row references, from the creator's PDS) and the views then treat it
as any track, with ``origin`` set. Skipped and counted (``RecordInvalid``): records that fail the
lexicon (``lexicon``), whose audio is only a URL elsewhere (``no_audio_blob``: we serve only blobs
of the creator's own repo), whose blob declares no single audio type (``lexicon``), without a
positive ``duration`` (``no_duration``: stream rules need the length), and supporter-gated ones
(``support_gated``: the artist asked for supporters only, which we cannot check).
"""

from __future__ import annotations

from typing import Any

from core.db import normalize_datetime, sort_at
from core.lexicons import RecordInvalid, validate_record
from indexer import search, stats, streams, teal_play
from indexer import track as om_track
from indexer.base import WriteContext, blob_cid, upsert

COLLECTION = "fm.plyr.track"
#: Not one of our lexicons: ``indexer.core`` runs ``check_foreign`` (data model, ``$type``, TID
#: key), then ``check`` validates against the vendored plyr.fm lexicon.
LEXICON = False
#: The value of ``track.origin`` (and of ``origin`` in ``catalog.defs#trackView``) for these tracks.
ORIGIN = COLLECTION

#: The row of one record (``INSERT OR REPLACE`` in SQL both engines run: ``indexer.base.upsert``).
_UPSERT = upsert("track", "uri", [
    "uri", "did", "rkey", "cid", "title", "duration_ms", "audio_cid", "audio_mime", "audio_size",
    "explicit", "created_at", "sort_at", "indexed_at", "origin"],
    "?,?,?,?,?,?,?,?,?,0,?,?,?,?")



def check(record: dict[str, Any]) -> None:
    """Validate against the vendored ``fm.plyr.track`` lexicon, then require an ``audioBlob`` of one
    audio type, a positive ``duration`` and no ``supportGate``. Raises ``RecordInvalid``
    (``lexicon``, ``no_audio_blob``, ``no_duration``, ``support_gated``)."""
    validate_record(COLLECTION, record)
    if "audioBlob" not in record:
        raise RecordInvalid("no_audio_blob", "the audio is only a URL elsewhere, not a blob in the creator's repo")
    om_track.check_blob_type(record, "audioBlob", "audio")
    if not record.get("duration"):
        raise RecordInvalid("no_duration", "the track has no duration (seconds)")
    if record.get("supportGate") is not None:
        raise RecordInvalid("support_gated", "the artist keeps this track for their supporters")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one plyr.fm track (create, or the insert half of an update) into ``track``, search and
    stats, as ``indexer.track.insert`` does for ours; plays, likes and teal plays of it that came
    first are decided, counted and linked."""
    audio = record["audioBlob"]
    created = normalize_datetime(record["createdAt"]) or ctx.now
    search.unindex_track(ctx.tx, ctx.uri)
    ctx.tx.execute(
        _UPSERT,
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, record["title"], record["duration"] * 1000, blob_cid(audio),
         audio["mimeType"], audio.get("size"), created, sort_at(record["createdAt"], ctx.now), ctx.now, ORIGIN))
    ctx.tx.execute("INSERT OR IGNORE INTO track_stats (track_uri) VALUES (?)", (ctx.uri,))
    search.index_track(ctx.tx, ctx.uri, ctx.did, record)
    streams.track_appeared(ctx.tx, ctx.uri)
    stats.recount_likes(ctx.tx, ctx.uri)
    teal_play.track_appeared(ctx.tx, ctx.uri, ctx.did, record, plyr_artist=record["artist"])


def delete(ctx: WriteContext) -> None:
    """Remove a plyr.fm track from the catalog (as ``indexer.track.delete``)."""
    om_track.delete(ctx)
