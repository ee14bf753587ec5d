"""``GET /dashboard/manager``: the artists the viewer manages, combined and side by side.

Which artists: those the viewer's ``fm.openmusic.actor.profile`` lists in ``manages`` whose own
profile lists the viewer in ``managers`` (both sides agree: the rule of ``payments.managers``), read
from the public ``actor.getProfile`` views. No XRPC query lists a manager's artists on its own
(``payment.getEarnings`` gives ``managed`` only with payments on); the analytics methods themselves
refuse (403) an artist who does not agree, and such an artist is shown as refused.

For each artist (at most ``MAX_ARTISTS``), called as the viewer: ``analytics.getStreams`` (the
period's series) and ``analytics.getRevenue`` (money by source, payouts); and once,
``payment.getEarnings`` for the viewer (``managed``: balances and whose account each artist's payouts
go to; without payments, the artist's public ``payoutTo``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from web.dashboard_core import AN, PAY, Dashboards, Part, gather_parts, login_href_here
from web.dashboard_revenue import money_row, money_row_amount, primary
from web.dashboard_tables import Column, Table, bucket_title, cell, chart, shown_buckets, stream_columns
from web.oauth.client import SessionEnded

#: Artists shown (each costs a few calls); more are named in a note.
MAX_ARTISTS = 12


class ManagerDashboard:
    """``GET /dashboard/manager`` over the shared ``Dashboards``."""

    def __init__(self, dash: Dashboards) -> None:
        self.dash = dash

    async def page(self, request: Request) -> Response:
        dash = self.dash
        user, token, away = await dash.viewer(request)
        if away is not None:
            return away
        assert user is not None
        period = dash.period(request)
        viewer = await dash.viewer_info(user)
        context: dict[str, Any] = {"period": period, "start": period.start, "end": period.end, "problems": {},
                                   "errors": period.errors, "tabs": viewer.tabs("manager", dash._)}
        if period.errors:
            return dash.respond(request, "dashboard_manager.html", user, token, status=400, **context)
        try:
            return await self._build(request, user, token, period, context, viewer.profile)
        except SessionEnded:
            return RedirectResponse(login_href_here(request), status_code=303)

    async def _build(self, request, user, token, period, context, profile) -> Response:
        dash = self.dash
        _ = dash._
        agreed, one_sided = await dash.managed(user.did, profile)
        shown = agreed[:MAX_ARTISTS]
        context.update(artists=shown, one_sided=one_sided, more=len(agreed) - len(shown))
        if not shown:
            return dash.respond(request, "dashboard_manager.html", user, token, filename="manager", **context)
        earnings, *per_artist = await gather_parts(
            dash.part(user, PAY + "getEarnings", limit=1),
            *(dash.part(user, AN + "getStreams", artist=a["did"], **period.params(series=True)) for a in shown),
            *(dash.part(user, AN + "getRevenue", artist=a["did"], **period.params(series=True)) for a in shown))
        streams, revenue = per_artist[:len(shown)], per_artist[len(shown):]
        first_bad = next((p for p in streams if p.status == 400), None)
        if first_bad is not None:  # the period, as the AppView sees it (too long for the granularity)
            context["errors"] = [first_bad.problem]
            return dash.respond(request, "dashboard_manager.html", user, token, status=400, **context)
        managed = {m["artist"]: m for m in (earnings.data or {}).get("managed") or []}
        if earnings.data is None:
            context["problems"]["earnings"] = earnings.problem
        context["combined_balance"] = (earnings.data or {}).get("combinedBalance")
        currencies = sorted({c for r in revenue if r.data for c in r.data["currencies"]})
        cur = primary(currencies, dash.currency)
        tables, charts = self.tables(shown, streams, revenue, managed, period, cur, user.did)
        return dash.respond(request, "dashboard_manager.html", user, token, tables=tables, charts=charts,
                            filename="manager", currency=cur, **context)

    def tables(self, shown, streams: list[Part], revenue: list[Part], managed: dict[str, dict[str, Any]],
               period, cur: str, me: str) -> tuple[dict[str, Table], list[dict[str, Any]]]:
        """The side-by-side, revenue-by-artist and payouts tables, the streams-by-artist series; charts."""
        _ = self.dash._
        gran = period.granularity
        names = [a.get("displayName") or a["handle"] for a in shown]
        link = [f"/dashboard?{urlencode({'artist': a['handle'] if a['handle'] != 'handle.invalid' else a['did'], **period.params(series=True)})}"
                for a in shown]
        refused = _("refused: %(why)s")
        side, money, payouts = [], [], []
        totals = {k: 0 for k in ("paidStreams", "freeStreams", "shortPlays", "plays", "uniqueListeners", "listenedMs")}
        sums = {k: 0 for k in ("subscriptions", "ads", "tips", "total")}
        for i, artist in enumerate(shown):
            s, r = streams[i], revenue[i]
            row: dict[str, Any] = {"artist": names[i], "href": link[i]}
            if s.data:
                row.update(s.data["totals"])
                for k in totals:
                    totals[k] += s.data["totals"][k]
            else:
                row["artist"] = f"{names[i]} ({refused % {'why': s.problem}})"
            side.append(row)
            m = money_row(r.data["totals"]["money"], cur) if r.data else None
            money.append({"artist": names[i], "href": link[i], **(m or {}), "currency": cur})
            if m:
                for k in sums:
                    sums[k] += m[k]
            info = managed.get(artist["did"])
            to_me = info["payoutToManager"] if info else ((artist.get("record") or {}).get("payoutTo") == me)
            pending = money_row_amount(r.data["payouts"]["pendingTotal"], cur) if r.data else None
            made = money_row_amount(r.data["payouts"]["madeTotal"], cur) if r.data else None
            balance = info["balance"] if info else (money_row_amount(r.data["balance"], cur) if r.data else None)
            payouts.append({"artist": names[i], "href": link[i], "to": _("you") if to_me else _("the artist"),
                            "balance": balance, "pending": pending, "made": made, "currency": cur})
        cols = stream_columns(_, None)
        side_table = Table("artists", _("Each artist side by side, %(start)s to %(end)s") % {
            "start": cell(period.start, "day"), "end": cell(period.end, "day")},
            [Column("artist", _("Artist"), "text"), *cols], rows=side, link="href",
            foot={"artist": _("All together"), **totals})
        money_table = Table("revenue-by-artist", _("Revenue by artist in this period (%(currency)s)") % {"currency": cur},
                            [Column("artist", _("Artist"), "text"), Column("subscriptions", _("Subscriptions"), "money"),
                             Column("ads", _("Ad pool"), "money"), Column("tips", _("Tips"), "money"),
                             Column("total", _("Total"), "money")],
                            rows=money, link="href", foot={"artist": _("All together"), **sums}, currency=cur)
        payout_table = Table("payouts-to", _("Where payouts go"),
                             [Column("artist", _("Artist"), "text"), Column("to", _("Paid out to"), "text"),
                              Column("balance", _("Balance now"), "money"),
                              Column("pending", _("Payouts pending"), "money"),
                              Column("made", _("Paid out in this period"), "money")],
                             rows=payouts, link="href", currency=cur)
        series = next((shown_buckets(p.data) for p in streams if p.data), [])
        by_artist = Table("streams-by-artist", _("Streams (paid and free) by artist over time"),
                          [Column("bucket", bucket_title(gran, _), gran),
                           *(Column(f"a{i}", names[i]) for i in range(len(shown)))],
                          rows=[{"bucket": b["bucket"], **{
                              f"a{i}": (p.data["buckets"][j]["paidStreams"] + p.data["buckets"][j]["freeStreams"])
                              for i, p in enumerate(streams) if p.data}} for j, b in enumerate(series)])
        charts = [
            chart("artists-chart", "lines", _("Streams by artist over time"), "streams-by-artist",
                  [b["bucket"] for b in series], gran,
                  [(names[i], [r.get(f"a{i}") for r in by_artist.rows]) for i in range(len(shown)) if streams[i].data],
                  x_title=by_artist.columns[0].label),
            chart("revenue-by-artist-chart", "bars", _("Revenue by artist (%(currency)s)") % {"currency": cur},
                  "revenue-by-artist", names, "label", [(_("Total"), [m.get("total") for m in money])],
                  y_kind="money", currency=cur, x_title=_("Artist"))]
        tables = {t.id: t for t in (side_table, by_artist, money_table, payout_table)}
        return tables, charts
