"""The dashboards' shared machinery (``web.dashboard`` describes the pages): calling the AppView's
XRPC methods as the viewer (``Dashboards.call``, ``part``: a failure becomes a sentence a person reads,
the method's own English message going only to the log), who the viewer is (``Viewer``: artist,
manager, operator, from their public profile; the tabs they are shown), the period of the query, the
page or CSV answer (``respond``), a plain notice page (``notice``: the listener's /dashboard, a 403),
and the chart library's two files (``vendor``)."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from appview.analytics import MAX_DAYS
from web import csrf
from web.dashboard_tables import Table, cell, csv_text
from web.errors import PageError
from web.i18n import current_locale
from web.money import ApiError
from web.oauth.client import PdsError, UserSession
from web.paths import login_href

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

log = logging.getLogger("openmusic.web")
HERE = Path(__file__).resolve().parent
#: The chart library's files (npm ``uplot``, ``web/package.json``), the only ones served from node_modules.
VENDOR_DIR = HERE / "node_modules" / "uplot" / "dist"
VENDOR_FILES = {"uPlot.iife.min.js": "text/javascript; charset=utf-8", "uPlot.min.css": "text/css; charset=utf-8"}
AN = "fm.openmusic.analytics."
PAY = "fm.openmusic.payment."
#: The period when none is given: the 30 days ending today (UTC), as the analytics methods default.
DEFAULT_DAYS = 30
GRANULARITIES = ("day", "week", "month")
DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
#: A record key (atproto record-key syntax), for ``?track=``.
RKEY = re.compile(r"^[A-Za-z0-9._:~-]{1,512}$")


@dataclass(slots=True)
class Period:
    """The period asked for (``start``, ``end``: ISO days; ``granularity``), and what was wrong with
    it (``errors``, translated; empty when it is fine)."""

    start: str
    end: str
    granularity: str
    errors: list[str] = field(default_factory=list)

    def params(self, series: bool = False) -> dict[str, str]:
        """The analytics methods' params (``granularity`` for series only)."""
        return {"start": self.start, "end": self.end, **({"granularity": self.granularity} if series else {})}


@dataclass(slots=True)
class Viewer:
    """Who the signed-in viewer is here, from their public profile (``actor.getProfile``, None when
    the AppView knows none): ``artist`` (the role ``artist`` or at least one track), ``manager`` (the
    role ``manager``, or at least one artist who agrees), ``operator`` (``Settings.operator_dids``)."""

    did: str
    profile: dict[str, Any] | None
    artist: bool
    manager: bool
    operator: bool

    def tabs(self, current: str, _) -> list[dict[str, Any]]:
        """The dashboards' tabs this viewer is shown (the current page's always): none when only one."""
        tabs = [{"id": "artist", "href": "/dashboard", "label": _("Artist"), "show": self.artist},
                {"id": "manager", "href": "/dashboard/manager", "label": _("Manager"), "show": self.manager},
                {"id": "operator", "href": "/dashboard/operator", "label": _("Operator"), "show": self.operator}]
        shown = [t for t in tabs if t["show"] or t["id"] == current]
        return shown if len(shown) > 1 else []


@dataclass(slots=True)
class Part:
    """One method's answer (``data``), or why there is none (``problem``, translated)."""

    data: dict[str, Any] | None = None
    problem: str | None = None
    status: int = 200
    error: str = ""


class Dashboards:
    """The dashboards' shared machinery over a started ``WebApp`` (with views) and its ``Pages``."""

    def __init__(self, web: WebApp, pages: Pages) -> None:
        self.web = web
        self.pages = pages
        self.currency = web.settings.currency.upper()
        web.templates.filters.update(dash_cell=cell)

    def _(self, message: str) -> str:
        """``message`` in the request's language."""
        return self.web.templates.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        """``singular`` or ``plural`` (by ``n``, as the request's language counts) in that language."""
        return self.web.templates.translations[current_locale.get()].ngettext(singular, plural, n)

    # -- calling the AppView's methods as the viewer -------------------------------------------------
    async def call(self, user: UserSession, nsid: str, **params: object) -> dict[str, Any]:
        """GET ``/xrpc/nsid`` with ``params`` as ``user``, with a service-auth JWT their PDS mints (a new
        one per call: the AppView refuses a token seen before). Raises ``ApiError`` (the method's XRPC
        error; 503 without the in-process API), ``SessionEnded``, ``PdsError``."""
        if self.web.api is None:
            raise ApiError(503, "Unavailable", "this server does not serve its XRPC API to the web app")
        token = await user.service_auth(self.web.settings.service_did_resolved, nsid)
        query = [(k, str(v)) for k, v in params.items() if v not in (None, "")]
        resp = await self.web.api.get(f"/xrpc/{nsid}", params=query, headers={"authorization": f"Bearer {token}"})
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if resp.status_code != 200 or not isinstance(data, dict):
            data = data if isinstance(data, dict) else {}
            raise ApiError(resp.status_code, str(data.get("error") or "InternalServerError"),
                           str(data.get("message") or "the server could not do this"))
        return data

    async def part(self, user: UserSession, nsid: str, **params: object) -> Part:
        """``call``, with any failure but an ended session turned into a ``Part`` that says why."""
        _ = self._
        try:
            return Part(await self.call(user, nsid, **params))
        except ApiError as exc:
            log.info("%s for %s: %s %s: %s", nsid, user.did, exc.status, exc.error, exc.message)
            return Part(problem=self.why(exc.status, exc.error), status=exc.status, error=exc.error)
        except PdsError as exc:
            log.warning("service auth for %s of %s failed: %s", nsid, user.did, exc)
            return Part(problem=_("Your PDS would not vouch for this request; reload the page to try again."),
                        status=502, error="UpstreamFailure")

    def why(self, status: int, error: str) -> str:
        """A method's XRPC error in words a person reads (its own message is English and technical:
        it goes to the log, never to the page)."""
        _ = self._
        if status == 501 or error in ("MethodNotImplemented", "PaymentsDisabled", "AnalyticsUnavailable"):
            return _("Not available on this server.")
        if status == 403 or error in ("Forbidden", "AuthRequired", "AuthMissing"):
            return _("You may not see these figures.")
        if error == "ActorNotFound":
            return _("No such artist is known here.")
        if error == "NotFound":
            return _("This track is not known here.")
        if status == 400 and error == "InvalidRequest":
            return _("This period cannot be shown: check its dates, and that it is not too long for the "
                     "granularity.")
        return _("These figures are not available right now.")

    # -- who the viewer is ---------------------------------------------------------------------------
    async def viewer_info(self, user: UserSession) -> Viewer:
        """The viewer's ``Viewer`` (their public profile; their agreed artists only when they name some
        without the manager role)."""
        profile = await self.public("fm.openmusic.actor.getProfile", actor=user.did)
        roles = [r for r in (profile or {}).get("roles") or [] if isinstance(r, str)]
        artist = "artist" in roles or bool((profile or {}).get("tracksCount"))
        manager = "manager" in roles
        if not manager and names_managed(profile):
            manager = bool((await self.managed(user.did, profile))[0])
        return Viewer(user.did, profile, artist, manager, user.did in operator_set(self))

    async def managed(self, did: str, me: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
        """(agreed artists' public profiles, handles or DIDs the viewer names that do not name them back);
        ``me``: the viewer's own profile view when already read."""
        if me is None:
            me = await self.public("fm.openmusic.actor.getProfile", actor=did)
        agreed, one_sided = [], []
        for artist in names_managed(me):
            profile = await self.public("fm.openmusic.actor.getProfile", actor=artist)
            if profile and did in ((profile.get("record") or {}).get("managers") or []):
                agreed.append(profile)
            else:
                one_sided.append((profile or {}).get("handle") or artist)
        return agreed, one_sided

    async def public(self, nsid: str, **params: object) -> dict[str, Any] | None:
        """A public query handler's answer (``Pages.query``), or None when it has nothing (4xx)."""
        try:
            return await self.pages.query(nsid, **params)
        except PageError:
            return None

    # -- the request ---------------------------------------------------------------------------------
    def period(self, request: Request, today: date | None = None) -> Period:
        """``start``, ``end`` and ``granularity`` of the query (default: the ``DEFAULT_DAYS`` ending today,
        by day), each checked; ``errors`` says what is wrong, in words a person reads."""
        _ = self._
        q = request.query_params
        errors: list[str] = []
        today = today or datetime.now(UTC).date()

        def day(name: str, label: str, default: date) -> date | None:
            text = q.get(name, "").strip()
            if not text:
                return default
            if DAY.match(text):
                try:
                    return date.fromisoformat(text)
                except ValueError:
                    pass
            errors.append(_("%(field)s is not a date: “%(value)s”. Write it as YYYY-MM-DD, for example %(example)s.")
                          % {"field": label, "value": text[:40], "example": today.isoformat()})
            return None
        end = day("end", _("The end"), today)
        start = day("start", _("The start"), (end or today) - timedelta(days=DEFAULT_DAYS - 1))
        gran = q.get("granularity", "day") or "day"
        if gran not in GRANULARITIES:
            errors.append(_("Show the figures by day, week or month."))
            gran = "day"
        if start and end and end < start:
            errors.append(_("The end (%(end)s) is before the start (%(start)s).") % {
                "end": cell(end.isoformat(), "day"), "start": cell(start.isoformat(), "day")})
        elif start and end and not errors and (days := (end - start).days + 1) > MAX_DAYS[gran]:
            errors.append(self.too_long(gran, days))
        return Period((start or today).isoformat(), (end or today).isoformat(), gran, errors)

    def too_long(self, granularity: str, days: int) -> str:
        """Why a period of ``days`` days is too long for a series by ``granularity`` (``MAX_DAYS``)."""
        n = {"days": cell(days, "int"), "most": cell(MAX_DAYS[granularity], "int")}
        if granularity == "day":
            return self.ngettext(
                "This period is %(days)s day long; a series by day covers at most %(most)s days. "
                "Choose week or month, or a shorter period.",
                "This period is %(days)s days long; a series by day covers at most %(most)s days. "
                "Choose week or month, or a shorter period.", days) % n
        if granularity == "week":
            return self.ngettext(
                "This period is %(days)s day long; a series by week covers at most %(most)s days. "
                "Choose month, or a shorter period.",
                "This period is %(days)s days long; a series by week covers at most %(most)s days. "
                "Choose month, or a shorter period.", days) % n
        return self.ngettext(
            "This period is %(days)s day long; a series by month covers at most %(most)s days. "
            "Choose a shorter period.",
            "This period is %(days)s days long; a series by month covers at most %(most)s days. "
            "Choose a shorter period.", days) % n

    async def viewer(self, request: Request) -> tuple[UserSession | None, str | None, Response | None]:
        """The signed-in viewer and their CSRF token, or a redirect to the sign-in page."""
        user, token = await self.pages.viewer(request)
        if user is None:
            return None, None, RedirectResponse(login_href(), status_code=303)
        return user, token, None

    # -- answers -------------------------------------------------------------------------------------
    def respond(self, request: Request, template: str, user: UserSession, token: str | None, *, status: int = 200,
                tables: dict[str, Table] | None = None, charts: list[dict[str, Any]] | None = None,
                filename: str = "dashboard", **context: object) -> Response:
        """The page, or with ``?format=csv&table=ID`` that table as a CSV attachment (404 for an unknown
        table). Every table gets its CSV link (``csv_links``)."""
        tables = tables or {}
        if request.query_params.get("format") == "csv":
            which = request.query_params.get("table", "")
            table = tables.get(which)
            if table is None or status != 200:
                _ = self._
                return PlainTextResponse(_("There is no such table here.") if status == 200 else
                                         _("This period cannot be shown."), status_code=404 if status == 200 else status,
                                         headers={"Cache-Control": "no-store"})
            period = "-".join(str(context[k]) for k in ("start", "end") if context.get(k))
            name = "-".join(p for p in ("openmusic", filename, which, period) if p)
            return Response(csv_text(table), media_type="text/csv; charset=utf-8", headers={
                "Content-Disposition": f'attachment; filename="{name}.csv"', "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff"})
        keep = [(k, v) for k, v in request.query_params.multi_items() if k not in ("format", "table", "lang")]
        links = {tid: f"{request.url.path}?{urlencode([*keep, ('format', 'csv'), ('table', tid)])}" for tid in tables}
        return self.web.render(template, status=status, user=user, csrf_field=csrf.FIELD, csrf_token=token,
                               tables=tables, charts=charts or [], chart_by={c["id"]: c for c in charts or []},
                               csv_links=links, **context)

    def notice(self, user: UserSession, viewer: Viewer, kind: str, title: str, lines: list[str], *,
               status: int = 200, current: str = "artist", links: list[tuple[str, str]] | None = None) -> Response:
        """A plain page in place of a dashboard (``dashboard_notice.html``: no period form, no figures):
        ``kind`` its id (``listener``, ``not-your-artist``, ``operators-only``), ``lines`` its sentences,
        ``links`` (href, label) after them (default: the viewer's own dashboards and their page);
        ``current``: the tab it stands for ("": none, for a refusal)."""
        _ = self._
        if links is None:
            links = [*([("/dashboard", _("Your artist dashboard"))] if viewer.artist else []),
                     *([("/dashboard/manager", _("The artists you manage"))] if viewer.manager else []),
                     ("/me", _("Back to your page"))]
        return self.web.render("dashboard_notice.html", status=status, user=user, kind=kind, title=title,
                               lines=lines, links=links, current=current,
                               tabs=viewer.tabs(current, _))

    async def vendor(self, request: Request) -> Response:
        """GET /static/vendor/uplot/{name}: one of the chart library's two files (``make setup`` puts
        them in web/node_modules; ``WebSettings.vendor_dir`` elsewhere); anything else, or a missing
        install, is 404."""
        name = request.path_params["name"]
        base = Path(self.web.web.vendor_dir) / "uplot" / "dist" if self.web.web.vendor_dir else VENDOR_DIR
        path = base / name
        if name not in VENDOR_FILES or not path.is_file():
            return PlainTextResponse("not found (the chart library is installed by `make setup`)", status_code=404)
        return FileResponse(path, media_type=VENDOR_FILES[name], headers={
            "Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})


async def gather_parts(*calls) -> list[Part]:
    """Await ``Dashboards.part`` calls together (an ended session still raises ``SessionEnded``)."""
    return list(await asyncio.gather(*calls))


def names_managed(profile: dict[str, Any] | None) -> list[str]:
    """The DIDs a profile view's record lists in ``manages`` (each once, in order)."""
    names = ((profile or {}).get("record") or {}).get("manages") or []
    return list(dict.fromkeys(a for a in names if isinstance(a, str))) if isinstance(names, list) else []


def operator_set(dash: Dashboards) -> frozenset[str]:
    """``Settings.operator_dids`` as a set (read on each request: it is a setting, not state)."""
    return frozenset(d.strip() for d in dash.web.settings.operator_dids.split(",") if d.strip())


def login_href_here(request: Request) -> str:
    """The sign-in page, coming back to this one."""
    query = f"?{request.url.query}" if request.url.query else ""
    return "/login?" + urlencode({"next": f"{request.url.path}{query}"})


__all__ = ["Dashboards", "Part", "Period", "Viewer", "gather_parts", "login_href_here", "names_managed", "operator_set"]
