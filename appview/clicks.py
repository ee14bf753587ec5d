"""Counting clicks on a track's purchase link (``purchaseUrl`` of ``fm.openmusic.catalog.track``):
one row per track and UTC day in ``purchase_click`` (migration 0013), read by the revenue analytics.
Only how many, never who."""

from __future__ import annotations

from datetime import UTC, datetime

import aiosqlite


async def count_purchase_click(conn: aiosqlite.Connection, track_uri: str, did: str,
                               when: datetime | None = None) -> None:
    """Add one click on ``track_uri`` (by the artist ``did``) to the count of ``when``'s UTC day (now)."""
    day = (when or datetime.now(UTC)).astimezone(UTC).date().isoformat()
    await conn.execute(
        "INSERT INTO purchase_click (track_uri, did, day, clicks) VALUES (?, ?, ?, 1) "
        "ON CONFLICT (track_uri, day) DO UPDATE SET clicks = clicks + 1", (track_uri, did, day))
