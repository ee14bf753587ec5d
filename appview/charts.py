"""Charts and browsing (issue 13): ``fm.openmusic.feed.getChart`` and ``fm.openmusic.catalog.getBrowse``.

Every chart is a **skeleton** (track URIs and integer scores, ranked in SQL from the tables the
indexer keeps: ``track_day`` and ``track_stats`` for streams, ``tip`` with its verified
``settlement`` for tips, ``track_facet`` (migration 0017) for moods, split recipients and release
dates; trending weighs listeners (``track_day_listener``) and votes (``vote_current``) by reputation,
``appview.reputation``), then **hydration** of one page (``appview.views.ordered_track_views``).
Ranking never reads ``play`` rows, except one indexed look-up per vote in the trending window (did
the voter stream the track before voting). Only listeners, voters and tippers in standing count
(``indexer.standing``: active, not suspended or taken down by a label): the rollups and
``vote_current`` hold nothing else, and the listeners of trending and the tippers are checked again.

Charts are the same for every viewer, and ranking aggregates up to a month of rollups (100 ms and
more at 100,000 tracks), so a skeleton is computed once per (chart, period, filters, UTC day) and
kept ``CACHE_SECONDS``; pages are cut from it. A chart lists at most ``CHART_SIZE`` tracks. Pages
carry ``(rank, uri)`` of their last item: the next page starts after that URI in the skeleton (or
after that rank, if the skeleton was recomputed without it), so ties never repeat or skip a track.
Tracks whose artist is not active are never ranked, and hydration drops any that stopped being
shown since the skeleton was made.

Days are UTC days (``today``, replaceable for benchmarks): period ``day`` is today, ``week`` the
last 7 days with today, ``month`` the last 30, ``all`` everything."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from appview import derived
from appview.reputation import listener_days, vote_facts
from appview.views import LISTED, ViewContext, ordered_track_views
from appview.xrpc import decode_cursor, encode_cursor, invalid
from core import db, periodic
from indexer.standing import in_standing

log = logging.getLogger("openmusic.charts")

Handler = Callable[[ViewContext, dict[str, Any]], Awaitable[dict[str, Any]]]

CHARTS = ("trending", "top", "new", "tipped")
#: Days in each period, today included (None: all time).
PERIODS: dict[str, int | None] = {"day": 1, "week": 7, "month": 30, "all": None}
AI_LEVELS = ("human", "assisted", "generated")
#: Trending: half-life and window in days, and the fixed-point scale of the weights.
HALF_LIFE_DAYS = 3
WINDOW_DAYS = 14
SCALE = 1000
#: Weight of a stream or a vote ``age`` UTC days old (0 = today): round(1000 * 0.5 ** (age / 3)),
#: i.e. 1000, 794, 630, 500, 397, 315, 250, 198, 157, 125, 99, 79, 63, 50.
WEIGHTS = tuple(round(SCALE * 0.5 ** (age / HALF_LIFE_DAYS)) for age in range(WINDOW_DAYS))
#: Most tracks a chart ranks, and how long a computed skeleton is reused, s.
CHART_SIZE = 1000
CACHE_SECONDS = 60.0
#: The leader stores the chart totals every ``TOTALS_EVERY`` s, or ``TOTALS_REST_FACTOR`` times
#: their computing time when longer (a minute of Python at 5M plays). Replicas use them while
#: younger than ``SHARED_MAX_AGE`` s, or ``SHARED_AGE_FACTOR`` times their computing time.
TOTALS_EVERY = 60.0
TOTALS_REST_FACTOR = 10.0
SHARED_MAX_AGE = 600.0
SHARED_AGE_FACTOR = 30.0
#: Most names per list in getBrowse.
BROWSE_SIZE = 50
#: The currency the tipped chart ranks in when none is asked (the broker's default ``Settings.currency``).
DEFAULT_CURRENCY = "USD"


def today() -> date:
    """The current UTC day (a module attribute so that a benchmark on dated data can fix it)."""
    return datetime.now(UTC).date()


_cache: dict[tuple, tuple[float, Any]] = {}
_locks: dict[tuple, asyncio.Lock] = {}


def clear_cache() -> None:
    """Forget every computed skeleton and browse count (tests; after bulk changes)."""
    _cache.clear()


async def _cached(ctx: ViewContext, key: tuple, compute: Callable[[], Awaitable[Any]]) -> Any:
    """``compute()``'s result for ``key`` on this ``ctx.db``, reused for ``CACHE_SECONDS``; one
    computation at a time per key (concurrent callers wait for it rather than repeat it)."""
    key = (id(ctx.db), *key)
    hit = _cache.get(key)
    if hit and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1]
    lock = _locks.setdefault(key, asyncio.Lock())
    async with lock:
        hit = _cache.get(key)
        if hit and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
        value = await compute()
        if len(_cache) > 1000:
            _cache.clear()
        _cache[key] = (time.monotonic(), value)
        return value


_refreshing: dict[tuple, asyncio.Task] = {}


async def _cached_stale(ctx: ViewContext, key: tuple, day: date, compute: Callable[[], Awaitable[Any]]) -> Any:
    """Like ``_cached``, but once a value exists, an old one (older than ``CACHE_SECONDS``, or of an
    earlier ``day``) is answered at once while one recomputation runs in the background: only the
    first request ever waits for ``compute()`` (the trending totals take seconds at 100k tracks)."""
    full = (id(ctx.db), *key)
    hit = _cache.get(full)
    if hit is None:
        return await _first(ctx, full, day, compute)
    at, (value_day, value) = hit
    if (time.monotonic() - at >= CACHE_SECONDS or value_day != day) and full not in _refreshing:
        async def refresh() -> None:
            try:
                _cache[full] = (time.monotonic(), (day, await compute()))
            except Exception:
                log.exception("recomputing %s failed; the previous answer stays", key[0])
            finally:
                _refreshing.pop(full, None)
        _refreshing[full] = asyncio.create_task(refresh())
    return value


async def _first(ctx: ViewContext, full: tuple, day: date, compute: Callable[[], Awaitable[Any]]) -> Any:
    lock = _locks.setdefault(full, asyncio.Lock())
    async with lock:
        hit = _cache.get(full)
        if hit is None:
            value = await compute()
            _cache[full] = (time.monotonic(), (day, value))
            return value
        return hit[1][1]


def _filters(p: dict[str, Any]) -> tuple[list[str], list[Any], tuple]:
    """SQL conditions on ``t`` (track) and ``a`` (its artist's actor row) for the genre, mood and
    AI-level filters and the active rule, their arguments, and the filters as a cache key."""
    level = p.get("aiLevel")
    if level is not None and level not in AI_LEVELS:
        raise invalid(f"aiLevel must be one of {', '.join(AI_LEVELS)}")
    genre = (p.get("genre") or "").strip().lower() or None
    mood = (p.get("mood") or "").strip().lower() or None
    where, args = [LISTED], []
    if genre:
        where.append("t.genre_norm = ?")
        args.append(genre)
    if level:
        where.append("t.ai_level = ?")
        args.append(level)
    if mood:
        where.append("EXISTS (SELECT 1 FROM track_facet f WHERE f.kind = 'mood' AND f.value = ? AND f.track_uri = t.uri)")
        args.append(mood)
    return where, args, (genre, mood, level)


def _since(period: str, day: date) -> str | None:
    days = PERIODS[period]
    return None if days is None else (day - timedelta(days=days - 1)).isoformat()


async def _rank(ctx: ViewContext, scores_sql: str, scores_args: list[Any], where: list[str], args: list[Any],
                order: str = "s.score DESC, COALESCE(ts.likes, 0) DESC, t.sort_at DESC, t.uri DESC",
                select: str = "s.score") -> list[tuple[str, Any]]:
    """Join a ``(uri, score)`` subquery to the filtered tracks and rank: (uri, score) pairs."""
    cur = await ctx.db.execute(
        f"SELECT t.uri, {select} FROM ({scores_sql}) s JOIN track t ON t.uri = s.uri "
        f"LEFT JOIN actor a ON a.did = t.did LEFT JOIN track_stats ts ON ts.track_uri = t.uri "
        f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT {CHART_SIZE}", [*scores_args, *args])
    return [(uri, score) for uri, score in await cur.fetchall()]


async def _top(ctx: ViewContext, day: date, period: str, where: list[str], args: list[Any]) -> list:
    """Streams (paid + free) in the period: ``track_day`` summed (by the leader, ``chart_total``,
    while fresh), or ``track_stats`` for all time."""
    since = _since(period, day)
    if since is None:
        sql, sargs = "SELECT track_uri AS uri, paid_streams + free_streams AS score FROM track_stats", []
    elif await shared_totals_fresh(ctx, day):  # the leader's sums (``store_chart_totals``)
        sql, sargs = SHARED_SQL, [f"top:{period}"]
    else:
        sql = ("SELECT track_uri AS uri, SUM(paid_streams + free_streams) AS score FROM track_day "
               "WHERE day >= ? GROUP BY track_uri")
        sargs = [since]
    return await _rank(ctx, sql, sargs, [*where, "s.score > 0"], args)


async def _trending(ctx: ViewContext, day: date, where: list[str], args: list[Any]) -> list:
    """Reputation-weighted listening and votes of the last ``WINDOW_DAYS`` days
    (``appview.reputation``), each weighted by its age in days: every listener counts once per track
    and day (``listener_days``), every vote by its weight (people's votes only; agents' are apart).
    The totals are the leader's (``chart_total``, by ``keep_chart_totals``) while fresh
    (``shared_totals_fresh``); otherwise (no leader runs, or it stalled) this process computes them
    once for all filters, and an old total is served while the next is computed
    (``_cached_stale``). Either way they are ranked per filter here."""
    if await shared_totals_fresh(ctx, day, yesterday_too=True):
        return await _rank(ctx, SHARED_SQL, ["trending"], where, args)
    totals = await _cached_stale(ctx, ("trending-totals",), day,
                                 lambda: _trending_totals(ctx, day))
    return await _rank(ctx, "SELECT key AS uri, value AS score FROM json_each(?)", [totals], where, args)


#: The stored totals of one chart (``chart_total``), as ``_rank``'s ``(uri, score)`` subquery.
SHARED_SQL = "SELECT track_uri AS uri, score FROM chart_total WHERE chart = ?"
#: The periods whose top the leader stores (``all`` reads ``track_stats``, which is a counter already).
SHARED_TOP_PERIODS = ("day", "week", "month")


async def shared_totals_fresh(ctx: ViewContext, day: date, yesterday_too: bool = False) -> bool:
    """Whether ``chart_total`` holds the leader's totals of ``day`` (UTC; with ``yesterday_too`` of
    the day before also: trending's totals shift by a day's decay, and computing them here takes a
    minute at scale), computed less than ``SHARED_MAX_AGE`` seconds ago, or ``SHARED_AGE_FACTOR``
    times their computing time when that is longer (``derived_state`` row ``charts``, migration 0036)."""
    stamp = await derived.stamp_of(ctx.db, "charts")
    days = {day.isoformat(), (day - timedelta(days=1)).isoformat()} if yesterday_too else {day.isoformat()}
    if stamp is None or stamp.day not in days:
        return False
    return time.time() - stamp.computed_at < max(SHARED_MAX_AGE, SHARED_AGE_FACTOR * stamp.seconds)


async def store_chart_totals(ctx: ViewContext, database: str,
                             fence: Callable[[Any], None] | None = None) -> dict[str, float]:
    """Compute today's chart totals reading ``ctx.db`` and store them in ``database`` (a SQLite
    path or PostgreSQL URL) for every replica, in one write transaction (``fence(conn)`` just before
    its COMMIT: the leader's commit fence, ``core.leader``): ``chart_total`` replaced (``trending``: ``_trending_scores``;
    ``top:day|week|month``: streams in the period, from ``track_day``) and ``derived_state``
    ``charts`` stamped (day, epoch seconds when the computing began, computing seconds). Returns
    ``{"trending": n, "top:week": n, ..., "seconds": s, "write_seconds": w}`` (tracks with a positive
    score per chart; ``s`` the computing time, ``w`` the write transaction's). Raises the database's
    errors."""
    day = today()
    began = time.time()
    started = time.perf_counter()
    charts: dict[str, list[tuple[str, int]]] = {"trending": list((await _trending_scores(ctx, day)).items())}
    for period in SHARED_TOP_PERIODS:
        cur = await ctx.db.execute("SELECT track_uri, SUM(paid_streams + free_streams) FROM track_day WHERE day >= ? "
                                   "GROUP BY track_uri HAVING SUM(paid_streams + free_streams) > 0",
                                   (_since(period, day),))
        charts[f"top:{period}"] = [(uri, int(score)) for uri, score in await cur.fetchall()]
    seconds = time.perf_counter() - started
    rows = [(chart, uri, score) for chart, scored in charts.items() for uri, score in scored]
    await asyncio.to_thread(_write_totals, database, rows, derived.Stamp(day.isoformat(), began, seconds), fence)
    return {**{chart: len(scored) for chart, scored in charts.items()}, "seconds": seconds,
            "write_seconds": time.perf_counter() - started - seconds}


def _write_totals(database: str, rows: list[tuple[str, str, int]], stamp: derived.Stamp,
                  fence: Callable[[Any], None] | None = None) -> None:
    """Replace ``chart_total`` with ``rows`` and stamp ``derived_state`` ``charts``, on a connection of its own in a worker thread: the write lock is held only while
    the rows are written, never across the event loop's other work (the indexer's batches and the
    requests' writes wait meanwhile; the time is logged)."""
    conn = db.connect_sync(database)
    try:
        with db.sync_write_transaction(conn):
            conn.execute("DELETE FROM chart_total")
            conn.executemany("INSERT INTO chart_total (chart, track_uri, score) VALUES (?, ?, ?)", rows)
            derived.put_stamp(conn, "charts", stamp)
            if fence is not None:
                fence(conn)
    finally:
        conn.close()


async def keep_chart_totals(ctx: ViewContext, database: str, every: float = TOTALS_EVERY,
                            fence: Callable[[Any], None] | None = None) -> None:
    """``store_chart_totals`` now, then again after ``every`` seconds or ``TOTALS_REST_FACTOR`` times
    its last computing time, whichever is longer, and right after each UTC midnight, until cancelled
    (the leader runs it, with its commit ``fence``: replicas then rank the stored totals instead of
    each computing them). A failure is logged, not raised."""
    async def work() -> float:
        done = await store_chart_totals(ctx, database, fence)
        rest = max(every, TOTALS_REST_FACTOR * done["seconds"])
        log.info("chart totals stored (%s): computed in %.1fs, written in %.1fs; next in %.0fs",
                 ", ".join(f"{k} {v:.0f}" for k, v in done.items() if "seconds" not in k), done["seconds"],
                 done["write_seconds"], rest)
        return rest

    def until_midnight_or(rest: float) -> float:
        now = datetime.now(UTC)
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        return min(rest, (midnight - now).total_seconds() + 1)
    await periodic.repeat("storing the chart totals", work, until_midnight_or, lambda: until_midnight_or(every), log)


async def _trending_totals(ctx: ViewContext, day: date) -> str:
    """``_trending_scores`` as a JSON object {uri: score}."""
    return json.dumps(await _trending_scores(ctx, day))


async def _trending_scores(ctx: ViewContext, day: date) -> dict[str, int]:
    """The trending score of every track with a positive one: {uri: score}. Its seconds of SQL run
    on a read-only connection of their own (when the database is a file), so the shared readers
    keep answering requests (and the leader's writer its batches) meanwhile."""
    days = [(day - timedelta(days=age)).isoformat() for age in range(WINDOW_DAYS)]
    decay = dict(zip(days, WEIGHTS, strict=True))
    cur = await ctx.db.execute("PRAGMA database_list")
    path = next((row[2] for row in await cur.fetchall() if row[1] == "main"), "")
    own = await db.connect(path, readonly=True) if path else None
    try:
        work = ViewContext(own, ctx.identity, ctx.base_url) if own is not None else ctx
        listeners = await listener_days(work, days[-1])
        votes = await vote_facts(work, "v.sort_at >= ?", [days[-1]])
    finally:
        if own is not None:
            await own.close()

    def total() -> dict[str, int]:
        totals: dict[str, int] = {}
        for track, on, weight in listeners:
            totals[track] = totals.get(track, 0) + weight * decay.get(on, 0) // SCALE
        for f in votes:
            if f.weight and not f.bot:
                totals[f.subject] = totals.get(f.subject, 0) + f.value * f.weight * decay.get(f.sort_at[:10], 0) // SCALE
        return {uri: score for uri, score in totals.items() if score > 0}
    return await asyncio.to_thread(total)


async def _new(ctx: ViewContext, where: list[str], args: list[Any]) -> list:
    """Newest release first: ``releaseDate`` when given, but never later than ``sort_at`` (when the
    track was created, itself never later than when it was indexed), so no date claimed in the future
    keeps a track on top. The score is that release time in Unix seconds."""
    sql = ("SELECT t0.uri AS uri, MIN(COALESCE(f.value, t0.sort_at), t0.sort_at) AS score FROM track t0 "
           "LEFT JOIN track_facet f ON f.track_uri = t0.uri AND f.kind = 'release'")
    rows = await _rank(ctx, sql, [], where, args, order="s.score DESC, t.uri DESC")
    return [(uri, int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())) for uri, at in rows]


async def _tipped(ctx: ViewContext, day: date, period: str, currency: str, where: list[str], args: list[Any]) -> list:
    """Settled tips naming a track, total amount in minor units of ``currency``, by tippers in
    standing (``indexer.standing``), in the period (by the tip's ``sort_at``); a tip whose verified
    settlement says refunded is out."""
    since = _since(period, day)
    sql = ("SELECT tp.track_uri AS uri, SUM(tp.amount) AS score FROM tip tp LEFT JOIN actor pa ON pa.did = tp.did "
           f"WHERE tp.track_uri IS NOT NULL AND tp.currency = ? AND {in_standing('pa')} "
           + ("AND tp.sort_at >= ? " if since else "")
           + "AND tp.uri IN (SELECT tip_uri FROM settlement WHERE verified = 1 AND status = 'settled') "
           "AND tp.uri NOT IN (SELECT tip_uri FROM settlement WHERE verified = 1 AND status = 'refunded') "
           "GROUP BY tp.track_uri")
    return await _rank(ctx, sql, [currency, *([since] if since else [])], [*where, "s.score > 0"], args)


async def get_chart(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.feed.getChart: a page of the ranked tracks with their ``rank`` and ``score``."""
    chart, period = p["chart"], p["period"]
    if chart not in CHARTS:
        raise invalid(f"chart must be one of {', '.join(CHARTS)}")
    if period not in PERIODS:
        raise invalid(f"period must be one of {', '.join(PERIODS)}")
    currency = p.get("currency") or DEFAULT_CURRENCY
    if not (len(currency) == 3 and currency.isascii() and currency.isalpha() and currency.isupper()):
        raise invalid("currency must be an ISO 4217 code like USD")
    where, args, fkey = _filters(p)
    after = decode_cursor(p.get("cursor"), (int, str))
    day = today()

    async def compute() -> list:
        if chart == "top":
            return await _top(ctx, day, period, where, args)
        if chart == "trending":
            return await _trending(ctx, day, where, args)
        if chart == "new":
            return await _new(ctx, where, args)
        return await _tipped(ctx, day, period, currency, where, args)

    used_period = period if chart in ("top", "tipped") else None
    skeleton = await _cached(ctx, ("chart", chart, used_period, currency if chart == "tipped" else None, fkey,
                                   day), compute)
    start = 0
    if after:
        rank, uri = after
        if rank < 0:
            raise invalid("malformed cursor")
        if 0 < rank <= len(skeleton) and skeleton[rank - 1][0] == uri:
            start = rank
        else:
            start = next((i + 1 for i, (u, _) in enumerate(skeleton) if u == uri), min(rank, len(skeleton)))
    page = skeleton[start:start + p["limit"]]
    views = {v["uri"]: v for v in await ordered_track_views(ctx, [u for u, _ in page])}
    tracks = [{**views[uri], "rank": start + i + 1, "score": score}
              for i, (uri, score) in enumerate(page) if uri in views]
    out: dict[str, Any] = {"chart": chart, "period": period, "tracks": tracks}
    if chart == "tipped":
        out["currency"] = currency
    if start + len(page) < len(skeleton):
        out["cursor"] = encode_cursor(start + len(page), page[-1][0])
    return out


async def _counts(ctx: ViewContext, column: str, source: str, where: list[str], args: list[Any],
                  pre: list[Any] = ()) -> list[dict[str, Any]]:
    cur = await ctx.db.execute(
        f"SELECT {column} AS name, COUNT(*) AS n FROM {source} LEFT JOIN actor a ON a.did = t.did "
        f"WHERE {column} IS NOT NULL AND {' AND '.join(where)} GROUP BY name ORDER BY n DESC, name LIMIT {BROWSE_SIZE}",
        [*pre, *args])
    return [{"name": name, "count": n} for name, n in await cur.fetchall()]


async def get_browse(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.catalog.getBrowse: how many indexed tracks of active artists there are by genre,
    mood, AI level and AI tool (within the filters), each list by count then name, at most 50."""
    where, args, fkey = _filters(p)

    async def compute() -> dict[str, Any]:
        cur = await ctx.db.execute(f"SELECT COUNT(*) FROM track t LEFT JOIN actor a ON a.did = t.did "
                                   f"WHERE {' AND '.join(where)}", args)
        (total,) = await cur.fetchone()
        facet = "track_facet g JOIN track t ON t.uri = g.track_uri AND g.kind = ?"
        return {"total": total,
                "genres": await _counts(ctx, "t.genre_norm", "track t", where, args),
                "moods": await _counts(ctx, "g.value", facet, where, args, ["mood"]),
                "aiLevels": await _counts(ctx, "t.ai_level", "track t", where, args),
                "aiTools": await _counts(ctx, "g.value", facet, where, args, ["tool"])}

    return dict(await _cached(ctx, ("browse", fkey, today()), compute))


CHART_QUERIES: dict[str, Handler] = {
    "fm.openmusic.feed.getChart": get_chart,
    "fm.openmusic.catalog.getBrowse": get_browse,
}
