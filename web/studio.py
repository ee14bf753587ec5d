"""The creator's studio: publish, edit and delete tracks from the browser, into **the creator's own
PDS** through their OAuth session (``com.atproto.repo.uploadBlob``, ``putRecord``, ``deleteRecord``).
The AppView keeps no original: the PDS holds the audio and the records, and the firehose brings them
back to our index like any other client's.

- ``GET /studio``: the signed-in account's tracks and albums as their PDS lists them
  (``com.atproto.repo.listRecords``), each with whether our index has it yet.
- ``POST /studio/upload?kind=audio|artwork`` (``static/web/studio.js``, with a progress bar): the
  raw file as the body, the CSRF token in ``X-CSRF-Token``. The body is capped at the lexicon's
  ``maxSize`` (audio 100 MB, artwork 2 MB) before it is read; the type is found from the bytes
  (audio: MP3, FLAC, Ogg Vorbis/Opus, WAV, M4A read by mutagen; artwork: PNG, JPEG, WebP read by
  Pillow), never from the name. The blob goes to the PDS, whose own limit may be lower
  (``PayloadTooLarge`` is then said plainly). Answers JSON ``{"blob", "durationMs", "title",
  "genre", "bpm", "isrc", "trackNumber"}`` (the tags prefill the form) or ``{"error", "message"}``.
- ``GET|POST /studio/track/new`` and ``GET|POST /studio/track/{rkey}``: the track form (every field
  of ``fm.openmusic.catalog.track``, the splits editor, the AI disclosure, a purchase link; see
  ``web.studio_form``). Without JavaScript the files travel in the form itself. Handles are
  resolved to DIDs (``IdentityService.did_for_handle``, verified both ways). The record is checked
  against the lexicon before anything is written; a new one is created under the form's record key
  (a TID, ``swapRecord: null``), an edit replaces the record the form was made from (``swapRecord``:
  its CID), so a double submit writes once and a change made meanwhile elsewhere is not
  overwritten. A refusal writes no record and shows the form again with the reason; blobs uploaded
  for a refused form are never referenced, and the PDS drops them.
- ``POST /studio/track/{rkey}/delete``: delete the record (``swapRecord``: the CID shown).
- ``GET /buy/{did}/{rkey}``: count a click on the track's purchase link (``appview.clicks``: once
  per clicker, track and day; a clicker is the signed-in DID or else the visitor's address, kept
  only as a keyed hash; only requests a browser marks ``Sec-Fetch-Site: same-origin``, i.e. clicks on
  our pages, count) and go there (303); only ``https`` links are followed.
Albums: ``web.studio_album``."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httpx
from multiformats import CID, multihash
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from appview.clicks import count_purchase_click
from appview.views import artist_views
from core.lexicons import ALBUM, TRACK, RecordInvalid, from_json, validate_record
from core.publish import PublishError, now_iso, read_audio
from core.tid import is_tid, tid
from web import csrf
from web.errors import PageError
from web.forms import blob_rules, image_type, read_capped, read_form
from web.oauth.client import PdsError, SessionEnded, SignInError, UserSession
from web.paths import login_href
from web.people import resolve_people
from web.studio_form import (
    AI_LEVELS,
    LICENSES,
    FormProblem,
    TrackForm,
    apply,
    blob_ref,
    track_fields,
)

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

log = logging.getLogger("openmusic.web")
#: Audio formats taken (mutagen's class name -> what the page calls it).
AUDIO_FORMATS = {"MP3": "MP3", "FLAC": "FLAC", "OggVorbis": "Ogg", "OggOpus": "Ogg", "WAVE": "WAV", "MP4": "M4A"}
#: Bytes of a track form besides its files.
FORM_OVERHEAD = 256 * 1024
#: Most text fields of a track form (about 20, plus two per split row).
MAX_FIELDS = 80
#: Longest wait, seconds, for a published track to come back through the firehose before the
#: studio goes on (the page then says the catalog shows it shortly).
PUBLISH_WAIT_S = 10.0
#: Records per ``listRecords`` page, and most pages the studio reads.
LIST_PAGE = 100
LIST_PAGES = 10
#: A record key (atproto record-key spec: 1-512 of these characters; "." and ".." are not keys).
RKEY = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9._:~-]{1,512}")
#: Stands in for a blob not uploaded yet, so that a record is checked before its files are sent.
PLACEHOLDER_AUDIO = {"$type": "blob", "ref": {"$link": str(CID("base32", 1, "raw", multihash.digest(b"", "sha2-256")))},
                     "mimeType": "audio/wav", "size": 1}
#: Collection -> (the query that shows one record, the page path's first segment).
PAGES = {TRACK: ("fm.openmusic.catalog.getTrack", "track"), ALBUM: ("fm.openmusic.catalog.getAlbum", "album")}
#: Errors of the user's PDS or of reaching it.
PDS_TROUBLE = (PdsError, httpx.HTTPError, SignInError)


class UploadRefused(Exception):
    """A file the studio does not send on: ``status`` (413, 415, 502), ``error`` (XRPC-style name), ``message``."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


@dataclass
class Listed:
    """A record of the creator's repo as the studio lists it."""

    rkey: str
    uri: str
    cid: str
    value: dict[str, Any]
    indexed: bool = False


class Studio:
    """The studio's endpoints (module docstring), over a started ``WebApp`` with views."""

    def __init__(self, web: WebApp, pages: Pages) -> None:
        self.web, self.pages = web, pages
        assert web.views is not None
        self.views = web.views
        self._ = web.templates.gettext

    def routes(self) -> list[BaseRoute]:
        """The track routes and ``/buy`` (the album routes: ``web.studio_album.Albums``)."""
        return [
            Route("/studio", self.index, methods=["GET"]),
            Route("/studio/upload", self.upload, methods=["POST"]),
            Route("/studio/track/new", self.track_page, methods=["GET"]),
            Route("/studio/track/new", self.track_submit, methods=["POST"]),
            Route("/studio/track/{rkey}", self.track_page, methods=["GET"]),
            Route("/studio/track/{rkey}", self.track_submit, methods=["POST"]),
            Route("/studio/track/{rkey}/delete", self.delete, methods=["POST"]),
            Route("/buy/{did}/{rkey}", self.buy, methods=["GET"]),
        ]

    # -- helpers -----------------------------------------------------------------------------------
    async def signed_in(self, request: Request) -> tuple[UserSession, str] | Response:
        """The user and their CSRF token, or the sign-in redirect (back here afterwards)."""
        user, token = await self.pages.viewer(request)
        if user is None or token is None:
            return RedirectResponse(login_href(), status_code=303)
        return user, token

    def csrf_ok(self, user: UserSession, presented: object) -> bool:
        return csrf.check(self.web.sealer.csrf_key, f"session:{user.key}", presented)  # type: ignore[union-attr]

    def pds_problem(self, exc: Exception, user: UserSession, doing: str) -> Response:
        """The error page for the PDS refusing or not answering while ``doing``."""
        log.warning("studio: %s for %s failed: %s", doing, user.did, exc)
        return self.web.error_page(502, self._("Your PDS refused"), self._(
            "Your PDS did not do this (%(doing)s): %(reason)s. Nothing else was changed.")
            % {"doing": doing, "reason": exc}, user=user)

    async def list_records(self, user: UserSession, collection: str) -> list[Listed]:
        """The user's records of ``collection`` from their PDS, newest first (at most
        ``LIST_PAGE * LIST_PAGES``). Raises ``PDS_TROUBLE``, ``SessionEnded``."""
        out: list[Listed] = []
        cursor: str | None = None
        for _page in range(LIST_PAGES):
            params: dict[str, Any] = {"repo": user.did, "collection": collection, "limit": LIST_PAGE}
            if cursor:
                params["cursor"] = cursor
            body = await user.call("GET", "com.atproto.repo.listRecords", params=params)
            for rec in body.get("records") or []:
                if isinstance(rec, dict) and isinstance(rec.get("value"), dict):
                    out.append(Listed(str(rec.get("uri", "")).rsplit("/", 1)[-1], rec.get("uri", ""),
                                      rec.get("cid", ""), rec["value"]))
            cursor = body.get("cursor")
            if not cursor or not body.get("records"):
                break
        return out

    async def indexed_cids(self, uris: list[str]) -> dict[str, str]:
        """Track uri -> the CID our index holds, for those of ``uris`` it has."""
        found: dict[str, str] = {}
        for i in range(0, len(uris), 25):
            with contextlib.suppress(PageError):
                got = await self.pages.query("fm.openmusic.catalog.getTracks", uris=uris[i:i + 25])
                found.update({t["uri"]: t["cid"] for t in got.get("tracks", [])})
        return found

    async def until_indexed(self, nsid: str, uri: str, cid: str | None) -> bool:
        """Wait up to ``PUBLISH_WAIT_S`` until the index holds ``uri`` at ``cid`` (None: until it is gone)."""
        key = "track" if nsid.endswith("getTrack") else "album"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PUBLISH_WAIT_S):
                while True:
                    try:
                        got = (await self.pages.query(nsid, uri=uri))[key]["cid"]
                    except PageError:
                        got = None
                    if got == cid:
                        return True
                    await asyncio.sleep(0.1)
        return False

    async def store_file(self, user: UserSession, kind: str, data: bytes, name: str = "") -> tuple[dict, dict]:
        """Check ``data`` (``kind``: audio or artwork) and upload it as a blob to the user's PDS.
        Returns (blob ref JSON, what was read: durationMs and tags for audio). Raises
        ``UploadRefused`` (413 too large, 415 not a file we take, 502 the PDS refused),
        ``SessionEnded``, ``httpx.HTTPError``."""
        _ = self._
        max_size, _accept = blob_rules(TRACK, kind)
        if len(data) > max_size:
            raise UploadRefused(413, "PayloadTooLarge", _("This file is %(mb)s MB; a track's %(kind)s may be at "
                                                          "most %(max)s MB.") % {
                "mb": round(len(data) / 1e6, 1), "kind": _(kind), "max": max_size // 1_000_000})
        info: dict[str, Any] = {}
        if kind == "audio":
            try:
                read = await asyncio.to_thread(read_audio, data, name)
            except PublishError:
                read = None
            if read is None or read.format not in AUDIO_FORMATS:
                raise UploadRefused(415, "InvalidAudio", _("This is not an audio file we take: send MP3, FLAC, "
                                                           "Ogg, WAV or M4A."))
            mime = read.mime_type
            info = {"durationMs": read.duration_ms, "title": read.title, "genre": read.genre, "bpm": read.bpm,
                    "isrc": read.isrc, "trackNumber": read.track_number, "format": AUDIO_FORMATS[read.format]}
        else:
            mime = await asyncio.to_thread(image_type, data)
            if mime is None:
                raise UploadRefused(415, "InvalidImage", _("The artwork must be a PNG, JPEG or WebP image."))
        try:
            blob = await user.upload_blob(data, mime)
        except PdsError as exc:
            if exc.status == 413 or "large" in exc.message.lower():
                raise UploadRefused(413, "PayloadTooLarge", _(
                    "Your PDS takes files only up to its own limit, and this one (%(mb)s MB) is over it. Ask "
                    "your PDS's operator, or send a smaller file.") % {"mb": round(len(data) / 1e6, 1)}) from exc
            raise UploadRefused(502, "UpstreamFailure", _("Your PDS did not take the file: %(reason)s")
                                % {"reason": exc}) from exc
        return blob, info

    # -- pages -------------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        """GET /studio: the creator's tracks and albums (from their PDS), with links to add and edit."""
        got = await self.signed_in(request)
        if isinstance(got, Response):
            return got
        user, token = got
        try:
            tracks = await self.list_records(user, TRACK)
            albums = await self.list_records(user, ALBUM)
        except SessionEnded:
            return RedirectResponse(login_href(), status_code=303)
        except PDS_TROUBLE as exc:
            return self.pds_problem(exc, user, self._("listing your tracks"))
        held = await self.indexed_cids([t.uri for t in tracks])
        for t in tracks:
            t.indexed = held.get(t.uri) == t.cid
        return self.web.render("studio.html", user=user, csrf_field=csrf.FIELD, csrf_token=token, tracks=tracks,
                               albums=albums, notice=request.query_params.get("notice", ""))

    async def upload(self, request: Request) -> Response:
        """POST /studio/upload (module docstring). JSON in and out."""
        _ = self._
        user, _token = await self.pages.viewer(request)

        def refuse(status: int, error: str, message: str) -> Response:
            return JSONResponse({"error": error, "message": message}, status_code=status)

        if user is None:
            return refuse(401, "AuthRequired", _("Sign in to upload."))
        if not self.csrf_ok(user, request.headers.get("x-csrf-token")):
            return refuse(403, "InvalidToken", _("This was not sent from our page, or the page is too old. "
                                                 "Reload the page and try again."))
        kind = request.query_params.get("kind", "")
        if kind not in ("audio", "artwork"):
            return refuse(400, "InvalidRequest", "kind must be audio or artwork")
        max_size, _accept = blob_rules(TRACK, kind)
        data = await read_capped(request, max_size)
        if data is None:
            return refuse(413, "PayloadTooLarge", _("A track's %(kind)s may be at most %(max)s MB.")
                          % {"kind": _(kind), "max": max_size // 1_000_000})
        if not data:
            return refuse(400, "InvalidRequest", _("The file is empty."))
        try:
            name = unquote(request.headers.get("x-file-name", ""))[:256]  # studio.js sends it URI-encoded
            blob, info = await self.store_file(user, kind, data, name)
        except UploadRefused as exc:
            return refuse(exc.status, exc.error, exc.message)
        except SessionEnded:
            return refuse(401, "AuthRequired", _("Your session ended: sign in again."))
        except (httpx.HTTPError, SignInError) as exc:
            log.warning("studio upload for %s failed: %s", user.did, exc)
            return refuse(502, "UpstreamFailure", _("Your PDS could not be reached. Try again."))
        return JSONResponse({"blob": blob, **{k: v for k, v in info.items() if v is not None}})

    async def track_page(self, request: Request) -> Response:
        """GET /studio/track/new or /studio/track/{rkey}: the form, empty or with the published record."""
        got = await self.signed_in(request)
        if isinstance(got, Response):
            return got
        user, token = got
        rkey = request.path_params.get("rkey")
        if rkey is None:
            return self.render_form(user, token, TrackForm(key=tid()))
        try:
            existing = await user.get_record(TRACK, rkey) if RKEY.fullmatch(rkey) else None
        except SessionEnded:
            return RedirectResponse(login_href(), status_code=303)
        except PDS_TROUBLE as exc:
            return self.pds_problem(exc, user, self._("reading the track"))
        if existing is None:
            return self.web.error_page(404, self._("Not found"), self._("Your repo has no such track."), user=user)
        value = existing.get("value") or {}
        dids = [d for d in [*(value.get("featuredArtists") or []),
                            *(s.get("did") for s in value.get("splits") or [] if isinstance(s, dict))]
                if isinstance(d, str)]
        handles = {d: v.get("handle") for d, v in (await artist_views(self.views, dids)).items()
                   if v.get("handle") and v.get("handle") != "handle.invalid"}
        form = TrackForm.from_record(value, handles, existing.get("cid", ""))
        return self.render_form(user, token, form, rkey=rkey, uri=existing.get("uri"))

    def render_form(self, user: UserSession, token: str, form: TrackForm, *, rkey: str | None = None,
                    uri: str | None = None, status: int = 200, error: str | None = None) -> Response:
        audio_max, audio_accept = blob_rules(TRACK, "audio")
        art_max, art_accept = blob_rules(TRACK, "artwork")
        audio = blob_ref_or_none(form.audio_blob)
        artwork = blob_ref_or_none(form.artwork_blob)
        art_cid = (artwork or {}).get("ref", {}).get("$link") if isinstance((artwork or {}).get("ref"), dict) else None
        return self.web.render(
            "studio_track.html", status=status, user=user, csrf_field=csrf.FIELD, csrf_token=token, form=form,
            rkey=rkey, uri=uri, error=error, ai_levels=AI_LEVELS, licenses=LICENSES,
            audio_max_mb=audio_max // 1_000_000, art_max_mb=art_max // 1_000_000,
            audio_accept=",".join([*audio_accept, ".mp3", ".flac", ".ogg", ".oga", ".opus", ".wav", ".m4a"]),
            art_accept=",".join(art_accept), audio_size=(audio or {}).get("size"),
            artwork_url=self.views.image_url(user.did, art_cid) if art_cid and rkey else None)

    async def track_submit(self, request: Request) -> Response:
        """POST /studio/track/new or /studio/track/{rkey}: check, upload files, write (module docstring)."""
        _ = self._
        got = await self.signed_in(request)
        if isinstance(got, Response):
            return got
        user, token = got
        rkey = request.path_params.get("rkey")
        got_form = await self.read_upload_form(request, user, TRACK, ("audio", "artwork"), MAX_FIELDS)
        if isinstance(got_form, Response):
            return got_form
        fields, files = got_form
        form = TrackForm.from_fields(fields)
        try:
            return await self.save(user, token, form, files, rkey)
        except SessionEnded:
            return RedirectResponse(login_href(), status_code=303)
        except PDS_TROUBLE as exc:
            return self.pds_problem(exc, user, _("saving the track"))

    async def read_upload_form(self, request: Request, user: UserSession, collection: str, files: tuple[str, ...],
                               max_fields: int) -> tuple[dict[str, list[str]], dict[str, bytes]] | Response:
        """A studio form's multipart body: at most the lexicon's ``maxSize`` of each blob field named in
        ``files`` plus ``FORM_OVERHEAD``, read with ``web.forms.read_form``, its CSRF token checked.
        Returns (fields, file bytes by name), or the error page (413, 415, 400, 403) to answer."""
        _ = self._
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return self.web.error_page(415, _("Unsupported form"), _("Send this form from our page."), user=user)
        cap = sum(blob_rules(collection, name)[0] for name in files)
        body = await read_capped(request, cap + FORM_OVERHEAD)
        if body is None:
            return self.web.error_page(413, _("Files too large"), _(
                "The files of this form may be at most %(mb)s MB in all. Nothing was saved.")
                % {"mb": cap // 1_000_000}, user=user)
        try:
            fields, found = await read_form(request, body, files, max_fields=max_fields, max_part_size=FORM_OVERHEAD)
        except HTTPException:  # what request.form raises for python-multipart's refusals
            return self.web.error_page(400, _("Unreadable form"), _("This form could not be read."), user=user)
        if not self.csrf_ok(user, (fields.get(csrf.FIELD) or [None])[0]):
            return self.web.error_page(403, _("Form expired"), _(
                "This was not sent from our page, or the page is too old. Reload the page and try again."), user=user)
        return fields, found

    async def save(self, user: UserSession, token: str, form: TrackForm, files: dict[str, bytes],
                   rkey: str | None) -> Response:
        """Check ``form`` and write the record; a refusal shows the form again (module docstring)."""
        _ = self._

        def again(status: int, message: str) -> Response:
            return self.render_form(user, token, form, rkey=rkey, status=status, error=message,
                                    uri=f"at://{user.did}/{TRACK}/{rkey}" if rkey else None)

        if rkey is None and not is_tid(form.key):
            form.key = tid()
            return again(400, _("This form has no record key: it was not sent from our page. Send it again."))
        existing = await user.get_record(TRACK, rkey) if rkey else None
        if rkey and (existing is None or existing.get("cid") != form.swap):
            return again(409, _("This track changed or was deleted elsewhere since this page was opened. Nothing "
                                "was saved: reload the page to see it as it is now."))
        dids, missing = await resolve_people(self.views.identity, form.people())
        if missing:
            return again(400, _("No account was found for %(names)s. Check the handles.")
                         % {"names": ", ".join("@" + n for n in missing)})
        try:
            changes = track_fields(form, dids, user.did, _)
            audio = blob_ref(form.audio_blob, _("audio"), _)
            artwork = blob_ref(form.artwork_blob, _("artwork"), _)
        except FormProblem as exc:
            return again(400, str(exc))
        duration = int(form.duration_ms) if form.duration_ms.isdigit() else None
        if not files.get("audio") and audio is None:
            return again(400, _("Choose the audio file of the track."))
        value = dict((existing or {}).get("value") or {})
        record = apply({**value, "$type": TRACK, "createdAt": value.get("createdAt") or now_iso()}, changes)
        # the record without its new files is checked first, so that a refused form uploads nothing
        probe = {**record, "audio": audio or record.get("audio") or PLACEHOLDER_AUDIO,
                 "duration": duration or record.get("duration") or 1}
        try:
            validate_record(TRACK, from_json(probe))
        except (RecordInvalid, ValueError) as exc:
            return again(400, _("This track does not fit the track lexicon: %(reason)s") % {"reason": exc})
        try:
            for kind in ("audio", "artwork"):
                if files.get(kind):
                    blob, info = await self.store_file(user, kind, files[kind])
                    if kind == "audio":
                        audio, duration = blob, info["durationMs"]
                        form.audio_blob = json.dumps(blob)
                    else:
                        artwork = blob
                        form.artwork_blob = json.dumps(blob)
        except UploadRefused as exc:
            return again(exc.status, exc.message)
        record["audio"] = audio
        if form.remove_artwork and not files.get("artwork"):
            record.pop("artwork", None)
            form.artwork_blob = ""
        elif artwork is not None:
            record["artwork"] = artwork
        if duration is None and not record.get("duration"):
            return again(400, _("The audio's length is unknown: upload the file again."))
        if duration:
            record["duration"] = duration
        try:
            validate_record(TRACK, from_json(record))
        except (RecordInvalid, ValueError) as exc:
            return again(400, _("This track does not fit the track lexicon: %(reason)s") % {"reason": exc})
        if rkey is None and not form.again_ok:
            link = record["audio"]["ref"]["$link"]
            same = next((t for t in await self.list_records(user, TRACK)
                         if (t.value.get("audio") or {}).get("ref", {}).get("$link") == link and t.rkey != form.key), None)
            if same is not None:
                form.duplicate_of = same.rkey
                return again(409, _("You already published this audio as “%(title)s”. Edit that track instead, or "
                                    "tick “Publish it again” to make a second track of it.")
                             % {"title": same.value.get("title") or same.rkey})
        written = await self.write(user, TRACK, rkey, form.key, record, form.swap)
        if written is None:
            return again(409, _("This track changed or was deleted elsewhere since this page was opened. "
                                "Nothing was saved: reload the page to see it as it is now."))
        log.info("studio: %s %s track %s", user.did, "edited" if rkey else "published", rkey or form.key)
        return written

    async def write(self, user: UserSession, collection: str, rkey: str | None, key: str, record: dict[str, Any],
                    swap: str) -> Response | None:
        """Write ``record`` (checked) to ``collection``: an edit of ``rkey`` only over the record at
        CID ``swap``, or a new one under ``key`` only where none is yet (a second send of the same
        form finds the first one's record). Then wait for the index and go to the record's page (or
        to the studio, saying it shows shortly). None: the edited record changed meanwhile, nothing
        was written. Raises ``PDS_TROUBLE``, ``SessionEnded``."""
        key = rkey or key
        try:
            written = await user.put_record(collection, key, record, swap_record=swap or None, expect_new=not rkey)
        except PdsError as exc:
            if exc.error != "InvalidSwap":
                raise
            if rkey:
                return None
            written = await user.get_record(collection, key) or {}  # sent twice: the first one was written
        uri, cid = written.get("uri", f"at://{user.did}/{collection}/{key}"), written.get("cid")
        view_nsid, page = PAGES[collection]
        if await self.until_indexed(view_nsid, uri, cid):
            return RedirectResponse(f"/{page}/{user.did}/{key}?saved=1", status_code=303)
        return RedirectResponse("/studio?notice=pending", status_code=303)

    async def delete(self, request: Request) -> Response:
        """POST /studio/track/{rkey}/delete (``swap``: the CID the page showed): delete it from the PDS."""
        _ = self._
        return await self.remove(request, TRACK, "fm.openmusic.catalog.getTrack", _(
            "This track changed since the page was opened. Reload the studio and try again."), _("deleting the track"))

    async def remove(self, request: Request, collection: str, view_nsid: str, changed: str, doing: str) -> Response:
        """Delete the signed-in user's record ``collection/{rkey}`` (form: CSRF token, ``swap``: the CID
        the page showed), wait for the index to drop it (``view_nsid``), and go back to the studio.
        ``changed``: what the page says when the record changed meanwhile; ``doing``: for PDS errors."""
        _ = self._
        user: UserSession | None = None
        try:
            user, form = await self.pages._signed_in_form(request)
            body: dict[str, Any] = {"repo": user.did, "collection": collection, "rkey": request.path_params["rkey"]}
            if form.get("swap"):
                body["swapRecord"] = form["swap"]
            try:
                await user.call("POST", "com.atproto.repo.deleteRecord", json=body)
            except PdsError as exc:
                if exc.error != "InvalidSwap":
                    raise
                return self.web.error_page(409, _("Not deleted"), changed, user=user)
            await self.until_indexed(view_nsid, f"at://{user.did}/{collection}/{body['rkey']}", None)
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        except SessionEnded:
            return RedirectResponse(login_href(), status_code=303)
        except PDS_TROUBLE as exc:
            assert user is not None
            return self.pds_problem(exc, user, doing)
        return RedirectResponse("/studio?notice=deleted", status_code=303)

    async def buy(self, request: Request) -> Response:
        """GET /buy/{did}/{rkey}: count the click and go to the track's purchase link (module docstring)."""
        did, rkey = request.path_params["did"], request.path_params["rkey"]
        uri = f"at://{did}/{TRACK}/{rkey}"
        try:
            track = (await self.pages.lookup("fm.openmusic.catalog.getTrack", uri))["track"]
        except PageError as exc:
            user, _t = await self.pages.viewer(request)
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        link = (track.get("record") or {}).get("purchaseUrl")
        if not isinstance(link, str) or not link.startswith("https://"):
            user, _t = await self.pages.viewer(request)
            return self.web.error_page(404, self._("Not for sale here"), self._(
                "This track has no purchase link."), user=user)
        if request.headers.get("sec-fetch-site") == "same-origin":  # a click on our page, not a bare fetch
            user, _t = await self.pages.viewer(request)
            clicker = user.did if user else f"addr:{request.client.host if request.client else ''}"
            key = hmac.new(self.web.sealer.csrf_key, f"buy\x00{clicker}".encode(), "sha256").hexdigest()  # type: ignore[union-attr]
            await count_purchase_click(self.web.conn, uri, did, key)
        return RedirectResponse(link, status_code=303, headers={"Referrer-Policy": "no-referrer"})


def blob_ref_or_none(text: str) -> dict[str, Any] | None:
    try:
        ref = json.loads(text) if text else None
    except ValueError:
        return None
    return ref if isinstance(ref, dict) else None


__all__ = ["Studio", "UploadRefused"]
