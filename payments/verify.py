"""Verify a settlement as a stranger would, from the network alone: no access to our database.

``verify_settlement(uri)`` fetches the settlement record from the broker's PDS
(``com.atproto.repo.getRecord``, the PDS found in the broker's DID document), validates it against
the lexicon, checks its inline signature against the key in the signer's DID document (which must
name the broker repo in ``alsoKnownAs``), fetches the tip from the payer's PDS, and checks that the
two agree (tip CID, payer, artist, amount, currency, record key derived from the tip).
``openmusic verify-settlement AT-URI`` runs it. Every outbound fetch goes through the SSRF guard.

A tip's AT-URI names its settlement only together with the broker: the settlement's record key is
derived from the tip (``settlement_uri(broker, tip_uri)``), and ``verify_settlement(...,
tip_uri=...)`` then also checks that the settlement found is that tip's.
"""

from __future__ import annotations

from typing import Any

import httpx

from core.identity import IdentityResolver
from core.lexicons import SETTLEMENT, TIP, RecordInvalid, from_json, validate_record
from core.netguard import BlockedURL, check_url
from payments import attest
from payments.broker import broker_keys
from payments.settle import settlement_rkey


class NotVerified(Exception):
    """The settlement does not verify; ``str()`` says which check failed."""


def is_tip_uri(uri: str) -> bool:
    """Whether ``uri`` has the shape of a tip record's AT-URI (``at://<did>/fm.openmusic.payment.tip/<rkey>``)."""
    return uri.startswith("at://") and f"/{TIP}/" in uri and uri.count("/") == 4


def settlement_uri(broker: str, tip_uri: str) -> str:
    """The AT-URI at which the broker repo ``broker`` (a DID) keeps the settlement of ``tip_uri``:
    its record key is derived from the tip (``payments.settle.settlement_rkey``)."""
    return f"at://{broker}/{SETTLEMENT}/{settlement_rkey(tip_uri)}"


async def _get_record(resolver: IdentityResolver, http: httpx.AsyncClient, uri: str, allow_private: bool) -> dict[str, Any]:
    did, collection, rkey = uri[len("at://"):].split("/")
    pds = (await resolver.resolve_did(did)).pds
    if not pds:
        raise NotVerified(f"{did} names no PDS in its DID document")
    url = f"{pds.rstrip('/')}/xrpc/com.atproto.repo.getRecord"
    try:
        await check_url(url, allow_private)
    except BlockedURL as exc:
        raise NotVerified(str(exc)) from exc
    resp = await http.get(url, params={"repo": did, "collection": collection, "rkey": rkey}, timeout=15)
    if resp.status_code != 200:
        raise NotVerified(f"{uri}: its PDS answered {resp.status_code}")
    return resp.json()


async def verify_settlement(uri: str, resolver: IdentityResolver, http: httpx.AsyncClient,
                            allow_private: bool = False, tip_uri: str | None = None) -> list[str]:
    """The checks that passed, one line each. Raises ``NotVerified`` at the first that fails, and
    ``IdentityError`` when a DID document cannot be fetched. With ``tip_uri``, the settlement must
    also be the one of that tip."""
    if not uri.startswith("at://") or f"/{SETTLEMENT}/" not in uri or uri.count("/") != 4:
        raise NotVerified(f"{uri} is not an at://<did>/{SETTLEMENT}/<rkey> URI")
    broker = uri[len("at://"):].split("/")[0]
    passed = []
    got = await _get_record(resolver, http, uri, allow_private)
    record = from_json(got["value"])
    try:
        validate_record(SETTLEMENT, record)
    except RecordInvalid as exc:
        raise NotVerified(f"not a valid {SETTLEMENT}: {exc}") from exc
    passed.append(f"fetched from the broker's PDS (record CID {got.get('cid')}) and valid against {SETTLEMENT}")
    found = attest.verified_by(record, broker, await broker_keys(record, broker, resolver.document))
    if not found:
        raise NotVerified("no signature verifies with a key whose DID document names the broker repo")
    key_id, form = found
    passed.append(f"signature by {key_id} verifies ({form} $sig), and that DID document names at://{broker}")
    if tip_uri is not None and record["tip"]["uri"] != tip_uri:
        raise NotVerified(f"{uri} settles {record['tip']['uri']}, not {tip_uri}")
    tip_uri = record["tip"]["uri"]
    if f"/{TIP}/" not in tip_uri or not tip_uri.startswith(f"at://{record['payer']}/"):
        raise NotVerified(f"{tip_uri} is not a tip in the payer's repo")
    if uri.rsplit("/", 1)[1] != settlement_rkey(tip_uri):
        raise NotVerified("the record key is not the one derived from the tip")
    tip = await _get_record(resolver, http, tip_uri, allow_private)
    if tip.get("cid") != record["tip"]["cid"]:
        raise NotVerified(f"the tip's current CID {tip.get('cid')} is not the one settled {record['tip']['cid']}")
    value = tip["value"]
    for name, want in (("subject", record["subject"]), ("amount", record["amount"]), ("currency", record["currency"])):
        if value.get(name) != want:
            raise NotVerified(f"tip {name} {value.get(name)!r} differs from the settlement's {want!r}")
    passed.append(f"tip {tip_uri} (CID {tip['cid']}) matches: {record['amount']} {record['currency']} "
                  f"from {record['payer']} to {record['subject']}")
    if record["status"] == "settled" and sum(r["amount"] for r in record["recipients"]) != record["amount"]:
        raise NotVerified("the recipients' amounts do not add up to the amount")
    passed.append(f"status {record['status']}" + (f" ({record['reason']})" if record.get("reason") else "")
                  + "; recipients: " + (", ".join(f"{r['did']} {r['amount']}" for r in record["recipients"]) or "none"))
    return passed

