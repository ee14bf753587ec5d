"""Reports, the moderation queue and our own labeler, in units (``appview.moderation``,
``indexer.labeler_issue``; atproto Labels spec, ``com.atproto.moderation.createReport``).

Proves: createReport takes the known reasons (ours included) on an indexed track or account and
refuses unknown reasons, unknown subjects, other collections and too long texts with a 400; the
queue lists open reports by subject, newest first, a page at a time; a takedown hides the track at
once from lookups and search through the label store, closes its reports and writes an audit row
naming them; bringing it back (a negation) shows it again and is audited too; a content label
travels in views; dismissing closes reports without a label; impossible actions are refused. Our
labels are signed so that the consumer's own ``verify_label`` accepts them with the key read from
our DID document (built by ``add_to_document``), and a tampered one fails. Over a real loopback
server: ``queryLabels`` answers the current state with ``sig`` as ``$bytes``; ``subscribeLabels``
replays from a cursor, then goes live, to the production ``LabelConsumer`` (which verifies every
label), and answers a cursor from the future with ``FutureCursor``; createReport without a token
is a 401, with the reporter's JWT the report is stored under the token's issuer, and a token for
another method is refused. The devkit labeler signs with the same production signer. The web app's
Report form gets its subject on the track, album, artist and playlist pages, only signed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from types import SimpleNamespace

import coincurve
import httpx
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from appview import moderation, queries
from appview.moderation import ModerationError, audit_log, create_report, moderate, open_subjects
from appview.views import ViewContext
from appview.xrpc import XrpcError
from core import db
from core.config import Settings
from core.identity import IdentityResolver, IdentityService
from devkit import labeler as devkit_labeler
from firehose.labels import (
    LabelConsumer,
    decode_label_frame,
    labeler_from_document,
    parse_label,
    verify_label,
)
from indexer import labeler_issue
from indexer.core import Indexer
from indexer.labeler_issue import LabelIssuer, add_to_document, load_key
from payments.auth import ServiceAuth
from tests.conftest import eventually
from tests.records import DID, LISTENER, track
from tests.test_auth_units import jwt
from tests.test_indexer_units import TRACK, commit, create, rkey
from tests.test_labels import Recorder

OWN = "did:web:music.example"
T1 = f"at://{DID}/{TRACK}/{rkey(1)}"
T2 = f"at://{DID}/{TRACK}/{rkey(2)}"
SPAM = "com.atproto.moderation.defs#reasonSpam"
COPYRIGHT = "fm.openmusic.moderation.defs#reasonCopyright"
CALLER_KEY = coincurve.PrivateKey()


def ref(uri: str, cid: str = "bafyreia") -> dict:
    return {"$type": "com.atproto.repo.strongRef", "uri": uri, "cid": cid}


@pytest.fixture
async def env(tmp_path):
    """An index with two tracks of DID and two accounts, our labeler, views carrying its labels."""
    path = str(tmp_path / "t.sqlite")
    db.migrate(path)
    conn = await db.connect(path)
    for did in (DID, LISTENER):
        await conn.execute("INSERT INTO actor (did, handle, handle_verified, resolved_at, active) VALUES (?,?,1,?,1)",
                           (did, did.split(":")[-1][:8] + ".test", time.time()))
    settings = Settings(db_path=path, service_did=OWN)
    identity = IdentityService(settings, conn, IdentityResolver(settings, None))
    ix = Indexer(path, "test")
    await ix.open()
    await ix.load_state()
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track("Neon Harbor")),
                           create(TRACK, rkey(2), track("Neon Tide")))], 1)
    issuer = LabelIssuer(await db.connect(path), OWN, coincurve.PrivateKey())
    await issuer.open()
    views = ViewContext(conn, identity, "http://x", labelers=[OWN])
    yield SimpleNamespace(ix=ix, issuer=issuer, views=views, conn=conn, path=path, settings=settings)
    await ix.close()
    await issuer.conn.close()
    await conn.close()


async def titles(views: ViewContext) -> list[str]:
    found = await queries.search_tracks(views, {"q": "neon", "sort": "recent", "limit": 10})
    return sorted(t["title"] for t in found["tracks"])


@pytest.mark.parametrize("body, message", [
    ({"reasonType": "com.atproto.moderation.defs#reasonBoring", "subject": ref(T1)}, "unknown reasonType"),
    ({"reasonType": SPAM, "subject": ref(f"at://{DID}/{TRACK}/3zzzzzzzzzzzz")}, "not indexed"),
    ({"reasonType": SPAM, "subject": ref(f"at://{DID}/app.bsky.feed.post/3kabc")}, "only a track"),
    ({"reasonType": SPAM, "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": "did:plc:nobodynobodynobodynobody"}},
     "not known"),
    ({"reasonType": SPAM, "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": "not a did"}}, "must be a DID"),
    ({"reasonType": SPAM, "subject": {"$type": "app.bsky.feed.defs#postView"}}, "unknown subject type"),
    ({"reasonType": SPAM, "subject": ref(T1), "reason": "x" * 2001}, "longer than"),
    ({"reasonType": SPAM}, "subject must be"),
    (["not", "an", "object"], "must be an object"),
])
async def test_create_report_refuses_bad_input(env, body, message):
    with pytest.raises(XrpcError) as exc:
        await create_report(env.conn, LISTENER, body)
    assert exc.value.status == 400 and exc.value.error == "InvalidRequest" and message in exc.value.message
    cur = await env.conn.execute("SELECT COUNT(*) FROM report")
    assert (await cur.fetchone())[0] == 0


async def test_reports_reach_the_queue_newest_subject_first(env):
    first = await create_report(env.conn, LISTENER, {"reasonType": COPYRIGHT, "subject": ref(T1), "reason": " mine "},
                                now="2026-11-01T10:00:00.000Z")
    assert first["reasonType"] == COPYRIGHT and first["reason"] == "mine" and first["reportedBy"] == LISTENER
    assert first["subject"] == ref(T1) and isinstance(first["id"], int)
    account = await create_report(env.conn, LISTENER, {"reasonType": SPAM, "subject": {"did": DID}},
                                  now="2026-11-01T11:00:00.000Z")
    assert account["subject"] == {"$type": "com.atproto.admin.defs#repoRef", "did": DID} and "reason" not in account
    await create_report(env.conn, DID, {"reasonType": SPAM, "subject": ref(T1)}, now="2026-11-01T12:00:00.000Z")
    page = await open_subjects(env.conn, OWN, limit=1)
    assert [s["subject"]["uri"] for s in page["subjects"]] == [T1]
    item = page["subjects"][0]
    assert item["subject"]["title"] == "Neon Harbor" and item["subject"]["kind"] == "track"
    assert item["subject"]["handle"] == DID.split(":")[-1][:8] + ".test"
    assert [(r["reporter"], r["reasonType"], r["reason"]) for r in item["reports"]] == [
        (DID, SPAM, None), (LISTENER, COPYRIGHT, "mine")]
    rest = await open_subjects(env.conn, OWN, cursor=page["cursor"], limit=1)
    assert [s["subject"]["uri"] for s in rest["subjects"]] == [DID] and "cursor" not in rest
    assert rest["subjects"][0]["subject"]["kind"] == "account"
    with pytest.raises(XrpcError):
        await open_subjects(env.conn, OWN, cursor="garbage!")


async def test_takedown_and_bring_back_are_applied_and_audited(env):
    a = await create_report(env.conn, LISTENER, {"reasonType": COPYRIGHT, "subject": ref(T1)})
    b = await create_report(env.conn, DID, {"reasonType": SPAM, "subject": ref(T1)})
    assert await titles(env.views) == ["Neon Harbor", "Neon Tide"]
    done = await moderate(env.issuer, "did:plc:operatoroperatoroperato", T1, "takedown", note="clear copy")
    assert done["val"] == "!takedown" and done["reports"] == [a["id"], b["id"]] and done["labelSeq"] == 1
    # applied at once to our own index, through the label store
    assert await titles(env.views) == ["Neon Tide"]
    with pytest.raises(XrpcError):
        await queries.get_track(env.views, {"uri": T1})
    assert (await open_subjects(env.conn, OWN))["subjects"] == []
    cur = await env.conn.execute("SELECT status, action_id FROM report ORDER BY id")
    assert [tuple(r) for r in await cur.fetchall()] == [("actioned", done["id"]), ("actioned", done["id"])]
    back = await moderate(env.issuer, "did:plc:operatoroperatoroperato", T1, "negate", "!takedown")
    assert back["reports"] == [] and back["labelSeq"] == 2
    assert await titles(env.views) == ["Neon Harbor", "Neon Tide"]
    log = await audit_log(env.conn)
    assert [(x["action"], x["val"], x["reports"], x["note"]) for x in log] == [
        ("negate", "!takedown", [], None), ("takedown", "!takedown", [a["id"], b["id"]], "clear copy")]
    assert all(x["operator"] == "did:plc:operatoroperatoroperato" and x["at"] for x in log)
    # a label taken back cannot be taken back again
    with pytest.raises(ModerationError):
        await moderate(env.issuer, "did:plc:operatoroperatoroperato", T1, "negate", "!takedown")


async def test_labels_dismissals_and_refusals(env):
    await create_report(env.conn, LISTENER, {"reasonType": "fm.openmusic.moderation.defs#reasonMisleadingAi",
                                             "subject": ref(T2)})
    await moderate(env.issuer, "did:plc:op", T2, "label", "ai-undisclosed")
    got = (await queries.get_track(env.views, {"uri": T2}))["track"]
    assert [(lb["src"], lb["val"]) for lb in got["labels"]] == [(OWN, "ai-undisclosed")]
    report = await create_report(env.conn, LISTENER, {"reasonType": SPAM, "subject": {"did": DID}})
    dismissed = await moderate(env.issuer, "did:plc:op", DID, "dismiss")
    assert dismissed["reports"] == [report["id"]] and dismissed["val"] is None and dismissed["labelSeq"] is None
    cur = await env.conn.execute("SELECT status FROM report WHERE id = ?", (report["id"],))
    assert (await cur.fetchone())[0] == "dismissed"
    for args in [(DID, "dismiss"), (T1, "label", "!nonsense"), (T1, "ban"), ("nothing", "takedown"),
                 (T1, "negate", "porn")]:
        with pytest.raises(ModerationError):
            await moderate(env.issuer, "did:plc:op", *args)
    assert [x["action"] for x in await audit_log(env.conn)] == ["dismiss", "label"]


async def test_issued_labels_verify_with_the_consumers_function(env):
    _seq, label = await env.issuer.issue(T1, "!hide")
    doc = add_to_document({"@context": ["https://www.w3.org/ns/did/v1"], "id": OWN, "service": []}, OWN,
                          env.issuer.key, "https://music.example")
    info = labeler_from_document(OWN, doc)
    assert info.key == env.issuer.did_key and info.endpoint == "https://music.example"
    assert verify_label(parse_label(label), info.key)
    tampered = dict(label, val="!takedown")
    assert not verify_label(parse_label(tampered), info.key)
    assert not verify_label(parse_label(label), labeler_issue.did_key_of(coincurve.PrivateKey()))
    # the devkit labeler signs with the production signer
    assert devkit_labeler.sign_label is labeler_issue.sign_label


def test_load_key_from_hex_or_a_file_made_once(tmp_path):
    key = coincurve.PrivateKey()
    assert load_key(key.secret.hex(), str(tmp_path / "unused")).secret == key.secret
    made = load_key("", str(tmp_path / "k" / "label_key.hex"))
    assert load_key("", str(tmp_path / "k" / "label_key.hex")).secret == made.secret
    assert (tmp_path / "k" / "label_key.hex").stat().st_mode & 0o077 == 0
    with pytest.raises(ValueError):
        load_key("zz", "")


# -- over a real loopback server ---------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(env):
    """Our moderation endpoints on loopback (the routes ``appview.app`` registers), with a reader
    connection and service auth; yields (deps, base URL)."""
    reader = await db.connect(env.path)
    port = _free_port()

    async def signing_key(did: str, fresh: bool) -> str | None:
        return labeler_issue.did_key_of(CALLER_KEY) if did == LISTENER else None
    deps = SimpleNamespace(settings=env.settings, reader=reader, auth=ServiceAuth(OWN, signing_key, reader))

    async def xrpc(request: Request):
        return await moderation.moderation_method(deps, request.path_params["nsid"], request)
    app = Starlette(routes=[*moderation.moderation_routes(deps), Route("/xrpc/{nsid}", xrpc, methods=["GET", "POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield deps, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        await reader.close()


class Docs:
    """A DocumentSource that knows only our did:web document."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc

    async def document(self, did: str) -> dict:
        return self.doc


async def test_query_and_subscribe_labels_over_loopback(env):
    await env.issuer.issue(T1, "!takedown")
    await env.issuer.issue(T2, "porn")
    await env.issuer.issue(T1, "!takedown", neg=True)
    async with serving(env) as (_deps, base), httpx.AsyncClient(base_url=base) as http:
        got = (await http.get("/xrpc/com.atproto.label.queryLabels", params={"uriPatterns": f"at://{DID}/*"})).json()
        assert [(lb["uri"], lb["val"], lb.get("neg", False)) for lb in got["labels"]] == [
            (T2, "porn", False), (T1, "!takedown", True)]
        assert all(lb["src"] == OWN and isinstance(lb["sig"]["$bytes"], str) for lb in got["labels"])
        assert (await http.get("/xrpc/com.atproto.label.queryLabels",
                               params={"uriPatterns": T2, "sources": "did:web:else.example"})).json() == {"labels": []}
        bad = await http.get("/xrpc/com.atproto.label.queryLabels")
        assert bad.status_code == 400 and bad.json()["error"] == "InvalidRequest"
        refused = await http.post("/xrpc/com.atproto.moderation.createReport",
                                  json={"reasonType": SPAM, "subject": ref(T1)})
        assert refused.status_code == 401 and refused.json()["error"] == "AuthRequired"
        # with the reporter's service-auth JWT (the lxm is the method): stored as the token's issuer
        token = jwt(CALLER_KEY, iss=LISTENER, aud=OWN, lxm=moderation.CREATE_REPORT)
        made = await http.post("/xrpc/com.atproto.moderation.createReport", headers={"authorization": f"Bearer {token}"},
                               json={"reasonType": COPYRIGHT, "subject": ref(T2), "reason": "not theirs"})
        assert made.status_code == 200 and made.json()["reportedBy"] == LISTENER and made.json()["reason"] == "not theirs"
        token = jwt(CALLER_KEY, iss=LISTENER, aud=OWN, lxm=moderation.CREATE_REPORT, jti="j2")
        unknown = await http.post("/xrpc/com.atproto.moderation.createReport", headers={"authorization": f"Bearer {token}"},
                                  json={"reasonType": "nonsense", "subject": ref(T2)})
        assert unknown.status_code == 400 and "unknown reasonType" in unknown.json()["message"]
        wrong_method = jwt(CALLER_KEY, iss=LISTENER, aud=OWN, lxm=moderation.QUERY_LABELS, jti="j3")
        assert (await http.post("/xrpc/com.atproto.moderation.createReport", json={},
                                headers={"authorization": f"Bearer {wrong_method}"})).status_code == 401
        cur = await env.conn.execute("SELECT reporter, reason_type, subject FROM report")
        assert [tuple(r) for r in await cur.fetchall()] == [(LISTENER, COPYRIGHT, T2)]

        ws_base = base.replace("http://", "ws://") + "/xrpc/com.atproto.label.subscribeLabels"
        async with websockets.connect(ws_base + "?cursor=99") as ws:
            msg = decode_label_frame(await ws.recv())
            assert msg.error == "FutureCursor"

        # another AppView's consumer, configured with our DID, replays from 0 then follows live
        doc = add_to_document({"id": OWN, "service": []}, OWN, env.issuer.key, base)
        sink = Recorder()
        consumer = LabelConsumer(OWN, Docs(doc), sink, allow_private=True)
        task = asyncio.create_task(consumer.run())
        try:
            await eventually(lambda: _true(sink.cursor == 3))
            await env.issuer.issue(T2, "porn", neg=True)
            await eventually(lambda: _true(sink.cursor == 4))
            assert [(seq, [(lb.uri, lb.val, lb.neg) for lb in labels]) for seq, labels in sink.applied] == [
                (1, [(T1, "!takedown", False)]), (2, [(T2, "porn", False)]), (3, [(T1, "!takedown", True)]),
                (4, [(T2, "porn", True)])]
            assert sink.counts == {}  # every signature verified
        finally:
            consumer.stop()
            await task


async def _true(value: bool) -> bool:
    return value


# -- the web app's Report form: its subject on each page -----------------------------------------------

async def test_report_form_subject_on_each_page():
    from web.moderation import Moderation, subject_path

    class Pages:
        context_providers: list = []

        async def viewer(self, request):
            return (SimpleNamespace(did=LISTENER) if request.signed_in else None), "token"

    templates = SimpleNamespace(globals={}, filters={}, gettext=lambda s: s)
    mod = Moderation(SimpleNamespace(templates=templates), Pages())
    request = SimpleNamespace(signed_in=True, query_params={"reported": "1"}, url=SimpleNamespace(path="/x"))
    track_view, album_view = {"uri": T1, "cid": "bafyt"}, {"uri": f"at://{DID}/fm.openmusic.catalog.album/3k", "cid": "b"}
    got = await mod.provide(request, "track.html", {"track": track_view})
    assert got["report_subject"] == {"uri": T1, "cid": "bafyt"} and got["report_sent"] and got["report_back"] == "/x"
    assert COPYRIGHT in [token for token, _label in got["report_reasons"]]
    assert all(token in moderation.REASONS for token, _label in got["report_reasons"])
    assert (await mod.provide(request, "album.html", {"album": album_view}))["report_subject"]["uri"] == album_view["uri"]
    assert (await mod.provide(request, "artist.html", {"profile": {"did": DID}}))["report_subject"] == {"uri": DID, "cid": None}
    assert (await mod.provide(request, "playlist.html", {"playlist": {"uri": "at://x/p/1", "cid": "c"}}))["report_subject"]
    assert await mod.provide(request, "home.html", {}) == {}
    assert await mod.provide(SimpleNamespace(signed_in=False), "track.html", {"track": track_view}) == {}
    assert subject_path({"uri": T1, "kind": "track"}) == f"/track/{DID}/{rkey(1)}"
    assert subject_path({"uri": DID, "kind": "account", "handle": "a.test"}) == "/artist/a.test"
    assert subject_path({"uri": f"at://{DID}/fm.openmusic.catalog.playlist/3k", "kind": "playlist"}) == f"/playlist/{DID}/3k"
