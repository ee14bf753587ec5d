"""Reports and the operator's moderation queue (issue 14, "Reports"), over ``appview.moderation``'s
plain functions, in-process (the OAuth session is the proof of who the viewer is).

- The "Report" form (``_report.html``, on the track, album, playlist and artist pages, for a
  signed-in viewer): a reason (``REASON_CHOICES``) and optional text, posted with CSRF to
  ``POST /report`` (``subject``: the DID or AT-URI, ``cid`` for a record, ``reasonType``,
  ``reason``, ``next``), which calls ``appview.moderation.create_report`` with the signed-in DID, then
  goes back to ``next`` with ``?reported=1#report`` (the form then says the report was sent). A
  Pages context provider gives the form its subject (``report_subject``: ``{uri, cid}``).
- ``GET /moderation`` (``cursor``): for the operators (``Settings.operator_dids``; signed out: to the
  sign-in page; anyone else: 403) the open reports grouped by subject, most recently reported first,
  ``QUEUE_PAGE`` subjects a page, each with what it is (title, artist or handle, a link), its reports
  (reporter, reason, text, when) and our labels in force on it; then the subjects carrying our
  labels (to bring one back), and the audit log.
- ``POST /moderation/act`` (``subject``, ``action``: takedown, label, negate, dismiss; ``val`` for
  label and negate; ``note``), CSRF-checked and operators only: ``appview.moderation.moderate``
  through our labeler (``indexer.labeler_issue.LabelIssuer``, which the runtime sets as
  ``web.label_issuer``), then back to ``/moderation``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from appview.moderation import (
    ACTIONS,
    CREATE_REPORT,
    MAX_REASON_CHARS,
    REPO_REF,
    STRONG_REF,
    ModerationError,
    audit_log,
    create_report,
    labelled_subjects,
    moderate,
    open_subjects,
)
from appview.xrpc import XrpcError
from core.identity import valid_did
from indexer.labeler_issue import ISSUABLE
from web import csrf
from web.errors import PageError
from web.oauth.client import UserSession
from web.pages import album_path, track_path
from web.paths import local_path, login_href
from web.playlists import playlist_path, with_query

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

log = logging.getLogger("openmusic.web")
#: The pages that show the Report form, and how each names its subject in the page's context.
REPORT_PAGES = {"track.html": "track", "album.html": "album", "playlist.html": "playlist", "artist.html": "profile"}


def reason_choices(_: Any) -> list[tuple[str, str]]:
    """The reasons the form offers: (``reasonType`` token, label in the viewer's language)."""
    return [("com.atproto.moderation.defs#reasonSpam", _("Spam")),
            ("fm.openmusic.moderation.defs#reasonCopyright", _("Copyright: it uses someone's work without permission")),
            ("fm.openmusic.moderation.defs#reasonMisleadingAi", _("Misleading AI disclosure")),
            ("com.atproto.moderation.defs#reasonMisleading", _("Misleading")),
            ("com.atproto.moderation.defs#reasonSexual", _("Unwanted sexual content")),
            ("com.atproto.moderation.defs#reasonRude", _("Harassment or hate")),
            ("com.atproto.moderation.defs#reasonViolation", _("Breaks the law or our rules")),
            ("com.atproto.moderation.defs#reasonOther", _("Something else"))]


def operator_dids(settings: Any) -> frozenset[str]:
    """``Settings.operator_dids`` as a set of DIDs (read each time: it is a setting)."""
    return frozenset(d.strip() for d in settings.operator_dids.split(",") if d.strip())


def subject_path(subject: dict[str, Any]) -> str:
    """The page of a subject as ``appview.moderation.describe`` gives it (``/artist/...`` for an account)."""
    uri, kind = subject["uri"], subject["kind"]
    if kind == "account":
        return f"/artist/{subject['handle'] or uri}"
    if kind == "track":
        return track_path(uri)
    if kind == "album":
        return album_path(uri)
    if kind == "playlist":
        return playlist_path(uri)
    return "/"


class Moderation:
    """The report form's endpoint and the moderation queue, over a started ``WebApp`` (with views) and
    its ``Pages``."""

    def __init__(self, web: WebApp, pages: Pages) -> None:
        self.web, self.pages = web, pages
        web.templates.globals.update(max_report_chars=MAX_REASON_CHARS)
        web.templates.filters.update(subject_path=subject_path)
        web.templates.globals.update(is_operator=lambda did: did in self.operators())  # the footer's link
        pages.context_providers.append(self.provide)

    def routes(self) -> list[BaseRoute]:
        return [Route("/report", self.report, methods=["POST"]),
                Route("/moderation", self.queue, methods=["GET"]),
                Route("/moderation/act", self.act, methods=["POST"])]

    def operators(self) -> frozenset[str]:
        """``Settings.operator_dids`` as a set (``operator_dids``)."""
        return operator_dids(self.web.settings)

    async def provide(self, request: Request, name: str, context: dict[str, Any]) -> dict[str, Any]:
        """A ``Pages.context_providers`` entry: on the pages of ``REPORT_PAGES``, for a signed-in viewer,
        ``report_subject`` (``{uri, cid}``; cid None for an account), ``report_reasons``, ``report_back``
        (this page's path) and ``report_sent`` (the page came back from a report)."""
        key = REPORT_PAGES.get(name)
        if key is None or not isinstance(context.get(key), dict):
            return {}
        user, _token = await self.pages.viewer(request)
        if user is None:
            return {}
        view = context[key]
        subject = {"uri": view["did"], "cid": None} if key == "profile" else {"uri": view["uri"], "cid": view.get("cid")}
        return {"report_subject": subject, "report_reasons": reason_choices(self.web.templates.gettext),
                "report_sent": request.query_params.get("reported") == "1", "report_back": request.url.path}

    async def report(self, request: Request) -> Response:
        """POST /report (module docstring)."""
        user: UserSession | None = None
        _ = self.web.templates.gettext
        try:
            user, form = await self.pages._signed_in_form(request)
            uri, cid = form.get("subject", ""), form.get("cid", "")
            subject = {"$type": REPO_REF, "did": uri} if valid_did(uri) else {"$type": STRONG_REF, "uri": uri, "cid": cid}
            body = {"reasonType": form.get("reasonType", ""), "subject": subject}
            if form.get("reason", "").strip():
                body["reason"] = form["reason"]
            try:
                await create_report(self.web.conn, user.did, body)
            except XrpcError as exc:
                raise PageError(400, _("Cannot send this report"), self._explain(exc.message)) from exc
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        log.info("report on %s by %s (%s)", uri[:200], user.did, body["reasonType"])
        back = local_path(form.get("next"), fallback="/")
        return RedirectResponse(with_query(back, reported="1") + "#report", status_code=303)

    def _explain(self, message: str) -> str:
        """A createReport refusal (``appview.moderation``'s English message) in the viewer's language."""
        _ = self.web.templates.gettext
        if message.startswith("unknown reasonType"):
            return _("Choose a reason from the list.")
        if message.startswith("reason is longer"):
            return _("The details are longer than %(n)s characters.") % {"n": MAX_REASON_CHARS}
        if "is not indexed here" in message or "is not known here" in message:
            return _("This is not in the catalog any more.")
        return _("This form is damaged; reload the page.")

    async def _operator(self, request: Request) -> tuple[UserSession | None, Response | None]:
        """The signed-in operator, or the answer for anyone else (sign-in redirect, 403 page)."""
        user, _token = await self.pages.viewer(request)
        if user is None:
            return None, RedirectResponse(login_href(), status_code=303)
        if user.did not in self.operators():
            _ = self.web.templates.gettext
            return None, self.web.error_page(403, _("Operators only"), _("This page is for the operators of this server."),
                                             user=user)
        return user, None

    async def queue(self, request: Request) -> Response:
        """GET /moderation (module docstring)."""
        user, away = await self._operator(request)
        if away is not None:
            return away
        cursor = request.query_params.get("cursor") or None

        async def build() -> Response:
            _ = self.web.templates.gettext
            db = self.pages.views.db
            src = self.web.settings.service_did_resolved
            try:
                got = await open_subjects(db, src, cursor)
            except XrpcError as exc:
                raise PageError(400, _("Cannot show this page"), _("This page link is damaged or too old.")) from exc
            return await self.pages.page(request, "moderation.html", queue=got["subjects"], cursor=got.get("cursor"),
                                         paged=cursor is not None, labelled=await labelled_subjects(db, src),
                                         audit=await audit_log(db), issuable=ISSUABLE,
                                         done=request.query_params.get("done", ""),
                                         reason_names=dict(reason_choices(_)))
        return await self.pages.guarded(request, build)

    async def act(self, request: Request) -> Response:
        """POST /moderation/act (module docstring)."""
        _ = self.web.templates.gettext
        user, _token = await self.pages.viewer(request)
        try:
            form = await self.web.read_form(request)
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        if user is None:
            return self.web.error_page(401, _("Not signed in"), _("Sign in to do this."))
        if user.did not in self.operators():
            return self.web.error_page(403, _("Operators only"), _("This page is for the operators of this server."),
                                       user=user)
        if not csrf.check(self.web.sealer.csrf_key, f"session:{user.key}", form.get(csrf.FIELD)):  # type: ignore[union-attr]
            return self.web.error_page(403, _("Form expired"), _("This was not sent from our page, or the page is "
                                                                  "too old. Reload the page and try again."), user=user)
        issuer = getattr(self.web, "label_issuer", None)
        if issuer is None:
            return self.web.error_page(503, _("Moderation is not available"),
                                       _("Our labeler is not running in this process."), user=user)
        action = form.get("action", "")
        if action not in ACTIONS:
            return self.web.error_page(400, _("Bad form"), _("This form is damaged; reload the page."), user=user)
        try:
            done = await moderate(issuer, user.did, form.get("subject", ""), action, form.get("val") or None,
                                  form.get("note"))
        except ModerationError as exc:
            return self.web.error_page(400, _("Cannot do this"), str(exc), user=user)
        log.info("moderation: %s %s %s on %s (reports %s)", user.did, action, done["val"], done["subject"][:200],
                 done["reports"])
        return RedirectResponse(f"/moderation?done={done['id']}#audit", status_code=303)


def routes(web: WebApp, pages: Pages) -> list[BaseRoute]:
    """The room's routes (``web.app.routes``)."""
    return Moderation(web, pages).routes()


__all__ = ["CREATE_REPORT", "Moderation", "reason_choices", "routes", "subject_path"]
