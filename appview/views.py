"""Hydration: database rows -> lexicon views (``fm.openmusic.catalog.defs``, ``actor.defs``,
``listen.defs``). Rules applied here: accounts that are not active are never shown, nor accounts
and records a configured labeler took down (``!takedown``, ``!suspend``: ``hidden`` 2, kept by
``indexer.labels``); ``!hide`` (``hidden`` 1) leaves them out of lists (``track_views(listed=True)``)
but not out of direct lookups. Views carry ``labels`` (``com.atproto.label.defs#label``): those of
the labelers the client accepts (``accepted_labelers``, from the ``atproto-accept-labelers``
header; default: the configured ones) and the records' own self-labels."""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from appview.copyright import audio_down_uris
from appview.xrpc import not_found
from core.db import ReaderPool
from core.identity import INVALID_HANDLE, IdentityService

#: The rule every query applies to the account ``a`` (``LEFT JOIN actor a``): active, not taken down.
ACTIVE = "COALESCE(a.active, 1) = 1 AND COALESCE(a.hidden, 0) < 2"
#: The rule for lists of tracks (``track t`` of the artist ``actor a``): ``ACTIVE``, and neither the
#: track nor its artist hidden by a label (``!takedown``, ``!suspend``, ``!hide``). Ranking queries
#: apply it so that a page keeps its size; hydration (``track_views``) applies it again.
LISTED = f"{ACTIVE} AND COALESCE(a.hidden, 0) = 0 AND COALESCE(t.hidden, 0) = 0"
#: Labeler DIDs whose labels the current request's views carry (``atproto-accept-labelers``), set
#: per request by the HTTP layer; None: the configured ones (``ViewContext.labelers``).
accepted_labelers: ContextVar[tuple[str, ...] | None] = ContextVar("accepted_labelers", default=None)


def shown(alias: str, listed: bool = False) -> str:
    """SQL condition: the record row ``alias`` (a ``track``, ``album`` or ``playlist``) is not taken
    down by a label; with ``listed``, not hidden from lists either (``!hide``)."""
    return f"COALESCE({alias}.hidden, 0) < {1 if listed else 2}"


@dataclass
class ViewContext:
    """What hydration needs: the readers (the runtime's ``ReaderPool``, or one connection), the
    identity service and the public base URL."""

    db: ReaderPool | aiosqlite.Connection
    identity: IdentityService
    base_url: str
    #: the configured labelers (``Settings.labeler_dids``): their labels travel in views by default
    labelers: list[str] = field(default_factory=list)

    def accepted(self) -> list[str]:
        """The labelers whose labels this request's views carry: those the client asked for
        (``accepted_labelers``) that are configured here, else every configured one."""
        asked = accepted_labelers.get()
        return list(self.labelers) if asked is None else [d for d in asked if d in self.labelers]

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
    labels = await label_views(ctx, unique)
    for did, view in out.items():
        if labels.get(did):
            view["labels"] = labels[did]
    return out


async def label_views(ctx: ViewContext, uris: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The labels in force on each subject of ``uris`` (DIDs or AT-URIs) from the accepted labelers
    (``ViewContext.accepted``): ``com.atproto.label.defs#label`` objects without ``sig`` (Labels
    spec: signatures may be left out of API responses), not negated, not expired."""
    labelers = ctx.accepted()
    if not uris or not labelers:
        return {}
    marks, lmarks = ",".join("?" * len(uris)), ",".join("?" * len(labelers))
    cur = await ctx.db.execute(
        f"SELECT src, uri, val, cid, cts, exp FROM label WHERE uri IN ({marks}) AND src IN ({lmarks}) AND neg = 0 "
        f"AND (exp IS NULL OR exp > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ORDER BY uri, cts, src, val",
        [*uris, *labelers])
    out: dict[str, list[dict[str, Any]]] = {}
    for src, uri, val, cid, cts, exp in await cur.fetchall():
        label: dict[str, Any] = {"ver": 1, "src": src, "uri": uri, "val": val, "cts": cts}
        if cid:
            label["cid"] = cid
        if exp:
            label["exp"] = exp
        out.setdefault(uri, []).append(label)
    return out


def self_labels(uri: str, did: str, cid: str, record: dict[str, Any], indexed_at: str) -> list[dict[str, Any]]:
    """A record's own labels (``labels``: ``com.atproto.label.defs#selfLabels``) as label objects,
    as Bluesky's views carry them: ``src`` the author, ``uri``/``cid`` the record, ``cts`` its
    ``createdAt`` (else when it was indexed). Malformed entries are left out."""
    raw = record.get("labels")
    values = raw.get("values") if isinstance(raw, dict) else None
    if not isinstance(values, list):
        return []
    created = record.get("createdAt")
    cts = created if isinstance(created, str) else indexed_at
    return [{"ver": 1, "src": did, "uri": uri, "cid": cid, "val": v["val"], "cts": cts}
            for v in values[:10] if isinstance(v, dict) and isinstance(v.get("val"), str) and 0 < len(v["val"]) <= 128]


TRACK_SELECT = (
    "SELECT t.uri, t.did, t.cid, t.title, t.duration_ms, t.genre, t.ai_level, t.audio_cid, t.audio_mime, "
    "t.artwork_cid, t.album_uri, t.album_cid, r.json, r.indexed_at, COALESCE(s.plays, 0), COALESCE(s.likes, 0), t.origin "
    "FROM track t JOIN record r ON r.uri = t.uri LEFT JOIN track_stats s ON s.track_uri = t.uri "
    "LEFT JOIN actor a ON a.did = t.did ")


async def track_views(ctx: ViewContext, uris: list[str], listed: bool = True) -> dict[str, dict[str, Any]]:
    """``#trackView`` per URI, for tracks that are indexed, not taken down, and whose artist is
    active and not taken down; with ``listed`` (the default: every list) not hidden from lists
    (``!hide`` on the track or its artist) either; direct lookups pass ``listed=False``. A track
    indexed from another app (``fm.plyr.track``, ``indexer.plyr_track``) carries ``origin``, the
    collection it came from, and its ``record`` is that app's record as published. ``labels``: the
    accepted labelers' labels on the track, then its self-labels (``label_views``, ``self_labels``)."""
    if not uris:
        return {}
    marks = ",".join("?" * len(uris))
    rule = f"{ACTIVE} AND {shown('t', listed)}" + (" AND COALESCE(a.hidden, 0) = 0" if listed else "")
    cur = await ctx.db.execute(f"{TRACK_SELECT} WHERE t.uri IN ({marks}) AND {rule}", uris)
    rows = await cur.fetchall()
    artists = await artist_views(ctx, [r[1] for r in rows])
    labels = await label_views(ctx, [r[0] for r in rows])
    down = await audio_down_uris(ctx.db, [r[0] for r in rows])
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
        if uri in down:
            view["audioTakenDown"] = True
        own = [*labels.get(uri, []), *self_labels(uri, did, cid, view["record"], indexed_at)]
        if own:
            view["labels"] = own
        out[uri] = view
    return out


async def ordered_track_views(ctx: ViewContext, uris: list[str], listed: bool = True) -> list[dict[str, Any]]:
    """``track_views`` as a list in the order of ``uris``, leaving out missing ones."""
    views = await track_views(ctx, uris, listed)
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
    """DID or handle -> DID of a known account (an active one, not taken down by a label, unless
    ``require_active`` is False). Raises ``XrpcError`` ``ActorNotFound``."""
    did = actor if actor.startswith("did:") else await ctx.identity.did_for_handle(actor)
    if did:
        cur = await ctx.db.execute("SELECT active, hidden FROM actor WHERE did = ?", (did,))
        row = await cur.fetchone()
        if row and ((row[0] and (row[1] or 0) < 2) or not require_active):
            return did
    raise not_found("ActorNotFound", f"no active account {actor} is known here")
