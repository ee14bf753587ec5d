"""The developers' guide cannot rot: each example script in ``docs/examples/`` (the code
``docs/developers.md`` walks through) runs as a subprocess, as a third-party developer would run it,
against the reference PDS and our runtime, and its effects are checked from the outside:

- ``write_play.py``: the play with its segments is in the listener's repo (``getRecord``) and the
  AppView serves it (``listen.getPlays``) with the same segments and listened time;
- ``vote_and_like.py``: the like and the vote are in the repo, ``social.getActorLikes`` and
  ``social.getVoteBreakdown`` serve them;
- ``tip.py``: the tip is in the repo and ``payment.getTips`` lists it (unsettled: no broker here);
- ``service_auth.py``: tokens from ``getServiceAuth`` are accepted by our notification query and
  procedure (a release notification is unread before ``updateSeen`` and read after), while the same
  call without a token is refused (our runtime named ``did:web:localhost%3A<port>``: the reference
  PDS takes no did:web of an IP address as ``aud``); with ``--proxy`` on an AppView that publishes its DID document
  (payments on), the reference PDS proxies the call (``atproto-proxy``) and we answer it;
- ``read_api.py``: the public queries answer without any token.

The scripts import nothing from this repository (checked), only httpx and the standard library."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.lexicons import FOLLOW
from core.publish import publish_profile
from tests.conftest import devnet_settings, eventually, serving
from tests.test_e2e import ok, publish_wav

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
PASSWORD = "test-password-1234"  # what make_client gives every account
#: The top-level packages of this repository, which no example may import.
OURS = {"core", "firehose", "indexer", "payments", "appview", "web", "feedgen", "devkit", "openmusic", "tests"}
GUIDE_SCRIPTS = ("write_play.py", "vote_and_like.py", "tip.py", "service_auth.py", "read_api.py")


async def run(script: str, *args: str) -> dict:
    """Run ``docs/examples/<script>`` in a fresh interpreter (outside the repo's import path) without
    blocking the event loop the AppView runs in; returns the JSON object it prints last."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(EXAMPLES / script), *args, cwd=str(EXAMPLES),
                                                env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}: {err.decode()[-2000:]}"
    return json.loads(out.decode().strip().splitlines()[-1])


def account_args(net, client, appview) -> list[str]:
    return ["--pds", net.pds_url, "--handle", client.handle, "--password", PASSWORD,
            "--appview", appview.settings.base_url]


def get_record(net, uri: str) -> dict:
    did, collection, rkey = uri.removeprefix("at://").split("/")
    resp = httpx.get(f"{net.pds_url}/xrpc/com.atproto.repo.getRecord",
                     params={"repo": did, "collection": collection, "rkey": rkey}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["value"]


def test_examples_use_only_public_libraries():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert set(GUIDE_SCRIPTS) <= set(scripts)
    for name in GUIDE_SCRIPTS:
        tree = ast.parse((EXAMPLES / name).read_text())
        imported = {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & OURS, f"{name} imports {imported & OURS} from this repository"
        assert ast.get_docstring(tree), f"{name} has no docstring saying how to run it"
    guide = (EXAMPLES.parent / "developers.md").read_text()
    for name in GUIDE_SCRIPTS:
        assert f"examples/{name}" in guide, f"docs/developers.md does not point to {name}"


async def test_guide_scripts_write_records_the_appview_serves(net, make_client, appview, tmp_path):
    artist, listener = make_client("guideartist"), make_client("guidefan")
    publish_profile(artist, "Guide Artist", roles=["artist"])
    track = publish_wav(artist, tmp_path, 41, "Example Tune")
    await eventually(lambda: ok(appview, "fm.openmusic.catalog.getTrack", uri=track.uri))
    args = [*account_args(net, listener, appview), "--track", track.uri]

    play = await run("write_play.py", *args)
    assert play["indexed"] is True and play["track"] == track.uri
    stored = get_record(net, play["uri"])
    assert stored["segments"] == play["segments"] == [{"startMs": 0, "endMs": 1000}, {"startMs": 1500, "endMs": 2000}]
    assert stored["listenedMs"] == 1500 and stored["completed"] is True
    served = (await ok(appview, "fm.openmusic.listen.getPlays", actor=listener.did))["plays"]
    view = next(p for p in served if p["uri"] == play["uri"])
    assert view["listenedMs"] == 1500 and view["record"]["segments"] == stored["segments"]

    social = await run("vote_and_like.py", *args)
    assert social["indexed"] is True and social["weight"] is not None
    assert get_record(net, social["vote"])["direction"] == "up"
    assert get_record(net, social["like"])["subject"]["uri"] == track.uri
    breakdown = await ok(appview, "fm.openmusic.social.getVoteBreakdown", uri=track.uri)
    assert breakdown["votesUp"] >= 1 and any(v["uri"] == social["vote"] for v in breakdown["votes"])

    tip = await run("tip.py", *args, "--amount", "250")
    assert tip["indexed"] is True and tip["settlement"] is None and tip["artist"] == artist.did
    assert get_record(net, tip["uri"])["amount"] == 250
    tips = (await ok(appview, "fm.openmusic.payment.getTips", payer=listener.did))["tips"]
    assert [t["amount"] for t in tips if t["uri"] == tip["uri"]] == [250]

    read = await run("read_api.py", "--appview", appview.settings.base_url, "--q", "Example Tune",
                     "--actor", listener.handle)
    assert track.uri in [t["uri"] for t in read["search"]] and read["track"]["durationMs"] == 2000
    assert play["uri"] in [p["uri"] for p in read["plays"]]


@pytest.fixture(scope="module")
async def named_appview(net, tmp_path_factory):
    """Our runtime under a service DID a PDS accepts as ``aud``: did:web of ``localhost:<port>`` (the
    reference PDS refuses a did:web of an IP address, which the ``appview`` fixture's would be)."""
    settings = devnet_settings(net, tmp_path_factory.mktemp("guide"))
    settings.public_url = f"http://localhost:{settings.port}"
    async with serving(settings) as rt:
        yield rt


async def test_service_auth_script_calls_our_procedures(net, make_client, named_appview, tmp_path):
    appview = named_appview
    artist, fan = make_client("authartist"), make_client("authfan")
    publish_profile(artist, "Auth Artist", roles=["artist"])
    fan.create_record(FOLLOW, {"subject": artist.did,
                               "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())})
    await asyncio.sleep(0.05)
    track = publish_wav(artist, tmp_path, 42, "A New Release")
    await eventually(lambda: ok(appview, "fm.openmusic.catalog.getTrack", uri=track.uri))

    unauthenticated = await appview.http_client.get("/xrpc/fm.openmusic.notification.getUnreadCount")
    assert unauthenticated.status_code == 401

    out = await run("service_auth.py", *account_args(net, fan, appview))
    assert out["did"] == fan.did and out["serviceDid"] == appview.settings.service_did_resolved
    assert out["before"]["count"] >= 1  # the release of an artist the fan follows
    assert out["after"]["count"] == 0  # updateSeen was accepted and took effect


async def test_service_auth_through_the_pds_proxy(net, make_client, paid_appview):
    fan = make_client("proxyfan")
    out = await run("service_auth.py", *account_args(net, fan, paid_appview), "--proxy")
    assert out["serviceDid"] == paid_appview.settings.service_did_resolved
    assert out["proxied"] == out["after"] and out["after"]["count"] == 0
