"""The payment broker's background work, in three small loops over the database:

1. ``settle_pending``: tips indexed but not decided -> ``payments.settle.settle_tip`` (one writer
   transaction each: ledger entries + the signed settlement in the outbox);
2. ``publish_pending``: outbox rows -> ``com.atproto.repo.putRecord`` into the broker's repo on its
   PDS (record key derived from the tip, so a retry after a crash rewrites the same record);
3. ``verify_pending`` (``SettlementVerifier``): settlement records indexed from trusted brokers'
   repos -> check the inline signature against the signer's DID document (which must name the
   broker repo in ``alsoKnownAs``) and that the record matches the tip it points at.

Anyone can run (3) with only DID documents and the two records; ``getTips`` shows only settlements
that passed it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from core.db import now_iso
from core.identity import IdentityError, IdentityResolver
from core.lexicons import SETTLEMENT, from_json
from core.publish import PdsClient, PublishError
from payments import attest
from payments.settle import Broker, Policy, pending_tips, settle_tip

if TYPE_CHECKING:
    from indexer.core import Indexer

log = logging.getLogger("openmusic.broker")
#: Seconds between passes of each loop when there is nothing to do.
POLL_S = 0.5
#: Failed publications are retried after min(2**attempts, 300) seconds.
MAX_BACKOFF_S = 300


def did_keys(doc: dict[str, Any]) -> dict[str, str]:
    """Verification methods of a DID document -> {absolute key id: did:key}. Handles ``Multikey``
    and the legacy secp256k1/p256 types (``atproto_crypto.did.get_did_key``); skips others."""
    from atproto_crypto.did import get_did_key

    out = {}
    for vm in doc.get("verificationMethod") or []:
        if not isinstance(vm, dict) or not isinstance(vm.get("publicKeyMultibase"), str):
            continue
        key_id = vm.get("id", "")
        if key_id.startswith("#"):
            key_id = doc["id"] + key_id
        try:
            out[key_id] = get_did_key(vm.get("type", ""), vm["publicKeyMultibase"])
        except Exception:  # unsupported key type or malformed multibase
            continue
    return out


async def broker_keys(record: dict[str, Any], broker_did: str,
                      document: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, str]:
    """{key id: did:key} of the DID documents that sign ``record`` and speak for the broker: the
    broker DID's own, or one naming ``at://<broker_did>`` in ``alsoKnownAs``. ``document(did)``
    fetches a DID document (raising ``IdentityError``)."""
    keys: dict[str, str] = {}
    for sig in record.get("signatures") or []:
        key_id = sig.get("key") if isinstance(sig, dict) else None
        if not isinstance(key_id, str) or "#" not in key_id:
            continue
        signer = key_id.split("#")[0]
        doc = await document(signer)
        if signer == broker_did or f"at://{broker_did}" in (doc.get("alsoKnownAs") or []):
            keys.update(did_keys(doc))
    return keys


async def repeat(*passes: Callable[[], Awaitable[int]], what: str) -> None:
    """Run ``passes`` in turn every ``POLL_S`` seconds until cancelled; a failing pass is logged and
    retried after 5 s, never the end of the loop."""
    while True:
        try:
            for one in passes:
                await one()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; retrying", what)
            await asyncio.sleep(5)
        await asyncio.sleep(POLL_S)


class BrokerWorker:
    """Settles tips and publishes settlements for one broker (``broker``), through ``indexer``'s
    writer. ``login`` = (PDS URL, handle, password) of the broker's repo; ``pds`` an existing session
    on it (a new one is made by ``login`` when it is missing or has failed)."""

    def __init__(self, indexer: Indexer, broker: Broker, policy: Policy, login: tuple[str, str, str],
                 pds: PdsClient | None = None) -> None:
        self.indexer = indexer
        self.broker = broker
        self.policy = policy
        self._login = login
        self._pds = pds
        self._failed_at: dict[str, float] = {}
        self.counters: Counter[str] = Counter()

    def login(self) -> PdsClient:
        """A session on the broker's PDS (blocking; call in a thread). Raises ``PublishError``."""
        if self._pds is None:
            self._pds = PdsClient(*self._login)
        return self._pds

    async def settle_pending(self) -> int:
        """Decide every pending tip. Returns how many were decided."""
        done = 0
        while True:
            uris = await self.indexer.run(lambda: pending_tips(self.indexer.conn, 50))
            if not uris:
                return done
            for uri in uris:
                status = await self.indexer.transact(settle_tip, uri, self.policy, self.broker, now_iso())
                if status:
                    self.counters[f"tips_{status}"] += 1
                    log.info("tip %s: %s", uri, status)
                    done += 1

    async def publish_pending(self) -> int:
        """Write queued settlement records to the broker's repo. Returns how many were published."""
        rows = await self.indexer.sql("SELECT tip_uri, rkey, record, attempts FROM broker_settlement "
                                      "WHERE published_cid IS NULL ORDER BY settled_at LIMIT 50")
        published = 0
        for tip_uri, rkey, record, attempts in rows:
            ok = await self._put(SETTLEMENT, rkey, record, attempts, f"the settlement of {tip_uri}",
                                 "UPDATE broker_settlement SET {} WHERE tip_uri = ?", (tip_uri,))
            published += ok
        return published

    async def publish_outbox(self) -> int:
        """Write queued subscription and payout records (``broker_outbox``) to the broker's repo.
        Returns how many were published."""
        rows = await self.indexer.sql("SELECT collection, rkey, record, attempts FROM broker_outbox "
                                      "WHERE published_cid IS NULL ORDER BY updated_at LIMIT 50")
        published = 0
        for collection, rkey, record, attempts in rows:
            ok = await self._put(collection, rkey, record, attempts, f"{collection}/{rkey}",
                                 "UPDATE broker_outbox SET {} WHERE collection = ? AND rkey = ?", (collection, rkey))
            published += ok
        return published

    async def _put(self, collection: str, rkey: str, record: str, attempts: int, what: str, update: str,
                   where: tuple) -> bool:
        """``putRecord`` one queued record (JSON text) unless it is backing off; then mark its row with
        ``update`` (SQL with ``{}`` for the SET clause, ``where`` its arguments): published (only if
        the row still holds this version), or one more failed attempt. Returns True if published."""
        if attempts and self._waiting(what, attempts):
            return False
        try:
            pds = await asyncio.to_thread(self.login)
            ref = await asyncio.to_thread(pds.put_record, collection, rkey, json.loads(record))
        except PublishError as exc:
            self._pds = None  # the session may have expired: log in again next time
            self._failed_at[what] = time.monotonic()
            self.counters["publish_failures"] += 1
            log.warning("publishing %s failed (attempt %d): %s", what, attempts + 1, exc)
            await self.indexer.sql(update.format("attempts = attempts + 1, last_error = ?"), (str(exc)[:500], *where))
            return False
        await self.indexer.sql(update.format("published_cid = ?, published_at = ?, last_error = NULL") + " AND record = ?",
                               (ref.cid, now_iso(), *where, record))
        self.counters["published"] += 1
        return True

    def _waiting(self, what: str, attempts: int) -> bool:
        failed = self._failed_at.get(what)
        return failed is not None and time.monotonic() - failed < min(2 ** attempts, MAX_BACKOFF_S)

    async def run(self) -> None:
        """Settle and publish until cancelled."""
        await repeat(self.settle_pending, self.publish_pending, self.publish_outbox, what="broker pass")


class SettlementVerifier:
    """Checks indexed settlement records (see the module docstring). Uses ``resolver`` for DID
    documents (cached ``cache_s`` seconds) and ``indexer``'s writer for the result."""

    def __init__(self, indexer: Indexer, resolver: IdentityResolver, cache_s: float = 300.0) -> None:
        self.indexer = indexer
        self.resolver = resolver
        self.cache_s = cache_s
        self._docs: dict[str, tuple[float, dict[str, Any]]] = {}
        self.counters: Counter[str] = Counter()

    async def _doc(self, did: str) -> dict[str, Any]:
        hit = self._docs.get(did)
        if hit and time.monotonic() - hit[0] < self.cache_s:
            return hit[1]
        doc = await self.resolver.document(did)
        self._docs[did] = (time.monotonic(), doc)
        return doc

    async def check(self, broker_did: str, record: dict[str, Any]) -> str | None:
        """None when ``record`` (data model) carries a valid signature by a key of the broker
        (``broker_keys``); otherwise why not. Raises ``IdentityError`` when a document cannot be
        fetched."""
        if attest.verify(record, broker_did, await broker_keys(record, broker_did, self._doc)):
            return None
        return "no signature by a key of the broker verifies"

    async def verify_pending(self) -> int:
        """Verify every unverified settlement. Returns how many were decided."""
        rows = await self.indexer.sql(
            "SELECT s.uri, s.did, s.cid, r.json, t.cid, t.did, t.subject, t.amount, t.currency, s.tip_cid, s.payer, "
            "s.subject, s.amount, s.currency FROM settlement s JOIN record r ON r.uri = s.uri "
            "LEFT JOIN tip t ON t.uri = s.tip_uri WHERE s.verified IS NULL LIMIT 100")
        decided = 0
        for (uri, broker_did, cid, raw, tip_cid, tip_did, tip_subject, tip_amount, tip_currency, s_tip_cid, payer,
             subject, amount, currency) in rows:
            try:
                error = await self.check(broker_did, from_json(json.loads(raw)))
            except IdentityError as exc:
                if exc.transient:
                    continue
                error = f"signer's DID document: {exc}"
            if error is None and tip_cid is not None and (
                    (tip_cid, tip_did, tip_subject, tip_amount, tip_currency.upper())
                    != (s_tip_cid, payer, subject, amount, currency)):
                error = "does not match the tip it points at"
            self.counters["verified" if error is None else "failed"] += 1
            if error:
                log.warning("settlement %s failed verification: %s", uri, error)
            await self.indexer.sql("UPDATE settlement SET verified = ?, verify_error = ? "
                                   "WHERE uri = ? AND cid = ?", (0 if error else 1, error, uri, cid))
            decided += 1
        return decided

    async def run(self) -> None:
        """Verify until cancelled."""
        await repeat(self.verify_pending, what="settlement verification pass")
