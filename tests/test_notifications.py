"""Notifications (``appview.notifications``, ``fm.openmusic.notification.*``, issue 13).

Units on a real SQLite index fed with decoded events (``tests.test_indexer_units``' ``env``). ME
follows ART on Jan 5. ART then publishes: a track dated Jan 1 (before the follow: no notification),
a track on Jan 6 (a release), an album on Jan 7 with a track in it (one release: the album). FAN0
follows ME on Jan 8; FAN1 on Jan 9, then deactivates (not shown). ME follows itself and publishes a
track (never notifies itself; FAN0, who follows ME, gets it). Tips to ME: FAN2's, settled and verified, naming ME's track (shown at
the time its settlement was indexed); FAN3's settled then refunded; FAN4's settlement not verified;
FAN5's verified settlement says failed: none of those three is shown. So ME has, newest first:
tip (FAN2), follow (FAN0), release (album), release (track); pages of one give each once; the
reasons filter and seenAt work; updateSeen moves only forward and never past the clock; the unread
count follows it and stops at 30 ("30+").

Over HTTP (the real Starlette app of a ``Runtime``, service-auth JWTs signed by the unit signer of
``tests.test_auth_units``): no token is 401 ``AuthRequired``, a token for another method 401
``InvalidToken``, a GET of updateSeen 405, a bad body 400; a good token lists the caller's own
notifications, updateSeen (POST, JSON) answers 200 with no body and the count follows it.

End to end (the reference PDS): a PDS-minted service-auth JWT; an artist gets a follow notification
when a listener follows, and the listener a release notification when the artist publishes after."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest

from appview import notifications as notes
from appview.app import create_app
from appview.xrpc import XrpcError, validate_params
from core.config import Settings
from core.lexicons import ALBUM, FOLLOW, TIP, TRACK, validator
from firehose.events import AccountEvent
from openmusic.runtime import Runtime
from payments.auth import ServiceAuth
from tests.conftest import eventually
from tests.records import DID as ART
from tests.records import LISTENER as ME
from tests.records import track
from tests.test_auth_units import DID_KEY, jwt
from tests.test_indexer_units import commit, create, env, rkey  # noqa: F401  (env: a fixture)

FANS = [f"did:plc:fanaaaaaaaa{rkey(i)}" for i in range(40)]  # valid did:plc (base32): tokens name them
SERVICE = "did:web:music.example"
OLD, NEW = f"at://{ART}/{TRACK}/{rkey(1)}", f"at://{ART}/{TRACK}/{rkey(2)}"
RECORD, IN_RECORD = f"at://{ART}/{ALBUM}/{rkey(3)}", f"at://{ART}/{TRACK}/{rkey(4)}"
MINE = f"at://{ME}/{TRACK}/{rkey(5)}"


def day(d: int, hour: int = 0) -> str:
    return f"2026-01-{d:02d}T{hour:02d}:00:00.000Z"


def follow(subject: str, d: int) -> dict:
    return {"$type": FOLLOW, "subject": subject, "createdAt": day(d)}


def tip(d: int, track_uri: str | None = None) -> dict:
    rec = {"$type": TIP, "subject": ME, "amount": 300, "currency": "USD", "createdAt": day(d)}
    if track_uri:
        rec["track"] = {"uri": track_uri, "cid": "bafyreia"}
    return rec


async def add_actors(views, dids: list[str]) -> None:
    for did in dids:
        await views.db.execute("INSERT OR IGNORE INTO actor (did, handle, handle_verified, resolved_at) "
                               "VALUES (?,?,1,?)", (did, f"fan{did[-2:]}.test", time.time()))
    await views.db.commit()


def settle(path: str, payer: str, n: int, status: str, indexed_at: str, verified: int | None = 1) -> None:
    """What a trusted broker's settlement of ``payer``'s tip ``rkey(n)`` leaves in the index."""
    tip_uri = f"at://{payer}/{TIP}/{rkey(n)}"
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO settlement (uri, did, rkey, cid, tip_uri, tip_cid, payer, subject, status, amount, currency, "
                 "recipients, settled_at, verified, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,'[]',?,?,?)",
                 (f"at://did:plc:broker/fm.openmusic.payment.settlement/{status}{payer[-2:]}", "did:plc:broker", status + payer[-2:],
                  "bafyreia", tip_uri, "bafyreia", payer, ME, status, 300, "USD", indexed_at, verified, indexed_at))
    conn.commit()
    conn.close()


async def example(ix, views, path: str) -> None:
    """The module docstring's index."""
    await add_actors(views, FANS)
    await ix.apply([
        commit(1, ME, 1, create(FOLLOW, rkey(10), follow(ART, 5))),
        commit(2, ART, 1, create(TRACK, rkey(1), track("Old One", createdAt=day(1))),
               create(TRACK, rkey(2), track("New One", createdAt=day(6))),
               create(ALBUM, rkey(3), {"$type": ALBUM, "title": "The Record", "createdAt": day(7),
                                       "tracks": [{"uri": IN_RECORD, "cid": "bafyreia"}]}),
               create(TRACK, rkey(4), track("On The Record", createdAt=day(7),
                                            album={"uri": RECORD, "cid": "bafyreia"}))),
        commit(3, FANS[0], 1, create(FOLLOW, rkey(10), follow(ME, 8))),
        commit(4, FANS[1], 1, create(FOLLOW, rkey(10), follow(ME, 9))),
        commit(5, ME, 2, create(FOLLOW, rkey(11), follow(ME, 10)), create(TRACK, rkey(5), track("Mine", createdAt=day(11)))),
        commit(6, FANS[2], 1, create(TIP, rkey(20), tip(12, MINE))),
        commit(7, FANS[3], 1, create(TIP, rkey(20), tip(12))),
        commit(8, FANS[4], 1, create(TIP, rkey(20), tip(12))),
        commit(9, FANS[5], 1, create(TIP, rkey(20), tip(12))),
        AccountEvent(seq=10, did=FANS[1], active=False, status="deactivated", time=""),
    ], 10)
    settle(path, FANS[2], 20, "settled", day(12, 1))
    settle(path, FANS[3], 20, "settled", day(12, 2))
    settle(path, FANS[3], 20, "refunded", day(12, 3))
    settle(path, FANS[4], 20, "settled", day(12, 4), verified=None)
    settle(path, FANS[5], 20, "failed", day(12, 5))


async def listing(views, did: str = ME, **params) -> dict:
    nsid = notes.LIST
    pairs = [(k, str(v)) for k, v in params.items() if v is not None and not isinstance(v, list)]
    pairs += [(k, item) for k, v in params.items() if isinstance(v, list) for item in v]
    out = await notes.list_notifications(views, did, validate_params(nsid, pairs))
    validator().validate(nsid, "output", out)
    return out


async def test_the_callers_notifications_newest_first(env):  # noqa: F811
    ix, views, path = env
    await example(ix, views, path)
    got = await listing(views)
    assert [(n["reason"], n["uri"], n["author"]["did"]) for n in got["notifications"]] == [
        ("tip", f"at://{FANS[2]}/{TIP}/{rkey(20)}", FANS[2]),
        ("follow", f"at://{FANS[0]}/{FOLLOW}/{rkey(10)}", FANS[0]),
        ("release", RECORD, ART),
        ("release", NEW, ART)]
    tip_note, _, album_note, track_note = got["notifications"]
    assert tip_note["indexedAt"] == day(12, 1) and tip_note["reasonSubject"] == MINE
    assert tip_note["track"]["title"] == "Mine" and tip_note["record"]["amount"] == 300
    assert album_note["record"]["title"] == "The Record" and "track" not in album_note
    assert track_note["track"]["uri"] == NEW and track_note["indexedAt"] == day(6)
    assert not any(n["isRead"] for n in got["notifications"]) and "seenAt" not in got and "cursor" not in got
    # Pages of one give each once, in the same order.
    seen, cursor = [], None
    while True:
        page = await listing(views, limit=1, cursor=cursor)
        seen += [n["uri"] for n in page["notifications"]]
        cursor = page.get("cursor")
        if not cursor:
            break
    assert seen == [n["uri"] for n in got["notifications"]]
    # Filters by reason; isRead against a given seenAt.
    assert [n["reason"] for n in (await listing(views, reasons=["follow", "tip"]))["notifications"]] == ["tip", "follow"]
    marked = await listing(views, seenAt=day(7, 12))
    assert [n["isRead"] for n in marked["notifications"]] == [False, False, True, True]
    assert marked["seenAt"] == day(7, 12)
    # Someone else's notifications are their own: ART has ME's follow, FAN0 ME's track (after its follow).
    assert [(n["reason"], n["author"]["did"]) for n in (await listing(views, ART))["notifications"]] == [("follow", ME)]
    assert [(n["reason"], n["uri"]) for n in (await listing(views, FANS[0]))["notifications"]] == [("release", MINE)]
    assert (await listing(views, FANS[2]))["notifications"] == []


async def test_seen_time_and_the_unread_count(env):  # noqa: F811
    ix, views, path = env
    await example(ix, views, path)
    assert await notes.unread_count(views, ME) == {"count": 4}
    assert await notes.seen_time(views, ME) is None
    stored = await notes.update_seen(views.db, ME, "2026-01-07T13:00:00+01:00")  # a zone: stored in UTC
    assert stored == day(7, 12) == await notes.seen_time(views, ME)
    assert await notes.unread_count(views, ME) == {"count": 2}
    got = await listing(views)
    assert got["seenAt"] == day(7, 12) and [n["isRead"] for n in got["notifications"]] == [False, False, True, True]
    # Only forward: an older time changes nothing; a time past the clock is taken as now.
    assert await notes.update_seen(views.db, ME, day(1)) == day(7, 12)
    assert await notes.update_seen(views.db, ME, "2099-01-01T00:00:00Z", now="2026-02-01T00:00:00.000Z") == \
        "2026-02-01T00:00:00.000Z"
    assert await notes.unread_count(views, ME) == {"count": 0}
    assert await notes.unread_count(views, ME, {"seenAt": day(8, 12)}) == {"count": 1}
    with pytest.raises(XrpcError) as bad:
        await notes.update_seen(views.db, ME, "yesterday")
    assert bad.value.status == 400
    # More than 30 new followers: the count stops at 30, capped.
    await ix.apply([commit(100 + i, did, 2, create(FOLLOW, rkey(30), {**follow(ME, 1), "createdAt": "2026-03-01T00:00:00.000Z"})) for i, did in enumerate(FANS[6:40])],
                   200)
    assert await notes.unread_count(views, ME) == {"count": 30, "capped": True}
    validator().validate(notes.UNREAD, "output", {"count": 30, "capped": True})
    assert len((await listing(views, limit=100))["notifications"]) == 34 + 4


# --- over HTTP, service auth -----------------------------------------------------------------------------

@pytest.fixture
async def http(env, tmp_path):  # noqa: F811
    ix, views, path = env
    await example(ix, views, path)
    rt = Runtime(Settings(db_path=path, blob_cache_dir=str(tmp_path / "blobs"), verify_commits=False,
                          log_level="WARNING"))
    await rt.start(firehose=False)

    async def key(did: str, refresh: bool) -> str | None:
        return DID_KEY  # every test account signs with the one test key

    rt.auth = ServiceAuth(SERVICE, key, await rt._connect())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt)), base_url="http://t") as client:
        yield client
    await rt.stop()


def bearer(caller: str, nsid: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt(iss=caller, aud=SERVICE, lxm=nsid, jti=str(time.monotonic_ns()))}


async def test_over_http_with_service_auth(http):
    url = f"/xrpc/{notes.LIST}"
    resp = await http.get(url)
    assert resp.status_code == 401 and resp.json()["error"] == "AuthRequired"
    resp = await http.get(url, headers=bearer(ME, notes.UNREAD))  # a token for another method
    assert resp.status_code == 401 and resp.json()["error"] == "InvalidToken"
    resp = await http.get(url, params={"limit": 2}, headers=bearer(ME, notes.LIST))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    validator().validate(notes.LIST, "output", body)
    assert [n["reason"] for n in body["notifications"]] == ["tip", "follow"] and body["cursor"]
    resp = await http.get(url, params={"cursor": body["cursor"]}, headers=bearer(ME, notes.LIST))
    assert [n["reason"] for n in resp.json()["notifications"]] == ["release", "release"]
    resp = await http.get(url, params={"cursor": "bm90IGEgY3Vyc29y"}, headers=bearer(ME, notes.LIST))
    assert resp.status_code == 400 and resp.json() == {"error": "InvalidRequest", "message": "malformed cursor"}
    resp = await http.get(f"/xrpc/{notes.UNREAD}", headers=bearer(ME, notes.UNREAD))
    assert resp.status_code == 200 and resp.json() == {"count": 4}
    # updateSeen: POST with a JSON body, nothing back; the count follows.
    seen = f"/xrpc/{notes.UPDATE_SEEN}"
    resp = await http.get(seen, headers=bearer(ME, notes.UPDATE_SEEN))
    assert resp.status_code == 405 and resp.json()["error"] == "InvalidRequest"
    resp = await http.post(seen, json={"seenAt": "soon"}, headers=bearer(ME, notes.UPDATE_SEEN))
    assert resp.status_code == 400 and resp.json()["error"] == "InvalidRequest"
    resp = await http.post(seen, content=b"{", headers={**bearer(ME, notes.UPDATE_SEEN), "content-type": "application/json"})
    assert resp.status_code == 400
    resp = await http.post(seen, json={"seenAt": day(8, 12)}, headers=bearer(ME, notes.UPDATE_SEEN))
    assert resp.status_code == 200 and resp.content == b""
    resp = await http.get(f"/xrpc/{notes.UNREAD}", headers=bearer(ME, notes.UNREAD))
    assert resp.json() == {"count": 1}
    # HEAD of a query: the same status, no body.
    resp = await http.head(f"/xrpc/{notes.UNREAD}", headers=bearer(ME, notes.UNREAD))
    assert resp.status_code == 200 and resp.content == b""
    # Another caller sees only its own.
    resp = await http.get(url, headers=bearer(FANS[2], notes.LIST))
    assert resp.status_code == 200 and resp.json()["notifications"] == []


# --- end to end: the reference PDS ------------------------------------------------------------------------

@pytest.mark.network
async def test_follow_and_release_notify_through_a_pds_token(net, make_client, appview, tmp_path):
    from core.publish import publish_profile, publish_track
    from devkit.media import tune_wav

    artist, fan = make_client("notifyartist"), make_client("notifyfan")
    publish_profile(artist, "Notify Artist", roles=["artist"])
    publish_profile(fan, "Notify Fan", roles=["listener"])
    # The shared AppView's did:web names 127.0.0.1, which a PDS refuses as an audience (atproto takes a
    # port only on localhost): for this test it answers as did:web:localhost%3A<port>.
    aud = f"did:web:localhost%3A{appview.settings.port}"
    shared_auth = appview.auth
    appview.auth = ServiceAuth(aud, appview.identity.signing_key, shared_auth.db)
    try:
        await _follow_and_release(appview, artist, fan, aud, tmp_path, publish_track, tune_wav)
    finally:
        appview.auth = shared_auth


async def _follow_and_release(appview, artist, fan, aud: str, tmp_path, publish_track, tune_wav) -> None:

    async def ask(client, nsid: str, **params) -> dict:
        token = client.service_auth(aud, nsid)
        resp = await appview.http_client.get(f"/xrpc/{nsid}", params=params,
                                             headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.text
        return resp.json()

    fan.create_record(FOLLOW, {"subject": artist.did, "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())})

    async def followed():
        got = await ask(artist, notes.LIST)
        return got if got["notifications"] else None
    got = await eventually(followed, timeout=30)
    assert [(n["reason"], n["author"]["did"]) for n in got["notifications"]] == [("follow", fan.did)]
    assert (await ask(artist, notes.UNREAD))["count"] == 1
    time.sleep(0.01)  # the release is created after the follow
    path = tmp_path / "new.wav"
    path.write_bytes(tune_wav(5, seconds=2.0))
    song = publish_track(artist, path, title="Fresh For Followers")

    async def released():
        got = await ask(fan, notes.LIST)
        return got if got["notifications"] else None
    got = await eventually(released, timeout=30)
    assert [(n["reason"], n["uri"], n["track"]["title"]) for n in got["notifications"]] == [
        ("release", song.uri, "Fresh For Followers")]
    token = fan.service_auth(aud, notes.UPDATE_SEEN)
    resp = await appview.http_client.post(f"/xrpc/{notes.UPDATE_SEEN}", json={"seenAt": got["notifications"][0]["indexedAt"]},
                                          headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200
    assert (await ask(fan, notes.UNREAD))["count"] == 0
    assert json.dumps(got)  # plain JSON
