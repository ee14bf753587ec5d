"""The indexer's optimistic batch path (``Indexer._apply_batch``: no SAVEPOINT per record, pipeline
mode on PostgreSQL) gives the database the careful path (a SAVEPOINT per event and per record)
gives, also when a record fails mid-way and the batch is applied again; and the workload generator
(``bench.generator``) is deterministic. On the engine of ``OPENMUSIC_TEST_ENGINE``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.generator import Spec, Workload, ingest
from core import db
from firehose.events import CommitEvent, RecordOp
from indexer import play as play_module
from indexer import rollups
from indexer.core import Indexer
from tests import dbq
from tests.conftest import runtime_database

#: Tables and columns compared (no indexing times: two runs index at different moments).
TABLES = {
    "record": "uri, cid, json",
    "play": "uri, track_uri, listened_ms, completed, stream, paid, stream_ms, heard_ms, segments, replayed, country",
    "track": "uri, title, duration_ms, search_key",
    "track_stats": "track_uri, plays, listeners, listened_ms, completions, likes, paid_streams, free_streams",
    "track_listener": "track_uri, did, plays",
    "track_rank": "search_key, plays, uri",
    "listener_day": "did, day, stream_ms",
    "track_day": "track_uri, day, plays, paid_streams, free_streams, listened_ms, segmented",
    # listeners by DID: on PostgreSQL a rolled-back transaction still draws identity values, so the
    # numbers given after a batch applied again can differ (they only stand for the DID)
    "track_day_listener l JOIN analytics_listener i ON i.id = l.listener":
        "l.track_uri, l.day, i.did, l.country, l.plays, l.streams, l.listened_ms",
    "track_second": "track_uri, second, heard, replayed, stops",
    "analytics_listener": "did",
    "follow_count": "subject, followers",
    "tip": "uri, subject, amount",
    "rejected_record": "uri, reason",
    "repo_state": "did, rev, status",
    "actor_count": "did, plays, likes",
}


def dump(target: str) -> dict[str, list[tuple]]:
    conn = db.connect_sync(target)
    try:
        return {t: [tuple(r) for r in conn.execute(f"SELECT {cols} FROM {t} ORDER BY {cols}").fetchall()]
                for t, cols in TABLES.items()}
    finally:
        conn.close()


def target(tmp_path: Path, name: str) -> str:
    return runtime_database(tmp_path / name) or str(tmp_path / f"{name}.sqlite")


SPEC = dict(tracks=60, plays=900, tips=5, seed=3)


async def test_the_generator_is_deterministic():
    a = [(e.seq, e.did, e.rev, e.ops[0].cid, repr(e.ops[0].record)) for e in Workload(Spec(**SPEC)).events()]
    b = [(e.seq, e.did, e.rev, e.ops[0].cid, repr(e.ops[0].record)) for e in Workload(Spec(**SPEC)).events()]
    assert a == b and len(a) > 900
    kinds = {e.ops[0].collection.rsplit(".", 1)[-1] for e in Workload(Spec(**SPEC)).events()}
    assert kinds == {"profile", "track", "album", "play", "like", "follow", "tip"}


async def test_optimistic_batches_equal_careful_ones_also_when_a_record_fails(tmp_path, monkeypatch):
    real_insert = play_module.insert
    failed: list[str] = []

    def insert(ctx, record):  # writes, then fails: its writes must go, the batch's others stay
        real_insert(ctx, record)
        if ctx.rkey.endswith(("7", "q")):
            failed.append(ctx.uri)
            raise LookupError("a bug after the writes")
    monkeypatch.setattr(play_module, "insert", insert)

    optimistic = target(tmp_path, "optimistic")
    result = await ingest(optimistic, Workload(Spec(**SPEC)), batch=100)
    assert failed and result.counters["careful_batches"] >= 1
    assert result.rejected > 0  # the failed plays, rejected as index_error

    failed.clear()
    careful = target(tmp_path, "careful")
    monkeypatch.setattr(Indexer, "_apply_batch",
                        lambda self, *a: self._transaction(self._apply_events, *a))
    careful_result = await ingest(careful, Workload(Spec(**SPEC)), batch=100)
    assert careful_result.records == result.records and careful_result.rejected == result.rejected

    a, b = dump(optimistic), dump(careful)
    assert a["play"] and a["track_second"] and a["rejected_record"] and a["analytics_listener"]
    for table in TABLES:
        assert a[table] == b[table], table
    assert sum(1 for r in a["play"] if r[4]) > 0  # some plays are streams (dated honestly), some paid
    assert sum(1 for r in a["play"] if r[5]) > 0


async def test_rollups_recount_equal_after_generated_ingest(tmp_path):
    path = str(tmp_path / "check.sqlite")
    await ingest(path, Workload(Spec(**SPEC)), batch=250)
    conn = db.connect_sync(path)
    try:
        conn.execute("BEGIN")
        differing, lines = rollups.check(conn)
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    assert differing == {"track_day": 0, "track_day_listener": 0, "track_second": 0}, lines
    conn = db.connect_sync(path)
    try:  # the per-account counters (migration 0034) equal a count of the rows
        kept = conn.execute("SELECT did, plays, likes FROM actor_count WHERE plays > 0 OR likes > 0 "
                            "ORDER BY did").fetchall()
        counted = conn.execute(
            "SELECT did, SUM(p), SUM(l) FROM (SELECT did, 1 AS p, 0 AS l FROM play UNION ALL "
            "SELECT did, 0, 1 FROM like_record) AS x GROUP BY did ORDER BY did").fetchall()
    finally:
        conn.close()
    assert kept and [tuple(r) for r in kept] == [tuple(r) for r in counted]


async def _apply(path: str, events: list, careful: bool = False, monkeypatch=None) -> Indexer:
    """Apply ``events`` as one batch on a fresh ``Indexer`` of ``path`` (the careful path with
    ``careful``: a SAVEPOINT per event and record). Returns the closed indexer (its counters)."""
    ix = Indexer(path, "bench")
    await ix.open()
    if careful:
        monkeypatch.setattr(Indexer, "_apply_batch", lambda self, *a: self._transaction(self._apply_events, *a))
    try:
        await ix.load_state()
        await ix.apply(events, events[-1].seq, prepared=True)
    finally:
        await ix.close()
    return ix


def _revs(path: str, *dids: str) -> dict[str, str]:
    """The ``repo_state`` rev of each of ``dids``."""
    return dict(dbq.rows(path, f"SELECT did, rev FROM repo_state WHERE did IN ({','.join('?' * len(dids))})", *dids))


async def _replay_creates(path: str, careful: bool, monkeypatch) -> dict[str, Any]:
    """Ingest a small workload, then one batch of hostile commits: a ``create`` of a play we already
    hold (other listenedMs) and an invalid ``create`` over another held play. Returns the counters."""
    from bench.generator import tid
    w = Workload(Spec(tracks=20, plays=120, seed=5))
    events = list(w.events())
    await ingest(path, w, batch=50)
    plays = [e for e in events if e.ops[0].collection.endswith(".play")]
    again, bad = plays[3], next(e for e in plays if e.did != plays[3].did)
    hostile = []
    for n, (e, record) in enumerate([(again, {**again.ops[0].record, "listenedMs": 1234}),
                                     (bad, {**bad.ops[0].record, "listenedMs": "loud"})]):
        rev = tid(w.revs[e.did] + 1)
        op = RecordOp("create", e.ops[0].collection, e.ops[0].rkey, f"bafyreihostile{n}", record)
        hostile.append(CommitEvent(seq=10_000 + n, did=e.did, rev=rev, since=tid(w.revs[e.did]),
                                   commit=f"bafyreicommit{n}", time="", ops=[op]))
    ix = await _apply(path, hostile, careful, monkeypatch)
    return {"careful_batches": ix.counters["careful_batches"], "play": (again.ops[0].rkey, bad.ops[0].rkey)}


async def test_a_create_of_a_held_record_is_applied_as_the_careful_path_applies_it(tmp_path, monkeypatch):
    """An optimistic create skips removing an old version: a create of a record we hold must then
    fall back to the careful path (the record's primary key fails), and an invalid one must still
    remove the old version. Both end as the careful path ends."""
    fast, slow = target(tmp_path, "fast"), target(tmp_path, "slow")
    got = await _replay_creates(fast, False, monkeypatch)
    assert got["careful_batches"] == 1
    await _replay_creates(slow, True, monkeypatch)
    a, b = dump(fast), dump(slow)
    for table in TABLES:
        assert a[table] == b[table], table
    again, bad = got["play"]
    plays = {r[0].rsplit("/", 1)[-1]: r for r in a["play"]}
    assert plays[again][2] == 1234  # the new version replaced the old one
    assert bad not in plays  # the invalid create removed the old version
    assert any(r[0].endswith(bad) for r in a["rejected_record"])


async def _caps_batch(path: str, careful: bool, monkeypatch) -> None:
    """Ingest a small workload, then one batch of plays by two known listeners that runs into the
    daily caps (read ahead by ``streams.BatchFacts`` in the optimistic path): 15 plays of one track
    by one listener on one day (at most ``DAILY_CAP`` streams), and more than 24 h of plays by a
    paid listener on one day (at most ``DAILY_MS_CAP`` of stream weight)."""
    from datetime import timedelta

    from bench.generator import _track_seq, cid_for, iso, listener_did, tid
    from core.lexicons import PLAY
    w = Workload(Spec(tracks=120, plays=200, seed=7))
    await ingest(path, w, batch=100)
    one, paid = listener_did(0), listener_did(w.paid[0])
    revs = _revs(path, one, paid)
    day = w.spec.base - timedelta(days=2)
    plays = [(one, 0, day + timedelta(minutes=10 * k)) for k in range(15)]
    plays += [(paid, 1 + k % 110, day + timedelta(minutes=4 * k)) for k in range(330)]
    events, n = [], 0
    for did, i, at in plays:
        n += 1
        rev = tid(10**6 + n)
        record = {"$type": PLAY, "track": {"uri": w.track_uri(i), "cid": cid_for(b"track", _track_seq(w, i))},
                  "createdAt": iso(at), "listenedMs": w.durations[i], "completed": True}
        events.append(CommitEvent(seq=50_000 + n, did=did, rev=rev, since=revs[did], commit=f"bafyreicap{n}",
                                  time="", ops=[RecordOp("create", PLAY, tid(10**6 + n), f"bafyreiplay{n}", record)]))
        revs[did] = rev
    ix = await _apply(path, events, careful, monkeypatch)
    assert ix.counters["careful_batches"] == 0


async def test_stream_caps_read_ahead_decide_as_the_careful_path(tmp_path, monkeypatch):
    from indexer import streams
    fast, slow = target(tmp_path, "fast"), target(tmp_path, "slow")
    made: list[int] = []
    real = streams.BatchFacts.__init__

    def spy(self, tx, keys):
        real(self, tx, keys)
        made.append(len(self.today))
    monkeypatch.setattr(streams.BatchFacts, "__init__", spy)
    await _caps_batch(fast, False, monkeypatch)
    assert made and made[-1] > 100  # the caps batch was read ahead
    await _caps_batch(slow, True, monkeypatch)
    a, b = dump(fast), dump(slow)
    for table in TABLES:
        assert a[table] == b[table], table
    from bench.generator import listener_did, tid
    conn = db.connect_sync(fast)
    try:
        capped = conn.execute("SELECT count(*), sum(stream) FROM play WHERE did = ? AND rkey >= ?",
                              (listener_did(0), tid(10**6))).fetchone()
        days = conn.execute("SELECT max(stream_ms) FROM listener_day").fetchone()[0]
        paid = conn.execute("SELECT sum(paid) FROM play WHERE paid = 1").fetchone()[0]
    finally:
        conn.close()
    assert capped[1] <= streams.DAILY_CAP < capped[0]  # some plays of the 15 were over the cap
    # the paid listener's day is full: what is left is less than a stream
    assert streams.DAILY_MS_CAP - streams.STREAM_MIN_MS < days <= streams.DAILY_MS_CAP
    assert paid and paid > 0


async def test_a_play_too_large_for_an_index_is_rejected_not_retried_forever(tmp_path):
    """A play whose track URI is 7 KB passes the lexicon, but PostgreSQL cannot index it (an index
    row is at most ~2.7 KB: 54000, raised as an OperationalError): it is the record's fault, so it is
    rejected and the batch goes on; on SQLite it is indexed. Either way the batch commits."""
    from bench.generator import cid_for, iso, listener_did, tid
    from core.lexicons import PLAY
    path = target(tmp_path, "huge")
    w = Workload(Spec(tracks=10, plays=20, seed=9))
    await ingest(path, w, batch=50)
    did = listener_did(0)
    rev = _revs(path, did)[did]
    huge = "at://did:plc:" + "a" * 24 + "/fm.openmusic.catalog.track/" + "".join(
        format(i * 2654435761 % 2**32, "08x") for i in range(900))
    events = []
    for n, uri in enumerate((huge, w.track_uri(1)), start=1):
        record = {"$type": PLAY, "track": {"uri": uri, "cid": cid_for(b"track", 1)},
                  "createdAt": iso(w.spec.base), "listenedMs": 40_000}
        new_rev = tid(10**7 + n)
        events.append(CommitEvent(seq=90_000 + n, did=did, rev=new_rev, since=rev, commit=f"bafyreihuge{n}", time="",
                                  ops=[RecordOp("create", PLAY, new_rev, f"bafyreihugeplay{n}", record)]))
        rev = new_rev
    ix = await _apply(path, events)
    assert dbq.one(path, "SELECT seq FROM cursor WHERE source = 'bench'")[0] == events[-1].seq
    indexed = {r[0] for r in dbq.rows(path, "SELECT track_uri FROM play WHERE did = ?", did)}
    assert w.track_uri(1) in indexed
    if db.is_postgres(path):
        assert huge not in indexed and ix.rejections["internal_error"] == 1
