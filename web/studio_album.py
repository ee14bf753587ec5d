"""The studio's albums (``fm.openmusic.catalog.album`` in the creator's own PDS), beside the tracks
of ``web.studio``:

- ``GET|POST /studio/album/new`` and ``GET|POST /studio/album/{rkey}``: title, description, genre,
  release date, artwork (uploaded like a track's, ``POST /studio/upload?kind=artwork``, or in the
  form without JavaScript), and the track list: every track of the creator's repo, each with an
  "on this album" box and a position number. Without JavaScript the numbers set the order;
  ``static/web/studio.js`` adds dragging and moving a row with the keyboard (buttons, and
  Alt+Arrow up/down), renumbering as it goes. The album lists the chosen tracks as strongRefs
  (their current CIDs) in that order. Written like tracks: a new album under the form's record key
  with ``swapRecord: null``, an edit with ``swapRecord`` = the CID the form was made from.
- ``POST /studio/album/{rkey}/delete``: delete the album record (the tracks stay)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from core.lexicons import ALBUM, TRACK, RecordInvalid, from_json, validate_record
from core.publish import now_iso
from core.tid import is_tid, tid
from web import csrf
from web.forms import blob_rules
from web.oauth.client import SessionEnded, UserSession
from web.paths import login_href
from web.studio import PDS_TROUBLE, RKEY, Listed, Studio, UploadRefused
from web.studio_form import FormProblem, apply, blob_ref

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

#: Most text fields of an album form: its own, plus three per track row (the lexicon lists at most 500).
MAX_FIELDS = 20 + 3 * 500


@dataclass
class AlbumRow:
    """One track in the album form: its record, whether it is on the album, its position (as typed)."""

    uri: str
    cid: str
    title: str
    on: bool = False
    position: str = ""


@dataclass
class AlbumForm:
    """The album form's values (what the page shows again after a refusal)."""

    title: str = ""
    description: str = ""
    genre: str = ""
    release_date: str = ""
    artwork_blob: str = ""
    rows: list[AlbumRow] = field(default_factory=list)
    swap: str = ""
    key: str = ""


def order_rows(rows: list[AlbumRow]) -> list[AlbumRow]:
    """The rows by their position (a row without a number after those with one; ties keep the
    page's order), ticked rows first."""
    def rank(item: tuple[int, AlbumRow]) -> tuple[int, int, int]:
        i, row = item
        pos = int(row.position) if row.position.isdigit() else 10**9
        return (0 if row.on else 1, pos, i)
    return [row for _i, row in sorted(enumerate(rows), key=rank)]


class Albums:
    """The album endpoints (module docstring), sharing the studio's helpers."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.web = studio.web
        self._ = studio._

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/studio/album/new", self.page, methods=["GET"]),
            Route("/studio/album/new", self.submit, methods=["POST"]),
            Route("/studio/album/{rkey}", self.page, methods=["GET"]),
            Route("/studio/album/{rkey}", self.submit, methods=["POST"]),
            Route("/studio/album/{rkey}/delete", self.delete, methods=["POST"]),
        ]

    async def tracks(self, user: UserSession) -> list[Listed]:
        return await self.studio.list_records(user, TRACK)

    async def page(self, request: Request) -> Response:
        """GET: the empty form, or the album as published with its tracks in order, then the others."""
        got = await self.studio.signed_in(request)
        if isinstance(got, Response):
            return got
        user, token = got
        rkey = request.path_params.get("rkey")
        try:
            tracks = await self.tracks(user)
            existing = await user.get_record(ALBUM, rkey) if rkey and RKEY.fullmatch(rkey) else None
        except SessionEnded:
            return RedirectResponse(login_href(), status_code=303)
        except PDS_TROUBLE as exc:
            return self.studio.pds_problem(exc, user, self._("reading your albums"))
        if rkey and existing is None:
            return self.web.error_page(404, self._("Not found"), self._("Your repo has no such album."), user=user)
        form = AlbumForm(key=tid())
        if existing is not None:
            value = existing.get("value") or {}
            form = AlbumForm(title=str(value.get("title") or ""), description=str(value.get("description") or ""),
                             genre=str(value.get("genre") or ""),
                             release_date=str(value.get("releaseDate") or "")[:10],
                             artwork_blob=json.dumps(value["artwork"]) if isinstance(value.get("artwork"), dict) else "",
                             swap=existing.get("cid", ""))
            listed = [t.get("uri") for t in value.get("tracks") or [] if isinstance(t, dict)]
            form.rows = [AlbumRow(t.uri, t.cid, str(t.value.get("title") or t.rkey), t.uri in listed,
                                  str(listed.index(t.uri) + 1) if t.uri in listed else "") for t in tracks]
        else:
            form.rows = [AlbumRow(t.uri, t.cid, str(t.value.get("title") or t.rkey)) for t in tracks]
        form.rows = order_rows(form.rows)
        return self.render(user, token, form, rkey)

    def render(self, user: UserSession, token: str, form: AlbumForm, rkey: str | None, status: int = 200,
               error: str | None = None) -> Response:
        art_max, art_accept = blob_rules(ALBUM, "artwork")
        return self.web.render("studio_album.html", status=status, user=user, csrf_field=csrf.FIELD,
                               csrf_token=token, form=form, rkey=rkey, error=error,
                               art_accept=",".join(art_accept), art_max_mb=art_max // 1_000_000)

    async def submit(self, request: Request) -> Response:
        """POST: check and write the album (module docstring); a refusal shows the form again."""
        _ = self._
        got = await self.studio.signed_in(request)
        if isinstance(got, Response):
            return got
        user, token = got
        rkey = request.path_params.get("rkey")
        got_form = await self.studio.read_upload_form(request, user, ALBUM, ("artwork",), MAX_FIELDS)
        if isinstance(got_form, Response):
            return got_form
        fields, files = got_form

        def one(name: str) -> str:
            return (fields.get(name) or [""])[0].strip()
        on = set(fields.get("on", []))
        rows = [AlbumRow(uri, "", "", uri in on, pos.strip()) for uri, pos in
                zip(fields.get("row", []), fields.get("position", []), strict=False)]
        form = AlbumForm(title=one("title"), description=one("description"), genre=one("genre"),
                         release_date=one("releaseDate"), artwork_blob=one("artworkBlob"), rows=rows,
                         swap=one("swap"), key=one("key"))
        try:
            return await self.save(user, token, form, files.get("artwork", b""), rkey)
        except SessionEnded:
            return RedirectResponse(login_href(), status_code=303)
        except UploadRefused as exc:
            return self.render(user, token, form, rkey, exc.status, exc.message)
        except PDS_TROUBLE as exc:
            return self.studio.pds_problem(exc, user, _("saving the album"))

    async def save(self, user: UserSession, token: str, form: AlbumForm, artwork_file: bytes,
                   rkey: str | None) -> Response:
        """Check ``form``, upload the artwork, write the record. Raises ``UploadRefused``, PDS errors."""
        _ = self._
        tracks = {t.uri: t for t in await self.tracks(user)}
        for row in form.rows:  # titles and CIDs from the repo, not from the form
            known = tracks.get(row.uri)
            row.cid, row.title = (known.cid, str(known.value.get("title") or known.rkey)) if known else ("", row.uri)
        form.rows = order_rows(form.rows)

        def again(status: int, message: str) -> Response:
            return self.render(user, token, form, rkey, status, message)

        if rkey is None and not is_tid(form.key):
            form.key = tid()
            return again(400, _("This form has no record key: it was not sent from our page. Send it again."))
        existing = await user.get_record(ALBUM, rkey) if rkey else None
        if rkey and (existing is None or existing.get("cid") != form.swap):
            return again(409, _("This album changed or was deleted elsewhere since this page was opened. Nothing "
                                "was saved: reload the page to see it as it is now."))
        if not form.title:
            return again(400, _("Give the album a title."))
        if any(r.on and not r.cid for r in form.rows):
            return again(400, _("A track on this album is no longer in your repo. Reload the page."))
        chosen = [{"uri": r.uri, "cid": r.cid} for r in form.rows if r.on]
        if not chosen:
            return again(400, _("Tick at least one track for the album."))
        changes: dict[str, Any] = {"title": form.title, "description": form.description or None,
                                   "genre": form.genre or None, "tracks": chosen, "releaseDate": None}
        if form.release_date:
            try:
                changes["releaseDate"] = date.fromisoformat(form.release_date).isoformat() + "T00:00:00.000Z"
            except ValueError:
                return again(400, _("The release date must be a date (YYYY-MM-DD)."))
        try:
            artwork = blob_ref(form.artwork_blob, _("artwork"), _)
        except FormProblem as exc:
            return again(400, str(exc))
        value = dict((existing or {}).get("value") or {})
        record = apply({**value, "$type": ALBUM, "createdAt": value.get("createdAt") or now_iso()}, changes)
        if artwork is not None:
            record["artwork"] = artwork
        try:
            validate_record(ALBUM, from_json(record))
        except (RecordInvalid, ValueError) as exc:
            return again(400, _("This album does not fit the album lexicon: %(reason)s") % {"reason": exc})
        if artwork_file:
            blob, _info = await self.studio.store_file(user, "artwork", artwork_file)
            record["artwork"] = blob
            form.artwork_blob = json.dumps(blob)
        written = await self.studio.write(user, ALBUM, rkey, form.key, record, form.swap)
        if written is None:
            return again(409, _("This album changed or was deleted elsewhere since this page was opened. "
                                "Nothing was saved: reload the page to see it as it is now."))
        return written

    async def delete(self, request: Request) -> Response:
        """POST /studio/album/{rkey}/delete (``swap``: the CID the page showed); the tracks stay."""
        _ = self._
        return await self.studio.remove(request, ALBUM, "fm.openmusic.catalog.getAlbum", _(
            "This album changed since the page was opened. Reload the studio and try again."), _("deleting the album"))


def routes(web: WebApp, pages: Pages) -> list[BaseRoute]:
    """The studio's routes: tracks and ``/buy`` (``web.studio``), then albums."""
    studio = Studio(web, pages)
    return [*studio.routes(), *Albums(studio).routes()]
