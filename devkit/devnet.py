"""The local ATProto network: Bluesky's reference PDS and PLC directory (npm ``@atproto/dev-env``)
run on loopback by ``devnet/network.mjs``, for the demo and the tests.

``devnet/install.sh`` installs it (Node 22 from npm, better-sqlite3 built from source).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

DEVNET_DIR = Path(__file__).resolve().parent.parent / "devnet"
NODE = DEVNET_DIR / ".node22" / "bin" / "node"


class DevnetError(RuntimeError):
    """The local network could not be installed or started."""


def install() -> None:
    """Run ``devnet/install.sh`` (idempotent). Raises ``DevnetError`` when it fails."""
    result = subprocess.run(["bash", str(DEVNET_DIR / "install.sh")], check=False)
    if result.returncode != 0:
        raise DevnetError(f"devnet/install.sh failed with exit code {result.returncode}")


@dataclass
class Account:
    """An account created on the local PDS, with a live session."""

    did: str
    handle: str
    password: str
    access_jwt: str


class Devnet:
    """A running reference PDS + PLC. Use as a context manager or call ``stop()``.

    Attributes: ``pds_url`` (``http://localhost:<port>``), ``plc_url``, ``admin_password``.
    """

    def __init__(self, pds_port: int = 0, plc_port: int = 0, data_dir: str | None = None,
                 startup_timeout_s: float = 90.0) -> None:
        if not NODE.exists():
            raise DevnetError(f"{NODE} is missing: run devnet/install.sh (or `make setup`) first")
        env = dict(os.environ, PDS_PORT=str(pds_port), PLC_PORT=str(plc_port), NODE_ENV="development",
                   LOG_ENABLED="false")
        if data_dir:
            env["PDS_DATA_DIR"] = data_dir
        self._proc = subprocess.Popen(
            [str(NODE), "network.mjs"], cwd=DEVNET_DIR, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self._stderr: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        deadline = time.monotonic() + startup_timeout_s
        line = ""
        while time.monotonic() < deadline:
            line = self._proc.stdout.readline() if self._proc.stdout else ""
            if line.strip().startswith("{"):
                break
            if self._proc.poll() is not None:
                break
        if not line.strip().startswith("{"):
            self.stop()
            raise DevnetError("devnet did not start:\n" + "".join(self._stderr[-40:]))
        info = json.loads(line)
        self.pds_url: str = info["pds"]
        self.plc_url: str = info["plc"]
        self.admin_password: str = info["adminPassword"]

    def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line)
            del self._stderr[:-200]

    @property
    def firehose_url(self) -> str:
        """The PDS's ``subscribeRepos`` WebSocket base (``ws://localhost:<port>``)."""
        return self.pds_url.replace("http://", "ws://")

    def create_account(self, handle: str, password: str = "password-1234",
                       email: str | None = None) -> Account:
        """Create an account (``com.atproto.server.createAccount``); ``handle`` must end in ``.test``
        and its first label have at least 3 characters. Raises ``httpx.HTTPStatusError``."""
        resp = httpx.post(f"{self.pds_url}/xrpc/com.atproto.server.createAccount", json={
            "handle": handle, "password": password, "email": email or f"{handle}@example.com"}, timeout=30)
        resp.raise_for_status()
        body = resp.json()
        return Account(did=body["did"], handle=body["handle"], password=password,
                       access_jwt=body["accessJwt"])

    def admin_headers(self) -> dict[str, str]:
        """Basic-auth header for the PDS admin API (takedowns, account admin)."""
        import base64

        token = base64.b64encode(f"admin:{self.admin_password}".encode()).decode()
        return {"authorization": f"Basic {token}"}

    def stop(self) -> None:
        """Stop the network (closes its stdin, then terminates it)."""
        if self._proc.poll() is None:
            try:
                if self._proc.stdin:
                    self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()

    def __enter__(self) -> Devnet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
