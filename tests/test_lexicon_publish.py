"""Our lexicons are published as ``com.atproto.lexicon.schema`` records (Lexicon spec, "Lexicon
Publication and Resolution"): ``openmusic lexicons publish`` run against the reference PDS writes one
record per file, record key its NSID, that anyone reads back with ``com.atproto.repo.getRecord``
equal to the file (plus ``$type``); a second run writes nothing; a changed file updates only its
record; records with no file are reported and deleted only with ``--prune``. The ``_lexicon`` DNS TXT
records printed are one per NSID authority, as the spec's resolution (not hierarchical) needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.lexicon_publish import (
    OUR_LEXICONS,
    SCHEMA,
    authority,
    dns_records,
    publish_lexicons,
    published,
    schema_record,
)
from core.lexicons import LEXICON_DIR, load_documents


def test_authority_is_the_nsid_group_reversed():
    assert authority("fm.openmusic.catalog.track") == "catalog.openmusic.fm"
    assert authority("fm.openmusic.authFull") == "openmusic.fm"
    assert authority("edu.university.dept.lab.blogging.getBlogPost") == "blogging.lab.dept.university.edu"
    for bad in ("track", "fm.openmusic", "fm.openmusic.9track", "fm..x", "fm.openmusic.get-track", ""):
        with pytest.raises(ValueError):
            authority(bad)


def test_dns_records_one_per_authority():
    nsids = [d["id"] for d in load_documents(OUR_LEXICONS)]
    records = dns_records(nsids, "did:plc:abc")
    names = [name for name, _ in records]
    assert names == sorted(set(names)) and len(names) == len({authority(n) for n in nsids})
    assert ("_lexicon.openmusic.fm", "did=did:plc:abc") in records  # fm.openmusic.authFull
    assert ("_lexicon.catalog.openmusic.fm", "did=did:plc:abc") in records
    assert ("_lexicon.payment.openmusic.fm", "did=did:plc:abc") in records
    # the developers' guide lists exactly these records
    import re
    guide = (Path(__file__).resolve().parent.parent / "docs" / "developers.md").read_text()
    assert set(re.findall(r"^\| `(_lexicon\.[a-z.]+)` \| `did=<DID>`", guide, re.M)) == set(names)


def test_schema_record_is_the_document_with_type():
    doc = json.loads((LEXICON_DIR / "fm/openmusic/listen/play.json").read_text())
    record = schema_record(doc)
    assert record == {"$type": SCHEMA, **doc}
    for bad in ({"lexicon": 2, "id": "a.b.c", "defs": {"main": {}}}, {"lexicon": 1, "id": "nope", "defs": {"x": {}}},
                {"lexicon": 1, "id": "a.b.c", "defs": {}},
                {"lexicon": 1, "id": "a.b.c", "defs": {"main": {"type": "integer", "default": 1.5}}}):
        with pytest.raises(ValueError):
            schema_record(bad)


def test_only_our_namespace_is_published():
    ours = load_documents(OUR_LEXICONS)
    assert ours and all(d["id"].startswith("fm.openmusic.") for d in ours)
    with pytest.raises(ValueError, match="namespace"):
        publish_lexicons(None, [{"lexicon": 1, "id": "fm.teal.feed.play", "defs": {"main": {"type": "token"}}}])  # type: ignore[arg-type]


def run_cli(net, handle: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OPENMUSIC_PASSWORD="test-password-1234")
    return subprocess.run([sys.executable, "-m", "openmusic.cli", "lexicons", "publish", "--pds", net.pds_url,
                           "--handle", handle, *extra], env=env, capture_output=True, text=True, timeout=120)


def test_cli_publishes_every_lexicon_once(net, make_client):
    client = make_client("lexauth")
    docs = load_documents(OUR_LEXICONS)
    out = run_cli(net, client.handle)
    assert out.returncode == 0, out.stderr
    created = [line.rsplit("/", 1)[-1] for line in out.stdout.splitlines() if line.startswith("created ")]
    assert sorted(created) == sorted(d["id"] for d in docs)
    assert f'_lexicon.openmusic.fm  TXT  "did={client.did}"' in out.stdout
    assert "test-password-1234" not in out.stdout + out.stderr

    # anyone reads each one back, unauthenticated, equal to its file
    with httpx.Client(base_url=net.pds_url, timeout=30) as http:
        for doc in docs:
            got = http.get("/xrpc/com.atproto.repo.getRecord",
                           params={"repo": client.did, "collection": SCHEMA, "rkey": doc["id"]})
            assert got.status_code == 200, got.text
            assert got.json()["uri"] == f"at://{client.did}/{SCHEMA}/{doc['id']}"
            assert got.json()["value"] == {"$type": SCHEMA, **doc}
    before = {k: cid for k, (_, cid) in published(client).items()}

    again = run_cli(net, client.handle)
    assert again.returncode == 0, again.stderr
    assert not [line for line in again.stdout.splitlines() if line.startswith(("created", "updated"))]
    assert f"{len(docs)} lexicons unchanged, 0 created, 0 updated" in again.stdout
    assert {k: cid for k, (_, cid) in published(client).items()} == before


def test_only_changed_lexicons_are_written_and_stale_ones_pruned_on_request(make_client):
    client = make_client("lexedit")
    docs = load_documents(OUR_LEXICONS)[:3]
    first = publish_lexicons(client, docs)
    assert first.created == sorted(d["id"] for d in docs) and first.changed
    cids = {k: cid for k, (_, cid) in published(client).items()}

    edited = [dict(docs[0], description="A new description."), *docs[1:]]
    dry = publish_lexicons(client, edited, dry_run=True)
    assert dry.updated == [docs[0]["id"]] and published(client)[docs[0]["id"]][1] == cids[docs[0]["id"]]
    second = publish_lexicons(client, edited)
    assert (second.created, second.updated, sorted(second.unchanged)) == ([], [docs[0]["id"]],
                                                                          sorted(d["id"] for d in docs[1:]))
    now = published(client)
    assert now[docs[0]["id"]][0]["description"] == "A new description."
    assert now[docs[0]["id"]][1] != cids[docs[0]["id"]]
    assert all(now[d["id"]][1] == cids[d["id"]] for d in docs[1:])

    kept = publish_lexicons(client, edited[:2])
    assert kept.stale == [docs[2]["id"]] and kept.deleted == [] and docs[2]["id"] in published(client)
    pruned = publish_lexicons(client, edited[:2], prune=True)
    assert pruned.deleted == [docs[2]["id"]] and docs[2]["id"] not in published(client)
