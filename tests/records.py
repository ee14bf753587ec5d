"""Valid example records (atproto data model) and helpers to build real DAG-CBOR frames for units."""

from __future__ import annotations

import hashlib
from typing import Any

import dag_cbor
from multiformats import CID, multihash, varint

DID = "did:plc:abcdefghijklmnopqrstuvwx"
LISTENER = "did:plc:listenerlistenerlistener"
AUDIO = CID.decode("bafkreid4uzrxkeq3edn3dop55vtrzmrwp2cgc7hgav36bgrapeqblcvpha")
IMAGE = CID.decode("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
NOW = "2026-11-01T12:00:00.000Z"


def track(title: str = "Neon Harbor", **extra: Any) -> dict[str, Any]:
    rec = {"$type": "fm.openmusic.catalog.track", "title": title,
           "audio": {"$type": "blob", "ref": AUDIO, "mimeType": "audio/wav", "size": 1234},
           "duration": 180000, "createdAt": NOW}
    rec.update(extra)
    return rec


def play(track_uri: str, track_cid: str, listened: int = 60000, **extra: Any) -> dict[str, Any]:
    rec = {"$type": "fm.openmusic.listen.play", "track": {"uri": track_uri, "cid": track_cid},
           "createdAt": NOW, "listenedMs": listened}
    rec.update(extra)
    return rec


def cid_of(block: bytes, codec: str = "dag-cbor") -> CID:
    return CID("base32", 1, codec, multihash.wrap(hashlib.sha256(block).digest(), "sha2-256"))


def car(blocks: list[bytes], root: CID | None = None) -> bytes:
    cids = [cid_of(b) for b in blocks]
    header = dag_cbor.encode({"version": 1, "roots": [root or cids[0]]})
    out = varint.encode(len(header)) + header
    for cid, block in zip(cids, blocks, strict=True):
        raw = bytes(cid)
        out += varint.encode(len(raw) + len(block)) + raw + block
    return out


def commit_frame(seq: int, did: str, rev: str, ops: list[tuple[str, str, dict[str, Any] | None]],
                 corrupt: bool = False) -> bytes:
    """A ``#commit`` frame with one block per created/updated record; ``corrupt`` flips a record byte."""
    blocks, wire_ops = [dag_cbor.encode({"did": did, "rev": rev, "version": 3})], []
    for action, path, record in ops:
        cid = None
        if record is not None:
            block = dag_cbor.encode(record)
            cid = cid_of(block)
            blocks.append(block)
        wire_ops.append({"action": action, "path": path, "cid": cid})
    data = car(blocks)
    if corrupt:
        data = data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:]
    body = {"seq": seq, "repo": did, "rev": rev, "since": None, "commit": cid_of(blocks[0]), "blocks": data,
            "ops": wire_ops, "time": NOW, "rebase": False, "tooBig": False, "blobs": []}
    return dag_cbor.encode({"op": 1, "t": "#commit"}) + dag_cbor.encode(body)
