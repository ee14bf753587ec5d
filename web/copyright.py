"""Copyright cases in the web app (issue 14), over ``appview.copyright``, in-process:

- The track page (a ``Pages`` context provider, ``copyright`` in the context of ``track.html``):
  anyone sees that the audio is taken down (the view's ``audio-takedown`` label: the player and the
  offline copy are left out) and, after a counter-notice, the day it returns; the track's artist,
  the claimant and the operators see the case (the claim, the counter-notice); the artist of a
  case still ``down`` gets the counter-notice form.
- ``POST /copyright/counter`` (``case``, ``statement``, ``sworn`` = ``1``, CSRF): the signed-in
  artist's counter-notice (``appview.copyright.counter_notice``), then back to the track page with
  ``?notice=countered#copyright``.
- The moderation queue (``moderation.html``, operators only): a "Take the audio down" button on
  tracks with an open copyright report, and the open cases (``copyright_cases``) with "Restore the
  audio" and, after a counter-notice, "Uphold the claim".
- ``POST /moderation/copyright`` (``action``: ``open`` with ``subject``, or ``restore`` /
  ``uphold`` with ``case``; ``note``; CSRF; operators only), then back to ``/moderation#copyright``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from appview.copyright import (
    MAX_STATEMENT_CHARS,
    MIN_STATEMENT_CHARS,
    REASON_COPYRIGHT,
    cases,
    close_case,
    counter_notice,
    open_case,
)
from web.errors import PageError
from web.moderation import operator_dids
from web.oauth.client import UserSession
from web.pages import track_path

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

log = logging.getLogger("openmusic.web")


class Copyright:
    """The copyright room: the track page's part, the counter-notice and the operators' actions."""

    def __init__(self, web: WebApp, pages: Pages) -> None:
        self.web, self.pages = web, pages
        web.templates.globals.update(min_statement_chars=MIN_STATEMENT_CHARS, max_statement_chars=MAX_STATEMENT_CHARS,
                                     reason_copyright=REASON_COPYRIGHT)
        pages.context_providers.append(self.provide)

    def routes(self) -> list[BaseRoute]:
        return [Route("/copyright/counter", self.counter, methods=["POST"]),
                Route("/moderation/copyright", self.act, methods=["POST"])]

    def operators(self) -> frozenset[str]:
        """``Settings.operator_dids`` as a set (``web.moderation.operator_dids``)."""
        return operator_dids(self.web.settings)

    async def provide(self, request: Request, name: str, context: dict[str, Any]) -> dict[str, Any]:
        """``track.html``: ``copyright`` = ``{case (the newest, or None), shown (the viewer may read it),
        can_counter}``; ``moderation.html``: ``copyright_cases`` (the open cases)."""
        db = self.pages.views.db
        if name == "moderation.html":
            return {"copyright_cases": await cases(db, open_only=True)}
        if name != "track.html" or not isinstance(context.get("track"), dict):
            return {}
        track = context["track"]
        found = await cases(db, track=track["uri"], limit=1)
        case = found[0] if found else None
        user, _token = await self.pages.viewer(request)
        me = user.did if user else None
        shown = case is not None and me is not None and me in (case["artist"], case["claimant"], *self.operators())
        return {"copyright": {"case": case if shown or (case and case["audioDown"]) else None, "shown": shown,
                              "can_counter": bool(case and me == case["artist"] and case["status"] == "down")}}

    async def counter(self, request: Request) -> Response:
        """POST /copyright/counter (module docstring)."""
        _ = self.web.templates.gettext
        user: UserSession | None = None
        try:
            user, form = await self.pages._signed_in_form(request)
            statement = form.get("statement", "").strip()
            if len(statement) < MIN_STATEMENT_CHARS:
                raise PageError(400, _("Counter-notice not sent"),
                                _("Say why the claim is wrong, in at least %(n)s characters.") % {"n": MIN_STATEMENT_CHARS})
            if len(statement) > MAX_STATEMENT_CHARS:
                raise PageError(400, _("Counter-notice not sent"),
                                _("The statement is longer than %(n)s characters.") % {"n": MAX_STATEMENT_CHARS})
            if form.get("sworn") != "1":
                raise PageError(400, _("Counter-notice not sent"),
                                _("Confirm the statement: tick the box that says it is true."))
            try:
                case = await counter_notice(self._issuer(), user.did, int(form.get("case", "0") or 0),
                                            form.get("statement", ""))
            except ValueError as exc:  # CopyrightError, or a case number that is not one
                raise PageError(400, _("Counter-notice not sent"), str(exc)) from exc
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        log.info("counter-notice on case %s by %s", case["id"], user.did)
        return RedirectResponse(track_path(case["track"]) + "?notice=countered#copyright", status_code=303)

    def _issuer(self) -> Any:
        issuer = getattr(self.web, "label_issuer", None)
        if issuer is None:
            _ = self.web.templates.gettext
            raise PageError(503, _("Moderation is not available"), _("Our labeler is not running in this process."))
        return issuer

    async def act(self, request: Request) -> Response:
        """POST /moderation/copyright (module docstring)."""
        _ = self.web.templates.gettext
        user: UserSession | None = None
        try:
            user, form = await self.pages._signed_in_form(request)
            if user.did not in self.operators():
                raise PageError(403, _("Operators only"), _("This page is for the operators of this server."))
            issuer, action, note = self._issuer(), form.get("action", ""), form.get("note")
            try:
                if action == "open":
                    case = await open_case(issuer, user.did, form.get("subject", ""), note)
                elif action in ("restore", "uphold"):
                    case = await close_case(issuer, user.did, int(form.get("case", "0") or 0),
                                            "restored" if action == "restore" else "upheld", note)
                else:
                    raise PageError(400, _("Bad form"), _("This form is damaged; reload the page."))
            except ValueError as exc:
                raise PageError(400, _("Cannot do this"), str(exc)) from exc
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        log.info("copyright: %s %s case %s on %s", user.did, action, case["id"], case["track"][:200])
        return RedirectResponse(f"/moderation?done=c{case['id']}#copyright", status_code=303)


def routes(web: WebApp, pages: Pages) -> list[BaseRoute]:
    """The room's routes (``web.app.routes``)."""
    return Copyright(web, pages).routes()


__all__ = ["Copyright", "routes"]
