"""The firehose's messages as plain objects (lexicon ``com.atproto.sync.subscribeRepos``).

``decode_frame`` turns one WebSocket binary frame into a ``CommitEvent``, ``IdentityEvent``,
``AccountEvent``, ``SyncEvent``, ``InfoEvent`` or ``ErrorFrame``; ``None`` for unknown types
(which the event-stream spec says to ignore). Record bodies are decoded only for ops whose
collection the caller wants, so most of the network's traffic costs a header decode.

Nothing a frame holds makes decoding raise anything but ``FrameError``: fields are type-checked
here, and a record block that is too large (``MAX_RECORD_BYTES``, checked before decoding) or not
DAG-CBOR becomes its op's ``error``, for the indexer to reject that record alone. ``cbrrr`` decodes
without recursion (a million nested arrays decode in 0.3 s), so nesting is bounded afterwards by
``core.lexicons.check_data_model``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import cbrrr
import libipld

from core.lexicons import MAX_RECORD_BYTES
from firehose.car import CarError, cid_str, read_car


class FrameError(ValueError):
    """A frame is not valid DAG-CBOR or lacks required fields."""


@dataclass(slots=True)
class RecordOp:
    """One repo write: ``action`` is create | update | delete; ``cid`` (str) is None on delete;
    ``record`` is the decoded record (data model as decoded by cbrrr: CIDs are ``cbrrr.CID``) or None
    when the op is a delete or its block is missing or unusable; ``error`` is then ``(reason,
    detail)`` when the block was there but too large or not a DAG-CBOR map."""

    action: str
    collection: str
    rkey: str
    cid: str | None
    record: dict[str, Any] | None = None
    prev: str | None = None
    error: tuple[str, str] | None = None


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


class RecordKeep(Protocol):
    """A record-level filter for one collection of which only a few records are wanted (for
    ``app.bsky.feed.post``: only posts that share one of our pages, ``indexer.share.ShareFilter``).
    Its calls must be cheap and must not raise."""

    def frame(self, raw: bytes) -> bool:
        """Whether any record in this whole frame (raw bytes) may be kept: a bytes search done
        before the frame's CAR slice is parsed. False drops every create/update op of the collection."""

    def block(self, did: str, rkey: str, block: bytes) -> bool:
        """Whether to keep (and decode) a create/update whose record block is ``block`` (raw DAG-CBOR)."""

    def removal(self, did: str, rkey: str) -> bool:
        """Whether to keep a delete (or an update whose new version is not kept): True when an earlier
        kept version of ``did``'s record may be indexed (over-answering costs a lookup, never a miss)."""


class Selection:
    """What the decoder keeps, as one object: callable as ``wanted(collection)`` (so it can be passed
    wherever a ``wanted`` predicate goes) over ``collections``, plus ``keep``: per collection, a
    ``RecordKeep`` that drops unwanted records of it before they become ``RecordOp``s."""

    def __init__(self, collections: Callable[[str], bool], keep: Mapping[str, RecordKeep] | None = None) -> None:
        self.collections = collections
        self.keep: dict[str, RecordKeep] = dict(keep or {})

    def __call__(self, collection: str) -> bool:
        return self.collections(collection)


def _cid(value: Any) -> str | None:
    if value is None:
        return None
    return cid_str(value) if isinstance(value, bytes | cbrrr.CID) else str(value)


def split_frame(raw: bytes) -> tuple[object, dict[str, Any]] | ErrorFrame:
    """An event-stream frame (the atproto event stream spec: a DAG-CBOR header, then a body) ->
    ``(t, body)`` for a message (``op`` 1), or the ``ErrorFrame`` of an error (``op`` -1). Shared by
    ``subscribeRepos`` and ``subscribeLabels``. Raises ``FrameError`` on bad CBOR, a header or body
    that is not a map, or another ``op``."""
    try:
        header, body = libipld.decode_dag_cbor_multi(raw)
    except Exception as exc:
        raise FrameError(f"not DAG-CBOR: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(body, dict):
        raise FrameError("frame header or body is not a map")
    op = header.get("op")
    if op == -1:
        message = body.get("message")
        return ErrorFrame(error=str(body.get("error"))[:200], message=message if isinstance(message, str) else None)
    if op != 1:
        raise FrameError(f"unknown frame op {op!r}")
    return header.get("t"), body


def decode_frame(raw: bytes, wanted: Callable[[str], bool], tracked: Callable[[str], bool] | None = None) -> Event | None:
    """Decode one frame. ``wanted(collection)`` says which ops to keep (and decode records for);
    ``tracked(did)`` says which repos' commits to keep in full even without wanted ops (to follow
    their ``since``/``prevData`` chain). When ``wanted`` is a ``Selection``, its ``keep`` filters
    also drop single records of their collections (e.g. every ``app.bsky.feed.post`` that shares
    nothing of ours): first by a bytes search on ``raw``, then on each record block before decoding.

    Raises ``FrameError`` on bad CBOR or missing fields. A commit whose CAR slice is broken is
    returned with ``blocks_error`` set and no records, so the caller can count and skip it.
    """
    envelope = split_frame(raw)
    if isinstance(envelope, ErrorFrame):
        return envelope
    kind, body = envelope
    try:
        if kind == "#commit":
            return _decode_commit(body, wanted, tracked, raw)
        if kind == "#identity":
            return IdentityEvent(seq=_seq(body), did=_str(body, "did"), handle=_str(body, "handle", None),
                                 time=_str(body, "time", ""))
        if kind == "#account":
            active = body["active"]
            if not isinstance(active, bool):
                raise TypeError("active is not a boolean")
            return AccountEvent(seq=_seq(body), did=_str(body, "did"), active=active,
                                status=_str(body, "status", None), time=_str(body, "time", ""))
        if kind == "#sync":
            return SyncEvent(seq=_seq(body), did=_str(body, "did"), rev=_tid(body, "rev"), time=_str(body, "time", ""))
        if kind == "#info":
            return InfoEvent(name=str(body.get("name")), message=_str(body, "message", None))
    except FrameError:
        raise
    except Exception as exc:  # whatever a hostile frame holds, it is this frame's problem only
        raise FrameError(f"bad {str(kind)[:64]} body: {exc!r}"[:500]) from exc
    return None


_REQUIRED = object()
#: Revisions are TIDs (sync spec); the verifier decodes their timestamp, so syntax is checked here.
TID_RE = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")


def _tid(body: dict[str, Any], key: str, default: Any = _REQUIRED) -> Any:
    """``body[key]`` as a TID string (``_str``, then TID syntax)."""
    value = _str(body, key, default)
    if value is not None and not TID_RE.fullmatch(value):
        raise ValueError(f"{key} is not a TID")
    return value


def _str(body: dict[str, Any], key: str, default: Any = _REQUIRED) -> Any:
    """``body[key]`` as a string; ``default`` when absent or null (required when no default)."""
    value = body.get(key)
    if value is None:
        if default is _REQUIRED:
            raise KeyError(key)
        return default
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _seq(body: dict[str, Any]) -> int:
    seq = body["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise TypeError("seq is not a non-negative integer")
    return seq


def _link(body: dict[str, Any], key: str) -> bytes | None:
    """A CID link field as libipld decodes it (binary CID), or None when absent or null."""
    value = body.get(key)
    if value is not None and not isinstance(value, bytes):
        raise TypeError(f"{key} is not a CID link")
    return value


def _decode_commit(body: dict[str, Any], wanted: Callable[[str], bool],
                   tracked: Callable[[str], bool] | None, raw: bytes = b"") -> CommitEvent:
    evt = CommitEvent(seq=_seq(body), did=_str(body, "repo"), rev=_tid(body, "rev"), since=_tid(body, "since", None),
                      commit="", time=_str(body, "time", ""))
    wire_ops = body.get("ops") or []
    if not isinstance(wire_ops, list):
        raise TypeError("ops is not an array")
    keep: dict[str, RecordKeep] = wanted.keep if isinstance(wanted, Selection) else {}
    frame_hit: dict[str, bool] = {}
    ops = []
    #: ops kept only if their record block passes ``keep[collection].block`` (checked once the CAR is read)
    pending: list[RecordOp] = []
    for op in wire_ops:
        path = op["path"]  # (a non-map op raises TypeError: a FrameError)
        if not isinstance(path, str):
            raise TypeError("an op's path is not a string")
        collection, _, rkey = path.partition("/")
        if wanted(collection):
            rop = RecordOp(action=_str(op, "action"), collection=collection, rkey=rkey,
                           cid=_cid(_link(op, "cid")), prev=_cid(_link(op, "prev")))
            filt = keep.get(collection)
            if filt is not None:
                if rop.action == "delete":
                    if not filt.removal(evt.did, rkey):
                        continue
                else:
                    if collection not in frame_hit:
                        frame_hit[collection] = filt.frame(raw)
                    if frame_hit[collection]:
                        pending.append(rop)
                    elif not (rop.action == "update" and filt.removal(evt.did, rkey)):
                        continue  # most posts: nothing of ours anywhere in the frame
            ops.append(rop)
    if not ops and not (tracked and tracked(evt.did)):
        return evt  # most of the network: the rest of the frame is never looked at
    all_ops = [(_str(op, "action"), op["path"], _link(op, "cid"), _link(op, "prev")) for op in wire_ops]
    commit = _link(body, "commit")
    if commit is None:
        raise KeyError("commit")
    evt.ops = ops
    evt.commit = _cid(commit) or ""
    evt.commit_raw = commit
    evt.prev_data = _link(body, "prevData")
    evt.all_ops = all_ops
    blocks_raw = body.get("blocks")
    if not isinstance(blocks_raw, bytes):
        raise TypeError("blocks is not bytes")
    try:
        roots, blocks = read_car(blocks_raw)
    except CarError as exc:
        evt.blocks_error = str(exc)
        return evt
    evt.blocks, evt.root = blocks, (roots[0] if roots else None)
    if pending:
        drop = set()
        for rop in pending:
            block = blocks.get(_cid_bytes(rop.cid)) if rop.cid else None
            filt = keep[rop.collection]
            if block is not None and not filt.block(evt.did, rop.rkey, block) and not (
                    rop.action == "update" and filt.removal(evt.did, rop.rkey)):
                drop.add(id(rop))
        if drop:
            ops = [rop for rop in ops if id(rop) not in drop]
            if not ops and not (tracked and tracked(evt.did)):  # nothing of ours after all
                return CommitEvent(seq=evt.seq, did=evt.did, rev=evt.rev, since=evt.since, commit="", time=evt.time)
            evt.ops = ops
    try:
        commit_block = cbrrr.decode_dag_cbor(blocks[evt.root])
        evt.data = bytes(commit_block["data"])
    except Exception:  # missing or malformed commit block: verification rejects it
        evt.data = None
    for rop in ops:
        if rop.action == "delete" or rop.cid is None:
            continue
        block = blocks.get(_cid_bytes(rop.cid))
        if block is None:
            continue
        if len(block) > MAX_RECORD_BYTES:
            rop.error = ("too_large", f"record block is {len(block)} bytes, over {MAX_RECORD_BYTES}")
            continue
        try:
            value = cbrrr.decode_dag_cbor(block)
        except Exception as exc:
            rop.error = ("bad_cbor", f"record block is not DAG-CBOR: {type(exc).__name__}: {exc}"[:500])
            continue
        if isinstance(value, dict):
            rop.record = value
        else:
            rop.error = ("not_object", "record is not a map")
    return evt


def _cid_bytes(cid: str) -> bytes:
    return bytes(cbrrr.CID.decode(cid))
