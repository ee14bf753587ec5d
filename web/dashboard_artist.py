"""``GET /dashboard``: an artist's dashboard (``web.dashboard`` says how it is fed and what it takes).

Parts, each from one method called as the viewer: streams and listeners over time
(``analytics.getStreams``), the retention curve of one track with its skip points and replayed passages
(``getRetention``; ``?track=`` a record key, default the top track of the period, else the newest
track), countries (``getCountries``), top tracks and listeners (``getTopTracks``, ``getTopListeners``),
earnings by source (``payment.getEarnings``), revenue (``analytics.getRevenue``: tips by source, top
tippers, purchase-link clicks, payouts) and free-to-paid conversion (``analytics.getConversion``).
The artist's track list for the track chooser is the public ``catalog.getArtistTracks``.

A viewer who is no artist (their public profile has neither the role ``artist`` nor a track) opening
their own dashboard gets a short page saying what it is for, with a link to the studio (and to the
manager's dashboard for a manager) instead of empty figures. Another artist's figures are shown only
when the AppView lets the viewer read them (a manager both sides agree on, an operator); otherwise a
plain 403 page "Not your artist". The period form carries ``artist`` and the chosen ``track``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from core.lexicons import TRACK
from web import dashboard_tables as dt
from web.dashboard_core import AN, PAY, RKEY, Dashboards, Part, Viewer, gather_parts, login_href_here
from web.dashboard_revenue import conversion_tables, revenue_chart, revenue_tables
from web.oauth.client import SessionEnded

if TYPE_CHECKING:
    from web.dashboard_tables import Table

#: Rows of the top tracks and top listeners tables.
TOP = 10
#: Tracks offered in the retention curve's chooser.
CHOOSER = 100


class ArtistDashboard:
    """``GET /dashboard`` over the shared ``Dashboards``."""

    def __init__(self, dash: Dashboards) -> None:
        self.dash = dash

    async def page(self, request: Request) -> Response:
        dash = self.dash
        user, token, away = await dash.viewer(request)
        if away is not None:
            return away
        assert user is not None
        _ = dash._
        period = dash.period(request)
        viewer = await dash.viewer_info(user)
        actor = request.query_params.get("artist", "").strip()[:256] or user.did
        profile = viewer.profile if actor == user.did else await dash.public("fm.openmusic.actor.getProfile",
                                                                              actor=actor)
        if profile is None and actor != user.did:
            return dash.web.error_page(404, _("No such artist"), _("No artist %(who)s is known here.") % {
                "who": actor}, user=user)
        did = profile["did"] if profile else user.did
        own = did == user.did
        if own and not viewer.artist:
            return self.listener(user, viewer)
        artist = {"did": did, "handle": (profile or {}).get("handle") or user.handle or did,
                  "name": (profile or {}).get("displayName") or (profile or {}).get("handle") or user.handle or did,
                  "own": own, "key": "" if own else actor}
        asked = request.query_params.get("track", "").strip()
        hidden = [(k, v) for k, v in (("artist", artist["key"]), ("track", asked if RKEY.match(asked) else "")) if v]
        context: dict[str, Any] = {"artist": artist, "period": period, "start": period.start, "end": period.end,
                                   "tabs": viewer.tabs("artist", _), "hidden": hidden, "problems": {},
                                   "errors": period.errors}
        if period.errors:
            return dash.respond(request, "dashboard.html", user, token, status=400, **context)
        try:
            return await self._build(request, user, token, viewer, did, artist, period, context)
        except SessionEnded:
            return RedirectResponse(login_href_here(request), status_code=303)

    def listener(self, user, viewer: Viewer) -> Response:
        """The viewer's own dashboard when they are no artist: what it is for, and where to go."""
        _ = self.dash._
        links = [("/studio", _("Publish a track in the studio"))]
        if viewer.manager:
            links.append(("/dashboard/manager", _("The artists you manage")))
        if viewer.operator:
            links.append(("/dashboard/operator", _("The operator's dashboard")))
        links.append(("/me", _("Back to your page")))
        return self.dash.notice(user, viewer, "listener", _("Your artist dashboard"), [
            _("This dashboard shows an artist's figures: streams, listeners, countries and money."),
            _("You have no tracks here yet. Once you publish one, its figures appear here.")], links=links)

    async def _build(self, request, user, token, viewer, did, artist, period, context) -> Response:
        dash = self.dash
        _ = dash._
        who = {"artist": did}
        streams, tops, countries, listeners, earnings, revenue, conversion = await gather_parts(
            dash.part(user, AN + "getStreams", **who, **period.params(series=True)),
            dash.part(user, AN + "getTopTracks", **who, **period.params(), limit=TOP),
            dash.part(user, AN + "getCountries", **who, **period.params()),
            dash.part(user, AN + "getTopListeners", **who, **period.params(), limit=TOP),
            dash.part(user, PAY + "getEarnings", limit=1, **({} if artist["own"] else who)),
            dash.part(user, AN + "getRevenue", **who, **period.params(series=True), limit=TOP),
            dash.part(user, AN + "getConversion", **who, **period.params(series=True)))
        if streams.status == 403 and not artist["own"]:  # the AppView refuses this viewer this artist
            return dash.notice(user, viewer, "not-your-artist", _("Not your artist"), [
                _("You may see another artist's figures only when you manage them and their profile names you "
                  "as their manager, or when you are an operator of this server.")], status=403, current="")
        if streams.status in (400, 403):  # the period or the artist, as the AppView sees it: the whole page
            status = streams.status
            context["errors"] = [streams.problem]
            return dash.respond(request, "dashboard.html", user, token, status=status, **context)
        tables: dict[str, Table] = {}
        charts: list[dict[str, Any]] = []
        problems: dict[str, str] = context["problems"]

        def keep(part: Part, name: str) -> dict[str, Any] | None:
            if part.data is None:
                problems[name] = part.problem or _("Not available.")
            return part.data

        base = [("artist", artist["key"]), *period.params(series=True).items()]
        if data := keep(streams, "streams"):
            table, drawn = dt.streams(_, data)
            tables[table.id] = table
            charts.append(drawn)
            context["totals"] = data["totals"]
        catalog = await dash.public("fm.openmusic.catalog.getArtistTracks", actor=did, limit=CHOOSER)
        choices = [(t["uri"].rsplit("/", 1)[-1], t.get("record", {}).get("title") or t.get("title") or t["uri"])
                   for t in (catalog or {}).get("tracks", [])]
        titles = dict(choices)
        if data := keep(tops, "top-tracks"):
            def link(uri: str) -> str:
                return "/dashboard?" + urlencode([(k, v) for k, v in base if v] + [("track", uri.rsplit("/", 1)[-1])])
            tables["top-tracks"] = dt.top_tracks(_, data, link)
            for t in data["tracks"]:
                titles.setdefault(t["uri"].rsplit("/", 1)[-1], t["title"])
        asked = request.query_params.get("track", "").strip()
        rkey = asked if asked and RKEY.match(asked) else None
        if asked and rkey is None:
            problems["retention"] = _("“%(track)s” names no track.") % {"track": asked[:60]}
        elif rkey is None:
            top = (tops.data or {}).get("tracks") or []
            rkey = top[0]["uri"].rsplit("/", 1)[-1] if top else (choices[0][0] if choices else None)
        if rkey:
            got = await dash.part(user, AN + "getRetention", track=f"at://{did}/{TRACK}/{rkey}")
            if data := keep(got, "retention"):
                for table in (drawn := dt.retention(_, data, titles.get(rkey, rkey)))[0]:
                    tables[table.id] = table
                charts.append(drawn[1])
        elif "retention" not in problems:
            problems["retention"] = _("No track yet: publish one to see how it is heard.")
        if rkey and rkey not in titles:
            choices.append((rkey, rkey))
        if data := keep(countries, "countries"):
            table, drawn = dt.countries(_, data)
            tables[table.id] = table
            if data["countries"]:
                charts.append(drawn)
        if data := keep(listeners, "top-listeners"):
            tables["top-listeners"] = dt.top_listeners(_, data)
        if data := keep(earnings, "earnings"):
            tables["earnings"] = dt.earnings(_, data)
            context["balance"] = {"amount": data["balance"], "currency": data["currency"]}
        if data := keep(revenue, "revenue"):
            for table in revenue_tables(_, data, dash.currency):
                tables[table.id] = table
            charts.append(revenue_chart(_, data, dash.currency))
            context["revenue"] = data
        if data := keep(conversion, "conversion"):
            for table in conversion_tables(_, data):
                tables[table.id] = table
            context["conversion"] = data
        context.update(choices=choices, track=rkey, base=[(k, v) for k, v in base if v])
        return dash.respond(request, "dashboard.html", user, token, tables=tables, charts=charts,
                            filename="artist", **context)

