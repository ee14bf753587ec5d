"""Content labels by the viewer's preferences (issue 14; Bluesky's ``contentLabelPref``): for each
content label a signed-in viewer chooses ``show``, ``warn`` (the default) or ``hide``, at
``/me#labels``; signed out, everything warns.

- ``content_warning`` (a template filter that reads the page's ``label_prefs``): the label value
  of a track or artist view to warn about, the most severe of ``WARN_LABELS`` the viewer does not
  ``show``; ``!warn`` always warns (it has no preference, as in Bluesky). Negated labels never count.
- ``viewer_visible`` (a filter on a list of track views, or of items with a ``track``): leaves out
  those carrying a label the viewer chose to ``hide``. A direct page (the track's own) still shows,
  with the warning, as Bluesky does for content reached by a link.
- ``POST /me/labels`` (one ``pref-<val>`` field per label, CSRF): saves them
  (``label_pref``, migration ``0027_label_prefs``), then back to ``/me?labels=1#labels``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jinja2 import pass_context
from jinja2.runtime import Context
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from core.db import now_iso
from web.errors import PageError

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

#: Label values the web app warns about, most severe first: the atproto content labels Bluesky's
#: clients warn on by default, our own ``ai-undisclosed``, and ``!warn``.
WARN_LABELS = ("porn", "sexual", "nudity", "graphic-media", "gore", "!warn", "ai-undisclosed")
#: The labels a viewer sets a preference for, in the order the form shows them (``gore`` follows
#: ``graphic-media``, as Bluesky folds it).
PREFERABLE = ("porn", "sexual", "nudity", "graphic-media", "ai-undisclosed")
ALIASES = {"gore": "graphic-media"}
VISIBILITIES = ("show", "warn", "hide")
DEFAULT = "warn"


def _values(view: Any) -> set[str]:
    if not isinstance(view, dict):
        return set()
    return {lab.get("val") for lab in view.get("labels") or [] if isinstance(lab, dict) and not lab.get("neg")}


def visibility(prefs: dict[str, str], val: str) -> str:
    """How the viewer with ``prefs`` (``{val: visibility}``) wants the label ``val`` treated."""
    if val == "!warn":
        return "warn"
    return prefs.get(ALIASES.get(val, val), DEFAULT)


def warning_for(view: dict[str, Any], prefs: dict[str, str] | None = None) -> str | None:
    """The label value of ``view`` to warn about under ``prefs`` (None: the defaults), or None."""
    values = _values(view)
    return next((v for v in WARN_LABELS if v in values and visibility(prefs or {}, v) != "show"), None)


def hidden_for(view: dict[str, Any], prefs: dict[str, str] | None = None) -> bool:
    """Whether ``view`` carries a label the viewer with ``prefs`` chose to hide."""
    return any(visibility(prefs or {}, v) == "hide" for v in _values(view) if v in WARN_LABELS)


def _prefs(ctx: Context) -> dict[str, str]:
    prefs = ctx.get("label_prefs")
    return prefs if isinstance(prefs, dict) else {}


@pass_context
def content_warning(ctx: Context, view: dict[str, Any]) -> str | None:
    """Template filter: ``warning_for`` with the page's ``label_prefs``."""
    return warning_for(view, _prefs(ctx))


@pass_context
def viewer_visible(ctx: Context, items: Any) -> list[Any]:
    """Template filter: ``items`` (track views, or dicts with a ``track`` view) without those the
    viewer hides."""
    prefs = _prefs(ctx)
    if not prefs:
        return list(items or [])
    return [i for i in items or [] if not hidden_for(i.get("track", i) if isinstance(i, dict) else i, prefs)]


async def load(db: Any, did: str) -> dict[str, str]:
    """``did``'s stored preferences, ``{val: visibility}`` (labels at the default are absent)."""
    cur = await db.execute("SELECT val, visibility FROM label_pref WHERE did = ?", (did,))
    return {val: vis for val, vis in await cur.fetchall() if val in PREFERABLE and vis in VISIBILITIES}


async def save(db: Any, did: str, prefs: dict[str, str], now: str | None = None) -> None:
    """Store ``prefs`` (``{val: visibility}`` for ``PREFERABLE`` values) for ``did``: the default is
    stored as no row. One transaction on ``db``, a connection that autocommits. Raises
    ``ValueError`` for an unknown label or visibility."""
    for val, vis in prefs.items():
        if val not in PREFERABLE or vis not in VISIBILITIES:
            raise ValueError(f"unknown label preference {val[:40]!r}={vis[:10]!r}")
    now = now or now_iso()
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute("DELETE FROM label_pref WHERE did = ?", (did,))
        for val, vis in prefs.items():
            if vis != DEFAULT:
                await db.execute("INSERT INTO label_pref (did, val, visibility, updated_at) VALUES (?,?,?,?)",
                                 (did, val, vis, now))
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise


def attach(web: WebApp, pages: Pages) -> None:
    """Give every page of ``pages`` (each ``Pages`` instance calls this) the filters and, through a
    context provider, ``label_prefs``: the signed-in viewer's (``{}`` signed out); on ``me.html``
    also ``label_saved``."""
    web.templates.filters.update(content_warning=content_warning, viewer_visible=viewer_visible)
    web.templates.globals.update(preferable_labels=PREFERABLE)

    async def provide(request: Request, name: str, context: dict[str, Any]) -> dict[str, Any]:
        user, _token = await pages.viewer(request)
        out: dict[str, Any] = {"label_prefs": await load(web.conn, user.did) if user else {}}
        if name == "me.html":
            out["label_saved"] = request.query_params.get("labels") == "1"
        return out
    pages.context_providers.append(provide)


class LabelPrefs:
    """The room's form endpoint (``attach`` does the rest, for every ``Pages``)."""

    def __init__(self, web: WebApp, pages: Pages) -> None:
        self.web, self.pages = web, pages

    def routes(self) -> list[BaseRoute]:
        return [Route("/me/labels", self.submit, methods=["POST"])]

    async def submit(self, request: Request) -> Response:
        """POST /me/labels (module docstring)."""
        async def build() -> Response:
            _ = self.web.templates.gettext
            user, form = await self.pages._signed_in_form(request)
            prefs = {val: form.get(f"pref-{val}", DEFAULT) for val in PREFERABLE}
            try:
                await save(self.web.conn, user.did, prefs)
            except ValueError as exc:
                raise PageError(400, _("Bad form"), _("This form is damaged; reload the page.")) from exc
            return RedirectResponse("/me?labels=1#labels", status_code=303)
        return await self.pages.guarded(request, build)


def routes(web: WebApp, pages: Pages) -> list[BaseRoute]:
    """The room's routes (``web.app.routes``)."""
    return LabelPrefs(web, pages).routes()
