"""Reputation-weighted votes (``appview.reputation``, ``fm.openmusic.social.getVoteBreakdown``) and
the sybil simulation the issue asks for.

Units: the factors multiply in thousandths, rounded down at each step; the reasons that make a vote
weigh nothing override the factors; the consensus factor spans 500 to 1500.

A worked example on a real SQLite index fed with decoded events (``tests.test_indexer_units``' ``env``)
on one track S by A, each voter's account first seen a year ago unless said, on its own PDS host:
every account has 30 days of listening; F0 streamed then voted up (1000); F1 voted up without listening (100); F2 streamed, voted up, and a
paid invoice covered that moment (1250); F3 streamed and voted down, first seen 3 days before (500);
F4 streamed and voted up, its profile self-labelled bot (agent score 1000); A (the artist) and F5 (a
split recipient) voted up (0 each); F6 voted on 31 tracks in one hour, S last (0: rate). Human score
1000 + 100 + 1250 - 500 = 1850. Then F0 is found to be a farm (11 plays each begun before the last
could be heard): its vote weighs 0, its listening drops out of trending, and getTrackStats shows its stream apart (``farmStreams``). Consensus: an account
whose 5 judged votes all agreed with 5 established accounts gets 1500, one whose 5 all disagreed 500.

The simulation: 500 accounts with no listening history each stream track R and vote it up; 30
established accounts (a year old, 30 days of listening) on 30 domains stream track H and vote it up.
H trends above R, by more than twice, whether the ring is fresh (streaming or not) on one host, on
subdomains, ports and paths of one domain (one cluster), on 125 domains of 4 (125 clusters) or on 500
domains of its own (no cluster: age and history hold it), or a year old and idle on the first three.
(A year-old idle ring on 500 domains of its own is the known limit: see ``appview.reputation``.)"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from appview import charts, reputation
from appview.reputation import REPUTATION_QUERIES, VoteFacts, weigh
from appview.xrpc import validate_params
from core.lexicons import PLAY, PROFILE, TRACK, VOTE, validator
from tests.records import DID, play, track
from tests.test_charts import Feed
from tests.test_indexer_units import commit, create, env, rkey  # noqa: F401  (env: a fixture)

BREAKDOWN = "fm.openmusic.social.getVoteBreakdown"
NOW = datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def ago(**delta: float) -> str:
    return iso(NOW - timedelta(**delta))


def decay(at: str) -> int:
    """The trending chart's weight of something ``at`` (a datetime string) by its UTC day's age."""
    return charts.WEIGHTS[(NOW.date() - datetime.fromisoformat(at.replace("Z", "+00:00")).date()).days]


def facts(**kw) -> VoteFacts:
    base = dict(subject="s", did="d", uri="u", value=1, sort_at=ago(), excluded=None, heard=True, age_days=400.0,
                host="h", paid=False, bot=False, farm=False, judged=0, agreed=0, earlier_in_hour=0, history_days=30)
    return VoteFacts(**(base | kw))


def test_factors_multiply_in_thousandths():
    assert weigh(facts()).weight == 1000 and weigh(facts()).reasons == []
    assert weigh(facts(heard=False)).weight == 100
    assert [weigh(facts(age_days=d)).weight for d in (0.5, 3, 20, 30)] == [250, 500, 750, 1000]
    assert weigh(facts(paid=True)).weight == 1250
    young_unheard = weigh(facts(heard=False, age_days=0.2, paid=True))
    assert young_unheard.weight == 1000 * 100 // 1000 * 250 // 1000 * 1250 // 1000 == 31
    assert young_unheard.reasons == ["unheard", "young", "paid"]
    assert weigh(facts(judged=5, agreed=5)).weight == 1500 and weigh(facts(judged=5, agreed=0)).weight == 500
    assert weigh(facts(judged=4, agreed=0)).weight == 1000  # too few judged votes to say
    assert weigh(facts(age_days=2, cluster=8)).weight == 500 * 125 // 1000
    assert weigh(facts(age_days=2, cluster=2)).weight == 500  # under CLUSTER_MIN: no cluster
    assert weigh(facts(cluster=50)).weight == 1000  # established accounts never cluster
    assert weigh(facts(age_days=2, cluster=8, small_host=False)).weight == 500  # nor on a big shared host
    assert [weigh(facts(history_days=d)).weight for d in (0, 2, 5, 20, 30)] == [100, 250, 500, 750, 1000]
    assert weigh(facts(history_days=0)).reasons == ["new"]
    # not established: 30 days old but only 6 days of listening, so it clusters
    assert weigh(facts(history_days=6, cluster=3)).weight == 500 * 333 // 1000


def test_domains():
    assert [reputation.domain(u) for u in ("https://pds.example.com", "https://A.b.Example.com:443/x/",
            "https://example.com", "https://pds.example.co.uk", "http://localhost:2583", "http://127.0.0.1:80",
            None, "nonsense", "https://morel.us-east.host.bsky.network")] == [
        "example.com", "example.com", "example.com", "example.co.uk", "localhost", "127.0.0.1", "?", "?",
        "bsky.network"]

def test_zero_reasons_override():
    for kw, reason in ((dict(excluded="artist"), "artist"), (dict(excluded="split"), "split"), (dict(farm=True), "farm"),
                       (dict(earlier_in_hour=30), "rate")):
        f = weigh(facts(paid=True, **kw))
        assert (f.weight, f.reasons, f.factors) == (0, [reason], {})
    assert weigh(facts(earlier_in_hour=29)).weight == 1000
    assert weigh(facts(bot=True)).reasons == ["agent"]


S = f"at://{DID}/{TRACK}/{rkey(1)}"
F = [f"did:plc:rep{i:021d}" for i in range(8)]


async def set_accounts(path: str, **by_did: tuple[str | None, str | None]) -> None:
    """Set (first_seen, pds) of accounts, as the AppView would have observed them."""
    conn = sqlite3.connect(path, isolation_level=None)
    for did, (seen, pds) in by_did.items():
        conn.execute("UPDATE actor SET first_seen = COALESCE(?, first_seen), pds = COALESCE(?, pds) WHERE did = ?",
                     (seen, pds, did))
    conn.close()


async def give_history(path: str, dids: list[str], days: int = 30, now: datetime = NOW) -> None:
    """``days`` days of streams (``listener_day``) from 40 days ago back, then ``reputation.refresh``
    as of ``now``."""
    from core import db
    conn = sqlite3.connect(path, isolation_level=None)
    for did in dids:
        conn.executemany("INSERT OR IGNORE INTO listener_day (did, day, stream_ms) VALUES (?, ?, 60000)",
                         [(did, (NOW - timedelta(days=40 + n)).date().isoformat()) for n in range(days)])
    conn.close()
    writer = await db.connect(path)
    try:
        await reputation.refresh(writer, now)
    finally:
        await writer.close()


async def call(views, **params) -> dict:
    charts.clear_cache()
    pairs = [(k, str(v)) for k, v in params.items() if v is not None]
    out = await REPUTATION_QUERIES[BREAKDOWN](views, validate_params(BREAKDOWN, pairs))
    validator().validate(BREAKDOWN, "output", out)
    return out


def weights(out: dict) -> dict[str, tuple[int, str, list[str]]]:
    return {v["voter"]["did"]: (v["weight"], v["direction"], v["reasons"]) for v in out["votes"]}


@pytest.fixture
async def example(env, monkeypatch):  # noqa: F811
    ix, views, path = env
    feed = Feed(ix)
    year = ago(days=365)
    await feed.put(DID, TRACK, track("S", createdAt=ago(days=10), splits=[
        {"did": DID, "shareBps": 6000}, {"did": F[5], "shareBps": 4000}]), rkey(1))
    for who in (F[0], F[2], F[3], F[4]):
        await feed.put(who, PLAY, play(S, "bafyreia", createdAt=ago(hours=3)))
    await feed.put(F[4], PROFILE, {"$type": PROFILE, "createdAt": ago(days=1), "labels": {
        "$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "bot"}]}}, "self")
    for who, direction in ((F[0], "up"), (F[1], "up"), (F[2], "up"), (F[3], "down"), (F[4], "up"), (DID, "up"),
                           (F[5], "up")):
        await feed.put(who, VOTE, {"$type": VOTE, "subject": {"uri": S, "cid": "bafyreia"}, "direction": direction,
                                   "createdAt": ago(hours=2)})
    hour = (NOW - timedelta(hours=1)).replace(minute=0, second=0)
    for n in range(30):  # 30 votes on other tracks earlier in the same UTC hour, then S
        other = f"at://{DID}/{TRACK}/{rkey(100 + n)}"
        await feed.put(DID, TRACK, track(f"O{n}", createdAt=ago(days=10)), rkey(100 + n))
        await feed.put(F[6], VOTE, {"$type": VOTE, "subject": {"uri": other, "cid": "bafyreia"}, "direction": "up",
                                    "createdAt": iso(hour + timedelta(seconds=n))})
    await feed.put(F[6], VOTE, {"$type": VOTE, "subject": {"uri": S, "cid": "bafyreia"}, "direction": "up",
                                "createdAt": iso(hour + timedelta(seconds=40))})
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO subscription_invoice (id, subscription, did, tier, status, period_start, period_end, "
                 "amount_paid, currency, updated_at) VALUES ('in_1', 'sub_1', ?, 'plus', 'paid', ?, ?, 999, 'USD', ?)",
                 (F[2], ago(days=5), iso(NOW + timedelta(days=25)), ago(days=5)))
    conn.close()
    await set_accounts(path, **{d: (year, f"https://pds{i}.example") for i, d in enumerate([*F, DID])})
    await set_accounts(path, **{F[3]: (ago(days=3), None)})
    await give_history(path, [*F, DID])
    monkeypatch.setattr(charts, "today", lambda: NOW.date())
    yield ix, views, path, feed


async def test_breakdown_explains_every_vote(example):
    _ix, views, _path, _feed = example
    out = await call(views, uri=S)
    got = weights(out)
    assert got[F[0]] == (1000, "up", [])
    assert got[F[1]] == (100, "up", ["unheard"])
    assert got[F[2]] == (1250, "up", ["paid"])
    assert got[F[3]] == (500, "down", ["young"])
    assert got[F[4]] == (1000, "up", ["agent"])
    assert got[DID] == (0, "up", ["artist"]) and got[F[5]] == (0, "up", ["split"])
    assert got[F[6]] == (0, "up", ["rate"])
    assert (out["humanScore"], out["agentScore"]) == (1000 + 100 + 1250 - 500, 1000)
    assert (out["votesUp"], out["votesDown"], out["counted"]) == (7, 1, 5)
    assert [v["voter"]["did"] for v in out["votes"]][:2] == [F[2], F[0]]  # heaviest first
    counts = {c["reason"]: c["count"] for c in out["reasonCounts"]}
    assert counts == {"artist": 1, "split": 1, "rate": 1, "unheard": 1, "young": 1, "paid": 1, "agent": 1}
    # pages of 3 cover all 8 votes once
    seen, cursor = [], None
    while True:
        page = await call(views, uri=S, limit=3, cursor=cursor)
        seen += [v["uri"] for v in page["votes"]]
        if not (cursor := page.get("cursor")):
            break
    assert len(seen) == len(set(seen)) == 8


async def test_breakdown_errors(example):
    _ix, views, _path, _feed = example
    from appview.xrpc import XrpcError
    with pytest.raises(XrpcError) as exc:
        await call(views, uri=f"at://{DID}/{TRACK}/{rkey(999)}")
    assert exc.value.error == "NotFound"
    with pytest.raises(XrpcError) as exc:
        await call(views, uri=f"at://{DID}/{VOTE}/{rkey(1)}")
    assert exc.value.error == "InvalidRequest"


async def test_farms_weigh_nothing_once_refreshed(example):
    ix, views, path, feed = example
    trending = await charts.get_chart(views, validate_params("fm.openmusic.feed.getChart", [("chart", "trending")]))
    before = next(t["score"] for t in trending["tracks"] if t["uri"] == S)
    start = NOW - timedelta(hours=20)
    for n in range(12):  # 12 plays of 60 s heard, 10 s apart: 11 begin before the previous could be heard
        await feed.put(F[0], PLAY, play(f"at://{DID}/{TRACK}/{rkey(100 + n)}", "bafyreia",
                                        createdAt=iso(start + timedelta(seconds=10 * n))))
    conn = await __import__("core.db", fromlist=["connect"]).connect(path)
    try:
        counts = await reputation.refresh(conn, NOW)
    finally:
        await conn.close()
    assert counts["farms"] == 1
    row = sqlite3.connect(path).execute("SELECT farm, farm_reason FROM reputation WHERE did = ?", (F[0],)).fetchone()
    assert row == (1, "overlap:11/13")
    out = await call(views, uri=S)
    assert weights(out)[F[0]] == (0, "up", ["farm"]) and out["humanScore"] == 100 + 1250 - 500
    from appview.queries import QUERIES
    stats = await QUERIES["fm.openmusic.listen.getTrackStats"](views, {"uri": S})
    validator().validate("fm.openmusic.listen.getTrackStats", "output", stats)
    assert (stats["farmStreams"], stats["votesUp"]) == (1, 7)
    after = (await charts.get_chart(views, validate_params("fm.openmusic.feed.getChart", [("chart", "trending")])))
    score = next(t["score"] for t in after["tracks"] if t["uri"] == S)
    assert score == before - decay(ago(hours=2)) - decay(ago(hours=3))  # F0's vote and F0's listening


async def test_consensus_agreement(env):  # noqa: F811
    ix, views, path = env
    feed = Feed(ix)
    year = ago(days=365)
    judges = [f"did:plc:judge{i:019d}" for i in range(5)]
    agree, disagree = "did:plc:agree00000000000000000000", "did:plc:disagree000000000000000"
    for n in range(5):
        uri = f"at://{DID}/{TRACK}/{rkey(n + 1)}"
        await feed.put(DID, TRACK, track(f"T{n}", createdAt=ago(days=20)), rkey(n + 1))
        for j in judges:
            await feed.put(j, VOTE, {"$type": VOTE, "subject": {"uri": uri, "cid": "bafyreia"}, "direction": "up",
                                     "createdAt": ago(days=2)})
        for who, direction in ((agree, "up"), (disagree, "down")):
            await feed.put(who, VOTE, {"$type": VOTE, "subject": {"uri": uri, "cid": "bafyreia"}, "direction": direction,
                                       "createdAt": ago(days=1)})
    await set_accounts(path, **{d: (year, None) for d in judges})
    await give_history(path, judges)  # established: they never cluster with the two judged
    from core import db
    conn = await db.connect(path)
    try:
        counts = await reputation.refresh(conn, NOW)
    finally:
        await conn.close()
    assert counts["judged"] == 2  # the two; a judge has only 4 other established voters per track
    rows = dict(((d, (j, a)) for d, j, a in sqlite3.connect(path).execute("SELECT did, judged, agreed FROM reputation")))
    assert rows[agree] == (5, 5) and rows[disagree] == (5, 0) and rows[judges[0]] == (0, 0)
    await give_history(path, [agree, disagree])  # 30 days of listening; refreshes again
    out = weights(await call(views, uri=f"at://{DID}/{TRACK}/{rkey(1)}"))
    # both unheard (100) and young (first seen today: 250): 25, then x 1.5 or x 0.5
    assert out[agree][0] == 1000 * 100 // 1000 * 250 // 1000 * 1500 // 1000 == 37
    assert out[disagree][0] == 1000 * 100 // 1000 * 250 // 1000 * 500 // 1000 == 12


#: The ring simulation happens in the 25 minutes before T0, all on T0's UTC day: T0 is now, or 31
#: minutes ago in the first half hour of a UTC day (so "history before today" means the same thing
#: whenever the test runs).
T0 = NOW if NOW.hour or NOW.minute >= 30 else NOW - timedelta(minutes=31)


def before(minutes: float) -> str:
    return (T0 - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def ring(ix, path: str, feed: Feed, pds_of, born: str, stream: bool) -> tuple[str, str]:
    """Track R voted up by 500 accounts first seen at ``born`` with no listening history, on the PDS
    ``pds_of(i)`` (streaming R first when ``stream``), and track H streamed and voted up by 30
    established accounts (a year old, 30 days of listening) on 30 domains."""
    honest_track, ring_track = (f"at://{DID}/{TRACK}/{rkey(n)}" for n in (1, 2))
    await feed.put(DID, TRACK, track("H", createdAt=ago(days=3)), rkey(1))
    await feed.put(DID, TRACK, track("R", createdAt=ago(days=3)), rkey(2))
    honest = [f"did:plc:honest{i:018d}" for i in range(30)]
    sybils = [f"did:plc:sybil{i:019d}" for i in range(500)]
    for i, who in enumerate(honest):
        await feed.put(who, PLAY, play(honest_track, "bafyreia", createdAt=before(25 - i / 10)))
        await feed.put(who, VOTE, {"$type": VOTE, "subject": {"uri": honest_track, "cid": "bafyreia"}, "direction": "up",
                                   "createdAt": before(20 - i / 10)})
    for i, who in enumerate(sybils):
        if stream:
            await feed.put(who, PLAY, play(ring_track, "bafyreia", createdAt=before(15 - i / 100)))
        await feed.put(who, VOTE, {"$type": VOTE, "subject": {"uri": ring_track, "cid": "bafyreia"}, "direction": "up",
                                   "createdAt": before(9 - i / 100)})
    await set_accounts(path, **{d: (ago(days=365), f"https://pds.honest{i}.com") for i, d in enumerate(honest)})
    await set_accounts(path, **{d: (born, pds_of(i)) for i, d in enumerate(sybils)})
    await give_history(path, honest, now=T0)
    return honest_track, ring_track


ONE_HOST = ("one host", lambda i: "https://pds.ring.example", 500)
RINGS = [
    ONE_HOST,
    ("subdomains, ports and paths of one domain", lambda i: [
        "https://ring.example", "https://a.ring.example/", "https://RING.example:443", f"https://b{i}.ring.example/x"][i % 4], 500),
    ("125 domains of 4", lambda i: f"https://pds.ring{i % 125}.example", 4),
    ("500 domains of 1", lambda i: f"https://pds.ring{i}.example", 1),
]


CASES = [(*r, born, stream) for r in RINGS for born, stream in ((None, True), (None, False))] + [
    (*r, "idle", True) for r in RINGS[:3]]


@pytest.mark.parametrize("layout,pds_of,cluster,born,stream", CASES,
                         ids=[f"{c[0]}, {'a year old and idle' if c[3] else 'fresh'}, {'streaming' if c[4] else 'not streaming'}"
                              for c in CASES])
async def test_a_sybil_ring_cannot_outrank_established_listeners(env, monkeypatch, layout, pds_of, cluster,  # noqa: F811
                                                                 born, stream):
    ix, views, path = env
    monkeypatch.setattr(charts, "today", lambda: T0.date())
    honest_track, ring_track = await ring(ix, path, Feed(ix), pds_of, ago(days=365) if born else before(60), stream)
    chart = await charts.get_chart(views, validate_params("fm.openmusic.feed.getChart", [("chart", "trending")]))
    ranked = [t["uri"] for t in chart["tracks"]]
    assert ranked[0] == honest_track, chart["tracks"]
    scores = {t["uri"]: t["score"] for t in chart["tracks"]}
    assert scores[honest_track] == 30 * 1000 + 30 * 1000  # 30 listeners and 30 full votes, today
    assert scores.get(ring_track, 0) < scores[honest_track] // 2
    out = await call(views, uri=ring_track, limit=1)
    assert out["votesUp"] == 500
    reasons = {c["reason"]: c["count"] for c in out["reasonCounts"]}
    assert reasons["new"] == 500  # no listening history
    if cluster >= reputation.CLUSTER_MIN:
        assert reasons["cluster"] == 500 and out["votes"][0]["clusterSize"] == cluster
    else:
        assert "cluster" not in reasons
    assert out["humanScore"] < (await call(views, uri=honest_track))["humanScore"]


async def test_round_the_clock_listening_is_a_farm(env):  # noqa: F811
    """Plays in 22 of the 24 hours of a UTC day, on 2 days, 5 minutes apart (no overlap): a farm
    (``clock:2``); the same on one day only is not."""
    ix, views, path = env
    feed = Feed(ix)
    await feed.put(DID, TRACK, track("S", createdAt=ago(days=10)), rkey(1))
    for who, days in ((F[0], (3, 4)), (F[1], (3,))):
        for d in days:
            midnight = (NOW - timedelta(days=d)).replace(hour=0, minute=0, second=0)
            for h in range(22):
                await feed.put(who, PLAY, play(S, "bafyreia", createdAt=iso(midnight + timedelta(hours=h, minutes=5))))
    from core import db
    conn = await db.connect(path)
    try:
        counts = await reputation.refresh(conn, NOW)
    finally:
        await conn.close()
    rows = dict(sqlite3.connect(path).execute("SELECT did, farm_reason FROM reputation WHERE farm = 1").fetchall())
    assert counts["farms"] == 1 and rows == {F[0]: "clock:2"}
