"""No single record, whatever its content, stops the stream (issue 10, item 9).

End to end: hostile records written through the reference PDS (which stores records of collections
it has no lexicon for): deep nesting, huge arrays, a string close to the PDS's size limit, bytes and
CID links where strings and integers belong. Each sits between valid records, which are indexed;
the hostile ones are rejected by reason and kept in ``rejected_record``; the consumer stays
connected, a restart resumes past them, and a resync of the repo (getRepo) does too.

Units: what the PDS refuses (floats, integers beyond 64 bits, nesting deeper than ~1000, blocks
that are not DAG-CBOR or too large, forged frame fields) as hand-built CBOR fed to the decoder and
the indexer; any unexpected exception from one record is that record's rejection while database
failures still abort the batch; failed resyncs are counted and back off.
"""

from __future__ import annotations

import io
import sqlite3
import time

import cbrrr
import dag_cbor
import httpx
import pytest
from multiformats import CID

from appview.app import create_app
from core import db
from core.lexicons import (
    MAX_DEPTH,
    MAX_RECORD_BYTES,
    PLAY,
    TRACK,
    RecordInvalid,
    check_data_model,
    to_json,
)
from core.publish import PdsClient, StrongRef, publish_track
from devkit.media import tune_wav
from firehose.events import FrameError, decode_frame
from indexer import play as play_module
from indexer.core import DESYNCHRONIZED, Indexer, wanted
from indexer.resync import MAX_RETRY_S, Resyncer, retry_delay
from openmusic.runtime import Runtime
from tests.conftest import devnet_settings, eventually
from tests.records import DID, LISTENER, NOW, car, cid_of, play, track

LINK = "bafyreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5kpqcsgz7soqbqy"


# --- units: hand-built CBOR -------------------------------------------------------------------------

def tid(i: int) -> str:
    alphabet = "234567abcdefghijklmnopqrstuvwxyz"
    s = ""
    for _ in range(10):
        s = alphabet[i % 32] + s
        i //= 32
    return "3kz" + s


def frame(seq: int, did: str, rev: str, ops: list[tuple[str, bytes]]) -> bytes:
    """A ``#commit`` frame creating one record per ``(path, raw DAG-CBOR block)``."""
    commit = dag_cbor.encode({"did": did, "rev": rev, "version": 3})
    blocks = [commit, *(raw for _, raw in ops)]
    wire_ops = [{"action": "create", "path": path, "cid": cid_of(raw)} for path, raw in ops]
    body = {"seq": seq, "repo": did, "rev": rev, "since": None, "commit": cid_of(commit), "blocks": car(blocks),
            "ops": wire_ops, "time": NOW, "rebase": False, "tooBig": False, "blobs": []}
    return dag_cbor.encode({"op": 1, "t": "#commit"}) + dag_cbor.encode(body)


def with_raw_last_field(raw_value: bytes) -> bytes:
    """A valid play plus an unknown field whose value is ``raw_value`` (raw CBOR, spliced in: no
    encoder involved, so no recursion and no validity check). DAG-CBOR sorts map keys by length
    first, so the field with the longest key comes last."""
    head = cbrrr.encode_dag_cbor(play(f"at://{DID}/{TRACK}/{tid(1)}", "bafyreia", 1000, **{LAST_KEY: 0}))
    assert head.endswith(b"\x00") and head[-2 - len(LAST_KEY):-1] == b"\x74" + LAST_KEY.encode()
    return head[:-1] + raw_value


LAST_KEY = "anUnknownFieldSorted"  # 20 characters: longer than every key of a play


def hostile_blocks() -> dict[str, tuple[bytes, str]]:
    """name -> (raw record block, the reason it must be rejected with)."""
    t_uri = f"at://{DID}/{TRACK}/{tid(1)}"
    p = play(t_uri, "bafyreia", 1000)
    enc = cbrrr.encode_dag_cbor
    return {
        "float_unknown": (enc({**p, "ratio": 1.5}), "data_model"),
        "float_known": (enc({**p, "listenedMs": 1.5}), "data_model"),
        "uint64": (enc({**p, "listenedMs": 2 ** 64 - 1}), "data_model"),
        "int_negative_65_bits": (enc({**p, "n": -(2 ** 64)}), "data_model"),
        "bytes_for_string": (enc({**p, "createdAt": b"2026-11-01T12:00:00.000Z"}), "lexicon"),
        "link_for_string": (enc({**p, "track": {"uri": cbrrr.CID.decode(LINK), "cid": "bafyreia"}}), "lexicon"),
        "link_for_integer": (enc({**p, "listenedMs": cbrrr.CID.decode(LINK)}), "lexicon"),
        "deep_5000": (with_raw_last_field(b"\x81" * 5000 + b"\x00"), "too_deep"),
        "deep_1m": (with_raw_last_field(b"\x81" * 1_000_000 + b"\x00"), "too_large"),  # 1 MB: refused undecoded
        "many_values": (enc({**p, "x": [0] * 50_000}), "too_large"),
        "huge_string": (enc({**p, "x": "y" * (MAX_RECORD_BYTES + 1)}), "too_large"),
        "not_a_map": (enc([p]), "not_object"),
        "bad_utf8": (with_raw_last_field(b"\x62\xff\xfe"), "bad_cbor"),
        "cbor_tag": (with_raw_last_field(b"\xc1\x00"), "bad_cbor"),
        "undefined": (with_raw_last_field(b"\xf7"), "bad_cbor"),
    }


@pytest.fixture
async def indexer(tmp_path):
    path = str(tmp_path / "t.sqlite")
    db.migrate(path)
    ix = Indexer(path, "test")
    await ix.open()
    await ix.load_state()
    yield ix
    await ix.close()


async def test_hand_built_hostile_records_are_rejected_and_the_records_around_them_indexed(indexer):
    ix = indexer
    t_uri = f"at://{DID}/{TRACK}/{tid(1)}"
    frames = [frame(1, DID, tid(1), [(f"{TRACK}/{tid(1)}", dag_cbor.encode(track("Target")))])]
    expected: dict[str, str] = {}
    valid: list[str] = []
    for i, (raw, reason) in enumerate(hostile_blocks().values()):
        good, bad = tid(100 + 2 * i), tid(101 + 2 * i)
        frames.append(frame(len(frames) + 1, LISTENER, good,
                            [(f"{PLAY}/{good}", cbrrr.encode_dag_cbor(play(t_uri, "bafyreia", 1000 + i)))]))
        frames.append(frame(len(frames) + 1, LISTENER, bad, [(f"{PLAY}/{bad}", raw)]))
        valid.append(f"at://{LISTENER}/{PLAY}/{good}")
        expected[f"at://{LISTENER}/{PLAY}/{bad}"] = reason
    last = tid(999)
    frames.append(frame(len(frames) + 1, LISTENER, last, [(f"{PLAY}/{last}", cbrrr.encode_dag_cbor(play(t_uri, "bafyreia")))]))
    valid.append(f"at://{LISTENER}/{PLAY}/{last}")

    events = [decode_frame(f, wanted, ix.is_tracked) for f in frames]  # nothing raises here
    for evt in events:  # one batch per event, as a quiet stream applies them; none raises
        await ix.apply([evt], evt.seq)
    assert await ix.load_cursor() == len(frames)
    rows = dict(await ix.sql("SELECT uri, reason FROM rejected_record"))
    assert rows == expected
    indexed = {r[0] for r in await ix.sql("SELECT uri FROM play")}
    assert indexed == set(valid)
    assert sum(ix.rejections.values()) == len(expected) and "internal_error" not in ix.rejections

    # Replaying the same events (a restart before the cursor moved) is not stuck either.
    await ix.apply(events, len(frames))
    assert await ix.load_cursor() == len(frames)


def test_bounds_are_checked_without_recursion():
    deep: object = 0
    for _ in range(200_000):
        deep = {"a": deep}
    for value, reason in [(deep, "too_deep"), ({"a": [0] * 10_000_000}, "too_large"), ({"f": float("inf")}, "data_model"),
                          ({1: "x"}, "data_model"), ({"s": object()}, "data_model")]:
        started = time.perf_counter()
        with pytest.raises(RecordInvalid) as exc:
            check_data_model(value)
        assert exc.value.reason == reason
        assert time.perf_counter() - started < 0.5
    ok: object = {"cid": CID.decode(LINK), "b": b"x", "n": None, "t": True, "i": -(2 ** 63)}
    for _ in range(MAX_DEPTH - 1):
        ok = {"a": ok}
    check_data_model(ok)
    assert to_json(ok)
    with pytest.raises(RecordInvalid):
        to_json({"a": ok})  # to_json refuses to go deeper than the bound, rather than exhaust the stack


def test_forged_frame_fields_are_frame_errors():
    good = frame(1, LISTENER, tid(5), [(f"{PLAY}/{tid(5)}", cbrrr.encode_dag_cbor(play("at://x/y/z", "b")))])
    stream = io.BytesIO(good)
    header = dag_cbor.decode(stream, allow_concat=True)
    body = dag_cbor.decode(stream)
    forged = [
        {**body, "rev": 5},
        {**body, "rev": "not-a-tid!"},  # the verifier decodes a rev's timestamp
        {**body, "since": "3kz"},
        {**body, "seq": "1"},
        {**body, "ops": [{"action": "create", "path": 7, "cid": body["ops"][0]["cid"]}]},
        {**body, "ops": "nope"},
        {**body, "prevData": "not a link"},
        {**body, "blocks": "not bytes"},
        {**body, "commit": "not a link"},
    ]
    for b in forged:
        with pytest.raises(FrameError):
            decode_frame(dag_cbor.encode(header) + dag_cbor.encode(b), wanted)
    car_roots = dag_cbor.encode({"roots": [10 ** 12], "version": 1})  # bytes(10**12) would allocate a terabyte
    evt = decode_frame(dag_cbor.encode(header) + dag_cbor.encode(
        {**body, "blocks": bytes([len(car_roots)]) + car_roots}), wanted)
    assert evt.blocks_error and "roots" in evt.blocks_error


async def test_any_exception_from_one_record_rejects_it_and_database_failures_abort_the_batch(indexer, monkeypatch):
    ix = indexer
    t_uri = f"at://{DID}/{TRACK}/{tid(1)}"
    real_insert = play_module.insert

    def insert(ctx, record):
        if record["listenedMs"] == 666:
            raise RecursionError("maximum recursion depth exceeded")
        if record["listenedMs"] == 667:
            raise LookupError("some bug nobody foresaw")
        if record["listenedMs"] == 668:
            raise sqlite3.OperationalError("database is locked")
        return real_insert(ctx, record)
    monkeypatch.setattr(play_module, "insert", insert)
    frames = [frame(1, DID, tid(1), [(f"{TRACK}/{tid(1)}", dag_cbor.encode(track("Target")))])]
    for i, ms in enumerate([1000, 666, 1001, 667, 1002]):
        frames.append(frame(i + 2, LISTENER, tid(10 + i), [(f"{PLAY}/{tid(10 + i)}",
                                                           cbrrr.encode_dag_cbor(play(t_uri, "bafyreia", ms)))]))
    await ix.apply([decode_frame(f, wanted) for f in frames], len(frames))
    assert ix.rejections == {"internal_error": 2}
    assert sorted(r[0] for r in await ix.sql("SELECT listened_ms FROM play")) == [1000, 1001, 1002]
    details = [r[0] for r in await ix.sql("SELECT detail FROM rejected_record ORDER BY detail")]
    assert details[0].startswith("LookupError: some bug") and details[1].startswith("RecursionError")
    assert "in insert)" in details[0]  # one line naming where it happened, not a traceback

    locked = frame(9, LISTENER, tid(50), [(f"{PLAY}/{tid(50)}", cbrrr.encode_dag_cbor(play(t_uri, "bafyreia", 668)))])
    with pytest.raises(sqlite3.OperationalError):
        await ix.apply([decode_frame(locked, wanted)], 9)
    assert await ix.load_cursor() == len(frames)  # the whole batch rolled back, to be retried


async def test_an_event_whose_handling_raises_is_skipped_and_its_repo_resynced(indexer, monkeypatch):
    ix = indexer
    desynced: list[str] = []
    ix.on_desync = desynced.append
    real_set_state = ix._set_state

    def set_state(did, rev, *args):
        if rev == tid(2):
            raise RuntimeError("a bug in the event's own handling")
        return real_set_state(did, rev, *args)
    monkeypatch.setattr(ix, "_set_state", set_state)
    t_uri = f"at://{DID}/{TRACK}/{tid(1)}"
    frames = [frame(1, DID, tid(1), [(f"{TRACK}/{tid(1)}", dag_cbor.encode(track("Target")))]),
              frame(2, LISTENER, tid(2), [(f"{PLAY}/{tid(2)}", dag_cbor.encode(play(t_uri, "bafyreia", 1000)))]),
              frame(3, DID, tid(3), [(f"{TRACK}/{tid(3)}", dag_cbor.encode(track("After")))])]
    await ix.apply([decode_frame(f, wanted) for f in frames], 3)
    assert await ix.load_cursor() == 3 and ix.counters["event_errors"] == 1
    assert await ix.sql("SELECT uri FROM play") == []  # the failed event's writes were rolled back
    assert len(await ix.sql("SELECT uri FROM track")) == 2
    assert await ix.sql("SELECT status FROM repo_state WHERE did = ?", (LISTENER,)) == [(DESYNCHRONIZED,)]
    assert desynced == [LISTENER]


def test_a_signed_commit_with_a_hostile_mst_is_rejected_not_raised():
    """An account controls its signing key, so it can sign a commit over any MST: here a chain of
    5,000 empty nodes, on which the MST library raises ValueError. Verification rejects the commit
    (reason ``unverifiable``) instead of raising out of the batch and stopping the stream."""
    import coincurve
    from atproto_crypto.did import format_did_key

    from firehose.car import cid_str
    from firehose.events import CommitEvent, RecordOp
    from firehose.verify import TID_ALPHABET, proof_of, verify_many

    key = coincurve.PrivateKey()
    did_key = format_did_key("ES256K", key.public_key.format(compressed=True))
    blocks: dict[bytes, bytes] = {}
    node = None
    for _ in range(5000):
        raw = cbrrr.encode_dag_cbor({"e": [], "l": node})
        node = cbrrr.CID(bytes(cid_of(raw)))
        blocks[bytes(node)] = raw
    record = play(f"at://{DID}/{TRACK}/{tid(1)}", "bafyreia")
    record_block = dag_cbor.encode(record)
    record_cid = bytes(cid_of(record_block))
    blocks[record_cid] = record_block
    value = int(time.time() * 1_000_000) << 10
    rev = "".join(TID_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(13)))
    unsigned = {"data": node, "did": DID, "prev": None, "rev": rev, "version": 3}
    signature = coincurve.ecdsa.serialize_compact(coincurve.ecdsa.der_to_cdata(key.sign(cbrrr.encode_dag_cbor(unsigned))))
    commit_block = cbrrr.encode_dag_cbor({**unsigned, "sig": signature})
    commit_cid = bytes(cid_of(commit_block))
    blocks[commit_cid] = commit_block
    path = f"{PLAY}/{tid(2)}"
    evt = CommitEvent(seq=1, did=DID, rev=rev, since=None, commit=cid_str(commit_cid), time=NOW,
                      ops=[RecordOp("create", PLAY, tid(2), cid_str(record_cid), record)], blocks=blocks,
                      root=commit_cid, commit_raw=commit_cid, prev_data=None, data=bytes(node),
                      all_ops=[("create", path, record_cid, None)])
    [(reason, detail, inverted)] = verify_many([(proof_of(evt), did_key)], time.time())
    assert reason == "unverifiable" and "ValueError" in detail and not inverted


class BrokenIdentity:
    """An identity service whose lookups raise what no resync code expects."""

    def __init__(self) -> None:
        self.calls = 0

    async def pds(self, did: str) -> str | None:
        self.calls += 1
        raise RecursionError("maximum recursion depth exceeded while calling a Python object")


async def test_failed_resyncs_are_counted_and_back_off(indexer):
    ix = indexer
    await ix.mark_desynchronized([DID])
    identity = BrokenIdentity()
    resyncer = Resyncer(ix, identity, http=None, allow_private_hosts=True)
    assert await resyncer.resync(DID) is False  # not raised
    before = time.time()
    assert resyncer.failed == 1 and DID in resyncer.failing and "RecursionError" in resyncer.last_error
    attempts, next_attempt, error = (await ix.sql(
        "SELECT resync_attempts, next_attempt, last_error FROM repo_state WHERE did = ?", (DID,)))[0]
    assert attempts == 1 and 55 < next_attempt - before <= 60 and error.startswith("RecursionError")
    assert await resyncer.sweep() == 0 and resyncer.pending == 0  # not every 5 s: after its backoff
    resyncer.schedule(DID)  # a live event asking for it again does not skip the backoff either
    assert resyncer.pending == 0

    assert await resyncer.resync(DID) is False
    attempts, next_attempt = (await ix.sql("SELECT resync_attempts, next_attempt FROM repo_state WHERE did = ?",
                                           (DID,)))[0]
    assert attempts == 2 and 115 < next_attempt - time.time() <= 120 and resyncer.failed == 2
    assert [retry_delay(n) for n in range(8)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert retry_delay(10_000) == MAX_RETRY_S
    assert ix.resyncing == {}  # no live commits buffered for a repo that waits

    await ix.sql("UPDATE repo_state SET next_attempt = 0 WHERE did = ?", (DID,))
    resyncer.failing[DID] = (2, 0.0, "due")
    assert await resyncer.sweep() == 1  # due: queued again
    assert (await ix.sql("SELECT status FROM repo_state WHERE did = ?", (DID,)))[0][0] == DESYNCHRONIZED


# --- end to end through the reference PDS -----------------------------------------------------------

def create_raw(client: PdsClient, collection: str, record_json: bytes) -> StrongRef:
    """createRecord with a record given as raw JSON text (no local validation, any nesting)."""
    body = (b'{"repo": "' + client.did.encode() + b'", "collection": "' + collection.encode()
            + b'", "record": ' + record_json + b"}")
    out = client._call("POST", "com.atproto.repo.createRecord", content=body,
                       headers={"content-type": "application/json"})
    return StrongRef(out["uri"], out["cid"])


def play_json(track: StrongRef, listened: int, extra: bytes = b"") -> bytes:
    head = (b'{"$type": "' + PLAY.encode() + b'", "track": {"uri": "' + track.uri.encode() + b'", "cid": "'
            + track.cid.encode() + b'"}, "createdAt": "' + NOW.encode() + b'", "listenedMs": '
            + str(listened).encode())
    return head + (b", " + extra if extra else b"") + b"}"


async def test_hostile_records_through_the_reference_pds(net, make_client, tmp_path):
    artist, listener = make_client("hostart"), make_client("hostile")
    wav = tmp_path / "a.wav"
    wav.write_bytes(tune_wav(7, seconds=1))
    target = publish_track(artist, wav, title="Hostile Target")
    link = '{"$link": "' + LINK + '"}'
    hostile = {  # name -> (the record's extra JSON, listenedMs, expected reason or None when it is fine)
        "deep_500_maps": (b'"x": ' + b'{"a": ' * 500 + b"0" + b"}" * 500, 2000, "too_deep"),
        "deep_1000_arrays": (b'"x": ' + b"[" * 1000 + b"0" + b"]" * 1000, 2000, "too_deep"),
        "array_100k": (b'"x": [' + b",".join([b"7"] * 100_000) + b"]", 2000, "too_large"),
        "string_999k": (b'"x": "' + b"s" * 999_000 + b'"', 2000, "too_large"),
        "bytes_for_client": (b'"client": {"$bytes": "aGVsbG8"}', 2000, "lexicon"),
        "link_for_client": (b'"client": ' + link.encode(), 2000, "lexicon"),
        "unknown_link_and_bytes": (b'"extra": {"l": ' + link.encode() + b', "b": {"$bytes": "aGk"}}, "n": null',
                                   2000, None),
    }
    valid: list[str] = []
    expected: dict[str, str | None] = {}
    for i, (extra, listened, reason) in enumerate(hostile.values()):
        valid.append(create_raw(listener, PLAY, play_json(target, 1000 + i)).uri)
        ref = create_raw(listener, PLAY, play_json(target, listened, extra))
        expected[ref.uri] = reason
    valid.append(create_raw(listener, PLAY, play_json(target, 1999)).uri)
    rejected = {uri: reason for uri, reason in expected.items() if reason}
    accepted = [uri for uri, reason in expected.items() if reason is None]

    settings = devnet_settings(net, tmp_path)
    rt = Runtime(settings)
    await rt.start()
    try:
        async def indexed():
            cur = await rt.reader.execute("SELECT uri FROM play WHERE did = ?", (listener.did,))
            return {r[0] for r in await cur.fetchall()} == set(valid + accepted)
        await eventually(indexed, timeout=60)
        cur = await rt.reader.execute("SELECT uri, reason FROM rejected_record WHERE uri LIKE ?",
                                      (f"at://{listener.did}/%",))
        assert dict(await cur.fetchall()) == rejected
        consuming = next(t for t in rt._tasks if t.get_name() == "firehose")
        assert rt.consumer.status.connected and not consuming.done()
        health = await rt_health(rt)
        assert health["status"] == "ok" and health["firehose"]["connected"]
        assert health["indexer"]["rejected"].get("too_deep", 0) >= 2
        assert "internal_error" not in health["indexer"]["rejected"]
        cursor = await rt.indexer.load_cursor()
    finally:
        await rt.stop()

    # A restart resumes after them: a new play is indexed, nothing is rejected twice.
    later = create_raw(listener, PLAY, play_json(target, 3000)).uri
    rt = Runtime(settings)
    await rt.start()
    try:
        async def caught_up():
            cur = await rt.reader.execute("SELECT 1 FROM play WHERE uri = ?", (later,))
            return await cur.fetchone()
        await eventually(caught_up, timeout=60)
        assert await rt.indexer.load_cursor() > cursor
        cur = await rt.reader.execute("SELECT COUNT(*) FROM rejected_record WHERE uri LIKE ?",
                                      (f"at://{listener.did}/%",))
        assert (await cur.fetchone())[0] == len(rejected)

        # The resync path (getRepo, snapshot) meets the same records: it completes, it does not retry.
        done = rt.resyncer.done
        await rt.indexer.mark_desynchronized([listener.did])

        async def resynced():
            cur = await rt.reader.execute("SELECT status FROM repo_state WHERE did = ?", (listener.did,))
            return rt.resyncer.done > done and (await cur.fetchone())[0] == "synchronized"
        await eventually(resynced, timeout=60)
        assert rt.resyncer.failing == {} and listener.did not in (rt.resyncer.last_error or "")
        cur = await rt.reader.execute("SELECT uri FROM play WHERE did = ?", (listener.did,))
        assert {r[0] for r in await cur.fetchall()} == set(valid + accepted + [later])
        assert rt.consumer.status.connected
    finally:
        await rt.stop()


async def rt_health(rt: Runtime) -> dict:
    """``/health`` of ``rt``'s app, in process."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt)), base_url="http://appview") as http:
        return (await http.get("/health")).json()


def test_the_record_size_bound_leaves_room_for_our_largest_records():
    album = {"$type": "fm.openmusic.catalog.album", "title": "t" * 256, "description": "d" * 3000,
             "tracks": [{"uri": f"at://{DID}/{TRACK}/{tid(i)}", "cid": LINK} for i in range(500)],
             "createdAt": NOW}
    assert len(cbrrr.encode_dag_cbor(album)) < MAX_RECORD_BYTES / 2
    check_data_model(album)
    segments = play(f"at://{DID}/{TRACK}/{tid(1)}", LINK, segments=[{"startMs": i, "endMs": i + 1} for i in range(1000)])
    check_data_model(segments)
