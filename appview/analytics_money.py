"""The money side of the analytics (``fm.openmusic.analytics.getRevenue``, ``getConversion``,
``getOverview``): what each artist earned and from where, listeners who moved from the free tier to
a paid one, and the operator's command center. The lexicons under
``lexicons/fm/openmusic/analytics/`` define every figure; this module computes them.

Params and callers are checked by the entry points in ``appview.analytics`` (the same period and
granularity rules, and the same ``authorize``) before these functions run: here the artist is a
DID, the period two ``YYYY-MM-DD`` strings (UTC days, both ends included) and ``labels`` the
buckets' first days in order (``analytics.buckets``). Money is integer minor units per currency,
never a float; a sum over no rows is 0.

Sources (all read on the readers, nothing written):

- ``earning_line`` (``payments.earnings``): the artist's subscription shares, ad-pool shares, tips
  and tip refunds, each dated by its ledger transaction (``ledger_txn.created_at``): the day the
  money reached the artist's earnings. A tip line's ``source`` is the tip's AT-URI, whose authority
  is the payer.
- ``ledger_entry``: balances (``earnings:<did>``, ``payouts:pending``); ``ledger_day`` (migration
  0014, kept by a trigger): the operator's totals by day, transaction kind and account class.
- ``payout``, ``ad_pool``, ``subscription_invoice`` (paid invoices: who held a paid tier when, as
  ``indexer.streams.holds_paid_tier`` decides), ``listener_day`` (who streamed on which day), the
  index of streams by listener and track (a converter's streams of an artist in the 30 days
  before converting, read without reading a play),
  ``purchase_click``, ``rejected_record``, ``repo_state``.

Listening counts only for listeners in standing (``indexer.standing``: active, not suspended or
taken down by a label): a converter's streams of the artist (``streamedArtist``), the listeners
active in a period and the converters among them. Money is never filtered: what an account paid
(a conversion is a paid invoice) or tipped stays in the figures, as it stays in the ledger.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from appview.views import ViewContext
from core.identity import INVALID_HANDLE
from indexer.standing import OUT_OF_STANDING_SQL, did_in_standing
from payments import ledger
from payments.payouts import PENDING
from payments.period import AD_POOL, PLATFORM

#: Days before a conversion in which a stream of the artist counts (getConversion's streamedArtist).
BEFORE_CONVERTING_DAYS = 30
#: The lag past which ``/health`` answers 503, s: ``appview.app.MAX_LAG_S`` (which this module
#: cannot import: the app imports the analytics); ``tests/test_analytics_money.py`` keeps them equal.
MAX_LAG_S = 60
#: A paid invoice (``subscription_invoice``): what makes a listener's streams paid.
_PAID = "status = 'paid'"
_TIP_KINDS = "('tip', 'refund')"


def instant(day: str) -> str:
    """``YYYY-MM-DD`` -> its first instant in the form ``sort_at`` and the ledger use."""
    return f"{day}T00:00:00.000Z"


def after(day: str) -> str:
    """The first instant of the day after ``day`` (the end, exclusive, of a period ending on it)."""
    return instant((date.fromisoformat(day) + timedelta(days=1)).isoformat())


def bucket_of(labels: list[str], day: str) -> str:
    """The bucket (first day, from ``labels`` in order) that holds ``day`` (within the period)."""
    return labels[max(0, bisect_right(labels, day) - 1)]


async def _rows(ctx: ViewContext, sql: str, args: list[Any] | tuple[Any, ...] | dict[str, Any]) -> list[Any]:
    return list(await (await ctx.db.execute(sql, args)).fetchall())


def _amounts(by_currency: dict[str, int]) -> list[dict[str, Any]]:
    """``{currency: minor units}`` -> ``[{currency, amount}]`` sorted by currency."""
    return [{"currency": c, "amount": int(a)} for c, a in sorted(by_currency.items())]


async def handles(ctx: ViewContext, dids: list[str]) -> dict[str, str]:
    """DID -> handle, for the DIDs whose handle is verified both ways (others are absent)."""
    if not dids:
        return {}
    marks = ",".join("?" * len(dids))
    return dict(await _rows(ctx, f"SELECT did, handle FROM actor WHERE did IN ({marks}) AND handle_verified = 1 "
                                 f"AND handle IS NOT NULL", dids))


#: The payer of a tip's earning line, in SQL: the authority (the tipper's repo DID) of the tip's
#: AT-URI in ``source`` (NULL when it is none).
_PAYER = ("CASE WHEN l.source LIKE 'at://%/%' THEN substr(l.source, 6, instr(substr(l.source, 6), '/') - 1) "
          "END")


# -- getRevenue ------------------------------------------------------------------------------------

_MONEY_KEYS = ("subscriptions", "ads", "tipsArtist", "tipsSong")


def _money_row(currency: str, sums: list[int] | None) -> dict[str, Any]:
    sub, ads, t_artist, t_song = (int(x) for x in (sums or (0, 0, 0, 0)))
    return {"currency": currency, "subscriptions": sub, "ads": ads, "tips": t_artist + t_song, "tipsArtist": t_artist,
            "tipsSong": t_song, "total": sub + ads + t_artist + t_song}


async def revenue(ctx: ViewContext, artist: str, start: str, end: str, granularity: str, labels: list[str],
                  limit: int) -> dict[str, Any]:
    """The ``getRevenue`` output for ``artist`` over [start, end] (see its lexicon):

    ``{artist, start, end, granularity, currencies, totals: {money: [moneyRow], purchaseClicks},
    buckets: [{bucket, money, purchaseClicks}], tips: {artist: [{currency, count, amount}],
    songs: [{track, title?, currency, count, amount}], topTippers: [{handle, currency, count,
    amount}]}, purchaseClicks: [{track, title?, clicks}], balance: [{currency, amount}], payouts:
    {made, pending, madeTotal, pendingTotal}}``; a moneyRow is ``{currency, subscriptions, ads,
    tips, tipsArtist, tipsSong, total}``, minor units."""
    lo, hi = instant(start), after(end)
    lines = ("FROM earning_line l JOIN ledger_txn t ON t.idem_key = l.txn WHERE l.artist = ? AND l.period <= ? "
             "AND t.created_at >= ? AND t.created_at < ? ")
    largs = [artist, end[:7], lo, hi]
    by_day, tip_lines, clicks_by_day, top_clicks, balance, payouts = await asyncio.gather(
        _rows(ctx, f"SELECT substr(t.created_at, 1, 10) AS d, l.currency, "
                   f"SUM(CASE WHEN l.kind = 'subscription_share' THEN l.amount ELSE 0 END), "
                   f"SUM(CASE WHEN l.kind = 'ad_share' THEN l.amount ELSE 0 END), "
                   f"SUM(CASE WHEN l.kind IN {_TIP_KINDS} AND l.track_uri IS NULL THEN l.amount ELSE 0 END), "
                   f"SUM(CASE WHEN l.kind IN {_TIP_KINDS} AND l.track_uri IS NOT NULL THEN l.amount ELSE 0 END) "
                   f"{lines} AND l.kind IN ('subscription_share', 'ad_share', 'tip', 'refund') GROUP BY d, l.currency",
              largs),
        _rows(ctx, f"SELECT l.track_uri, l.currency, {_PAYER} AS payer, SUM(CASE WHEN l.kind = 'tip' THEN 1 ELSE 0 END), SUM(l.amount) {lines} "
                   f"AND l.kind IN {_TIP_KINDS} GROUP BY l.track_uri, l.currency, payer", largs),
        _rows(ctx, "SELECT day, SUM(clicks) FROM purchase_click WHERE did = ? AND day BETWEEN ? AND ? GROUP BY day",
              (artist, start, end)),
        _rows(ctx, "SELECT c.track_uri, MIN(t.title), SUM(c.clicks) AS n FROM purchase_click c LEFT JOIN track t "
                   "ON t.uri = c.track_uri WHERE c.did = ? AND c.day BETWEEN ? AND ? GROUP BY c.track_uri "
                   "HAVING SUM(c.clicks) > 0 ORDER BY n DESC, c.track_uri LIMIT ?", (artist, start, end, limit)),
        _rows(ctx, "SELECT currency, SUM(amount) FROM ledger_entry WHERE account = ? GROUP BY currency",
              (ledger.earnings(artist),)),
        _rows(ctx, "SELECT p.id, p.amount, p.currency, p.status, p.period, p.created_at, p.updated_at, "
                   "(SELECT e.source FROM earning_line e WHERE e.txn = 'payout:' || p.id AND e.kind = 'payout' "
                   "LIMIT 1) FROM payout p WHERE p.did = ? AND (p.status = 'pending' OR (p.status = 'paid' "
                   "AND p.updated_at >= ? AND p.updated_at < ?)) ORDER BY p.created_at DESC, p.id DESC",
              (artist, lo, hi)))
    # money per bucket and currency
    per_bucket: dict[tuple[str, str], list[int]] = {}
    totals: dict[str, list[int]] = {}
    for d, currency, *sums in by_day:
        for acc in (per_bucket.setdefault((bucket_of(labels, d), currency), [0] * 4),
                    totals.setdefault(currency, [0] * 4)):
            for i, x in enumerate(sums):
                acc[i] += int(x)
    currencies = sorted(totals)
    clicks: dict[str, int] = defaultdict(int)
    for d, n in clicks_by_day:
        clicks[bucket_of(labels, d)] += int(n)
    series = [{"bucket": b, "money": [_money_row(c, per_bucket.get((b, c))) for c in currencies],
               "purchaseClicks": clicks.get(b, 0)} for b in labels]
    # tips by source and by payer: count = tips settled (lines of kind tip), amount net of refunds
    to_artist: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    to_song: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    by_payer: dict[tuple[str | None, str], list[int]] = defaultdict(lambda: [0, 0])
    for track, currency, payer, n, amount in tip_lines:
        for acc in (to_song[(track, currency)] if track else to_artist[currency], by_payer[(payer or None, currency)]):
            acc[0] += int(n)
            acc[1] += int(amount)
    songs = sorted(to_song.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:limit]
    titles = dict(await _rows(ctx, f"SELECT uri, title FROM track WHERE uri IN ({','.join('?' * len(songs))})",
                              [t for (t, _c), _ in songs])) if songs else {}
    known = await handles(ctx, sorted({p for p, _c in by_payer if p}))
    tippers = sorted(((known.get(p or "", INVALID_HANDLE), p or "", c, n, a) for (p, c), (n, a) in by_payer.items()),
                     key=lambda x: (-x[4], -x[3], x[0], x[1], x[2]))[:limit]
    # payouts: made in the period, pending now
    made, pending = [], []
    made_total: dict[str, int] = defaultdict(int)
    pending_total: dict[str, int] = defaultdict(int)
    for pid, amount, currency, status, per, created, updated, uri in payouts:
        view: dict[str, Any] = {"id": pid, "amount": amount, "currency": currency, "status": status, "period": per,
                                "createdAt": created}
        if uri and uri.startswith("at://"):
            view["uri"] = uri
        if status == "paid":
            view["paidAt"] = updated
            made.append(view)
            made_total[currency] += amount
        else:
            pending.append(view)
            pending_total[currency] += amount
    made.sort(key=lambda v: (v["paidAt"], v["id"]), reverse=True)
    return {
        "artist": artist, "start": start, "end": end, "granularity": granularity, "currencies": currencies,
        "totals": {"money": [_money_row(c, totals[c]) for c in currencies], "purchaseClicks": sum(clicks.values())},
        "buckets": series,
        "tips": {
            "artist": [{"currency": c, "count": n, "amount": a} for c, (n, a) in sorted(to_artist.items())],
            "songs": [{"track": t, **({"title": titles[t]} if t in titles else {}), "currency": c, "count": n,
                       "amount": a} for (t, c), (n, a) in songs],
            "topTippers": [{"handle": h, "currency": c, "count": n, "amount": a} for h, _p, c, n, a in tippers]},
        "purchaseClicks": [{"track": uri, **({"title": title} if title is not None else {}), "clicks": int(n)}
                           for uri, title, n in top_clicks],
        "balance": _amounts({c: a for c, a in balance}),
        "payouts": {"made": made, "pending": pending, "madeTotal": _amounts(made_total),
                    "pendingTotal": _amounts(pending_total)},
    }


# -- getConversion ---------------------------------------------------------------------------------

#: Each listener's first paid service period that starts in [:lo, :hi): (``did``, its start ``first``).
_CONVERTERS = (f"SELECT did, MIN(period_start) AS first FROM subscription_invoice WHERE {_PAID} GROUP BY did "
               "HAVING MIN(period_start) >= :lo AND MIN(period_start) < :hi")
#: A stream of listener ``c.did`` of a track in the repo whose AT-URIs fall in [:track_lo, :track_hi),
#: dated in the ``BEFORE_CONVERTING_DAYS`` days before ``c.first`` (exclusive): found in the index
#: ``play_listener_track_streams`` (listener, track URI, time) without reading a play. (The caller
#: checks that the listener is in standing.)
_STREAMED_BEFORE = ("SELECT 1 FROM play p WHERE p.did = c.did AND p.stream = 1 AND p.track_uri >= :track_lo "
                    "AND p.track_uri < :track_hi AND p.sort_at >= strftime('%Y-%m-%dT%H:%M:%fZ', c.first, "
                    f"'-{BEFORE_CONVERTING_DAYS} days') AND p.sort_at < c.first")
#: A stream of listener ``{x}`` dated in [:start, :end] (``listener_day``, by its primary key).
_STREAMED = "SELECT 1 FROM listener_day d WHERE d.did = {x} AND d.day BETWEEN :start AND :end AND d.stream_ms > 0"
#: Paid invoices whose service period started before the instant :lo and ended at or after it (a
#: listener with one was on a paid tier when a period beginning at :lo began).
_PAID_BEFORE = (f"SELECT DISTINCT did FROM subscription_invoice INDEXED BY subscription_invoice_paid_end "
                f"WHERE {_PAID} AND period_end >= :lo AND period_start < :lo")


def _period_args(start: str, end: str) -> dict[str, str]:
    return {"start": start, "end": end, "lo": instant(start), "hi": after(end)}


async def converters_by_day(ctx: ViewContext, start: str, end: str, artist: str | None) -> list[tuple[str, int, int]]:
    """[(day, converters, of whom streamed ``artist``)] for the days of [start, end] with any: the
    listeners whose first paid service period starts that day, and (with ``artist``; else 0) those,
    in standing, with a stream (paid or free) of a track in the artist's repo (the authority of its
    AT-URI), dated in the ``BEFORE_CONVERTING_DAYS`` days before that instant."""
    streamed = (f"SUM(CASE WHEN EXISTS ({_STREAMED_BEFORE}) AND {did_in_standing('c.did')} THEN 1 ELSE 0 END)"
                if artist else "0")
    prefix = f"at://{artist}/"
    rows = await _rows(ctx, f"SELECT substr(c.first, 1, 10) AS d, COUNT(*), {streamed} FROM ({_CONVERTERS}) c "
                            f"GROUP BY d ORDER BY d",
                       {**_period_args(start, end), "track_lo": prefix, "track_hi": prefix[:-1] + "0"})  # '0' > '/'
    return [(d, int(n), int(k)) for d, n, k in rows]


async def free_to_paid(ctx: ViewContext, start: str, end: str) -> dict[str, int]:
    """``{converters, activeFreeListeners, convertedActive, conversionRateBps}`` over [start, end]
    (see the getConversion lexicon): the converters; listeners in standing with a stream dated in
    the period (``listener_day``) who were on the free tier when it began (no paid service period
    started before it and ended at or after it: so a converter always was), the converters among
    them, and the ratio in bps. Counted as (listeners who streamed) - (those of them on a paid tier
    when it began) - (those out of standing who streamed, less those of them on a paid tier), each
    of the latter and of the converters checked by one seek in ``listener_day``; the few accounts
    out of standing are read from their own index (``standing.OUT_OF_STANDING_SQL``)."""
    ((active, paid_before, out, out_paid_before, conv, converted),) = await _rows(
        ctx, f"WITH c AS MATERIALIZED ({_CONVERTERS}), o AS MATERIALIZED (SELECT x.did FROM ({OUT_OF_STANDING_SQL}) x "
             f"WHERE EXISTS ({_STREAMED.format(x='x.did')})) "
             f"SELECT (SELECT COUNT(*) FROM (SELECT DISTINCT did FROM "
             f"listener_day WHERE day BETWEEN :start AND :end AND stream_ms > 0) AS d), (SELECT COUNT(*) FROM ({_PAID_BEFORE}) "
             f"p WHERE EXISTS ({_STREAMED.format(x='p.did')})), (SELECT COUNT(*) FROM o), "
             f"(SELECT COUNT(*) FROM o WHERE o.did IN ({_PAID_BEFORE})), (SELECT COUNT(*) FROM c), "
             f"(SELECT COUNT(*) FROM c WHERE EXISTS ({_STREAMED.format(x='c.did')}) AND {did_in_standing('c.did')})",
        _period_args(start, end))
    n = (active - out) - (paid_before - out_paid_before)
    return {"converters": conv, "activeFreeListeners": n, "convertedActive": converted,
            "conversionRateBps": (converted * 20000 + n) // (2 * n) if n else 0}


async def conversion(ctx: ViewContext, artist: str | None, start: str, end: str, granularity: str,
                     labels: list[str]) -> dict[str, Any]:
    """The ``getConversion`` output (see its lexicon): ``{artist?, start, end, granularity, totals:
    {converters, streamedArtist?}, buckets: [{bucket, converters, streamedArtist?}]}``, and without
    ``artist`` (network-wide) ``activeFreeListeners``, ``convertedActive``, ``conversionRateBps``."""
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for day, n, streamed in await converters_by_day(ctx, start, end, artist):
        acc = per[bucket_of(labels, day)]
        acc[0] += n
        acc[1] += streamed

    def counts(n: int, streamed: int) -> dict[str, int]:
        return {"converters": n, **({"streamedArtist": streamed} if artist else {})}
    out: dict[str, Any] = {**({"artist": artist} if artist else {}), "start": start, "end": end,
                           "granularity": granularity,
                           "totals": counts(sum(x[0] for x in per.values()), sum(x[1] for x in per.values())),
                           "buckets": [{"bucket": b, **counts(*per.get(b, (0, 0)))} for b in labels]}
    if not artist:
        rate = await free_to_paid(ctx, start, end)
        out |= {k: v for k, v in rate.items() if k != "converters"}
    return out


# -- getOverview -----------------------------------------------------------------------------------

async def _ledger_by_kind(ctx: ViewContext, start: str, end: str) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(kind, currency, account class) -> (sum of postings, postings) for the ledger transactions
    dated on a day of [start, end], from ``ledger_day`` (migration 0014: kept by a trigger on every
    posting). The class is the account without its DID (``credit``, ``subscription``,
    ``earnings``) or the whole account name (``platform:revenue``, ``ads:pool``, ...)."""
    rows = await _rows(ctx, "SELECT kind, currency, account, SUM(amount), SUM(entries) FROM ledger_day "
                            "WHERE day BETWEEN ? AND ? GROUP BY kind, currency, account", (start, end))
    return {(k, c, cls): (int(s), int(n)) for k, c, cls, s, n in rows}


#: Per listener holding a paid tier at the first instant of the period [:lo, :hi) (``s``) or at
#: its last, the instant just before :hi (``e``): one range of the paid invoices' end index each.
_HOLDING = ("SELECT did, MAX(s) AS s, MAX(e) AS e FROM ("
            "SELECT did, 1 AS s, 0 AS e FROM subscription_invoice INDEXED BY subscription_invoice_paid_end "
            f"WHERE {_PAID} AND period_end > :lo AND period_start <= :lo UNION ALL "
            "SELECT did, 0, 1 FROM subscription_invoice INDEXED BY subscription_invoice_paid_end "
            f"WHERE {_PAID} AND period_end >= :hi AND period_start < :hi) AS h GROUP BY did")


async def subscribers(ctx: ViewContext, lo: str, hi: str) -> tuple[dict[str, int], dict[str, int]]:
    """``({active, activeAtStart, new, churned}, {currency: MRR})`` for the period [lo, hi) (instants):
    listeners holding a paid tier at its first and last instants, and the sum of ``amount_paid`` of
    the paid invoices covering its last instant."""
    counts, mrr = await asyncio.gather(
        _rows(ctx, f"SELECT COALESCE(SUM(e), 0), COALESCE(SUM(s), 0), "
                   f"COALESCE(SUM(CASE WHEN e = 1 AND s = 0 THEN 1 ELSE 0 END), 0), "
                   f"COALESCE(SUM(CASE WHEN s = 1 AND e = 0 THEN 1 ELSE 0 END), 0) FROM ({_HOLDING}) AS hs",
              {"lo": lo, "hi": hi}),
        _rows(ctx, "SELECT currency, SUM(amount_paid) FROM subscription_invoice INDEXED BY subscription_invoice_paid_end "
                   f"WHERE {_PAID} AND period_end >= :hi AND period_start < :hi GROUP BY currency", {"hi": hi}))
    active, at_start, new, churned = counts[0]
    return ({"active": active, "activeAtStart": at_start, "new": new, "churned": churned},
            {c: int(a) for c, a in mrr})


async def overview(ctx: ViewContext, start: str, end: str, firehose: tuple[bool, float | None]) -> dict[str, Any]:
    """The ``getOverview`` output (see its lexicon for every figure): ``{start, end, currencies,
    money: [{currency, creditSold, creditPurchases, creditRefunded, subscriptionRevenue, tips,
    tipCount, tipsRefunded, adPool, platformShare, payoutsMade, payoutsPending, mrr}],
    subscriptions: {active, activeAtStart, new, churned}, adPool: [{period, currency, amount,
    distributed}], payouts: {made, pending}, conversion: {converters, activeFreeListeners,
    convertedActive, conversionRateBps}, indexing: {firehoseConnected, firehoseCurrent, lagMs?,
    maxLagMs, rejected, rejectedInPeriod, desynchronizedRepos}}``. ``firehose`` is (connected, lag
    in s or None) of the process serving the request."""
    lo, hi = instant(start), after(end)
    (by_kind, (subs, mrr), pending_bal, ads, payouts_made, payouts_pending, rejected, rejected_now, desync,
     rate) = await asyncio.gather(
        _ledger_by_kind(ctx, start, end),
        subscribers(ctx, lo, hi),
        _rows(ctx, "SELECT currency, SUM(amount) FROM ledger_entry WHERE account = ? GROUP BY currency", (PENDING,)),
        _rows(ctx, "SELECT period, currency, amount, distributed_txn IS NOT NULL FROM ad_pool "
                   "WHERE period BETWEEN ? AND ? ORDER BY period", (start[:7], end[:7])),
        _rows(ctx, "SELECT currency, COUNT(*), SUM(amount) FROM payout WHERE status = 'paid' AND updated_at >= ? "
                   "AND updated_at < ? GROUP BY currency ORDER BY currency", (lo, hi)),
        _rows(ctx, "SELECT currency, COUNT(*), SUM(amount) FROM payout WHERE status = 'pending' GROUP BY currency "
                   "ORDER BY currency", ()),
        _rows(ctx, "SELECT reason, COUNT(*) AS n FROM rejected_record WHERE rejected_at >= ? AND rejected_at < ? "
                   "GROUP BY reason ORDER BY n DESC, reason", (lo, hi)),
        _rows(ctx, "SELECT reason, COUNT(*) AS n FROM rejected_record GROUP BY reason ORDER BY n DESC, reason", ()),
        _rows(ctx, "SELECT COUNT(*) FROM repo_state WHERE status = 'desynchronized'", ()),
        free_to_paid(ctx, start, end))

    def get(kind: str, cls: str, currency: str) -> tuple[int, int]:
        return by_kind.get((kind, currency, cls), (0, 0))
    pending_now = {c: int(a) for c, a in pending_bal}
    currencies = sorted({c for _k, c, _cls in by_kind} | set(mrr) | {c for c, a in pending_now.items() if a})
    money = []
    for c in currencies:
        credit_sold, purchases = get("credit_purchase", "credit", c)
        tips, tip_count = get("tip", "credit", c)
        money.append({
            "currency": c, "creditSold": credit_sold, "creditPurchases": purchases,
            "creditRefunded": -get("credit_refund", "credit", c)[0],
            "subscriptionRevenue": get("subscription_payment", "subscription", c)[0],
            "tips": -tips, "tipCount": tip_count, "tipsRefunded": get("tip_refund", "credit", c)[0],
            "adPool": get("ad_revenue", AD_POOL, c)[0],
            "platformShare": sum(s for (_k, cur, cls), (s, _n) in by_kind.items() if cls == PLATFORM and cur == c),
            "payoutsMade": -get("payout", PENDING, c)[0], "payoutsPending": pending_now.get(c, 0), "mrr": mrr.get(c, 0)})
    lag = firehose[1]
    indexing: dict[str, Any] = {
        "firehoseConnected": firehose[0], "firehoseCurrent": firehose[0] and (lag is None or lag < MAX_LAG_S),
        "maxLagMs": MAX_LAG_S * 1000,
        "rejected": [{"reason": r, "count": n} for r, n in rejected_now],
        "rejectedInPeriod": [{"reason": r, "count": n} for r, n in rejected],
        "desynchronizedRepos": desync[0][0]}
    if lag is not None:
        indexing["lagMs"] = round(lag * 1000)
    return {
        "start": start, "end": end, "currencies": currencies, "money": money,
        "subscriptions": subs,
        "adPool": [{"period": p, "currency": c, "amount": a, "distributed": bool(d)} for p, c, a, d in ads],
        "payouts": {"made": [{"currency": c, "count": n, "amount": a} for c, n, a in payouts_made],
                    "pending": [{"currency": c, "count": n, "amount": a} for c, n, a in payouts_pending]},
        "conversion": rate,
        "indexing": indexing,
    }
