"""The listener's side of the web app: onboarding, the signed-in home and the public listener profile
(skeleton -> hydration -> presentation as in ``web.pages``: the AppView's query handlers, no SQL here).

- After sign-in, an account whose repo has no ``fm.openmusic.actor.profile`` (asked of its PDS through
  the user's session, not of our index) goes to ``GET /welcome`` (``landing``): roles (listener,
  artist, manager), display name (prefilled from ``app.bsky.actor.profile`` when there is one),
  optional description and avatar. ``POST /welcome`` (multipart, CSRF-checked, the body capped at
  the avatar's lexicon ``maxSize`` plus ``FORM_OVERHEAD`` before it is read, then parsed by Starlette's
  ``request.form`` with python-multipart) uploads the avatar with
  ``com.atproto.repo.uploadBlob``, checks the record against the lexicon, and writes it with
  ``putRecord`` rkey ``self`` (``swapRecord``: the record the form was made from, so a change made
  meanwhile elsewhere is not overwritten), then waits up to ``INDEX_WAIT_S`` for the index and goes
  to ``/me``. The same form edits an existing profile. Anything refused changes nothing and shows
  the form again with what went wrong.
- ``GET /me`` (``home``, called by ``WebApp.me``): the profile, stream history
  (``fm.openmusic.listen.getPlays``, ``?plays=`` cursor), likes (``fm.openmusic.social.getActorLikes``,
  ``?likes=`` cursor), links to the wallet and the public profile, sign-out.
- ``GET /listener/{actor}`` (handle or DID), anyone: the profile, recent plays and likes.

Only with the AppView's views (``WebApp.views``); the stand-alone sign-in app keeps its plain /me."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from babel.dates import format_skeleton
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from appview.views import artist_views
from core.db import parse_datetime
from core.identity import INVALID_HANDLE
from core.lexicons import PROFILE, RecordInvalid, from_json, validate_record
from core.netguard import BlockedURL
from core.publish import now_iso
from web import csrf
from web.errors import PageError
from web.forms import blob_rules, image_type, read_capped, read_form
from web.i18n import current_locale
from web.oauth.client import PdsError, SessionEnded, SignInError, UserSession
from web.pages import INDEX_WAIT_S, PAGE_SIZE, Pages, local_path
from web.people import names, resolve_people

if TYPE_CHECKING:
    from web.app import WebApp

log = logging.getLogger("openmusic.web")
#: The roles the form offers, in its order (the lexicon's ``knownValues``).
ROLES = ("listener", "artist", "manager")
#: Bluesky's profile record, read (never written) to prefill the display name.
BSKY_PROFILE = "app.bsky.actor.profile"
#: Bytes of a profile form besides the avatar (its text fields and the multipart framing).
FORM_OVERHEAD = 64 * 1024
#: Most text fields in a profile form (it has 11; its one file is the avatar).
MAX_FIELDS = 15
#: Errors of the user's PDS or of reaching it.
PDS_TROUBLE = (PdsError, httpx.HTTPError, BlockedURL, SignInError)


def avatar_rules() -> tuple[int, list[str]]:
    """(maxSize, accept) of the profile's avatar blob, from the lexicon."""
    return blob_rules(PROFILE, "avatar")


def routes(web: WebApp) -> list[BaseRoute]:
    """``/welcome`` and ``/listener/{actor}`` (none without the AppView's views)."""
    if web.views is None:
        return []
    return Profile(web).routes()


async def landing(web: WebApp, cookie: str, next_url: str) -> str:
    """Where sign-in goes: ``/welcome`` (then on to ``next_url``) when the account's repo has no Open
    Music profile; else ``next_url`` (also when the PDS cannot say: signing in is not held up)."""
    if web.views is None:
        return next_url
    user = await web.user_session(cookie)
    if user is None:
        return next_url
    try:
        existing = await user.get_record(PROFILE, "self")
    except (*PDS_TROUBLE, SessionEnded) as exc:
        log.warning("cannot tell whether %s has a profile: %s", user.did, exc)
        return next_url
    if existing:
        return next_url
    return "/welcome" if next_url == "/me" else f"/welcome?{urlencode({'next': next_url})}"


async def home(web: WebApp, request: Request, user: UserSession) -> Response:
    """``GET /me`` for a signed-in ``user`` (``WebApp.me`` checked the session)."""
    return await Profile(web).home(request, user)


@dataclass
class ProfileForm:
    """What the profile form shows: ``mode`` ``new`` or ``edit``; ``swap`` the CID of the record it
    was made from ("" for none)."""

    mode: str
    roles: list[str] = field(default_factory=lambda: ["listener"])
    display_name: str = ""
    description: str = ""
    avatar_url: str | None = None
    swap: str = ""
    from_bluesky: bool = False
    managers: str = ""   # handles, as typed or shown (the record holds DIDs)
    manages: str = ""
    payout_to: str = ""  # one of ``managers``, or "" for the account itself


class Profile:
    """Endpoints of onboarding, ``/me`` and ``/listener/{actor}``, over a started ``WebApp`` with views."""

    def __init__(self, web: WebApp) -> None:
        self.web = web
        self.pages = Pages(web)
        assert web.views is not None
        self.views = web.views
        web.templates.filters.update(when=format_when, actor_path=actor_path, seconds=seconds)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/welcome", self.welcome, methods=["GET"]),
            Route("/welcome", self.welcome_submit, methods=["POST"]),
            Route("/listener/{actor}", self.listener, methods=["GET"]),
        ]

    def _(self, message: str) -> str:
        """``message`` in the request's language."""
        return self.web.templates.gettext(message)

    # -- reads through the AppView's handlers ------------------------------------------------------
    async def optional(self, nsid: str, **params: object) -> dict[str, Any] | None:
        """``Pages.query``, but None when the account is unknown to the index (never wrote a record)."""
        try:
            return await self.pages.query(nsid, **params)
        except PageError as exc:
            if exc.status == 404:
                return None
            raise

    async def listening(self, actor: str, request: Request) -> dict[str, Any]:
        """Plays and likes of ``actor``, a page of each (``?plays=`` / ``?likes=`` cursors)."""
        plays_cursor = request.query_params.get("plays") or None
        likes_cursor = request.query_params.get("likes") or None
        plays = await self.optional("fm.openmusic.listen.getPlays", actor=actor, limit=PAGE_SIZE,
                                    cursor=plays_cursor) or {"plays": []}
        likes = await self.optional("fm.openmusic.social.getActorLikes", actor=actor, limit=PAGE_SIZE,
                                    cursor=likes_cursor) or {"likes": []}
        return {"plays": plays["plays"], "plays_cursor": plays.get("cursor"), "plays_paged": bool(plays_cursor),
                "likes": likes["likes"], "likes_cursor": likes.get("cursor"), "likes_paged": bool(likes_cursor)}

    # -- pages -------------------------------------------------------------------------------------
    async def home(self, request: Request, user: UserSession) -> Response:
        """The signed-in home: profile, stream history, likes, links, sign-out."""
        async def build() -> Response:
            profile = await self.optional("fm.openmusic.actor.getProfile", actor=user.did)
            lists = await self.listening(user.did, request)
            return await self.pages.page(request, "me.html", home=True, profile=profile,
                                         has_profile=bool(profile and "record" in profile),
                                         saved=request.query_params.get("saved") == "1", **lists)
        return await self.pages.guarded(request, build)

    async def listener(self, request: Request) -> Response:
        """GET /listener/{actor}: anyone's listening, public."""
        actor = request.path_params["actor"]

        async def build() -> Response:
            profile = await self.pages.query("fm.openmusic.actor.getProfile", actor=actor)
            lists = await self.listening(profile["did"], request)
            return await self.pages.page(request, "listener.html", profile=profile, **lists)
        return await self.pages.guarded(request, build)

    # -- onboarding --------------------------------------------------------------------------------
    async def _signed_in(self, request: Request) -> UserSession | Response:
        """The signed-in user, or where to send the visitor instead."""
        if not request.cookies.get("om_session"):
            return RedirectResponse("/login", status_code=303)
        user = await self.web.user_session(request.cookies.get("om_session"))
        if user is None:
            resp = self.web.error_page(401, self._("Not signed in"),
                                       self._("Your session has ended or is not valid. Sign in again."))
            self.web.drop_cookie(resp, "om_session")
            return resp
        return user

    async def current_form(self, user: UserSession) -> ProfileForm:
        """The form for ``user``'s profile as it is in their repo (or a new one). Raises ``PDS_TROUBLE``."""
        existing = await user.get_record(PROFILE, "self")
        if existing is not None:
            value = existing.get("value") or {}
            roles = value.get("roles")
            shown = await self.handles([*(value.get("managers") or []), *(value.get("manages") or []),
                                        value.get("payoutTo") or ""])
            return ProfileForm(
                mode="edit", roles=[r for r in roles if r in ROLES] if isinstance(roles, list) else [],
                display_name=str(value.get("displayName") or ""), description=str(value.get("description") or ""),
                avatar_url=self.avatar_url(user.did, value.get("avatar")), swap=str(existing.get("cid") or ""),
                managers=", ".join(shown.get(d, d) for d in value.get("managers") or []),
                manages=", ".join(shown.get(d, d) for d in value.get("manages") or []),
                payout_to="" if value.get("payoutTo") in (None, user.did)
                else shown.get(value["payoutTo"], value["payoutTo"]))
        form = ProfileForm(mode="new")
        with contextlib.suppress(*PDS_TROUBLE):
            bsky = await user.get_record(BSKY_PROFILE, "self")
            name = (bsky or {}).get("value", {}).get("displayName")
            if isinstance(name, str) and name.strip():
                form.display_name, form.from_bluesky = name.strip(), True
        return form

    async def handles(self, dids: list[object]) -> dict[str, str]:
        """DID -> verified handle, for the DIDs a profile names (those without one are left out)."""
        wanted = [d for d in dids if isinstance(d, str) and d.startswith("did:")]
        views = await artist_views(self.views, wanted) if wanted else {}
        return {d: v["handle"] for d, v in views.items() if v.get("handle") not in (None, INVALID_HANDLE)}

    def avatar_url(self, did: str, blob: object) -> str | None:
        """Where the AppView serves an avatar blob (once the record naming it is indexed)."""
        if isinstance(blob, dict) and isinstance(blob.get("ref"), dict) and isinstance(blob["ref"].get("$link"), str):
            return self.views.image_url(did, blob["ref"]["$link"])
        return None

    async def render_form(self, request: Request, user: UserSession, form: ProfileForm, status: int = 200,
                          error: tuple[str, str] | None = None) -> Response:
        assert self.web.sealer is not None
        max_size, accept = avatar_rules()
        return self.web.render("welcome.html", status=status, user=user, form=form, error=error, roles=ROLES,
                               csrf_field=csrf.FIELD, accept=",".join(accept), max_kb=max_size // 1000,
                               csrf_token=csrf.token(self.web.sealer.csrf_key, f"session:{user.key}"),
                               next=local_path(request.query_params.get("next"), "/me"))

    async def welcome(self, request: Request) -> Response:
        """GET /welcome: the profile form (new, or the existing profile to edit)."""
        user = await self._signed_in(request)
        if isinstance(user, Response):
            return user
        try:
            form = await self.current_form(user)
        except SessionEnded:
            return RedirectResponse("/login", status_code=303)
        except PDS_TROUBLE as exc:
            return self.web.error_page(502, self._("Your PDS did not answer"),
                                       self._("We could not read your profile from your PDS: %(reason)s")
                                       % {"reason": exc}, user=user)
        return await self.render_form(request, user, form)

    async def welcome_submit(self, request: Request) -> Response:
        """POST /welcome: check, upload the avatar, write the profile, go to /me (module docstring)."""
        _ = self._
        user = await self._signed_in(request)
        if isinstance(user, Response):
            return user
        max_size, accept = avatar_rules()
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            return self.web.error_page(415, _("Unsupported form"), _("Send this form from our page."), user=user)
        body = await read_capped(request, max_size + FORM_OVERHEAD)
        try:
            if body is None:
                form = await self.current_form(user)
                return await self.render_form(request, user, form, 413, (
                    _("Image too large"), _("The avatar may be at most %(kb)s KB. Nothing was saved: choose a "
                                            "smaller image.") % {"kb": max_size // 1000}))
            try:
                fields, files = await read_form(request, body, ("avatar",), max_fields=MAX_FIELDS,
                                                max_part_size=FORM_OVERHEAD)
                avatar = files["avatar"]
            except HTTPException:  # what request.form raises for python-multipart's MultiPartException
                return self.web.error_page(400, _("Unreadable form"), _("This form could not be read."), user=user)
            if not csrf.check(self.web.sealer.csrf_key, f"session:{user.key}",  # type: ignore[union-attr]
                              (fields.get(csrf.FIELD) or [None])[0]):
                return self.web.error_page(403, _("Form expired"), _(
                    "This was not sent from our page, or the page is too old. Reload the page and try again."),
                    user=user)
            return await self.save(request, user, fields, avatar, max_size, accept)
        except SessionEnded:
            return RedirectResponse("/login", status_code=303)
        except PDS_TROUBLE as exc:
            log.warning("profile of %s not saved: %s", user.did, exc)
            return self.web.error_page(502, _("Your PDS refused"), _("Your PDS did not save your profile: "
                                                                     "%(reason)s") % {"reason": exc}, user=user)

    async def save(self, request: Request, user: UserSession, fields: dict[str, list[str]], avatar: bytes,
                   max_size: int, accept: list[str]) -> Response:
        """Check the form, upload the avatar, put the record. Raises ``PDS_TROUBLE``, ``SessionEnded``."""
        _ = self._

        def first(name: str) -> str:
            return (fields.get(name) or [""])[0]

        roles = list(dict.fromkeys(fields.get("roles", [])))
        after = local_path(first("next"), "/me")  # where sign-in was headed before this form
        form = ProfileForm(mode="edit" if first("swap") else "new", roles=roles,
                           display_name=first("displayName").strip(), description=first("description").strip(),
                           swap=first("swap"), managers=first("managers").strip(), manages=first("manages").strip(),
                           payout_to=first("payoutTo").strip().lstrip("@"))
        existing = await user.get_record(PROFILE, "self")
        if existing is not None:
            form.avatar_url = self.avatar_url(user.did, (existing.get("value") or {}).get("avatar"))

        def again(status: int, title: str, message: str) -> Response:
            return self.web.render("welcome.html", status=status, user=user, form=form, error=(title, message),
                                   roles=ROLES, csrf_field=csrf.FIELD, accept=",".join(accept),
                                   max_kb=max_size // 1000, csrf_token=first(csrf.FIELD), next=after)

        if (existing or {}).get("cid", "") != form.swap:
            return again(409, _("Your profile changed meanwhile"), _(
                "Your profile was changed elsewhere since this page was opened. Nothing was saved: reload the "
                "page to see it as it is now."))
        if not roles:
            return again(400, _("Choose a role"), _("Choose at least one: listener, artist or manager."))
        if any(r not in ROLES for r in roles):
            return again(400, _("Unknown role"), _("Choose listener, artist or manager."))
        if len(form.display_name) > 64:
            return again(400, _("Name too long"), _("The display name may be at most 64 characters."))
        if len(form.description) > 2560:
            return again(400, _("Description too long"), _("The description may be at most 2560 characters."))

        wanted = [*names(form.managers), *names(form.manages), *([form.payout_to] if form.payout_to else [])]
        dids, missing = await resolve_people(self.views.identity, wanted) if wanted else ({}, [])
        if missing:
            return again(400, _("Unknown account"), _("No account was found for %(names)s. Check the handles.")
                         % {"names": ", ".join("@" + n for n in missing)})
        managers = list(dict.fromkeys(dids[n] for n in names(form.managers)))
        manages = list(dict.fromkeys(dids[n] for n in names(form.manages)))
        payout_to = dids.get(form.payout_to) if form.payout_to else None
        if user.did in managers or user.did in manages:
            return again(400, _("Not yourself"), _("You cannot manage yourself: name other accounts."))
        if payout_to is not None and payout_to not in managers:
            return again(400, _("Payouts to a manager"), _(
                "Payouts can go only to one of your managers: name them under “My managers” too."))
        value: dict[str, Any] = dict((existing or {}).get("value") or {})
        record = {**value, "$type": PROFILE, "roles": roles, "createdAt": value.get("createdAt") or now_iso()}
        for key, people in (("managers", managers), ("manages", manages)):
            if people:
                record[key] = people
            else:
                record.pop(key, None)
        if payout_to:
            record["payoutTo"] = payout_to
        else:
            record.pop("payoutTo", None)
        for key, text in (("displayName", form.display_name), ("description", form.description)):
            if text:
                record[key] = text
            else:
                record.pop(key, None)
        if first("removeAvatar") == "1":
            record.pop("avatar", None)
        image: tuple[bytes, str] | None = None
        if avatar:
            if len(avatar) > max_size:
                return again(413, _("Image too large"), _("The avatar may be at most %(kb)s KB. Nothing was saved: "
                                                          "choose a smaller image.") % {"kb": max_size // 1000})
            mime = await asyncio.to_thread(image_type, avatar)
            if mime is None or mime not in accept:
                return again(415, _("Not an image we take"), _("The avatar must be a PNG, JPEG or WebP image. "
                                                               "Nothing was saved."))
            image = (avatar, mime)
            record.pop("avatar", None)  # checked below without it, then with the uploaded blob
        try:
            validate_record(PROFILE, from_json(record))
        except RecordInvalid as exc:
            return again(400, _("Profile not valid"), _("This profile does not fit the profile lexicon: "
                                                        "%(reason)s") % {"reason": exc})
        if image is not None:
            blob = await user.upload_blob(*image)
            record["avatar"] = blob
            try:
                validate_record(PROFILE, from_json(record))
            except (RecordInvalid, ValueError) as exc:
                return again(415, _("Not an image we take"), _("Your PDS stored the avatar as something the "
                                                               "profile lexicon does not take: %(reason)s")
                             % {"reason": exc})
        try:
            await user.put_record(PROFILE, "self", record, swap_record=form.swap or None, expect_new=not form.swap)
        except PdsError as exc:
            if exc.error == "InvalidSwap":
                return again(409, _("Your profile changed meanwhile"), _(
                    "Your profile was changed elsewhere since this page was opened. Nothing was saved: reload "
                    "the page to see it as it is now."))
            raise
        log.info("profile of %s saved (roles %s)", user.did, ",".join(roles))
        await self.until_indexed(user.did, record)
        return RedirectResponse("/me?saved=1" if after == "/me" else after, status_code=303)

    async def until_indexed(self, did: str, record: dict[str, Any]) -> None:
        """Wait up to ``INDEX_WAIT_S`` for the firehose to bring ``record`` back into the index."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(INDEX_WAIT_S):
                while True:
                    with contextlib.suppress(PageError):
                        view = await self.optional("fm.openmusic.actor.getProfile", actor=did)
                        if view and view.get("record") == record:
                            return
                    await asyncio.sleep(0.1)


# -- helpers -----------------------------------------------------------------------------------------

def format_when(value: str | None) -> str:
    """An atproto datetime as a short date and time in the request's language, UTC."""
    parsed = parse_datetime(value)
    if parsed is None:
        return value or ""
    lang = current_locale.get()
    return (f"{format_skeleton('yMMMd', parsed, tzinfo=UTC, locale=lang)} "
            f"{format_skeleton('Hm', parsed, tzinfo=UTC, locale=lang)} UTC")


def seconds(ms: int | None) -> int:
    """Milliseconds as whole seconds, rounded."""
    return round((ms or 0) / 1000)


def actor_path(view: dict[str, Any]) -> str:
    """What names an account in our paths: its handle when verified, else its DID."""
    handle = view.get("handle")
    return handle if handle and handle != "handle.invalid" else view.get("did", "")
