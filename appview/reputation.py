"""Reputation-weighted votes (issue 13): how much each vote on a track counts, and why.

Every signal is one anyone can check on the network, and each vote's weight is explained
(``fm.openmusic.social.getVoteBreakdown``). A vote's weight is in thousandths of a vote (1000 = one
ordinary vote), the product of these factors, each in thousandths, applied in this order with the
result rounded down at each step (integers only):

- ``heard``: 1000 when the voter streamed the track before voting (a ``play`` that counted as a
  stream, begun before the vote), else ``UNHEARD`` (100): a vote without listening counts little.
- ``age``: the account's age when it voted, from the PLC directory's audit log when known, else from
  when this AppView first saw it (``actor.first_seen``; neither can be backdated by the account):
  under 1 day 250, under 7 days 500, under ``YOUNG_DAYS`` (30) 750, then 1000.
- ``history``: on how many UTC days before today the account streamed anything
  (``reputation.history_days``, at most 30, by ``refresh``): none 100, 1 or 2 days 250, 3 to 6 days 500, 7 to 29 days 750, then 1000.
  An account that only just appeared, or waited idle to look old, has no listening history.
- ``paid``: 1250 when a paid subscription invoice (our signed subscription records) covered the
  moment of the vote.
- ``consensus``: for an account with at least ``MIN_JUDGED`` past votes on tracks where at least 5
  established accounts had voted (net direction not a tie, the judged vote itself left out), 500 +
  1000 x the share of them that agreed with those accounts' net direction (so 500 to 1500); else
  1000. Recomputed by ``refresh``, with "established" as of that time.
- ``cluster``: accounts that are not **established** (30 days old with 7 days of listening) on one
  *small* PDS domain (one with fewer than ``SMALL_HOST`` established accounts: a new server, not a
  big shared host) voting the same way on the same track count as one when they are ``CLUSTER_MIN``
  (3) or more: each weighs 1000 / n. A domain is the PDS host's registrable part (``domain``), so
  subdomains, ports and paths of one server are one domain. People and agents cluster apart; likely
  farms are left out of the count.

and a vote weighs nothing when it is by the track's artist or one of its split recipients
(``artist``, ``split``), by an account marked as a likely farm (``farm``, by ``refresh``: listening no
person produces), or beyond the rate limit (``rate``: an account's votes after its first
``RATE_PER_HOUR`` (30) in one UTC hour, by ``createdAt``, weigh nothing). Accounts whose Open Music
profile carries the self-label ``bot`` (automated accounts, AI agents) are counted apart: their votes
make the **agent score**, the others the **human score** (the one the trending chart uses).

Only accounts in standing vote and listen here (``indexer.standing``: active, not suspended or taken
down by a label): ``vote_current`` and the rollups hold no one else, and ``listener_days`` checks
again; an account out of standing is not an established account of its domain either.

Listening is weighed the same way for the trending chart (``listener_days``): each listener counts
once per track and UTC day (however many streams), with the ``age`` (at the start of that day),
``history`` and ``cluster`` factors (same track and day), zero for likely farms and bots. Cluster
sizes count the votes or listeners considered: all of a track's votes in ``getVoteBreakdown``, the
trending window's in the chart.

``refresh`` recomputes the signals that need history (``reputation`` and ``reputation_host``,
migration 0018): listening history, established accounts per domain, and
- a likely **farm**: in the last ``FARM_DAYS`` days, at least ``OVERLAP_MIN`` plays began before the
  previous play could have been heard (its start + heard time, less 5 s), making up a quarter or more
  of its plays; or plays in at least ``CLOCK_HOURS`` of the 24 hours of a UTC day on
  ``CLOCK_DAYS`` days or more (no quiet stretch);
- **consensus** agreement, as above.

Known limits: ``createdAt`` is the client's clock (never later than when we indexed the record), so
votes and plays can be spread into the past to pass the rate limit and the farm checks (the
AppView's own arrival times would say more, but a backfill brings everything at once); a ring with
one registrable domain per account escapes clustering, but each domain costs money and each account
without listening history weighs at most a tenth of a vote (so 500 such accounts, each a year old,
outweigh 30 established listeners: a year of waiting and 500 domains)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiosqlite

from appview.views import ACTIVE, ViewContext, artist_views
from appview.xrpc import decode_cursor, encode_cursor, invalid, not_found
from core import periodic
from core.db import write_transaction
from core.lexicons import TRACK, is_track_uri
from indexer.standing import IN_STANDING

log = logging.getLogger("openmusic.reputation")

Handler = Callable[[ViewContext, dict[str, Any]], Awaitable[dict[str, Any]]]

SCALE = 1000
UNHEARD = 100
#: (age under this many days, factor): the ``age`` factor's steps; older accounts get SCALE.
AGE_STEPS = ((1, 250), (7, 500), (30, 750))
YOUNG_DAYS = 30
PAID = 1250
MIN_JUDGED = 5
#: Established voters a track needs before its net direction judges others' votes on it.
CONSENSUS_VOTERS = 5
CLUSTER_MIN = 3
#: A domain with this many established accounts or more is a big shared host: no clustering there.
SMALL_HOST = 50
#: (listening days under this, factor): the ``history`` factor's steps; more days get SCALE.
HISTORY_STEPS = ((1, 100), (3, 250), (7, 500), (30, 750))
#: An established account: at least this old (days) with at least this many days of listening.
ESTABLISHED_HISTORY = 7
RATE_PER_HOUR = 30
FARM_DAYS = 30
OVERLAP_MIN = 10
OVERLAP_TOLERANCE_MS = 5000
CLOCK_HOURS = 21
CLOCK_DAYS = 2
#: How often the runtime reruns ``refresh``, s.
REFRESH_SECONDS = 600.0
#: Why a vote weighs nothing, or less: the codes ``getVoteBreakdown`` gives.
REASONS = ("artist", "split", "farm", "rate", "unheard", "young", "new", "cluster", "paid", "consensus", "agent")


@dataclass
class VoteFacts:
    """What is known about one vote (a ``vote_current`` row): ``value`` +1 / -1, ``sort_at`` the vote's
    time, ``age_days`` the account's age then, ``host`` its PDS domain (``domain``), ``small_host``
    whether that domain has fewer than ``SMALL_HOST`` established accounts, ``history_days`` its days
    of listening (at most 30), the rest as in the module doc."""

    subject: str
    did: str
    uri: str
    value: int
    sort_at: str
    excluded: str | None
    heard: bool
    age_days: float
    host: str
    paid: bool
    bot: bool
    farm: bool
    judged: int
    agreed: int
    earlier_in_hour: int
    history_days: int = 0
    small_host: bool = True
    cluster: int = 1
    factors: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    weight: int = 0

    @property
    def established(self) -> bool:
        """30 days old with 7 days of listening: never clustered."""
        return self.age_days >= YOUNG_DAYS and self.history_days >= ESTABLISHED_HISTORY

    @property
    def clusterable(self) -> bool:
        """Counted in its domain's clusters: not established, on a small domain, not a likely farm."""
        return not self.established and self.small_host and not self.farm


def age_factor(age_days: float) -> int:
    """The ``age`` factor (thousandths) of an account ``age_days`` old."""
    for days, factor in AGE_STEPS:
        if age_days < days:
            return factor
    return SCALE


def history_factor(days: int) -> int:
    """The ``history`` factor (thousandths) of an account that streamed on ``days`` UTC days."""
    for under, factor in HISTORY_STEPS:
        if days < under:
            return factor
    return SCALE


def domain(pds: str | None) -> str:
    """The registrable domain of a PDS URL, lower-cased, without port or path: the last two labels of
    its host name, or three under a two-letter country code whose second level is a common public
    suffix (``co.uk``, ``com.au``); an IP address or a one-label name (``localhost``) as it is; ``?``
    when unknown. An approximation of the Public Suffix List that needs no download."""
    host = (urlsplit(pds).hostname or "") if pds and "://" in pds else ""
    host = host.rstrip(".").lower()
    if not host:
        return "?"
    labels = host.split(".")
    if len(labels) <= 2 or all(part.isdigit() for part in labels) or ":" in host:
        return host
    if len(labels[-1]) == 2 and labels[-2] in ("co", "com", "net", "org", "gov", "edu", "ac", "ne", "or"):
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def weigh(f: VoteFacts) -> VoteFacts:
    """Fill ``f.factors``, ``f.reasons`` and ``f.weight`` (thousandths of a vote, >= 0) from the facts
    (``f.cluster`` already set). Returns ``f``."""
    zero = ("artist" if f.excluded == "artist" else "split" if f.excluded == "split" else
            "farm" if f.farm else "rate" if f.earlier_in_hour >= RATE_PER_HOUR else None)
    if f.bot:
        f.reasons.append("agent")
    if zero:
        f.reasons.append(zero)
        f.weight = 0
        return f
    factors = {"heard": SCALE if f.heard else UNHEARD, "age": age_factor(f.age_days),
               "history": history_factor(f.history_days), "paid": PAID if f.paid else SCALE,
               "consensus": SCALE // 2 + SCALE * f.agreed // f.judged if f.judged >= MIN_JUDGED else SCALE,
               "cluster": SCALE // f.cluster if f.clusterable and f.cluster >= CLUSTER_MIN else SCALE}
    for name, code in (("heard", "unheard"), ("age", "young"), ("history", "new"), ("cluster", "cluster")):
        if factors[name] < SCALE:
            f.reasons.append(code)
    if f.paid:
        f.reasons.append("paid")
    if factors["consensus"] != SCALE:
        f.reasons.append("consensus")
    weight = SCALE
    for value in factors.values():
        weight = weight * value // SCALE
    f.factors, f.weight = factors, weight
    return f


def cluster_sizes(items: Iterable[VoteFacts]) -> None:
    """Set each clusterable vote's ``cluster``: how many clusterable accounts on its domain voted the
    same way on the same track (agents apart from people)."""
    items = list(items)
    sizes = Counter((f.subject, f.value, f.host, f.bot) for f in items if f.clusterable)
    for f in items:
        if f.clusterable:
            f.cluster = sizes[(f.subject, f.value, f.host, f.bot)]


async def host_sizes(ctx: ViewContext) -> dict[str, int]:
    """Established accounts per domain (``reputation_host``, by ``refresh``)."""
    cur = await ctx.db.execute("SELECT domain, established FROM reputation_host")
    return dict(await cur.fetchall())


_BORN = "COALESCE(a.plc_created_at, a.first_seen)"
FACTS_SQL = f"""
SELECT v.subject, v.did, v.uri, v.value, v.sort_at,
  CASE WHEN v.did = t.did THEN 'artist'
       WHEN EXISTS (SELECT 1 FROM track_facet sp WHERE sp.kind = 'split' AND sp.value = v.did
                    AND sp.track_uri = v.subject) THEN 'split' END,
  EXISTS (SELECT 1 FROM play p WHERE p.did = v.did AND p.track_uri = v.subject AND p.stream = 1
          AND p.sort_at < v.sort_at),
  MAX(0.0, julianday(v.sort_at) - julianday(COALESCE({_BORN}, v.sort_at))),
  a.pds,
  EXISTS (SELECT 1 FROM subscription_invoice si WHERE si.did = v.did AND si.status = 'paid'
          AND si.amount_paid > 0 AND si.period_start <= v.sort_at AND si.period_end > v.sort_at),
  COALESCE(pr.bot, 0), COALESCE(r.farm, 0), COALESCE(r.judged, 0), COALESCE(r.agreed, 0), COALESCE(r.history_days, 0),
  (SELECT COUNT(*) FROM vote_current h WHERE h.did = v.did AND h.sort_at >= substr(v.sort_at, 1, 13)
   AND (h.sort_at < v.sort_at OR (h.sort_at = v.sort_at AND h.subject < v.subject)))
FROM vote_current v JOIN track t ON t.uri = v.subject
LEFT JOIN actor a ON a.did = v.did LEFT JOIN profile pr ON pr.did = v.did LEFT JOIN reputation r ON r.did = v.did
"""


async def vote_facts(ctx: ViewContext, where: str, args: list[Any]) -> list[VoteFacts]:
    """The weighed votes (``vote_current``: the latest vote per track of each account in standing)
    matching ``where`` (SQL on ``v``, the vote, and ``t``, its track), with clusters and weights."""
    hosts = await host_sizes(ctx)
    cur = await ctx.db.execute(f"{FACTS_SQL} WHERE {where}", args)
    out = []
    for (subject, did, uri, value, sort_at, excluded, heard, age, pds, paid, bot, farm, judged, agreed, history,
         earlier) in await cur.fetchall():
        host = domain(pds)
        out.append(VoteFacts(subject, did, uri, value, sort_at, excluded, bool(heard), age, host, bool(paid), bool(bot),
                             bool(farm), judged, agreed, earlier, history, hosts.get(host, 0) < SMALL_HOST))
    cluster_sizes(out)
    for f in out:
        weigh(f)
    return out


def scores(facts: Iterable[VoteFacts]) -> dict[str, tuple[int, int]]:
    """Per track: (human score, agent score), each the sum of value x weight, thousandths of a vote."""
    out: dict[str, list[int]] = {}
    for f in facts:
        pair = out.setdefault(f.subject, [0, 0])
        pair[1 if f.bot else 0] += f.value * f.weight
    return {k: (h, a) for k, (h, a) in out.items()}


async def listener_days(ctx: ViewContext, since: str) -> list[tuple[str, str, int]]:
    """(track URI, UTC day, weight in thousandths) for each listener who streamed a track on a day
    since ``since`` (YYYY-MM-DD, from ``track_day_listener``), listeners in standing only
    (``indexer.standing``): ``age`` (at the start of that day) x ``history`` x ``cluster`` as for
    votes, 0 for likely farms and bots (left out of clusters)."""
    hosts = await host_sizes(ctx)
    cur = await ctx.db.execute(
        f"SELECT l.track_uri, l.day, MAX(0.0, julianday(l.day) - julianday(COALESCE({_BORN}, l.day))), a.pds, "
        f"CASE WHEN COALESCE(r.farm, 0) = 1 OR COALESCE(pr.bot, 0) = 1 THEN 1 ELSE 0 END, COALESCE(r.history_days, 0) "
        f"FROM (SELECT track_uri, day, listener FROM track_day_listener WHERE day >= ? "
        f"      GROUP BY track_uri, day, listener HAVING SUM(streams) > 0) l "
        f"JOIN analytics_listener al ON al.id = l.listener LEFT JOIN actor a ON a.did = al.did "
        f"LEFT JOIN profile pr ON pr.did = al.did LEFT JOIN reputation r ON r.did = al.did "
        f"WHERE {IN_STANDING}", (since,))
    rows = await cur.fetchall()
    return await asyncio.to_thread(_weigh_listeners, rows, hosts)


def _weigh_listeners(rows: list[tuple], hosts: dict[str, int]) -> list[tuple[str, str, int]]:
    facts = []
    for track, day, age, pds, zero, history in rows:
        host = domain(pds)
        clusterable = not zero and hosts.get(host, 0) < SMALL_HOST and not (
            age >= YOUNG_DAYS and history >= ESTABLISHED_HISTORY)
        facts.append((track, day, age, host, zero, history, clusterable))
    sizes = Counter((track, day, host) for track, day, _, host, _, _, c in facts if c)
    out = []
    for track, day, age, host, zero, history, clusterable in facts:
        if zero:
            continue
        weight = age_factor(age) * history_factor(history) // SCALE
        n = sizes[(track, day, host)] if clusterable else 1
        if n >= CLUSTER_MIN:
            weight = weight * (SCALE // n) // SCALE
        out.append((track, day, weight))
    return out


# -- refresh: the signals that need history -------------------------------------------------------

def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


async def refresh(conn: aiosqlite.Connection, now: datetime | None = None) -> dict[str, int]:
    """Recompute the ``reputation`` table from plays and votes (one transaction on ``conn``, an
    autocommitting writer connection) and ``reputation_host``. Returns counts: ``accounts`` (rows
    written), ``farms``, ``judged`` (accounts with a consensus factor), ``listeners`` (with a listening
    history), ``hosts`` (domains with established accounts). Farm reasons: ``overlap:<n>/<plays>`` and
    ``clock:<days>``."""
    now = now or datetime.now(UTC)
    since = _iso(now - timedelta(days=FARM_DAYS))
    established = _iso(now - timedelta(days=YOUNG_DAYS))
    farms: dict[str, str] = {}
    cur = await conn.execute(
        "SELECT did, COUNT(*), SUM(overlap) FROM ("
        "  SELECT did, CASE WHEN julianday(sort_at) * 86400000.0 < LAG(julianday(sort_at) * 86400000.0 "
        "    + COALESCE(heard_ms, listened_ms)) OVER w - ? THEN 1 ELSE 0 END AS overlap "
        "  FROM play WHERE sort_at >= ? WINDOW w AS (PARTITION BY did ORDER BY sort_at, uri)) AS x "
        "GROUP BY did HAVING SUM(overlap) >= ? AND SUM(overlap) * 4 >= COUNT(*)",
        (OVERLAP_TOLERANCE_MS, since, OVERLAP_MIN))
    for did, plays, overlaps in await cur.fetchall():
        farms[did] = f"overlap:{overlaps}/{plays}"
    cur = await conn.execute(
        "SELECT did, COUNT(*) FROM (SELECT did, substr(sort_at, 1, 10) AS day FROM play WHERE sort_at >= ? "
        "  GROUP BY did, day HAVING COUNT(DISTINCT substr(sort_at, 12, 2)) >= ?) AS d "
        "GROUP BY did HAVING COUNT(*) >= ?", (since, CLOCK_HOURS, CLOCK_DAYS))
    for did, days in await cur.fetchall():
        farms.setdefault(did, f"clock:{days}")
    # consensus: each track's net direction among established accounts, less the judged vote itself
    cur = await conn.execute(
        "WITH est AS (SELECT v.subject, v.did, v.value FROM vote_current v JOIN actor a ON a.did = v.did "
        "             WHERE COALESCE(a.plc_created_at, a.first_seen) <= ?), "
        "cons AS (SELECT subject, SUM(value) AS net, COUNT(*) AS n FROM est GROUP BY subject "
        "         HAVING COUNT(*) >= ?) "
        "SELECT v.did, COUNT(*), SUM(CASE WHEN v.value * (c.net - COALESCE(e.value, 0)) > 0 THEN 1 ELSE 0 END) FROM vote_current v "
        "JOIN cons c ON c.subject = v.subject LEFT JOIN est e ON e.subject = v.subject AND e.did = v.did "
        "WHERE c.n - CASE WHEN e.did IS NOT NULL THEN 1 ELSE 0 END >= ? AND c.net - COALESCE(e.value, 0) <> 0 GROUP BY v.did",
        (established, CONSENSUS_VOTERS, CONSENSUS_VOTERS))
    judged = {did: (n, agreed) for did, n, agreed in await cur.fetchall()}
    cur = await conn.execute("SELECT did, MIN(COUNT(*), 30) FROM listener_day WHERE stream_ms > 0 AND day < ? "
                             "GROUP BY did", (now.date().isoformat(),))
    history = dict(await cur.fetchall())
    # established accounts (old enough, listened on enough days, not farms, in standing) per PDS domain
    cur = await conn.execute(f"SELECT a.did, a.pds FROM actor a WHERE {IN_STANDING} "
                             f"AND COALESCE(a.plc_created_at, a.first_seen) <= ?", (established,))
    hosts = Counter(domain(pds) for did, pds in await cur.fetchall()
                    if history.get(did, 0) >= ESTABLISHED_HISTORY and did not in farms)
    stamp = _iso(now)
    rows = [(did, 1 if did in farms else 0, farms.get(did), *judged.get(did, (0, 0)), history.get(did, 0), stamp)
            for did in farms.keys() | judged.keys() | history.keys()]
    # a failed ROLLBACK never replaces the error (least of all a cancellation, which
    # core.periodic.repeat would then log and sleep through): write_transaction sees to it
    async with write_transaction(conn):
        await conn.execute("DELETE FROM reputation")
        await conn.executemany("INSERT INTO reputation (did, farm, farm_reason, judged, agreed, history_days, "
                               "computed_at) VALUES (?,?,?,?,?,?,?)", rows)
        await conn.execute("DELETE FROM reputation_host")
        await conn.executemany("INSERT INTO reputation_host (domain, established) VALUES (?, ?)", hosts.items())
    return {"accounts": len(rows), "farms": len(farms), "judged": len(judged), "listeners": len(history),
            "hosts": len(hosts)}


async def run_periodically(conn: aiosqlite.Connection, every: float = REFRESH_SECONDS) -> None:
    """``refresh`` now and every ``every`` seconds until cancelled (``core.periodic.repeat``); a
    failure is logged, not raised."""
    async def work() -> None:
        log.info("reputation refreshed: %s", await refresh(conn))
    await periodic.repeat("reputation refresh", work, lambda _: every, every, log)


# -- getVoteBreakdown ---------------------------------------------------------------------------------

async def get_vote_breakdown(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.social.getVoteBreakdown: the track's human and agent scores (thousandths of a
    vote), how many votes each reason touched, and a page of the votes, heaviest first (then oldest),
    each with its weight, factors and reasons."""
    uri = p["uri"]
    if not is_track_uri(uri):
        raise invalid(f"{uri} is not a {TRACK} AT-URI")
    cur = await ctx.db.execute(f"SELECT 1 FROM track t LEFT JOIN actor a ON a.did = t.did WHERE t.uri = ? AND {ACTIVE}",
                               (uri,))
    if not await cur.fetchone():
        raise not_found("NotFound", f"track {uri} is not indexed")
    facts = await vote_facts(ctx, "v.subject = ?", [uri])
    human, agent = scores(facts).get(uri, (0, 0))
    reasons = Counter(r for f in facts for r in f.reasons)
    facts.sort(key=lambda f: (-f.weight, f.sort_at, f.did), reverse=False)
    start = 0
    if after := decode_cursor(p.get("cursor"), (int,)):
        start = after[0]
        if start < 0:
            raise invalid("malformed cursor")
    page = facts[start:start + p["limit"]]
    voters = await artist_views(ctx, [f.did for f in page])
    votes = []
    for f in page:
        view: dict[str, Any] = {"voter": voters[f.did], "uri": f.uri, "direction": "up" if f.value > 0 else "down",
                                "createdAt": f.sort_at, "weight": f.weight, "kind": "agent" if f.bot else "human",
                                "reasons": f.reasons}
        if f.factors:
            view["factors"] = f.factors
        if f.cluster > 1 and f.clusterable:
            view["clusterSize"] = f.cluster
        votes.append(view)
    out: dict[str, Any] = {
        "uri": uri, "humanScore": human, "agentScore": agent,
        "votesUp": sum(1 for f in facts if f.value > 0), "votesDown": sum(1 for f in facts if f.value < 0),
        "counted": sum(1 for f in facts if f.weight > 0),
        "reasonCounts": [{"reason": r, "count": reasons[r]} for r in REASONS if reasons[r]],
        "votes": votes}
    if start + len(page) < len(facts):
        out["cursor"] = encode_cursor(start + len(page))
    return out


REPUTATION_QUERIES: dict[str, Handler] = {
    "fm.openmusic.social.getVoteBreakdown": get_vote_breakdown,
}
