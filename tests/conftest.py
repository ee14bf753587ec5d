"""Fixtures for the end-to-end tests: the real reference PDS + PLC (``devnet/``) on loopback, and
the AppView (firehose consumer + indexer + HTTP server) running on it in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from core.config import Settings
from core.publish import PdsClient
from devkit import devnet
from openmusic.runtime import Runtime

_counter = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def net():
    """A running reference PDS + PLC (installs it on first use)."""
    if not devnet.NODE.exists():
        devnet.install()
    with devnet.Devnet() as network:
        yield network


@pytest.fixture(scope="session")
def make_client(net) -> Callable[[str], PdsClient]:
    """``make_client("name")`` -> a logged-in ``PdsClient`` for a new account ``name<N>.test``."""
    def make(prefix: str) -> PdsClient:
        handle = f"{prefix}{next(_counter)}.test"
        net.create_account(handle, "test-password-1234")
        return PdsClient(net.pds_url, handle, "test-password-1234")
    return make


#: ``OPENMUSIC_TEST_ENGINE=postgresql``: the runtimes the tests start keep their index in a database
#: of their own on one throwaway PostgreSQL server (``devkit.pgserver``) instead of a SQLite file.
TEST_ENGINE = os.environ.get("OPENMUSIC_TEST_ENGINE", "sqlite")
_pg_cluster: contextlib.ExitStack | None = None
_pg_url: str | None = None
_pg_names = itertools.count(1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A throwaway PostgreSQL server (``devkit.pgserver``) for one test module: its URL. Skipped
    when the machine has no PostgreSQL server binaries."""
    from devkit import pgserver
    if pgserver.bin_dir() is None:
        pytest.skip("no PostgreSQL server binaries")
    with pgserver.throwaway_cluster() as url:
        yield url


def runtime_database(tmp: Path) -> str:
    """A fresh database for one runtime: ``""`` (its SQLite file beside ``tmp``) or, with
    ``TEST_ENGINE`` postgresql, the URL of a new database on the session's server."""
    global _pg_cluster, _pg_url
    if TEST_ENGINE != "postgresql":
        return ""
    if _pg_url is None:
        from devkit import pgserver
        _pg_cluster = contextlib.ExitStack()
        _pg_url = _pg_cluster.enter_context(pgserver.throwaway_cluster())
    from devkit import pgserver
    return pgserver.create_database(_pg_url, f"t{next(_pg_names)}")


def stop_test_server() -> None:
    """Stop the session's PostgreSQL server, if one was started (``pytest_sessionfinish``)."""
    global _pg_cluster, _pg_url
    if _pg_cluster is not None:
        _pg_cluster.close()
        _pg_cluster, _pg_url = None, None


def devnet_settings(net, tmp: Path, **extra) -> Settings:
    """Settings that point the AppView at ``net`` (the index in ``runtime_database``)."""
    extra.setdefault("database_url", runtime_database(tmp))
    return Settings(firehose_url=net.firehose_url, plc_url=net.plc_url, handle_resolver_url=net.pds_url,
                    allow_private_hosts=True, start_cursor=0, db_path=str(tmp / "openmusic.sqlite"), blob_cache_dir=str(tmp / "blobs"),
                    host="127.0.0.1", port=free_port(), log_level="WARNING", **extra)


@contextlib.asynccontextmanager
async def serving(settings: Settings):
    """Start a ``Runtime`` on ``settings`` and its HTTP server; yield it once ``/health`` answers,
    with ``rt.http_client`` an httpx client on its base URL. Stops it all on exit."""
    rt = Runtime(settings)
    await rt.start()
    server = asyncio.create_task(rt.serve())
    try:
        async with httpx.AsyncClient(base_url=rt.settings.base_url, timeout=30) as http:
            for _ in range(100):
                try:
                    await http.get("/health")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            rt.http_client = http
            yield rt
    finally:
        server.cancel()
        await rt.stop()


@pytest.fixture(scope="session")
async def appview(net, tmp_path_factory):
    """The AppView in-process on ``net``'s firehose, serving HTTP on a free port."""
    async with serving(devnet_settings(net, tmp_path_factory.mktemp("appview"))) as rt:
        yield rt


async def eventually(check: Callable[[], Awaitable[object]], timeout: float = 15.0, interval: float = 0.1,
                     until: Callable[[object], bool] = bool):
    """Await ``check()`` until ``until(result)`` holds (the result is returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if until(last):
                return last
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"not true within {timeout}s: {last!r}")


@pytest.fixture(scope="session")
def localstripe():
    """A real localstripe server (PyPI ``localstripe``: a stateful fake of the Stripe API) on loopback.
    Yields its base URL."""
    from devkit.demo_payments import start_localstripe

    port = free_port()
    proc = start_localstripe(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


WEBHOOK_SECRET = "whsec_openmusic_test"


@pytest.fixture(scope="session")
def connect_stub():
    """The Stripe Connect endpoints localstripe lacks (``devkit.connect_stub``: Stripe's own example
    objects, idempotency keys honoured) on loopback. Yields (stub, base URL)."""
    from devkit.connect_stub import serve_in_thread

    port = free_port()
    stub, server = serve_in_thread(port)
    try:
        yield stub, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True


@pytest.fixture(scope="session")
async def paid_appview(net, localstripe, connect_stub, tmp_path_factory):
    """An AppView with payments on: Stripe is localstripe (its webhooks delivered to us, signed), the
    broker repo an account on the reference PDS, a fresh attestation key."""
    from devkit.demo_payments import create_monthly_price, register_webhook
    from payments.attest import new_secret

    price = await asyncio.to_thread(create_monthly_price, localstripe, "plan_openmusic_plus", 999, "USD", "Plus")
    broker = f"broker{next(_counter)}.test"
    net.create_account(broker, "broker-password-1234")
    settings = devnet_settings(
        net, tmp_path_factory.mktemp("paid"), stripe_api_key="sk_test_openmusic", stripe_api_base=localstripe,
        stripe_webhook_secret=WEBHOOK_SECRET, broker_pds_url=net.pds_url, broker_handle=broker,
        broker_password="broker-password-1234", attestation_key=new_secret(), processor_ref_salt="test-salt",
        tiers=json.dumps([{"id": "plus", "name": "Plus", "monthlyPrice": 999, "stripePrice": price}]),
        stripe_connect_api_base=connect_stub[1], payout_threshold=100)
    # The service DID is did:web of the public URL; atproto accepts a did:web with a port only on localhost.
    settings.public_url = f"http://localhost:{settings.port}"
    async with serving(settings) as rt:
        await asyncio.to_thread(register_webhook, localstripe, f"{rt.settings.base_url}/stripe/webhook", WEBHOOK_SECRET)
        yield rt


# --- The test session leaves no process running (issue 10, item 1) ---------------------------------
# Every process the session starts inherits OPENMUSIC_TEST_SESSION=<token> (set here, before any test
# runs), so a process orphaned by a SIGKILL is still recognised after it was re-parented to init; the
# token is per session, so teammates' concurrent runs in the same checkout are not counted. At the end,
# pytest_sessionfinish fails the run if any of them (or any descendant of pytest) is still alive after
# LEFTOVER_GRACE_S, lists them, and kills them.

SESSION_MARK = "OPENMUSIC_TEST_SESSION"
#: Seconds the session waits at its end for its processes to exit before it calls them leftovers.
LEFTOVER_GRACE_S = 10.0


def _mark_session() -> str:
    import os
    import uuid

    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    os.environ[SESSION_MARK] = token
    return token


SESSION_TOKEN = _mark_session()


def proc_table() -> dict[int, tuple[int, str, int]]:
    """Linux ``/proc``: every live process as ``pid -> (ppid, state letter, start time in clock ticks
    since boot)``. Processes that vanish while being read are left out. Raises ``FileNotFoundError``
    without ``/proc``."""
    out: dict[int, tuple[int, str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
        out[int(entry.name)] = (int(fields[1]), fields[0], int(fields[19]))
    return out


def descendants(pid: int, table: dict[int, tuple[int, str, int]] | None = None) -> dict[int, int]:
    """The processes below ``pid`` in the process tree now, as ``pid -> start time`` (see ``proc_table``)."""
    table = proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for child, (ppid, _state, _start) in table.items():
        children.setdefault(ppid, []).append(child)
    found: dict[int, int] = {}
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        if p not in found:
            found[p] = table[p][2]
            todo.extend(children.get(p, []))
    return found


def still_running(procs: dict[int, int]) -> dict[int, int]:
    """Those of ``procs`` (``pid -> start time``) that still run: not exited, not a zombie, and not a
    new process that reused the pid."""
    table = proc_table()
    return {p: start for p, start in procs.items() if p in table and table[p][1] != "Z" and table[p][2] == start}


def session_processes(token: str = SESSION_TOKEN) -> dict[int, str]:
    """Live processes of this test session other than pytest itself: those started with
    ``OPENMUSIC_TEST_SESSION=token`` in their environment (orphans included) and descendants of
    pytest, except pytest's own multiprocessing resource tracker (it reads a pipe that only pytest
    and its pool workers hold, so it ends at EOF when they do); as ``pid -> command line``."""
    import os

    me = os.getpid()
    table = proc_table()
    marker = f"{SESSION_MARK}={token}".encode()
    pids = set(descendants(me, table))
    for pid in table:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if marker in env.split(b"\0"):
            pids.add(pid)
    out: dict[int, str] = {}
    for pid in sorted(pids - {me}):
        if table[pid][1] == "Z":
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if table[pid][0] == me and "multiprocessing.resource_tracker" in cmd:
            continue  # pytest's own tracker (in-process verification pools): it exits when pytest does
        out[pid] = cmd
    return out


def pytest_sessionfinish(session, exitstatus):
    """Stop the session's PostgreSQL server; then fail the run when processes it started outlive it
    (after ``LEFTOVER_GRACE_S``); kill them."""
    import signal
    import sys

    stop_test_server()
    if not Path("/proc/self/stat").exists():
        return
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    left = session_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = session_processes()
    if not left:
        return
    lines = [f"{pid}: {cmd[:300]}" for pid, cmd in left.items()]
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    title = (f"FAILED: {len(left)} process(es) started by the tests still ran {LEFTOVER_GRACE_S:.0f} s after "
             "them (killed now)")
    if reporter is not None:
        reporter.write("\n")
        reporter.write_sep("=", title, red=True)
        for line in lines:
            reporter.write_line(line)
    else:
        print(title, *lines, sep="\n", file=sys.stderr)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
