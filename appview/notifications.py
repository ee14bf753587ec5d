"""Notifications (issue 13): ``fm.openmusic.notification.listNotifications``, ``getUnreadCount`` and
``updateSeen``, for the caller only (a service-auth JWT whose ``lxm`` is the method, like
``appview.analytics``; the caller is the token's issuer).

Nothing is stored per notification: each is computed when asked, from the tables the indexer keeps,
one indexed query per source, each bounded by ``LIMIT`` and merged newest first:

- ``release``: a track (not part of an indexed album: the album notifies once instead) or an album
  by an artist the caller follows (``follow_current``), created after that follow; time: the
  record's ``sort_at`` (createdAt, never later than when it was indexed).
- ``tip``: a tip naming the caller as its subject with a verified ``settled`` settlement from a
  trusted broker and no verified ``refunded`` one (the rule of ``payment.getTips``' total and the
  tipped chart); time: when that settlement was indexed (``settlement_subject``, migration 0020).
- ``follow``: an account's follow of the caller that counts (``follow_current``); time: its ``sort_at``.

Rules: accounts that are not active never notify; one's own actions never notify oneself. The only
state is the seen time per account (``notification_seen``, migration 0020): a notification is read
when its time is at or before it. The unread count stops at ``UNREAD_CAP``.

For the web app (signed in through OAuth, no JWT) the same work is plain functions taking the
caller's DID: ``list_notifications``, ``unread_count``, ``seen_time``, ``update_seen``."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiosqlite
from lexrpc.base import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from appview.views import ACTIVE, ViewContext, artist_views, track_views
from appview.xrpc import XrpcError, decode_cursor, encode_cursor, head_response, invalid, parse_params
from core.db import normalize_datetime
from core.lexicons import is_track_uri, validator
from payments.auth import AuthError

if TYPE_CHECKING:
    from appview.deps import AppViewDeps

log = logging.getLogger("openmusic.appview")
NS = "fm.openmusic.notification."
LIST = NS + "listNotifications"
UNREAD = NS + "getUnreadCount"
UPDATE_SEEN = NS + "updateSeen"
#: The reasons, in the order a tie in time and URI would never need (URIs differ by collection).
REASONS = ("release", "tip", "follow", "copyrightClaim", "copyrightCounter", "copyrightRestored",
           "copyrightUpheld")
#: The unread count stops here: ``{"count": 30, "capped": true}`` means "30+".
UNREAD_CAP = 30

# Each source selects (at, uri, cid, author DID, reason, subject) for the caller ``:me``; ``{cond}``
# takes extra conditions on its time column ``{at}`` and URI column ``{uri}``.
_RELEASE_TRACKS = (
    "SELECT t.sort_at AS at, t.uri AS uri, t.cid AS cid, t.did AS author, 'release' AS reason, NULL AS subject "
    "FROM follow_current f JOIN track t ON t.did = f.subject AND t.sort_at > f.sort_at "
    f"LEFT JOIN actor a ON a.did = t.did WHERE f.did = :me AND f.subject <> :me AND {ACTIVE} "
    "AND (t.album_uri IS NULL OR NOT EXISTS (SELECT 1 FROM album al WHERE al.uri = t.album_uri)) {cond}")
_RELEASE_ALBUMS = (
    "SELECT al.sort_at AS at, al.uri AS uri, al.cid AS cid, al.did AS author, 'release' AS reason, NULL AS subject "
    "FROM follow_current f JOIN album al ON al.did = f.subject AND al.sort_at > f.sort_at "
    f"LEFT JOIN actor a ON a.did = al.did WHERE f.did = :me AND f.subject <> :me AND {ACTIVE} {{cond}}")
_TIPS = (
    "SELECT s.indexed_at AS at, tp.uri AS uri, tp.cid AS cid, tp.did AS author, 'tip' AS reason, "
    "tp.track_uri AS subject FROM settlement s JOIN tip tp ON tp.uri = s.tip_uri "
    "LEFT JOIN actor a ON a.did = tp.did "
    f"WHERE s.subject = :me AND s.verified = 1 AND s.status = 'settled' AND tp.did <> :me AND {ACTIVE} "
    "AND NOT EXISTS (SELECT 1 FROM settlement r WHERE r.tip_uri = s.tip_uri AND r.verified = 1 "
    "AND r.status = 'refunded') "
    "AND NOT EXISTS (SELECT 1 FROM settlement d WHERE d.tip_uri = s.tip_uri AND d.verified = 1 "
    "AND d.status = 'settled' AND (d.indexed_at, d.uri) < (s.indexed_at, s.uri)) {cond}")
_FOLLOWS = (
    "SELECT f.sort_at AS at, f.uri AS uri, fr.cid AS cid, f.did AS author, 'follow' AS reason, NULL AS subject "
    "FROM follow_current f JOIN follow fr ON fr.uri = f.uri LEFT JOIN actor a ON a.did = f.did "
    f"WHERE f.subject = :me AND f.did <> :me AND {ACTIVE} {{cond}}")
# Copyright cases (``appview.copyright``) notify both sides, the other side as the author: the
# artist hears of the claim from the claimant, the claimant of the counter-notice from the artist.
_COPYRIGHT = (
    "SELECT {at} AS at, c.track AS uri, t.cid AS cid, "
    "CASE WHEN c.artist = :me THEN c.claimant ELSE c.artist END AS author, '{reason}' AS reason, NULL AS subject "
    "FROM copyright_case c JOIN track t ON t.uri = c.track "
    "LEFT JOIN actor a ON a.did = CASE WHEN c.artist = :me THEN c.claimant ELSE c.artist END "
    f"WHERE (c.artist = :me OR c.claimant = :me) AND {ACTIVE} AND {{where}} {{{{cond}}}}")
_RESTORED_AT = "CASE WHEN c.status = 'restored' THEN c.closed_at ELSE c.restore_at END"
#: reason -> [(source SQL, its time column, its URI column)]
SOURCES: dict[str, list[tuple[str, str, str]]] = {
    "release": [(_RELEASE_TRACKS, "t.sort_at", "t.uri"), (_RELEASE_ALBUMS, "al.sort_at", "al.uri")],
    "tip": [(_TIPS, "s.indexed_at", "tp.uri")],
    "follow": [(_FOLLOWS, "f.sort_at", "f.uri")],
    "copyrightClaim": [(_COPYRIGHT.format(at="c.opened_at", reason="copyrightClaim", where="1 = 1"),
                        "c.opened_at", "c.track")],
    "copyrightCounter": [(_COPYRIGHT.format(at="c.countered_at", reason="copyrightCounter",
                                            where="c.countered_at IS NOT NULL AND c.claimant = :me"), "c.countered_at", "c.track")],
    "copyrightRestored": [(_COPYRIGHT.format(
        at=_RESTORED_AT, reason="copyrightRestored",
        where="(c.status = 'restored' OR (c.status = 'countered' AND c.restore_at <= :now))"),
        _RESTORED_AT, "c.track")],
    "copyrightUpheld": [(_COPYRIGHT.format(at="c.closed_at", reason="copyrightUpheld", where="c.status = 'upheld'"),
                         "c.closed_at", "c.track")],
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _time(value: str | None, name: str) -> str | None:
    """An atproto datetime -> UTC ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (None for None). Raises 400 ``InvalidRequest``."""
    if value is None:
        return None
    normal = normalize_datetime(value)
    if normal is None:
        raise invalid(f"{name} must be a datetime")
    return normal


def _sources(reasons: list[str] | None) -> list[tuple[str, str, str]]:
    """The sources of ``reasons`` (all when None or empty). Raises 400 for an unknown reason."""
    wanted = list(dict.fromkeys(reasons or REASONS))
    if unknown := [r for r in wanted if r not in REASONS]:
        raise invalid(f"reasons must be among {', '.join(REASONS)}, not {unknown[0][:40]!r}")
    return [src for reason in REASONS if reason in wanted for src in SOURCES[reason]]


async def seen_time(ctx: ViewContext, did: str) -> str | None:
    """The time up to which ``did`` has read its notifications (UTC ``YYYY-MM-DDTHH:MM:SS.mmmZ``), or
    None when it never marked any as seen."""
    cur = await ctx.db.execute("SELECT seen_at FROM notification_seen WHERE did = ?", (did,))
    row = await cur.fetchone()
    return row[0] if row else None


async def list_notifications(ctx: ViewContext, did: str, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.notification.listNotifications for the caller ``did`` (already authenticated),
    ``p`` its validated params (``limit``, optional ``cursor``, ``seenAt``, ``reasons``). Returns the
    lexicon's output: ``{notifications: [#notificationView], cursor?, seenAt?}``, newest first by
    (indexedAt, uri). Raises ``XrpcError`` 400 for a malformed cursor, seenAt or reason."""
    limit = p["limit"]
    seen = _time(p.get("seenAt"), "seenAt") or await seen_time(ctx, did)
    after = decode_cursor(p.get("cursor"), (str, str))
    args: dict[str, Any] = {"me": did, "n": limit + 1, "now": _now()}
    rows: list[tuple] = []
    for sql, at, uri in _sources(p.get("reasons")):
        cond = ""
        if after:
            cond = f"AND ({at}, {uri}) < (:after_at, :after_uri)"
            args |= {"after_at": after[0], "after_uri": after[1]}
        cur = await ctx.db.execute(f"{sql.format(cond=cond)} ORDER BY {at} DESC, {uri} DESC LIMIT :n", args)
        rows += [tuple(r) for r in await cur.fetchall()]
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    page = rows[:limit]
    out: dict[str, Any] = {"notifications": await _views(ctx, page, seen)}
    if len(rows) > limit:
        out["cursor"] = encode_cursor(page[-1][0], page[-1][1])
    if seen:
        out["seenAt"] = seen
    return out


async def _views(ctx: ViewContext, page: list[tuple], seen: str | None) -> list[dict[str, Any]]:
    """Hydrate a page of source rows into ``#notificationView``s (rows whose record is gone are dropped)."""
    if not page:
        return []
    uris = [r[1] for r in page]
    marks = ",".join("?" * len(uris))
    cur = await ctx.db.execute(f"SELECT uri, json FROM record WHERE uri IN ({marks})", uris)
    records = {uri: raw for uri, raw in await cur.fetchall()}
    authors = await artist_views(ctx, [r[3] for r in page])
    tracks = await track_views(ctx, [t for r in page if (t := _track_of(r))])
    views = []
    for row in page:
        at, uri, cid, author, reason, subject = row
        if uri not in records:
            continue
        view: dict[str, Any] = {"uri": uri, "cid": cid, "author": authors[author], "reason": reason,
                                "record": json.loads(records[uri]), "indexedAt": at,
                                "isRead": seen is not None and at <= seen}
        if subject:
            view["reasonSubject"] = subject
        if (track := tracks.get(_track_of(row) or "")) is not None:
            view["track"] = track
        views.append(view)
    return views


def _track_of(row: tuple) -> str | None:
    """The track a source row is about: the one a tip names, or a released track (not an album)."""
    _at, uri, _cid, _author, reason, subject = row
    if reason == "tip":
        return subject
    return uri if is_track_uri(uri) else None


async def unread_count(ctx: ViewContext, did: str, p: dict[str, Any] | None = None) -> dict[str, Any]:
    """fm.openmusic.notification.getUnreadCount for the caller ``did``: ``{count, capped?}``, the
    notifications newer than ``p["seenAt"]`` (or the stored seen time; all when none), counted up to
    ``UNREAD_CAP`` in one statement (each source stops after ``UNREAD_CAP + 1`` rows). Raises
    ``XrpcError`` 400 for a malformed seenAt."""
    p = p or {}
    seen = _time(p.get("seenAt"), "seenAt") or await seen_time(ctx, did)
    parts = []
    for sql, at, _uri in _sources(None):
        cond = f"AND {at} > :seen" if seen else ""
        parts.append(f"SELECT 1 FROM ({sql.format(cond=cond)} LIMIT :n) AS s{len(parts)}")
    cur = await ctx.db.execute(f"SELECT COUNT(*) FROM ({' UNION ALL '.join(parts)} LIMIT :n) AS u",
                               {"me": did, "seen": seen, "n": UNREAD_CAP + 1, "now": _now()})
    (count,) = await cur.fetchone()
    out: dict[str, Any] = {"count": min(count, UNREAD_CAP)}
    if count > UNREAD_CAP:
        out["capped"] = True
    return out


async def update_seen(conn: aiosqlite.Connection, did: str, seen_at: str, now: str | None = None) -> str:
    """fm.openmusic.notification.updateSeen for ``did``: store ``seen_at`` (an atproto datetime) as the
    time up to which it has read its notifications, unless the stored one is later (it only moves
    forward); a time after ``now`` (default: the clock) is taken as ``now``. Returns the stored time
    (UTC ``YYYY-MM-DDTHH:MM:SS.mmmZ``). One statement on ``conn``, which autocommits (like
    ``appview.clicks``). Raises ``XrpcError`` 400 when ``seen_at`` is not a datetime."""
    now = now or _now()
    when = min(_time(seen_at, "seenAt") or now, now)
    await conn.execute(
        "INSERT INTO notification_seen (did, seen_at, updated_at) VALUES (?, ?, ?) ON CONFLICT (did) DO UPDATE "
        "SET seen_at = excluded.seen_at, updated_at = excluded.updated_at "
        "WHERE excluded.seen_at > notification_seen.seen_at", (did, when, now))
    cur = await conn.execute("SELECT seen_at FROM notification_seen WHERE did = ?", (did,))
    return (await cur.fetchone())[0]


# -- over XRPC: service auth first -------------------------------------------------------------------

async def _input(nsid: str, request: Request) -> dict[str, Any]:
    """The JSON input of procedure ``nsid``, validated against its lexicon. Raises 400 ``InvalidRequest``."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise invalid("the input must be application/json")
    try:
        body = json.loads(await request.body())
        validator().validate(nsid, "input", body)
    except (ValueError, ValidationError, RecursionError) as exc:
        raise invalid(f"the input is not a valid {nsid} input: {str(exc)[:200]}") from exc
    return body


async def _list(rt: AppViewDeps, did: str, request: Request) -> dict[str, Any] | None:
    return await list_notifications(rt.views, did, parse_params(LIST, request))


async def _unread(rt: AppViewDeps, did: str, request: Request) -> dict[str, Any] | None:
    return await unread_count(rt.views, did, parse_params(UNREAD, request))


async def _update_seen(rt: AppViewDeps, did: str, request: Request) -> dict[str, Any] | None:
    body = await _input(UPDATE_SEEN, request)
    assert rt.auth is not None
    await update_seen(rt.auth.db, did, body["seenAt"])  # the request path's writer connection
    return None


#: nsid -> (HTTP method, handler(runtime, caller DID, request) -> output or None for none)
NOTIFICATION_METHODS: dict[str, tuple[str, Callable[[AppViewDeps, str, Request], Awaitable[dict[str, Any] | None]]]] = {
    LIST: ("GET", _list),
    UNREAD: ("GET", _unread),
    UPDATE_SEEN: ("POST", _update_seen),
}


async def notification_method(rt: AppViewDeps, nsid: str, request: Request) -> Response:
    """Serve one ``fm.openmusic.notification.*`` method: the HTTP method it takes (GET or HEAD for the
    queries, POST with a JSON body for updateSeen: else 405), a service-auth JWT for ``nsid`` verified
    by ``rt.auth`` (401 ``AuthRequired``/``InvalidToken``/``ExpiredToken``; 501 when this AppView
    verifies none), then the params or input (400) and the handler. Errors as XRPC error bodies;
    updateSeen answers 200 with no body."""
    try:
        method, handler = NOTIFICATION_METHODS[nsid]
        head = request.method == "HEAD" and method == "GET"
        if request.method != method and not head:
            raise XrpcError(405, "InvalidRequest", f"{nsid} takes {method}")
        if rt.auth is None:
            raise XrpcError(501, "MethodNotImplemented", "this AppView verifies no service-auth JWTs, so it "
                                                         "serves no notifications")
        caller = await rt.auth.verify(request.headers.get("authorization"), nsid)
        result = await handler(rt, caller, request)
        response = Response(status_code=200) if result is None else JSONResponse(result)
        return head_response(response) if head else response
    except AuthError as exc:
        resp = XrpcError(401, exc.error, str(exc)).response()
        resp.headers["WWW-Authenticate"] = 'Bearer realm="openmusic"'
        return resp
    except XrpcError as exc:
        return exc.response()
    except Exception:
        log.exception("%s failed", nsid)
        return XrpcError(500, "InternalServerError", "internal error").response()
