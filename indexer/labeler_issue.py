"""Our own labeler (issue 14, "Reports"): the labels the AppView issues itself, signed, stored in
``issued_label`` (migration ``0024_reports``) and applied at once to our own index through the label
store (``indexer.labels.LabelStore.apply``, the function the consumers of other labelers call).

Signing (atproto Labels spec, "Signing"; ``com.atproto.label.defs#label``): the label object without
``sig`` and with ``ver: 1`` is encoded as DAG-CBOR, its SHA-256 signed with our k256 key (libsecp256k1
through coincurve: RFC 6979 nonces, low-S), and the 64-byte compact r||s put in ``sig``. The key is
``Settings.label_key`` (hex), or one made on first start and kept in ``Settings.label_key_file``
(``load_key``). It is published in our did:web document as ``#atproto_label`` (``Multikey``) with the
``#atproto_labeler`` service (type ``AtprotoLabeler``: our base URL), so any AppView that configures
our DID as a labeler verifies our labels with ``firehose.labels.verify_label`` and honours our
takedowns (``document_entries``). ``appview.moderation`` serves them over
``com.atproto.label.subscribeLabels`` and ``com.atproto.label.queryLabels`` (``issued_after``,
``query``); ``wait_for_new`` wakes its streams when a label is issued in this process.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import cbrrr
import coincurve
from atproto_crypto.consts import SECP256K1_JWT_ALG
from atproto_crypto.did import format_did_key, format_multikey

from core.db import now_iso
from core.keyfile import read_or_create
from firehose.labels import LABEL_VERSION, parse_label
from indexer.labels import LabelStore

log = logging.getLogger("openmusic.labels")

#: Label values an operator may issue from the moderation queue: the hiding ones, ``!warn``, the
#: content labels the web app blurs or warns about, and ours for a wrong AI disclosure.
ISSUABLE = ("!takedown", "!hide", "!warn", "porn", "sexual", "nudity", "graphic-media", "ai-undisclosed")

_waiters: set[asyncio.Event] = set()


def atproto_now() -> str:
    """Now as an atproto datetime, UTC with milliseconds (``YYYY-MM-DDTHH:MM:SS.mmmZ``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sign_label(label: dict[str, Any], key: coincurve.PrivateKey) -> dict[str, Any]:
    """``label`` (a ``com.atproto.label.defs#label`` object) with ``ver`` (1 when absent) and
    ``sig``: the 64-byte low-S signature of sha-256(DAG-CBOR of the label without ``sig``) under the
    k256 ``key`` (Labels spec, "Signing"). Raises ``ValueError`` on values DAG-CBOR cannot encode."""
    unsigned = {k: v for k, v in label.items() if k != "sig"}
    unsigned.setdefault("ver", LABEL_VERSION)
    message = cbrrr.encode_dag_cbor(unsigned)
    sig = key.sign_recoverable(message, hasher=lambda m: hashlib.sha256(m).digest())[:64]
    return {**unsigned, "sig": sig}


def load_key(key_hex: str, key_file: str) -> coincurve.PrivateKey:
    """Our labeler's k256 key: ``key_hex`` (``Settings.label_key``, 64 hex digits), else the one kept
    in ``key_file`` (``Settings.label_key_file``), made there (mode 0600) when the file is missing.
    Raises ``ValueError`` when the hex or the file's content is not a valid key."""
    if key_hex.strip():
        return coincurve.PrivateKey(bytes.fromhex(key_hex.strip()))
    path = Path(key_file)
    text, created = read_or_create(path, lambda: coincurve.PrivateKey().secret.hex())
    if created:
        log.warning("OPENMUSIC_LABEL_KEY is not set: our labeler signs with a key made now and kept in %s", path)
    return coincurve.PrivateKey(bytes.fromhex(text.strip()))


def did_key_of(key: coincurve.PrivateKey) -> str:
    """The public half of ``key`` as a ``did:key`` (what ``firehose.labels.verify_label`` takes)."""
    return format_did_key(SECP256K1_JWT_ALG, key.public_key.format(compressed=True))


def document_entries(did: str, key: coincurve.PrivateKey, endpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``#atproto_label`` verification method (``Multikey``) and the ``#atproto_labeler`` service
    (``AtprotoLabeler`` at ``endpoint``) of our did:web document ``did`` (atproto DID spec)."""
    multikey = format_multikey(SECP256K1_JWT_ALG, key.public_key.format(compressed=True))
    return ({"id": f"{did}#atproto_label", "type": "Multikey", "controller": did, "publicKeyMultibase": multikey},
            {"id": "#atproto_labeler", "type": "AtprotoLabeler", "serviceEndpoint": endpoint})


def add_to_document(doc: dict[str, Any], did: str, key: coincurve.PrivateKey, endpoint: str) -> dict[str, Any]:
    """``doc`` (a did:web document) with our labeler's key and service added (``document_entries``),
    and the multikey context. Returns a new dict; ``doc`` is not changed."""
    method, service = document_entries(did, key, endpoint)
    context = list(doc.get("@context") or ["https://www.w3.org/ns/did/v1"])
    if "https://w3id.org/security/multikey/v1" not in context:
        context.append("https://w3id.org/security/multikey/v1")
    return {**doc, "@context": context, "id": doc.get("id", did),
            "verificationMethod": [*doc.get("verificationMethod", []), method],
            "service": [*doc.get("service", []), service]}


def label_of_row(row: Any) -> dict[str, Any]:
    """An ``issued_label`` row (seq, src, uri, val, cid, neg, cts, exp, ver, sig) -> the signed label
    object as issued (``sig`` as bytes; ``cid``/``neg``/``exp`` only when set)."""
    _seq, src, uri, val, cid, neg, cts, exp, ver, sig = tuple(row)
    label: dict[str, Any] = {"ver": ver, "src": src, "uri": uri, "val": val, "cts": cts}
    if cid:
        label["cid"] = cid
    if neg:
        label["neg"] = True
    if exp:
        label["exp"] = exp
    label["sig"] = bytes(sig)
    return label


def label_json(label: dict[str, Any]) -> dict[str, Any]:
    """A label object for JSON (``queryLabels``): ``sig`` as ``{"$bytes": base64}`` (atproto data model)."""
    out = dict(label)
    if isinstance(out.get("sig"), bytes):
        out["sig"] = {"$bytes": base64.b64encode(out["sig"]).decode().rstrip("=")}
    return out


_COLUMNS = "seq, src, uri, val, cid, neg, cts, exp, ver, sig"


async def issued_after(db: Any, src: str, cursor: int, limit: int = 500) -> list[tuple[int, dict[str, Any]]]:
    """Our labels issued after ``cursor`` (a ``seq``), oldest first, at most ``limit``: ``[(seq,
    label)]``. ``db``: anything with ``execute`` (a reader pool or connection)."""
    cur = await db.execute(f"SELECT {_COLUMNS} FROM issued_label WHERE src = ? AND seq > ? ORDER BY seq LIMIT ?",
                           (src, cursor, limit))
    return [(row[0], label_of_row(row)) for row in await cur.fetchall()]


async def last_seq(db: Any, src: str) -> int:
    """The ``seq`` of our newest label, 0 when none was issued."""
    cur = await db.execute("SELECT MAX(seq) FROM issued_label WHERE src = ?", (src,))
    return (await cur.fetchone())[0] or 0


async def query(db: Any, src: str, patterns: list[str], cursor: int = 0, limit: int = 50) -> list[tuple[int, dict[str, Any]]]:
    """``com.atproto.label.queryLabels`` over our labels: the current state of each (uri, val) (its
    newest row: a negation says the label was taken back) whose subject matches one of ``patterns``
    (exact, or a prefix ending in ``*``; ``*`` alone: all), with ``seq`` after ``cursor``, oldest first,
    at most ``limit``: ``[(seq, label)]``."""
    conds, args = [], []
    for pattern in patterns:
        if pattern.endswith("*"):
            conds.append("substr(uri, 1, ?) = ?")
            args += [len(pattern) - 1, pattern[:-1]]
        else:
            conds.append("uri = ?")
            args.append(pattern)
    if not conds:
        return []
    cur = await db.execute(
        f"SELECT {_COLUMNS} FROM issued_label i WHERE src = ? AND seq > ? AND ({' OR '.join(conds)}) "
        "AND seq = (SELECT MAX(seq) FROM issued_label j WHERE j.src = i.src AND j.uri = i.uri AND j.val = i.val) "
        "ORDER BY seq LIMIT ?", (src, cursor, *args, limit))
    return [(row[0], label_of_row(row)) for row in await cur.fetchall()]


async def in_force(db: Any, src: str, uri: str | None = None) -> list[dict[str, Any]]:
    """Our labels in force (newest row of each (uri, val) not a negation, not expired), newest
    first, for the subject ``uri`` or all: ``[{seq, uri, val, cts}]``."""
    cond, args = ("AND uri = ?", [uri]) if uri else ("", [])
    cur = await db.execute(
        f"SELECT seq, uri, val, cts FROM issued_label i WHERE src = ? {cond} AND neg = 0 "
        "AND (exp IS NULL OR exp > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) "
        "AND seq = (SELECT MAX(seq) FROM issued_label j WHERE j.src = i.src AND j.uri = i.uri AND j.val = i.val) "
        "ORDER BY seq DESC LIMIT 200", (src, *args))
    return [{"seq": r[0], "uri": r[1], "val": r[2], "cts": r[3]} for r in await cur.fetchall()]


def notify() -> None:
    """Wake every ``wait_for_new`` in this process (a label was issued)."""
    for event in list(_waiters):
        event.set()


async def wait_for_new(timeout_s: float) -> None:
    """Return when a label is issued in this process, or after ``timeout_s`` seconds (labels issued
    by another process are found by the caller's next read)."""
    event = asyncio.Event()
    _waiters.add(event)
    try:
        await asyncio.wait_for(event.wait(), timeout=timeout_s)
    except TimeoutError:
        pass
    finally:
        _waiters.discard(event)


class LabelIssuer:
    """Issues our labels: ``did`` (our service DID, the labels' ``src``), ``key`` (``load_key``),
    over a writer connection of its own (``conn``, from ``core.db.connect``). Call ``open()`` once.
    ``lock`` serializes the writes on ``conn``: hold it to write there too (``issue_locked``)."""

    def __init__(self, conn: aiosqlite.Connection, did: str, key: coincurve.PrivateKey) -> None:
        self.conn = conn
        self.did = did
        self.key = key
        self.store = LabelStore(conn, [did])
        self.lock = asyncio.Lock()

    @property
    def did_key(self) -> str:
        """Our ``#atproto_label`` key as a ``did:key``."""
        return did_key_of(self.key)

    async def open(self) -> None:
        """Mark our DID as a configured labeler (its labels count in ``label_level``) and apply again
        the current state of every label we issued (idempotent: the store keeps the latest ``cts``),
        so that labels stored before a crash between the two writes of ``issue`` apply too."""
        await self.conn.execute("INSERT INTO labeler (did, configured, updated_at) VALUES (?, 1, ?) "
                                "ON CONFLICT (did) DO UPDATE SET configured = 1", (self.did, now_iso()))
        cur = await self.conn.execute(
            f"SELECT {_COLUMNS} FROM issued_label i WHERE src = ? AND seq = (SELECT MAX(seq) FROM issued_label j "
            "WHERE j.src = i.src AND j.uri = i.uri AND j.val = i.val) ORDER BY seq", (self.did,))
        labels = [parse_label(label_of_row(row)) for row in await cur.fetchall()]
        if labels:
            await self.store.apply(self.did, None, labels)

    async def issue(self, uri: str, val: str, neg: bool = False, cid: str | None = None,
                    exp: str | None = None) -> tuple[int, dict[str, Any]]:
        """``issue_locked`` under ``lock``."""
        async with self.lock:
            return await self.issue_locked(uri, val, neg, cid, exp)

    async def issue_locked(self, uri: str, val: str, neg: bool = False, cid: str | None = None,
                           exp: str | None = None) -> tuple[int, dict[str, Any]]:
        """With ``lock`` held: sign and store one label on ``uri`` (a DID or an AT-URI) with value
        ``val`` (a negation when ``neg``; ``cid``: one version of the record; ``exp``: an atproto
        datetime), apply it to our index, and wake the ``subscribeLabels`` streams. Returns (seq, the signed label). Raises
        ``firehose.labels.LabelError`` for a label that cannot be valid (too long a value, a subject
        that is neither a DID nor an AT-URI) and sqlite3 errors."""
        label: dict[str, Any] = {"ver": LABEL_VERSION, "src": self.did, "uri": uri, "val": val, "cts": atproto_now()}
        if cid:
            label["cid"] = cid
        if neg:
            label["neg"] = True
        if exp:
            label["exp"] = exp
        signed = sign_label(label, self.key)
        parsed = parse_label(signed)  # raises LabelError before anything is stored
        cur = await self.conn.execute(
            "INSERT INTO issued_label (src, uri, val, cid, neg, cts, exp, ver, sig) VALUES (?,?,?,?,?,?,?,?,?) "
            "RETURNING seq",
            (self.did, uri, val, cid, 1 if neg else 0, signed["cts"], exp, LABEL_VERSION, signed["sig"]))
        seq = (await cur.fetchall())[0][0]
        await self.store.apply(self.did, None, [parsed])
        notify()
        return int(seq or 0), signed
