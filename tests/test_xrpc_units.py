"""XRPC parameter decoding against the query lexicons, and opaque cursors."""

import pytest
from starlette.requests import Request

from appview.xrpc import XrpcError, decode_cursor, encode_cursor, parse_params


def request(query: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": query.encode(), "headers": []})


def test_defaults_types_and_unknown_params():
    p = parse_params("fm.openmusic.catalog.searchTracks", request("q=neon&limit=5&utm_source=x"))
    assert p == {"q": "neon", "limit": 5, "sort": "recent"}


@pytest.mark.parametrize("nsid,query", [
    ("fm.openmusic.catalog.searchTracks", "limit=0"),
    ("fm.openmusic.catalog.searchTracks", "limit=101"),
    ("fm.openmusic.catalog.searchTracks", "limit=ten"),
    ("fm.openmusic.catalog.getTrack", ""),
    ("fm.openmusic.catalog.getTrack", "uri=not-an-at-uri"),
    ("fm.openmusic.catalog.getTracks", "&".join(f"uris=at://did:plc:a/x.y.z/{i}" for i in range(26))),
    ("fm.openmusic.catalog.getArtistTracks", "actor=not a handle"),
])
def test_bad_params_are_invalid_request(nsid, query):
    with pytest.raises(XrpcError) as exc:
        parse_params(nsid, request(query))
    assert exc.value.status == 400 and exc.value.error == "InvalidRequest"


def test_arrays_repeat_keys():
    p = parse_params("fm.openmusic.catalog.getTracks", request("uris=at://did:plc:a/x.y.z/1&uris=at://did:plc:a/x.y.z/2"))
    assert p["uris"] == ["at://did:plc:a/x.y.z/1", "at://did:plc:a/x.y.z/2"]


def test_cursor_round_trip_and_garbage():
    c = encode_cursor("2026-01-01T00:00:00.000Z", "at://did:plc:a/x/y")
    assert decode_cursor(c, 2) == ["2026-01-01T00:00:00.000Z", "at://did:plc:a/x/y"]
    assert decode_cursor(None, 2) is None
    for bad in ("!!!", encode_cursor(1), "eyJ4Ijox"):
        with pytest.raises(XrpcError):
            decode_cursor(bad, 2)
