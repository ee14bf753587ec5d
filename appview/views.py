"""Hydration: database rows -> lexicon views (``fm.openmusic.catalog.defs``, ``actor.defs``,
``listen.defs``). Rules applied here: accounts that are not active are never shown."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiosqlite

from appview.xrpc import not_found
from core.db import ReaderPool
from core.identity import INVALID_HANDLE, IdentityService

ACTIVE = "COALESCE(a.active, 1) = 1"


@dataclass
class ViewContext:
    """What hydration needs: the readers (the runtime's ``ReaderPool``, or one connection), the
    identity service and the public base URL."""

    db: ReaderPool | aiosqlite.Connection
    identity: IdentityService
    base_url: str

    def audio_url(self, did: str, cid: str) -> str:
        return f"{self.base_url}/audio/{did}/{cid}"

    def image_url(self, did: str, cid: str | None) -> str | None:
        return f"{self.base_url}/image/{did}/{cid}" if cid else None


async def artist_views(ctx: ViewContext, dids: list[str]) -> dict[str, dict[str, Any]]:
    """``#artistView`` per DID. DIDs never resolved are resolved now (once), so handles are current."""
    unique = list(dict.fromkeys(dids))
    if not unique:
        return {}
    marks = ",".join("?" * len(unique))
    cur = await ctx.db.execute(f"SELECT did FROM actor WHERE did IN ({marks}) AND resolved_at IS NULL", unique)
    for (did,) in await cur.fetchall():
        await ctx.identity.refresh(did)
    cur = await ctx.db.execute(
        f"SELECT a.did, a.handle, p.display_name, p.avatar_cid FROM actor a LEFT JOIN profile p ON p.did = a.did "
        f"WHERE a.did IN ({marks})", unique)
    out: dict[str, dict[str, Any]] = {}
    for did, handle, name, avatar in await cur.fetchall():
        view: dict[str, Any] = {"did": did, "handle": handle or INVALID_HANDLE}
        if name:
            view["displayName"] = name
        if avatar:
            view["avatarUrl"] = ctx.image_url(did, avatar)
        out[did] = view
    for did in unique:
        out.setdefault(did, {"did": did, "handle": INVALID_HANDLE})
    return out


TRACK_SELECT = (
    "SELECT t.uri, t.did, t.cid, t.title, t.duration_ms, t.genre, t.ai_level, t.audio_cid, t.audio_mime, "
    "t.artwork_cid, t.album_uri, t.album_cid, r.json, r.indexed_at, COALESCE(s.plays, 0), COALESCE(s.likes, 0), t.origin "
    "FROM track t JOIN record r ON r.uri = t.uri LEFT JOIN track_stats s ON s.track_uri = t.uri "
    "LEFT JOIN actor a ON a.did = t.did ")


async def track_views(ctx: ViewContext, uris: list[str]) -> dict[str, dict[str, Any]]:
    """``#trackView`` per URI, for tracks that are indexed and whose artist is active. A track
    indexed from another app (``fm.plyr.track``, ``indexer.plyr_track``) carries ``origin``, the
    collection it came from, and its ``record`` is that app's record as published."""
    if not uris:
        return {}
    marks = ",".join("?" * len(uris))
    cur = await ctx.db.execute(f"{TRACK_SELECT} WHERE t.uri IN ({marks}) AND {ACTIVE}", uris)
    rows = await cur.fetchall()
    artists = await artist_views(ctx, [r[1] for r in rows])
    out = {}
    for (uri, did, cid, title, duration, genre, ai_level, audio_cid, audio_mime, artwork_cid, album_uri,
         album_cid, raw, indexed_at, plays, likes, origin) in rows:
        view: dict[str, Any] = {
            "uri": uri, "cid": cid, "artist": artists[did], "title": title, "durationMs": duration,
            "audioUrl": ctx.audio_url(did, audio_cid), "audioMimeType": audio_mime,
            "plays": plays, "likes": likes, "record": json.loads(raw), "indexedAt": indexed_at,
        }
        if genre:
            view["genre"] = genre
        if ai_level:
            view["aiLevel"] = ai_level
        if artwork_cid:
            view["artworkUrl"] = ctx.image_url(did, artwork_cid)
        if album_uri:
            view["album"] = {"uri": album_uri, "cid": album_cid}
        if origin:
            view["origin"] = origin
        out[uri] = view
    return out


async def ordered_track_views(ctx: ViewContext, uris: list[str]) -> list[dict[str, Any]]:
    """``track_views`` as a list in the order of ``uris``, leaving out missing ones."""
    views = await track_views(ctx, uris)
    return [views[u] for u in uris if u in views]


async def viewer_like_uris(ctx: ViewContext, viewer: str, subject: str) -> list[str]:
    """Every indexed ``fm.openmusic.social.like`` of ``subject`` (an AT-URI) by ``viewer`` (a DID):
    usually one; more when a client wrote duplicates, which an unlike removes together."""
    cur = await ctx.db.execute("SELECT uri FROM like_record WHERE did = ? AND subject_uri = ? ORDER BY uri",
                               (viewer, subject))
    return [row[0] for row in await cur.fetchall()]


async def viewer_likes(ctx: ViewContext, viewer: str, uris: list[str]) -> dict[str, str]:
    """The viewer's indexed ``fm.openmusic.social.like`` per subject: {subject AT-URI: like AT-URI}
    (the newest when there are several), for the subjects in ``uris`` the viewer (a DID) likes."""
    if not uris:
        return {}
    marks = ",".join("?" * len(uris))
    cur = await ctx.db.execute(
        f"SELECT subject_uri, uri FROM like_record WHERE did = ? AND subject_uri IN ({marks}) "
        f"ORDER BY created_at", [viewer, *uris])
    return {subject: uri for subject, uri in await cur.fetchall()}


async def resolve_actor(ctx: ViewContext, actor: str, require_active: bool = True) -> str:
    """DID or handle -> DID of a known account (an active one unless ``require_active`` is False).
    Raises ``XrpcError`` ``ActorNotFound``."""
    did = actor if actor.startswith("did:") else await ctx.identity.did_for_handle(actor)
    if did:
        cur = await ctx.db.execute("SELECT active FROM actor WHERE did = ?", (did,))
        row = await cur.fetchone()
        if row and (row[0] or not require_active):
            return did
    raise not_found("ActorNotFound", f"no active account {actor} is known here")
