"""Feed skeletons over the ``share`` table (``indexer.share``): which Bluesky posts each of our
feeds lists, newest first, with opaque cursors (atproto guide "Custom Feeds": unique per item).

Only posts whose author is active and whose shared record (track, album or playlist) is indexed
are listed: a link to a page that does not exist, or a share by a deactivated account, is not.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

#: How far back "fresh" looks, seconds (music shared in the last 24 hours).
FRESH_WINDOW_S = 24 * 3600
#: ``getFeedSkeleton`` ``limit`` bounds and default (lexicon ``app.bsky.feed.getFeedSkeleton``).
MIN_LIMIT, MAX_LIMIT, DEFAULT_LIMIT = 1, 100, 50
_COMMON = ("NOT EXISTS (SELECT 1 FROM actor a WHERE a.did = s.did AND (a.active = 0 OR a.hidden > 0)) "
           "AND EXISTS (SELECT 1 FROM record r WHERE r.uri = s.subject) "
           "AND NOT EXISTS (SELECT 1 FROM actor o WHERE o.did = substr(s.subject, 6, instr(substr(s.subject, 6), '/') - 1) "
           "AND (o.active = 0 OR o.hidden > 0)) "
           "AND NOT EXISTS (SELECT 1 FROM track t WHERE t.uri = s.subject AND t.hidden > 0) "
           "AND NOT EXISTS (SELECT 1 FROM album al WHERE al.uri = s.subject AND al.hidden > 0) "
           "AND NOT EXISTS (SELECT 1 FROM playlist pl WHERE pl.uri = s.subject AND pl.hidden > 0)")


class BadCursor(ValueError):
    """A cursor this service did not make."""


def encode_cursor(sort_at: str, uri: str) -> str:
    """The opaque cursor after the item ``(sort_at, uri)``: URL-safe base64 of both, unique per item."""
    return base64.urlsafe_b64encode(f"{sort_at}|{uri}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """``(sort_at, uri)`` of a cursor made by ``encode_cursor``. Raises ``BadCursor``."""
    if len(cursor) > 4000:
        raise BadCursor("cursor too long")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadCursor("malformed cursor") from exc
    sort_at, sep, uri = text.partition("|")
    if not sep or not uri.startswith("at://") or len(sort_at) != 24 or not sort_at.endswith("Z"):
        raise BadCursor("malformed cursor")
    return sort_at, uri


def iso(moment: datetime) -> str:
    """``moment`` as the index's sortable UTC text (``YYYY-MM-DDTHH:MM:SS.mmmZ``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


Execute = Callable[..., Awaitable[Any]]


async def _page(execute: Execute, where: str, args: tuple, limit: int, cursor: str | None,
                source: str = "share s") -> dict[str, Any]:
    sql = f"SELECT s.uri, s.sort_at FROM {source} WHERE {where} AND {_COMMON}"
    params: tuple = args
    if cursor:
        sort_at, uri = decode_cursor(cursor)
        sql += " AND (s.sort_at, s.uri) < (?, ?)"  # (a row value: an index range, in order)
        params += (sort_at, uri)
    sql += " ORDER BY s.sort_at DESC, s.uri DESC LIMIT ?"
    cur = await execute(sql, (*params, limit + 1))
    rows = [tuple(r) for r in await cur.fetchall()]
    out: dict[str, Any] = {"feed": [{"post": uri} for uri, _ in rows[:limit]]}
    if len(rows) > limit:
        out["cursor"] = encode_cursor(rows[limit - 1][1], rows[limit - 1][0])
    return out


async def fresh(execute: Execute, limit: int, cursor: str | None, now: datetime | None = None) -> dict[str, Any]:
    """"Fresh": posts that shared our music in the last ``FRESH_WINDOW_S``, newest first.
    ``execute(sql, params)`` is a reader's (``ReaderPool.execute``). Returns ``{feed: [{post}], cursor?}``;
    raises ``BadCursor``."""
    since = iso((now or datetime.now(UTC)) - timedelta(seconds=FRESH_WINDOW_S))
    return await _page(execute, "s.sort_at >= ?", (since,), limit, cursor)


#: From this many follows on, "artists you follow" walks every share newest first (index
#: ``share_sort``; a few ms whatever the follows) rather than sorting all the followed accounts'
#: shares (13,000 rows for 300 busy accounts in ``bench.feeds``).
MANY_FOLLOWS = 50


async def following(execute: Execute, viewer: str, limit: int, cursor: str | None) -> dict[str, Any]:
    """"Artists you follow": posts that shared our music by accounts ``viewer`` follows on Open Music
    (``fm.openmusic.graph.follow``), newest first. Returns ``{feed, cursor?}``; raises ``BadCursor``."""
    cur = await execute("SELECT COUNT(*) FROM (SELECT 1 FROM follow_current WHERE did = ? LIMIT ?) AS f",
                        (viewer, MANY_FOLLOWS))
    (follows,) = tuple(await cur.fetchone())
    # many follows: walk all shares newest first; few: read the followed accounts' shares and sort
    source = "share s INDEXED BY share_sort" if follows >= MANY_FOLLOWS else "share s"
    return await _page(execute, "s.did IN (SELECT f.subject FROM follow_current f WHERE f.did = ?)", (viewer,),
                       limit, cursor, source)
