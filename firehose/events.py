"""The firehose's messages as plain objects (lexicon ``com.atproto.sync.subscribeRepos``).

``decode_frame`` turns one WebSocket binary frame into a ``CommitEvent``, ``IdentityEvent``,
``AccountEvent``, ``SyncEvent``, ``InfoEvent`` or ``ErrorFrame``; ``None`` for unknown types
(which the event-stream spec says to ignore). Record bodies are decoded only for ops whose
collection the caller wants, so most of the network's traffic costs a header decode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbrrr
import libipld

from firehose.car import CarError, cid_str, read_car


class FrameError(ValueError):
    """A frame is not valid DAG-CBOR or lacks required fields."""


@dataclass(slots=True)
class RecordOp:
    """One repo write: ``action`` is create | update | delete; ``cid`` (str) is None on delete;
    ``record`` is the decoded record (data model as decoded by cbrrr: CIDs are ``cbrrr.CID``) or None
    when the op is a delete or its block is missing."""

    action: str
    collection: str
    rkey: str
    cid: str | None
    record: dict[str, Any] | None = None
    prev: str | None = None


@dataclass(slots=True)
class CommitEvent:
    """``#commit``: ``did`` is the message's ``repo``; ``ops`` holds only the wanted collections.

    For commits with wanted ops, the verification material is kept: ``blocks`` (binary CID -> raw
    block), ``root`` (the CAR's root, binary CID), ``commit_raw`` (the message's commit CID),
    ``prev_data`` (binary CID or None), ``data`` (the commit's MST root) and ``all_ops`` as ``(action, path, cid, prev)`` (binary CIDs or None).
    ``rejected`` is set (with ``rejected_detail``) when verification fails.
    """

    seq: int
    did: str
    rev: str
    since: str | None
    commit: str
    time: str
    ops: list[RecordOp] = field(default_factory=list)
    blocks_error: str | None = None
    blocks: dict[bytes, bytes] | None = None
    root: bytes | None = None
    commit_raw: bytes | None = None
    prev_data: bytes | None = None
    data: bytes | None = None
    all_ops: list[tuple[str, str, bytes | None, bytes | None]] = field(default_factory=list)
    rejected: str | None = None
    rejected_detail: str | None = None


@dataclass(slots=True)
class IdentityEvent:
    """``#identity``: the DID's document or handle may have changed."""

    seq: int
    did: str
    handle: str | None
    time: str


@dataclass(slots=True)
class AccountEvent:
    """``#account``: hosting status at the emitting service (active, or takendown, suspended,
    deleted, deactivated, desynchronized, throttled)."""

    seq: int
    did: str
    active: bool
    status: str | None
    time: str


@dataclass(slots=True)
class SyncEvent:
    """``#sync``: declares the repo's current commit (after data loss or a broken chain)."""

    seq: int
    did: str
    rev: str
    time: str


@dataclass(slots=True)
class InfoEvent:
    """``#info`` (no seq), e.g. ``OutdatedCursor``."""

    name: str
    message: str | None


@dataclass(slots=True)
class ErrorFrame:
    """An error frame (``op = -1``), e.g. ``FutureCursor`` or ``ConsumerTooSlow``; the stream ends."""

    error: str
    message: str | None


Event = CommitEvent | IdentityEvent | AccountEvent | SyncEvent | InfoEvent | ErrorFrame


def _cid(value: Any) -> str | None:
    if value is None:
        return None
    return cid_str(value) if isinstance(value, bytes | cbrrr.CID) else str(value)


def decode_frame(raw: bytes, wanted: Callable[[str], bool], tracked: Callable[[str], bool] | None = None) -> Event | None:
    """Decode one frame. ``wanted(collection)`` says which ops to keep (and decode records for);
    ``tracked(did)`` says which repos' commits to keep in full even without wanted ops (to follow
    their ``since``/``prevData`` chain).

    Raises ``FrameError`` on bad CBOR or missing fields. A commit whose CAR slice is broken is
    returned with ``blocks_error`` set and no records, so the caller can count and skip it.
    """
    try:
        header, body = libipld.decode_dag_cbor_multi(raw)
    except Exception as exc:
        raise FrameError(f"not DAG-CBOR: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(body, dict):
        raise FrameError("frame header or body is not a map")
    op = header.get("op")
    if op == -1:
        return ErrorFrame(error=str(body.get("error")), message=body.get("message"))
    if op != 1:
        raise FrameError(f"unknown frame op {op!r}")
    try:
        kind = header.get("t")
        if kind == "#commit":
            return _decode_commit(body, wanted, tracked)
        if kind == "#identity":
            return IdentityEvent(seq=int(body["seq"]), did=body["did"], handle=body.get("handle"),
                                 time=body.get("time", ""))
        if kind == "#account":
            return AccountEvent(seq=int(body["seq"]), did=body["did"], active=bool(body["active"]),
                                status=body.get("status"), time=body.get("time", ""))
        if kind == "#sync":
            return SyncEvent(seq=int(body["seq"]), did=body["did"], rev=body["rev"], time=body.get("time", ""))
        if kind == "#info":
            return InfoEvent(name=str(body.get("name")), message=body.get("message"))
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"bad {header.get('t')} body: {exc!r}") from exc
    return None


def _decode_commit(body: dict[str, Any], wanted: Callable[[str], bool],
                   tracked: Callable[[str], bool] | None) -> CommitEvent:
    evt = CommitEvent(seq=int(body["seq"]), did=body["repo"], rev=body["rev"], since=body.get("since"),
                      commit="", time=body.get("time", ""))
    ops = []
    for op in body.get("ops") or []:
        path = op["path"]
        collection, _, rkey = path.partition("/")
        if wanted(collection):
            ops.append(RecordOp(action=op["action"], collection=collection, rkey=rkey,
                                cid=_cid(op.get("cid")), prev=_cid(op.get("prev"))))
    if not ops and not (tracked and tracked(evt.did)):
        return evt
    evt.ops = ops
    evt.commit = _cid(body["commit"]) or ""
    evt.commit_raw = body["commit"] if isinstance(body["commit"], bytes) else None
    evt.prev_data = body.get("prevData")
    evt.all_ops = [(op["action"], op["path"], op.get("cid"), op.get("prev")) for op in body["ops"]]
    try:
        roots, blocks = read_car(body["blocks"])
    except CarError as exc:
        evt.blocks_error = str(exc)
        return evt
    evt.blocks, evt.root = blocks, (roots[0] if roots else None)
    try:
        commit = cbrrr.decode_dag_cbor(blocks[evt.root])
        evt.data = bytes(commit["data"])
    except Exception:  # missing or malformed commit block: verification rejects it
        evt.data = None
    for rop in ops:
        if rop.action == "delete" or rop.cid is None:
            continue
        block = blocks.get(bytes(_cid_bytes(rop.cid)))
        if block is not None:
            try:
                value = cbrrr.decode_dag_cbor(block)
            except Exception:
                value = None
            rop.record = value if isinstance(value, dict) else None
    return evt


def _cid_bytes(cid: str) -> bytes:
    return bytes(cbrrr.CID.decode(cid))
