#!/usr/bin/env python3
"""Verify an Open Music broker record (settlement, subscription or payout) as a stranger would.

Nothing here comes from the Open Music code base: only public libraries (httpx, cbrrr, atmst and the
atproto SDK's ``atproto_crypto``; ``pip install httpx cbrrr atmst atproto``) and the network.

    python verify_record.py at://did:plc:.../fm.openmusic.payment.settlement/<rkey>
    python verify_record.py AT-URI --plc-url http://localhost:2582     # a local network

Steps (docs/verifying-records.md explains each):

1. resolve the repo's DID document (PLC directory, or did:web) and find its PDS;
2. fetch the record with ``com.atproto.repo.getRecord`` and check that its bytes hash to the CID
   the PDS gives;
3. prove it is in the repo: ``com.atproto.sync.getRecord`` returns the signed commit and the
   Merkle search tree path to the record; check the commit's signature with the repo's ``#atproto``
   key and that the path leads to that CID;
4. check its inline signatures (badge.blue CID-first attestations): resolve each ``key`` (a DID URL)
   to a public key in the signer's DID document, which must be the repo's own or name
   ``at://<repo DID>`` in ``alsoKnownAs``; rebuild the attestation CID; check the ECDSA signature.

Prints one line per check and ``VERIFIED`` (exit 0) or ``NOT VERIFIED: <why>`` (exit 1).
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
from typing import Any
from urllib.parse import quote

import cbrrr
import httpx
from atmst.blockstore.car_file import ReadOnlyCARBlockStore
from atmst.mst.node_store import NodeStore
from atmst.mst.node_walker import NodeWalker
from atproto_crypto.did import get_did_key
from atproto_crypto.verify import verify_signature

#: The ``$type`` of the ``$sig`` that Open Music's legacy signatures (entries without ``cid``) used.
LEGACY_SIG_TYPE = "fm.openmusic.payment.defs#sigMeta"


class NotVerified(Exception):
    """A check failed; the message says which."""


# --- The attestation itself: pure functions, no network ---------------------------------------------

def from_json(value: Any) -> Any:
    """atproto JSON (``{"$link": ...}``, ``{"$bytes": ...}``) -> the data model DAG-CBOR encodes."""
    if isinstance(value, dict):
        if set(value) == {"$link"}:
            return cbrrr.CID.decode(value["$link"])
        if set(value) == {"$bytes"}:
            return base64.b64decode(value["$bytes"] + "=" * (-len(value["$bytes"]) % 4))
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def record_cid(record: dict[str, Any]) -> str:
    """The CID of a record block: CIDv1, dag-cbor, sha2-256 of its DAG-CBOR encoding."""
    return cbrrr.CID.cidv1_dag_cbor_sha256_32_from(cbrrr.encode_dag_cbor(record)).encode()


def sig_object(entry: dict[str, Any], repository: str) -> dict[str, Any]:
    """The ``$sig`` for one inline signature entry. badge.blue: the entry without ``signature`` and
    ``cid``, plus ``repository``. Open Music's legacy entries (no ``cid``) used
    ``{"$type": LEGACY_SIG_TYPE, "repository", "key"}`` instead."""
    if "cid" not in entry:
        return {"$type": LEGACY_SIG_TYPE, "repository": repository, "key": entry["key"]}
    sig = {k: v for k, v in entry.items() if k not in ("signature", "cid")}
    sig["repository"] = repository
    return sig


def attestation_cid(record: dict[str, Any], entry: dict[str, Any], repository: str) -> bytes:
    """The 36 binary CID bytes that ``entry`` signs: CIDv1 (dag-cbor, sha2-256) of the record without
    ``signatures`` and with ``$sig``."""
    body = {k: v for k, v in record.items() if k != "signatures"}
    body["$sig"] = sig_object(entry, repository)
    return bytes(cbrrr.CID.cidv1_dag_cbor_sha256_32_from(cbrrr.encode_dag_cbor(body)))


def signature_ok(did_key: str, cid: bytes, signature: bytes) -> bool:
    """ECDSA (k256 or p256) over SHA-256 of ``cid``; 64 bytes r||s; high-S refused."""
    try:
        return len(signature) == 64 and verify_signature(did_key, cid, signature)
    except Exception:  # an unsupported key type or a malformed key
        return False


# --- The network ---------------------------------------------------------------------------------

def did_document(http: httpx.Client, did: str, plc_url: str) -> dict[str, Any]:
    """A DID document: did:plc from the PLC directory, did:web from ``/.well-known/did.json`` (http
    only for localhost, as atproto allows for development)."""
    if did.startswith("did:plc:"):
        url = f"{plc_url.rstrip('/')}/{quote(did)}"
    elif did.startswith("did:web:"):
        host = did[len("did:web:"):].replace("%3A", ":").replace("%3a", ":")
        scheme = "http" if host.split(":")[0] in ("localhost", "127.0.0.1") else "https"
        url = f"{scheme}://{host}/.well-known/did.json"
    else:
        raise NotVerified(f"unsupported DID method: {did}")
    resp = http.get(url)
    if resp.status_code != 200:
        raise NotVerified(f"{url} answered {resp.status_code}")
    doc = resp.json()
    if doc.get("id") != did:
        raise NotVerified(f"{url} describes {doc.get('id')!r}, not {did}")
    return doc


def public_keys(doc: dict[str, Any]) -> dict[str, str]:
    """{absolute key id: did:key} of a DID document's verification methods."""
    out = {}
    for vm in doc.get("verificationMethod") or []:
        key_id = vm.get("id", "")
        key_id = doc["id"] + key_id if key_id.startswith("#") else key_id
        did_key = get_did_key(vm.get("type", ""), vm.get("publicKeyMultibase", ""))
        if did_key:
            out[key_id] = did_key
    return out


def pds_of(doc: dict[str, Any]) -> str:
    for service in doc.get("service") or []:
        if service.get("id") in ("#atproto_pds", f"{doc['id']}#atproto_pds"):
            return service["serviceEndpoint"]
    raise NotVerified(f"{doc['id']} names no PDS")


def repo_proof(http: httpx.Client, pds: str, doc: dict[str, Any], collection: str, rkey: str) -> tuple[str, str]:
    """Check that the repo's current signed commit contains ``collection/rkey``. Returns (record CID,
    commit rev)."""
    did = doc["id"]
    resp = http.get(f"{pds}/xrpc/com.atproto.sync.getRecord", params={"did": did, "collection": collection, "rkey": rkey})
    if resp.status_code != 200:
        raise NotVerified(f"sync.getRecord answered {resp.status_code}")
    blocks = ReadOnlyCARBlockStore(io.BytesIO(resp.content))  # checks every block's hash on read
    commit = cbrrr.decode_dag_cbor(blocks.get_block(bytes(blocks.car_root)))
    if commit.get("did") != did:
        raise NotVerified(f"the commit is of {commit.get('did')}, not {did}")
    atproto_key = public_keys(doc).get(f"{did}#atproto")
    unsigned = cbrrr.encode_dag_cbor({k: v for k, v in commit.items() if k != "sig"})
    if not atproto_key or not signature_ok(atproto_key, unsigned, commit.get("sig", b"")):
        raise NotVerified("the commit's signature does not verify with the repo's #atproto key")
    try:
        found = NodeWalker(NodeStore(blocks), commit["data"]).find_rpath(f"{collection}/{rkey}")
    except KeyError as exc:
        raise NotVerified("the proof lacks MST blocks") from exc
    if found is None:
        raise NotVerified(f"{collection}/{rkey} is not in the repo's current commit")
    return found.encode(), commit["rev"]


def verify(uri: str, plc_url: str, pds_url: str | None = None, proof: bool = True) -> list[str]:
    """The checks that passed, one line each. Raises ``NotVerified`` at the first that fails."""
    if not uri.startswith("at://") or uri.count("/") != 4:
        raise NotVerified(f"{uri} is not an at://<did>/<collection>/<rkey> URI")
    repo, collection, rkey = uri[len("at://"):].split("/")
    passed = []
    with httpx.Client(timeout=15) as http:
        doc = did_document(http, repo, plc_url)
        pds = (pds_url or pds_of(doc)).rstrip("/")
        resp = http.get(f"{pds}/xrpc/com.atproto.repo.getRecord",
                        params={"repo": repo, "collection": collection, "rkey": rkey})
        if resp.status_code != 200:
            raise NotVerified(f"getRecord answered {resp.status_code}")
        got = resp.json()
        record = from_json(got["value"])
        if record_cid(record) != got.get("cid"):
            raise NotVerified(f"the record's bytes hash to {record_cid(record)}, not the CID {got.get('cid')} served")
        passed.append(f"fetched {uri} from {pds}; its DAG-CBOR hashes to the CID served, {got['cid']}")
        if proof:
            cid, rev = repo_proof(http, pds, doc, collection, rkey)
            if cid != got["cid"]:
                raise NotVerified(f"the repo holds {cid} at that path, not {got['cid']}")
            passed.append(f"in the repo: commit rev {rev} is signed by {repo}#atproto and its tree holds {cid} there")
        entries = record.get("signatures") or []
        if not entries:
            raise NotVerified("the record has no signatures")
        why = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("signature"), bytes) \
                    or not isinstance(entry.get("key"), str) or "#" not in entry["key"]:
                why.append("an entry that is not an inline signature (skipped)")
                continue
            signer = entry["key"].split("#")[0]
            signer_doc = did_document(http, signer, plc_url)
            if signer != repo and f"at://{repo}" not in (signer_doc.get("alsoKnownAs") or []):
                why.append(f"{signer}'s DID document does not name at://{repo}")
                continue
            did_key = public_keys(signer_doc).get(entry["key"])
            if did_key is None:
                why.append(f"{signer}'s DID document has no key {entry['key']}")
                continue
            cid = attestation_cid(record, entry, repo)
            if "cid" in entry and entry["cid"] != cbrrr.CID(cid).encode():
                why.append(f"the entry's cid {entry['cid']} is not the CID rebuilt, {cbrrr.CID(cid).encode()}")
                continue
            if not signature_ok(did_key, cid, entry["signature"]):
                why.append(f"the signature by {entry['key']} does not verify")
                continue
            form = "badge.blue $sig" if "cid" in entry else "legacy $sig"
            passed.append(f"signature by {entry['key']} verifies ({form}; attestation CID {cbrrr.CID(cid).encode()}); "
                          f"{signer}'s DID document speaks for at://{repo}")
            return passed
        raise NotVerified("no signature verifies: " + "; ".join(why))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("uri", metavar="AT-URI", help="at://<repo DID>/<collection>/<rkey>")
    parser.add_argument("--plc-url", default="https://plc.directory", help="PLC directory (default: %(default)s)")
    parser.add_argument("--pds-url", help="the repo's PDS (default: the one its DID document names)")
    parser.add_argument("--no-repo-proof", action="store_true", help="skip the sync.getRecord proof")
    args = parser.parse_args(argv)
    try:
        lines = verify(args.uri, args.plc_url, args.pds_url, proof=not args.no_repo_proof)
    except (NotVerified, httpx.HTTPError, ValueError, KeyError) as exc:
        print(f"NOT VERIFIED: {exc}")
        return 1
    for line in lines:
        print(f"ok  {line}")
    print("VERIFIED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
