"""Playlists (issue 13): ``fm.openmusic.catalog.getPlaylist`` and ``catalog.getActorPlaylists``, plus
what the web app's playlist pages need about the viewer (``viewer_playlists``, ``indexed_cid``).

Skeleton -> hydration -> rules -> presentation: the skeleton of a playlist is its owner's items
(``playlist_entry``, in the record's order) followed by the items of the collaborators it lists
(``playlist_item`` joined with ``playlist_collaborator``, oldest first by ``sort_at``), in one SQL
statement that also applies the rules (the track indexed and its artist active; a collaborator's
item only from an active, listed collaborator), so a page, its cursor and ``itemCount`` always agree.
Items are then hydrated as ``#trackView`` (``appview.views``). Keyset pagination on
(part, key, tie): part 0 the owner's items (key: the position, zero-padded), part 1 the
collaborators' (key: ``sort_at``, tie: the item's AT-URI)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from appview.views import ACTIVE, ViewContext, artist_views, resolve_actor, shown, track_views
from appview.xrpc import decode_cursor, encode_cursor, invalid, not_found
from core.lexicons import PLAYLIST

Handler = Callable[[ViewContext, dict[str, Any]], Awaitable[dict[str, Any]]]

#: The items a playlist shows (parameters: owner DID, playlist URI, playlist URI), in order by
#: (part, k, tie): see the module docstring.
_ITEMS = f"""
    SELECT 0 AS part, substr('000000' || CAST(e.position AS TEXT), length(CAST(e.position AS TEXT)) + 1) AS k, '' AS tie, e.track_uri AS track_uri, ? AS author,
           e.position AS position, NULL AS item_uri
      FROM playlist_entry e JOIN track t ON t.uri = e.track_uri LEFT JOIN actor a ON a.did = t.did
     WHERE e.playlist_uri = ? AND {ACTIVE}
    UNION ALL
    SELECT 1, i.sort_at, i.uri, i.track_uri, i.did, NULL, i.uri
      FROM playlist_item i JOIN playlist_collaborator c ON c.playlist_uri = i.subject AND c.did = i.did
      JOIN track t ON t.uri = i.track_uri LEFT JOIN actor a ON a.did = t.did LEFT JOIN actor b ON b.did = i.did
     WHERE i.subject = ? AND {ACTIVE} AND COALESCE(b.active, 1) = 1"""

_PLAYLIST_SELECT = ("SELECT pl.uri, pl.did, pl.cid, pl.title, pl.description, pl.artwork_cid, pl.created_at, "
                    "pl.indexed_at, pl.sort_at FROM playlist pl LEFT JOIN actor a ON a.did = pl.did ")


def check_playlist_uri(uri: str) -> None:
    """Raises ``XrpcError`` (400 ``InvalidRequest``) unless ``uri`` names an ``fm.openmusic.catalog.playlist``."""
    if f"/{PLAYLIST}/" not in uri:
        raise invalid(f"{uri} is not a {PLAYLIST} AT-URI")


async def item_count(ctx: ViewContext, uri: str, owner: str) -> int:
    """How many items of playlist ``uri`` (owned by ``owner``) are shown (the rules of ``_ITEMS``)."""
    cur = await ctx.db.execute(f"SELECT count(*) FROM ({_ITEMS}) AS i", (owner, uri, uri))
    return (await cur.fetchone())[0]


async def _views(ctx: ViewContext, rows: list[tuple]) -> list[dict[str, Any]]:
    """``#playlistView`` (without items) per ``_PLAYLIST_SELECT`` row, in order: creator and active
    collaborators hydrated, ``itemCount`` counted."""
    if not rows:
        return []
    uris = [r[0] for r in rows]
    marks = ",".join("?" * len(uris))
    cur = await ctx.db.execute(
        f"SELECT c.playlist_uri, c.did FROM playlist_collaborator c LEFT JOIN actor a ON a.did = c.did "
        f"WHERE c.playlist_uri IN ({marks}) AND {ACTIVE} ORDER BY c.playlist_uri, c.position", uris)
    collaborators: dict[str, list[str]] = {}
    for playlist_uri, did in await cur.fetchall():
        collaborators.setdefault(playlist_uri, []).append(did)
    actors = await artist_views(ctx, [r[1] for r in rows] + [d for ds in collaborators.values() for d in ds])
    out = []
    for uri, did, cid, title, description, artwork, created_at, indexed_at, _sort in rows:
        view: dict[str, Any] = {
            "uri": uri, "cid": cid, "creator": actors[did], "title": title,
            "collaborators": [actors[d] for d in collaborators.get(uri, [])],
            "itemCount": await item_count(ctx, uri, did), "createdAt": created_at, "indexedAt": indexed_at}
        if description:
            view["description"] = description
        if artwork:
            view["artworkUrl"] = ctx.image_url(did, artwork)
        out.append(view)
    return out


async def get_playlist(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.catalog.getPlaylist: the playlist of an active owner with a page of items shown
    (module docstring). Raises ``XrpcError`` ``InvalidRequest`` (not a playlist URI, a bad cursor),
    ``NotFound`` (not indexed, or its owner not active)."""
    uri = p["uri"]
    check_playlist_uri(uri)
    cur = await ctx.db.execute(f"{_PLAYLIST_SELECT} WHERE pl.uri = ? AND {ACTIVE} AND {shown('pl')}", (uri,))
    row = await cur.fetchone()
    if not row:
        raise not_found("NotFound", f"playlist {uri} is not indexed")
    owner = row[1]
    args: list[Any] = [owner, uri, uri]
    cond = ""
    if after := decode_cursor(p.get("cursor"), (int, str, str)):
        cond = "WHERE (part, k, tie) > (?, ?, ?)"
        args += after
    cur = await ctx.db.execute(f"SELECT part, k, tie, track_uri, author, position, item_uri FROM ({_ITEMS}) AS i {cond} "
                               f"ORDER BY part, k, tie LIMIT ?", [*args, p["limit"] + 1])
    rows = await cur.fetchall()
    page = rows[:p["limit"]]
    tracks = await track_views(ctx, list(dict.fromkeys(r[3] for r in page)))
    authors = await artist_views(ctx, [r[4] for r in page])
    items = []
    for _part, _k, _tie, track_uri, author, position, item_uri in page:
        if track_uri not in tracks:
            continue  # gone between the two reads: left out of this page
        item: dict[str, Any] = {"track": tracks[track_uri], "addedBy": authors[author]}
        if position is not None:
            item["position"] = position
        if item_uri:
            item["uri"] = item_uri
        items.append(item)
    playlist = (await _views(ctx, [row]))[0]
    playlist["items"] = items
    out: dict[str, Any] = {"playlist": playlist}
    if len(rows) > p["limit"]:
        out["cursor"] = encode_cursor(*page[-1][:3])
    return out


async def get_actor_playlists(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.catalog.getActorPlaylists: an active account's playlists, newest first (by
    ``sort_at``, then AT-URI), without items. Raises ``XrpcError`` ``ActorNotFound``, ``InvalidRequest``."""
    did = await resolve_actor(ctx, p["actor"])
    args: list[Any] = [did]
    cond = ""
    if after := decode_cursor(p.get("cursor"), (str, str)):
        cond = "AND (pl.sort_at, pl.uri) < (?, ?)"
        args += after
    cur = await ctx.db.execute(f"{_PLAYLIST_SELECT} WHERE pl.did = ? AND {shown('pl', listed=True)} {cond} ORDER BY pl.sort_at DESC, pl.uri DESC "
                               f"LIMIT ?", [*args, p["limit"] + 1])
    rows = await cur.fetchall()
    page = rows[:p["limit"]]
    out: dict[str, Any] = {"playlists": await _views(ctx, page)}
    if len(rows) > p["limit"]:
        out["cursor"] = encode_cursor(page[-1][8], page[-1][0])
    return out


PLAYLIST_QUERIES: dict[str, Handler] = {
    "fm.openmusic.catalog.getPlaylist": get_playlist,
    "fm.openmusic.catalog.getActorPlaylists": get_actor_playlists,
}


# -- the viewer's own state (for pages) -------------------------------------------------------------

async def viewer_playlists(ctx: ViewContext, did: str, limit: int = 200) -> list[dict[str, Any]]:
    """The playlists ``did`` may add tracks to: its own, then those of active owners that list it as a
    collaborator; each ``{uri, cid, title, owner, own}`` (``cid``: the indexed version; ``owner``: the
    owner's DID), newest first within each group, at most ``limit`` in all."""
    cur = await ctx.db.execute(
        f"SELECT uri, cid, title, did, 1 FROM (SELECT uri, cid, title, did, sort_at FROM playlist WHERE did = ? "
        f"ORDER BY sort_at DESC, uri DESC LIMIT ?) AS own "
        f"UNION ALL SELECT * FROM (SELECT pl.uri, pl.cid, pl.title, pl.did, 0 FROM playlist_collaborator c "
        f"JOIN playlist pl ON pl.uri = c.playlist_uri LEFT JOIN actor a ON a.did = pl.did "
        f"WHERE c.did = ? AND {ACTIVE} ORDER BY pl.sort_at DESC, pl.uri DESC LIMIT ?) AS shared", (did, limit, did, limit))
    rows = (await cur.fetchall())[:limit]
    return [{"uri": uri, "cid": cid, "title": title, "owner": owner, "own": bool(own)}
            for uri, cid, title, owner, own in rows]


async def indexed_cid(ctx: ViewContext, uri: str) -> str | None:
    """The CID of the indexed version of playlist ``uri`` (None: not indexed): what a write waits for."""
    cur = await ctx.db.execute("SELECT cid FROM playlist WHERE uri = ?", (uri,))
    row = await cur.fetchone()
    return row[0] if row else None


async def viewer_items(ctx: ViewContext, did: str, playlist_uri: str) -> list[str]:
    """The AT-URIs of ``did``'s ``fm.openmusic.catalog.playlistItem`` records naming ``playlist_uri``
    (indexed, shown or not), oldest first."""
    cur = await ctx.db.execute("SELECT uri FROM playlist_item WHERE did = ? AND subject = ? ORDER BY sort_at, uri",
                               (did, playlist_uri))
    return [r[0] for r in await cur.fetchall()]
