"""The guide's stranger verifier (docs/examples/verify_record.py), run as its own process against
records on the reference PDS, so docs/verifying-records.md cannot rot.

Proves that: the script imports only public libraries, nothing of this repo; a settlement that the
broker signs now (with the badge.blue ``$sig``) verifies from the network alone, including the
``sync.getRecord`` proof that it is in the broker's repo; a record signed the legacy way by the same
key in the broker's repo verifies too; a copy in another repo, a tampered record and an unsigned
record do not. Only this test's own accounts and records are looked at (the AppView fixture is
shared by the session); the extra records go to a ``com.example.*`` collection that the AppView
does not index.
"""

from __future__ import annotations

import ast
import asyncio
import os
import subprocess
import sys
from pathlib import Path

from core.lexicons import from_json, to_json
from core.publish import PdsClient, tip
from payments import attest
from tests.conftest import eventually
from tests.test_e2e import ok, publish_wav
from tests.test_payments_e2e import balance, buy_credit

SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "examples" / "verify_record.py"
#: The only top-level modules the script may import: the standard library and public packages.
ALLOWED = {"__future__", "argparse", "base64", "io", "sys", "typing", "urllib", "cbrrr", "httpx", "atmst",
           "atproto_crypto"}
COPY = "com.example.openmusic.signedCopy"


def test_the_script_imports_nothing_of_ours():
    tree = ast.parse(SCRIPT.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= ALLOWED, names - ALLOWED


async def run_script(*args: str) -> tuple[int, str]:
    """Run the script in a fresh interpreter, outside the repo (cwd a temp dir, no PYTHONPATH). In a
    thread: it fetches our did:web document from the AppView served by this event loop."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, str(SCRIPT), *args], capture_output=True,
                                   text=True, timeout=120, env=env, cwd="/tmp")
    return proc.returncode, proc.stdout + proc.stderr


async def test_stranger_verifies_a_live_settlement(paid_appview, make_client, tmp_path, localstripe, net):
    rt = paid_appview
    artist, fan = make_client("vrartist"), make_client("vrfan")
    song = publish_wav(artist, tmp_path, 77, "Verified Song")
    await eventually(lambda: ok(rt, "fm.openmusic.catalog.getTrack", uri=song.uri))
    await buy_credit(rt, localstripe, fan, 500)

    async def credited():
        return (await balance(rt, fan))["credit"] == 500
    await eventually(credited)
    paid = tip(fan, artist.did, 150, track=song)

    async def settled():
        body = await ok(rt, "fm.openmusic.payment.getTips", artist=artist.did)
        return [t["settlement"] for t in body["tips"] if t["uri"] == paid.uri and t.get("settlement")]
    settlement = (await eventually(settled, timeout=30))[0]
    assert settlement["status"] == "settled"
    broker_did = rt.payments.broker.did
    entry = settlement["record"]["signatures"][0]
    assert "cid" in entry  # signed with the scheme's $sig

    plc = ("--plc-url", net.plc_url)
    code, out = await run_script(settlement["uri"], *plc)
    assert code == 0, out
    assert out.rstrip().endswith("VERIFIED") and "NOT VERIFIED" not in out
    assert f"is signed by {broker_did}#atproto and its tree holds {settlement['cid']}" in out
    assert f"verifies (badge.blue $sig; attestation CID {entry['cid']})" in out

    # A record signed the legacy way ($sig of $type #sigMeta, no `cid`) by the broker's key, in its repo.
    broker = await asyncio.to_thread(PdsClient, net.pds_url, rt.settings.broker_handle, rt.settings.broker_password)
    body = {k: v for k, v in from_json(settlement["record"]).items() if k != "signatures"} | {"$type": COPY}
    key_id = rt.payments.signer.key_id
    legacy_cid = attest.content_cid(body, attest.legacy_sig(broker_did, key_id))
    legacy = body | {"signatures": [{"$type": attest.SIG_TYPE, "key": key_id,
                                     "signature": rt.payments.signer.sign_cid(legacy_cid)}]}

    def put(client: PdsClient, rkey: str, record: dict) -> str:
        out = client._call("POST", "com.atproto.repo.putRecord", json={
            "repo": client.did, "collection": COPY, "rkey": rkey, "record": to_json(record)})
        return out["uri"]
    legacy_uri = await asyncio.to_thread(put, broker, "legacy", legacy)
    code, out = await run_script(legacy_uri, *plc)
    assert code == 0, out
    assert f"verifies (legacy $sig; attestation CID {attest.cid_string(legacy_cid)})" in out

    # The same record copied into the fan's repo, or altered in the broker's, does not verify.
    copy_uri = await asyncio.to_thread(put, fan, "copy", legacy)
    code, out = await run_script(copy_uri, *plc)
    assert code == 1 and f"NOT VERIFIED: no signature verifies: {key_id.split('#')[0]}'s DID document does not " \
                         f"name at://{fan.did}" in out, out
    tampered_uri = await asyncio.to_thread(put, broker, "tampered", legacy | {"amount": 15000})
    code, out = await run_script(tampered_uri, *plc)
    assert code == 1 and f"the signature by {key_id} does not verify" in out, out
    new = rt.payments.signer.sign(body, broker_did)
    wrong_cid = {**new, "signatures": [{**new["signatures"][0], "cid": attest.cid_string(legacy_cid)}]}
    code, out = await run_script(await asyncio.to_thread(put, broker, "wrongcid", wrong_cid), *plc)
    assert code == 1 and "is not the CID rebuilt" in out, out

    # An unsigned record (the tip itself) does not verify either; a record that does not exist neither.
    code, out = await run_script(paid.uri, *plc)
    assert code == 1 and "NOT VERIFIED: the record has no signatures" in out, out
    code, out = await run_script(f"at://{broker_did}/{COPY}/missing", *plc)
    assert code == 1 and "NOT VERIFIED: getRecord answered 400" in out, out
