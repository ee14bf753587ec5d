"""Verification workers (``firehose.verify.Verifier``'s process pool) never outlive the process that
started them, however it dies: a real process starts a pool, is SIGKILLed, and every process it had
started (the spawn workers and multiprocessing's resource tracker) must be gone within seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import descendants, still_running

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2

# Starts a Verifier's pool (in the main thread, or in a thread: then without PR_SET_PDEATHSIG, so the
# portable watcher alone must stop the workers) and says "ready" once every worker has answered.
SCRIPT = """
import asyncio, sys, threading, time
from firehose.verify import Verifier

verifier = Verifier(keys=None, workers=int(sys.argv[2]))

async def start():
    await verifier.start()

if sys.argv[1] == "main":
    asyncio.run(start())
else:  # the pool's spawning thread ends; the workers must live on while this process does
    t = threading.Thread(target=asyncio.run, args=(start(),))
    t.start()
    t.join()
    assert verifier._pool.submit(sum, [1, 2]).result(timeout=30) == 3
print("ready", flush=True)
time.sleep(3600)
"""


def start_pool_process(mode: str) -> tuple[subprocess.Popen, dict[int, int]]:
    """A Python process that started a verification pool; returns it and its descendants (pid -> start time)."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, mode, str(WORKERS)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"the pool process did not start (exit code {proc.poll()})"
    kids = descendants(proc.pid)
    assert len(kids) >= WORKERS + 1, kids  # the workers and the resource tracker
    return proc, kids


def gone_within(procs: dict[int, int], timeout: float) -> dict[int, int]:
    """Wait up to ``timeout`` s for ``procs`` to exit; those still running then."""
    deadline = time.monotonic() + timeout
    left = still_running(procs)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = still_running(procs)
    return left


@pytest.mark.parametrize("mode", ["main", "thread"])
def test_workers_exit_when_their_parent_is_killed(mode):
    proc, kids = start_pool_process(mode)
    try:
        time.sleep(2.5)  # longer than a worker's ppid poll: a live parent must not lose its workers
        assert still_running(kids) == kids
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        left = gone_within(kids, 5.0)
        assert not left, f"still running 5 s after their parent was SIGKILLed: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in still_running(kids):
            os.kill(pid, signal.SIGKILL)
