"""Serving creators' blobs safely (issue 10, items 17 and 18, and the stored-XSS report): declared
mime types are parsed strictly at index time and at serve time (``core.mediatype``), blob
responses are sandboxed, a malformed ``Range`` is ignored, the blob cache is trusted by construction,
bounded, and answers disk failures with an XRPC error, and the SSRF guard sees through IPv6
transition addresses. No network: PDS answers come from an ``httpx.MockTransport``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import sqlite3
from pathlib import Path

import httpx
import pytest
from multiformats import CID, multihash

from appview.app import create_app
from appview.blobs import BlobError, BlobStore, valid_range
from core import db
from core.config import Settings
from core.lexicons import RecordInvalid
from core.mediatype import blob_media_type, parse_media_type
from core.netguard import BlockedURL, check_url
from firehose.events import CommitEvent, RecordOp
from indexer import album, profile
from indexer import track as track_module
from indexer.core import Indexer
from openmusic.runtime import Runtime
from tests.records import DID, IMAGE, track

PDS = "https://pds.example"
CSP = "sandbox; default-src 'none'"


def cid_for(data: bytes) -> str:
    return CID("base32", 1, "raw", multihash.wrap(hashlib.sha256(data).digest(), "sha2-256")).encode("base32")


class FakePds:
    """``com.atproto.sync.getBlob`` over an ``httpx.MockTransport``: ``blobs`` by CID, served in 64 KiB
    chunks with a pause between them (so concurrent fetches interleave); counts requests."""

    def __init__(self, *blobs: bytes, pause: float = 0.0) -> None:
        self.blobs = {cid_for(b): b for b in blobs}
        self.pause = pause
        self.requests = 0
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        data = self.blobs.get(request.url.params["cid"])
        if data is None:
            return httpx.Response(404)

        async def body():
            for i in range(0, len(data), 1 << 16):
                await asyncio.sleep(self.pause)
                yield data[i:i + (1 << 16)]
        return httpx.Response(200, content=body())


def store(root: Path, pds: FakePds, **kw) -> BlobStore:
    return BlobStore(str(root), pds.client, True, 10 * 1024 * 1024, **kw)


# --- 1. one strict mime parser, at index time and at serve time --------------------------------------

@pytest.mark.parametrize("value, parsed", [
    ("audio/mpeg", "audio/mpeg"), ("Audio/MPEG", "audio/mpeg"), ("audio/x-flac", "audio/x-flac"),
    ("image/png", "image/png"), ("audio/vnd.wave", "audio/vnd.wave"),
    ("audio/x,text/html", None), ("audio/mpeg; charset=x", None), ("audio/mpeg;x", None), ("audio/ mpeg", None),
    (" audio/mpeg", None), ("audio/mpeg\n", None), ("audio/mpeg\r\nX-Evil: 1", None), ("audio", None),
    ("audio/mp/eg", None), ("audio/mpeg\u00e9", None), ("", None), (None, None), (3, None),
])
def test_parse_media_type(value, parsed):
    assert parse_media_type(value) == parsed


@pytest.mark.parametrize("value, kind, allowed", [
    ("audio/wav", "audio", "audio/wav"), ("AUDIO/Ogg", "audio", "audio/ogg"), ("audio/x,text/html", "audio", None),
    ("text/html", "audio", None), ("audio/x+xml", "audio", None), ("image/png", "audio", None),
    ("image/png", "image", "image/png"), ("image/JPEG", "image", "image/jpeg"), ("image/webp", "image", "image/webp"),
    ("image/svg+xml", "image", None), ("image/x,text/html", "image", None), ("audio/wav", "image", None),
])
def test_blob_media_type_allow_lists(value, kind, allowed):
    assert blob_media_type(value, kind) == allowed


def test_index_time_check_uses_the_same_parser():
    bad = track()
    bad["audio"] = dict(bad["audio"], mimeType="audio/x,text/html")
    with pytest.raises(RecordInvalid) as exc:
        track_module.check(bad)
    assert exc.value.reason == "lexicon"
    track_module.check(track())
    svg = {"$type": "blob", "ref": IMAGE, "mimeType": "image/svg+xml", "size": 10}
    for module, field in ((track_module, "artwork"), (album, "artwork"), (profile, "avatar"), (profile, "banner")):
        with pytest.raises(RecordInvalid):
            module.check({field: svg})
        module.check({field: dict(svg, mimeType="image/png")})


async def test_indexer_rejects_a_track_whose_audio_type_is_a_list(tmp_path):
    path = str(tmp_path / "t.sqlite")
    db.migrate(path)
    ix = Indexer(path, "test")
    await ix.open()
    await ix.load_state()
    try:
        bad = track("Stored XSS")
        bad["audio"] = dict(bad["audio"], mimeType="audio/x,text/html")
        ops = [RecordOp("create", track_module.COLLECTION, "3kzaaaaaaaaab", "bafyreia", bad),
               RecordOp("create", track_module.COLLECTION, "3kzaaaaaaaaac", "bafyreib", track("Fine"))]
        await ix.apply([CommitEvent(seq=1, did=DID, rev="3kzaaaaaaaaaa", since=None, commit="bafy", time="",
                                    ops=ops)], 1)
        assert ix.rejections == {"lexicon": 1}
        with contextlib.closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT title, audio_mime FROM track").fetchall() == [("Fine", "audio/wav")]
    finally:
        await ix.close()


# --- the AppView's /audio and /image routes (ASGI, no server) ---------------------------------------

@pytest.fixture
async def app(tmp_path):
    """The AppView app over a started Runtime (no firehose) whose blob index is a dict
    ``sources[(did, cid, kind)] = mime`` and whose PDS is a ``FakePds``; yields (client, rt, sources, pds)."""
    rt = Runtime(Settings(db_path=str(tmp_path / "db.sqlite"), blob_cache_dir=str(tmp_path / "blobs"),
                          verify_commits=False, allow_private_hosts=True, log_level="WARNING"))
    await rt.start(firehose=False)
    sources: dict[tuple[str, str, str], str] = {}
    pds = FakePds(b"RIFF fake wav " * 100, b"<script>alert(document.cookie)</script>", b"\x89PNG fake")

    async def blob_source(did: str, cid: str, kind: str):
        mime = sources.get((did, cid, kind))
        return None if mime is None else (mime, PDS)

    rt.blob_source = blob_source
    rt.blobs = store(tmp_path / "blobs", pds)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_app(rt)), base_url="http://appview") as http:
        yield http, rt, sources, pds
    await pds.client.aclose()
    await rt.stop()


def sandboxed(resp: httpx.Response) -> None:
    assert resp.headers["content-security-policy"] == CSP
    assert resp.headers["x-content-type-options"] == "nosniff"


async def test_a_listed_mime_type_is_served_as_octet_stream(app):
    http, _rt, sources, _pds = app
    html = b"<script>alert(document.cookie)</script>"
    cid = cid_for(html)
    for declared in ("audio/x,text/html", "text/html", "audio/x+xml", "audio/mpeg; x=text/html"):
        sources[(DID, cid, "audio")] = declared
        resp = await http.get(f"/audio/{DID}/{cid}")
        assert resp.status_code == 200 and resp.content == html
        assert resp.headers["content-type"] == "application/octet-stream", declared
        assert resp.headers["content-disposition"] == "attachment"
        sandboxed(resp)


async def test_allowed_types_are_served_inline_lower_cased(app):
    http, _rt, sources, _pds = app
    wav, png = b"RIFF fake wav " * 100, b"\x89PNG fake"
    sources[(DID, cid_for(wav), "audio")] = "Audio/WAV"
    sources[(DID, cid_for(png), "image")] = "image/png"
    resp = await http.get(f"/audio/{DID}/{cid_for(wav)}")
    assert (resp.status_code, resp.headers["content-type"], resp.headers["content-disposition"]) == (200, "audio/wav", "inline")
    sandboxed(resp)
    resp = await http.get(f"/image/{DID}/{cid_for(png)}")
    assert (resp.status_code, resp.headers["content-type"], resp.content) == (200, "image/png", png)
    sandboxed(resp)
    sources[(DID, cid_for(png), "image")] = "image/svg+xml"
    resp = await http.get(f"/image/{DID}/{cid_for(png)}")
    assert resp.headers["content-type"] == "application/octet-stream"
    sandboxed(resp)
    head = await http.head(f"/audio/{DID}/{cid_for(wav)}")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-security-policy"] == CSP


# --- 4. Range: malformed ignored (200), valid 206, unsatisfiable 416 --------------------------------

@pytest.mark.parametrize("header", ["bytes=abc", "bytes=5-2", "items=0-1", "bytes=", "bytes=0-1,x", "bytes 0-1",
                                    "bytes=--1", "bytes=1-2-3", "bytes=0x1-2"])
async def test_malformed_range_is_ignored(app, header):
    http, _rt, sources, _pds = app
    wav = b"RIFF fake wav " * 100
    sources[(DID, cid_for(wav), "audio")] = "audio/wav"
    resp = await http.get(f"/audio/{DID}/{cid_for(wav)}", headers={"Range": header})
    assert resp.status_code == 200, (header, resp.text)
    assert resp.content == wav and "content-range" not in resp.headers
    sandboxed(resp)


async def test_valid_and_unsatisfiable_ranges(app):
    http, _rt, sources, _pds = app
    wav = b"RIFF fake wav " * 100
    url = f"/audio/{DID}/{cid_for(wav)}"
    sources[(DID, cid_for(wav), "audio")] = "audio/wav"
    for header, body in (("bytes=0-9", wav[:10]), ("bytes=10-", wav[10:]), ("bytes=-5", wav[-5:]),
                         ("BYTES = 3-3", wav[3:4]), ("bytes=1395-99999", wav[1395:])):
        resp = await http.get(url, headers={"Range": header})
        assert (resp.status_code, resp.content) == (206, body), header
        sandboxed(resp)
    resp = await http.get(url, headers={"Range": "bytes=0-1, 4-5"})
    assert resp.status_code == 206 and resp.headers["content-type"].startswith("multipart/byteranges")
    resp = await http.get(url, headers={"Range": f"bytes={len(wav)}-"})
    assert resp.status_code == 416 and resp.headers["content-range"] == f"bytes */{len(wav)}"


def test_valid_range_grammar():
    assert all(map(valid_range, ["bytes=0-0", "bytes=0-", "bytes=-1", "bytes=1-2, 5-", "bytes=,0-1", "Bytes=0-1"]))
    assert not any(map(valid_range, ["bytes=1-0", "bytes=-", "bytes=a-", "lines=0-1", "bytes=0-1;x",
                                     "bytes=" + "9" * 5000 + "-"]))


# --- 2. the blob cache -------------------------------------------------------------------------------

async def test_disk_errors_are_503_and_release_the_lock(app, tmp_path):
    http, rt, sources, pds = app
    wav = b"RIFF fake wav " * 100
    cid = cid_for(wav)
    sources[(DID, cid, "audio")] = "audio/wav"
    not_a_dir = tmp_path / "cache-is-a-file"
    not_a_dir.write_bytes(b"")
    rt.blobs = store(not_a_dir, pds)
    resp = await http.get(f"/audio/{DID}/{cid}")
    assert resp.status_code == 503, resp.text
    body = resp.json()
    assert body["error"] == "BlobCacheUnavailable" and "cache" in body["message"]
    assert rt.blobs._locks == {}


async def test_full_disk_on_write_is_503_and_leaves_nothing(tmp_path, monkeypatch):
    pds = FakePds(b"x" * 200_000)
    cid = next(iter(pds.blobs))
    blobs = store(tmp_path, pds)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(BlobError) as exc:
        await blobs.get(DID, cid, PDS)
    assert (exc.value.status, exc.value.error) == (503, "BlobCacheUnavailable")
    assert "No space left" in str(exc.value)
    assert blobs._locks == {} and [p for p in tmp_path.rglob("*") if p.is_file()] == []
    monkeypatch.undo()
    assert (await blobs.get(DID, cid, PDS)).read_bytes() == pds.blobs[cid]


async def test_failed_fetches_release_the_lock_and_leave_no_file(tmp_path):
    good = b"good bytes"
    pds = FakePds(good)
    blobs = store(tmp_path, pds)
    wrong = cid_for(b"other bytes")
    pds.blobs[wrong] = good  # the PDS lies: its bytes do not match the CID
    with pytest.raises(BlobError) as exc:
        await blobs.get(DID, wrong, PDS)
    assert exc.value.error == "BlobMismatch"
    with pytest.raises(BlobError) as exc:
        await blobs.get(DID, cid_for(b"missing"), PDS)
    assert exc.value.status == 502
    assert blobs._locks == {} and [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_concurrent_fetches_of_one_blob_never_share_a_temp_file(tmp_path):
    """Two stores on one folder in one process (as two apps would be) fetch the same blob at once:
    both succeed with verified bytes (the old ``<cid>.<pid>.part`` name was shared)."""
    data = os.urandom(5 * 65536 + 123)
    pds = FakePds(data, pause=0.01)
    cid = cid_for(data)
    a, b = store(tmp_path, pds), store(tmp_path, pds)
    paths = await asyncio.gather(a.get(DID, cid, PDS), b.get(DID, cid, PDS), a.get(DID, cid, PDS))
    assert all(p.read_bytes() == data for p in paths)
    assert pds.requests == 2  # the two requests to store ``a`` shared one fetch
    assert a._locks == {} and b._locks == {}
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [cid]


async def test_cache_is_bounded_lru_by_bytes(tmp_path):
    blobs_ = [bytes([i]) * 100 for i in range(4)]
    pds = FakePds(*blobs_)
    a, b, c, d = (cid_for(x) for x in blobs_)
    blobs = store(tmp_path, pds, cache_max_bytes=250)
    for cid in (a, b):
        await blobs.get(DID, cid, PDS)
    await blobs.get(DID, a, PDS)  # served again: now b is the least recently served
    await blobs.get(DID, c, PDS)
    cached = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert cached == {a, c} and blobs.cached_bytes == 200 and blobs.evicted == 1
    assert pds.requests == 3
    # A restart scans the folder: sizes and the served order (mtimes) come back.
    os.utime(blobs.path(c), (1_000_000, 1_000_000))
    os.utime(blobs.path(a), (2_000_000, 2_000_000))
    again = store(tmp_path, pds, cache_max_bytes=250)
    assert again.cached_bytes == 200
    await again.get(DID, d, PDS)
    assert {p.name for p in tmp_path.rglob("*") if p.is_file()} == {a, d}
    small = store(tmp_path, pds, cache_max_bytes=100)  # a smaller bound at startup evicts at once
    assert small.cached_bytes == 100 and {p.name for p in tmp_path.rglob("*") if p.is_file()} == {d}


def test_stale_temp_files_are_removed_at_startup(tmp_path):
    shard = tmp_path / "aa"
    shard.mkdir()
    old, fresh = shard / ".bafkaa.x1.part", shard / ".bafkaa.x2.part"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(old, (1_000_000, 1_000_000))
    blobs = BlobStore(str(tmp_path), httpx.AsyncClient(), True, 1000)
    assert not old.exists() and fresh.exists() and blobs.cached_bytes == 0


def test_cache_bound_setting():
    assert Settings().blob_cache_max_bytes == 2 * 1024 ** 3
    assert Settings.from_env({"OPENMUSIC_BLOB_CACHE_MAX_BYTES": "1048576"}).blob_cache_max_bytes == 1048576


# --- 3. the SSRF guard and IPv6 transition addresses -------------------------------------------------

@pytest.mark.parametrize("url", [
    "https://[64:ff9b::7f00:1]/", "https://[64:ff9b::a00:1]/", "https://[64:ff9b:1::7f00:1]/",
    "https://[2002:7f00:1::]/", "https://[2002:a9fe:a9fe::1]/", "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:169.254.169.254]/", "https://[2001::1]/", "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    "https://[::127.0.0.1]/", "https://[::ffff:0:7f00:1]/", "https://[100::1]/", "https://127.0.0.1/",
    "https://[::1]/",
])
async def test_transition_addresses_are_blocked(url):
    with pytest.raises(BlockedURL):
        await check_url(url, False)


@pytest.mark.parametrize("url", ["https://8.8.8.8/", "https://[2606:4700:4700::1111]/",
                                 "https://[64:ff9b::808:808]/", "https://[::ffff:8.8.8.8]/"])
async def test_public_addresses_pass(url):
    await check_url(url, False)  # NAT64 of a public IPv4 address: how an IPv6-only host reaches IPv4 PDSes
