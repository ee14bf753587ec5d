"""Lexicon documents and record validation (lexrpc over lexicons/)."""

import copy
import json
from pathlib import Path

import pytest

from core.lexicons import (
    ALBUM,
    FOLLOW,
    LIKE,
    PAYOUT,
    PLAY,
    PLAYLIST,
    PLAYLIST_ITEM,
    PROFILE,
    REVIEW,
    SETTLEMENT,
    SUBSCRIPTION,
    TIP,
    TRACK,
    VOTE,
    RecordInvalid,
    from_json,
    load_documents,
    record_collections,
    to_json,
    validate_record,
)
from indexer import track as track_module
from indexer.core import check_rkey
from tests.records import AUDIO, DID, IMAGE, NOW, play, track

LEXICON_DIR = Path(__file__).resolve().parent.parent / "lexicons"
#: Record lexicons of other apps, vendored to validate their records (issue 14: teal.fm, plyr.fm);
#: not ours to publish or to grant in our permission set.
FOREIGN = {"fm.teal.feed.play", "fm.teal.alpha.feed.play", "fm.plyr.track"}


def test_documents_are_named_by_their_path():
    for path in LEXICON_DIR.rglob("*.json"):
        doc = json.loads(path.read_text())
        assert doc["lexicon"] == 1
        assert doc["id"] == ".".join(path.relative_to(LEXICON_DIR).with_suffix("").parts)


def test_all_record_types_and_queries_exist():
    ids = {d["id"] for d in load_documents()}
    assert record_collections() == {TRACK, ALBUM, PROFILE, PLAY, LIKE, TIP, SETTLEMENT, SUBSCRIPTION, PAYOUT, VOTE,
                                    REVIEW, FOLLOW, PLAYLIST, PLAYLIST_ITEM} | FOREIGN
    for q in ("catalog.getTrack", "catalog.getTracks", "catalog.searchTracks", "catalog.getArtistTracks",
              "catalog.getAlbum", "actor.getProfile", "listen.getPlays", "listen.getTrackStats"):
        assert f"fm.openmusic.{q}" in ids


def test_full_track_is_valid():
    rec = track(album={"uri": f"at://{DID}/{ALBUM}/3kabcdefghijk", "cid": str(IMAGE)}, trackNumber=2,
                genre="Jazz", moods=["calm"], tags=["demo"], bpm=120, isrc="USRC17607839", releaseDate=NOW,
                description="d", artwork={"$type": "blob", "ref": IMAGE, "mimeType": "image/png", "size": 10},
                explicit=False, license="cc-by-4.0", aiDisclosure={"level": "assisted", "tools": ["x"], "note": "n"},
                featuredArtists=[DID], splits=[{"did": DID, "shareBps": 6000}, {"did": "did:web:b.example", "shareBps": 4000}],
                labels={"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "explicit"}]},
                unknownFutureField={"kept": True})
    validate_record(TRACK, rec)
    track_module.check(rec)


BAD_TRACKS = [
    ("missing audio", lambda r: r.pop("audio")),
    ("missing duration", lambda r: r.pop("duration")),
    ("duration as string", lambda r: r.update(duration="180")),
    ("duration zero", lambda r: r.update(duration=0)),
    ("empty title", lambda r: r.update(title="")),
    ("bad createdAt", lambda r: r.update(createdAt="yesterday")),
    ("audio is an image", lambda r: r["audio"].update(mimeType="image/png")),
    ("audio without CID", lambda r: r["audio"].update(ref="not-a-cid")),
    ("bad split DID", lambda r: r.update(splits=[{"did": "alice", "shareBps": 10000}])),
    ("wrong $type", lambda r: r.update({"$type": PLAY})),
    ("artwork too big", lambda r: r.update(artwork={"$type": "blob", "ref": IMAGE, "mimeType": "image/png",
                                                    "size": 50_000_000})),
]


@pytest.mark.parametrize("name,mutate", BAD_TRACKS, ids=[b[0] for b in BAD_TRACKS])
def test_invalid_tracks_are_rejected(name, mutate):
    rec = copy.deepcopy(track())
    mutate(rec)
    with pytest.raises(RecordInvalid):
        validate_record(TRACK, rec)


def test_splits_must_sum_to_10000():
    rec = track(splits=[{"did": DID, "shareBps": 5000}, {"did": "did:plc:other", "shareBps": 4000}])
    validate_record(TRACK, rec)  # the lexicon cannot say it ...
    with pytest.raises(RecordInvalid, match="9000"):
        track_module.check(rec)  # ... the indexer does


def test_play_and_like_and_profile():
    validate_record(PLAY, play(f"at://{DID}/{TRACK}/3kabcdefghijk", str(AUDIO), segments=[{"startMs": 0, "endMs": 5}],
                               completed=True, client="x", country="DE"))
    with pytest.raises(RecordInvalid):
        validate_record(PLAY, play(f"at://{DID}/{TRACK}/3kabcdefghijk", str(AUDIO), listened=-1))
    with pytest.raises(RecordInvalid):
        validate_record(PLAY, play(f"at://{DID}/{TRACK}/3kabcdefghijk", str(AUDIO), country="DEU"))
    validate_record(LIKE, {"$type": LIKE, "subject": {"uri": f"at://{DID}/{TRACK}/3kabcdefghijk", "cid": str(AUDIO)},
                           "createdAt": NOW})
    validate_record(PROFILE, {"$type": PROFILE, "displayName": "A", "roles": ["artist", "somethingNew"],
                              "links": [{"uri": "https://a.example"}], "createdAt": NOW})
    with pytest.raises(RecordInvalid):
        validate_record(PROFILE, {"$type": PROFILE, "displayName": "x" * 700, "createdAt": NOW})


def test_record_keys():
    check_rkey(TRACK, "3kabcdefghijk")
    check_rkey(PROFILE, "self")
    for coll, rkey in ((TRACK, "self"), (TRACK, "3KABCDEFGHIJK"), (PROFILE, "3kabcdefghijk")):
        with pytest.raises(RecordInvalid):
            check_rkey(coll, rkey)


def test_json_round_trip_keeps_cids_and_bytes():
    value = {"a": AUDIO, "b": b"\x00\x01", "c": [{"d": IMAGE}]}
    js = to_json(value)
    assert js["a"] == {"$link": "bafkreid4uzrxkeq3edn3dop55vtrzmrwp2cgc7hgav36bgrapeqblcvpha"}
    assert js["b"] == {"$bytes": "AAE"}
    assert to_json(from_json(js)) == js


def test_permission_set_covers_what_the_web_app_does():
    """``fm.openmusic.authFull`` (a permission set, the scope the web app means to ask for) names
    every collection a user writes (not the broker's) and every method that needs a service-auth
    JWT: a new record type or authenticated method fails here until the set includes it."""
    from appview.analytics import ANALYTICS
    from appview.notifications import NOTIFICATION_METHODS
    from appview.payment_methods import PAYMENT_METHODS

    doc = json.loads((LEXICON_DIR / "fm/openmusic/authFull.json").read_text())
    main = doc["defs"]["main"]
    assert main["type"] == "permission-set" and main["title"] and main["detail"]
    by_resource = {p["resource"]: p for p in main["permissions"]}
    assert set(by_resource) == {"repo", "rpc"}
    assert set(by_resource["repo"]["collection"]) == record_collections() - {SETTLEMENT, SUBSCRIPTION, PAYOUT} - FOREIGN
    authenticated = ({nsid for nsid, (_m, auth, _h) in PAYMENT_METHODS.items() if auth} | set(ANALYTICS)
                     | set(NOTIFICATION_METHODS))
    assert set(by_resource["rpc"]["lxm"]) == authenticated
    assert by_resource["rpc"]["inheritAud"] is True
    for nsid in [*by_resource["repo"]["collection"], *by_resource["rpc"]["lxm"]]:
        assert nsid.startswith("fm.openmusic.")  # a set may only grant its own namespace
