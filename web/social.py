"""Follows, votes and reviews in the web app: each a record in **the viewer's own PDS**, written
through their OAuth session (``fm.openmusic.graph.follow``, ``social.vote``, ``social.review``); the
firehose brings it back to our index (``indexer.stats`` counts each account's latest record once).

Routes (POST forms, signed in, CSRF-checked; each waits up to ``web.pages.INDEX_WAIT_S`` for the
index to show the change, then 303 back to ``next``, a path on this site):
- ``POST /follow`` (``subject`` DID, ``key``) and ``POST /unfollow`` (``subject``): follow an artist
  (nothing more when the viewer already does), or delete every follow record of the viewer for it.
- ``POST /vote`` (``uri`` and ``cid`` of a track, ``direction`` up|down, ``key``, ``current``: the
  viewer's vote as the page showed it): voting the shown direction again removes the viewer's votes
  on the track (a toggle); the other direction writes a new vote (the latest counts) and deletes the
  viewer's older vote records on the track, so the repo keeps one.
- ``POST /review`` (``uri`` and ``cid`` of a track or album, ``rating`` 1..5, ``text`` up to
  ``MAX_REVIEW_CHARS``, ``key``): write a review, then delete the viewer's older reviews of it.
- ``GET /track/{did}/{rkey}/votes``: how the track's votes count (``social.getVoteBreakdown``: the
  people's and the agents' scores, the reasons, and each vote's weight, a page at a time).
Every form carries a record key (a TID) made when the page was rendered: the same form sent twice (a
double click, a resend) finds its record and writes nothing more; because ``/vote`` acts on what the
page showed (``current``), a resent "remove" does not vote again. Bad input (a rating outside 1..5,
a text too long, a subject not indexed, a forged CSRF token) gets an error page and writes nothing.

What the pages show comes from the same query handlers as the XRPC API (``graph.getFollowers``,
``social.getReviews``, ``listen.getTrackStats``' ``votesUp``/``votesDown``) plus the viewer's own
state (``appview.social.viewer_*``). ``Social`` adds it to the artist, track and album pages by
wrapping ``Pages.page`` for those templates (``Social.page``), so ``web.pages`` needs no change."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from babel.numbers import format_decimal
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from appview.social import viewer_follows, viewer_review, viewer_vote
from core.identity import valid_did
from core.lexicons import ALBUM, FOLLOW, REVIEW, TRACK, VOTE, is_track_uri
from core.publish import now_iso
from core.tid import is_tid
from web.errors import PageError
from web.i18n import current_locale
from web.oauth.client import PdsError, SessionEnded, UserSession
from web.pages import album_path, track_path
from web.paths import local_path

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

log = logging.getLogger("openmusic.web")
#: Longest review text, characters (the lexicon allows 3000 graphemes; a character is at most one).
MAX_REVIEW_CHARS = 3000
#: Reviews shown on a track or album page, newest first.
REVIEWS_SHOWN = 10
#: Votes listed per page of a track's vote breakdown.
BREAKDOWN_PAGE = 50
#: Pages that show follows, votes or reviews (``Social.page``).
SOCIAL_PAGES = ("artist.html", "track.html", "album.html")


def average_rating(hundredths: int | None) -> str:
    """``averageRating`` (hundredths) as a number in the current request's language: 425 -> "4.25"
    ("4,25" in German), 500 -> "5"."""
    if hundredths is None:
        return ""
    return format_decimal(Decimal(int(hundredths)).scaleb(-2), format="#,##0.##", locale=current_locale.get())


def vote_weight(thousandths: int | None) -> str:
    """A weight or score in thousandths of a vote (``getVoteBreakdown``) as a number of votes in the
    current request's language: 1250 -> "1.25", 31 -> "0.031", -500 -> "-0.5"."""
    if thousandths is None:
        return ""
    return format_decimal(Decimal(int(thousandths)).scaleb(-3), format="#,##0.###", locale=current_locale.get())


def rkey_of(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def actor_path(view: dict[str, Any]) -> str:
    """The handle (or the DID when the handle is not verified) for ``/artist/`` and ``/listener/`` links."""
    handle = view.get("handle")
    return handle if handle and handle != "handle.invalid" else view.get("did", "")


class Social:
    """The follow, vote and review endpoints over a started ``WebApp`` (with views) and its ``Pages``."""

    def __init__(self, web: WebApp, pages: Pages) -> None:
        self.web = web
        self.pages = pages
        self.views = pages.views
        web.templates.filters.update(average_rating=average_rating, actor_path=actor_path, votes=vote_weight)
        web.templates.globals.update(max_review_chars=MAX_REVIEW_CHARS)
        pages.context_providers.append(self.provide)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/follow", self.follow, methods=["POST"]),
            Route("/unfollow", self.unfollow, methods=["POST"]),
            Route("/vote", self.vote, methods=["POST"]),
            Route("/review", self.review, methods=["POST"]),
            Route("/track/{did}/{rkey}/votes", self.breakdown, methods=["GET"]),
        ]

    async def breakdown(self, request: Request) -> Response:
        """GET /track/{did}/{rkey}/votes?cursor=: how the track's votes count
        (``fm.openmusic.social.getVoteBreakdown``): the scores, the reasons, and each vote's weight."""
        uri = f"at://{request.path_params['did']}/{TRACK}/{request.path_params['rkey']}"
        cursor = request.query_params.get("cursor")

        async def build() -> Response:
            track = (await self.pages.lookup("fm.openmusic.catalog.getTrack", uri))["track"]
            try:
                got = await self.pages.query("fm.openmusic.social.getVoteBreakdown", uri=uri, cursor=cursor,
                                             limit=BREAKDOWN_PAGE)
            except PageError as exc:
                if not cursor or exc.status != 400:
                    raise
                got = await self.pages.query("fm.openmusic.social.getVoteBreakdown", uri=uri, limit=BREAKDOWN_PAGE)
            return await self.pages.page(request, "votes.html", track=track, breakdown=got, paged=bool(cursor))
        return await self.pages.guarded(request, build)

    # -- what the pages show -------------------------------------------------------------------------
    async def provide(self, request: Request, name: str, context: dict[str, Any]) -> dict[str, Any]:
        """A ``Pages.context_providers`` entry: the followers (artist page), votes (track page) and
        reviews (track and album pages), and the viewer's own follow, vote and review."""
        return await self.context(request, name, context) if name in SOCIAL_PAGES else {}

    async def context(self, request: Request, name: str, context: dict[str, Any]) -> dict[str, Any]:
        user, _ = await self.pages.viewer(request)
        did = user.did if user else None
        extra: dict[str, Any] = {}
        if name == "artist.html":
            profile = context["profile"]
            got = await self.pages.query("fm.openmusic.graph.getFollowers", actor=profile["did"], limit=1)
            extra["followers_count"] = got["followersCount"]
            extra["following"] = bool(did and await viewer_follows(self.views, did, profile["did"]))
            return extra
        subject = context["track"] if name == "track.html" else context["album"]
        if name == "track.html":
            extra["my_vote"] = (await viewer_vote(self.views, did, subject["uri"]))[0] if did else None
        extra["reviews"] = await self.pages.query("fm.openmusic.social.getReviews", uri=subject["uri"],
                                                  limit=REVIEWS_SHOWN)
        extra["my_review"] = await viewer_review(self.views, did, subject["uri"]) if did else None
        extra["review_subject"] = subject
        extra["review_back"] = track_path(subject["uri"]) if name == "track.html" else album_path(subject["uri"])
        return extra

    # -- writes --------------------------------------------------------------------------------------
    async def write(self, request: Request, act) -> Response:
        """Run ``act(user, form)`` (writes, then returns the fallback path) for a signed-in form with a
        valid CSRF token; then 303 to the form's ``next``. Errors become a page with their status."""
        user: UserSession | None = None
        _ = self.web.templates.gettext
        try:
            user, form = await self.pages._signed_in_form(request)
            key = form.get("key", "")
            if key and not is_tid(key):
                raise PageError(400, _("Bad form"), _("This form is damaged; reload the page."))
            back = await act(user, form, key)
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        except SessionEnded:
            return RedirectResponse("/login", status_code=303)
        except PdsError as exc:
            log.warning("a social write for %s failed: %s", user.did if user else "?", exc)
            return self.web.error_page(502, _("Your PDS refused"), _("Your PDS did not save this: %(why)s") % {
                "why": str(exc)[:300]}, user=user)
        return RedirectResponse(local_path(form.get("next"), fallback=back), status_code=303)

    async def follow(self, request: Request) -> Response:
        """POST /follow (``subject`` DID, ``key``, ``next``): follow the artist from the viewer's repo."""
        return await self.write(request, lambda user, form, key: self._follow(user, form, key, True))

    async def unfollow(self, request: Request) -> Response:
        """POST /unfollow (``subject`` DID, ``next``): delete the viewer's follows of the artist."""
        return await self.write(request, lambda user, form, key: self._follow(user, form, key, False))

    async def _follow(self, user: UserSession, form: dict[str, str], key: str, on: bool) -> str:
        _ = self.web.templates.gettext
        subject = form.get("subject", "")
        if not valid_did(subject):
            raise PageError(400, _("Cannot follow"), _("This form names no account."))
        if on and subject == user.did:
            raise PageError(400, _("Cannot follow"), _("You cannot follow yourself."))
        try:
            back = f"/artist/{actor_path(await self.pages.query('fm.openmusic.actor.getProfile', actor=subject))}"
        except PageError:
            if on:  # an account we do not know cannot be followed from here; an old follow can still go
                raise
            back = f"/artist/{subject}"
        existing = await viewer_follows(self.views, user.did, subject)
        if on and not existing:
            await user.create_record_once(FOLLOW, {"$type": FOLLOW, "subject": subject, "createdAt": now_iso()}, key or None)
        elif not on:
            for uri in existing:  # duplicates written by any client too
                await user.delete_record(FOLLOW, rkey_of(uri))
        await self.pages._until(lambda: viewer_follows(self.views, user.did, subject), lambda got: bool(got) == on)
        return back

    async def vote(self, request: Request) -> Response:
        """POST /vote (``uri``, ``cid``, ``direction``, ``current``, ``key``, ``next``): see the module."""
        return await self.write(request, self._vote)

    async def _vote(self, user: UserSession, form: dict[str, str], key: str) -> str:
        _ = self.web.templates.gettext
        direction = form.get("direction", "")
        if direction not in ("up", "down"):
            raise PageError(400, _("Cannot vote"), _("A vote is up or down."))
        uri = form.get("uri", "")
        if not is_track_uri(uri):
            raise PageError(400, _("Cannot vote"), _("Only tracks can be voted on."))
        track = (await self.pages.query("fm.openmusic.catalog.getTrack", uri=uri))["track"]
        mine, uris = await viewer_vote(self.views, user.did, uri)
        shown = form["current"] if "current" in form else (mine or "")
        if direction == shown:  # the pressed button again: take the vote back
            for old in uris:
                await user.delete_record(VOTE, rkey_of(old))
            await self.pages._until(lambda: viewer_vote(self.views, user.did, uri), lambda got: got[0] is None)
        else:
            new = f"at://{user.did}/{VOTE}/{key}" if key else ""
            if new not in uris:
                new = (await user.create_record_once(VOTE, {
                    "$type": VOTE, "subject": {"uri": uri, "cid": track["cid"]}, "direction": direction,
                    "createdAt": now_iso()}, key or None))["uri"]
            for old in uris:  # one vote per track in the repo: the new one
                if old != new:
                    await user.delete_record(VOTE, rkey_of(old))
            await self.pages._until(lambda: viewer_vote(self.views, user.did, uri), lambda got: got[1] == [new])
        return track_path(uri)

    async def review(self, request: Request) -> Response:
        """POST /review (``uri``, ``cid``, ``rating``, ``text``, ``key``, ``next``): see the module."""
        return await self.write(request, self._review)

    async def _review(self, user: UserSession, form: dict[str, str], key: str) -> str:
        _ = self.web.templates.gettext
        rating_text = form.get("rating", "").strip()
        rating = int(rating_text) if rating_text.isdigit() and len(rating_text) < 3 else 0
        if not 1 <= rating <= 5:
            raise PageError(400, _("Cannot save the review"), _("Choose a rating from 1 to 5 stars."))
        text = form.get("text", "").replace("\r\n", "\n").strip()
        if len(text) > MAX_REVIEW_CHARS:
            raise PageError(400, _("Cannot save the review"),
                            _("A review has at most %(most)s characters; this one has %(count)s.") % {
                                "most": MAX_REVIEW_CHARS, "count": len(text)})
        uri = form.get("uri", "")
        if f"/{ALBUM}/" in uri:
            subject = (await self.pages.query("fm.openmusic.catalog.getAlbum", uri=uri))["album"]
            back = album_path(uri)
        elif is_track_uri(uri):
            subject = (await self.pages.query("fm.openmusic.catalog.getTrack", uri=uri))["track"]
            back = track_path(uri)
        else:
            raise PageError(400, _("Cannot save the review"), _("Only tracks and albums can be reviewed."))
        before = await viewer_review(self.views, user.did, uri)
        uris = [before["uri"], *before["older"]] if before else []
        new = f"at://{user.did}/{REVIEW}/{key}" if key else ""
        if new not in uris:
            record: dict[str, Any] = {"$type": REVIEW, "subject": {"uri": uri, "cid": subject["cid"]},
                                      "rating": rating, "createdAt": now_iso()}
            if text:
                record["text"] = text
            new = (await user.create_record_once(REVIEW, record, key or None))["uri"]
        for old in uris:  # a second review replaces the first: one in the repo
            if old != new:
                await user.delete_record(REVIEW, rkey_of(old))
        await self.pages._until(lambda: viewer_review(self.views, user.did, uri),
                                lambda got: bool(got) and got["uri"] == new and not got["older"])
        return back + "#reviews"
