"""Fixtures for the end-to-end tests: the real reference PDS + PLC (``devnet/``) on loopback, and
the AppView (firehose consumer + indexer + HTTP server) running on it in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from openmusic import devnet
from openmusic.config import Settings
from openmusic.publish import PdsClient
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


def devnet_settings(net, tmp: Path, **extra) -> Settings:
    """Settings that point the AppView at ``net``."""
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
    from openmusic.demo_payments import start_localstripe

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
    """The Stripe Connect endpoints localstripe lacks (``openmusic.connect_stub``: Stripe's own example
    objects, idempotency keys honoured) on loopback. Yields (stub, base URL)."""
    from openmusic.connect_stub import serve_in_thread

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
    from openmusic.demo_payments import create_monthly_price, register_webhook
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
