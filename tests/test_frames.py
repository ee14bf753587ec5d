"""Decoding firehose frames and CAR slices (units on frames built with dag_cbor)."""

import dag_cbor
import pytest

from core.lexicons import to_json
from firehose.car import CarError, read_car
from firehose.events import AccountEvent, CommitEvent, ErrorFrame, FrameError, IdentityEvent, decode_frame
from indexer.core import wanted
from tests.records import DID, car, commit_frame, track

TRACK_PATH = "fm.openmusic.catalog.track/3kabcdefghijk"


def test_commit_keeps_only_wanted_ops_and_decodes_records():
    frame = commit_frame(7, DID, "3kaaaaaaaaaaa", [("create", TRACK_PATH, track()),
                                                  ("create", "app.bsky.feed.post/3kbbbbbbbbbbb", {"text": "hi"})])
    evt = decode_frame(frame, wanted)
    assert isinstance(evt, CommitEvent)
    assert (evt.seq, evt.did, evt.rev) == (7, DID, "3kaaaaaaaaaaa")
    assert [op.collection for op in evt.ops] == ["fm.openmusic.catalog.track"]
    assert to_json(evt.ops[0].record) == to_json(track())
    assert evt.ops[0].cid.startswith("bafyrei")


def test_tampered_block_is_reported_not_decoded():
    frame = commit_frame(8, DID, "3kaaaaaaaaaab", [("create", TRACK_PATH, track())], corrupt=True)
    evt = decode_frame(frame, wanted)
    assert evt.blocks_error and "does not match" in evt.blocks_error
    assert evt.ops[0].record is None


def test_other_event_types():
    ident = dag_cbor.encode({"op": 1, "t": "#identity"}) + dag_cbor.encode({"seq": 1, "did": DID, "handle": "a.test"})
    acct = dag_cbor.encode({"op": 1, "t": "#account"}) + dag_cbor.encode(
        {"seq": 2, "did": DID, "active": False, "status": "deactivated"})
    err = dag_cbor.encode({"op": -1}) + dag_cbor.encode({"error": "FutureCursor", "message": "no"})
    unknown = dag_cbor.encode({"op": 1, "t": "#somethingNew"}) + dag_cbor.encode({"seq": 3})
    assert decode_frame(ident, wanted) == IdentityEvent(1, DID, "a.test", "")
    assert decode_frame(acct, wanted) == AccountEvent(2, DID, False, "deactivated", "")
    assert decode_frame(err, wanted) == ErrorFrame("FutureCursor", "no")
    assert decode_frame(unknown, wanted) is None


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe garbage", dag_cbor.encode({"op": 1, "t": "#commit"}),
                                 dag_cbor.encode({"op": 1, "t": "#account"}) + dag_cbor.encode({"seq": 1})])
def test_bad_frames_raise_frame_error(raw):
    with pytest.raises(FrameError):
        decode_frame(raw, wanted)


def test_car_reader_checks_hashes_and_accepts_duplicates():
    a, b = dag_cbor.encode({"a": 1}), dag_cbor.encode({"b": 2})
    roots, blocks = read_car(car([a, b, a]))
    assert len(roots) == 1 and len(blocks) == 2
    with pytest.raises(CarError):
        read_car(car([a])[:-1] + b"\x00")
    with pytest.raises(CarError):
        read_car(b"\x05garbage")
