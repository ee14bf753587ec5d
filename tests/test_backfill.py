"""Backfill on the reference PDS: records written before the AppView ever ran are found with
listRepos + describeRepo, imported from verified getRepo CARs, and the hand-over to the live
stream loses nothing; an interrupted backfill resumes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from core.lexicons import PLAY
from core.publish import publish_track, record_play
from devkit.media import tune_wav
from tests.conftest import free_port


def backfill(net, db, *extra: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "openmusic.cli", "backfill", "--firehose-url", net.firehose_url, "--plc-url",
           net.plc_url, "--handle-resolver-url", net.pds_url, "--allow-private-hosts", "--db-path", str(db),
           "--blob-cache-dir", str(db.parent / "blobs"), "--port", str(free_port()), "--log-level", "WARNING", *extra]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def count(db, sql: str, *args) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchone()[0]
    finally:
        conn.close()


def test_backfill_imports_history_and_hands_over(net, make_client, tmp_path):
    artists = [make_client("history") for _ in range(3)]
    fan = make_client("historyfan")
    wav = tmp_path / "a.wav"
    wav.write_bytes(tune_wav(61, seconds=1))
    tracks = [publish_track(a, wav, title=f"Old {i}") for i, a in enumerate(artists) for _ in range(2)]
    for t in tracks:
        record_play(fan, t, 500)
    fan.delete_record(PLAY, record_play(fan, tracks[0], 1).uri.rsplit("/", 1)[1])
    dids = [a.did for a in artists] + [fan.did]

    db = tmp_path / "bf" / "openmusic.sqlite"
    db.parent.mkdir()
    # the live stream starts at the head (default): history comes only from the backfill
    out = backfill(net, db, "--exit-when-done")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "backfill done" in out.stdout and "listed" in out.stdout
    marks = ",".join("?" * len(dids))
    assert count(db, f"SELECT COUNT(*) FROM track WHERE did IN ({marks})", *dids) == 6
    assert count(db, "SELECT COUNT(*) FROM play WHERE did = ?", fan.did) == 6
    assert count(db, f"SELECT SUM(plays) FROM track_stats WHERE track_uri IN ({','.join('?' * 6)})",
                 *[t.uri for t in tracks]) == 6
    assert count(db, "SELECT COUNT(*) FROM repo_state WHERE status != 'synchronized'") == 0

    # a second run resumes from the stored listing (already complete) and the live stream goes on
    proc = backfill(net, db, wait=False)
    time.sleep(4)
    late = publish_track(artists[0], wav, title="New After Backfill")
    deadline = time.monotonic() + 30
    while count(db, "SELECT COUNT(*) FROM track WHERE uri = ?", late.uri) == 0:
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert count(db, f"SELECT COUNT(*) FROM track WHERE did IN ({marks})", *dids) == 7
    assert os.path.exists(db)
