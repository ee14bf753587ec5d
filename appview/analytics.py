"""The analytics queries, ``fm.openmusic.analytics.*``: streams and listeners over time, the
retention curve second by second, countries, top tracks and top listeners, for an artist or a
track. They read the rollups the indexer keeps (``indexer.rollups``), never the plays themselves;
the rollups count the listeners in standing only (``indexer.standing``: a suspended or taken-down
listener's plays are taken out when that happens, and come back when it ends).
The money side (revenue, free-to-paid conversion, the operator's overview) is computed in
``appview.analytics_money``; its params and callers are checked here, by the same rules.

Each needs a service-auth JWT whose ``lxm`` is the method (``payments.auth``, like
``payment.getEarnings``), and answers only the artist (the DID of the repo that holds the tracks),
a manager both sides agreed on (the same rule as ``payments.managers.manages``) or an operator
(``Settings.operator_dids``); anyone else gets 403 ``Forbidden``. Periods are UTC days,
``YYYY-MM-DD``, both ends included.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from appview import analytics_money as money
from appview.views import ViewContext, resolve_actor
from appview.xrpc import XrpcError, head_response, invalid, not_found, parse_params
from core.identity import INVALID_HANDLE
from core.lexicons import PROFILE, TRACK, is_track_uri
from payments.auth import AuthError

if TYPE_CHECKING:
    from appview.deps import AppViewDeps

log = logging.getLogger("openmusic.appview")
NS = "fm.openmusic.analytics."
#: Longest period per granularity, days (both ends included); other queries take ``MAX_PERIOD_DAYS``.
MAX_DAYS = {"day": 366, "week": 731, "month": 3660}
MAX_PERIOD_DAYS = 3660
#: The period when none is given: the 30 days ending today (UTC).
DEFAULT_DAYS = 30
#: Skip points and replayed passages listed by getRetention.
TOP_SECONDS = 10
#: A row's bucket in SQL (a month's as YYYY-MM: '-01' is added after grouping, not on every row).
_BUCKET_SQL = {"day": "{t}.day", "week": "date({t}.day, 'weekday 0', '-6 days')", "month": "substr({t}.day, 1, 7)"}
Handler = Callable[[ViewContext, frozenset[str], str, dict[str, Any]], Awaitable[dict[str, Any]]]


def operators(operator_dids: str) -> frozenset[str]:
    """``Settings.operator_dids`` (comma-separated) -> the set of operator DIDs."""
    return frozenset(d.strip() for d in operator_dids.split(",") if d.strip())


def parse_day(value: str, name: str) -> date:
    """``YYYY-MM-DD`` -> a date. Raises ``XrpcError`` (400 ``InvalidRequest``) naming ``name``."""
    text = value if isinstance(value, str) else ""
    if len(text) == 10 and text[4] == "-" and text[7] == "-" and text.replace("-", "").isascii() \
            and text.replace("-", "").isdigit():
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    shown = repr(value[:40]) if isinstance(value, str) else repr(value)
    raise invalid(f"{name} must be a date, YYYY-MM-DD (UTC), got {shown}")


def period(p: dict[str, Any], max_days: int, why: str, today: date | None = None) -> tuple[date, date]:
    """The period (first day, last day) of params ``start``/``end``: by default the ``DEFAULT_DAYS``
    ending ``today`` (UTC). Raises 400 ``InvalidRequest`` for a date that is not one, an end before
    the start, or more than ``max_days`` days (``why`` says what limits it)."""
    end = parse_day(p["end"], "end") if p.get("end") is not None else (today or datetime.now(UTC).date())
    start = parse_day(p["start"], "start") if p.get("start") is not None else end - timedelta(days=DEFAULT_DAYS - 1)
    if end < start:
        raise invalid(f"end ({end.isoformat()}) is before start ({start.isoformat()})")
    days = (end - start).days + 1
    if days > max_days:
        raise invalid(f"the period holds {days} days; {why} covers at most {max_days}")
    return start, end


def buckets(start: date, end: date, granularity: str) -> list[str]:
    """The first day (``YYYY-MM-DD``) of every ``granularity`` bucket that meets [start, end], in
    order: the day, the Monday of its ISO week, or the first of its month."""
    out: list[str] = []
    day = start
    while day <= end:
        if granularity == "week":
            first = day - timedelta(days=day.weekday())
        elif granularity == "month":
            first = day.replace(day=1)
        else:
            first = day
        if not out or out[-1] != first.isoformat():
            out.append(first.isoformat())
        day += timedelta(days=1)
    return out


async def _rows(ctx: ViewContext, sql: str, args: list[Any] | tuple[Any, ...]) -> list[Any]:
    """Every row of one statement on the readers."""
    return list(await (await ctx.db.execute(sql, args)).fetchall())


def bps(part: int, whole: int) -> int:
    """``part / whole`` in basis points, rounded half up (0 when ``whole`` is 0)."""
    return (part * 20000 + whole) // (2 * whole) if whole else 0


@dataclass(frozen=True, slots=True)
class Subject:
    """What is asked about: ``artist`` (DID) and, for one track, ``track`` (AT-URI) and its
    ``duration_ms``."""

    artist: str
    track: str | None = None
    duration_ms: int | None = None

    def scope(self, table: str, alias: str) -> tuple[str, list[str]]:
        """``FROM ... WHERE ...`` over ``table`` (a rollup keyed by track) for this subject, and its
        arguments: the track's rows, or those of every track the artist holds that is indexed."""
        if self.track:
            return f"FROM {table} {alias} WHERE {alias}.track_uri = ?", [self.track]
        return f"FROM track t JOIN {table} {alias} ON {alias}.track_uri = t.uri WHERE t.did = ?", [self.artist]

    def view(self) -> dict[str, str]:
        """``{artist, track?}`` of the output."""
        return {"artist": self.artist, **({"track": self.track} if self.track else {})}


def _which(p: dict[str, Any], artist: bool, track: bool) -> str:
    """``artist`` or ``track``: the one of the params allowed that is given. Raises 400
    ``InvalidRequest`` when neither or both are."""
    allowed = [n for n, ok in (("artist", artist), ("track", track)) if ok]
    given = [n for n in allowed if p.get(n)]
    if len(given) != 1:
        raise invalid(f"give {' or '.join(allowed)}" + (", not both" if len(given) > 1 else ""))
    return given[0]


async def subject(ctx: ViewContext, p: dict[str, Any], artist: bool = True, track: bool = True) -> Subject:
    """The ``artist`` or ``track`` param -> ``Subject``. Raises 400: ``InvalidRequest`` (neither or
    both), ``ActorNotFound`` (no active account), ``TrackNotFound`` (not an indexed track)."""
    if _which(p, artist, track) == "artist":
        return Subject(await resolve_actor(ctx, p["artist"]))
    uri = p["track"]
    if not is_track_uri(uri):
        raise invalid(f"{uri[:300]} is not a {TRACK} AT-URI")
    cur = await ctx.db.execute("SELECT did, duration_ms FROM track WHERE uri = ?", (uri,))
    row = await cur.fetchone()
    if row is None:
        raise not_found("TrackNotFound", f"track {uri[:300]} is not indexed")
    return Subject(row[0], uri, row[1])


async def _profile(ctx: ViewContext, did: str) -> dict[str, Any]:
    cur = await ctx.db.execute("SELECT r.json FROM record r LEFT JOIN actor a ON a.did = r.did WHERE r.uri = ? "
                               "AND (a.active IS NULL OR a.active = 1)", (f"at://{did}/{PROFILE}/self",))
    row = await cur.fetchone()
    return json.loads(row[0]) if row else {}


async def authorize(ctx: ViewContext, ops: frozenset[str], caller: str, artist: str) -> str:
    """Who ``caller`` is to ``artist``: ``artist``, ``operator`` or ``manager`` (the artist's profile
    lists the caller in ``managers`` and the caller's lists the artist in ``manages``, both indexed
    and of active accounts). Raises 403 ``Forbidden`` for anyone else."""
    if caller == artist:
        return "artist"
    if caller in ops:
        return "operator"
    if caller in ((await _profile(ctx, artist)).get("managers") or []) and \
            artist in ((await _profile(ctx, caller)).get("manages") or []):
        return "manager"
    raise XrpcError(403, "Forbidden", f"{caller} may not read the analytics of {artist}: only the artist, a manager "
                                      "both sides named (the artist's profile lists it in managers, its own lists the "
                                      "artist in manages) or an operator of this AppView may")


async def _prepare(ctx: ViewContext, ops: frozenset[str], caller: str, p: dict[str, Any], max_days: int, why: str,
                   artist: bool = True, track: bool = True) -> tuple[Subject, str, str]:
    """Params checked in order (subject given, period, subject known, caller allowed) -> (subject,
    first day, last day)."""
    _which(p, artist, track)
    start, end = period(p, max_days, why)
    s = await subject(ctx, p, artist, track)
    await authorize(ctx, ops, caller, s.artist)
    return s, start.isoformat(), end.isoformat()


async def get_streams(ctx: ViewContext, ops: frozenset[str], caller: str, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.analytics.getStreams: per bucket (day, week or month) and in total: plays, paid
    and free streams, short plays (plays - streams), unique listeners (exact) and listenedMs (ms)."""
    gran = p.get("granularity") or "day"
    if gran not in MAX_DAYS:
        raise invalid("granularity must be day, week or month")
    s, start, end = await _prepare(ctx, ops, caller, p, MAX_DAYS[gran], f"a series by {gran}")
    frm, args = s.scope("track_day", "d")
    lfrm, largs = s.scope("track_day_listener", "l")
    rows, by_listeners, distinct = await asyncio.gather(  # on as many readers as the pool has
        _rows(ctx, f"SELECT {_BUCKET_SQL[gran].format(t='d')} AS b, SUM(d.plays), SUM(d.paid_streams), "
                   f"SUM(d.free_streams), SUM(d.listened_ms) {frm} AND d.day BETWEEN ? AND ? GROUP BY b",
              [*args, start, end]),
        _rows(ctx, f"SELECT {_BUCKET_SQL[gran].format(t='l')} AS b, COUNT(DISTINCT l.listener) {lfrm} "
                   f"AND l.day BETWEEN ? AND ? GROUP BY b", [*largs, start, end]),
        _rows(ctx, f"SELECT COUNT(DISTINCT l.listener) {lfrm} AND l.day BETWEEN ? AND ?", [*largs, start, end]))
    label = (lambda b: b + "-01") if gran == "month" else (lambda b: b)
    by_bucket = {label(r[0]): tuple(r[1:]) for r in rows}
    listeners = {label(b): n for b, n in by_listeners}
    unique = distinct[0][0]

    def counts(plays: int, paid: int, free: int, ms: int, listeners_: int) -> dict[str, int]:
        return {"plays": plays, "paidStreams": paid, "freeStreams": free, "shortPlays": plays - paid - free,
                "uniqueListeners": listeners_, "listenedMs": ms}
    series = [{"bucket": b, **counts(*(by_bucket.get(b) or (0, 0, 0, 0)), listeners.get(b, 0))}
              for b in buckets(date.fromisoformat(start), date.fromisoformat(end), gran)]
    total = [sum(r[i] for r in by_bucket.values()) for i in range(4)]
    return {**s.view(), "start": start, "end": end, "granularity": gran, "totals": counts(*total, unique),
            "buckets": series}


async def get_retention(ctx: ViewContext, ops: frozenset[str], caller: str, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.analytics.getRetention: for each second of the track (its duration rounded up),
    the plays with segments that heard it (any part of it), as a share (basis points) and heard twice
    or more; the ``TOP_SECONDS`` skip points (seconds where heard segments most often ended, the last
    second excepted) and replayed passages (runs of seconds replayed by at least half the peak)."""
    s = await subject(ctx, p, artist=False)
    await authorize(ctx, ops, caller, s.artist)
    n = -(-(s.duration_ms or 0) // 1000)
    heard, replayed, stops = [0] * n, [0] * n, [0] * n
    h = r = 0
    rows, totals = await asyncio.gather(
        _rows(ctx, "SELECT second, heard, replayed, stops FROM track_second WHERE track_uri = ? AND second < ? "
                   "ORDER BY second", (s.track, n)),
        _rows(ctx, "SELECT COALESCE(SUM(plays), 0), COALESCE(SUM(segmented), 0) FROM track_day WHERE track_uri = ?",
              (s.track,)))
    plays, segmented = totals[0]
    cursor = 0
    for second, dh, dr, st in rows:  # a difference array: running sums between the rows
        for i in range(cursor, second):
            heard[i], replayed[i] = h, r
        h, r = h + dh, r + dr
        heard[second], replayed[second], stops[second] = h, r, st
        cursor = second + 1
    for i in range(cursor, n):
        heard[i], replayed[i] = h, r
    skips = sorted((i for i in range(n - 1) if stops[i]), key=lambda i: (-stops[i], i))[:TOP_SECONDS]
    passages: list[dict[str, int]] = []
    peak = max(replayed, default=0)
    if peak:
        floor_, i = (peak + 1) // 2, 0
        while i < n:
            if replayed[i] >= floor_:
                j = i
                while j < n and replayed[j] >= floor_:
                    j += 1
                passages.append({"start": i, "end": j, "peak": max(replayed[i:j])})
                i = j
            else:
                i += 1
        passages = sorted(passages, key=lambda x: (-x["peak"], x["start"]))[:TOP_SECONDS]
    return {**s.view(), "durationMs": s.duration_ms, "plays": segmented, "playsWithoutSegments": plays - segmented,
            "heard": heard, "shareBps": [bps(x, segmented) for x in heard], "replayed": replayed,
            "skipPoints": [{"second": i, "stops": stops[i], "shareBps": bps(stops[i], segmented)} for i in skips],
            "replayedPassages": passages}


async def get_countries(ctx: ViewContext, ops: frozenset[str], caller: str, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.analytics.getCountries: plays, streams and distinct listeners per country (the
    plays' opt-in ``country``) over the period, and the same for the plays that give none."""
    s, start, end = await _prepare(ctx, ops, caller, p, MAX_PERIOD_DAYS, "a period")
    frm, args = s.scope("track_day_listener", "l")
    rows = await (await ctx.db.execute(
        f"SELECT l.country, SUM(l.plays), SUM(l.streams), COUNT(DISTINCT l.listener) {frm} AND l.day BETWEEN ? AND ? "
        f"GROUP BY l.country", [*args, start, end])).fetchall()
    countries = sorted(({"country": c, "plays": n, "streams": st, "listeners": u} for c, n, st, u in rows if c),
                       key=lambda x: (-x["streams"], -x["listeners"], x["country"]))
    none = next(({"plays": n, "streams": st, "listeners": u} for c, n, st, u in rows if not c),
                {"plays": 0, "streams": 0, "listeners": 0})
    return {**s.view(), "start": start, "end": end, "countries": countries, "withoutCountry": none}


async def get_top_tracks(ctx: ViewContext, ops: frozenset[str], caller: str, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.analytics.getTopTracks: the artist's ``limit`` tracks with the most streams
    (paid + free) over the period, then the most plays, each with its unique listeners and ms heard."""
    s, start, end = await _prepare(ctx, ops, caller, p, MAX_PERIOD_DAYS, "a period", track=False)
    frm, args = s.scope("track_day", "d")
    rows = await (await ctx.db.execute(
        f"SELECT d.track_uri, t.title, SUM(d.plays) AS n, SUM(d.paid_streams), SUM(d.free_streams), "
        f"SUM(d.listened_ms), SUM(d.paid_streams + d.free_streams) AS st {frm} AND d.day BETWEEN ? AND ? "
        f"GROUP BY d.track_uri, t.title ORDER BY st DESC, n DESC, d.track_uri LIMIT ?", [*args, start, end, p["limit"]])).fetchall()
    listeners: dict[str, int] = {}
    if rows:
        marks = ",".join("?" * len(rows))
        listeners = dict(await (await ctx.db.execute(
            f"SELECT track_uri, COUNT(DISTINCT listener) FROM track_day_listener WHERE track_uri IN ({marks}) "
            f"AND day BETWEEN ? AND ? GROUP BY track_uri", [*(r[0] for r in rows), start, end])).fetchall())
    return {**s.view(), "start": start, "end": end, "tracks": [
        {"uri": uri, "title": title, "plays": n, "paidStreams": paid, "freeStreams": free,
         "uniqueListeners": listeners.get(uri, 0), "listenedMs": ms} for uri, title, n, paid, free, ms, _ in rows]}


async def get_top_listeners(ctx: ViewContext, ops: frozenset[str], caller: str, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.analytics.getTopListeners: the ``limit`` listeners with the most streams of the
    artist or track over the period, then the most plays (then the first seen); by verified handle
    only (``handle.invalid`` otherwise), never a DID."""
    s, start, end = await _prepare(ctx, ops, caller, p, MAX_PERIOD_DAYS, "a period")
    frm, args = s.scope("track_day_listener", "l")
    rows = await (await ctx.db.execute(
        f"SELECT l.listener, SUM(l.plays) AS n, SUM(l.streams) AS st, SUM(l.listened_ms) {frm} "
        f"AND l.day BETWEEN ? AND ? GROUP BY l.listener ORDER BY st DESC, n DESC, l.listener LIMIT ?",
        [*args, start, end, p["limit"]])).fetchall()
    handles: dict[int, str] = {}
    if rows:
        marks = ",".join("?" * len(rows))
        handles = dict(await (await ctx.db.execute(
            f"SELECT i.id, a.handle FROM analytics_listener i JOIN actor a ON a.did = i.did WHERE i.id IN ({marks}) "
            f"AND a.handle_verified = 1 AND a.handle IS NOT NULL", [r[0] for r in rows])).fetchall())
    return {**s.view(), "start": start, "end": end, "listeners": [
        {"handle": handles.get(listener, INVALID_HANDLE), "plays": n, "streams": st, "listenedMs": ms}
        for listener, n, st, ms in rows]}


# -- the money side (appview.analytics_money computes; here: params and callers, as above) --------

#: The AppView serving the current request (``analytics_query`` sets it): getOverview reads its firehose.
SERVING: ContextVar[AppViewDeps | None] = ContextVar("openmusic_analytics_serving", default=None)


def granularity(p: dict[str, Any]) -> str:
    """The ``granularity`` param (default ``day``). Raises 400 ``InvalidRequest`` for another value."""
    gran = p.get("granularity") or "day"
    if gran not in MAX_DAYS:
        raise invalid("granularity must be day, week or month")
    return gran


def operator_only(ops: frozenset[str], caller: str, what: str) -> None:
    """Raises 403 ``Forbidden`` unless ``caller`` is an operator (``Settings.operator_dids``)."""
    if caller not in ops:
        raise XrpcError(403, "Forbidden", f"{caller} may not read {what}: only an operator of this AppView "
                                          "(OPENMUSIC_OPERATOR_DIDS) may")


async def get_revenue(ctx: ViewContext, ops: frozenset[str], caller: str, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.analytics.getRevenue: the artist's money per currency, per bucket and in total,
    by source (subscriptions, ads, tips to the artist and to songs), tips by song and the top
    tippers (by verified handle), purchase-link clicks, the balance and payouts
    (``analytics_money.revenue`` gives the shape). 400 for bad params or an unknown artist, 403
    ``Forbidden`` for a caller who is not the artist, an agreed manager or an operator."""
    gran = granularity(p)
    s, start, end = await _prepare(ctx, ops, caller, p, MAX_DAYS[gran], f"a series by {gran}", track=False)
    labels = buckets(date.fromisoformat(start), date.fromisoformat(end), gran)
    return await money.revenue(ctx, s.artist, start, end, gran, labels, p["limit"])


async def get_conversion(ctx: ViewContext, ops: frozenset[str], caller: str, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.analytics.getConversion: listeners who moved from the free tier to a paid one,
    per bucket and in total; with ``artist``, how many streamed the artist in the 30 days before;
    without, network-wide (operators only) with the free-to-paid rate (``analytics_money.conversion``).
    400 for bad params or an unknown artist, 403 ``Forbidden`` for a caller not allowed."""
    gran = granularity(p)
    if p.get("artist"):
        s, start, end = await _prepare(ctx, ops, caller, p, MAX_DAYS[gran], f"a series by {gran}", track=False)
        artist: str | None = s.artist
    else:
        first, last = period(p, MAX_DAYS[gran], f"a series by {gran}")
        operator_only(ops, caller, "the network's conversion (give artist for an artist's)")
        artist, start, end = None, first.isoformat(), last.isoformat()
    labels = buckets(date.fromisoformat(start), date.fromisoformat(end), gran)
    return await money.conversion(ctx, artist, start, end, gran, labels)


async def get_overview(ctx: ViewContext, ops: frozenset[str], caller: str, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.analytics.getOverview: the operator's command center over a period (money,
    subscribers, conversion, indexing health; ``analytics_money.overview``). 400 for a bad period,
    403 ``Forbidden`` for anyone but an operator."""
    first, last = period(p, MAX_PERIOD_DAYS, "the overview")
    operator_only(ops, caller, "the overview")
    rt = SERVING.get()
    st = rt.consumer.status if rt is not None and rt.consumer is not None else None
    firehose = (False, None) if st is None else (bool(st.connected), st.lag())
    return await money.overview(ctx, first.isoformat(), last.isoformat(), firehose)


#: nsid -> handler(views, operator DIDs, caller DID, validated params)
ANALYTICS: dict[str, Handler] = {
    NS + "getStreams": get_streams,
    NS + "getRetention": get_retention,
    NS + "getCountries": get_countries,
    NS + "getTopTracks": get_top_tracks,
    NS + "getTopListeners": get_top_listeners,
    NS + "getRevenue": get_revenue,
    NS + "getConversion": get_conversion,
    NS + "getOverview": get_overview,
}


async def analytics_query(rt: AppViewDeps, nsid: str, request: Request) -> Response:
    """Serve one analytics query: GET (or HEAD), a service-auth JWT for ``nsid`` (401 without one;
    501 ``AnalyticsUnavailable`` when this AppView verifies none), then the params (400) and the
    handler (403 for a caller who may not see the subject). Errors as XRPC error bodies."""
    try:
        if request.method not in ("GET", "HEAD"):
            raise XrpcError(405, "InvalidRequest", f"{nsid} is a query: use GET")
        if rt.auth is None:
            raise XrpcError(501, "AnalyticsUnavailable", "this AppView verifies no service-auth JWTs, so it "
                                                         "serves no analytics")
        caller = await rt.auth.verify(request.headers.get("authorization"), nsid)
        params = parse_params(nsid, request)
        serving = SERVING.set(rt)
        try:
            response = JSONResponse(await ANALYTICS[nsid](rt.views, operators(rt.settings.operator_dids), caller,
                                                          params))
        finally:
            SERVING.reset(serving)
        return head_response(response) if request.method == "HEAD" else response
    except AuthError as exc:
        resp = XrpcError(401, exc.error, str(exc)).response()
        resp.headers["WWW-Authenticate"] = 'Bearer realm="openmusic"'
        return resp
    except XrpcError as exc:
        return exc.response()
    except Exception:
        log.exception("%s failed", nsid)
        return XrpcError(500, "InternalServerError", "internal error").response()
