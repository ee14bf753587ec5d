"""The analytics dashboards: the artist's, the manager's and the operator's (issue 12).

They are fed only by the AppView's XRPC methods (``fm.openmusic.analytics.*`` and
``fm.openmusic.payment.getEarnings``), called the way any client calls them: the signed-in person's
PDS mints a service-auth JWT for our service DID through their OAuth session, and the request goes
through the AppView's own routes in-process (``WebApp.api``), where the token is verified and the
method decides who may read what (the artist, a manager both sides agreed on, an operator). Public
views (profiles, an artist's tracks) come from the same query handlers the pages use. No SQL here.

Routes (signed in; signed out: to the sign-in page and back):
- ``GET /dashboard`` (``start``, ``end``: ``YYYY-MM-DD``; ``granularity`` ``day|week|month``;
  ``track``: a track's record key for the retention curve, default the top track; ``artist``: a
  handle or DID, default the viewer): streams and listeners over time, the retention curve, countries,
  top tracks and listeners, earnings and revenue, conversion (``web.dashboard_artist``).
- ``GET /dashboard/manager``: the artists the viewer manages (both sides agree), combined and side by
  side, revenue by artist, where payouts go (``web.dashboard_manager``).
- ``GET /dashboard/operator`` (``Settings.operator_dids`` only; anyone else: 403 page) and
  ``GET /dashboard/operator/events``: the command center, and its figures as server-sent events
  (``web.dashboard_operator``).
- ``?format=csv&table=ID`` on any of the pages: that table as ``text/csv`` (an attachment).
- ``GET /static/vendor/uplot/uPlot.iife.min.js`` and ``uPlot.min.css``: the chart library, installed
  from npm into ``web/node_modules`` by ``make setup`` (``web/package.json``) and served from there.

Who sees what: ``/dashboard`` of a viewer who is no artist (their public ``actor.getProfile`` has
neither the role ``artist`` nor a track) is a short page saying what the dashboard is for, with links
to the studio (and to the manager's dashboard for a manager); another artist's figures refused by the
AppView, and the operator's page for anyone else, are plain 403 pages in words (no DIDs, no period
form) with links to the viewer's own dashboards and page. The tabs shown are the viewer's: the artist's
for an artist, the manager's for the role ``manager`` or at least one artist who agrees, the operator's
for an operator (none when only one).

A period that is not one (a date that is not a date, an end before the start, a range longer than
``appview.analytics.MAX_DAYS`` allows for the granularity, checked here before any call) gets the page
with the form and a message saying what is wrong, status 400. The period form carries ``artist`` and
``track``. A part whose method fails or is not on this server says so in its place, in words
(``Dashboards.why``: the method's own English message goes only to the server log); the rest of the
page is shown.

A series by week or month counts only the period's days, also in a first or last bucket that reaches
outside it; the first bucket is labelled from the period's first day rather than the week's Monday or
the month's first (by week from Sunday 2026-11-01: "Week of Nov 1, 2026", holding that one day), in the
tables, the charts and the CSV alike. Tables of more than 10 rows are in a closed ``<details>`` (their
caption and CSV link stay in view); a CSV's totals row is labelled "Total"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Route

from web.dashboard_artist import ArtistDashboard
from web.dashboard_core import Dashboards
from web.dashboard_manager import ManagerDashboard
from web.dashboard_operator import OperatorDashboard

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages


def routes(web: WebApp, pages: Pages) -> list[BaseRoute]:
    """The dashboards' routes and the chart library's files (module docstring)."""
    dash = Dashboards(web, pages)
    operator = OperatorDashboard(dash)
    return [
        Route("/dashboard", ArtistDashboard(dash).page, methods=["GET"]),
        Route("/dashboard/manager", ManagerDashboard(dash).page, methods=["GET"]),
        Route("/dashboard/operator", operator.page, methods=["GET"]),
        Route("/dashboard/operator/events", operator.events, methods=["GET"]),
        Route("/static/vendor/uplot/{name}", dash.vendor, methods=["GET"]),
    ]


__all__ = ["routes"]
