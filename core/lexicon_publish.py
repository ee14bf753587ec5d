"""Publishing our lexicons on the network (atproto Lexicon spec, "Lexicon Publication and Resolution").

Each lexicon document under ``lexicons/fm/openmusic/`` becomes one ``com.atproto.lexicon.schema``
record in the publishing account's repo: record key = the NSID, record = the document itself
(``lexicon``, ``id``, ``description``, ``defs``) with ``$type`` ``com.atproto.lexicon.schema``.
A resolver finds that repo through a DNS TXT record per NSID *authority* (the NSID without its last
segment, reversed): ``_lexicon.<authority>`` with the value ``did=<DID of the repo>``. Resolution is
not hierarchical, so every group needs its own record: ``fm.openmusic.catalog.track`` resolves
through ``_lexicon.catalog.openmusic.fm``, ``fm.openmusic.authFull`` through
``_lexicon.openmusic.fm`` (``dns_records`` lists them all).

Publishing is idempotent: the repo's ``com.atproto.lexicon.schema`` records are listed first
(``com.atproto.repo.listRecords``), and only documents that are new or differ are written
(``com.atproto.repo.putRecord``, with ``swapRecord`` the CID read so a concurrent change is not
overwritten). Records of our namespace that no longer have a file are reported, and deleted only
when asked (``prune``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.lexicons import LEXICON_DIR, NAMESPACE, RecordInvalid, check_data_model, load_documents
from core.publish import PdsClient, PublishError

#: The record type of a published lexicon (its record key is the NSID).
SCHEMA = "com.atproto.lexicon.schema"
#: atproto NSID syntax (spec "Namespaced Identifiers"): a domain authority of at least two segments
#: and a name that starts with a letter and holds only letters and digits.
_NSID = re.compile(r"^[a-zA-Z](?:[a-zA-Z0-9-]{0,62})?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
                   r"\.[a-zA-Z][a-zA-Z0-9]{0,62}$")
#: Records listed per ``listRecords`` page (the spec's maximum).
PAGE = 100
#: Where our own lexicons live (``lexicons/`` also holds copies of other apps' lexicons, which their
#: authorities publish, not us).
OUR_LEXICONS = LEXICON_DIR / "fm" / "openmusic"


def authority(nsid: str) -> str:
    """The authority domain of ``nsid``: its segments but the last, reversed
    (``fm.openmusic.catalog.track`` -> ``catalog.openmusic.fm``). Raises ``ValueError`` on a bad NSID."""
    if not _NSID.match(nsid) or len(nsid) > 317:
        raise ValueError(f"not an NSID: {nsid[:100]!r}")
    return ".".join(reversed(nsid.split(".")[:-1]))


def dns_records(nsids: list[str], did: str) -> list[tuple[str, str]]:
    """The DNS TXT records that make ``did``'s repo the lexicon authority of ``nsids``: sorted
    ``(name, value)`` pairs, one per authority, ``("_lexicon.catalog.openmusic.fm", "did=<did>")``."""
    return [(f"_lexicon.{name}", f"did={did}") for name in sorted({authority(n) for n in nsids})]


def schema_record(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``com.atproto.lexicon.schema`` record of lexicon document ``doc`` (JSON form): the
    document with ``$type``. Raises ``ValueError`` when ``doc`` is not a version-1 lexicon with a
    valid NSID and ``defs``, or holds values the atproto data model does not allow (floats)."""
    if not isinstance(doc, dict) or doc.get("lexicon") != 1:
        raise ValueError("not a version 1 lexicon document")
    nsid = doc.get("id")
    authority(nsid if isinstance(nsid, str) else "")
    if not isinstance(doc.get("defs"), dict) or not doc["defs"]:
        raise ValueError(f"{nsid}: a lexicon needs at least one definition")
    record = {"$type": SCHEMA, **{k: v for k, v in doc.items() if k != "$type"}}
    try:
        check_data_model(record)
    except RecordInvalid as exc:
        raise ValueError(f"{nsid}: {exc}") from exc
    return record


@dataclass
class PublishReport:
    """What ``publish_lexicons`` did (or, with ``dry_run``, would do), as NSID lists: ``created``,
    ``updated``, ``unchanged``, ``stale`` (records of our namespace with no file; left in place) and
    ``deleted`` (stale ones removed with ``prune``). ``did`` is the repo's, ``dns`` its TXT records."""

    did: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    dns: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when a record was (or would be) written or deleted."""
        return bool(self.created or self.updated or self.deleted)


def published(client: PdsClient) -> dict[str, tuple[dict[str, Any], str]]:
    """The repo's ``com.atproto.lexicon.schema`` records: record key -> (record JSON, CID), every page
    of ``com.atproto.repo.listRecords``. Raises ``PublishError``."""
    out: dict[str, tuple[dict[str, Any], str]] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"repo": client.did, "collection": SCHEMA, "limit": PAGE}
        if cursor:
            params["cursor"] = cursor
        page = client._call("GET", "com.atproto.repo.listRecords", auth=False, params=params)
        for item in page.get("records", []):
            out[item["uri"].rsplit("/", 1)[-1]] = (item["value"], item["cid"])
        cursor = page.get("cursor")
        if not cursor or not page.get("records"):
            return out


def publish_lexicons(client: PdsClient, documents: list[dict[str, Any]] | None = None, *,
                     directory: Path = OUR_LEXICONS, namespace: str = NAMESPACE, prune: bool = False,
                     dry_run: bool = False) -> PublishReport:
    """Write each lexicon document (default: every file under ``directory``) as a
    ``com.atproto.lexicon.schema`` record in ``client``'s repo, record key its NSID, only where the
    record is missing or differs. Records whose key is in ``namespace`` but has no document are
    ``stale``; ``prune`` deletes them. ``dry_run`` reads and compares but writes nothing.

    Returns a ``PublishReport``. Raises ``ValueError`` on a bad document or one outside
    ``namespace`` (before anything is written) and ``PublishError`` when the PDS refuses a call."""
    docs = load_documents(directory) if documents is None else documents
    wanted = {}
    for doc in docs:
        record = schema_record(doc)
        if not record["id"].startswith(namespace):
            raise ValueError(f"{record['id']} is not in our namespace {namespace}*: its own authority publishes it")
        wanted[record["id"]] = record
    have = published(client)
    report = PublishReport(did=client.did, dns=dns_records(sorted(wanted), client.did))
    for nsid, record in sorted(wanted.items()):
        current = have.get(nsid)
        if current is not None and current[0] == record:
            report.unchanged.append(nsid)
            continue
        (report.updated if current else report.created).append(nsid)
        if dry_run:
            continue
        body: dict[str, Any] = {"repo": client.did, "collection": SCHEMA, "rkey": nsid, "record": record}
        if current:
            body["swapRecord"] = current[1]
        client._call("POST", "com.atproto.repo.putRecord", json=body)
    for rkey in sorted(have):
        if rkey.startswith(namespace) and rkey not in wanted:
            report.stale.append(rkey)
            if prune and not dry_run:
                client.delete_record(SCHEMA, rkey)
                report.deleted.append(rkey)
    return report


__all__ = ["OUR_LEXICONS", "SCHEMA", "PublishError", "PublishReport", "authority", "dns_records", "publish_lexicons",
           "published", "schema_record"]
