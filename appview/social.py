"""Query handlers for votes, reviews and follows (``fm.openmusic.graph.getFollowers``,
``graph.getFollows``, ``social.getReviews``). They read what ``indexer.stats`` keeps counted: the
``*_current`` tables (one record per account and subject, accounts in standing only:
``indexer.standing``) and the counters, so a list and its count always agree. Keyset pagination
on (``sort_at``, DID)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from appview.views import ACTIVE, ViewContext, artist_views, resolve_actor
from appview.xrpc import decode_cursor, encode_cursor, invalid, not_found
from core.lexicons import ALBUM, TRACK, is_track_uri


def _page(rows: list[tuple], limit: int) -> tuple[list[tuple], str | None]:
    """The page of ``rows`` (fetched ``limit + 1``) and the cursor after it, from its last row's
    ``(key, sort_at, ...)``: (sort_at, key)."""
    page = rows[:limit]
    cursor = encode_cursor(page[-1][1], page[-1][0]) if len(rows) > limit else None
    return page, cursor


async def _follow_list(ctx: ViewContext, p: dict[str, Any], mine: str, other: str) -> tuple[str, list, str | None]:
    """Follows whose ``mine`` column is the actor, newest first; returns (actor DID, views, cursor).
    Accounts known here not to be active, or taken down, are left out on the ``other`` side
    (followers are already only those in standing in ``follow_current``)."""
    did = await resolve_actor(ctx, p["actor"])
    args: list[Any] = [did]
    cond = ""
    if after := decode_cursor(p.get("cursor"), (str, str)):
        cond = f"AND (f.sort_at, f.{other}) < (?, ?)"
        args += [after[0], after[1]]
    cur = await ctx.db.execute(
        f"SELECT f.{other}, f.sort_at, f.uri, fr.created_at FROM follow_current f JOIN follow fr ON fr.uri = f.uri "
        f"LEFT JOIN actor a ON a.did = f.{other} WHERE f.{mine} = ? AND {ACTIVE} {cond} "
        f"ORDER BY f.sort_at DESC, f.{other} DESC LIMIT ?", [*args, p["limit"] + 1])
    page, cursor = _page(await cur.fetchall(), p["limit"])
    actors = await artist_views(ctx, [did, *(r[0] for r in page)])
    views = [{"uri": uri, "createdAt": created_at, "actor": actors[who]} for who, _, uri, created_at in page]
    return did, [actors[did], views], cursor


async def get_followers(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.graph.getFollowers: each follower in standing once, newest follow first."""
    did, (subject, views), cursor = await _follow_list(ctx, p, "subject", "did")
    cur = await ctx.db.execute("SELECT followers FROM follow_count WHERE subject = ?", (did,))
    row = await cur.fetchone()
    out: dict[str, Any] = {"subject": subject, "followersCount": row[0] if row else 0, "followers": views}
    if cursor:
        out["cursor"] = cursor
    return out


async def get_follows(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.graph.getFollows: each followed account once, newest follow first."""
    _did, (subject, views), cursor = await _follow_list(ctx, p, "did", "subject")
    out: dict[str, Any] = {"subject": subject, "follows": views}
    if cursor:
        out["cursor"] = cursor
    return out


async def get_reviews(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.social.getReviews: each reviewer's latest review (reviewers in standing) of an
    indexed track or album of an active artist, newest first, with the count and the average in
    hundredths."""
    uri = p["uri"]
    table = "track" if is_track_uri(uri) else "album" if f"/{ALBUM}/" in uri else None
    if table is None:
        raise invalid(f"{uri} is not a {TRACK} or {ALBUM} AT-URI")
    cur = await ctx.db.execute(f"SELECT 1 FROM {table} s LEFT JOIN actor a ON a.did = s.did "
                               f"WHERE s.uri = ? AND {ACTIVE}", (uri,))
    if not await cur.fetchone():
        raise not_found("NotFound", f"{table} {uri} is not indexed")
    args: list[Any] = [uri]
    cond = ""
    if after := decode_cursor(p.get("cursor"), (str, str)):
        cond = "AND (c.sort_at, c.did) < (?, ?)"
        args += [after[0], after[1]]
    cur = await ctx.db.execute(
        f"SELECT c.did, c.sort_at, r.uri, r.cid, r.rating, r.text, r.created_at FROM review_current c "
        f"JOIN review r ON r.uri = c.uri WHERE c.subject = ? {cond} "
        f"ORDER BY c.sort_at DESC, c.did DESC LIMIT ?", [*args, p["limit"] + 1])
    page, cursor = _page(await cur.fetchall(), p["limit"])
    authors = await artist_views(ctx, [r[0] for r in page])
    reviews = []
    for did, _, review_uri, cid, rating, text, created_at in page:
        view: dict[str, Any] = {"uri": review_uri, "cid": cid, "author": authors[did], "rating": rating,
                                "createdAt": created_at}
        if text:
            view["text"] = text
        reviews.append(view)
    cur = await ctx.db.execute("SELECT reviews, rating_sum FROM review_count WHERE subject = ?", (uri,))
    count, total = await cur.fetchone() or (0, 0)
    out: dict[str, Any] = {"uri": uri, "count": count, "reviews": reviews}
    if count:
        out["averageRating"] = (total * 200 + count) // (2 * count)  # hundredths, rounded half up
    if cursor:
        out["cursor"] = cursor
    return out


SOCIAL_QUERIES: dict[str, Callable[[ViewContext, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "fm.openmusic.graph.getFollowers": get_followers,
    "fm.openmusic.graph.getFollows": get_follows,
    "fm.openmusic.social.getReviews": get_reviews,
}


# -- the viewer's own state (for pages: what their buttons and forms show) --------------------------

async def viewer_vote(ctx: ViewContext, did: str, track_uri: str) -> tuple[str | None, list[str]]:
    """The direction (``"up"``/``"down"``) of ``did``'s latest vote on ``track_uri`` (by created_at,
    then rkey: the one that counts) or None, and the AT-URIs of all of ``did``'s vote records on it."""
    cur = await ctx.db.execute("SELECT uri, direction FROM vote WHERE did = ? AND subject = ? "
                               "ORDER BY created_at DESC, rkey DESC", (did, track_uri))
    rows = await cur.fetchall()
    direction = rows[0][1] if rows and rows[0][1] in ("up", "down") else None
    return direction, [uri for uri, _ in rows]


async def viewer_follows(ctx: ViewContext, did: str, subject_did: str) -> list[str]:
    """The AT-URIs of ``did``'s follow records of ``subject_did`` (several count once), oldest first."""
    cur = await ctx.db.execute("SELECT uri FROM follow WHERE did = ? AND subject = ? ORDER BY created_at, rkey",
                               (did, subject_did))
    return [uri for (uri,) in await cur.fetchall()]


async def viewer_review(ctx: ViewContext, did: str, subject_uri: str) -> dict[str, Any] | None:
    """``did``'s latest review of ``subject_uri`` (the one that counts) as ``{uri, cid, rating, text,
    createdAt, older}`` (``older``: the AT-URIs of its earlier review records of it), or None."""
    cur = await ctx.db.execute("SELECT uri, cid, rating, text, created_at FROM review WHERE did = ? AND subject = ? "
                               "ORDER BY created_at DESC, rkey DESC", (did, subject_uri))
    rows = await cur.fetchall()
    if not rows:
        return None
    uri, cid, rating, text, created_at = rows[0]
    return {"uri": uri, "cid": cid, "rating": rating, "text": text or "", "createdAt": created_at,
            "older": [r[0] for r in rows[1:]]}
