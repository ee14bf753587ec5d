"""Music feeds for clients (issue 13): ``fm.openmusic.feed.getFeed``.

Each feed is a skeleton of track URIs, then hydration of one page (``appview.views``):

- ``trending``: the trending chart of ``appview.charts`` (its skeleton, cache and cursor), each
  ``#chartTrackView`` given back as a plain ``#trackView``.
- ``following``: the newest tracks (``sort_at``: createdAt, never later than when indexed) by the
  artists ``actor`` follows (``follow_current``), keyset-paginated on (``sort_at``, uri).
- ``genre:<name>``: the newest tracks whose ``genre_norm`` is the name trimmed and lower-cased
  (index ``track_genre_sort``), the same pagination.
- ``for-you``: ``appview.recommend.for_you_uris(ctx, did, limit)`` (another part of issue 13): the
  first ``FOR_YOU_MAX`` are paged by position. While it is not there: 501 ``MethodNotImplemented``.

Follows and plays are public records, so no feed needs the caller's identity. Tracks whose artist
is not active are never listed."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from appview import charts
from appview.views import LISTED, ViewContext, ordered_track_views, resolve_actor
from appview.xrpc import XrpcError, decode_cursor, encode_cursor, invalid

Handler = Callable[[ViewContext, dict[str, Any]], Awaitable[dict[str, Any]]]
log = logging.getLogger("openmusic.appview")
FEEDS = ("trending", "following", "for-you", "genre:<name>")
#: Most recommendations a for-you feed pages through.
FOR_YOU_MAX = 200


def _page_out(rows: list[tuple], limit: int) -> tuple[list[str], str | None]:
    """The URIs of ``rows`` ((uri, sort_at), fetched ``limit + 1``) and the cursor after them."""
    page = rows[:limit]
    cursor = encode_cursor(page[-1][1], page[-1][0]) if len(rows) > limit else None
    return [r[0] for r in page], cursor


async def _newest(ctx: ViewContext, source: str, where: list[str], args: list[Any], p: dict[str, Any]) -> dict:
    """Newest first over ``source`` (aliasing ``track t`` and its artist's ``actor a``) under ``where``."""
    if after := decode_cursor(p.get("cursor"), (str, str)):
        where = [*where, "(t.sort_at, t.uri) < (?, ?)"]
        args = [*args, after[0], after[1]]
    cur = await ctx.db.execute(
        f"SELECT t.uri, t.sort_at FROM {source} LEFT JOIN actor a ON a.did = t.did "
        f"WHERE {' AND '.join([LISTED, *where])} ORDER BY t.sort_at DESC, t.uri DESC LIMIT ?",
        [*args, p["limit"] + 1])
    uris, cursor = _page_out(list(await cur.fetchall()), p["limit"])
    return _out(await ordered_track_views(ctx, uris), cursor)


def _out(tracks: list[dict[str, Any]], cursor: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"feed": tracks}
    if cursor:
        out["cursor"] = cursor
    return out


async def _actor(ctx: ViewContext, p: dict[str, Any], feed: str) -> str:
    if not p.get("actor"):
        raise invalid(f"the {feed} feed needs actor (a DID or handle)")
    return await resolve_actor(ctx, p["actor"])


#: From this many follows on, the following feed walks all tracks newest first (index ``track_sort``)
#: and keeps the followed artists' (a few ms whatever the follows); below, it reads the followed
#: artists' tracks and sorts them (fast for a few artists, but 15,000 rows for 300 busy ones).
MANY_FOLLOWS = 50


async def following(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """The ``following`` feed of ``p["actor"]`` (module docstring). Raises ``ActorNotFound``."""
    did = await _actor(ctx, p, "following")
    cur = await ctx.db.execute("SELECT COUNT(*) FROM (SELECT 1 FROM follow_current WHERE did = ? LIMIT ?) AS f",
                               (did, MANY_FOLLOWS))
    (follows,) = await cur.fetchone()
    if follows >= MANY_FOLLOWS:
        return await _newest(ctx, "track t INDEXED BY track_sort",
                             ["t.did IN (SELECT subject FROM follow_current WHERE did = ? AND subject <> ?)"],
                             [did, did], p)
    return await _newest(ctx, "follow_current f JOIN track t ON t.did = f.subject", ["f.did = ?", "f.subject <> ?"],
                         [did, did], p)


async def trending(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """The ``trending`` feed: ``charts.get_chart`` (trending), ranks and scores left out."""
    got = await charts.get_chart(ctx, {"chart": "trending", "period": "week", "limit": p["limit"],
                                       "cursor": p.get("cursor")})
    tracks = [{k: v for k, v in t.items() if k not in ("rank", "score")} for t in got["tracks"]]
    return _out(tracks, got.get("cursor"))


async def for_you(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """The ``for-you`` feed: ``appview.recommend.for_you_uris(ctx, did, n)`` (imported when asked),
    paged by position (cursor ``(offset,)``). Raises 501 ``MethodNotImplemented`` while it is not there."""
    did = await _actor(ctx, p, "for-you")
    after = decode_cursor(p.get("cursor"), (int,))
    offset = after[0] if after else 0
    if offset < 0:
        raise invalid("malformed cursor")
    want = min(offset + p["limit"] + 1, FOR_YOU_MAX)
    try:
        from appview import recommend
        uris = list(await recommend.for_you_uris(ctx, did, want))
    except (ImportError, AttributeError) as exc:
        log.info("for-you feed asked, but recommendations are not there: %s", exc)
        raise XrpcError(501, "MethodNotImplemented", "for-you is not available yet") from exc
    uris = list(dict.fromkeys(uris))[:FOR_YOU_MAX]
    page = uris[offset:offset + p["limit"]]
    more = len(uris) > offset + p["limit"]
    return _out(await ordered_track_views(ctx, page), encode_cursor(offset + len(page)) if more and page else None)


async def genre(ctx: ViewContext, p: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``genre:<name>`` feed (module docstring)."""
    norm = name.strip().lower()
    if not norm:
        raise invalid("genre:<name> needs a name")
    return await _newest(ctx, "track t", ["t.genre_norm = ?"], [norm], p)


async def get_feed(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.feed.getFeed: ``{feed: [#trackView], cursor?}`` for ``p["feed"]`` (trending,
    following, for-you, genre:<name>). Raises ``XrpcError``: 400 ``InvalidRequest`` for another feed,
    a missing actor or a malformed cursor; 400 ``ActorNotFound``; 501 for for-you while not served."""
    feed = p["feed"]
    if feed == "trending":
        return await trending(ctx, p)
    if feed == "following":
        return await following(ctx, p)
    if feed == "for-you":
        return await for_you(ctx, p)
    if feed.startswith("genre:"):
        return await genre(ctx, p, feed.removeprefix("genre:"))
    raise invalid(f"feed must be one of {', '.join(FEEDS)}")


FEED_QUERIES: dict[str, Handler] = {"fm.openmusic.feed.getFeed": get_feed}
