"""The dashboards' tables and charts, built from the answers of the AppView's XRPC methods
(``fm.openmusic.analytics.*``, ``fm.openmusic.payment.getEarnings``): pure functions, no I/O.

A ``Table`` is what a page shows and what its CSV export holds: columns with a ``kind`` that says how
a value is shown (``cell``: in the request's language) and written to CSV (``csv_cell``: plain, the
way a spreadsheet reads it: counts as integers, ms as integers, money in major units with a dot,
shares as percentages). A chart is a dict (``chart``) that ``static/dashboard.js`` draws with uPlot;
every chart also has a table beside it (its ``table`` id), so nothing is shown only as a picture.

Kinds: ``text``, ``int``, ``money`` (minor units of the table's ``currency``), ``ms`` (milliseconds,
shown ``h:mm:ss``), ``bps`` (basis points, shown as a percentage), ``day`` (``YYYY-MM-DD``),
``week`` / ``month`` (a bucket's first day, shown as such; ``shown_buckets``: never before the period's
first day), ``second`` (seconds into a track, shown
``m:ss``), ``country`` (ISO 3166-1 alpha-2, shown with its name)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_decimal, format_percent

from web.i18n import current_locale
from web.money import format_money, minor_digits

#: Countries drawn in the bar chart (the table lists them all).
CHART_COUNTRIES = 15
#: Characters a spreadsheet reads as the start of a formula: text cells starting so get a quote.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Column:
    """One column: ``key`` in each row, ``label`` (translated), ``kind`` (module docstring)."""

    key: str
    label: str
    kind: str = "int"


@dataclass(slots=True)
class Table:
    """A table of a dashboard (``id``: its element id and CSV name). ``rows`` are dicts by column key;
    ``foot`` an optional totals row; ``currency`` for money columns; ``link`` an optional row key
    holding a path the first cell links to."""

    id: str
    caption: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    foot: dict[str, Any] | None = None
    currency: str = "USD"
    link: str | None = None
    empty: str = ""



def bucket_title(granularity: str, _: Callable[[str], str]) -> str:
    """The title of a series' time column for ``granularity`` (day, week or month), translated."""
    return {"week": _("Week of"), "month": _("Month")}.get(granularity, _("Day"))


def shown_buckets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """A series answer's ``buckets``, each shown from its first day in the period: a week or month
    that began before ``data["start"]`` holds only the period's days, so it is labelled from the
    period's first day (by week from Sunday 2026-11-01: "Week of Nov 1, 2026", not "Oct 26")."""
    start = str(data.get("start") or "")
    return [{**b, "bucket": max(str(b["bucket"]), start)} for b in data["buckets"]]


def cell(value: Any, kind: str, currency: str = "USD") -> str:
    """``value`` of ``kind`` as shown on the page, in the current request's language."""
    if value is None or value == "":
        return "–"
    locale = current_locale.get()
    if kind == "int":
        return format_decimal(value, locale=locale)
    if kind == "money":
        return format_money(int(value), currency)
    if kind == "ms":
        seconds = max(0, int(value)) // 1000
        hours, rest = divmod(seconds, 3600)
        return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
    if kind == "bps":
        return format_percent(Decimal(int(value)) / 10000, format="#,##0.#%", locale=locale)
    if kind in ("day", "week", "month"):
        try:
            when = date.fromisoformat(str(value))
        except ValueError:
            return str(value)
        return format_date(when, format="MMM y" if kind == "month" else "medium", locale=locale)
    if kind == "second":
        return f"{int(value) // 60}:{int(value) % 60:02d}"
    if kind == "country":
        name = Locale.parse(locale).territories.get(str(value).upper())
        return f"{name} ({value})" if name else str(value)
    return str(value)


def csv_cell(value: Any, kind: str, currency: str = "USD") -> str | int:
    """``value`` of ``kind`` as a CSV field: numbers plain, money in major units, text guarded
    against being read as a formula."""
    if value is None:
        return ""
    if kind in ("int", "ms", "second"):
        return int(value)
    if kind == "money":
        return str(Decimal(int(value)).scaleb(-minor_digits(currency)))
    if kind == "bps":
        return str(Decimal(int(value)).scaleb(-2))
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_text(table: Table) -> str:
    """The whole ``table`` (and its totals row) as CSV, a header line first (RFC 4180, CRLF)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([csv_header(c, table.currency) for c in table.columns])
    for row in [*table.rows, *([table.foot] if table.foot else [])]:
        currency = row.get("currency") or table.currency
        writer.writerow([csv_cell(row.get(c.key), c.kind, currency) for c in table.columns])
    return out.getvalue()


def csv_header(column: Column, currency: str) -> str:
    """A column's CSV header: its label, with the unit where the value's form needs one."""
    if column.kind == "money":
        return f"{column.label} ({currency})"
    if column.kind == "ms":
        return f"{column.label} (ms)"
    if column.kind == "bps":
        return f"{column.label} (%)"
    if column.kind == "second":
        return f"{column.label} (s)"
    return column.label


def chart(chart_id: str, kind: str, title: str, table: str, x: list[Any], x_kind: str,
          series: list[tuple[str, list[Any]]], y_kind: str = "int", currency: str = "USD",
          points: set[int] | None = None, x_title: str = "") -> dict[str, Any]:
    """What ``dashboard.js`` draws: ``kind`` ``lines`` or ``bars``; ``x`` values of ``x_kind``
    (``day``/``week``/``month``: ISO days; ``second``; ``label``: category names); ``series``
    (label, values, None for a gap) on a ``y_kind`` axis (``int``, ``bps``, ``money``, ``ms``);
    ``points``: indexes of series drawn as points only (no line); ``x_title``: the x values' name
    (the legend's first entry)."""
    return {"id": chart_id, "kind": kind, "title": title, "table": table, "x": x, "xKind": x_kind, "xTitle": x_title,
            "series": [{"label": label, "values": values, "points": i in (points or set())}
                       for i, (label, values) in enumerate(series)],
            "yKind": y_kind, "currency": currency}


# -- builders: one XRPC answer -> tables and charts ------------------------------------------------

def stream_columns(_, granularity: str | None) -> list[Column]:
    """Columns of a streams series (``getStreams``' buckets); without ``granularity``: no bucket."""
    cols = [Column("bucket", bucket_title(granularity or "", _),
                   granularity or "day")] if granularity else []
    return [*cols, Column("paidStreams", _("Paid streams")), Column("freeStreams", _("Free streams")),
            Column("shortPlays", _("Plays not streams")), Column("plays", _("Plays")),
            Column("uniqueListeners", _("Listeners")), Column("listenedMs", _("Time heard"), "ms")]


def streams(_, data: dict[str, Any]) -> tuple[Table, dict[str, Any]]:
    """``getStreams`` -> the series table (totals as its foot) and its line chart."""
    gran = data["granularity"]
    b = shown_buckets(data)
    table = Table("streams", _("Streams and listeners by %(unit)s, %(start)s to %(end)s") % {
        "unit": {"day": _("day"), "week": _("week"), "month": _("month")}.get(gran, gran),
        "start": cell(data["start"], "day"), "end": cell(data["end"], "day")},
        stream_columns(_, gran), rows=b, foot={"bucket": _("Total"), **data["totals"]})
    drawn = chart("streams-chart", "lines", _("Streams and listeners over time"), "streams",
                  [r["bucket"] for r in b], gran,
                  [(_("Paid streams"), [r["paidStreams"] for r in b]), (_("Free streams"), [r["freeStreams"] for r in b]),
                   (_("Plays not streams"), [r["shortPlays"] for r in b]),
                   (_("Listeners"), [r["uniqueListeners"] for r in b])], x_title=table.columns[0].label)
    return table, drawn


def retention(_, data: dict[str, Any], title: str) -> tuple[list[Table], dict[str, Any]]:
    """``getRetention`` -> the per-second table, skip points, replayed passages, and the curve."""
    plays = data["plays"]
    share = data["shareBps"]
    replayed_bps = [(r * 20000 + plays) // (2 * plays) if plays else 0 for r in data["replayed"]]
    skips = {s["second"]: s for s in data["skipPoints"]}
    seconds = Table("retention", _("Second by second: %(title)s") % {"title": title},
                    [Column("second", _("Second"), "second"), Column("heard", _("Plays that heard it")),
                     Column("shareBps", _("Share of plays"), "bps"), Column("replayed", _("Plays that replayed it")),
                     Column("stops", _("Stopped or skipped here"))],
                    rows=[{"second": i, "heard": h, "shareBps": share[i], "replayed": data["replayed"][i],
                           "stops": skips[i]["stops"] if i in skips else None} for i, h in enumerate(data["heard"])],
                    empty=_("No play of this track lists the seconds heard yet."))
    if not plays:
        seconds.rows = []
    skip_table = Table("skips", _("Skip points: where listening stopped most often"),
                       [Column("second", _("Second"), "second"), Column("stops", _("Plays that stopped here")),
                        Column("shareBps", _("Share of plays"), "bps")],
                       rows=list(data["skipPoints"]), empty=_("No skip points."))
    passages = Table("replays", _("Passages heard again (the listener sought back)"),
                     [Column("start", _("From"), "second"), Column("last", _("Through"), "second"),
                      Column("peak", _("Plays that replayed it"))],
                     rows=[{**p, "last": p["end"] - 1} for p in data["replayedPassages"]],
                     empty=_("No passage was replayed."))
    drawn = chart("retention-chart", "lines", _("Retention: share of plays that heard each second"), "retention",
                  list(range(len(share))), "second",
                  [(_("Heard"), share), (_("Replayed"), replayed_bps),
                   (_("Skip points"), [skips[i]["shareBps"] if i in skips else None for i in range(len(share))])],
                  y_kind="bps", points={2}, x_title=_("Second"))
    return [seconds, skip_table, passages], drawn


def countries(_, data: dict[str, Any]) -> tuple[Table, dict[str, Any]]:
    """``getCountries`` -> the country table (plays without a country as its foot) and a bar chart."""
    cols = [Column("country", _("Country"), "country"), Column("streams", _("Streams")),
            Column("listeners", _("Listeners")), Column("plays", _("Plays"))]
    none = data["withoutCountry"]
    table = Table("countries", _("Streams by country (from the plays that give one)"), cols,
                  rows=list(data["countries"]),
                  foot={"country": _("No country given"), **none} if none["plays"] else None,
                  empty=_("No play in this period gives a country."))
    top = data["countries"][:CHART_COUNTRIES]
    drawn = chart("countries-chart", "bars", _("Streams by country"), "countries",
                  [cell(r["country"], "country") for r in top], "label",
                  [(_("Streams"), [r["streams"] for r in top])], x_title=_("Country"))
    return table, drawn


def top_tracks(_, data: dict[str, Any], link) -> Table:
    """``getTopTracks`` -> its table (``link(uri)``: the track's dashboard path)."""
    return Table("top-tracks", _("Top tracks"),
                 [Column("title", _("Track"), "text"), Column("paidStreams", _("Paid streams")),
                  Column("freeStreams", _("Free streams")), Column("plays", _("Plays")),
                  Column("uniqueListeners", _("Listeners")), Column("listenedMs", _("Time heard"), "ms")],
                 rows=[{**t, "href": link(t["uri"])} for t in data["tracks"]], link="href",
                 empty=_("No plays in this period."))


def top_listeners(_, data: dict[str, Any]) -> Table:
    """``getTopListeners`` -> its table (handles only, as the query gives them)."""
    return Table("top-listeners", _("Top listeners"),
                 [Column("handle", _("Listener"), "text"), Column("streams", _("Streams")),
                  Column("plays", _("Plays")), Column("listenedMs", _("Time heard"), "ms")],
                 rows=list(data["listeners"]), empty=_("No listeners in this period."))


def earnings(_, data: dict[str, Any]) -> Table:
    """``payment.getEarnings`` -> earnings by source (all periods), with the balance."""
    by = data["bySource"]
    rows = [{"source": _("Subscriptions"), "amount": by.get("subscriptions", 0)},
            {"source": _("Ad pool"), "amount": by.get("ads", 0)},
            {"source": _("Tips"), "amount": by.get("tips", 0)}]
    return Table("earnings", _("Earnings by source"), [Column("source", _("Source"), "text"),
                                                          Column("amount", _("Earned"), "money")],
                 rows=rows, foot={"source": _("Total"), "amount": data["total"]}, currency=data["currency"])
