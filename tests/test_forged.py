"""Forged input, built from real frames of the reference PDS, served by a fake relay on loopback to
the real consumer, which checks them against the real PLC directory's keys. Every forgery is
rejected and counted, the consumer keeps running, and nothing forged reaches the database."""

from __future__ import annotations

import asyncio
import io

import coincurve
import dag_cbor
import websockets
from multiformats import CID

from core.lexicons import TRACK
from core.publish import publish_track
from devkit.media import tune_wav
from firehose.car import read_car
from openmusic.runtime import Runtime
from tests.conftest import devnet_settings, eventually
from tests.records import cid_of


def split(raw: bytes) -> tuple[dict, dict]:
    stream = io.BytesIO(raw)
    header = dag_cbor.decode(stream, allow_concat=True)
    return header, dag_cbor.decode(stream)


def join(header: dict, body: dict) -> bytes:
    return dag_cbor.encode(header) + dag_cbor.encode(body)


def write_car(root: CID, blocks: dict[bytes, bytes]) -> bytes:
    from multiformats import varint

    header = dag_cbor.encode({"version": 1, "roots": [root]})
    out = varint.encode(len(header)) + header
    for cid, block in blocks.items():
        out += varint.encode(len(cid) + len(block)) + cid + block
    return out


async def record_frames(net, did: str) -> list[bytes]:
    """Every #commit frame of ``did`` so far, as the PDS sent it."""
    frames = []
    async with websockets.connect(f"{net.firehose_url}/xrpc/com.atproto.sync.subscribeRepos?cursor=0",
                                  max_size=5 * 1024 * 1024) as ws:
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=1.5)
            except TimeoutError:
                return frames
            header, body = split(raw)
            if header.get("t") == "#commit" and body.get("repo") == did:
                frames.append(raw)


def forge_record(raw: bytes) -> bytes:
    """Swap the record for one with another title, with a correct CID for the new bytes."""
    header, body = split(raw)
    root, blocks = read_car(body["blocks"])
    op = body["ops"][0]
    record = dag_cbor.decode(blocks.pop(bytes(op["cid"])))
    record["title"] = "Forged Title"
    new_block = dag_cbor.encode(record)
    new_cid = cid_of(new_block)
    blocks[bytes(new_cid)] = new_block
    body["ops"][0]["cid"] = new_cid
    body["blocks"] = write_car(CID.decode(root[0]), blocks)
    return join(header, body)


def tamper_block(raw: bytes) -> bytes:
    """Change the record's bytes but keep its CID (what a careless forger or bit rot does)."""
    header, body = split(raw)
    root, blocks = read_car(body["blocks"])
    cid = bytes(body["ops"][0]["cid"])
    blocks[cid] = blocks[cid].replace(b"Second", b"Secxnd")
    body["blocks"] = write_car(CID.decode(root[0]), blocks)
    return join(header, body)


def resign(raw: bytes) -> bytes:
    """Re-sign the commit with a key that is not the account's."""
    header, body = split(raw)
    root, blocks = read_car(body["blocks"])
    commit = dag_cbor.decode(blocks.pop(root[0]))
    unsigned = {k: v for k, v in commit.items() if k != "sig"}
    key = coincurve.PrivateKey()
    sig = key.sign(dag_cbor.encode(unsigned))  # DER; convert to compact, low-S
    commit["sig"] = coincurve.ecdsa.serialize_compact(coincurve.ecdsa.der_to_cdata(sig))
    block = dag_cbor.encode(commit)
    new_root = cid_of(block)
    blocks[bytes(new_root)] = block
    body["commit"] = new_root
    body["blocks"] = write_car(new_root, blocks)
    return join(header, body)


def extra_op(raw: bytes) -> bytes:
    """Add an op (and its record block) that the signed MST does not hold."""
    header, body = split(raw)
    root, blocks = read_car(body["blocks"])
    record = dag_cbor.decode(blocks[bytes(body["ops"][0]["cid"])])
    record["title"] = "Smuggled"
    block = dag_cbor.encode(record)
    cid = cid_of(block)
    blocks[bytes(cid)] = block
    body["ops"].append({"action": "create", "path": f"{TRACK}/3kzzzzzzzzzz2", "cid": cid})
    body["blocks"] = write_car(CID.decode(root[0]), blocks)
    return join(header, body)


def bad_prev_data(raw: bytes) -> bytes:
    """Claim another previous MST root."""
    header, body = split(raw)
    body["prevData"] = cid_of(b"not the previous root")
    return join(header, body)


async def test_forgeries_are_rejected_and_the_stream_goes_on(net, make_client, tmp_path):
    artist = make_client("forged")
    wav = tmp_path / "a.wav"
    wav.write_bytes(tune_wav(31, seconds=1))
    first = publish_track(artist, wav, title="First")
    second = publish_track(artist, wav, title="Second")
    third = publish_track(artist, wav, title="Third")
    real = [f for f in await record_frames(net, artist.did) if split(f)[1]["ops"]]
    assert len(real) == 3
    f1, f2, f3 = real
    served = [f1, forge_record(f2), tamper_block(f2), resign(f2), extra_op(f2), bad_prev_data(f2),
              b"\x00not cbor at all", f2, f3]
    seq_frames = []
    for i, raw in enumerate(served, start=1):
        if raw.startswith(b"\x00"):
            seq_frames.append(raw)
            continue
        header, body = split(raw)
        body["seq"] = i
        seq_frames.append(join(header, body))

    async def relay(ws):
        for frame in seq_frames:
            await ws.send(frame)
        await ws.wait_closed()

    async with websockets.serve(relay, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        settings = devnet_settings(net, tmp_path)
        settings.firehose_url = f"ws://127.0.0.1:{port}"
        rt = Runtime(settings)
        await rt.start()
        try:
            async def caught_up():
                return rt.consumer.status.last_seq == len(seq_frames) and rt.indexer.counters["events"] >= 8
            await eventually(caught_up)
            cur = await rt.reader.execute("SELECT uri FROM track ORDER BY uri")
            assert [r[0] for r in await cur.fetchall()] == sorted([first.uri, second.uri, third.uri])
            cur = await rt.reader.execute("SELECT json FROM record")
            assert all("Forged" not in r[0] and "Smuggled" not in r[0] and "Secxnd" not in r[0]
                       for r in await cur.fetchall())
            assert dict(rt.verifier.counters) == {"verified": 3, "not_in_mst": 2, "bad_car": 1, "bad_signature": 1,
                                                  "prev_data_mismatch": 1}
            assert rt.consumer.status.bad_frames == 1 and rt.consumer.status.connected
            cur = await rt.reader.execute("SELECT reason, COUNT(*) FROM rejected_record GROUP BY reason ORDER BY 1")
            assert {r[0] for r in await cur.fetchall()} == {"not_in_mst", "bad_car", "bad_signature",
                                                            "prev_data_mismatch"}
        finally:
            await rt.stop()
