"""Recommendations in the web app (issue 13): "More like this" on the track page and "For you" on
the home page, from the same query handlers as the XRPC API (``fm.openmusic.feed.getSimilarTracks``,
``feed.getSuggestions``, ``appview.recommend``), added by a ``Pages.context_providers`` entry; no
routes of their own.

- Track page (``_track_related.html``, after the reviews): up to ``RELATED_SHOWN`` tracks like this
  one (``related_tracks``, ``#recommendedTrackView``s), listed with ``_tracks.html``'s markup (each
  with its play button), under a note saying what they rest on (``related_basis``: the first
  track's reason: ``colistening`` or ``genre``/``mood``). Hidden when there is nothing to show.
- Home page (``_home_foryou.html``, before the newest tracks): for a signed-in viewer, up to
  ``FOR_YOU_SHOWN`` suggestions (``foryou_tracks``) and their basis (``foryou_basis``). Hidden when
  signed out, and when the only basis is ``popular`` (a listener who has played nothing yet: the
  charts already show what is popular)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.routing import BaseRoute

from web.errors import PageError

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

#: Tracks in the track page's "More like this".
RELATED_SHOWN = 6
#: Tracks in the home page's "For you".
FOR_YOU_SHOWN = 6


class Recommend:
    """The context the track and home pages show, over a started ``WebApp`` (with views) and its ``Pages``."""

    def __init__(self, web: WebApp, pages: Pages) -> None:
        self.web, self.pages = web, pages
        pages.context_providers.append(self.provide)

    async def provide(self, request: Request, name: str, context: dict[str, Any]) -> dict[str, Any]:
        """A ``Pages.context_providers`` entry: ``related_tracks`` and ``related_basis`` on
        ``track.html``; ``foryou_tracks`` and ``foryou_basis`` on ``home.html`` for a signed-in
        viewer. {} on other pages. Raises ``PageError`` when the query fails (the page then shows
        without this part)."""
        if name == "track.html" and isinstance(context.get("track"), dict):
            got = await self.pages.query("fm.openmusic.feed.getSimilarTracks", uri=context["track"]["uri"],
                                         limit=RELATED_SHOWN)
            tracks = got["tracks"]
            return {"related_tracks": tracks, "related_basis": tracks[0]["reason"] if tracks else None}
        if name == "home.html":
            user, _ = await self.pages.viewer(request)
            if user is None:
                return {}
            try:
                got = await self.pages.query("fm.openmusic.feed.getSuggestions", actor=user.did, limit=FOR_YOU_SHOWN)
            except PageError:  # an account known here not to be active
                return {}
            if got["basis"] == "popular":
                return {}
            return {"foryou_tracks": got["tracks"], "foryou_basis": got["basis"]}
        return {}


def routes(web: WebApp, pages: Pages) -> list[BaseRoute]:
    """The room's routes (``web.app.routes``): none; registers ``Recommend.provide`` with ``pages``."""
    if pages.views is not None:
        Recommend(web, pages)
    return []
