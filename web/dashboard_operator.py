"""``GET /dashboard/operator``: the operator's command center, and ``GET /dashboard/operator/events``:
its headline figures as server-sent events.

Only for the DIDs of ``Settings.operator_dids``; anyone else signed in gets a plain 403 page ("This page
is for the operators of this server.", with links to their own dashboards and page; the events: a 403
answer), and the AppView's ``analytics.getOverview`` refuses them too. The page shows
``getOverview`` (money across every stream per currency, subscribers active, new and churned, ad
pools, payouts made and pending, free-to-paid conversion, indexing health) and ``getConversion``
network-wide (converters over time), for the period of the form.

The events (``text/event-stream``): ``retry``, then an ``overview`` event at once and every
``EVENT_INTERVAL_S`` seconds, its ``data`` the JSON of ``dashboard_revenue.live_figures`` (the keys of
the page's ``data-live`` elements; money in minor units) and ``at`` (when, RFC 3339); when the call
fails, a ``problem`` event with ``message``. A stream ends after ``STREAM_S`` seconds (the browser's
``EventSource`` opens a new one after ``retry``) or when the browser goes away. The page works
without the script: its numbers are those of when it was loaded."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse

from web.dashboard_core import AN, Dashboards, Viewer, gather_parts, login_href_here, operator_set
from web.dashboard_revenue import live_figures, overview_tables
from web.dashboard_tables import Column, Table, bucket_title, chart, shown_buckets
from web.oauth.client import SessionEnded, UserSession

#: Seconds between two events of the live figures.
EVENT_INTERVAL_S = 3.0
#: Seconds one event stream lasts; then the browser reconnects (after ``RETRY_MS``).
STREAM_S = 300.0
RETRY_MS = 3000


class OperatorDashboard:
    """The operator's page and its event stream, over the shared ``Dashboards``."""

    def __init__(self, dash: Dashboards) -> None:
        self.dash = dash

    async def _operator(self, request: Request) -> tuple[UserSession | None, str | None, Viewer | None,
                                                         Response | None]:
        """The signed-in operator (and who they are), or the answer for anyone else (sign-in redirect,
        403 page)."""
        dash = self.dash
        user, token, away = await dash.viewer(request)
        if away is not None:
            return None, None, None, away
        assert user is not None
        viewer = await dash.viewer_info(user)
        if not viewer.operator:
            _ = dash._
            return None, None, None, dash.notice(user, viewer, "operators-only", _("Operators only"), [
                _("This page is for the operators of this server.")], status=403, current="")
        return user, token, viewer, None

    async def page(self, request: Request) -> Response:
        dash = self.dash
        user, token, viewer, away = await self._operator(request)
        if away is not None:
            return away
        assert user is not None and viewer is not None
        _ = dash._
        period = dash.period(request)
        context: dict[str, Any] = {"period": period, "start": period.start, "end": period.end, "problems": {},
                                   "errors": period.errors, "tabs": viewer.tabs("operator", _), "events": ""}
        if period.errors:
            return dash.respond(request, "dashboard_operator.html", user, token, status=400, **context)
        try:
            overview, conversion = await gather_parts(
                dash.part(user, AN + "getOverview", **period.params()),
                dash.part(user, AN + "getConversion", **period.params(series=True)))
        except SessionEnded:
            return RedirectResponse(login_href_here(request), status_code=303)
        if overview.status == 400:
            context["errors"] = [overview.problem]
            return dash.respond(request, "dashboard_operator.html", user, token, status=400, **context)
        tables: dict[str, Table] = {}
        charts: list[dict[str, Any]] = []
        if overview.data is not None:
            data = overview.data
            for table in overview_tables(_, data):
                tables[table.id] = table
            figures = live_figures(data, dash.currency)
            context.update(figures=figures, indexing=data["indexing"])
            cur = figures["currency"]
            labels = [("creditSold", _("Credit sold")), ("subscriptionRevenue", _("Subscriptions (net of fees)")),
                      ("tips", _("Tips")), ("adPool", _("Ad pool")), ("platformShare", _("Platform share")),
                      ("payoutsMade", _("Payouts made")), ("payoutsPending", _("Payouts pending"))]
            charts.append(chart("money-chart", "bars", _("Money in this period (%(currency)s)") % {"currency": cur},
                                "money", [label for _k, label in labels], "label",
                                [(cur, [figures[k] for k, _label in labels])], y_kind="money", currency=cur,
                                x_title=_("Source")))
            context["events"] = "/dashboard/operator/events?" + urlencode(period.params())
        else:
            context["problems"]["overview"] = overview.problem
        if conversion.data is not None:
            c = conversion.data
            gran = c["granularity"]
            table = Table("converters", _("Listeners who moved from the free tier to a paid tier"),
                          [Column("bucket", bucket_title(gran, _), gran),
                           Column("converters", _("Moved to a paid tier"))],
                          rows=shown_buckets(c), foot={"bucket": _("Total"), "converters": c["totals"]["converters"]})
            tables[table.id] = table
            charts.append(chart("converters-chart", "lines", _("Free to paid, over time"), "converters",
                                [b["bucket"] for b in table.rows], gran,
                                [(_("Moved to a paid tier"), [b["converters"] for b in c["buckets"]])],
                                x_title=table.columns[0].label))
        else:
            context["problems"]["conversion"] = conversion.problem
        return dash.respond(request, "dashboard_operator.html", user, token, tables=tables, charts=charts,
                            filename="operator", **context)

    async def events(self, request: Request) -> Response:
        """GET /dashboard/operator/events: the live figures (module docstring)."""
        dash = self.dash
        user, _token = await dash.pages.viewer(request)
        _ = dash._
        if user is None:
            return PlainTextResponse(_("Sign in first."), status_code=401, headers={"Cache-Control": "no-store"})
        if user.did not in operator_set(dash):
            return PlainTextResponse(_("Operators only."), status_code=403, headers={"Cache-Control": "no-store"})
        period = dash.period(request)
        if period.errors:
            return PlainTextResponse(" ".join(period.errors), status_code=400, headers={"Cache-Control": "no-store"})

        async def stream():
            yield f"retry: {RETRY_MS}\n\n"
            loop = asyncio.get_running_loop()
            until = loop.time() + STREAM_S
            n = 0
            while loop.time() < until:
                try:
                    got = await dash.part(user, AN + "getOverview", **period.params())
                except SessionEnded:
                    yield event("problem", {"message": _("Your session has ended: sign in again.")}, n)
                    return
                n += 1
                if got.data is not None:
                    figures = live_figures(got.data, dash.currency)
                    yield event("overview", {**figures, "at": datetime.now(UTC).isoformat(timespec="seconds")}, n)
                else:
                    yield event("problem", {"message": got.problem}, n)
                await asyncio.sleep(EVENT_INTERVAL_S)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={
            "Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"})


def event(name: str, data: dict[str, Any], n: int) -> str:
    """One server-sent event: ``event``, ``id`` and one ``data`` line of JSON."""
    return f"event: {name}\nid: {n}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


__all__ = ["EVENT_INTERVAL_S", "OperatorDashboard", "event"]
