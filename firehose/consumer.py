"""The ``com.atproto.sync.subscribeRepos`` consumer (atproto event-stream and sync specs).

It connects with ``?cursor=<last durable seq>``, decodes frames, batches events and hands each
batch with its last seq to a sink (``indexer.core.Indexer``) that applies both atomically.
Events are applied serially in seq order, so the durable cursor is always the low-water mark of
fully applied events. On any error it flushes what it has, waits (exponential backoff with
jitter, 0.5 s doubling to 60 s, reset after a healthy minute) and resumes from the cursor.

Lag (``ConsumerStatus.lag_s``) is derived when asked, not stamped on each event: while events wait
to be applied it is the age of the oldest of them (by the host's clock); once everything the host
sent is applied it is 0 as long as the host is heard from (a frame, or a pong to the heartbeat
ping every ``heartbeat_s``), so a quiet stream is current, not behind.

A ``FutureCursor`` error frame (sync spec: our cursor is ahead of the host's sequence, its history
was reset) makes the sink mark every followed repo desynchronized and drop its cursor; the
consumer then resumes from the host's current head, and counts the reset (``host_resets``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from core.db import TRANSIENT_ERRORS, parse_datetime
from core.errors import RetryLater  # noqa: F401 (re-exported: sinks raise firehose.consumer.RetryLater)
from firehose.events import ErrorFrame, Event, FrameError, InfoEvent, decode_frame

log = logging.getLogger("openmusic.firehose")

MAX_FRAME_BYTES = 5 * 1024 * 1024  # event-stream spec: frames up to 5 MB
#: Seconds between heartbeat pings, and how long a pong may take before the connection is dropped.
HEARTBEAT_S = 15.0
HEARTBEAT_TIMEOUT_S = 20.0


def host_time(evt: object) -> float | None:
    """The host's ``time`` of an event as epoch seconds, or None when it has none or it is malformed."""
    sent = parse_datetime(getattr(evt, "time", None))
    return None if sent is None else sent.timestamp()


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

    async def host_reset(self) -> int:
        """Optional. The host's history was reset: mark every followed repo desynchronized and drop
        the stored cursor, atomically. Returns how many repos were marked."""


@dataclass
class ConsumerStatus:
    """Live figures for health checks and metrics. ``lag_s`` is derived (see ``lag``)."""

    connected: bool = False
    connects: int = 0
    frames: int = 0
    bad_frames: int = 0
    last_seq: int | None = None
    last_event_at: float | None = None
    last_error: str | None = None
    info: list[str] = field(default_factory=list)
    #: seq of the last event applied (durable with the cursor)
    applied_seq: int | None = None
    #: host's time (epoch s) of the newest applied event that had one
    applied_event_time: float | None = None
    #: seconds between the last received event's ``time`` (set by the host) and our receiving it
    receive_lag_s: float | None = None
    #: when (epoch s) the host was last heard from: a frame, a pong, or the connection's opening
    last_heard_at: float | None = None
    #: frames received in this connection and not yet applied or skipped
    backlog: int = 0
    #: host's times (epoch s, None when unknown) of the events decoded and not yet applied, oldest first
    unapplied_times: collections.deque[float | None] = field(default_factory=collections.deque, repr=False)
    #: host history resets seen (``FutureCursor``), and when the last one was (epoch s)
    host_resets: int = 0
    last_host_reset_at: float | None = None
    #: silence (s) after which a connected host no longer counts as heard: ping interval + pong timeout
    heard_window_s: float = HEARTBEAT_S + HEARTBEAT_TIMEOUT_S

    def lag(self, now: float | None = None) -> float | None:
        """Seconds the index is behind the host, derived now.

        Connected and nothing waiting (``backlog`` 0): 0 while the host was heard from within
        ``heard_window_s`` (a quiet stream on a live connection is current), else the silence.
        Events waiting: the age, by the host's clock, of the oldest one decoded and not yet applied
        (frames not yet decoded: the receive lag of the last event decoded). Disconnected: the time
        since the host was last heard, or None when it never was.
        """
        now = time.time() if now is None else now
        heard = None if self.last_heard_at is None else max(0.0, now - self.last_heard_at)
        if not self.connected:
            return heard
        if self.backlog > 0:
            oldest = next((t for t in self.unapplied_times if t is not None), None)
            if oldest is not None:
                return max(0.0, now - oldest)
            return self.receive_lag_s or 0.0
        if heard is None or heard <= self.heard_window_s:
            return 0.0
        return heard

    @property
    def lag_s(self) -> float | None:
        """``lag()`` now."""
        return self.lag()


class Backoff:
    """Jittered exponential backoff between the sessions of a stream consumer (the firehose's, a
    labeler's): 0.5 s doubling up to ``max_s``, each delay drawn in [0.5, 1.5) of it, and back to
    0.5 s after a session that lasted over a minute."""

    def __init__(self, max_s: float) -> None:
        self.max_s = max_s
        self.base = 0.5

    def next_delay(self, lasted_s: float) -> float:
        """Seconds to wait after a session that lasted ``lasted_s``."""
        if lasted_s > 60:
            self.base = 0.5
        delay = self.base * (0.5 + random.random())
        self.base = min(self.base * 2, self.max_s)
        return delay

    @staticmethod
    async def wait(stop: asyncio.Event, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if ``stop`` is set meanwhile."""
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            pass


class FirehoseConsumer:
    """Reads a relay's or PDS's firehose into ``sink``.

    ``url``: full subscribeRepos WebSocket URL (``Settings.subscribe_url``). ``wanted(collection)``
    picks the ops to decode; ``tracked(did)`` the repos whose every commit is decoded.
    ``start_cursor`` is used only while no cursor is stored (None: live head). Events that have
    arrived are applied together, up to ``batch_size`` a transaction: under load batches fill,
    when the stream is quiet each event is applied as soon as it arrives. The host is pinged every
    ``heartbeat_s``; without a pong within ``heartbeat_timeout_s`` the connection is dropped.
    """

    def __init__(self, url: str, sink: EventSink, wanted: Callable[[str], bool], batch_size: int = 500,
                 max_backoff_s: float = 60.0, start_cursor: int | None = None,
                 tracked: Callable[[str], bool] | None = None, heartbeat_s: float = HEARTBEAT_S,
                 heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S) -> None:
        self.url = url
        self.sink = sink
        self.wanted = wanted
        self.batch_size = batch_size
        self.max_backoff_s = max_backoff_s
        self.start_cursor = start_cursor
        self.tracked = tracked
        self.heartbeat_s = heartbeat_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.status = ConsumerStatus(heard_window_s=heartbeat_s + heartbeat_timeout_s)
        self._stop = asyncio.Event()
        #: after a host reset: connect without a cursor until an event is applied (and so stored)
        self._at_head = False
        #: batches handed to the sink and not yet applied (at most two: one verifying, one writing)
        self._inflight: collections.deque[asyncio.Task[None]] = collections.deque()

    def stop(self) -> None:
        """Ask ``run`` to flush and return."""
        self._stop.set()

    async def run(self) -> None:
        """Consume until ``stop()``. Reconnects forever on network errors and transient database
        errors (``core.db.TRANSIENT_ERRORS``: resuming from the durable cursor); other errors propagate."""
        backoff = Backoff(self.max_backoff_s)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await self._session()
            except (TimeoutError, OSError, ConnectionClosed, InvalidHandshake, InvalidURI,
                    *TRANSIENT_ERRORS, RetryLater) as exc:  # e.g. "database is locked": resume from the cursor
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("firehose connection lost: %s", self.status.last_error)
            finally:
                self.status.connected = False
            if self._stop.is_set():
                break
            delay = backoff.next_delay(time.monotonic() - started)
            log.info("reconnecting to %s in %.1fs", self.url, delay)
            await backoff.wait(self._stop, delay)

    async def _session(self) -> None:
        cursor = None if self._at_head else await self.sink.load_cursor()
        if cursor is None and not self._at_head:
            cursor = self.start_cursor
        url = self.url if cursor is None else f"{self.url}?cursor={cursor}"
        log.info("connecting to %s", url)
        # Keepalive is ours (``_heartbeat``): it also tells ``lag`` that a quiet host is alive.
        async with websockets.connect(url, max_size=MAX_FRAME_BYTES, open_timeout=15, ping_interval=None,
                                      close_timeout=2) as ws:
            self.status.connected = True
            self.status.connects += 1
            self.status.last_heard_at = time.time()
            self.status.backlog = 0
            self.status.unapplied_times.clear()
            # A reader task fills a bounded queue (backpressure); this loop drains whatever has
            # arrived into one batch and hands it to the sink when the batch is full or the queue
            # runs dry. One batch is applied (verified, then written) while the next is decoded;
            # batches are still applied one at a time, in order.
            queue: asyncio.Queue[bytes | str | None] = asyncio.Queue(maxsize=self.batch_size * 4)
            reader = asyncio.create_task(self._read(ws, queue))
            heartbeat = asyncio.create_task(self._heartbeat(ws))
            stopper = asyncio.ensure_future(self._stop.wait())
            self._inflight.clear()
            batch: list[Event] = []
            last_seq = cursor
            future_cursor: ErrorFrame | None = None
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
                        self.status.backlog -= 1
                        continue
                    if isinstance(evt, ErrorFrame):
                        self.status.backlog -= 1
                        if evt.error == "FutureCursor" and cursor is not None:
                            future_cursor = evt
                        break
                    if isinstance(evt, InfoEvent):
                        batch.append(evt)  # no seq: the sink learns of the gap (OutdatedCursor)
                        self.status.unapplied_times.append(None)
                        continue
                    if last_seq is not None and evt.seq <= last_seq:
                        self.status.backlog -= 1
                        continue  # replayed (cursor is inclusive on some hosts) or out of order
                    last_seq = evt.seq
                    batch.append(evt)
                    self.status.unapplied_times.append(host_time(evt))
                    if len(batch) >= self.batch_size:
                        await self._submit(batch, last_seq)
                        batch = []
            except BaseException:
                stopper.cancel()
                reader.cancel()
                with contextlib.suppress(Exception):
                    await self._drain()  # unapplied batches are dropped: they are replayed from the cursor
                raise
            finally:
                heartbeat.cancel()
            stopper.cancel()
            reader.cancel()
            await self._drain()
            if batch:
                await self.sink.apply(batch, last_seq)
                self._applied(batch, last_seq)
            if future_cursor is not None:
                await self._host_reset(cursor, future_cursor)
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
            else:
                await prep
                await self.sink.apply(batch, last_seq, prepared=True)
            self._applied(batch, last_seq)

        self._inflight.append(asyncio.create_task(in_order()))

    def _applied(self, batch: list[Event], last_seq: int | None) -> None:
        """Account for ``batch`` applied up to ``last_seq`` (backlog, lag, the cursor now stored)."""
        st = self.status
        st.backlog = max(0, st.backlog - len(batch))
        for _ in range(min(len(batch), len(st.unapplied_times))):
            st.unapplied_times.popleft()
        if last_seq is not None:
            st.applied_seq = last_seq
            self._at_head = False
        for evt in reversed(batch):
            sent = host_time(evt)
            if sent is not None:
                st.applied_event_time = sent
                break

    async def _host_reset(self, cursor: int | None, frame: ErrorFrame) -> None:
        """The host answered our ``cursor`` with ``FutureCursor``: its history was reset. Tell the
        sink (every followed repo desynchronized, cursor dropped) and resume from its current head."""
        log.error("firehose host %s reset its history: our cursor %s is ahead of its sequence (%s); resuming "
                  "from its current head, every followed repo will be resynced", self.url, cursor, frame.message)
        reset = getattr(self.sink, "host_reset", None)
        if reset is not None:
            await reset()  # raises (e.g. database locked): the next connection meets FutureCursor again
        self.start_cursor = None  # the configured start applies to a fresh index, which this is not
        self._at_head = True
        self.status.host_resets += 1
        self.status.last_host_reset_at = time.time()

    async def _heartbeat(self, ws: websockets.ClientConnection) -> None:
        """Ping the host every ``heartbeat_s``; a pong counts as hearing from it. Without a pong in
        ``heartbeat_timeout_s`` the connection is closed (the session ends and reconnects)."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                pong = await ws.ping()
                await asyncio.wait_for(pong, self.heartbeat_timeout_s)
            except TimeoutError:
                self.status.last_error = f"no pong from the host within {self.heartbeat_timeout_s:g}s"
                log.warning("firehose %s: %s; reconnecting", self.url, self.status.last_error)
                await ws.close(1011, "keepalive ping timeout")
                return
            except ConnectionClosed:
                return
            self.status.last_heard_at = time.time()

    async def _drain(self) -> None:
        """Wait for the batches in flight; raises the first error."""
        while self._inflight:
            await self._inflight.popleft()

    async def _read(self, ws: websockets.ClientConnection, queue: asyncio.Queue[bytes | str | None]) -> None:
        try:
            async for raw in ws:
                self.status.frames += 1
                self.status.backlog += 1
                self.status.last_heard_at = time.time()
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
            sent = host_time(evt)
            if sent is not None:
                self.status.receive_lag_s = max(0.0, now - sent)
        return evt
