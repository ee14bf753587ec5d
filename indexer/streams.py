"""Which plays are streams, and which streams are paid (the rules payouts and stats share).

A play record (``fm.openmusic.listen.play``) is written by the listener, about a track URI, a
``listenedMs`` and a ``createdAt`` the listener chooses. None of that is evidence, so a play is a
**stream** (it earns, paid or free) only when all of these hold:

- **its track is indexed**: a play of a URI we hold no track record for is kept and counted as a
  play but earns nothing; it is decided when that track appears (firehose order across repos is
  arbitrary, and a backfill brings tracks and plays in any order: ``track_appeared``);
- **it is dated honestly**: its ``createdAt`` is at most ``FUTURE_TOLERANCE_MS`` after we first
  indexed the play, at most ``MAX_AGE_MS`` before it (a player that was offline for a week still
  earns; older claims, and history a backfill imports later, do not), and not before the track
  existed (the track's ``sort_at``: its ``createdAt``, never later than when we first indexed it),
  less ``TRACK_TOLERANCE_MS``;
- **its audio was up**: a play indexed while its track's audio is taken down after a copyright
  claim (``indexer.audio_takedown``) earns nothing, also when the audio comes back later;
- **it was heard long enough**: its weight, ``heard_ms`` = ``min(listenedMs, duration)``, or with
  ``segments`` ``min(listenedMs, |union of the segments within [0, duration]|)``, is at least
  ``min(STREAM_MIN_MS, duration / 2)``;
- **within the listener's caps**, per UTC day of ``sort_at``: at most ``DAILY_CAP`` streams of one
  (real, indexed) track, and at most ``DAILY_MS_CAP`` (24 h) of stream weight in all, and no more
  than the day had lasted when the play was indexed (plus ``FUTURE_TOLERANCE_MS``): nobody
  listens more than the day holds. A stream that would pass a cap is cut to what is left (and is
  no stream if that is under the threshold). The caps are per listener, so one listener's plays
  can never change another's.

A stream is **paid** when its listener held a paid tier at the play's time (``sort_at``): a paid
Stripe invoice whose service period covers it (table ``subscription_invoice``). Its weight in
payouts is ``stream_ms`` (ms, at most ``heard_ms``).

Decisions are made once per play, in the order plays are indexed (a play arriving before its track
is decided when the track appears, in ``sort_at`` order); a later play never changes an earlier
decision. A subscription paid later (webhook after the plays) turns that listener's free streams of
the period into paid ones (``mark_paid``). A deleted track keeps its plays' decisions, but the
period close pays only tracks indexed, of active accounts, at close time (``payments.period``): a
track's deletion takes its streams out of every period not yet closed, and re-creating it brings
them back. Columns: ``play.heard_ms`` (NULL while the track is unknown), ``play.segments`` (the
merged segments, JSON), ``play.stream``, ``play.paid``, ``play.stream_ms``; table ``listener_day``
(stream weight per listener and UTC day); counters ``track_stats.paid_streams`` and
``free_streams``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from core.db import parse_datetime
from indexer import audio_takedown, rollups, standing, stats

#: A play shorter than this (or than half the track, if less) is not a stream, ms.
STREAM_MIN_MS = 30_000
#: Streams of one track by one listener counted per UTC day.
DAILY_CAP = 10
#: One day, ms.
DAY_MS = 86_400_000
#: Stream weight one listener can earn per UTC day, ms: nobody listens more than 24 h a day.
DAILY_MS_CAP = DAY_MS
#: How far in the future a play's ``createdAt`` may be, against our clock when we index it, ms.
FUTURE_TOLERANCE_MS = 5 * 60_000
#: How long before its indexing a play's ``createdAt`` may be, ms (7 days).
MAX_AGE_MS = 7 * DAY_MS
#: How long before the track's own date a play's ``createdAt`` may be (clock skew), ms.
TRACK_TOLERANCE_MS = 5 * 60_000


@dataclass(frozen=True, slots=True)
class Stream:
    """The decision for one play: ``stream`` (counts), ``paid``, ``ms`` (payout weight) and
    ``heard`` (the capped ms heard, what stats count; None while the track is unknown)."""

    stream: bool
    paid: bool
    ms: int
    heard: int | None


NOT_YET = Stream(False, False, 0, None)


def threshold_ms(duration_ms: int | None) -> int:
    """The shortest listen that is a stream, ms: 30 s, or half the track when that is less."""
    return STREAM_MIN_MS if not duration_ms else max(1, min(STREAM_MIN_MS, duration_ms // 2))


def epoch_ms(value: str | None) -> int | None:
    """A normalized datetime string (``core.db.normalize_datetime``) -> Unix ms, or None."""
    parsed = parse_datetime(value)
    return None if parsed is None else int(parsed.timestamp() * 1000)


def merge_segments(segments: Iterable[dict] | None) -> list[list[int]] | None:
    """A play's ``segments`` [{startMs, endMs}] -> their union as sorted, disjoint [start, end]
    pairs (ms into the track), or None when the play has none."""
    pairs = sorted((int(s["startMs"]), int(s["endMs"])) for s in segments or [] if s["endMs"] >= s["startMs"])
    if not pairs:
        return None
    out: list[list[int]] = []
    for start, end in pairs:
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def heard_ms(listened_ms: int, segments: list[list[int]] | None, duration_ms: int) -> int:
    """What a play can have been heard for, ms: ``listenedMs``, at most the track's duration and,
    when the play lists segments, at most their union within the track."""
    heard = max(0, min(listened_ms, duration_ms))
    if segments is not None:
        heard = min(heard, sum(max(0, min(end, duration_ms) - start) for start, end in segments))
    return heard


def dated_honestly(created_at: str | None, indexed_at: str, track_since: str) -> bool:
    """Whether a play claiming ``created_at`` and first indexed at ``indexed_at`` may earn from a
    track that exists since ``track_since`` (see the module docstring)."""
    created, indexed, since = epoch_ms(created_at), epoch_ms(indexed_at), epoch_ms(track_since)
    if created is None or indexed is None or since is None:
        return False
    return (indexed - MAX_AGE_MS <= created <= indexed + FUTURE_TOLERANCE_MS
            and created >= since - TRACK_TOLERANCE_MS)


def day_budget_ms(day: str, indexed_at: str) -> int:
    """Stream weight a listener can have on UTC ``day`` (YYYY-MM-DD), as known at ``indexed_at``:
    24 h, or what of the day had passed by then (plus the tolerance), ms."""
    start, indexed = epoch_ms(day + "T00:00:00.000Z"), epoch_ms(indexed_at)
    if start is None or indexed is None:
        return 0
    return max(0, min(DAILY_MS_CAP, indexed - start + FUTURE_TOLERANCE_MS))


def holds_paid_tier(tx: sqlite3.Connection, did: str, at: str) -> bool:
    """Whether ``did`` held a paid tier at ``at`` (ISO 8601 UTC): a paid invoice covers it."""
    return tx.execute("SELECT 1 FROM subscription_invoice WHERE did = ? AND status = 'paid' AND period_start <= ? "
                      "AND period_end > ? LIMIT 1", (did, at, at)).fetchone() is not None


def classify(tx: sqlite3.Connection, did: str, track_uri: str, created_at: str | None, sort_at: str,
             indexed_at: str, listened_ms: int, segments: list[list[int]] | None) -> Stream:
    """Decide one play of ``track_uri`` by ``did`` that is not (yet) counted anywhere, against the
    listener's streams decided so far (see the module docstring). ``created_at`` is the play's
    normalized ``createdAt`` (None if unreadable), ``indexed_at`` when we first indexed it,
    ``segments`` as ``merge_segments`` gives them."""
    row = tx.execute("SELECT duration_ms, sort_at FROM track WHERE uri = ?", (track_uri,)).fetchone()
    if row is None:
        return NOT_YET
    duration, since = row
    heard = heard_ms(listened_ms, segments, duration)
    need = threshold_ms(duration)
    if heard < need or not dated_honestly(created_at, indexed_at, since) or audio_takedown.taken_down(tx, track_uri):
        return Stream(False, False, 0, heard)
    day = sort_at[:10]
    (today,) = tx.execute(_TODAY_SQL, (did, track_uri, day, day + "T99")).fetchone()
    if today >= DAILY_CAP:
        return Stream(False, False, 0, heard)
    used = tx.execute("SELECT stream_ms FROM listener_day WHERE did = ? AND day = ?", (did, day)).fetchone()
    ms = min(heard, day_budget_ms(day, indexed_at) - (used[0] if used else 0))
    if ms < need:
        return Stream(False, False, 0, heard)
    return Stream(True, holds_paid_tier(tx, did, sort_at), ms, heard)


_TODAY_SQL = ("SELECT count(*) FROM play WHERE did = ? AND track_uri = ? AND stream = 1 AND sort_at >= ? "
              "AND sort_at < ?")
#: Everything ``classify`` reads, and the listener's ``actor.counted`` (``standing.is_counted``), in
#: one statement: one round trip per new play instead of six (``classify_new``).
_FACTS_SQL = (
    "SELECT t.duration_ms, t.sort_at, "
    f"CASE WHEN t.uri IS NOT NULL AND {audio_takedown.AUDIO_DOWN_SQL.format(alias='t')} THEN 1 ELSE 0 END, "
    f"({_TODAY_SQL}), "
    "(SELECT stream_ms FROM listener_day WHERE did = ? AND day = ?), "
    "CASE WHEN EXISTS (SELECT 1 FROM subscription_invoice WHERE did = ? AND status = 'paid' AND period_start <= ? "
    "AND period_end > ?) THEN 1 ELSE 0 END, "
    "(SELECT counted FROM actor WHERE did = ?) "
    "FROM (SELECT 1 AS one) AS one LEFT JOIN track t ON t.uri = ?")


#: What ``BatchFacts`` reads per (listener, track, day): ``_FACTS_SQL`` without the invoice.
_KEY_FACTS_SQL = (
    "SELECT t.duration_ms, t.sort_at, "
    f"CASE WHEN t.uri IS NOT NULL AND {audio_takedown.AUDIO_DOWN_SQL.format(alias='t')} THEN 1 ELSE 0 END, "
    f"({_TODAY_SQL}), "
    "(SELECT stream_ms FROM listener_day WHERE did = ? AND day = ?), "
    "(SELECT counted FROM actor WHERE did = ?) "
    "FROM (SELECT 1 AS one) AS one LEFT JOIN track t ON t.uri = ?")


class BatchFacts:
    """What ``classify_new`` reads, for the new plays of one batch of the indexer, read before the
    batch is applied and kept up to date while its plays are decided: on PostgreSQL a new play then
    needs no statement that waits for the server (the indexer runs its batches in pipeline mode).

    ``keys``: (listener DID, track AT-URI, UTC day ``YYYY-MM-DD``) of the batch's new plays. The
    statements are all sent before any answer is read (one round trip). The facts hold only while
    nothing else writes what they mirror: tracks, labels, the listeners' standing, other plays'
    decisions, invoices. The indexer drops its ``BatchFacts`` at the first op or event of its
    batch that is not a new play, a like or a follow (``indexer.core``). Decisions are those of
    ``classify`` (``tests/test_indexer_batch.py`` compares them)."""

    def __init__(self, tx: sqlite3.Connection, keys: Iterable[tuple[str, str, str]]) -> None:
        keys = sorted(set(keys))
        dids = sorted({k[0] for k in keys})
        # PostgreSQL (pipeline mode): send every statement, then read the answers (one round trip).
        # SQLite: read each answer at once, so the prepared statement is reused, not prepared anew
        read_later = not isinstance(tx, sqlite3.Connection)

        def run(sql: str, args: tuple, fetch: str) -> Any:
            cur = tx.execute(sql, args)
            return cur if read_later else getattr(cur, fetch)()

        def answer(pending: Any, fetch: str) -> Any:
            return getattr(pending, fetch)() if read_later else pending

        key_cursors = [(k, run(_KEY_FACTS_SQL, (k[0], k[1], k[2], k[2] + "T99", k[0], k[2], k[0], k[1]), "fetchone"))
                       for k in keys]
        invoice_cursors = [(did, run("SELECT period_start, period_end FROM subscription_invoice "
                                     "WHERE did = ? AND status = 'paid'", (did,), "fetchall")) for did in dids]
        #: track URI -> (duration ms, track sort_at, audio taken down) or None: not indexed
        self.tracks: dict[str, tuple[int, str, bool] | None] = {}
        #: (listener, track, day) -> streams of that track that listener has that day
        self.today: dict[tuple[str, str, str], int] = {}
        #: (listener, day) -> stream weight booked that day (``listener_day``), ms
        self.used: dict[tuple[str, str], int] = {}
        #: listener -> ``actor.counted`` (None: no actor row yet)
        self.counted: dict[str, int | None] = {}
        #: listener -> the service periods (start, end) of their paid invoices
        self.paid: dict[str, list[tuple[str, str]]] = {}
        for (did, track_uri, day), pending in key_cursors:
            duration, since, taken, today, used, counted = answer(pending, "fetchone")
            self.tracks[track_uri] = None if duration is None else (duration, since, bool(taken))
            self.today[(did, track_uri, day)] = today
            self.used[(did, day)] = used or 0
            self.counted[did] = counted
        for did, pending in invoice_cursors:
            self.paid[did] = [(start, end) for start, end in answer(pending, "fetchall")]

    def facts(self, did: str, track_uri: str, sort_at: str) -> tuple | None:
        """The row ``_FACTS_SQL`` would give for this play, or None when it is not covered."""
        day = sort_at[:10]
        key = (did, track_uri, day)
        if key not in self.today or did not in self.paid or self.counted[did] is None:
            return None  # not read; or a listener new to us, whose actor row (and standing) the batch makes
        track = self.tracks[track_uri]
        duration, since, taken = track if track is not None else (None, None, False)
        paid = any(start <= sort_at < end for start, end in self.paid[did])
        return duration, since, int(taken), self.today[key], self.used[(did, day)], int(paid), self.counted[did]

    def streamed(self, did: str, track_uri: str, sort_at: str, ms: int) -> None:
        """A new play of ``track_uri`` by ``did`` was decided a stream of weight ``ms``."""
        day = sort_at[:10]
        if (did, track_uri, day) in self.today:
            self.today[(did, track_uri, day)] += 1
        if (did, day) in self.used:
            self.used[(did, day)] += ms


def classify_new(tx: sqlite3.Connection, did: str, track_uri: str, created_at: str | None, sort_at: str,
                 indexed_at: str, listened_ms: int, segments: list[list[int]] | None,
                 facts: BatchFacts | None = None) -> tuple[Stream, bool]:
    """``classify`` (same arguments, same decision) for a play being inserted, reading what it needs
    in one statement (or from ``facts``, the batch's), plus whether ``did`` is counted
    (``standing.is_counted``): (decision, counted). On the current schema only (``classify`` also
    runs on old ones, in migrations)."""
    day = sort_at[:10]
    row = facts.facts(did, track_uri, sort_at) if facts is not None else None
    if row is None:
        row = tx.execute(_FACTS_SQL, (did, track_uri, day, day + "T99", did, day, did, sort_at, sort_at, did,
                                      track_uri)).fetchone()
    duration, since, taken, today, used, paid, counted = row
    counted = counted is None or bool(counted)
    if duration is None:
        return NOT_YET, counted
    heard = heard_ms(listened_ms, segments, duration)
    need = threshold_ms(duration)
    if heard < need or not dated_honestly(created_at, indexed_at, since) or taken:
        return Stream(False, False, 0, heard), counted
    if today >= DAILY_CAP:
        return Stream(False, False, 0, heard), counted
    ms = min(heard, day_budget_ms(day, indexed_at) - (used or 0))
    if ms < need:
        return Stream(False, False, 0, heard), counted
    if facts is not None:
        facts.streamed(did, track_uri, sort_at, ms)
    return Stream(True, bool(paid), ms, heard), counted


def book(tx: sqlite3.Connection, did: str, sort_at: str, ms: int) -> None:
    """Add (``ms`` > 0) or take back (< 0) a stream's weight in its listener's day."""
    tx.execute("INSERT INTO listener_day (did, day, stream_ms) VALUES (?,?,?) "
               "ON CONFLICT (did, day) DO UPDATE SET stream_ms = listener_day.stream_ms + excluded.stream_ms",
               (did, sort_at[:10], ms))


_PENDING = ("SELECT p.uri, p.did, p.track_uri, p.created_at, p.sort_at, p.indexed_at, p.listened_ms, p.segments, "
            "(a.active IS NULL OR a.active = 1) FROM play p LEFT JOIN actor a ON a.did = p.did WHERE p.heard_ms IS NULL ")


def _decide(tx: sqlite3.Connection, rows: list[tuple], count: bool) -> int:
    """Decide ``rows`` of ``_PENDING`` in order and store the decisions; with ``count``, move the
    stats of the plays of listeners in standing (``indexer.standing``). Returns how many were decided (their track is indexed)."""
    decided = 0
    for uri, did, track_uri, created_at, sort_at, indexed_at, listened, segments, _active in rows:
        s = classify(tx, did, track_uri, created_at, sort_at, indexed_at, listened,
                     json.loads(segments) if segments else None)
        if s.heard is None:
            continue
        tx.execute("UPDATE play SET heard_ms = ?, stream = ?, paid = ?, stream_ms = ? WHERE uri = ?",
                   (s.heard, int(s.stream), int(s.paid), s.ms, uri))
        if s.stream:
            book(tx, did, sort_at, s.ms)
        if count and standing.is_counted(tx, did):
            stats.add_decision(tx, track_uri, s.heard, s.stream, s.paid)
            rollups.decided(tx, uri)
        decided += 1
    return decided


def track_appeared(tx: sqlite3.Connection, track_uri: str) -> int:
    """A track was indexed: decide the plays of it that arrived before it (in ``sort_at`` order),
    and count them in its stats. Returns how many were decided."""
    rows = tx.execute(_PENDING + "AND p.track_uri = ? ORDER BY p.sort_at, p.uri", (track_uri,)).fetchall()
    return _decide(tx, rows, count=True)


def reevaluate_all(tx: sqlite3.Connection, page: int = 10_000) -> int:
    """Decide every play again from scratch, in ``sort_at`` order, ``page`` plays at a time (the
    migration that brought these rules). ``play.segments`` must be filled; the stats are left to
    ``stats.recount_all`` and the analytics to ``rollups.rebuild``. Returns how many were decided."""
    tx.execute("UPDATE play SET heard_ms = NULL, stream = 0, paid = 0, stream_ms = 0")
    tx.execute("DELETE FROM listener_day")
    decided, after = 0, ("", "")
    while rows := tx.execute(_PENDING + "AND (p.sort_at, p.uri) > (?, ?) ORDER BY p.sort_at, p.uri LIMIT ?",
                             (*after, page)).fetchall():
        decided += _decide(tx, rows, count=False)
        after = (rows[-1][4], rows[-1][0])
    return decided


def mark_paid(tx: sqlite3.Connection, did: str, start: str, end: str) -> int:
    """Turn ``did``'s free streams in [``start``, ``end``) into paid ones (a paid invoice for that
    period was recorded); returns how many changed. The stats and analytics rollups move with them
    while the listener's account is active (an inactive one's are counted back, as they are then, on
    reactivation)."""
    rows = tx.execute("UPDATE play SET paid = 1 WHERE did = ? AND stream = 1 AND paid = 0 AND sort_at >= ? "
                      "AND sort_at < ? RETURNING track_uri, sort_at", (did, start, end)).fetchall()
    if standing.is_counted(tx, did):
        for track_uri, at in rows:
            tx.execute("UPDATE track_stats SET paid_streams = paid_streams + 1, free_streams = free_streams - 1 "
                       "WHERE track_uri = ?", (track_uri,))
            rollups.became_paid(tx, track_uri, at)
    return len(rows)
