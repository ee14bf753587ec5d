"""The ``com.atproto.sync.subscribeRepos`` consumer (atproto event-stream and sync specs).

It connects with ``?cursor=<last durable seq>``, decodes frames, batches events and hands each
batch with its last seq to a sink (``indexer.core.Indexer``) that applies both atomically.
Events are applied serially in seq order, so the durable cursor is always the low-water mark of
fully applied events. On any error it flushes what it has, waits (exponential backoff with
jitter, 0.5 s doubling to 60 s, reset after a healthy minute) and resumes from the cursor.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from firehose.events import ErrorFrame, Event, FrameError, InfoEvent, decode_frame

log = logging.getLogger("openmusic.firehose")

MAX_FRAME_BYTES = 5 * 1024 * 1024  # event-stream spec: frames up to 5 MB


class RetryLater(Exception):
    """Raised by a sink when a batch cannot be applied now but may be later (e.g. a DID document
    could not be fetched): the consumer reconnects with backoff and replays from its cursor."""


class EventSink(Protocol):
    """Where decoded events go (the indexer)."""

    async def load_cursor(self) -> int | None:
        """The seq to resume after, or None to start at the live head."""

    async def apply(self, events: list[Event], cursor: int | None, prepared: bool = False) -> None:
        """Apply ``events`` and persist ``cursor`` in one transaction; ``prepared``: ``prepare``
        already ran on ``events``."""

    async def prepare(self, events: list[Event]) -> None:
        """Work on ``events`` that needs no order (commit verification); may run while the previous
        batch is being applied. Raises like ``apply``."""


@dataclass
class ConsumerStatus:
    """Live figures for health checks and metrics."""

    connected: bool = False
    connects: int = 0
    frames: int = 0
    bad_frames: int = 0
    last_seq: int | None = None
    last_event_at: float | None = None
    last_error: str | None = None
    #: seconds between the last event's ``time`` (set by the host) and our receiving it
    lag_s: float | None = None
    info: list[str] = field(default_factory=list)


class FirehoseConsumer:
    """Reads a relay's or PDS's firehose into ``sink``.

    ``url``: full subscribeRepos WebSocket URL (``Settings.subscribe_url``). ``wanted(collection)``
    picks the ops to decode; ``tracked(did)`` the repos whose every commit is decoded.
    ``start_cursor`` is used only while no cursor is stored (None: live head). Events that have
    arrived are applied together, up to ``batch_size`` a transaction: under load batches fill,
    when the stream is quiet each event is applied as soon as it arrives.
    """

    def __init__(self, url: str, sink: EventSink, wanted: Callable[[str], bool], batch_size: int = 500,
                 max_backoff_s: float = 60.0, start_cursor: int | None = None,
                 tracked: Callable[[str], bool] | None = None) -> None:
        self.url = url
        self.sink = sink
        self.wanted = wanted
        self.batch_size = batch_size
        self.max_backoff_s = max_backoff_s
        self.start_cursor = start_cursor
        self.tracked = tracked
        self.status = ConsumerStatus()
        self._stop = asyncio.Event()
        #: batches handed to the sink and not yet applied (at most two: one verifying, one writing)
        self._inflight: collections.deque[asyncio.Task[None]] = collections.deque()

    def stop(self) -> None:
        """Ask ``run`` to flush and return."""
        self._stop.set()

    async def run(self) -> None:
        """Consume until ``stop()``. Reconnects forever on network errors and transient SQLite errors
        (resuming from the durable cursor); other errors propagate."""
        backoff = 0.5
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await self._session()
            except (TimeoutError, OSError, ConnectionClosed, InvalidHandshake, InvalidURI,
                    sqlite3.OperationalError, RetryLater) as exc:  # e.g. "database is locked": resume from the cursor
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("firehose connection lost: %s", self.status.last_error)
            finally:
                self.status.connected = False
            if self._stop.is_set():
                break
            if time.monotonic() - started > 60:
                backoff = 0.5
            delay = backoff * (0.5 + random.random())
            log.info("reconnecting to %s in %.1fs", self.url, delay)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, self.max_backoff_s)

    async def _session(self) -> None:
        cursor = await self.sink.load_cursor()
        if cursor is None:
            cursor = self.start_cursor
        url = self.url if cursor is None else f"{self.url}?cursor={cursor}"
        log.info("connecting to %s", url)
        async with websockets.connect(url, max_size=MAX_FRAME_BYTES, open_timeout=15, ping_interval=20,
                                      ping_timeout=30, close_timeout=2) as ws:
            self.status.connected = True
            self.status.connects += 1
            # A reader task fills a bounded queue (backpressure); this loop drains whatever has
            # arrived into one batch and hands it to the sink when the batch is full or the queue
            # runs dry. One batch is applied (verified, then written) while the next is decoded;
            # batches are still applied one at a time, in order.
            queue: asyncio.Queue[bytes | str | None] = asyncio.Queue(maxsize=self.batch_size * 4)
            reader = asyncio.create_task(self._read(ws, queue))
            stopper = asyncio.ensure_future(self._stop.wait())
            self._inflight.clear()
            batch: list[Event] = []
            last_seq = cursor
            try:
                while True:
                    if queue.empty():
                        if batch:
                            await self._submit(batch, last_seq)
                            batch = []
                            continue
                        getter = asyncio.ensure_future(queue.get())
                        await asyncio.wait({getter, stopper, *self._inflight}, return_when=asyncio.FIRST_COMPLETED)
                        while self._inflight and self._inflight[0].done():
                            self._inflight.popleft().result()  # raises the sink's error, if any
                        if not getter.done():
                            getter.cancel()
                            if stopper.done():
                                break
                            continue
                        raw = getter.result()
                    else:
                        raw = queue.get_nowait()
                    if raw is None:
                        break  # the connection ended; the reader's error (if any) is raised below
                    evt = self._decode(raw)
                    if evt is None:
                        continue
                    if isinstance(evt, ErrorFrame):
                        break
                    if isinstance(evt, InfoEvent):
                        batch.append(evt)  # no seq: the sink learns of the gap (OutdatedCursor)
                        continue
                    if last_seq is not None and evt.seq <= last_seq:
                        continue  # replayed (cursor is inclusive on some hosts) or out of order
                    last_seq = evt.seq
                    batch.append(evt)
                    if len(batch) >= self.batch_size:
                        await self._submit(batch, last_seq)
                        batch = []
            except BaseException:
                stopper.cancel()
                reader.cancel()
                with contextlib.suppress(Exception):
                    await self._drain()  # unapplied batches are dropped: they are replayed from the cursor
                raise
            stopper.cancel()
            reader.cancel()
            await self._drain()
            if batch:
                await self.sink.apply(batch, last_seq)
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if reader.done() and not reader.cancelled() and reader.exception():
                raise reader.exception()  # type: ignore[misc]

    async def _submit(self, batch: list[Event], last_seq: int | None) -> None:
        """Hand ``batch`` to the sink: its ``prepare`` starts now, its ``apply`` after the previous
        batch's. Waits while two batches are in flight; raises an earlier batch's error."""
        while len(self._inflight) >= 2:
            await self._inflight.popleft()
        prepare = getattr(self.sink, "prepare", None)
        prep = asyncio.create_task(prepare(batch)) if prepare else None
        previous = self._inflight[-1] if self._inflight else None

        async def in_order() -> None:
            try:
                if previous is not None:
                    await asyncio.shield(previous)  # a failed batch stops every later one: no gaps
            except BaseException:
                if prep is not None:
                    prep.cancel()
                raise
            if prep is None:
                await self.sink.apply(batch, last_seq)
                return
            await prep
            await self.sink.apply(batch, last_seq, prepared=True)

        self._inflight.append(asyncio.create_task(in_order()))

    async def _drain(self) -> None:
        """Wait for the batches in flight; raises the first error."""
        while self._inflight:
            await self._inflight.popleft()

    async def _read(self, ws: websockets.ClientConnection, queue: asyncio.Queue[bytes | str | None]) -> None:
        try:
            async for raw in ws:
                self.status.frames += 1
                await queue.put(raw)
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    def _decode(self, raw: bytes | str) -> Event | None:
        """One frame -> event (updating the status), or None to skip it."""
        if not isinstance(raw, bytes):
            self.status.bad_frames += 1
            return None
        try:
            evt = decode_frame(raw, self.wanted, self.tracked)
        except FrameError as exc:
            self.status.bad_frames += 1
            log.warning("skipping undecodable frame: %s", exc)
            return None
        if isinstance(evt, ErrorFrame):
            self.status.last_error = f"{evt.error}: {evt.message}"
            log.error("firehose error frame %s: %s", evt.error, evt.message)
        elif isinstance(evt, InfoEvent):
            self.status.info = [*self.status.info[-9:], f"{evt.name}: {evt.message}"]
            log.warning("firehose #info %s: %s", evt.name, evt.message)
        elif evt is not None:
            now = time.time()
            self.status.last_seq = evt.seq
            self.status.last_event_at = now
            if evt.time:
                with contextlib.suppress(ValueError):
                    sent = datetime.fromisoformat(evt.time.replace("Z", "+00:00")).timestamp()
                    self.status.lag_s = max(0.0, now - sent)
        return evt
