"""The catalog pages and the listener's writes (skeleton -> hydration -> presentation: the AppView's
query handlers do the first two, the templates the last; no SQL here).

Pages (anyone): ``GET /`` newest tracks, ``GET /search`` (``q``, ``sort``, ``cursor``),
``GET /track/{did}/{rkey}``, ``GET /artist/{actor}`` (handle or DID, ``cursor``),
``GET /album/{did}/{rkey}``. Each calls the handler that serves the same data over XRPC
(``fm.openmusic.catalog.*``, ``actor.getProfile``, ``listen.getTrackStats``), with its parameters
validated against the same lexicon, so what a page shows, any other player can get.

Writes (signed in, CSRF-checked), each a record in **the listener's own PDS** through their OAuth
session; the firehose brings it back to our index:
- ``POST /play`` (``static/web/player.js`` sends it when a listening ends): an
  ``fm.openmusic.listen.play`` with the heard ``segments`` (ms, merged, clipped to the track's
  duration) and ``listenedMs`` = their union. Answers JSON: ``{"uri", "listenedMs"}`` or an XRPC-style
  ``{"error", "message"}`` with 400/401/403/404/409/502. For a listener who opted in (``POST
  /me/teal``), the play is then also written as a teal.fm scrobble (``fm.teal.feed.play``, under the
  play's own record key, so a retry rewrites the same record) when it heard enough by teal's rule
  (``teal_counts``); the answer then carries ``tealPlay`` (its AT-URI), or ``tealError`` when that
  second write failed (the play itself stands).
- ``POST /me/teal`` (form: ``on`` 1 or 0, ``next``): turn those teal.fm copies on or off for the
  account (``indexer.teal_play.set_scrobbles``); ``/me`` shows the setting (``teal_scrobble``).
- ``POST /like`` and ``POST /unlike`` (forms): create or delete the viewer's
  ``fm.openmusic.social.like`` of a track, then back to the page (303), waiting up to
  ``INDEX_WAIT_S`` for the index to show it. The like form carries a record key (a TID), so the
  same form sent twice (a double click) writes one like; an unlike removes every like of the track
  the viewer has (duplicates written by any client included)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from appview.copyright import audio_down
from appview.queries import QUERIES
from appview.views import viewer_like_uris, viewer_likes
from appview.xrpc import XrpcError, validate_params
from core.lexicons import ALBUM, LIKE, PLAY, PLYR_TRACK, TRACK, RecordInvalid, validate_record
from core.publish import now_iso
from core.tid import TID_RE, is_tid, tid
from indexer import teal_play
from web import csrf, label_prefs
from web.errors import PageError
from web.oauth.client import PdsError, SessionEnded, SignInError, UserSession
from web.paths import local_path

if TYPE_CHECKING:
    from web.app import WebApp

log = logging.getLogger("openmusic.web")
#: Tracks per page on lists.
PAGE_SIZE = 25
#: Longest wait, seconds, for a like written to the PDS to come back through the firehose.
INDEX_WAIT_S = 3.0
#: Most heard segments a play may carry (the lexicon's ``maxLength``).
MAX_SEGMENTS = 1000
#: XRPC-style error names of ``POST /play``'s answers, by HTTP status.
JSON_ERRORS = {400: "InvalidRequest", 401: "AuthRequired", 403: "InvalidCsrfToken", 404: "NotFound",
               409: "TrackChanged", 413: "PayloadTooLarge", 415: "InvalidRequest"}
#: What the play records' ``client`` says.
CLIENT = "openmusic-web/0.1"
#: The teal.fm scrobble written for listeners who opt in (teal-fm/teal ``lexicons/fm.teal/feed/play.json``).
TEAL_PLAY = teal_play.COLLECTION
#: Its ``submissionClientAgent`` (``<app-identifier>/<version>``, the identifier in reverse DNS): the
#: indexer knows its own copies by this prefix (``indexer.teal_play.OWN_AGENT_PREFIX``).
TEAL_AGENT = teal_play.OWN_AGENT_PREFIX + "0.1"
#: A play's record key when the player chose it (``POST /play``'s ``rkey``): a TID (atproto record-key spec).
PLAY_RKEY = TID_RE


class Pages:
    """Endpoints of the catalog pages and the listener's writes, over a started ``WebApp`` with views."""

    def __init__(self, web: WebApp) -> None:
        assert web.views is not None
        self.web = web
        self.views = web.views
        #: Other rooms' additions to a page's context: ``provider(request, template, context) -> dict``
        #: (``web.social`` adds followers, votes and reviews); a ``PageError`` in one leaves its part out.
        self.context_providers: list[Callable[[Request, str, dict[str, Any]], Awaitable[dict[str, Any]]]] = []
        web.templates.filters.update(track_path=track_path, album_path=album_path, audio_down=audio_down)
        web.templates.globals.update(new_tid=tid)  # record keys for forms that write once (like, tip)
        self.context_providers.append(self._teal_setting_context)
        label_prefs.attach(web, self)  # the viewer's content-label preferences, on every page

    def routes(self) -> list[BaseRoute]:
        """The routes, to put before the sign-in routes (``web.app.routes``)."""
        return [
            Route("/", self.home, methods=["GET"]),
            Route("/search", self.search, methods=["GET"]),
            Route("/track/{did}/{rkey}", self.track, methods=["GET"]),
            Route("/artist/{actor}", self.artist, methods=["GET"]),
            Route("/album/{did}/{rkey}", self.album, methods=["GET"]),
            Route("/play", self.play, methods=["POST"]),
            Route("/like", self.like, methods=["POST"]),
            Route("/unlike", self.unlike, methods=["POST"]),
            Route("/me/teal", self.teal_setting, methods=["POST"]),
        ]

    # -- helpers -----------------------------------------------------------------------------------
    async def query(self, nsid: str, **params: object) -> dict[str, Any]:
        """Call the XRPC handler ``nsid`` with ``params`` (validated by its lexicon). Raises
        ``PageError`` (404 for ``NotFound``/``ActorNotFound``, else the XRPC error's status). A list
        value is sent as the parameter repeated (``uris=a&uris=b``)."""
        pairs = [(k, str(item)) for k, v in params.items() if v not in (None, "")
                 for item in (v if isinstance(v, list | tuple) else [v])]
        try:
            return await QUERIES[nsid](self.views, validate_params(nsid, pairs))
        except XrpcError as exc:
            if exc.error.endswith("NotFound"):  # XRPC answers these 400 with the name; a page is 404
                raise PageError(404, "Not found", exc.message) from exc
            raise PageError(exc.status, "Cannot show this", exc.message) from exc

    async def lookup(self, nsid: str, uri: str) -> dict[str, Any]:
        """``query(nsid, uri=uri)`` for a page whose address names the record: an address that cannot
        name one (a malformed DID or key) is a plain 404 page, not the lexicon's validation message."""
        try:
            return await self.query(nsid, uri=uri)
        except PageError as exc:
            if exc.status == 400:
                _ = self.web.templates.gettext
                raise PageError(404, _("Not found"), _("Nothing is published at this address.")) from exc
            raise

    async def viewer(self, request: Request) -> tuple[UserSession | None, str | None]:
        """The signed-in user (or None) and the CSRF token for their forms."""
        user = await self.web.user_session(request.cookies.get("om_session"))
        if user is None:
            return None, None
        assert self.web.sealer is not None
        return user, csrf.token(self.web.sealer.csrf_key, f"session:{user.key}")

    async def page(self, request: Request, name: str, status: int = 200, **context: object) -> Response:
        """Render ``name`` with the viewer (``user``, ``csrf_token``), ``context`` and, for a page
        rendered whole (200), what ``context_providers`` add."""
        if status == 200:
            for provide in self.context_providers:
                with contextlib.suppress(PageError):  # the page shows without that part rather than failing
                    context |= await provide(request, name, context)
        user, token = await self.viewer(request)
        return self.web.render(name, status=status, user=user, csrf_field=csrf.FIELD, csrf_token=token,
                               **context)

    async def guarded(self, request: Request, build) -> Response:
        """Run ``build()`` (a page); a ``PageError`` becomes an error page with its status."""
        try:
            return await build()
        except PageError as exc:
            user, _ = await self.viewer(request)
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)

    async def liked(self, user: UserSession | None, uris: list[str]) -> dict[str, str]:
        return await viewer_likes(self.views, user.did, uris) if user else {}

    # -- pages -------------------------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        """GET /: the newest tracks, and the search box."""
        async def build() -> Response:
            result = await self.query("fm.openmusic.catalog.searchTracks", sort="recent", limit=PAGE_SIZE)
            return await self.page(request, "home.html", tracks=result["tracks"], cursor=result.get("cursor"))
        return await self.guarded(request, build)

    async def search(self, request: Request) -> Response:
        """GET /search?q=&sort=recent|plays&cursor=: search results, a page at a time."""
        q = request.query_params.get("q", "")[:256]
        sort = request.query_params.get("sort", "recent")
        sort = sort if sort in ("recent", "plays") else "recent"  # an unknown order: the default, not an error
        cursor = request.query_params.get("cursor")

        async def build() -> Response:
            if q.strip() and not re.search(r"\w", q):  # only signs ("-", "%", "🎵"): nothing to match
                return await self.page(request, "search.html", q=q, sort=sort, tracks=[], cursor=None, paged=False)
            stale = False
            try:
                result = await self.query("fm.openmusic.catalog.searchTracks", q=q, sort=sort, cursor=cursor,
                                          limit=PAGE_SIZE)
            except PageError as exc:
                if not cursor or exc.status != 400:
                    raise
                # a page link from an older version, or edited by hand: the first page, and say so
                stale = True
                result = await self.query("fm.openmusic.catalog.searchTracks", q=q, sort=sort, limit=PAGE_SIZE)
            return await self.page(request, "search.html", q=q, sort=sort, tracks=result["tracks"],
                                   cursor=result.get("cursor"), paged=bool(cursor) and not stale, stale=stale)
        return await self.guarded(request, build)

    async def track(self, request: Request) -> Response:
        """GET /track/{did}/{rkey}: the track, its player, its numbers, like/unlike."""
        uri = f"at://{request.path_params['did']}/{TRACK}/{request.path_params['rkey']}"

        async def build() -> Response:
            nonlocal uri
            try:
                track = (await self.lookup("fm.openmusic.catalog.getTrack", uri))["track"]
            except PageError as exc:  # not ours: a track indexed from plyr.fm under the same key?
                if exc.status != 404:
                    raise
                uri = f"at://{request.path_params['did']}/{PLYR_TRACK}/{request.path_params['rkey']}"
                track = (await self.lookup("fm.openmusic.catalog.getTrack", uri))["track"]
            stats = await self.query("fm.openmusic.listen.getTrackStats", uri=uri)
            user, _ = await self.viewer(request)
            album = None
            if track.get("album"):  # its title for the link; an album not indexed (yet) keeps a plain link
                with contextlib.suppress(PageError):
                    album = (await self.query("fm.openmusic.catalog.getAlbum", uri=track["album"]["uri"]))["album"]
            return await self.page(request, "track.html", track=track, stats=stats, album=album,
                                   like=(await self.liked(user, [uri])).get(uri),
                                   notice=request.query_params.get("notice", ""),
                                   saved=request.query_params.get("saved") == "1")
        return await self.guarded(request, build)

    async def artist(self, request: Request) -> Response:
        """GET /artist/{actor}: the profile and the artist's tracks, newest first. An account with no
        tracks that plays or likes gets a link to its listener page (``web.profile``) instead."""
        actor = request.path_params["actor"]
        cursor = request.query_params.get("cursor")

        async def build() -> Response:
            profile = await self.query("fm.openmusic.actor.getProfile", actor=actor)
            listener_only = not profile["tracksCount"] and bool(profile["playsCount"] or profile["likesCount"])
            result = {"tracks": []} if listener_only else await self.query(
                "fm.openmusic.catalog.getArtistTracks", actor=actor, cursor=cursor, limit=PAGE_SIZE)
            return await self.page(request, "artist.html", profile=profile, tracks=result["tracks"],
                                   cursor=result.get("cursor"), paged=bool(cursor), listener_only=listener_only)
        return await self.guarded(request, build)

    async def album(self, request: Request) -> Response:
        """GET /album/{did}/{rkey}: the album's tracks in its order."""
        uri = f"at://{request.path_params['did']}/fm.openmusic.catalog.album/{request.path_params['rkey']}"

        async def build() -> Response:
            album = (await self.lookup("fm.openmusic.catalog.getAlbum", uri))["album"]
            user, _ = await self.viewer(request)
            return await self.page(request, "album.html", album=album, tracks=album["tracks"],
                                   like=(await self.liked(user, [uri])).get(uri),
                                   saved=request.query_params.get("saved") == "1")
        return await self.guarded(request, build)

    # -- writes ------------------------------------------------------------------------------------
    async def _signed_in_form(self, request: Request) -> tuple[UserSession, dict[str, str]]:
        """The form of a signed-in user with a valid CSRF token. Raises ``PageError`` (401, 403, 4xx)."""
        _ = self.web.templates.gettext
        form = await self.web.read_form(request)
        user, token = await self.viewer(request)
        if user is None:
            raise PageError(401, _("Not signed in"), _("Sign in to do this."))
        if not csrf.check(self.web.sealer.csrf_key, f"session:{user.key}", form.get(csrf.FIELD)):  # type: ignore[union-attr]
            raise PageError(403, _("Form expired"), _("This was not sent from our page, or the page is too old. "
                                                      "Reload the page and try again."))
        return user, form

    async def play(self, request: Request) -> Response:
        """POST /play: write the listener's ``fm.openmusic.listen.play`` to their PDS (module docstring).

        ``rkey`` (optional; ``player.js`` makes a TID when the listening ends and keeps the play until
        it is answered) makes a retry safe: the record is created under that key, and when the key is
        taken by the same play (same track and segments: an earlier try was written but its answer was
        lost) that record is the answer, with ``"existing": true``; nothing is written twice. Another
        play under the key: 409 ``RecordKeyInUse``. The reference PDS answers a taken key with a bare
        500, so any refused create with an ``rkey`` is checked with ``getRecord``. The PDS unreachable:
        502, like its refusals (the player keeps the play and tries again)."""
        user: UserSession | None = None
        try:
            user, form = await self._signed_in_form(request)
            rkey = form.get("rkey", "")
            if rkey and not PLAY_RKEY.match(rkey):
                raise PageError(400, "Bad record key", "rkey is a TID: 13 characters of base32-sortable")
            uri = form.get("uri", "")
            track = (await self.query("fm.openmusic.catalog.getTrack", uri=uri))["track"]
            if form.get("cid") != track["cid"]:
                raise PageError(409, "Track changed", "the track changed since the page was loaded; reload it")
            segments = parse_segments(form.get("segments", ""), track.get("durationMs"))
            heard = sum(end - start for start, end in segments)
            if heard <= 0:
                raise PageError(400, "Nothing heard", "no part of the track was heard")
            record = {"$type": PLAY, "track": {"uri": uri, "cid": track["cid"]},
                      "createdAt": started_at(form.get("started", ""), heard),
                      "listenedMs": heard, "segments": [{"startMs": s, "endMs": e} for s, e in segments],
                      "completed": form.get("completed") == "1", "client": CLIENT}
            existing = False
            try:
                created = await user.create_record(PLAY, record, rkey=rkey or None)
            except PdsError as refused:
                if not rkey:
                    raise
                try:
                    created = await user.call("GET", "com.atproto.repo.getRecord",
                                              params={"repo": user.did, "collection": PLAY, "rkey": rkey})
                except PdsError:
                    created = None
                if created is None:
                    raise refused from None
                value = created.get("value") if isinstance(created.get("value"), dict) else {}
                if value.get("track") != record["track"] or value.get("segments") != record["segments"]:
                    return JSONResponse({"error": "RecordKeyInUse", "message": "another play has this record key"},
                                        status_code=409)
                heard = value.get("listenedMs", heard)
                existing = True
        except PageError as exc:
            return JSONResponse({"error": JSON_ERRORS.get(exc.status, "InvalidRequest"), "message": exc.message},
                                status_code=exc.status)
        except SessionEnded:
            return JSONResponse({"error": "AuthRequired", "message": "your session ended: sign in again"},
                                status_code=401)
        except PdsError as exc:
            log.warning("writing a play for %s failed: %s", user.did if user else "?", exc)
            return JSONResponse({"error": "UpstreamFailure", "message": f"your PDS refused the play: {exc}"},
                                status_code=502)
        except (httpx.HTTPError, SignInError) as exc:
            log.warning("writing a play for %s failed: %s", user.did if user else "?", exc)
            return JSONResponse({"error": "UpstreamFailure", "message": "your PDS could not be reached; the play "
                                 "will be sent again"}, status_code=502)
        answer: dict[str, object] = {"uri": created.get("uri"), "listenedMs": heard}
        if existing:
            answer["existing"] = True
        if await teal_play.scrobbles_enabled(self.web.conn, user.did) and teal_counts(
                heard, track.get("durationMs"), form.get("completed") == "1"):
            answer |= await self._teal_copy(user, track, str(created.get("uri") or ""), record["createdAt"])
        return JSONResponse(answer)

    async def _teal_copy(self, user: UserSession, track: dict[str, Any], play_uri: str,
                         played: str) -> dict[str, object]:
        """Write the teal.fm copy of one of ``user``'s plays (``play_uri``, of ``track``, a
        ``#trackView``; ``played``: when listening began) with ``putRecord`` under the play's record
        key. Returns ``{"tealPlay": uri}``, or ``{"tealError": message}`` when it cannot be written."""
        rkey = play_uri.rsplit("/", 1)[-1]
        try:
            record = teal_record(track, played, self.web.settings.base_url.rstrip("/"))
            validate_record(TEAL_PLAY, record)
            written = await user.put_record(TEAL_PLAY, rkey, record)
        except (PdsError, SessionEnded, SignInError, httpx.HTTPError, RecordInvalid) as exc:
            log.warning("writing the teal.fm copy of %s failed: %s", play_uri, exc)
            return {"tealError": "the teal.fm copy of this play was not written"}
        return {"tealPlay": written.get("uri")}

    async def _teal_setting_context(self, request: Request, name: str, context: dict[str, Any]) -> dict[str, Any]:
        """A ``context_providers`` entry: on ``me.html``, ``teal_scrobble`` (whether the viewer's
        plays are also written as teal.fm plays)."""
        if name != "me.html":
            return {}
        user, _ = await self.viewer(request)
        return {"teal_scrobble": bool(user and await teal_play.scrobbles_enabled(self.web.conn, user.did))}

    async def teal_setting(self, request: Request) -> Response:
        """POST /me/teal (``on``: ``1`` or ``0``): turn the teal.fm copies of the viewer's plays on or
        off, then back to ``/me`` (303)."""
        async def build() -> Response:
            user, form = await self._signed_in_form(request)
            if form.get("on") not in ("0", "1"):
                raise PageError(400, "Bad form", "This form is damaged; reload the page.")
            await teal_play.set_scrobbles(self.web.conn, user.did, form["on"] == "1", now_iso())
            return RedirectResponse("/me?teal=" + form["on"] + "#teal", status_code=303)
        return await self.guarded(request, build)

    async def like(self, request: Request) -> Response:
        """POST /like (``uri`` of a track or an album, ``key``, ``next``): like it from the viewer's repo."""
        return await self._like(request, True)

    async def unlike(self, request: Request) -> Response:
        """POST /unlike (``uri`` of a track or an album, ``next``): delete the viewer's likes of it."""
        return await self._like(request, False)

    async def _like(self, request: Request, on: bool) -> Response:
        user: UserSession | None = None
        try:
            user, form = await self._signed_in_form(request)
            uri = form.get("uri", "")
            if f"/{ALBUM}/" in uri:  # an album is liked like a track: a strongRef to its record
                subject = (await self.query("fm.openmusic.catalog.getAlbum", uri=uri))["album"]
                back = album_path(uri)
            else:
                subject = (await self.query("fm.openmusic.catalog.getTrack", uri=uri))["track"]
                back = track_path(uri)
            existing = (await self.liked(user, [uri])).get(uri)
            key = form.get("key", "")
            if key and not is_tid(key):
                raise PageError(400, "Bad form", "This form is damaged; reload the page.")
            if on and not existing:
                await user.create_record_once(LIKE, {"$type": LIKE, "subject": {"uri": uri, "cid": subject["cid"]},
                                                     "createdAt": now_iso()}, key or None)
            elif not on:
                for like in await viewer_like_uris(self.views, user.did, uri):  # duplicates from any client too
                    await user.delete_record(LIKE, like.rsplit("/", 1)[-1])
            await self._until(lambda: self.liked(user, [uri]), lambda got: bool(got) == on)
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        except SessionEnded:
            return RedirectResponse("/login", status_code=303)
        except PdsError as exc:
            return self.web.error_page(502, "Your PDS refused", f"Your PDS did not save this: {exc}", user=user)
        return RedirectResponse(local_path(form.get("next"), fallback=back), status_code=303)

    async def _until(self, check, done) -> None:
        """Poll ``check()`` until ``done(result)``, at most ``INDEX_WAIT_S`` (the firehose's round trip)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(INDEX_WAIT_S):
                while not done(await check()):  # noqa: ASYNC110 (the index is polled: no event to wait on)
                    await asyncio.sleep(0.1)


def parse_segments(text: str, duration_ms: int | None) -> list[tuple[int, int]]:
    """``"0-15000,20000-31000"`` (ms) -> sorted, merged ``[(start, end)]``, each clipped to
    ``[0, duration_ms]``; empty ones dropped. Raises ``PageError`` (400) on malformed input or more
    than ``MAX_SEGMENTS`` segments."""
    parts = [p for p in text.split(",") if p]
    if len(parts) > MAX_SEGMENTS:
        raise PageError(400, "Too many segments", f"at most {MAX_SEGMENTS} segments")
    limit = duration_ms if duration_ms and duration_ms > 0 else 86_400_000
    spans = []
    for part in parts:
        start_s, sep, end_s = part.partition("-")
        if not sep or not start_s.isdigit() or not end_s.isdigit() or len(start_s) > 9 or len(end_s) > 9:
            raise PageError(400, "Bad segment", f"a segment is start-end in ms, not {part[:40]!r}")
        start, end = min(int(start_s), limit), min(int(end_s), limit)
        if end > start:
            spans.append((start, end))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def started_at(epoch_ms: str, heard_ms: int, now: float | None = None) -> str:
    """When listening began, as an atproto datetime: the player's ``epoch_ms`` when it is within
    the last day and not in the future, else now minus what was heard."""
    now_ms = int((time.time() if now is None else now) * 1000)
    value = int(epoch_ms) if epoch_ms.isdigit() and len(epoch_ms) < 16 else None
    if value is None or not now_ms - 86_400_000 <= value <= now_ms:
        value = now_ms - heard_ms
    return datetime.fromtimestamp(value / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def teal_counts(heard_ms: int, duration_ms: int | None, completed: bool) -> bool:
    """Whether a listening counts as a teal.fm play (``fm.teal.feed.play``'s description): the whole
    track when it is under 2 minutes, else half of it up to 4 minutes. ``heard_ms`` is the union of
    the heard segments; a second of slack covers the end of a track the player reports short."""
    if not duration_ms or duration_ms <= 0:
        return heard_ms >= 240_000 or (completed and heard_ms >= 30_000)
    if duration_ms < 120_000:
        return heard_ms >= duration_ms - 1000
    return heard_ms >= min(duration_ms // 2, 240_000)


def teal_record(track: dict[str, Any], played: str, site: str) -> dict[str, Any]:
    """The ``fm.teal.feed.play`` for a play of ``track`` (a ``#trackView``) that began at ``played``
    (an atproto datetime), written by our web app at ``site`` (its public URL): the track's title,
    its artist's display name (or handle), its length in seconds, its ISRC when its record has one,
    the track page as ``originUri``, ``site`` as ``musicServiceUri``, ``TEAL_AGENT`` as the agent."""
    def cut(text: str, limit: int = 256) -> str:
        return text.encode("utf-8")[:limit].decode("utf-8", "ignore") or "?"
    artist = track["artist"]
    record: dict[str, Any] = {
        "$type": TEAL_PLAY, "trackName": cut(track["title"]),
        "artists": [{"artistName": cut(artist.get("displayName") or artist.get("handle") or artist["did"])}],
        "playedTime": played, "originUri": site + track_path(track["uri"]), "musicServiceUri": site,
        "submissionClientAgent": TEAL_AGENT}
    if isinstance(track.get("durationMs"), int) and track["durationMs"] >= 1000:
        record["duration"] = track["durationMs"] // 1000
    isrc = (track.get("record") or {}).get("isrc")
    if isinstance(isrc, str) and isrc:
        record["isrc"] = isrc[:64]
    return record


def track_path(uri: str) -> str:
    """``at://did/fm.openmusic.catalog.track/rkey`` (or ``fm.plyr.track``) -> ``/track/did/rkey``."""
    did, _, rest = uri.removeprefix("at://").partition("/")
    return f"/track/{did}/{rest.rpartition('/')[2]}"


def album_path(uri: str) -> str:
    """``at://did/fm.openmusic.catalog.album/rkey`` -> ``/album/did/rkey``."""
    did, _, rkey = uri.removeprefix("at://").partition("/fm.openmusic.catalog.album/")
    return f"/album/{did}/{rkey}"
