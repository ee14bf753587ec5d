"""A small atproto labeler for tests and the local network: it signs labels exactly as the atproto
Labels spec says and serves them as a labeler does.

Identity: ``did:web:localhost%3A<port>``, whose document (``/.well-known/did.json``) names the
``#atproto_label`` key (a k256 ``Multikey``) and the ``#atproto_labeler`` service (type
``AtprotoLabeler``) at ``http://localhost:<port>``. Endpoints: ``com.atproto.label.subscribeLabels``
(a WebSocket: frames as the event-stream spec says, a DAG-CBOR header ``{op: 1, t: "#labels"}``
then ``{seq, labels}``; ``?cursor=N`` replays what came after N, then goes live; a cursor past
the last seq gets a ``FutureCursor`` error frame) and
``com.atproto.label.queryLabels`` (``uriPatterns``, exact or ending in ``*``).

Signing (Labels spec, "Signing"): the label without ``sig``, with ``ver: 1``, is encoded as
DAG-CBOR; its SHA-256 is signed with the k256 key (RFC 6979, low-S, 64-byte r||s) and the signature
put in ``sig`` (bytes), by the production signer ``indexer.labeler_issue.sign_label``. ``emit`` can
also break a signature or forge another labeler's ``src``, and
``emit_frame`` send any bytes, so a consumer's handling of bad input can be tested.

Use: ``async with Labeler() as lab: lab.did; await lab.emit(uri, "!takedown")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import cbrrr
import coincurve
import uvicorn
from atproto_crypto.consts import SECP256K1_JWT_ALG
from atproto_crypto.did import format_did_key, format_multikey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from indexer.labeler_issue import sign_label

__all__ = ["Labeler", "atproto_time", "frame", "sign_label"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def atproto_time(when: datetime | None = None) -> str:
    """``when`` (default now) as an atproto datetime, UTC with milliseconds."""
    when = when or datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def frame(header: dict[str, Any], body: dict[str, Any]) -> bytes:
    """One event-stream frame: DAG-CBOR ``header`` then ``body``."""
    return cbrrr.encode_dag_cbor(header) + cbrrr.encode_dag_cbor(body)


class Labeler:
    """A labeler on loopback. ``port`` (default: a free one); ``key_hex``: its k256 key (default: new).
    Attributes once started: ``did``, ``endpoint``, ``did_key``. ``frames`` is every frame sent,
    as (seq or None, bytes)."""

    def __init__(self, port: int | None = None, key_hex: str | None = None) -> None:
        self.port = port or _free_port()
        self.key = coincurve.PrivateKey(bytes.fromhex(key_hex)) if key_hex else coincurve.PrivateKey()
        self.did = f"did:web:localhost%3A{self.port}"
        self.endpoint = f"http://localhost:{self.port}"
        self.frames: list[tuple[int | None, bytes]] = []
        self.labels: list[dict[str, Any]] = []
        self._seq = 0
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def did_key(self) -> str:
        """The ``#atproto_label`` key as a ``did:key``."""
        return format_did_key(SECP256K1_JWT_ALG, self.key.public_key.format(compressed=True))

    def rotate_key(self) -> None:
        """Use a new key from now on (the DID document names it at once)."""
        self.key = coincurve.PrivateKey()

    def did_document(self) -> dict[str, Any]:
        """The did:web document: ``#atproto_label`` key and ``#atproto_labeler`` service."""
        multikey = format_multikey(SECP256K1_JWT_ALG, self.key.public_key.format(compressed=True))
        return {"@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
                "id": self.did,
                "verificationMethod": [{"id": f"{self.did}#atproto_label", "type": "Multikey",
                                        "controller": self.did, "publicKeyMultibase": multikey}],
                "service": [{"id": "#atproto_labeler", "type": "AtprotoLabeler", "serviceEndpoint": self.endpoint}]}

    def make_label(self, uri: str, val: str, neg: bool = False, exp: datetime | None = None, cid: str | None = None,
                   src: str | None = None, cts: datetime | None = None, bad_signature: bool = False) -> dict[str, Any]:
        """A signed ``com.atproto.label.defs#label``. ``src``: another labeler's DID (a forgery, still
        signed with our key); ``bad_signature``: a signature that does not match."""
        label: dict[str, Any] = {"ver": 1, "src": src or self.did, "uri": uri, "val": val, "cts": atproto_time(cts)}
        if cid:
            label["cid"] = cid
        if neg:
            label["neg"] = True
        if exp:
            label["exp"] = atproto_time(exp)
        signed = sign_label(label, self.key)
        if bad_signature:
            sig = bytearray(signed["sig"])
            sig[10] ^= 0xFF
            signed["sig"] = bytes(sig)
        return signed

    async def emit(self, uri: str, val: str, **options: Any) -> dict[str, Any]:
        """Sign and publish one label (``make_label`` options; ``exp_in_s``: expire that many
        seconds from now) in a ``#labels`` frame of its own; returns the label."""
        if "exp_in_s" in options:
            options["exp"] = datetime.now(UTC) + timedelta(seconds=options.pop("exp_in_s"))
        label = self.make_label(uri, val, **options)
        await self.emit_labels([label])
        return label

    async def emit_labels(self, labels: list[dict[str, Any]]) -> int:
        """Publish ``labels`` (already signed) in one ``#labels`` frame; returns its seq."""
        self._seq += 1
        self.labels.extend(labels)
        await self.emit_frame(frame({"op": 1, "t": "#labels"}, {"seq": self._seq, "labels": labels}), self._seq)
        return self._seq

    async def emit_frame(self, raw: bytes, seq: int | None = None) -> None:
        """Send ``raw`` as it is to every subscriber (and to later ones replaying from before ``seq``)."""
        self.frames.append((seq, raw))
        for queue in list(self._subscribers):
            await queue.put(raw)

    def app(self) -> Starlette:
        """The labeler's HTTP app."""
        async def did_json(request: Request) -> Response:
            return JSONResponse(self.did_document())

        async def query_labels(request: Request) -> Response:
            patterns = request.query_params.getlist("uriPatterns")

            def match(uri: str) -> bool:
                return any(uri.startswith(p[:-1]) if p.endswith("*") else uri == p for p in patterns)
            found = [{k: v for k, v in lab.items() if k != "sig"} for lab in self.labels if match(lab["uri"])]
            return JSONResponse({"labels": found})

        async def subscribe(ws: WebSocket) -> None:
            await ws.accept()
            cursor_raw = ws.query_params.get("cursor")
            cursor = int(cursor_raw) if cursor_raw and cursor_raw.isdigit() else None
            if cursor is not None and cursor > self._seq:  # event-stream spec: a cursor from the future
                await ws.send_bytes(frame({"op": -1}, {"error": "FutureCursor", "message": "cursor is ahead"}))
                await ws.close()
                return
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()
            self._subscribers.add(queue)
            # the client closing ends the subscription at once (not at the next send)
            closed = asyncio.ensure_future(ws.receive())
            try:
                if cursor is not None:
                    for seq, raw in list(self.frames):
                        if seq is not None and seq > cursor:
                            await ws.send_bytes(raw)
                while True:
                    getter = asyncio.ensure_future(queue.get())
                    await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                    if closed.done():
                        getter.cancel()
                        break
                    raw = getter.result()
                    if raw is None:  # stopping
                        await ws.close()
                        break
                    await ws.send_bytes(raw)
            except (WebSocketDisconnect, RuntimeError):
                pass
            finally:
                closed.cancel()
                self._subscribers.discard(queue)

        return Starlette(routes=[
            Route("/.well-known/did.json", did_json),
            Route("/xrpc/com.atproto.label.queryLabels", query_labels),
            WebSocketRoute("/xrpc/com.atproto.label.subscribeLabels", subscribe),
        ])

    async def start(self) -> None:
        """Serve on ``127.0.0.1:port`` (reached as ``localhost``); returns once it listens."""
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Close every subscription and stop serving."""
        for queue in list(self._subscribers):
            queue.put_nowait(None)
        for _ in range(100):
            if not self._subscribers:
                break
            await asyncio.sleep(0.02)
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=5)

    async def __aenter__(self) -> Labeler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
