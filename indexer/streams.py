"""Which plays are streams, and which streams are paid (the rules payouts and stats share).

A play (``fm.openmusic.listen.play``) is a **stream** when it was heard for at least
``min(STREAM_MIN_MS, duration / 2)`` and it is among the first ``DAILY_CAP`` streams of that track
by that listener on that UTC day (so one listener cannot farm counts). A stream is **paid** when
its listener held a paid tier for the play's time (``sort_at``): a paid Stripe invoice whose
service period covers it (table ``subscription_invoice``). Its weight in payouts is
``stream_ms`` = the milliseconds heard, at most the track's duration.

The flags are decided when the play is indexed; a subscription paid later (webhook after the plays)
turns that listener's free streams of the period into paid ones (``mark_paid``). Columns:
``play.stream``, ``play.paid``, ``play.stream_ms``; counters ``track_stats.paid_streams`` and
``track_stats.free_streams``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

#: A play shorter than this (or than half the track, if less) is not a stream, ms.
STREAM_MIN_MS = 30_000
#: Streams of one track by one listener counted per UTC day.
DAILY_CAP = 10


@dataclass(frozen=True, slots=True)
class Stream:
    """The decision for one play: ``stream`` (counts), ``paid``, ``ms`` (payout weight)."""

    stream: bool
    paid: bool
    ms: int


def threshold_ms(duration_ms: int | None) -> int:
    """The shortest listen that is a stream: 30 s, or half the track when that is less."""
    return STREAM_MIN_MS if not duration_ms else max(1, min(STREAM_MIN_MS, duration_ms // 2))


def holds_paid_tier(tx: sqlite3.Connection, did: str, at: str) -> bool:
    """Whether ``did`` held a paid tier at ``at`` (ISO 8601 UTC): a paid invoice covers it."""
    return tx.execute("SELECT 1 FROM subscription_invoice WHERE did = ? AND status = 'paid' AND period_start <= ? "
                      "AND period_end > ? LIMIT 1", (did, at, at)).fetchone() is not None


def classify(tx: sqlite3.Connection, did: str, track_uri: str, sort_at: str, listened_ms: int) -> Stream:
    """Decide a play about to be indexed (see the module docstring)."""
    row = tx.execute("SELECT duration_ms FROM track WHERE uri = ?", (track_uri,)).fetchone()
    duration = row[0] if row else None
    if listened_ms < threshold_ms(duration):
        return Stream(False, False, 0)
    day = sort_at[:10]
    (today,) = tx.execute("SELECT count(*) FROM play WHERE did = ? AND track_uri = ? AND stream = 1 AND sort_at >= ? "
                          "AND sort_at < ?", (did, track_uri, day, day + "T99")).fetchone()
    if today >= DAILY_CAP:
        return Stream(False, False, 0)
    ms = min(listened_ms, duration) if duration else listened_ms
    return Stream(True, holds_paid_tier(tx, did, sort_at), ms)


def mark_paid(tx: sqlite3.Connection, did: str, start: str, end: str) -> int:
    """Turn ``did``'s free streams in [``start``, ``end``) into paid ones (a paid invoice for that
    period was recorded); returns how many changed. The listener's stats move with them."""
    rows = tx.execute("UPDATE play SET paid = 1 WHERE did = ? AND stream = 1 AND paid = 0 AND sort_at >= ? "
                      "AND sort_at < ? RETURNING track_uri", (did, start, end)).fetchall()
    for (track_uri,) in rows:
        tx.execute("UPDATE track_stats SET paid_streams = paid_streams + 1, free_streams = free_streams - 1 "
                   "WHERE track_uri = ?", (track_uri,))
    return len(rows)
