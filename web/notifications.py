"""Notifications page, the unread count in the header, and the home page's "New from artists you
follow" (issue 13). What they show comes from the AppView in-process: ``appview.notifications``'
plain functions for the signed-in viewer's DID (over XRPC the same work needs a service-auth JWT;
here the OAuth session is the proof), and ``fm.openmusic.feed.getFeed`` (``following``).

- ``GET /notifications`` (``cursor``): the viewer's notifications, newest first, a page of
  ``PAGE_SIZE``: who (a link to their page), what (followed you, released a track or album, tipped
  you, with the amount and the track), when. Signed out: to the sign-in page, and back.
  **Opening the first page marks them read** (the stored seen time becomes the moment the page was
  asked for; ``appview.notifications.update_seen``): the unread ones are shown marked "New" on that
  visit, read on the next. This changes only the viewer's own read state, so a GET may do it: a
  cross-site request cannot read the page, and SameSite=Lax keeps the session cookie off cross-site
  subresource requests, so at worst a link someone else posts marks as read what the viewer then
  sees. Later pages (``cursor``) mark nothing.
- Header (``_nav_notifications.html``, every page): for a signed-in viewer a "Notifications" link
  with the unread count (``notifications_unread``: one indexed COUNT, stopping at 30, shown "30+"),
  added by a ``Pages.context_providers`` entry; pages not rendered through ``Pages.page`` show the
  link without a count.
- Home (``_home_following.html``): the newest ``HOME_FOLLOWING`` tracks of the artists the signed-in
  viewer follows (``following_tracks``); hidden when there are none or the viewer is signed out."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from appview.notifications import LIST, list_notifications, unread_count, update_seen
from appview.xrpc import XrpcError, validate_params
from web.errors import PageError
from web.paths import login_href

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

log = logging.getLogger("openmusic.web")
#: Notifications per page.
PAGE_SIZE = 30
#: Tracks in the home page's "New from artists you follow".
HOME_FOLLOWING = 6


class Notifications:
    """``GET /notifications`` and the context the header and home page show, over a started ``WebApp``
    (with views) and its ``Pages``."""

    def __init__(self, web: WebApp, pages: Pages) -> None:
        self.web, self.pages, self.views = web, pages, pages.views
        pages.context_providers.append(self.provide)

    def routes(self) -> list[BaseRoute]:
        return [Route("/notifications", self.page, methods=["GET"])]

    async def provide(self, request: Request, name: str, context: dict[str, Any]) -> dict[str, Any]:
        """A ``Pages.context_providers`` entry: ``notifications_unread`` (``{count, capped?}``) for a
        signed-in viewer on every page, and ``following_tracks`` (list of ``#trackView``) on the home page."""
        user, _ = await self.pages.viewer(request)
        if user is None:
            return {}
        extra: dict[str, Any] = {"notifications_unread": await unread_count(self.views, user.did)}
        if name == "home.html":
            try:
                got = await self.pages.query("fm.openmusic.feed.getFeed", feed="following", actor=user.did,
                                             limit=HOME_FOLLOWING)
                extra["following_tracks"] = got["feed"]
            except PageError:  # an account not indexed yet follows nobody here
                extra["following_tracks"] = []
        return extra

    async def page(self, request: Request) -> Response:
        """GET /notifications (module docstring)."""
        user, _ = await self.pages.viewer(request)
        if user is None:
            return RedirectResponse(login_href(), status_code=303)
        cursor = request.query_params.get("cursor") or None

        async def build() -> Response:
            _ = self.web.templates.gettext
            asked_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            try:
                params = validate_params(LIST, [("limit", str(PAGE_SIZE)), *([("cursor", cursor)] if cursor else [])])
                got = await list_notifications(self.views, user.did, params)
            except XrpcError as exc:
                raise PageError(400, _("Cannot show this page"),
                                _("This page link is damaged or too old. Open your notifications again.")) from exc
            if cursor is None:
                await update_seen(self.web.conn, user.did, asked_at)
            return await self.pages.page(request, "notifications.html", notifications=got["notifications"],
                                         cursor=got.get("cursor"), paged=cursor is not None)
        return await self.pages.guarded(request, build)


def routes(web: WebApp, pages: Pages) -> list[BaseRoute]:
    """The room's routes (``web.app.routes``)."""
    return Notifications(web, pages).routes()
