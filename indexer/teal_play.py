"""teal.fm scrobbles -> table ``teal_play`` (issue 14, "Interop with the other music apps on ATProto").

``fm.teal.feed.play`` (stable) is the shared scrobble record that teal.fm's piper, Rocksky and
plyr.fm write into the listener's repo; ``fm.teal.alpha.feed.play`` is its legacy namespace, still
written by piper (teal-fm/teal, ``lexicons/fm.teal/feed/play.json``; the alpha one as of commit
``f661868``, before ``6774385`` "remove alpha namespace"). Both lexicons are vendored under
``lexicons/fm/teal/`` and every record is validated against its own (``check``). This module
handles the stable collection; ``indexer.teal_alpha_play`` the legacy one with the same code.

Differences handled (music-lexicons-and-payments.md A.3): MBIDs are accepted as ``mbid:<uuid>`` or
as a bare UUID (piper writes bare ones, which the lexicon's ``format: uri`` refuses: they are
checked as ``mbid:<uuid>``); artists come from ``artists[].artistName``, else the deprecated
``artistNames``; the service from ``musicServiceUri``, else the alpha ``musicServiceBaseDomain``;
``duration`` is in seconds; ``playedTime`` is optional (else the TID record key's time, else the
indexing time).

**Linking rule** (``link``): a play is linked to one of our indexed tracks when its *recording*
and its *artist* both match one:

- recording: the play's ``isrc`` equals the track record's ``isrc`` (upper case, hyphens
  removed), or the play's ``trackName`` equals the track's title after ``normalize`` (Unicode
  NFKC, case folded, runs of white space made one space, trimmed; the candidates are found through
  an index on the title compared ASCII-case-insensitively with the normalized name, so a title
  with extra spaces, or whose non-ASCII letters differ in case, matches by ISRC only);
- artist: one of the play's artist names, normalized, equals the track artist's display name
  (``fm.openmusic.actor.profile``), handle, or, for a track indexed from plyr.fm, the record's
  ``artist`` string, normalized.

ISRC candidates are tried first, then title ones, each oldest first; the first whose artist
matches wins. A play indexed before its track is linked when the track appears
(``track_appeared``).

**Counting**: a teal play is a play *shown apart*: it carries no heard segments and earns nothing
(never a stream, never in payouts, charts or ``track_stats``); ``listen.getTrackStats`` counts
``tealPlays`` and ``listen.getPlays`` lists it with ``origin``. The same play written in both
namespaces (or twice in one at the same ``playedTime``) is kept once: a later copy by the same
listener of the same normalized track name, from the other namespace within ``DUPLICATE_WINDOW_S``
seconds (or the same namespace at the same instant), is marked ``duplicate`` and neither listed
nor counted; deleting the kept one promotes its duplicate. The teal copy that our web app writes of
one of our plays (``OWN_AGENT_PREFIX``) is kept the same way: the play is already ours.

The listener's opt-in to those copies (``teal_scrobble``) is read and set with
``scrobbles_enabled`` / ``set_scrobbles`` (the web app's ``/me`` setting).
"""

from __future__ import annotations

import json
import re
import sqlite3
import unicodedata
from datetime import UTC, datetime
from typing import Any

from core.db import normalize_datetime
from core.lexicons import TRACK, validate_record
from core.tid import ALPHABET, is_tid
from indexer.base import WriteContext

COLLECTION = "fm.teal.feed.play"
#: The legacy namespace of the same record (``indexer.teal_alpha_play``).
ALPHA_COLLECTION = "fm.teal.alpha.feed.play"
#: Not one of our lexicons: ``indexer.core`` runs ``check_foreign`` (data model, ``$type``, TID
#: key), then ``check`` validates against the vendored teal lexicon.
LEXICON = False
#: Two copies of one play in the two namespaces are at most this far apart (seconds, ``playedTime``).
DUPLICATE_WINDOW_S = 120
#: ``submissionClientAgent`` prefix of the teal plays our own web app writes for listeners who opt
#: in (``web.pages``): each copies a play of ours, already listed and counted, so it is kept as
#: ``duplicate = 2`` (neither listed nor counted again).
OWN_AGENT_PREFIX = "fm.openmusic.web/"
#: The MusicBrainz ID fields (format ``uri``, ``mbid:<uuid>``; bare UUIDs accepted).
MBID_FIELDS = ("trackMbId", "recordingMbId", "releaseMbId")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_SPACE = re.compile(r"\s+")


def normalize(text: Any) -> str:
    """A name as compared when linking: Unicode NFKC, case folded, white space collapsed, trimmed
    (``""`` for a non-string)."""
    if not isinstance(text, str):
        return ""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def normalize_isrc(isrc: Any) -> str | None:
    """An ISRC as compared: upper case, without hyphens or spaces; None when empty or not a string."""
    if not isinstance(isrc, str):
        return None
    got = isrc.replace("-", "").replace(" ", "").upper()
    return got or None


def _mbid_as_uri(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with bare-UUID MBIDs written ``mbid:<uuid>`` (what the lexicon's ``format: uri``
    accepts), at the top level and in ``artists[].artistMbId``. The record itself is not changed."""
    def fix(value: Any) -> Any:
        return f"mbid:{value}" if isinstance(value, str) and _UUID.match(value) else value
    out = dict(record)
    for name in MBID_FIELDS:
        if name in out:
            out[name] = fix(out[name])
    if isinstance(out.get("artists"), list):
        out["artists"] = [{**a, "artistMbId": fix(a["artistMbId"])} if isinstance(a, dict) and "artistMbId" in a
                          else a for a in out["artists"]]
    return out


def check_play(collection: str, record: dict[str, Any]) -> None:
    """Validate ``record`` against the vendored lexicon of ``collection`` (``fm.teal.feed.play`` or
    ``fm.teal.alpha.feed.play``), bare-UUID MBIDs accepted. Raises ``RecordInvalid`` (``lexicon``)."""
    validate_record(collection, _mbid_as_uri(record))


def check(record: dict[str, Any]) -> None:
    """Validate an ``fm.teal.feed.play`` record (``check_play``). Raises ``RecordInvalid``."""
    check_play(COLLECTION, record)


def artist_names(record: dict[str, Any]) -> list[str]:
    """The play's artist names, in order: ``artists[].artistName``, else the deprecated ``artistNames``."""
    artists = record.get("artists")
    if isinstance(artists, list) and artists:
        return [a["artistName"] for a in artists if isinstance(a, dict) and isinstance(a.get("artistName"), str)]
    names = record.get("artistNames")
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def tid_time(rkey: str) -> str | None:
    """The time a TID record key holds (atproto datetime, ms), or None for another key."""
    if not is_tid(rkey):
        return None
    n = 0
    for ch in rkey:
        n = n * 32 + ALPHABET.index(ch)
    micros = n >> 10
    try:
        return datetime.fromtimestamp(micros / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    except (OverflowError, OSError, ValueError):
        return None


def _track_artist_names(tx: sqlite3.Connection, did: str, plyr_artist: Any) -> set[str]:
    """Normalized names a track's artist goes by here: profile display name, handle, and for a
    plyr.fm track the record's ``artist`` string (``plyr_artist``; None for ours)."""
    row = tx.execute("SELECT (SELECT display_name FROM profile WHERE did = ?), (SELECT handle FROM actor WHERE did = ?)",
                     (did, did)).fetchone()
    names = {normalize(n) for n in (row or ()) if n}
    names.add(normalize(plyr_artist))
    names.discard("")
    return names


def link(tx: sqlite3.Connection, title_norm: str, isrc: str | None, artists: list[str]) -> str | None:
    """The AT-URI of the indexed track this play is of (the linking rule in the module docstring), or None."""
    wanted = {normalize(a) for a in artists} - {""}
    if not wanted:
        return None
    candidates: list[tuple[str, str, str, str | None, str]] = []
    if isrc:
        candidates += tx.execute(
            "SELECT t.uri, t.did, t.title, t.origin, r.json FROM record r JOIN track t ON t.uri = r.uri "
            "WHERE r.collection = ? AND upper(replace(json_extract(r.json, '$.isrc'), '-', '')) = ? "
            "ORDER BY t.sort_at, t.uri", (TRACK, isrc)).fetchall()
    candidates += [c for c in tx.execute(
        "SELECT t.uri, t.did, t.title, t.origin, r.json FROM track t LEFT JOIN record r ON r.uri = t.uri "
        "WHERE lower(t.title) = lower(?) ORDER BY t.sort_at, t.uri", (title_norm,)).fetchall()
        if normalize(c[2]) == title_norm]
    for uri, did, _title, origin, raw in candidates:
        if wanted & _track_artist_names(tx, did, json.loads(raw).get("artist") if origin and raw else None):
            return uri
    return None


def insert_play(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one teal play of either namespace (``ctx.collection``): its row in ``teal_play``, marked
    ``duplicate`` when it repeats one already kept, and linked to our track when one matches."""
    names = artist_names(record)
    title_norm = normalize(record["trackName"])
    isrc = normalize_isrc(record.get("isrc"))
    explicit = normalize_datetime(record.get("playedTime"))
    played = explicit or tid_time(ctx.rkey) or ctx.now
    at = min(played, ctx.now)
    duration = record.get("duration")
    service = record.get("musicServiceUri") or record.get("musicServiceBaseDomain")
    duplicate = 0
    agent = record.get("submissionClientAgent")
    if isinstance(agent, str) and agent.startswith(OWN_AGENT_PREFIX):
        duplicate = 2
    elif explicit:
        duplicate = 1 if ctx.tx.execute(
            "SELECT 1 FROM teal_play WHERE did = ? AND title_norm = ? AND duplicate = 0 AND uri != ? AND "
            "((collection != ? AND abs(julianday(played_at) - julianday(?)) * 86400 <= ?) "
            " OR (collection = ? AND played_at = ?)) LIMIT 1",
            (ctx.did, title_norm, ctx.uri, ctx.collection, played, DUPLICATE_WINDOW_S, ctx.collection, played),
        ).fetchone() else 0
    ctx.tx.execute(
        "INSERT INTO teal_play (uri, did, rkey, cid, collection, track_name, artist_names, release_name, duration_s, "
        "music_service, client_agent, title_norm, isrc, played_at, sort_at, track_uri, duplicate, indexed_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, ctx.collection, record["trackName"],
         json.dumps(names, separators=(",", ":"), ensure_ascii=False), record.get("releaseName"),
         duration if isinstance(duration, int) else None, service if isinstance(service, str) else None,
         agent, title_norm, isrc, played, at,
         link(ctx.tx, title_norm, isrc, names), duplicate, ctx.now))


def delete_play(ctx: WriteContext) -> None:
    """Remove a teal play; when it was the kept copy, its duplicate (if any) is kept instead."""
    row = ctx.tx.execute("DELETE FROM teal_play WHERE uri = ? RETURNING did, title_norm, played_at, duplicate",
                         (ctx.uri,)).fetchone()
    if row and row[3] == 0:
        did, title_norm, played, _ = row
        ctx.tx.execute(
            "UPDATE teal_play SET duplicate = 0 WHERE uri = (SELECT uri FROM teal_play WHERE did = ? AND title_norm = ? "
            "AND duplicate = 1 AND abs(julianday(played_at) - julianday(?)) * 86400 <= ? ORDER BY indexed_at, uri "
            "LIMIT 1)", (did, title_norm, played, DUPLICATE_WINDOW_S))


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one ``fm.teal.feed.play`` (``insert_play``)."""
    insert_play(ctx, record)


def delete(ctx: WriteContext) -> None:
    """Remove one ``fm.teal.feed.play`` (``delete_play``)."""
    delete_play(ctx)


def track_appeared(tx: sqlite3.Connection, track_uri: str, did: str, record: dict[str, Any],
                   plyr_artist: str | None = None) -> int:
    """A track (``track_uri`` by ``did``; ``record`` as indexed, ``plyr_artist`` the ``artist`` of a
    plyr.fm record) was indexed, created or updated: link to it the still unlinked teal plays it
    matches (same normalized title, or same ISRC, and an artist name in common: the rule of
    ``link``). Call from the track's ``insert``, before or after its ``record`` row is written.
    Returns how many plays were linked."""
    isrc = normalize_isrc(record.get("isrc"))
    plays = tx.execute(
        "SELECT uri, artist_names FROM teal_play WHERE track_uri IS NULL AND title_norm = ? "
        "UNION SELECT uri, artist_names FROM teal_play WHERE track_uri IS NULL AND isrc = ?",
        (normalize(record.get("title")), isrc)).fetchall()
    if not plays:
        return 0
    names = _track_artist_names(tx, did, plyr_artist)
    linked = 0
    for uri, artists in plays:
        if names & {normalize(a) for a in json.loads(artists)}:
            tx.execute("UPDATE teal_play SET track_uri = ? WHERE uri = ?", (track_uri, uri))
            linked += 1
    return linked


async def scrobbles_enabled(db: Any, did: str) -> bool:
    """Whether ``did`` asked our web app to also write a teal play for each of their plays
    (``db``: an ``aiosqlite`` connection to the index database; table ``teal_scrobble``)."""
    cur = await db.execute("SELECT 1 FROM teal_scrobble WHERE did = ?", (did,))
    return await cur.fetchone() is not None


async def set_scrobbles(db: Any, did: str, on: bool, now: str) -> None:
    """Turn ``did``'s teal copies on (``now``: an atproto datetime) or off: one statement, on a
    connection that autocommits (``core.db.connect``)."""
    if on:
        await db.execute("INSERT OR IGNORE INTO teal_scrobble (did, enabled_at) VALUES (?, ?)", (did, now))
    else:
        await db.execute("DELETE FROM teal_scrobble WHERE did = ?", (did,))
