"""The consumer killed mid-stream (SIGKILL, no clean shutdown) and restarted, many times, ends with
exactly the same database as one clean run; rewinding the cursor replays with no double effect.
Runs ``openmusic run`` as a real subprocess on the reference PDS's firehose."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libipld
import websockets

from core.lexicons import LIKE, PLAY, TRACK
from core.publish import like, publish_track, record_play
from devkit.media import tune_wav
from tests.conftest import free_port

COMPARED = {
    "record": "uri, cid, json", "track": "uri, cid, title, duration_ms, genre, album_uri",
    "play": "uri, cid, track_uri, listened_ms, completed", "like_record": "uri, subject_uri",
    "track_stats": "*", "track_listener": "*", "album_track": "*", "profile": "did, cid, display_name",
    "repo_state": "did, rev", "rejected_record": "uri, reason",
}


def dump(db: Path) -> dict[str, list]:
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT {cols} FROM {t} ORDER BY 1, 2").fetchall() for t, cols in COMPARED.items()}
    finally:
        conn.close()


def cursor_of(db: Path) -> int:
    try:
        # read-write, so that a WAL left by a killed writer is recovered and read (a read-only
        # connection could see the older cursor of the main file, and the next run be killed at start)
        conn = sqlite3.connect(db, timeout=1)
        try:
            row = conn.execute("SELECT seq FROM cursor").fetchone()
        finally:
            conn.close()
        return row[0] if row else 0
    except sqlite3.OperationalError:
        return 0


async def head_seq(net) -> int:
    last = 0
    async with websockets.connect(f"{net.firehose_url}/xrpc/com.atproto.sync.subscribeRepos?cursor=0",
                                  max_size=5 * 1024 * 1024) as ws:
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=1.5)
            except TimeoutError:
                return last
            _header, body = libipld.decode_dag_cbor_multi(raw)
            last = max(last, body.get("seq", 0))


def start(net, db: Path, batch: int) -> subprocess.Popen:
    env = dict(os.environ, OPENMUSIC_FIREHOSE_BATCH_SIZE=str(batch), OPENMUSIC_LOG_LEVEL="WARNING")
    return subprocess.Popen(
        [sys.executable, "-m", "openmusic.cli", "run", "--firehose-url", net.firehose_url, "--plc-url", net.plc_url,
         "--handle-resolver-url", net.pds_url, "--allow-private-hosts", "--start-cursor", "0", "--db-path", str(db),
         "--blob-cache-dir", str(db.parent / "blobs"), "--port", str(free_port())],
        env=env, stdout=subprocess.DEVNULL, stderr=open(db.parent / "stderr.log", "ab"))  # noqa: SIM115


def run_until(net, db: Path, target: int, batch: int, kill: bool, timeout: float = 90) -> int:
    """Run the consumer until its durable cursor reaches ``target``; SIGKILL it there (``kill``) or stop it."""
    proc = start(net, db, batch)
    deadline = time.monotonic() + timeout
    try:
        while cursor_of(db) < target:
            assert proc.poll() is None, (db.parent / "stderr.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"cursor stuck at {cursor_of(db)} < {target}"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        proc.wait(timeout=20)
    return cursor_of(db)


def make_workload(make_client, tmp_path: Path) -> None:
    """Four accounts writing tracks, plays, likes, edits, deletes and an invalid record, concurrently."""
    artist = make_client("crashartist")
    wav = tmp_path / "t.wav"
    wav.write_bytes(tune_wav(11, seconds=1))
    tracks = [publish_track(artist, wav, title=f"Crash {i}") for i in range(5)]
    artist.put_record(TRACK, tracks[0].uri.rsplit("/", 1)[1], {
        "title": "Crash 0 (edit)", "audio": artist.upload_blob(wav.read_bytes(), "audio/wav"), "duration": 1000,
        "createdAt": "2026-11-01T00:00:00.000Z"})
    artist.delete_record(TRACK, tracks[4].uri.rsplit("/", 1)[1])
    artist._call("POST", "com.atproto.repo.createRecord", json={
        "repo": artist.did, "collection": TRACK, "record": {"$type": TRACK, "title": "invalid"}})

    def listen(n: int) -> None:
        client = make_client(f"crashfan{n}")
        refs = []
        for i in range(110):
            refs.append(record_play(client, tracks[i % 4], 100 * (i + 1), completed=i % 3 == 0))
            if i % 10 == 0:
                like(client, tracks[i % 4])
        for ref in refs[::9]:
            client.delete_record(PLAY, ref.uri.rsplit("/", 1)[1])
        client.delete_record(LIKE, like(client, tracks[1]).uri.rsplit("/", 1)[1])

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(listen, range(3)))


async def test_killed_consumer_ends_with_the_same_database(net, make_client, tmp_path):
    make_workload(make_client, tmp_path)
    head = await head_seq(net)
    assert head > 300

    clean = tmp_path / "clean" / "openmusic.sqlite"
    clean.parent.mkdir()
    assert run_until(net, clean, head, batch=500, kill=False) == head
    expected = dump(clean)
    assert len(expected["play"]) > 250 and expected["rejected_record"]

    crashed = tmp_path / "crashed" / "openmusic.sqlite"
    crashed.parent.mkdir()
    rng = random.Random(os.environ.get("OPENMUSIC_TEST_SEED", "7"))
    # not in the last events: killed there, the consumer may reach the head before the signal lands
    kill_points = sorted(rng.sample(range(1, head - 50), 6))
    reached = []
    for point in kill_points:
        if point <= cursor_of(crashed):
            continue
        reached.append(run_until(net, crashed, point, batch=rng.choice([1, 2, 5]), kill=True))
    assert len(set(reached)) >= 4 and all(0 < r < head for r in reached), reached
    assert run_until(net, crashed, head, batch=3, kill=False) == head
    assert dump(crashed) == expected

    # rewind the durable cursor: replaying the second half again changes nothing
    conn = sqlite3.connect(crashed)
    conn.execute("UPDATE cursor SET seq = ?", (head // 2,))
    conn.commit()
    conn.close()
    proc = start(net, crashed, 50)
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert cursor_of(crashed) == head
    assert dump(crashed) == expected


def test_a_migration_lock_left_by_a_killed_process_is_broken(tmp_path):
    """A process killed while it held yoyo's migration lock (``yoyo_lock`` row with its PID) does not
    block every later start: ``core.db.migrate`` removes the lock of a process that is gone, and
    leaves a live process's lock alone."""
    from core import db as core_db
    path = str(tmp_path / "locked.sqlite")
    core_db.migrate(path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, '2026-11-30 00:00:00', ?)", (dead.pid,))
    conn.commit()
    assert core_db.migrate(path) == 0
    assert conn.execute("SELECT COUNT(*) FROM yoyo_lock").fetchone() == (0,)
    conn.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, '2026-11-30 00:00:00', ?)", (os.getpid(),))
    conn.commit()
    conn.close()
    from yoyo import get_backend
    core_db._break_stale_lock(get_backend(f"sqlite:///{path}"))  # this test's own process: alive
    assert sqlite3.connect(path).execute("SELECT pid FROM yoyo_lock").fetchone() == (os.getpid(),)

