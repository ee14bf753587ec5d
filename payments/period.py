"""Closing an accounting period: subscription fees and the ad pool become artists' earnings.

Periods are UTC calendar months (``YYYY-MM``). Money is integers in minor units throughout.

- **Subscriptions, user-centric.** Each paid Stripe invoice is one service period of one
  subscriber. Once that service period has ended, its net fee (``amount_paid - fee``) is split: the
  platform keeps ``floor(net * platform_bps / 10000)``; the rest, the pool, goes to the tracks *that
  subscriber* streamed during the service period, in proportion to the milliseconds heard
  (``play.stream_ms`` of paid streams, ``indexer.streams``), and within each track by its
  ``splits``. Only plays of tracks indexed at close time, not taken down, whose audio is not taken
  down after a copyright claim (``indexer.audio_takedown``), of artists in standing, by listeners in
  standing at close time (``indexer.standing``: active, not suspended or taken down by a label),
  can be streams, and a stream weighs at most its track's duration: what a listener claims about a
  track that does not exist, or heard longer than it lasts, earns nothing. One largest-remainder
  allocation over (track, recipient) weights ``ms * share_bps`` makes the parts sum to the pool
  exactly. A subscriber who streamed nothing leaves the pool to the platform (the line says so); so
  does a subscriber out of standing at close, whose streams count for nothing: the artists their
  plays favoured get none of it (a period closed before a suspension, or after it was lifted,
  stays as it was closed). The invoice counts in the period its service period starts in.
- **Ad pool, by free-tier listening.** The operator enters the period's ad revenue
  (``enter_ad_revenue``); at close it is split the same way over every free stream of the period.
- **Tips** are already earnings when settled (``payments.settle``).

Each invoice and each pool is one ledger transaction (idempotency keys ``share:<invoice id>`` and
``ads:<period>``), and ``earning_line`` rows say why each cent went where (``payment.getEarnings``).

Ledger accounts (``payments.ledger``): ``subscription:<did>`` (a subscriber's fees awaiting
distribution), ``ads:pool`` (entered ad revenue awaiting distribution), ``ads:income`` (its
counterpart: money from the ad network), ``platform:revenue``, ``earnings:<did>``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.db import now_iso
from indexer.audio_takedown import AUDIO_DOWN_SQL
from indexer.standing import in_standing
from payments import ledger
from payments.shares import allocate

PLATFORM = "platform:revenue"
AD_POOL = "ads:pool"
AD_INCOME = "ads:income"
PERIOD_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def subscription(did: str) -> str:
    """A subscriber's account: fees received, not yet split among artists."""
    return f"subscription:{did}"


def period_bounds(period: str) -> tuple[str, str]:
    """``YYYY-MM`` -> (first instant, first instant of the next month) as ISO 8601 UTC strings, the
    form ``sort_at`` uses. Raises ``ValueError`` on a malformed period."""
    m = PERIOD_RE.match(period or "")
    if not m:
        raise ValueError(f"period must be YYYY-MM, got {period!r}")
    year, month = int(m.group(1)), int(m.group(2))
    nxt = (year + 1, 1) if month == 12 else (year, month + 1)
    return f"{year:04d}-{month:02d}-01T00:00:00.000Z", f"{nxt[0]:04d}-{nxt[1]:02d}-01T00:00:00.000Z"


def iso(ts: int) -> str:
    """Unix seconds -> ISO 8601 UTC with milliseconds (the form ``sort_at`` uses)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def opaque(kind: str, ref: str, salt: str) -> str:
    """A reference an artist may see without learning who the subscriber is: ``kind:`` + the first
    16 hex digits of sha-256(salt, ref)."""
    return f"{kind}:{hashlib.sha256(f'{salt}:{ref}'.encode()).hexdigest()[:16]}"


def _splits(raw: str | None, track_did: str) -> list[tuple[str, int]]:
    splits = (json.loads(raw).get("splits") if raw else None) or [{"did": track_did, "shareBps": 10000}]
    return sorted((s["did"], int(s["shareBps"])) for s in splits)


def stream_weights(tx: sqlite3.Connection, start: str, end: str, listener: str | None,
                   paid: bool) -> list[tuple[tuple[str, str, int, int], int]]:
    """Weights for one split: [((track uri, recipient DID, share bps, ms heard), ms * bps)], sorted.
    The streams are ``listener``'s (None: everyone's) with ``paid`` status in [start, end), by
    listeners in standing now (``indexer.standing``), of tracks indexed now, not taken down and with
    their audio up (``indexer.audio_takedown``), whose artist is in standing too (``indexer.streams``:
    a play of anything else never earns). Each stream weighs at most the
    track's duration. The recipients are the track record's ``splits``, or else the DID of the repo
    that holds the track: never a DID taken from a URI a listener wrote."""
    args: list = [int(paid), start, end]
    who = ""
    if listener is not None:
        who = "AND p.did = ? "
        args.append(listener)
    rows = tx.execute(
        "SELECT t.uri, t.did, SUM(MIN(p.stream_ms, t.duration_ms)), r.json FROM play p "
        "JOIN track t ON t.uri = p.track_uri LEFT JOIN record r ON r.uri = t.uri "
        "LEFT JOIN actor a ON a.did = p.did LEFT JOIN actor ta ON ta.did = t.did "
        f"WHERE p.stream = 1 AND p.paid = ? AND p.sort_at >= ? AND p.sort_at < ? {who}"
        f"AND {in_standing('a')} AND {in_standing('ta')} AND COALESCE(t.hidden, 0) < 2 "
        f"AND NOT {AUDIO_DOWN_SQL.format(alias='t')} "
        "GROUP BY t.uri, t.did, r.json ORDER BY t.uri", args).fetchall()
    out = []
    for track_uri, track_did, ms, raw in rows:
        for did, bps in _splits(raw, track_did):
            out.append(((track_uri, did, bps, int(ms)), int(ms) * bps))
    return out


def _split(tx: sqlite3.Connection, key: str, kind: str, period: str, currency: str, source_account: str,
           amount: int, platform_cut: int, weights: list, source: str) -> tuple[int, int]:
    """Post one split (``amount`` out of ``source_account``: ``platform_cut`` to the platform, the
    rest by ``weights``) and write its earning lines. Returns (to the platform, to artists), (0, 0)
    when it was already posted."""
    weights = [(k, w) for k, w in weights if w > 0]  # a zero-length stream or a 0 bps split weighs nothing
    pool = amount - platform_cut
    per_track_ms: dict[str, int] = {}
    for (track, _did, _bps, ms), _w in weights:
        per_track_ms[track] = ms
    pool_ms = sum(per_track_ms.values())
    parts = allocate(pool, weights) if weights and pool else []
    to_platform = platform_cut + (pool if not weights else 0)
    earned: dict[str, int] = {}
    for (_track, did, _bps, _ms), share in parts:
        earned[did] = earned.get(did, 0) + share
    postings = [(source_account, -amount), (PLATFORM, to_platform)]
    postings += [(ledger.earnings(d), a) for d, a in sorted(earned.items())]
    if not ledger.post(tx, key, kind, currency, postings, ref=source,
                       memo=None if weights else "no streams in the period: the pool stays with the platform"):
        return 0, 0
    tx.executemany(
        "INSERT INTO earning_line (txn, period, kind, artist, track_uri, listened_ms, pool_ms, pool, share_bps, amount, "
        "currency, source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        [(key, period, kind, did, track, ms, pool_ms, pool, bps, share, currency, source)
         for (track, did, bps, ms), share in parts])
    return to_platform, amount - to_platform


@dataclass
class CloseReport:
    """What ``close_period`` did: invoices split, invoices still in service (``waiting``), whether
    the ad pool was split, and the minor units moved to earnings and to the platform."""

    period: str
    invoices: int = 0
    waiting: int = 0
    ads: bool = False
    to_artists: int = 0
    to_platform: int = 0
    problems: list[str] = field(default_factory=list)


def close_period(tx: sqlite3.Connection, period: str, platform_bps: int, salt: str, now: str | None = None) -> CloseReport:
    """Split every paid invoice whose service period starts in ``period`` and has ended by ``now``,
    and the period's ad pool once the period has ended. Safe to run again (each split posts once)
    and to run early (what has not ended waits). Raises ``ValueError`` on a bad period or share."""
    if not 0 <= platform_bps <= 10000:
        raise ValueError("platform share must be 0..10000 basis points")
    now = now or now_iso()
    start, end = period_bounds(period)
    report = CloseReport(period)
    rows = tx.execute(
        "SELECT id, did, period_start, period_end, amount_paid, fee, currency FROM subscription_invoice "
        "WHERE status = 'paid' AND distributed_txn IS NULL AND period_start >= ? AND period_start < ? ORDER BY id",
        (start, end)).fetchall()
    for inv, did, p_start, p_end, paid, fee, currency in rows:
        if p_end > now:
            report.waiting += 1
            continue
        net = paid - fee
        key = f"share:{inv}"
        weights = stream_weights(tx, p_start, p_end, did, paid=True)
        moved = _split(tx, key, "subscription_share", period, currency, subscription(did), net,
                       net * platform_bps // 10000, weights, opaque("invoice", inv, salt))
        report.to_platform += moved[0]
        report.to_artists += moved[1]
        tx.execute("UPDATE subscription_invoice SET distributed_txn = ?, updated_at = ? WHERE id = ?", (key, now, inv))
        report.invoices += 1
    pool = tx.execute("SELECT amount, currency, distributed_txn FROM ad_pool WHERE period = ?", (period,)).fetchone()
    if pool and pool[2] is None and end <= now:
        key = f"ads:{period}"
        moved = _split(tx, key, "ad_share", period, pool[1], AD_POOL, pool[0], 0,
                       stream_weights(tx, start, end, None, paid=False), f"ads:{period}")
        report.to_platform += moved[0]
        report.to_artists += moved[1]
        tx.execute("UPDATE ad_pool SET distributed_txn = ? WHERE period = ?", (key, period))
        report.ads = True
    return report


def enter_ad_revenue(tx: sqlite3.Connection, period: str, amount: int, currency: str) -> bool:
    """The operator enters ``period``'s ad revenue (minor units > 0). Returns False when that period
    already has a pool (enter it once; the ledger keeps ``adrev:<period>``). Raises ``ValueError``."""
    period_bounds(period)
    if type(amount) is not int or amount <= 0:
        raise ValueError("ad revenue must be a positive integer of minor units")
    cur = tx.execute("INSERT INTO ad_pool (period, amount, currency, entered_at) VALUES (?,?,?,?) "
                     "ON CONFLICT (period) DO NOTHING", (period, amount, currency, now_iso()))
    if not cur.rowcount:
        return False
    return ledger.post(tx, f"adrev:{period}", "ad_revenue", currency, [(AD_INCOME, -amount), (AD_POOL, amount)],
                       ref=period)
