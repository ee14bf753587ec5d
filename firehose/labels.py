"""Labels from the labelers the operator configured (atproto Labels spec; lexicons
``com.atproto.label.defs#label`` and ``com.atproto.label.subscribeLabels``).

A labeler is a DID whose document names a ``#atproto_labeler`` service (type ``AtprotoLabeler``:
its endpoint) and a ``#atproto_label`` verification method (the key its labels are signed with).
``resolve_labeler`` reads both; ``LabelConsumer`` follows the labeler's
``com.atproto.label.subscribeLabels`` stream from the stored cursor (0 at first: the labeler's whole
history; after a ``FutureCursor`` error, which says the labeler's sequence was reset, 0 again:
replayed labels change nothing, the store keeps the latest ``cts``), verifies each label
(``verify_label``) and hands the good ones, frame by frame with the frame's ``seq``, to a sink
(``indexer.labels.LabelStore``) that stores them and the cursor together.

Signatures (spec, "Signing"): the label object without ``sig`` (``ver`` included) is encoded as
DAG-CBOR; its SHA-256 is signed with the labeler's key (k256 or p256, 64-byte compact r||s,
low-S). A label that fails is checked again once after the key is re-resolved (the labeler may have
rotated it), as commit verification does; then it is skipped and counted (``bad_signature``).

Frames are the firehose's (event-stream spec): a DAG-CBOR header (``op``, ``t``) and a body:
``#labels`` (``seq``, ``labels``), ``#info`` (``name``, ``message``) or an error (``op = -1``).
Anything malformed is skipped and counted (``bad_frame``, ``malformed``), never raised: the
consumer reconnects with backoff (0.5 s doubling to 60 s, reset after a healthy minute) on network
errors and resumes from the cursor. Outbound fetches are SSRF-guarded (``core.netguard``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import cbrrr
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from core.db import normalize_datetime
from core.errors import RetryLater
from core.identity import IdentityError, valid_did
from core.netguard import BlockedURL, check_url
from firehose.consumer import Backoff
from firehose.events import ErrorFrame, FrameError, InfoEvent, split_frame
from firehose.verify import check_signature

log = logging.getLogger("openmusic.labels")

SUBSCRIBE = "com.atproto.label.subscribeLabels"
#: Labels spec: ``val`` is at most 128 bytes; this implementation reads label version 1.
MAX_VAL_BYTES = 128
LABEL_VERSION = 1
MAX_FRAME_BYTES = 5 * 1024 * 1024
#: Seconds a re-resolved key is trusted before a failing signature may re-resolve it again.
KEY_REFRESH_S = 10.0


class LabelError(ValueError):
    """A label that cannot be used: ``reason`` is the counter it is skipped under."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class Label:
    """One ``com.atproto.label.defs#label``: ``src`` (labeler DID), ``uri`` (subject: a DID or an
    AT-URI), ``val`` (at most 128 bytes), ``cid`` (record version, or None), ``neg`` (a negation of
    the earlier label of the same src/uri/val), ``cts``/``exp`` (normalized atproto datetimes, ``exp``
    None when it never expires), ``ver``, ``sig`` (64 bytes) and ``raw`` (the object as received)."""

    src: str
    uri: str
    val: str
    cts: str
    cid: str | None = None
    neg: bool = False
    exp: str | None = None
    ver: int | None = None
    sig: bytes | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(slots=True)
class LabelsMessage:
    """A ``#labels`` message: its ``seq`` and its labels as received (objects, not yet checked)."""

    seq: int
    labels: list[Any]


def parse_label(obj: Any) -> Label:
    """A received label object -> ``Label``. Raises ``LabelError("malformed", ...)`` when a required
    field is missing or of the wrong type, ``val`` is too long, a datetime does not parse, or the
    version is not 1 (``com.atproto.label.defs#label``)."""
    if not isinstance(obj, dict):
        raise LabelError("malformed", "a label is not an object")
    try:
        src, uri, val, cts = obj["src"], obj["uri"], obj["val"], obj["cts"]
    except KeyError as exc:
        raise LabelError("malformed", f"label lacks {exc.args[0]}") from exc
    if not (isinstance(src, str) and isinstance(uri, str) and isinstance(val, str) and isinstance(cts, str)):
        raise LabelError("malformed", "label src, uri, val and cts must be strings")
    if not val or len(val.encode()) > MAX_VAL_BYTES:
        raise LabelError("malformed", "label val is empty or longer than 128 bytes")
    if not valid_did(src):
        raise LabelError("malformed", f"label src is not a DID: {src[:100]!r}")
    if not (uri.startswith("did:") or uri.startswith("at://")) or len(uri) > 8192:
        raise LabelError("malformed", f"label uri is neither a DID nor an AT-URI: {uri[:100]!r}")
    ver, neg, sig, cid, exp = obj.get("ver"), obj.get("neg", False), obj.get("sig"), obj.get("cid"), obj.get("exp")
    if ver is not None and (not isinstance(ver, int) or isinstance(ver, bool) or ver != LABEL_VERSION):
        raise LabelError("malformed", f"label version {ver!r} is not {LABEL_VERSION}")
    if not isinstance(neg, bool) or (cid is not None and not isinstance(cid, str)):
        raise LabelError("malformed", "label neg must be a boolean and cid a string")
    if sig is not None and not isinstance(sig, bytes):
        raise LabelError("malformed", "label sig must be bytes")
    cts_n = normalize_datetime(cts)
    exp_n = normalize_datetime(exp) if isinstance(exp, str) else None
    if cts_n is None or (exp is not None and exp_n is None):
        raise LabelError("malformed", "label cts or exp is not a datetime")
    return Label(src=src, uri=uri, val=val, cts=cts_n, cid=cid, neg=neg, exp=exp_n, ver=ver, sig=sig, raw=obj)


def signing_bytes(obj: dict[str, Any]) -> bytes:
    """The bytes a label's signature covers (Labels spec, "Signing"): the DAG-CBOR of the label
    object without ``sig``, with ``ver`` (1 when absent). Raises ``ValueError`` on values DAG-CBOR
    cannot encode."""
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    unsigned.setdefault("ver", LABEL_VERSION)
    return cbrrr.encode_dag_cbor(unsigned)


def verify_label(label: Label, did_key: str) -> bool:
    """True when ``label.sig`` signs ``signing_bytes(label.raw)`` under ``did_key`` (the labeler's
    ``#atproto_label`` key as a ``did:key``)."""
    if not label.sig:
        return False
    try:
        message = signing_bytes(label.raw)
    except (ValueError, TypeError):
        return False
    return check_signature(did_key, message, label.sig)


def decode_label_frame(raw: bytes) -> LabelsMessage | InfoEvent | ErrorFrame | None:
    """One ``subscribeLabels`` frame -> its message; None for unknown message types (event-stream
    spec: ignored). Raises ``FrameError`` on bad CBOR, a missing header or body field."""
    envelope = split_frame(raw)
    if isinstance(envelope, ErrorFrame):
        return envelope
    kind, body = envelope
    if kind == "#labels":
        seq, labels = body.get("seq"), body.get("labels")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or not isinstance(labels, list):
            raise FrameError("#labels needs an integer seq and a labels array")
        return LabelsMessage(seq=seq, labels=labels)
    if kind == "#info":
        message = body.get("message")
        return InfoEvent(name=str(body.get("name"))[:200], message=message if isinstance(message, str) else None)
    return None


@dataclass(slots=True)
class LabelerInfo:
    """What a labeler's DID document says: its ``#atproto_labeler`` ``endpoint`` (an https URL) and
    ``#atproto_label`` ``key`` (a ``did:key``), each None when absent."""

    did: str
    endpoint: str | None
    key: str | None


def labeler_from_document(did: str, doc: dict[str, Any]) -> LabelerInfo:
    """Read a labeler's endpoint and key from its DID document (atproto DID spec: ids ``#atproto_labeler``
    and ``#atproto_label``, relative or absolute). Multikey and the legacy key types are read."""
    from atproto_crypto.did import get_did_key

    def own(fragment: str, value: object) -> bool:
        return value in (f"#{fragment}", f"{did}#{fragment}")

    endpoint = key = None
    for svc in doc.get("service") or []:
        if isinstance(svc, dict) and own("atproto_labeler", svc.get("id")) and isinstance(svc.get("serviceEndpoint"), str):
            endpoint = svc["serviceEndpoint"].rstrip("/")
            break
    for vm in doc.get("verificationMethod") or []:
        if isinstance(vm, dict) and own("atproto_label", vm.get("id")) and isinstance(vm.get("publicKeyMultibase"), str):
            try:
                key = get_did_key(vm.get("type", ""), vm["publicKeyMultibase"])
            except Exception:  # unsupported key type or malformed multibase
                key = None
            break
    return LabelerInfo(did=did, endpoint=endpoint, key=key)


class DocumentSource(Protocol):
    """Where DID documents come from (``core.identity.IdentityResolver``)."""

    async def document(self, did: str) -> dict:
        """``did``'s DID document. Raises ``IdentityError``."""


async def resolve_labeler(docs: DocumentSource, did: str) -> LabelerInfo:
    """``did``'s labeler endpoint and key, freshly resolved. Raises ``IdentityError``."""
    return labeler_from_document(did, await docs.document(did))


class LabelSink(Protocol):
    """Where verified labels go (``indexer.labels.LabelStore``)."""

    async def load_cursor(self, src: str) -> int | None:
        """The ``seq`` to resume ``src``'s stream after, or None for its start."""

    async def apply(self, src: str, seq: int, labels: list[Label]) -> None:
        """Store ``labels`` (from the frame ``seq`` of ``src``'s stream) and the cursor, atomically."""

    async def count(self, reason: str, n: int = 1) -> None:
        """Count ``n`` labels or frames skipped for ``reason``."""

    async def reset_cursor(self, src: str) -> None:
        """Forget ``src``'s cursor (its stream answered ``FutureCursor``): the next connection replays it all."""

    async def save_labeler(self, info: LabelerInfo) -> None:
        """Remember the labeler's endpoint and key as last resolved."""


@dataclass
class LabelerStatus:
    """Live figures of one labeler's stream, for ``/health``."""

    did: str
    endpoint: str | None = None
    connected: bool = False
    connects: int = 0
    frames: int = 0
    last_seq: int | None = None
    last_error: str | None = None
    info: list[str] = field(default_factory=list)


def subscribe_url(endpoint: str) -> str:
    """The ``subscribeLabels`` WebSocket URL at a labeler's ``endpoint`` (http -> ws, https -> wss).
    Raises ``BlockedURL`` when the endpoint is not an http(s) URL."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlockedURL(f"labeler endpoint is not an http(s) URL: {endpoint[:200]!r}")
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/xrpc/{SUBSCRIBE}"


class LabelConsumer:
    """Follows one configured labeler ``did``: resolves its document through ``docs``
    (``IdentityResolver``), subscribes from ``sink.load_cursor(did)`` and applies each ``#labels``
    frame. ``allow_private``: ``Settings.allow_private_hosts`` (the SSRF guard's local exception).
    ``run()`` returns only after ``stop()``."""

    def __init__(self, did: str, docs: DocumentSource, sink: LabelSink, allow_private: bool = False,
                 max_backoff_s: float = 60.0, heartbeat_s: float = 15.0) -> None:
        self.did = did
        self.docs = docs
        self.sink = sink
        self.allow_private = allow_private
        self.max_backoff_s = max_backoff_s
        self.heartbeat_s = heartbeat_s
        self.status = LabelerStatus(did=did)
        self.info: LabelerInfo | None = None
        self._key_fetched_at = 0.0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask ``run`` to return."""
        self._stop.set()

    async def run(self) -> None:
        """Consume until ``stop()``, reconnecting with backoff on any network, identity or transient
        database error. Errors of our own (bugs) are logged and retried the same way: one labeler's
        trouble never ends the process."""
        backoff = Backoff(self.max_backoff_s)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await self._session()
            except (TimeoutError, OSError, ConnectionClosed, InvalidHandshake, InvalidURI, IdentityError,
                    BlockedURL, RetryLater, sqlite3.OperationalError) as exc:
                self.status.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("labeler %s: %s", self.did, self.status.last_error)
            except Exception as exc:
                self.status.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.exception("labeler %s consumer failed", self.did)
            finally:
                self.status.connected = False
            if self._stop.is_set():
                break
            await backoff.wait(self._stop, backoff.next_delay(time.monotonic() - started))

    async def _resolve(self) -> LabelerInfo:
        info = await resolve_labeler(self.docs, self.did)
        self._key_fetched_at = time.monotonic()
        self.info = info
        self.status.endpoint = info.endpoint
        await self.sink.save_labeler(info)
        return info

    async def _session(self) -> None:
        info = await self._resolve()
        if not info.endpoint:
            raise IdentityError(f"{self.did} has no #atproto_labeler service")
        url = subscribe_url(info.endpoint)
        await check_url(info.endpoint, self.allow_private)
        # no cursor yet: from 0, the labeler's whole history (takedowns made before we subscribed count)
        cursor = await self.sink.load_cursor(self.did) or 0
        url = f"{url}?cursor={cursor}"
        async with websockets.connect(url, max_size=MAX_FRAME_BYTES, open_timeout=15,
                                      ping_interval=self.heartbeat_s, ping_timeout=self.heartbeat_s + 5,
                                      close_timeout=2) as ws:
            self.status.connected = True
            self.status.connects += 1
            stopper = asyncio.ensure_future(self._stop.wait())
            try:
                while True:
                    getter = asyncio.ensure_future(ws.recv())
                    await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    if stopper.done():
                        getter.cancel()
                        return
                    raw = getter.result()
                    self.status.frames += 1
                    if await self._frame(raw, cursor) is False:
                        return
                    cursor = self.status.last_seq if self.status.last_seq is not None else cursor
            finally:
                stopper.cancel()

    async def _frame(self, raw: bytes | str, cursor: int | None) -> bool:
        """Handle one frame; False when the stream ends (an error frame)."""
        if not isinstance(raw, bytes):
            await self.sink.count("bad_frame")
            return True
        try:
            msg = decode_label_frame(raw)
        except FrameError as exc:
            log.warning("labeler %s: skipping undecodable frame: %s", self.did, exc)
            await self.sink.count("bad_frame")
            return True
        if isinstance(msg, ErrorFrame):
            self.status.last_error = f"{msg.error}: {msg.message}"
            log.error("labeler %s error frame %s: %s", self.did, msg.error, msg.message)
            if msg.error == "FutureCursor" and cursor:
                # the labeler's sequence was reset: replay it all (labels are idempotent by cts)
                await self.sink.reset_cursor(self.did)
                self.status.last_seq = None
            return False
        if isinstance(msg, InfoEvent):
            self.status.info = [*self.status.info[-9:], f"{msg.name}: {msg.message}"]
            log.warning("labeler %s #info %s: %s", self.did, msg.name, msg.message)
            return True
        if msg is None:
            return True
        if cursor is not None and msg.seq <= cursor:
            return True  # replayed
        good = await self.check(msg.labels)
        await self.sink.apply(self.did, msg.seq, good)
        self.status.last_seq = msg.seq
        return True

    async def check(self, objects: list[Any]) -> list[Label]:
        """The labels among ``objects`` that parse, come from this labeler and are signed by its key
        (re-resolved once on a failure); the others are counted with the sink and left out."""
        good: list[Label] = []
        for obj in objects:
            try:
                label = parse_label(obj)
                if label.src != self.did:
                    raise LabelError("unknown_labeler", f"label from {label.src} in {self.did}'s stream")
                await self._verify(label)
            except LabelError as exc:
                log.info("labeler %s: skipping a label (%s): %s", self.did, exc.reason, exc)
                await self.sink.count(exc.reason)
                continue
            good.append(label)
        return good

    async def _verify(self, label: Label) -> None:
        key = self.info.key if self.info else None
        if key and verify_label(label, key):
            return
        if time.monotonic() - self._key_fetched_at >= KEY_REFRESH_S or not key:
            try:
                key = (await self._resolve()).key
            except IdentityError:
                key = None
            if key and verify_label(label, key):
                return
        raise LabelError("bad_signature", f"label {label.val} on {label.uri[:200]} is not signed by {self.did}'s key")

