"""The consumer's pipeline (units over a loopback WebSocket): batches are prepared ahead but applied
strictly in order, and a failed batch stops every later one, so the cursor never skips events."""

import asyncio

import dag_cbor
import websockets

from firehose.consumer import FirehoseConsumer, RetryLater
from indexer.core import wanted
from tests.records import DID


def identity_frame(seq: int) -> bytes:
    return dag_cbor.encode({"op": 1, "t": "#identity"}) + dag_cbor.encode({"seq": seq, "did": DID})


class Sink:
    """Records what it is asked to do; ``prepare`` is slow for the first batch, ``apply`` fails once
    on the batch holding ``fail_seq``."""

    def __init__(self, fail_seq: int | None = None) -> None:
        self.cursor: int | None = None
        self.applied: list[int] = []
        self.prepared: list[int] = []
        self.fail_seq = fail_seq

    async def load_cursor(self) -> int | None:
        return self.cursor

    async def prepare(self, events: list) -> None:
        first = events[0].seq
        self.prepared.append(first)
        await asyncio.sleep(0.05 if len(self.prepared) == 1 else 0)  # later batches finish preparing first

    async def apply(self, events: list, cursor: int | None, prepared: bool = False) -> None:
        assert prepared
        seqs = [e.seq for e in events]
        if self.fail_seq in seqs:
            self.fail_seq = None
            raise RetryLater("not now")
        assert not self.applied or seqs[0] == self.applied[-1] + 1, "a batch was skipped or reordered"
        self.applied += seqs
        self.cursor = cursor


async def run_consumer(sink: Sink, n: int) -> list[int]:
    async def relay(ws) -> None:
        cursor = int(ws.request.path.partition("cursor=")[2] or 0)
        for seq in range(cursor + 1, n + 1):
            await ws.send(identity_frame(seq))
        await asyncio.sleep(0.3)

    async with websockets.serve(relay, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        consumer = FirehoseConsumer(f"ws://127.0.0.1:{port}", sink, wanted, batch_size=10, max_backoff_s=0.1)
        task = asyncio.create_task(consumer.run())
        for _ in range(200):
            if sink.cursor == n:
                break
            await asyncio.sleep(0.05)
        consumer.stop()
        await task
    return sink.applied


async def test_batches_apply_in_order_although_prepared_out_of_order():
    applied = await run_consumer(Sink(), 95)
    assert applied == list(range(1, 96))


async def test_a_failed_batch_stops_later_ones_and_is_replayed():
    sink = Sink(fail_seq=25)
    applied = await run_consumer(sink, 95)
    assert applied == list(range(1, 96))  # each event once: nothing after the failure slipped through
    assert sink.cursor == 95
