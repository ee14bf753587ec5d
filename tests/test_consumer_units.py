"""The consumer's health figures and its handling of a host whose history was reset (issue 10,
items 15 and 16), over loopback WebSocket servers: lag is derived from what the host sent (a quiet
stream on a live connection is current), a silent host is noticed, and a ``FutureCursor`` error
frame makes the consumer resume from the host's head with every followed repo marked for resync."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import dag_cbor
import httpx
import websockets

from appview.app import MAX_LAG_S, create_app
from core import db
from firehose.consumer import ConsumerStatus, FirehoseConsumer
from indexer.core import DESYNCHRONIZED, Indexer, wanted
from tests.conftest import eventually
from tests.records import DID, LISTENER

TWELVE_MINUTES = 12 * 60


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def identity_frame(seq: int, sent: float | None = None) -> bytes:
    body = {"seq": seq, "did": DID, "time": stamp(time.time() if sent is None else sent)}
    return dag_cbor.encode({"op": 1, "t": "#identity"}) + dag_cbor.encode(body)


def error_frame(error: str, message: str) -> bytes:
    return dag_cbor.encode({"op": -1}) + dag_cbor.encode({"error": error, "message": message})


class Sink:
    """Applies nothing, remembers the cursor (like the indexer, without a database)."""

    def __init__(self) -> None:
        self.cursor: int | None = None
        self.seqs: list[int] = []

    async def load_cursor(self) -> int | None:
        return self.cursor

    async def apply(self, events: list, cursor: int | None, prepared: bool = False) -> None:
        self.seqs += [e.seq for e in events if hasattr(e, "seq")]
        self.cursor = cursor


def health_client(consumer: FirehoseConsumer, indexer=None) -> httpx.AsyncClient:
    """An HTTP client on the real app's ``/health`` over a runtime holding just ``consumer``."""
    rt = SimpleNamespace(consumer=consumer, resyncer=None, indexer=indexer, verifier=None,
                         settings=SimpleNamespace(subscribe_url=consumer.url))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt)), base_url="http://appview")


def test_lag_is_derived_not_stamped():
    now = 1_000_000.0
    st = ConsumerStatus(connected=True, heard_window_s=35, last_heard_at=now - 5,
                        applied_event_time=now - TWELVE_MINUTES, receive_lag_s=3.0)
    assert st.lag(now) == 0.0  # caught up, nothing waiting, the host heard 5 s ago: current
    st.last_heard_at = now - 100
    assert st.lag(now) == 100.0  # connected but silent past ping + pong timeout: not vouched for
    st.last_heard_at = now - 1
    st.backlog, st.unapplied_times = 3, __import__("collections").deque([None, now - 300, now - 2])
    assert st.lag(now) == 300.0  # events waiting: the oldest one's age by the host's clock
    st.unapplied_times.clear()
    assert st.lag(now) == 3.0  # frames not decoded yet: the last event's lag at receipt
    st.connected = False
    assert st.lag(now) == 1.0  # disconnected: time since the host was last heard
    assert ConsumerStatus().lag(now) is None
    assert st.lag_s is not None and st.lag_s >= st.lag(now)  # the property reads the clock now


async def test_quiet_stream_after_catch_up_is_current_and_a_silent_host_is_dropped():
    """Events from 12 minutes ago are applied; then the host says nothing but answers pings: the
    consumer is current (lag 0, /health 200). Once it stops answering, lag grows and the consumer
    drops the connection and reconnects."""
    old = time.time() - TWELVE_MINUTES
    connections: list[websockets.ServerConnection] = []

    async def host(ws):
        connections.append(ws)
        if len(connections) == 1:
            for seq in (1, 2, 3):
                await ws.send(identity_frame(seq, old))
        await ws.wait_closed()

    async with websockets.serve(host, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        sink = Sink()
        consumer = FirehoseConsumer(f"ws://127.0.0.1:{port}", sink, wanted, max_backoff_s=0.1,
                                    heartbeat_s=0.2, heartbeat_timeout_s=1.0)
        task = asyncio.create_task(consumer.run())
        try:
            await eventually(lambda: asyncio.sleep(0, sink.cursor == 3))
            st = consumer.status
            assert st.receive_lag_s > TWELVE_MINUTES - 5  # what the old, stamped lag_s said forever
            await asyncio.sleep(2.0)  # quiet for longer than ping interval + pong timeout (1.2 s)
            assert st.connected and st.backlog == 0 and st.applied_seq == 3 and st.connects == 1
            assert time.time() - st.last_heard_at < st.heard_window_s  # pongs keep the host heard
            assert st.lag() == 0.0
            async with health_client(consumer) as http:
                resp = await http.get("/health")
            assert resp.status_code == 200, resp.text
            assert resp.json()["firehose"]["lagSeconds"] == 0.0 and resp.json()["firehose"]["current"]

            connections[0].transport.pause_reading()  # the host hangs: no more pongs
            await eventually(lambda: asyncio.sleep(0, st.lag() > st.heard_window_s or st.connects > 1), timeout=5)
            await eventually(lambda: asyncio.sleep(0, st.connects == 2 and st.connected), timeout=10)
            assert "keepalive ping timeout" in (st.last_error or "")
            assert sink.seqs == [1, 2, 3]
        finally:
            consumer.stop()
            await asyncio.wait_for(task, 10)
            for ws in connections:
                ws.transport.resume_reading()


async def test_busy_catch_up_reports_its_lag():
    """While events wait to be applied, lag is the age of the oldest of them (MAX_LAG_S exceeded)."""
    gate = asyncio.Event()

    class SlowSink(Sink):
        async def apply(self, events: list, cursor: int | None, prepared: bool = False) -> None:
            await gate.wait()
            await super().apply(events, cursor, prepared)

    old = time.time() - TWELVE_MINUTES

    async def host(ws):
        for seq in (1, 2):
            await ws.send(identity_frame(seq, old))
        await ws.wait_closed()

    async with websockets.serve(host, "127.0.0.1", 0) as server:
        sink = SlowSink()
        consumer = FirehoseConsumer(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", sink, wanted,
                                    heartbeat_s=0.2, heartbeat_timeout_s=0.6)
        task = asyncio.create_task(consumer.run())
        try:
            await eventually(lambda: asyncio.sleep(0, consumer.status.backlog == 2))
            assert consumer.status.lag() > TWELVE_MINUTES - 5 > MAX_LAG_S
            async with health_client(consumer) as http:
                resp = await http.get("/health")
            assert resp.status_code == 503 and resp.json()["firehose"]["backlog"] == 2
            gate.set()
            await eventually(lambda: asyncio.sleep(0, sink.cursor == 2))
            assert consumer.status.lag() == 0.0 and consumer.status.backlog == 0
        finally:
            gate.set()
            consumer.stop()
            await asyncio.wait_for(task, 10)


async def test_future_cursor_resumes_from_the_head_and_resyncs_every_followed_repo(tmp_path):
    """Our stored cursor (1000) is ahead of a host whose history was reset: it answers FutureCursor.
    The consumer does not retry that cursor: every followed repo is marked desynchronized (and
    handed to the resync worker), the cursor is dropped, and the stream resumes from the host's
    current head. /health shows the reset; a restart resumes from the new history's cursor."""
    path = str(tmp_path / "t.sqlite")
    db.migrate(path)
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO repo_state (did, rev, status, updated_at) VALUES (?, '3kzaaaaaaaaa2', "
                         "'synchronized', '')", [(DID,), (LISTENER,)])
        conn.execute("INSERT INTO cursor (source, seq, updated_at) VALUES ('test', 1000, '')")
    resyncs: list[str] = []
    indexer = Indexer(path, "test", on_desync=resyncs.append)
    await indexer.open()
    await indexer.load_state()
    requested: list[str] = []

    async def host(ws):
        requested.append(ws.request.path)
        cursor = ws.request.path.partition("cursor=")[2]
        if cursor and int(cursor) > 2:
            await ws.send(error_frame("FutureCursor", "Cursor in the future."))
            await ws.close()
            return
        for seq in range(int(cursor or 0) + 1, 3):
            await ws.send(identity_frame(seq))
        await ws.wait_closed()

    try:
        async with websockets.serve(host, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            consumer = FirehoseConsumer(url, indexer, wanted, max_backoff_s=0.1, start_cursor=0,
                                        tracked=indexer.is_tracked)
            task = asyncio.create_task(consumer.run())
            try:
                async def resumed():
                    return await indexer.load_cursor() == 2
                await eventually(resumed)
                assert requested[:2] == ["/?cursor=1000", "/"]  # not the same cursor again, nor cursor=0
                st = consumer.status
                assert st.host_resets == 1 and time.time() - st.last_host_reset_at < 30
                assert "FutureCursor" in st.last_error
                rows = await indexer.sql("SELECT did, status FROM repo_state ORDER BY did")
                assert rows == sorted([(DID, DESYNCHRONIZED), (LISTENER, DESYNCHRONIZED)])
                assert sorted(resyncs) == sorted([DID, LISTENER])
                assert indexer.counters["host_resets"] == 1
                async with health_client(consumer, indexer) as http:
                    body = (await http.get("/health")).json()
                assert body["firehose"]["hostResets"] == 1 and body["firehose"]["lastHostReset"]
                assert body["indexer"]["host_resets"] == 1
            finally:
                consumer.stop()
                await asyncio.wait_for(task, 10)
            assert len(requested) == 2  # one reset, one connection at the head: no retry loop

            restarted = FirehoseConsumer(url, indexer, wanted, max_backoff_s=0.1, start_cursor=0,
                                         tracked=indexer.is_tracked)
            task = asyncio.create_task(restarted.run())
            try:
                await eventually(lambda: asyncio.sleep(0, restarted.status.connects == 1 and len(requested) == 3))
                assert requested[2] == "/?cursor=2" and restarted.status.host_resets == 0
            finally:
                restarted.stop()
                await asyncio.wait_for(task, 10)
    finally:
        await indexer.close()
