"""Playlists in the web app (issue 13): each playlist is an ``fm.openmusic.catalog.playlist`` record in
**its owner's own PDS**, and a collaborator's addition an ``fm.openmusic.catalog.playlistItem`` in the
collaborator's, written through their OAuth session; the firehose brings them back to our index and
the pages read them through the same handlers as the XRPC API (``catalog.getPlaylist``,
``catalog.getActorPlaylists``) plus the viewer's own state (``appview.playlists.viewer_*``).

Pages: ``GET /playlists`` (the signed-in viewer's playlists, those shared with them, a create form),
``GET /playlist/{did}/{rkey}`` (public: title, creator, items with Play buttons, "Play all", a share
link; ``cursor`` pages the items), ``GET /playlist/{did}/{rkey}/edit`` (the owner: details,
collaborators by handle, items with up / down / remove, delete with a confirmation box; read from
the owner's PDS, so it shows the record as it is, unresolved tracks included).

Writes (POST forms, signed in, CSRF-checked, all working without JavaScript; each waits up to
``web.pages.INDEX_WAIT_S`` for the index to show the change, then 303):
- ``POST /playlists`` (``title``, ``description``, ``key``; optionally ``uri``/``cid`` of a first track
  and ``next``): create a playlist under the form's record key (a TID: sent twice, written once).
- ``POST /playlist/add`` (``playlist``: "<AT-URI> <CID>" as the page showed it, ``uri``/``cid`` of a
  track, ``key``, ``next``): the owner's playlist gets the track appended (``swapRecord``: the shown
  CID; when that fails because the record already ends with this track, the same form was sent
  twice and nothing more is written; otherwise the append is made on the current version); a
  playlist shared with the viewer gets a ``playlistItem`` in the viewer's repo (under ``key``).
- ``POST /playlist/{did}/{rkey}/edit`` (``title``, ``description``, ``collaborators``: handles or
  DIDs, ``swap``), ``POST /playlist/{did}/{rkey}/items`` (``op`` up|down|remove, ``index``, ``track``:
  the AT-URI at that index as shown, ``swap``), ``POST /playlist/{did}/{rkey}/delete`` (``confirm``,
  ``swap``): the owner's edits, each only over the version the page showed (``swapRecord``), so two
  tabs never overwrite each other: a change made meanwhile gets a 409 page saying to reload.
- ``POST /playlist/item/remove`` (``item``: the viewer's playlistItem AT-URI, ``next``): a collaborator
  takes back a track they added.
Bad input (a blank or too long title, unknown handles, more than ``MAX_ITEMS`` tracks, a playlist not
the viewer's) gets a page saying so and writes nothing. Artwork is not edited here yet (the record
and views carry it when another client sets it)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from appview.playlists import indexed_cid, viewer_items, viewer_playlists
from appview.views import artist_views, track_views
from core.identity import INVALID_HANDLE
from core.lexicons import PLAYLIST, PLAYLIST_ITEM, RecordInvalid, is_track_uri, validate_record
from core.publish import now_iso
from core.tid import is_tid
from web.errors import PageError
from web.oauth.client import PdsError, SessionEnded, SignInError, UserSession
from web.paths import local_path, login_href
from web.people import names, resolve_people

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

log = logging.getLogger("openmusic.web")
#: Most tracks in a playlist (the lexicon's ``items.maxLength``).
MAX_ITEMS = 500
#: Most collaborators (the lexicon's ``collaborators.maxLength``).
MAX_COLLABORATORS = 50
#: Longest title and description, characters (the lexicon counts graphemes; a character is at most one).
MAX_TITLE = 120
MAX_DESCRIPTION = 1000
#: Items per page of a playlist's public page, and playlists per page of /playlists.
ITEMS_PAGE = 100
LIST_PAGE = 100
#: What the PDS may do wrong (refuse, not answer, need a sign-in again).
PDS_TROUBLE = (PdsError, httpx.HTTPError, SignInError)

Act = Callable[[UserSession, dict[str, str]], Awaitable[str]]


def playlist_path(uri: str) -> str:
    """``at://did/fm.openmusic.catalog.playlist/rkey`` -> ``/playlist/did/rkey``."""
    did, _, rkey = uri.removeprefix("at://").partition(f"/{PLAYLIST}/")
    return f"/playlist/{did}/{rkey}"


def with_query(path: str, **params: str) -> str:
    """``path`` (a local path, maybe with a query and a fragment) with ``params`` added to its query."""
    path, hash_, fragment = path.partition("#")
    sep = "&" if "?" in path else "?"
    return f"{path}{sep}{urlencode(params)}{hash_}{fragment}"


def handle_or_did(view: dict[str, Any]) -> str:
    """An ``#artistView``'s handle, or its DID when the handle is not verified."""
    handle = view.get("handle")
    return handle if handle and handle != INVALID_HANDLE else view["did"]


class Conflict(PageError):
    """The record changed since the page was shown (``swapRecord`` refused): a 409 page."""


class Playlists:
    """The playlist pages and writes over a started ``WebApp`` (with views) and its ``Pages``."""

    def __init__(self, web: WebApp, pages: Pages) -> None:
        self.web = web
        self.pages = pages
        self.views = pages.views
        web.templates.filters.update(playlist_path=playlist_path, handle_or_did=handle_or_did)
        web.templates.globals.update(max_playlist_title=MAX_TITLE, max_playlist_description=MAX_DESCRIPTION)
        pages.context_providers.append(self.provide)

    def routes(self) -> list[BaseRoute]:
        """The routes (``web.app.routes``)."""
        return [
            Route("/playlists", self.mine, methods=["GET"]),
            Route("/playlists", self.create, methods=["POST"]),
            Route("/playlist/add", self.add, methods=["POST"]),
            Route("/playlist/item/remove", self.remove_item, methods=["POST"]),
            Route("/playlist/{did}/{rkey}", self.show, methods=["GET"]),
            Route("/playlist/{did}/{rkey}/edit", self.edit_page, methods=["GET"]),
            Route("/playlist/{did}/{rkey}/edit", self.edit, methods=["POST"]),
            Route("/playlist/{did}/{rkey}/items", self.items, methods=["POST"]),
            Route("/playlist/{did}/{rkey}/delete", self.delete, methods=["POST"]),
        ]

    def _(self, text: str) -> str:
        return self.web.templates.gettext(text)

    # -- what the track page shows ---------------------------------------------------------------------
    async def provide(self, request: Request, name: str, context: dict[str, Any]) -> dict[str, Any]:
        """A ``Pages.context_providers`` entry: on the track page of a signed-in viewer, the playlists
        they may add to (``my_playlists``: own ones first, then those shared with them, with the
        owner's ``#artistView``) and, after an add, the playlist added to (``playlist_added``)."""
        if name != "track.html":
            return {}
        user, _token = await self.pages.viewer(request)
        if user is None:
            return {}
        mine = await viewer_playlists(self.views, user.did)
        owners = await artist_views(self.views, [p["owner"] for p in mine if not p["own"]])
        for p in mine:
            p["owner_view"] = owners.get(p["owner"])
        added = request.query_params.get("added_to", "")
        already = request.query_params.get("already_in", "")
        return {"my_playlists": mine, "playlist_added": next((p for p in mine if p["uri"] == added), None),
                "playlist_already": next((p for p in mine if p["uri"] == already), None)}

    # -- pages -----------------------------------------------------------------------------------------
    async def mine(self, request: Request) -> Response:
        """GET /playlists: the viewer's playlists (``getActorPlaylists``, ``cursor``), those shared with
        them, and the create form. Signed out: a page asking to sign in."""
        cursor = request.query_params.get("cursor")

        async def build() -> Response:
            user, _token = await self.pages.viewer(request)
            if user is None:
                return await self.pages.page(request, "playlists.html", playlists=[], shared=[], cursor=None)
            try:
                got = await self.pages.query("fm.openmusic.catalog.getActorPlaylists", actor=user.did,
                                             limit=LIST_PAGE, cursor=cursor)
            except PageError as exc:
                if exc.status != 404:  # a new account, not indexed yet: no playlists
                    raise
                got = {"playlists": []}
            shared = [p for p in await viewer_playlists(self.views, user.did) if not p["own"]]
            owners = await artist_views(self.views, [p["owner"] for p in shared])
            for p in shared:
                p["owner_view"] = owners[p["owner"]]
            return await self.pages.page(request, "playlists.html", playlists=got["playlists"], shared=shared,
                                         cursor=got.get("cursor"), paged=bool(cursor),
                                         deleted=request.query_params.get("deleted") == "1")
        return await self.pages.guarded(request, build)

    async def show(self, request: Request) -> Response:
        """GET /playlist/{did}/{rkey} (``cursor``): the public page."""
        uri = f"at://{request.path_params['did']}/{PLAYLIST}/{request.path_params['rkey']}"
        cursor = request.query_params.get("cursor")

        async def build() -> Response:
            try:
                got = await self.pages.query("fm.openmusic.catalog.getPlaylist", uri=uri, limit=ITEMS_PAGE,
                                             cursor=cursor)
            except PageError as exc:
                if exc.status != 400:
                    raise
                if cursor:  # a stale or edited page link: the first page
                    got = await self.pages.query("fm.openmusic.catalog.getPlaylist", uri=uri, limit=ITEMS_PAGE)
                else:
                    _ = self._
                    raise PageError(404, _("Not found"), _("Nothing is published at this address.")) from exc
            return await self.pages.page(request, "playlist.html", playlist=got["playlist"],
                                         items=got["playlist"]["items"], cursor=got.get("cursor"),
                                         paged=bool(cursor), saved=request.query_params.get("saved") == "1")
        return await self.pages.guarded(request, build)

    async def _own_record(self, user: UserSession | None, did: str, rkey: str) -> dict[str, Any]:
        """The signed-in owner's playlist record ``{uri, cid, value}`` from their PDS. Raises
        ``PageError`` (401 signed out, 403 not theirs, 404 no such record)."""
        _ = self._
        if user is None:
            raise PageError(401, _("Not signed in"), _("Sign in to edit your playlists."))
        if user.did != did or not is_tid(rkey):
            raise PageError(403, _("Not your playlist"), _("Only its owner can edit a playlist."))
        got = await user.get_record(PLAYLIST, rkey)
        if got is None or not isinstance(got.get("value"), dict):
            raise PageError(404, _("Not found"), _("This playlist is not in your PDS (it may have been deleted)."))
        return got

    async def edit_page(self, request: Request, *, status: int = 200, error: str = "",
                        typed: dict[str, str] | None = None) -> Response:
        """GET /playlist/{did}/{rkey}/edit: the owner's edit page, from the record in their PDS (its CID
        is every form's ``swap``). Also re-shown with ``error`` and the ``typed`` values of a refused form."""
        did, rkey = request.path_params["did"], request.path_params["rkey"]
        user, _token = await self.pages.viewer(request)
        if user is None:
            return RedirectResponse(login_href(), status_code=303)
        try:
            got = await self._own_record(user, did, rkey)
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        except SessionEnded:
            return RedirectResponse(login_href(), status_code=303)
        except PDS_TROUBLE as exc:
            return self._pds_problem(exc, user)
        record = got["value"]
        entries = [e for e in record.get("items") or [] if isinstance(e, dict)]
        refs = [e.get("track") if isinstance(e.get("track"), dict) else {} for e in entries]
        shown = await track_views(self.views, list(dict.fromkeys(str(r.get("uri", "")) for r in refs)))
        items = [{"index": i, "uri": str(r.get("uri", "")), "track": shown.get(str(r.get("uri", "")))}
                 for i, r in enumerate(refs)]
        collaborators = [d for d in record.get("collaborators") or [] if isinstance(d, str)]
        people = await artist_views(self.views, collaborators)
        typed = typed or {
            "title": str(record.get("title", "")), "description": str(record.get("description", "")),
            "collaborators": " ".join("@" + handle_or_did(people[d]) if handle_or_did(people[d]) != d else d
                                      for d in collaborators)}
        return await self.pages.page(
            request, "playlist_edit.html", status=status, uri=got.get("uri") or f"at://{did}/{PLAYLIST}/{rkey}",
            swap=got.get("cid", ""), typed=typed, items=items, error=error, max_items=MAX_ITEMS,
            saved=request.query_params.get("saved") == "1")

    # -- writes ----------------------------------------------------------------------------------------
    async def write(self, request: Request, act: Act) -> Response:
        """Run ``act(user, form)`` (writes, returns where to go) for a signed-in form with a valid CSRF
        token and a well-formed ``key``; 303 there. Errors become a page with their status."""
        user: UserSession | None = None
        _ = self._
        try:
            user, form = await self.pages._signed_in_form(request)
            if form.get("key") and not is_tid(form["key"]):
                raise PageError(400, _("Bad form"), _("This form is damaged; reload the page."))
            target = await act(user, form)
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        except SessionEnded:
            return RedirectResponse(login_href(), status_code=303)
        except PDS_TROUBLE as exc:
            assert user is not None
            return self._pds_problem(exc, user)
        return RedirectResponse(target, status_code=303)

    def _pds_problem(self, exc: Exception, user: UserSession) -> Response:
        log.warning("a playlist write for %s failed: %s", user.did, exc)
        _ = self._
        return self.web.error_page(502, _("Your PDS refused"), _(
            "Your PDS did not save this: %(why)s. Nothing else was changed.") % {"why": str(exc)[:300]}, user=user)

    def _conflict(self) -> Conflict:
        _ = self._
        return Conflict(409, _("This playlist changed"), _(
            "This playlist was changed elsewhere (another tab or device) since this page was opened. Nothing "
            "was saved: reload the page to see it as it is now, then make your change again."))

    async def _put(self, user: UserSession, rkey: str, record: dict[str, Any], swap: str | None) -> str:
        """Check ``record`` against the lexicon and write it over the version ``swap`` (None: a new
        record under ``rkey``); wait for the index; return the new CID. Raises ``Conflict`` (the record
        is not at ``swap`` / already exists), ``PageError`` (400: invalid), ``PDS_TROUBLE``."""
        _ = self._
        try:
            validate_record(PLAYLIST, record)
        except RecordInvalid as exc:
            raise PageError(400, _("Cannot save the playlist"), str(exc)[:300]) from exc
        try:
            written = await user.put_record(PLAYLIST, rkey, record, swap_record=swap, expect_new=swap is None)
        except PdsError as exc:
            if exc.error == "InvalidSwap":
                raise self._conflict() from exc
            raise
        cid = str(written.get("cid", ""))
        uri = f"at://{user.did}/{PLAYLIST}/{rkey}"
        await self.pages._until(lambda: indexed_cid(self.views, uri), lambda got: got == cid)
        return cid

    def _details(self, form: dict[str, str]) -> tuple[str, str]:
        """The form's title and description, trimmed. Raises ``PageError`` (400)."""
        _ = self._
        title = " ".join(form.get("title", "").split())
        description = form.get("description", "").replace("\r\n", "\n").strip()
        if not title:
            raise PageError(400, _("Cannot save the playlist"), _("Give the playlist a title."))
        if len(title) > MAX_TITLE or len(description) > MAX_DESCRIPTION:
            raise PageError(400, _("Cannot save the playlist"), _(
                "A title has at most %(title)s characters and a description at most %(description)s.")
                % {"title": MAX_TITLE, "description": MAX_DESCRIPTION})
        return title, description

    async def _track_ref(self, form: dict[str, str]) -> dict[str, str]:
        """The form's track (``uri``) as a strongRef to its indexed version. Raises ``PageError``."""
        uri = form.get("uri", "")
        if not is_track_uri(uri):
            _ = self._
            raise PageError(400, _("Cannot add"), _("Only tracks can be added to a playlist."))
        track = (await self.pages.query("fm.openmusic.catalog.getTrack", uri=uri))["track"]
        return {"uri": uri, "cid": track["cid"]}

    async def create(self, request: Request) -> Response:
        """POST /playlists: see the module docstring."""
        return await self.write(request, self._create)

    async def _create(self, user: UserSession, form: dict[str, str]) -> str:
        _ = self._
        title, description = self._details(form)
        key = form.get("key", "")
        if not key:
            raise PageError(400, _("Bad form"), _("This form is damaged; reload the page."))
        record: dict[str, Any] = {"$type": PLAYLIST, "title": title, "items": [], "createdAt": now_iso()}
        if description:
            record["description"] = description
        if form.get("uri"):
            record["items"] = [{"track": await self._track_ref(form), "addedAt": now_iso()}]
        uri = f"at://{user.did}/{PLAYLIST}/{key}"
        try:
            await self._put(user, key, record, None)
        except Conflict:  # the same form sent twice: the first one wrote it
            await self.pages._until(lambda: indexed_cid(self.views, uri), lambda got: got is not None)
        if form.get("uri") and form.get("next"):
            return with_query(local_path(form.get("next"), fallback=playlist_path(uri)), added_to=uri) + "#add-to-playlist"
        return playlist_path(uri)

    async def add(self, request: Request) -> Response:
        """POST /playlist/add: see the module docstring."""
        return await self.write(request, self._add)

    async def _add(self, user: UserSession, form: dict[str, str]) -> str:
        _ = self._
        uri, _sep, shown_cid = form.get("playlist", "").partition(" ")
        if f"/{PLAYLIST}/" not in uri:
            raise PageError(400, _("Cannot add"), _("Choose one of your playlists."))
        ref = await self._track_ref(form)
        back = with_query(local_path(form.get("next"), fallback=playlist_path(uri)), added_to=uri) + "#add-to-playlist"
        owner, _coll, rkey = uri.removeprefix("at://").partition(f"/{PLAYLIST}/")
        if owner == user.did:
            if not await self._append(user, rkey, ref, shown_cid or None):
                back = back.replace("added_to=", "already_in=", 1)
            return back
        if not any(p["uri"] == uri for p in await viewer_playlists(self.views, user.did)):
            raise PageError(403, _("Cannot add"), _("This playlist is not yours, and its owner has not made you a "
                                                    "collaborator."))
        key = form.get("key", "")
        new = f"at://{user.did}/{PLAYLIST_ITEM}/{key}" if key else ""
        if new not in await viewer_items(self.views, user.did, uri):
            new = (await user.create_record_once(PLAYLIST_ITEM, {
                "$type": PLAYLIST_ITEM, "subject": uri, "track": ref, "createdAt": now_iso()}, key or None))["uri"]
        await self.pages._until(lambda: viewer_items(self.views, user.did, uri), lambda got: new in got)
        return back

    async def _append(self, user: UserSession, rkey: str, ref: dict[str, str], shown_cid: str | None) -> bool:
        """Append ``ref`` to the owner's playlist ``rkey``: over the version the page showed, else (a
        double send whose first write ends the record with this track: nothing) over the current one.
        Returns False, writing nothing, when the playlist already holds the track."""
        _ = self._
        for _attempt in range(3):
            got = await self._own_record(user, user.did, rkey)
            record = dict(got["value"])
            items = list(record.get("items") or [])
            if shown_cid and got.get("cid") != shown_cid and items and isinstance(items[-1], dict) \
                    and (items[-1].get("track") or {}).get("uri") == ref["uri"]:
                return True  # the same form again: its first send appended the track
            if any(isinstance(it, dict) and (it.get("track") or {}).get("uri") == ref["uri"] for it in items):
                return False  # already in the playlist: a second copy is almost never what was meant
            if len(items) >= MAX_ITEMS:
                raise PageError(400, _("Playlist full"), _("A playlist holds at most %(most)s tracks.")
                                % {"most": MAX_ITEMS})
            record["items"] = [*items, {"track": ref, "addedAt": now_iso()}]
            try:
                await self._put(user, rkey, record, str(got.get("cid")))
                return True
            except Conflict:
                continue  # changed between our read and write (maybe by this same form sent twice): read again
        raise self._conflict()

    async def edit(self, request: Request) -> Response:
        """POST /playlist/{did}/{rkey}/edit: save the title, description and collaborators."""
        did, rkey = request.path_params["did"], request.path_params["rkey"]
        user: UserSession | None = None
        _ = self._
        try:
            user, form = await self.pages._signed_in_form(request)
            got = await self._own_record(user, did, rkey)
            typed = {k: form.get(k, "") for k in ("title", "description", "collaborators")}
            try:
                title, description = self._details(form)
            except PageError as exc:
                return await self.edit_page(request, status=400, error=exc.message, typed=typed)
            people = names(form.get("collaborators", ""))
            found, missing = await resolve_people(self.views.identity, people)
            if missing:
                return await self.edit_page(request, status=400, typed=typed, error=_(
                    "No account was found for %(names)s. Check the handles.") % {
                    "names": ", ".join("@" + n for n in missing)})
            dids = [d for d in dict.fromkeys(found[n] for n in people) if d != user.did]
            if len(dids) > MAX_COLLABORATORS:
                return await self.edit_page(request, status=400, typed=typed, error=_(
                    "A playlist has at most %(most)s collaborators.") % {"most": MAX_COLLABORATORS})
            if got.get("cid") != form.get("swap"):
                raise self._conflict()
            record = dict(got["value"])
            record.update({"$type": PLAYLIST, "title": title, "collaborators": dids})
            if description:
                record["description"] = description
            else:
                record.pop("description", None)
            if not dids:
                record.pop("collaborators")
            await self._put(user, rkey, record, form["swap"])
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        except SessionEnded:
            return RedirectResponse(login_href(), status_code=303)
        except PDS_TROUBLE as exc:
            assert user is not None
            return self._pds_problem(exc, user)
        return RedirectResponse(f"/playlist/{did}/{rkey}/edit?saved=1", status_code=303)

    async def items(self, request: Request) -> Response:
        """POST /playlist/{did}/{rkey}/items (``op`` up|down|remove, ``index``, ``track``, ``swap``)."""
        did, rkey = request.path_params["did"], request.path_params["rkey"]

        async def act(user: UserSession, form: dict[str, str]) -> str:
            _ = self._
            op, index_text = form.get("op", ""), form.get("index", "")
            if op not in ("up", "down", "remove") or not index_text.isdigit() or len(index_text) > 4:
                raise PageError(400, _("Bad form"), _("This form is damaged; reload the page."))
            got = await self._own_record(user, did, rkey)
            record = dict(got["value"])
            items = list(record.get("items") or [])
            index = int(index_text)
            if got.get("cid") != form.get("swap") or index >= len(items) or not isinstance(items[index], dict) \
                    or (items[index].get("track") or {}).get("uri") != form.get("track"):
                raise self._conflict()
            if op == "remove":
                del items[index]
            else:
                other = index - 1 if op == "up" else index + 1
                if 0 <= other < len(items):
                    items[index], items[other] = items[other], items[index]
            record["items"] = items
            await self._put(user, rkey, record, form["swap"])
            return f"/playlist/{did}/{rkey}/edit#items"
        return await self.write(request, act)

    async def delete(self, request: Request) -> Response:
        """POST /playlist/{did}/{rkey}/delete (``confirm`` = yes, ``swap``): delete the playlist."""
        did, rkey = request.path_params["did"], request.path_params["rkey"]

        async def act(user: UserSession, form: dict[str, str]) -> str:
            _ = self._
            if form.get("confirm") != "yes":
                raise PageError(400, _("Not deleted"), _("Tick the box to confirm that the playlist should be deleted."))
            await self._own_record(user, did, rkey)
            body = {"repo": user.did, "collection": PLAYLIST, "rkey": rkey, "swapRecord": form.get("swap", "")}
            try:
                await user.call("POST", "com.atproto.repo.deleteRecord", json=body)
            except PdsError as exc:
                if exc.error == "InvalidSwap":
                    raise self._conflict() from exc
                raise
            uri = f"at://{did}/{PLAYLIST}/{rkey}"
            await self.pages._until(lambda: indexed_cid(self.views, uri), lambda got: got is None)
            return "/playlists?deleted=1"
        return await self.write(request, act)

    async def remove_item(self, request: Request) -> Response:
        """POST /playlist/item/remove (``item``, ``next``): delete one of the viewer's playlistItem records."""
        async def act(user: UserSession, form: dict[str, str]) -> str:
            _ = self._
            item = form.get("item", "")
            prefix = f"at://{user.did}/{PLAYLIST_ITEM}/"
            if not item.startswith(prefix) or not is_tid(item[len(prefix):]):
                raise PageError(400, _("Cannot remove"), _("You can only remove tracks you added."))
            rkey = item[len(prefix):]
            got = await user.get_record(PLAYLIST_ITEM, rkey)
            subject = str((got or {}).get("value", {}).get("subject", ""))
            await user.delete_record(PLAYLIST_ITEM, rkey)
            if subject:
                await self.pages._until(lambda: viewer_items(self.views, user.did, subject), lambda got: item not in got)
            fallback = playlist_path(subject) if f"/{PLAYLIST}/" in subject else "/playlists"
            return local_path(form.get("next"), fallback=fallback)
        return await self.write(request, act)


def routes(web: WebApp, pages: Pages) -> list[BaseRoute]:
    """The room's routes (``web.app.routes``)."""
    return Playlists(web, pages).routes()


__all__ = ["Playlists", "playlist_path", "routes"]
