"""Labels, in units (atproto Labels spec; ``firehose.labels``, ``indexer.labels``, ``appview.views``).

Proves: a label's signature is over the DAG-CBOR of the label without ``sig`` and with ``ver``,
checked here with coincurve directly (not with our verifier), and anything else fails; malformed
labels and frames are refused with the reason they are counted under; the labeler's endpoint and
key are read from its DID document (relative and absolute ids). The store keeps one current label
per (src, uri, val) by ``cts``: ``!takedown`` hides a track (or an account and all its tracks) from
lookups, search and lists, a negation brings it back, an older label changes nothing, ``!hide``
hides from lists only, expiry is honoured by the sweep, a re-indexed record stays hidden and a
takedown that arrives before its record hides it once indexed; labels from labelers not configured
and other labels for unknown subjects are skipped and counted. Views carry the
accepted labelers' labels and the record's self-labels. A ``LabelConsumer`` against the devkit
labeler over a real WebSocket on loopback applies good labels, counts bad signatures, forged
sources and malformed frames, re-resolves a rotated key, resumes from its stored cursor, and
replays from 0 when the labeler answers ``FutureCursor``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime, timedelta

import cbrrr
import coincurve
import httpx
import pytest

from appview import charts, queries
from appview.app import parse_accept_labelers
from appview.views import ViewContext, accepted_labelers, resolve_actor
from appview.xrpc import XrpcError
from core import db
from core.config import Settings
from core.identity import IdentityResolver, IdentityService
from devkit.labeler import Labeler, atproto_time, frame, sign_label
from firehose import labels as flabels
from firehose.events import ErrorFrame, FrameError, InfoEvent, RecordOp
from firehose.labels import (
    Label,
    LabelConsumer,
    LabelError,
    LabelsMessage,
    decode_label_frame,
    labeler_from_document,
    parse_label,
    signing_bytes,
    verify_label,
)
from indexer.core import Indexer
from indexer.labels import LabelStore
from tests.conftest import eventually
from tests.records import DID, LISTENER, track
from tests.test_indexer_units import TRACK, commit, create, rkey

LABELER = "did:web:labeler.example"
OTHER = "did:web:other.example"
T1 = f"at://{DID}/{TRACK}/{rkey(1)}"
T2 = f"at://{DID}/{TRACK}/{rkey(2)}"


def when(seconds: float = 0) -> str:
    return atproto_time(datetime.now(UTC) + timedelta(seconds=seconds))


def lab(uri: str, val: str, src: str = LABELER, neg: bool = False, cts: str | None = None,
        exp: str | None = None) -> Label:
    return Label(src=src, uri=uri, val=val, cts=cts or when(), neg=neg, exp=exp)


# -- signatures, parsing, frames ------------------------------------------------------------------

def test_signature_covers_dag_cbor_without_sig_with_ver():
    key = coincurve.PrivateKey()
    did_key = Labeler(port=1, key_hex=key.secret.hex()).did_key
    body = {"src": "did:web:x", "uri": T1, "val": "!takedown", "cts": "2026-11-01T12:00:00.000Z"}
    signed = sign_label(body, key)
    assert signed["ver"] == 1 and len(signed["sig"]) == 64
    # independent check: sha-256 over DAG-CBOR of {ver, src, uri, val, cts}, verified by coincurve
    expected = cbrrr.encode_dag_cbor({"ver": 1, "src": "did:web:x", "uri": T1, "val": "!takedown",
                                      "cts": "2026-11-01T12:00:00.000Z"})
    assert signing_bytes(signed) == expected
    der = coincurve.ecdsa.cdata_to_der(coincurve.ecdsa.deserialize_compact(signed["sig"]))
    assert key.public_key.verify(der, hashlib.sha256(expected).digest(), hasher=None)
    label = parse_label(signed)
    assert verify_label(label, did_key)
    # a label received without ver was signed with ver: 1 added
    unversioned = {k: v for k, v in signed.items() if k != "ver"}
    assert verify_label(parse_label(unversioned), did_key)
    for change in ({"val": "!hide"}, {"neg": True}, {"uri": T2}, {"exp": "2027-01-01T00:00:00.000Z"}):
        assert not verify_label(parse_label(signed | change), did_key), change
    assert not verify_label(label, Labeler(port=1).did_key)  # another key
    assert not verify_label(parse_label({k: v for k, v in signed.items() if k != "sig"}), did_key)


@pytest.mark.parametrize("obj", [
    "not a label", {"uri": T1, "val": "x", "cts": "2026-11-01T00:00:00Z"},
    {"src": "did:web:x", "uri": T1, "val": "", "cts": "2026-11-01T00:00:00Z"},
    {"src": "did:web:x", "uri": T1, "val": "x" * 129, "cts": "2026-11-01T00:00:00Z"},
    {"src": "not-a-did", "uri": T1, "val": "x", "cts": "2026-11-01T00:00:00Z"},
    {"src": "did:web:x", "uri": "https://example.com", "val": "x", "cts": "2026-11-01T00:00:00Z"},
    {"src": "did:web:x", "uri": T1, "val": "x", "cts": "yesterday"},
    {"src": "did:web:x", "uri": T1, "val": "x", "cts": "2026-11-01T00:00:00Z", "exp": "never"},
    {"src": "did:web:x", "uri": T1, "val": "x", "cts": "2026-11-01T00:00:00Z", "ver": 2},
    {"src": "did:web:x", "uri": T1, "val": "x", "cts": "2026-11-01T00:00:00Z", "neg": "yes"},
    {"src": "did:web:x", "uri": T1, "val": "x", "cts": "2026-11-01T00:00:00Z", "sig": "AAAA"},
])
def test_malformed_labels_are_refused(obj):
    with pytest.raises(LabelError) as err:
        parse_label(obj)
    assert err.value.reason == "malformed"


def test_frames_decode_like_the_firehose():
    got = decode_label_frame(frame({"op": 1, "t": "#labels"}, {"seq": 7, "labels": [{"a": 1}]}))
    assert isinstance(got, LabelsMessage) and got.seq == 7 and got.labels == [{"a": 1}]
    info = decode_label_frame(frame({"op": 1, "t": "#info"}, {"name": "OutdatedCursor", "message": "old"}))
    assert isinstance(info, InfoEvent) and info.name == "OutdatedCursor"
    err = decode_label_frame(frame({"op": -1}, {"error": "FutureCursor", "message": "ahead"}))
    assert isinstance(err, ErrorFrame) and err.error == "FutureCursor"
    assert decode_label_frame(frame({"op": 1, "t": "#somethingNew"}, {"x": 1})) is None
    for bad in (b"\xff\x00garbage", frame({"op": 1, "t": "#labels"}, {"seq": -1, "labels": []}),
                frame({"op": 1, "t": "#labels"}, {"seq": 1, "labels": "no"}), frame({"op": 3}, {})):
        with pytest.raises(FrameError):
            decode_label_frame(bad)


def test_labeler_read_from_its_did_document():
    doc = Labeler(port=4321).did_document()
    info = labeler_from_document(doc["id"], doc)
    assert info.endpoint == "http://localhost:4321" and info.key and info.key.startswith("did:key:z")
    absolute = {"id": "did:web:l.example", "service": [
        {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds.example"},
        {"id": "did:web:l.example#atproto_labeler", "type": "AtprotoLabeler", "serviceEndpoint": "https://l.example/"}],
        "verificationMethod": [{"id": "#atproto", "type": "Multikey", "publicKeyMultibase": "zBad"}]}
    info = labeler_from_document("did:web:l.example", absolute)
    assert info.endpoint == "https://l.example" and info.key is None  # #atproto is not #atproto_label
    assert flabels.subscribe_url("https://l.example") == "wss://l.example/xrpc/com.atproto.label.subscribeLabels"


def test_accept_labelers_header():
    assert parse_accept_labelers(None) is None
    assert parse_accept_labelers("did:plc:aaa;redact, did:web:b.example ,junk,did:plc:aaa") == \
        ["did:plc:aaa", "did:web:b.example"]
    assert parse_accept_labelers("") == []


# -- the store and what it hides ------------------------------------------------------------------

@pytest.fixture
async def env(tmp_path):
    """An index with two tracks of DID, a labeler configured, a label store and views."""
    path = str(tmp_path / "t.sqlite")
    db.migrate(path)
    conn = await db.connect(path)
    for did in (DID, LISTENER):
        await conn.execute("INSERT INTO actor (did, handle, handle_verified, resolved_at, active) VALUES (?,?,1,?,1)",
                           (did, did.split(":")[-1][:8] + ".test", time.time()))
    settings = Settings(db_path=path)
    identity = IdentityService(settings, conn, IdentityResolver(settings, None))
    ix = Indexer(path, "test")
    await ix.open()
    await ix.load_state()
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track("Neon Harbor", labels={
        "$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "graphic-media"}]})),
        create(TRACK, rkey(2), track("Neon Tide")))], 1)
    store = LabelStore(await db.connect(path), [LABELER])
    await store.open()
    yield ix, store, ViewContext(conn, identity, "http://x", labelers=[LABELER]), path
    await ix.close()
    await store.conn.close()
    await conn.close()


async def titles(views: ViewContext) -> list[str]:
    found = await queries.search_tracks(views, {"q": "neon", "sort": "recent", "limit": 10})
    return sorted(t["title"] for t in found["tracks"])


async def test_takedown_hides_a_track_and_negation_brings_it_back(env):
    _, store, views, _ = env
    assert await titles(views) == ["Neon Harbor", "Neon Tide"]
    await store.apply(LABELER, 1, [lab(T1, "!takedown", cts=when(-10))])
    with pytest.raises(XrpcError):
        await queries.get_track(views, {"uri": T1})
    with pytest.raises(XrpcError):
        await queries.get_track_stats(views, {"uri": T1})
    assert await titles(views) == ["Neon Tide"]
    assert [t["title"] for t in (await queries.get_artist_tracks(views, {"actor": DID, "limit": 10}))["tracks"]] \
        == ["Neon Tide"]
    # an older label (e.g. replayed) does not undo the takedown's newer state, nor an old negation
    await store.apply(LABELER, 2, [lab(T1, "!takedown", neg=True, cts=when(-20))])
    assert await titles(views) == ["Neon Tide"]
    await store.apply(LABELER, 3, [lab(T1, "!takedown", neg=True, cts=when(-5))])
    assert await titles(views) == ["Neon Harbor", "Neon Tide"]
    assert (await queries.get_track(views, {"uri": T1}))["track"]["title"] == "Neon Harbor"
    assert store.counters["applied"] == 1 and store.counters["negated"] == 1 and store.counters["stale"] == 1
    assert await store.load_cursor(LABELER) == 3


async def test_lists_keep_their_size_and_ranks(env):
    _, store, views, _ = env
    charts.clear_cache()
    new = await charts.get_chart(views, {"chart": "new", "period": "week", "limit": 10})
    assert len(new["tracks"]) == 2
    await store.apply(LABELER, 1, [lab(T1, "!hide")])
    charts.clear_cache()
    new = await charts.get_chart(views, {"chart": "new", "period": "week", "limit": 10})
    assert [(t["uri"], t["rank"]) for t in new["tracks"]] == [(T2, 1)]  # left out of the ranking itself


async def test_account_takedown_hides_the_account_and_its_tracks(env):
    _, store, views, _ = env
    await store.apply(LABELER, 1, [lab(DID, "!suspend")])
    assert await titles(views) == []
    with pytest.raises(XrpcError):
        await resolve_actor(views, DID)
    with pytest.raises(XrpcError):
        await queries.get_track(views, {"uri": T2})
    await store.apply(LABELER, 2, [lab(DID, "!suspend", neg=True)])
    assert await resolve_actor(views, DID) == DID
    assert await titles(views) == ["Neon Harbor", "Neon Tide"]


async def test_hide_keeps_direct_lookup(env):
    _, store, views, _ = env
    await store.apply(LABELER, 1, [lab(T2, "!hide")])
    assert await titles(views) == ["Neon Harbor"]
    got = (await queries.get_track(views, {"uri": T2}))["track"]
    assert [label["val"] for label in got["labels"]] == ["!hide"]


async def test_expired_labels_stop_counting(env):
    _, store, views, path = env
    await store.apply(LABELER, 1, [lab(T2, "!takedown", exp=when(-1))])  # already expired on arrival
    assert await titles(views) == ["Neon Harbor", "Neon Tide"]
    await store.apply(LABELER, 2, [lab(T1, "!takedown", exp=when(3600))])
    assert await titles(views) == ["Neon Tide"]
    assert await store.sweep() == 0  # nothing expired yet
    await store.conn.execute("UPDATE label SET exp = ? WHERE uri = ?", (when(-1), T1))  # time passes
    assert await store.sweep() == 1
    assert await titles(views) == ["Neon Harbor", "Neon Tide"]


async def test_reindexed_record_stays_taken_down(env):
    ix, store, views, _ = env
    await store.apply(LABELER, 1, [lab(T1, "!takedown")])
    await ix.apply([commit(2, DID, 2, RecordOp("update", TRACK, rkey(1), "bafyreib", track("Neon Harbor II")))], 2)
    with pytest.raises(XrpcError):
        await queries.get_track(views, {"uri": T1})


async def test_takedown_before_the_record_is_indexed(env):
    ix, store, views, _ = env
    later = f"at://{DID}/{TRACK}/{rkey(3)}"
    await store.apply(LABELER, 1, [lab(later, "!takedown"), lab(LISTENER, "!suspend")])
    assert store.counters["pending_subject"] == 1 and store.counters["applied"] == 1
    await ix.apply([commit(2, DID, 2, create(TRACK, rkey(3), track("Neon Later")))], 2)
    assert await titles(views) == ["Neon Harbor", "Neon Tide"]
    with pytest.raises(XrpcError):
        await queries.get_track(views, {"uri": later})
    await store.apply(LABELER, 2, [lab(later, "!takedown", neg=True)])
    assert (await queries.get_track(views, {"uri": later}))["track"]["title"] == "Neon Later"


async def test_bad_input_is_skipped_and_counted(env):
    _, store, views, _ = env
    await store.apply(LABELER, 1, [lab(T1, "!takedown", src=OTHER),
                                   lab(f"at://{DID}/{TRACK}/{rkey(9)}", "porn"),
                                   lab("did:plc:unknownunknownunknownun", "!warn")])
    assert await titles(views) == ["Neon Harbor", "Neon Tide"]
    assert store.counters["unknown_labeler"] == 1 and store.counters["unknown_subject"] == 2
    await store.count("bad_signature")
    reopened = LabelStore(store.conn, [LABELER])
    await reopened.open()  # counters are persisted
    assert reopened.counters["unknown_subject"] == 2 and reopened.counters["bad_signature"] == 1


async def test_unconfigured_labeler_stops_counting(env):
    _, store, views, _ = env
    await store.apply(LABELER, 1, [lab(T1, "!takedown")])
    assert await titles(views) == ["Neon Tide"]
    dropped = LabelStore(store.conn, [OTHER])  # the operator removed LABELER from the setting
    await dropped.open()
    assert await titles(views) == ["Neon Harbor", "Neon Tide"]


async def test_views_carry_accepted_labels_and_self_labels(env):
    _, store, views, _ = env
    await store.apply(LABELER, 1, [lab(T1, "porn"), lab(DID, "!warn")])
    got = (await queries.get_track(views, {"uri": T1}))["track"]
    assert [(lb["src"], lb["val"]) for lb in got["labels"]] == [(LABELER, "porn"), (DID, "graphic-media")]
    assert got["artist"]["labels"][0]["val"] == "!warn" and "sig" not in got["labels"][0]
    token = accepted_labelers.set(("did:web:someone.else",))
    try:
        got = (await queries.get_track(views, {"uri": T1}))["track"]
        assert [lb["val"] for lb in got["labels"]] == ["graphic-media"] and "labels" not in got["artist"]
        assert views.accepted() == []
    finally:
        accepted_labelers.reset(token)


# -- the consumer against a real labeler on loopback -----------------------------------------------

class Recorder:
    """A ``LabelSink`` in memory."""

    def __init__(self) -> None:
        self.applied: list[tuple[int, list[Label]]] = []
        self.counts: dict[str, int] = {}
        self.cursor: int | None = None

    async def load_cursor(self, src: str) -> int | None:
        return self.cursor

    async def apply(self, src: str, seq: int, labels: list[Label]) -> None:
        self.applied.append((seq, labels))
        self.cursor = seq

    async def count(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n

    async def reset_cursor(self, src: str) -> None:
        self.cursor = None

    async def save_labeler(self, info) -> None:
        pass


async def test_consumer_over_a_websocket(monkeypatch):
    monkeypatch.setattr(flabels, "KEY_REFRESH_S", 0.0)
    async with Labeler() as labeler, httpx.AsyncClient() as http:
        resolver = IdentityResolver(Settings(allow_private_hosts=True), http)
        sink = Recorder()
        consumer = LabelConsumer(labeler.did, resolver, sink, allow_private=True)
        task = asyncio.create_task(consumer.run())
        try:
            await labeler.emit(T1, "!takedown")  # before the consumer connects: a new one starts at 0
            await eventually(lambda: _true(consumer.status.connected))
            await labeler.emit(T2, "porn", bad_signature=True)
            await labeler.emit(T2, "!takedown", src=OTHER)
            await labeler.emit_frame(b"\x01garbage")
            labeler.rotate_key()
            await labeler.emit(T2, "!hide")  # signed with the new key: re-resolved once, accepted
            await eventually(lambda: _true(sink.cursor == 4))
            vals = [(seq, [lb.val for lb in labels]) for seq, labels in sink.applied]
            assert vals == [(1, ["!takedown"]), (2, []), (3, []), (4, ["!hide"])]
            assert sink.counts == {"bad_signature": 1, "unknown_labeler": 1, "bad_frame": 1}
            assert consumer.status.connects == 1
        finally:
            consumer.stop()
            await task
        # a new consumer resumes after the stored cursor: nothing is applied twice
        again = LabelConsumer(labeler.did, resolver, sink, allow_private=True)
        task = asyncio.create_task(again.run())
        try:
            await eventually(lambda: _true(again.status.connected))
            await labeler.emit(T1, "!takedown", neg=True)
            await eventually(lambda: _true(sink.cursor == 5))
            assert [seq for seq, _ in sink.applied] == [1, 2, 3, 4, 5]
        finally:
            again.stop()
            await task
        # a cursor ahead of the labeler (its sequence was reset): FutureCursor, then it all again
        sink.cursor = 99
        third = LabelConsumer(labeler.did, resolver, sink, allow_private=True)
        task = asyncio.create_task(third.run())
        try:
            await eventually(lambda: _true(sink.cursor == 5))
            assert [seq for seq, _ in sink.applied] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
            assert third.status.last_error.startswith("FutureCursor")
        finally:
            third.stop()
            await task


async def _true(value: bool) -> bool:
    return value


def test_no_new_tips_settle_to_taken_down_artists_or_tracks(tmp_path):
    """``payments.settle._recipients``: a tip to an artist a labeler took down (``actor.hidden`` 2) is
    refused as ``unknown_artist``, one naming a taken-down track as ``unknown_track``; ``!hide`` (1)
    changes nothing."""
    import json
    import sqlite3

    from core import db as core_db
    from payments.settle import _recipients

    path = str(tmp_path / "tips.sqlite")
    core_db.migrate(path)
    conn = sqlite3.connect(path)
    artist = "did:plc:" + "t" * 24
    uri = f"at://{artist}/fm.openmusic.catalog.track/3kabcdefghijk"
    conn.execute("INSERT INTO actor (did, active) VALUES (?, 1)", (artist,))
    conn.execute("INSERT INTO track (uri, did, rkey, cid, title, duration_ms, audio_cid, audio_mime, created_at, "
                 "sort_at, indexed_at) VALUES (?, ?, '3kabcdefghijk', 'c', 'T', 1000, 'a', 'audio/wav', 'x', 'x', 'x')",
                 (uri, artist))
    conn.execute("INSERT INTO record (uri, did, collection, rkey, cid, json, indexed_at) VALUES (?, ?, "
                 "'fm.openmusic.catalog.track', '3kabcdefghijk', 'c', ?, 'x')", (uri, artist, json.dumps({})))
    tip = {"subject": artist, "amount": 500}
    assert _recipients(conn, tip, None) == (None, [(artist, 500)])
    assert _recipients(conn, tip, uri) == (None, [(artist, 500)])
    conn.execute("UPDATE actor SET hidden = 1")
    assert _recipients(conn, tip, uri) == (None, [(artist, 500)])
    conn.execute("UPDATE track SET hidden = 2")
    assert _recipients(conn, tip, uri) == ("unknown_track", [])
    assert _recipients(conn, tip, None) == (None, [(artist, 500)])
    conn.execute("UPDATE actor SET hidden = 2")
    assert _recipients(conn, tip, None) == ("unknown_artist", [])
    conn.close()
