"""``fm.openmusic.payment.getEarnings``: an artist's earnings explained line by line, from the
``earning_line`` rows the period close (``payments.period``), tip settlement and payouts write.
Every line has a ledger transaction (``txn``) behind it; the balance is the ledger's."""

from __future__ import annotations

import sqlite3
from typing import Any

from payments import ledger, period

#: earning_line.kind -> the source it counts under in ``bySource``
SOURCES = {"subscription_share": "subscriptions", "ad_share": "ads", "tip": "tips", "refund": "tips"}
KINDS = {"subscription_share": "subscription", "ad_share": "ads", "tip": "tip", "refund": "refund", "payout": "payout"}


def earnings(tx: sqlite3.Connection, artist: str, currency: str, period_: str | None, limit: int,
             after: int | None) -> dict[str, Any]:
    """The ``getEarnings`` output for ``artist``: lines newest first (keyset on the line id, ``after``
    exclusive), totals by source for ``period_`` (all periods when None), and the unpaid balance.
    Raises ``ValueError`` on a malformed period."""
    cond, args = "artist = ? AND currency = ?", [artist, currency]
    if period_:
        period.period_bounds(period_)
        cond += " AND period = ?"
        args.append(period_)
    by_source = {"subscriptions": 0, "ads": 0, "tips": 0}
    for kind, amount in tx.execute(f"SELECT kind, SUM(amount) FROM earning_line WHERE {cond} GROUP BY kind", args):
        if kind in SOURCES:
            by_source[SOURCES[kind]] += int(amount)
    page_cond = cond + (" AND id < ?" if after else "")
    rows = tx.execute(
        f"SELECT id, kind, period, track_uri, listened_ms, pool_ms, pool, share_bps, amount, source FROM earning_line "
        f"WHERE {page_cond} ORDER BY id DESC LIMIT ?", [*args, *([after] if after else []), limit + 1]).fetchall()
    lines = []
    for _id, kind, per, track, ms, pool_ms, pool, bps, amount, source in rows[:limit]:
        line: dict[str, Any] = {"kind": KINDS.get(kind, kind), "period": per, "amount": amount, "artist": artist}
        for key, value in (("track", track), ("listenedMs", ms), ("poolListenedMs", pool_ms), ("pool", pool),
                           ("shareBps", bps), ("source", source)):
            if value is not None:
                line[key] = value
        lines.append(line)
    out: dict[str, Any] = {"artist": artist, "currency": currency, "total": sum(by_source.values()),
                           "bySource": by_source, "balance": ledger.balance(tx, ledger.earnings(artist), currency),
                           "lines": lines}
    if len(rows) > limit:
        out["cursor"] = str(rows[limit - 1][0])
    return out
