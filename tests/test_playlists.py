"""Playlists (``fm.openmusic.catalog.playlist``, ``catalog.playlistItem``, ``getPlaylist``,
``getActorPlaylists``; issue 13).

Units on a real SQLite file fed with decoded events (``tests.test_indexer_units``' ``env``): a
playlist's items come back in the owner's order, items naming tracks that are not indexed (never
published, deleted, an album, an inactive artist) are kept but not shown and not counted, and show
up when the track appears; a collaborator's items appear after the owner's (oldest first) only while
the owner lists them, never from a non-collaborator, and disappear with a deactivated collaborator;
an owner deactivated hides the playlist (NotFound / ActorNotFound) and deleted purges it; a replayed
commit changes nothing; updates replace and deletes remove; invalid records (501 items, a blank
title, an item naming no playlist or no track) are rejected and counted; every page of items and of
an account's playlists is covered once, forged cursors are refused, and outputs fit their lexicons.
End to end (the reference PDS + the AppView runtime): a playlist and a collaborator's item written
to two PDS accounts reach ``getPlaylist`` over HTTP in the right order."""

from __future__ import annotations

import sqlite3

import pytest

from appview.playlists import indexed_cid, viewer_items, viewer_playlists
from appview.xrpc import XrpcError
from core.lexicons import ALBUM, PLAYLIST, PLAYLIST_ITEM, TRACK, validator
from firehose.events import AccountEvent, RecordOp
from tests.conftest import eventually
from tests.records import DID, IMAGE, LISTENER, track
from tests.test_indexer_units import commit, create, env, rkey  # noqa: F401  (env: a fixture)
from tests.test_social_records import FANS, add_fans, call

GET = "fm.openmusic.catalog.getPlaylist"
ACTOR = "fm.openmusic.catalog.getActorPlaylists"
MIX = f"at://{LISTENER}/{PLAYLIST}/{rkey(50)}"


def song(i: int) -> str:
    return f"at://{DID}/{TRACK}/{rkey(i)}"


def playlist(*tracks: str, title: str = "Road trip", collaborators: tuple[str, ...] = (), day: int = 1,
             **extra) -> dict:
    rec = {"$type": PLAYLIST, "title": title, "items": [{"track": {"uri": t, "cid": "bafyreia"}} for t in tracks],
           "createdAt": f"2026-01-{day:02d}T00:00:00.000Z", **extra}
    if collaborators:
        rec["collaborators"] = list(collaborators)
    return rec


def item(track_uri: str, day: int, subject: str = MIX) -> dict:
    return {"$type": PLAYLIST_ITEM, "subject": subject, "track": {"uri": track_uri, "cid": "bafyreia"},
            "createdAt": f"2026-01-{day:02d}T00:00:00.000Z"}


def titles(got: dict) -> list[str]:
    return [i["track"]["title"] for i in got["playlist"]["items"]]


def snapshot(path: str) -> dict:
    c = sqlite3.connect(path)
    return {t: c.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
            for t in ("playlist", "playlist_entry", "playlist_collaborator", "playlist_item", "record",
                      "rejected_record")}


async def tracks(ix, n: int, seq: int = 1) -> None:
    await ix.apply([commit(seq, DID, seq, *(create(TRACK, rkey(i), track(f"Song {i}")) for i in range(1, n + 1)))], seq)


async def test_items_in_order_unresolved_kept_but_not_shown(env):  # noqa: F811
    ix, views, path = env
    await tracks(ix, 3)
    album = f"at://{DID}/{ALBUM}/{rkey(40)}"
    await ix.apply([commit(2, LISTENER, 1, create(PLAYLIST, rkey(50), playlist(
        song(3), song(9), song(1), album, song(3), description="  for the drive ")))], 2)
    got = await call(views, GET, uri=MIX)  # validated against the lexicon's output
    pl = got["playlist"]
    assert titles(got) == ["Song 3", "Song 1", "Song 3"] and pl["itemCount"] == 3
    assert [i["position"] for i in pl["items"]] == [0, 2, 4]  # the record's indices, for edits
    assert pl["title"] == "Road trip" and pl["description"] == "for the drive" and pl["creator"]["did"] == LISTENER
    assert all(i["addedBy"]["did"] == LISTENER and "uri" not in i for i in pl["items"])
    # All five entries are stored: the missing track shows once it is published.
    assert sqlite3.connect(path).execute("SELECT count(*) FROM playlist_entry").fetchone() == (5,)
    await ix.apply([commit(3, DID, 2, create(TRACK, rkey(9), track("Song 9")))], 3)
    got = await call(views, GET, uri=MIX)
    assert titles(got) == ["Song 3", "Song 9", "Song 1", "Song 3"] and got["playlist"]["itemCount"] == 4
    # A deleted track and a deactivated artist drop out (and come back with the artist).
    await ix.apply([commit(4, DID, 3, RecordOp("delete", TRACK, rkey(1), None))], 4)
    assert titles(await call(views, GET, uri=MIX)) == ["Song 3", "Song 9", "Song 3"]
    await ix.apply([AccountEvent(seq=5, did=DID, active=False, status="takendown", time="")], 5)
    got = await call(views, GET, uri=MIX)
    assert got["playlist"]["items"] == [] and got["playlist"]["itemCount"] == 0
    await ix.apply([AccountEvent(seq=6, did=DID, active=True, status=None, time="")], 6)
    assert (await call(views, GET, uri=MIX))["playlist"]["itemCount"] == 3
    # An update replaces the items; a delete removes the playlist and its rows.
    await ix.apply([commit(7, LISTENER, 2, RecordOp("update", PLAYLIST, rkey(50), "bafyreic",
                                                      playlist(song(2), title="Renamed")))], 7)
    got = await call(views, GET, uri=MIX)
    assert titles(got) == ["Song 2"] and got["playlist"]["title"] == "Renamed" and got["playlist"]["cid"] == "bafyreic"
    assert "description" not in got["playlist"]
    assert await indexed_cid(views, MIX) == "bafyreic"
    await ix.apply([commit(8, LISTENER, 3, RecordOp("delete", PLAYLIST, rkey(50), None))], 8)
    with pytest.raises(XrpcError) as exc:
        await call(views, GET, uri=MIX)
    assert exc.value.error == "NotFound"
    c = sqlite3.connect(path)
    for table in ("playlist", "playlist_entry"):
        assert c.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    assert await indexed_cid(views, MIX) is None


async def test_collaborators_items_only_while_listed(env):  # noqa: F811
    ix, views, path = env
    await add_fans(views)
    await tracks(ix, 6)
    friend, stranger = FANS[0], FANS[1]
    await ix.apply([commit(2, LISTENER, 1, create(PLAYLIST, rkey(50), playlist(song(1), song(2)))),
                    commit(3, friend, 1, create(PLAYLIST_ITEM, rkey(60), item(song(4), 9)),
                           create(PLAYLIST_ITEM, rkey(61), item(song(3), 5)),
                           create(PLAYLIST_ITEM, rkey(62), item(song(30), 6))),  # a track never published
                    commit(4, stranger, 1, create(PLAYLIST_ITEM, rkey(60), item(song(5), 1)))], 4)
    # Not listed yet: stored, not shown.
    got = await call(views, GET, uri=MIX)
    assert titles(got) == ["Song 1", "Song 2"] and got["playlist"]["collaborators"] == []
    assert sqlite3.connect(path).execute("SELECT count(*) FROM playlist_item").fetchone() == (4,)
    # The owner lists the friend (and themselves, which changes nothing): the friend's items follow, oldest first.
    await ix.apply([commit(5, LISTENER, 2, RecordOp("update", PLAYLIST, rkey(50), "bafyreib", playlist(
        song(1), song(2), collaborators=(friend, LISTENER))))], 5)
    got = await call(views, GET, uri=MIX)
    assert titles(got) == ["Song 1", "Song 2", "Song 3", "Song 4"] and got["playlist"]["itemCount"] == 4
    assert [c["did"] for c in got["playlist"]["collaborators"]] == [friend]
    added = got["playlist"]["items"][2]
    assert added["addedBy"]["did"] == friend and added["uri"] == f"at://{friend}/{PLAYLIST_ITEM}/{rkey(61)}"
    assert "position" not in added
    assert await viewer_playlists(views, friend) == [
        {"uri": MIX, "cid": "bafyreib", "title": "Road trip", "owner": LISTENER, "own": False}]
    assert await viewer_playlists(views, stranger) == []
    assert await viewer_items(views, friend, MIX) == [f"at://{friend}/{PLAYLIST_ITEM}/{rkey(n)}" for n in (61, 62, 60)]
    # The friend deletes an item; the friend deactivated: their items go, and come back.
    await ix.apply([commit(6, friend, 2, RecordOp("delete", PLAYLIST_ITEM, rkey(60), None))], 6)
    assert titles(await call(views, GET, uri=MIX)) == ["Song 1", "Song 2", "Song 3"]
    await ix.apply([AccountEvent(seq=7, did=friend, active=False, status="deactivated", time="")], 7)
    got = await call(views, GET, uri=MIX)
    assert titles(got) == ["Song 1", "Song 2"] and got["playlist"]["collaborators"] == []
    await ix.apply([AccountEvent(seq=8, did=friend, active=True, status=None, time="")], 8)
    assert titles(await call(views, GET, uri=MIX)) == ["Song 1", "Song 2", "Song 3"]
    # Removed from the list: hidden again (the records stay theirs).
    await ix.apply([commit(9, LISTENER, 3, RecordOp("update", PLAYLIST, rkey(50), "bafyreic", playlist(song(1))))], 9)
    got = await call(views, GET, uri=MIX)
    assert titles(got) == ["Song 1"] and got["playlist"]["itemCount"] == 1
    assert await viewer_playlists(views, friend) == []


async def test_owner_lifecycle_and_purge(env):  # noqa: F811
    ix, views, path = env
    await add_fans(views)
    await tracks(ix, 2)
    await ix.apply([commit(2, LISTENER, 1, create(PLAYLIST, rkey(50), playlist(song(1), collaborators=(FANS[0],))),
                           create(PLAYLIST, rkey(51), playlist(song(2), title="Second", day=2))),
                    commit(3, FANS[0], 1, create(PLAYLIST_ITEM, rkey(60), item(song(2), 3)))], 3)
    mine = await call(views, ACTOR, actor=LISTENER)
    assert [p["title"] for p in mine["playlists"]] == ["Second", "Road trip"]
    assert [p["itemCount"] for p in mine["playlists"]] == [1, 2] and "items" not in mine["playlists"][0]
    await ix.apply([AccountEvent(seq=4, did=LISTENER, active=False, status="takendown", time="")], 4)
    with pytest.raises(XrpcError) as exc:
        await call(views, GET, uri=MIX)
    assert exc.value.error == "NotFound"
    with pytest.raises(XrpcError) as exc:
        await call(views, ACTOR, actor=LISTENER)
    assert exc.value.error == "ActorNotFound"
    assert await viewer_playlists(views, FANS[0]) == []
    await ix.apply([AccountEvent(seq=5, did=LISTENER, active=True, status=None, time="")], 5)
    assert (await call(views, GET, uri=MIX))["playlist"]["itemCount"] == 2
    # Deleted: every row of the owner's playlists goes; the collaborator's own item stays theirs.
    await ix.apply([AccountEvent(seq=6, did=LISTENER, active=False, status="deleted", time="")], 6)
    c = sqlite3.connect(path)
    for table in ("playlist", "playlist_entry", "playlist_collaborator"):
        assert c.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    assert c.execute("SELECT did FROM playlist_item").fetchall() == [(FANS[0],)]
    await ix.apply([AccountEvent(seq=7, did=FANS[0], active=False, status="deleted", time="")], 7)
    assert c.execute("SELECT count(*) FROM playlist_item").fetchone() == (0,)


async def test_replay_changes_nothing(env):  # noqa: F811
    ix, views, path = env
    await add_fans(views)
    events = [commit(1, DID, 1, create(TRACK, rkey(1), track())),
              commit(2, LISTENER, 1, create(PLAYLIST, rkey(50), playlist(song(1), song(1), collaborators=(FANS[0],)))),
              commit(3, FANS[0], 1, create(PLAYLIST_ITEM, rkey(60), item(song(1), 3)))]
    await ix.apply(events, 3)
    before = snapshot(path)
    got = await call(views, GET, uri=MIX)
    await ix.apply(events, 3)  # at or below the stored rev: ignored

    def again(conn):  # and the same ops applied once more below the rev check (a resync's rewrite)
        for evt in events[1:]:
            for op in evt.ops:
                ix.apply_op(evt.did, op, evt.rev, "2026-02-01T00:00:00.000Z")
    await ix.transact(again)
    after = snapshot(path)
    for table in ("playlist_entry", "playlist_collaborator", "record", "rejected_record"):
        assert after[table] == before[table] if table != "record" else len(after[table]) == len(before[table]), table
    assert [r[:8] for r in after["playlist"]] == [r[:8] for r in before["playlist"]]
    again_got = await call(views, GET, uri=MIX)
    assert titles(again_got) == titles(got) == ["Neon Harbor"] * 3 and again_got["playlist"]["itemCount"] == 3


async def test_invalid_records_are_rejected_and_counted(env):  # noqa: F811
    ix, views, path = env
    await tracks(ix, 1)
    bad = [create(PLAYLIST, rkey(50), playlist(*[song(1)] * 501)),                    # over the lexicon's 500
           create(PLAYLIST, rkey(51), playlist(song(1), title="   ")),                # a blank title
           create(PLAYLIST, rkey(52), playlist(song(1), collaborators=("nobody",))),  # not a DID
           create(PLAYLIST_ITEM, rkey(60), item(song(1), 1, subject=song(1))),         # names no playlist
           create(PLAYLIST_ITEM, rkey(61), item(f"at://{DID}/{ALBUM}/{rkey(2)}", 1)),  # not a track
           create(PLAYLIST, "self", playlist(song(1)))]                                # not a TID
    good = create(PLAYLIST, rkey(53), playlist(*[song(1)] * 500, title="Full"))
    await ix.apply([commit(2, LISTENER, 1, *bad, good)], 2)
    c = sqlite3.connect(path)
    rejected = {uri.rsplit("/", 1)[1]: reason for uri, reason in c.execute("SELECT uri, reason FROM rejected_record")}
    assert rejected == {rkey(50): "lexicon", rkey(51): "bad_value", rkey(52): "lexicon", rkey(60): "bad_reference",
                        rkey(61): "bad_reference", "self": "bad_rkey"}
    assert sum(ix.rejections.values()) == len(bad)
    assert c.execute("SELECT uri FROM playlist").fetchall() == [(f"at://{LISTENER}/{PLAYLIST}/{rkey(53)}",)]
    assert c.execute("SELECT count(*) FROM playlist_item").fetchone() == (0,)
    full = await call(views, GET, uri=f"at://{LISTENER}/{PLAYLIST}/{rkey(53)}", limit=100)
    assert full["playlist"]["itemCount"] == 500 and len(full["playlist"]["items"]) == 100 and full["cursor"]
    # An edit that makes the playlist invalid removes it (the old version no longer holds).
    await ix.apply([commit(3, LISTENER, 2, RecordOp("update", PLAYLIST, rkey(53), "bafyreic", playlist(title=" ")))], 3)
    assert c.execute("SELECT count(*) FROM playlist").fetchone() == (0,)
    assert c.execute("SELECT count(*) FROM playlist_entry").fetchone() == (0,)


async def test_pages_cover_every_item_once(env):  # noqa: F811
    ix, views, path = env
    await add_fans(views)
    await tracks(ix, 9)
    owner_items = [song(i) for i in (9, 1, 8, 2, 30, 7)]  # song 30 is never published
    events = [commit(2, LISTENER, 1, create(PLAYLIST, rkey(50), playlist(*owner_items, collaborators=tuple(FANS[:3]))),
                     *(create(PLAYLIST, rkey(70 + i), playlist(song(1), title=f"List {i}", day=2 + i)) for i in range(4)))]
    for n, fan in enumerate(FANS[:4]):  # FANS[3] is not a collaborator
        events.append(commit(3 + n, fan, 1, create(PLAYLIST_ITEM, rkey(60), item(song(3 + n), 20 - n)),
                             create(PLAYLIST_ITEM, rkey(61), item(song(3 + n), 10 + n))))
    await ix.apply(events, 10)
    expected = ["Song 9", "Song 1", "Song 8", "Song 2", "Song 7",    # the owner's, in order
                "Song 3", "Song 4", "Song 5", "Song 5", "Song 4", "Song 3"]  # collaborators', oldest first
    for limit in (1, 2, 3, 5, 100):
        seen, cursor, pages = [], None, 0
        while True:
            got = await call(views, GET, uri=MIX, limit=limit, cursor=cursor)
            assert len(got["playlist"]["items"]) <= limit and got["playlist"]["itemCount"] == len(expected)
            seen += titles(got)
            pages += 1
            cursor = got.get("cursor")
            if not cursor:
                break
        assert seen == expected, limit
        assert pages == -(-len(expected) // limit)
    names, cursor = [], None
    while True:
        got = await call(views, ACTOR, actor=LISTENER, limit=2, cursor=cursor)
        names += [p["title"] for p in got["playlists"]]
        if not (cursor := got.get("cursor")):
            break
    assert names == ["List 3", "List 2", "List 1", "List 0", "Road trip"]
    for nsid, params in ((GET, {"uri": MIX}), (ACTOR, {"actor": LISTENER})):
        with pytest.raises(XrpcError) as exc:
            await call(views, nsid, cursor="eyJ4IjoxfQ", **params)
        assert exc.value.error == "InvalidRequest"
    with pytest.raises(XrpcError) as exc:
        await call(views, GET, uri=song(1))
    assert exc.value.error == "InvalidRequest"
    with pytest.raises(XrpcError) as exc:
        await call(views, ACTOR, actor="did:plc:" + "z" * 24)
    assert exc.value.error == "ActorNotFound"
    assert [p["title"] for p in await viewer_playlists(views, LISTENER)] == ["List 3", "List 2", "List 1", "List 0",
                                                                            "Road trip"]


async def test_artwork_is_shown(env):  # noqa: F811
    ix, views, path = env
    art = {"$type": "blob", "ref": IMAGE, "mimeType": "image/png", "size": 10}
    await ix.apply([commit(1, LISTENER, 1, create(PLAYLIST, rkey(50), playlist(artwork=art)))], 1)
    got = await call(views, GET, uri=MIX)
    assert got["playlist"]["artworkUrl"] == f"http://x/image/{LISTENER}/{IMAGE}"
    row = sqlite3.connect(path).execute("SELECT artwork_cid, artwork_mime FROM playlist").fetchone()
    assert row == (str(IMAGE), "image/png")


def test_lexicon_caps_items():
    from core.lexicons import RecordInvalid, validate_record
    validate_record(PLAYLIST, playlist(*[song(1)] * 500))
    with pytest.raises(RecordInvalid):
        validate_record(PLAYLIST, playlist(*[song(1)] * 501))
    with pytest.raises(RecordInvalid):
        validate_record(PLAYLIST, playlist(collaborators=tuple(f"did:plc:{i:024d}" for i in range(51))))
    validator().validate(PLAYLIST_ITEM, "record", item(song(1), 1))


# --- end to end: the reference PDS -----------------------------------------------------------------

@pytest.mark.network
async def test_playlist_and_collaborator_item_from_a_pds(net, make_client, appview, tmp_path):
    from core.publish import publish_profile, publish_track
    from devkit.media import tune_wav

    artist, owner, friend = make_client("plartist"), make_client("plowner"), make_client("plfriend")
    publish_profile(artist, "Playlist Artist", roles=["artist"])
    songs = []
    for i, name in enumerate(("First Light", "Second Wind")):
        path = tmp_path / f"s{i}.wav"
        path.write_bytes(tune_wav(i + 1, seconds=1.0))
        songs.append(publish_track(artist, path, title=name))
    missing = {"uri": f"at://{artist.did}/{TRACK}/{rkey(999)}", "cid": songs[0].cid}
    mix = owner.create_record(PLAYLIST, {
        "title": "Shared mix", "items": [{"track": songs[1].as_dict()}, {"track": missing}],
        "collaborators": [friend.did], "createdAt": "2026-03-01T00:00:00.000Z"})
    friend.create_record(PLAYLIST_ITEM, {"subject": mix.uri, "track": songs[0].as_dict(),
                                         "createdAt": "2026-03-02T00:00:00.000Z"})

    async def full():
        resp = await appview.http_client.get(f"/xrpc/{GET}", params={"uri": mix.uri})
        body = resp.json()
        return body if resp.status_code == 200 and body["playlist"]["itemCount"] == 2 else None
    got = await eventually(full, timeout=30)
    validator().validate(GET, "output", got)
    assert [i["track"]["title"] for i in got["playlist"]["items"]] == ["Second Wind", "First Light"]
    assert got["playlist"]["items"][1]["addedBy"]["did"] == friend.did
    resp = await appview.http_client.get(f"/xrpc/{ACTOR}", params={"actor": owner.did})
    assert resp.status_code == 200 and [p["title"] for p in resp.json()["playlists"]] == ["Shared mix"]
    resp = await appview.http_client.get(f"/xrpc/{GET}", params={"uri": mix.uri, "limit": 0})
    assert resp.status_code == 400 and resp.json()["error"] == "InvalidRequest"


@pytest.mark.network
async def test_demo_playlists_are_indexed(net, make_client, appview, tmp_path):
    """``devkit.demo_playlists.seed_playlists`` writes playlists the AppView indexes and shows, the
    collaborator's items after the owner's."""
    from core.publish import publish_track
    from devkit.demo_playlists import seed_playlists
    from devkit.media import tune_wav

    artist, owner, friend = make_client("pldemoartist"), make_client("pldemoowner"), make_client("pldemofriend")
    songs = []
    for i in range(5):
        path = tmp_path / f"d{i}.wav"
        path.write_bytes(tune_wav(i + 20, seconds=1.0))
        songs.append(publish_track(artist, path, title=f"Demo {i}"))
    drive, quiet = seed_playlists(owner, friend, songs, log=lambda *_: None)

    async def shown(uri: str, count: int):
        resp = await appview.http_client.get(f"/xrpc/{GET}", params={"uri": uri})
        return resp.json() if resp.status_code == 200 and resp.json()["playlist"]["itemCount"] == count else None
    got = await eventually(lambda: shown(drive.uri, 4), timeout=30)
    assert [i["track"]["title"] for i in got["playlist"]["items"]] == ["Demo 0", "Demo 3", "Demo 1", "Demo 2"]
    got = await eventually(lambda: shown(quiet.uri, 4), timeout=30)
    assert [i["track"]["title"] for i in got["playlist"]["items"]] == ["Demo 3", "Demo 2", "Demo 1", "Demo 0"]
