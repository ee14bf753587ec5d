"""The dashboards' money and conversion tables, from ``fm.openmusic.analytics.getRevenue``,
``getConversion`` and ``getOverview`` (see their lexicons for what each figure counts): pure functions,
no I/O, like ``web.dashboard_tables``. Money is minor units; a row with a ``currency`` is shown in it."""

from __future__ import annotations

from typing import Any

from web.dashboard_tables import Column, Table, bucket_title, chart, shown_buckets


def primary(currencies: list[str], preferred: str) -> str:
    """The currency a series is drawn in: ``preferred`` (the server's) when it has amounts, else the first."""
    return preferred if preferred in currencies or not currencies else currencies[0]


def money_row(rows: list[dict[str, Any]], currency: str) -> dict[str, Any]:
    """The ``moneyRow`` of ``currency`` in ``rows`` (zeros when there is none)."""
    return next((r for r in rows if r["currency"] == currency),
                {"currency": currency, "subscriptions": 0, "ads": 0, "tips": 0, "tipsArtist": 0, "tipsSong": 0,
                 "total": 0})


def revenue_tables(_, data: dict[str, Any], preferred: str) -> list[Table]:
    """``getRevenue`` -> revenue by source (per currency), by bucket, tips by song, top tippers,
    purchase-link clicks and payouts."""
    cur = primary(data["currencies"], preferred)
    gran = data["granularity"]
    sources = Table("revenue", _("Revenue by source in this period"),
                    [Column("currency", _("Currency"), "text"), Column("subscriptions", _("Subscriptions"), "money"),
                     Column("ads", _("Ad pool"), "money"), Column("tipsArtist", _("Tips to the artist"), "money"),
                     Column("tipsSong", _("Tips on songs"), "money"), Column("total", _("Total"), "money")],
                    rows=list(data["totals"]["money"]) or [money_row([], cur)], currency=cur)
    series = Table("revenue-series", _("Revenue by %(unit)s (%(currency)s)") % {
        "unit": {"day": _("day"), "week": _("week"), "month": _("month")}.get(gran, gran), "currency": cur},
        [Column("bucket", bucket_title(gran, _), gran),
         Column("subscriptions", _("Subscriptions"), "money"), Column("ads", _("Ad pool"), "money"),
         Column("tips", _("Tips"), "money"), Column("total", _("Total"), "money"),
         Column("purchaseClicks", _("Purchase-link clicks"))],
        rows=[{"bucket": b["bucket"], **money_row(b["money"], cur), "purchaseClicks": b["purchaseClicks"]}
              for b in shown_buckets(data)],
        foot={**money_row(data["totals"]["money"], cur), "bucket": _("Total"),
              "purchaseClicks": data["totals"]["purchaseClicks"]}, currency=cur)
    tips = data["tips"]
    songs = Table("tips-songs", _("Tips by song"),
                  [Column("title", _("Track"), "text"), Column("count", _("Tips")), Column("amount", _("Amount"), "money")],
                  rows=[{**s, "title": s.get("title") or s["track"]} for s in tips["songs"]],
                  foot=None, currency=cur, empty=_("No tips on songs in this period."))
    artist_tips = tips["artist"]
    if artist_tips:
        songs.foot = {"title": _("Tips to the artist (no song)"), "count": sum(t["count"] for t in artist_tips),
                      "amount": money_row_amount(artist_tips, cur), "currency": cur}
    tippers = Table("tippers", _("Top tippers"),
                    [Column("handle", _("Tipper"), "text"), Column("count", _("Tips")),
                     Column("amount", _("Amount"), "money")],
                    rows=list(tips["topTippers"]), currency=cur, empty=_("No tips in this period."))
    clicks = Table("clicks", _("Purchase-link clicks"),
                   [Column("title", _("Track"), "text"), Column("clicks", _("Clicks"))],
                   rows=[{**c, "title": c.get("title") or c["track"]} for c in data["purchaseClicks"]],
                   empty=_("No purchase-link clicks in this period."))
    p = data["payouts"]
    status = {"paid": _("paid"), "pending": _("pending")}
    payouts = Table("payouts", _("Payouts: made in this period and pending now"),
                    [Column("period", _("Period"), "text"), Column("state", _("Status"), "text"),
                     Column("day", _("Date"), "day"), Column("amount", _("Amount"), "money")],
                    rows=[{**x, "state": status.get(x["status"], x["status"]),
                           "day": (x.get("paidAt") or x["createdAt"])[:10]} for x in [*p["pending"], *p["made"]]],
                    currency=cur, empty=_("No payouts in this period, and none pending."))
    return [sources, series, songs, tippers, clicks, payouts]


def money_row_amount(amounts: list[dict[str, Any]], currency: str) -> int:
    """The ``amount`` of ``currency`` among ``amounts`` (``{currency, amount}``), 0 when absent."""
    return sum(a["amount"] for a in amounts if a["currency"] == currency)


def revenue_chart(_, data: dict[str, Any], preferred: str) -> dict[str, Any]:
    """``getRevenue``'s buckets as lines by source, in the primary currency."""
    cur = primary(data["currencies"], preferred)
    rows = [money_row(b["money"], cur) for b in data["buckets"]]
    return chart("revenue-chart", "lines", _("Revenue over time by source (%(currency)s)") % {"currency": cur},
                 "revenue-series", [b["bucket"] for b in shown_buckets(data)], data["granularity"],
                 [(_("Subscriptions"), [r["subscriptions"] for r in rows]), (_("Ad pool"), [r["ads"] for r in rows]),
                  (_("Tips"), [r["tips"] for r in rows])], y_kind="money", currency=cur,
                 x_title=bucket_title(data["granularity"], _))


def conversion_tables(_, data: dict[str, Any]) -> list[Table]:
    """``getConversion`` (for an artist) -> converters by bucket, and those who had streamed the artist."""
    gran = data["granularity"]
    return [Table("conversion", _("Listeners who moved from the free tier to a paid tier"),
                  [Column("bucket", bucket_title(gran, _), gran),
                   Column("converters", _("Moved to a paid tier (everyone)")),
                   Column("streamedArtist", _("Of them, had streamed this artist in the 30 days before"))],
                  rows=[b for b in shown_buckets(data) if b["converters"]], foot={**data["totals"], "bucket": _("Total")},
                  empty=_("Nobody moved to a paid tier in this period."))]


def overview_tables(_, data: dict[str, Any]) -> list[Table]:
    """``getOverview`` -> money across streams (per currency), subscribers, ad pools, payouts,
    rejected records by reason."""
    money = Table("money", _("Revenue across every stream"),
                  [Column("currency", _("Currency"), "text"), Column("creditSold", _("Credit sold"), "money"),
                   Column("creditPurchases", _("Credit purchases")),
                   Column("subscriptionRevenue", _("Subscriptions (net of fees)"), "money"),
                   Column("mrr", _("Monthly recurring revenue"), "money"), Column("tips", _("Tips"), "money"),
                   Column("tipCount", _("Tips settled")), Column("adPool", _("Ad pool"), "money"),
                   Column("platformShare", _("Platform share"), "money"),
                   Column("payoutsMade", _("Payouts made"), "money"),
                   Column("payoutsPending", _("Payouts pending"), "money"),
                   Column("creditRefunded", _("Credit refunded"), "money"),
                   Column("tipsRefunded", _("Tips refunded"), "money")],
                  rows=list(data["money"]), empty=_("No money moved in this period."))
    s = data["subscriptions"]
    subs = Table("subscribers", _("Subscribers"),
                 [Column("what", _("Subscribers"), "text"), Column("count", _("Listeners"))],
                 rows=[{"what": _("Active at the start"), "count": s["activeAtStart"], "key": "activeAtStart"},
                       {"what": _("New"), "count": s["new"], "key": "new"},
                       {"what": _("Churned"), "count": s["churned"], "key": "churned"},
                       {"what": _("Active at the end"), "count": s["active"], "key": "active"}])
    pools = Table("ad-pools", _("Ad pool by month"),
                  [Column("period", _("Month"), "text"), Column("amount", _("Amount"), "money"),
                   Column("state", _("Split among artists"), "text")],
                  rows=[{**a, "state": _("yes") if a["distributed"] else _("not yet")} for a in data["adPool"]],
                  empty=_("No ad revenue entered for these months."))
    p = data["payouts"]
    payouts = Table("payout-counts", _("Payouts"),
                    [Column("state", _("Status"), "text"), Column("count", _("Payouts")),
                     Column("amount", _("Amount"), "money")],
                    rows=[*({**x, "state": _("made in this period")} for x in p["made"]),
                          *({**x, "state": _("pending now")} for x in p["pending"])],
                    empty=_("No payouts made in this period, and none pending."))
    ix = data["indexing"]
    period_counts = {r["reason"]: r["count"] for r in ix["rejectedInPeriod"]}
    rejected = Table("rejected", _("Rejected records by reason"),
                     [Column("reason", _("Reason"), "text"), Column("inPeriod", _("In this period")),
                      Column("count", _("In all"))],
                     rows=[{**r, "inPeriod": period_counts.get(r["reason"], 0)} for r in ix["rejected"]],
                     empty=_("No record was rejected."))
    return [money, subs, pools, payouts, rejected]


def live_figures(data: dict[str, Any], preferred: str) -> dict[str, Any]:
    """The operator page's headline figures, by the ``data-live`` key each element carries (the
    server-sent events send the same dict): money of the primary currency in minor units."""
    cur = primary(data["currencies"], preferred)
    m = next((r for r in data["money"] if r["currency"] == cur), {})
    s, c, ix = data["subscriptions"], data["conversion"], data["indexing"]
    return {"currency": cur, "creditSold": m.get("creditSold", 0), "subscriptionRevenue": m.get("subscriptionRevenue", 0),
            "mrr": m.get("mrr", 0), "tips": m.get("tips", 0), "adPool": m.get("adPool", 0),
            "platformShare": m.get("platformShare", 0), "payoutsMade": m.get("payoutsMade", 0),
            "payoutsPending": m.get("payoutsPending", 0), "active": s["active"], "new": s["new"],
            "churned": s["churned"], "converters": c["converters"], "activeFreeListeners": c["activeFreeListeners"],
            "convertedActive": c["convertedActive"], "conversionRateBps": c["conversionRateBps"],
            "firehoseConnected": ix["firehoseConnected"], "firehoseCurrent": ix["firehoseCurrent"],
            "lagMs": ix.get("lagMs"), "desynchronizedRepos": ix["desynchronizedRepos"],
            "rejected": sum(r["count"] for r in ix["rejected"]),
            "rejectedInPeriod": sum(r["count"] for r in ix["rejectedInPeriod"])}
