"""Counting clicks on a track's purchase link (``purchaseUrl`` of ``fm.openmusic.catalog.track``):
one row per track and UTC day in ``purchase_click`` (migration 0013), read by the revenue analytics.
Each clicker counts once per track and day (``purchase_click_seen``, migration 0015, holds an opaque
key of who clicked for the current day only). Only how many, never who."""

from __future__ import annotations

from datetime import UTC, datetime

import aiosqlite

from core.db import write_transaction


async def count_purchase_click(conn: aiosqlite.Connection, track_uri: str, did: str, who: str,
                               when: datetime | None = None) -> bool:
    """Add one click on ``track_uri`` (by the artist ``did``) to ``when``'s UTC day (now), unless the
    clicker ``who`` (an opaque key: the caller hashes it) already clicked it that day. Returns whether
    it counted. Rows of earlier days in ``purchase_click_seen`` are deleted. ``conn`` autocommits."""
    day = (when or datetime.now(UTC)).astimezone(UTC).date().isoformat()
    async with write_transaction(conn):
        await conn.execute("DELETE FROM purchase_click_seen WHERE day < ?", (day,))
        cur = await conn.execute("INSERT OR IGNORE INTO purchase_click_seen (day, track_uri, who) VALUES (?, ?, ?)",
                                 (day, track_uri, who))
        counted = cur.rowcount == 1
        if counted:
            await conn.execute(
                "INSERT INTO purchase_click (track_uri, did, day, clicks) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (track_uri, day) DO UPDATE SET clicks = purchase_click.clicks + 1", (track_uri, did, day))
    return counted
