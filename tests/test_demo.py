"""The README's first command, for real: ``openmusic demo --exit-after-seed`` starts the reference
PDS + PLC, localstripe and the Connect stub, seeds the catalog and its payments (credit, tips, a
subscription, a payout with onboarding), prints the banner and stops on its own, leaving nothing
running. A change to any part the demo strings together (the seed, the payment flow, a stub) shows
up here rather than in front of a new user."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_cli_hardening import _free_port_trio

pytestmark = pytest.mark.network
ROOT = Path(__file__).resolve().parent.parent


def test_demo_seeds_pays_out_prints_its_banner_and_stops(tmp_path):
    port = _free_port_trio()
    proc = subprocess.Popen(
        [sys.executable, "-m", "openmusic.cli", "demo", "--exit-after-seed", "--port", str(port),
         "--data-dir", str(tmp_path / "demo")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        out, _ = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"the demo did not finish:\n{out[-3000:]}") from None
    assert proc.returncode == 0, out[-3000:]
    assert "Open Music AppView is up: 12 tracks" in out
    for words in ("/studio", "/dashboard/operator", "max-manages.test (of aurora-tide.test)", "ops-desk.test",
                  "fm.openmusic.payment.payout", "payouts explain aurora-tide.test"):
        assert words in out, words
    assert "earned 1050 (USD minor units)" in out  # Aurora's subscription share and tips, paid out
    deadline = time.monotonic() + 15  # the whole process group is gone (children exit just after it)
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            left = subprocess.run(["ps", "-o", "pid,cmd", "-g", str(proc.pid)], capture_output=True, text=True).stdout
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"the demo left processes running:\n{left}")
        time.sleep(0.2)
