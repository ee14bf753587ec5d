"""The Bluesky feed generator (``feedgen``) and the index of posts that share our music
(``indexer.share``), as Bluesky sees them.

Units (frames built with dag_cbor; a real SQLite index fed with decoded events; the feed generator's
routes over ASGI): the decoder keeps an ``app.bsky.feed.post`` only when it links to one of our
track, album or playlist pages (card, link facet or text) and drops the rest before decoding them,
also beside a sharing post in the same commit; deletes are kept only for accounts that shared.
The indexer stores a share with its subject resolved from the page URL, rejects a post that
reaches it without sharing (``not_a_share``), removes a deleted one, and skips ordinary posts in a
resync snapshot without a trace. ``getFeedSkeleton``: "fresh" lists the last 24 hours' shares of
indexed records by active accounts, newest first; cursors page through without repeats or gaps;
limits, cursors and feed URIs are checked (``InvalidRequest``, ``UnknownFeed``);
"artists-you-follow" answers empty without auth, 401 for a bad token, and the posts of followed
accounts for a service-auth JWT signed by the viewer's key (``aud`` our DID, bare or ``#bsky_fg``,
``lxm`` getFeedSkeleton or getFeed). ``describeFeedGenerator`` and the did:web document with
``#bsky_fg`` (merged into another service's document when there is one).

End to end (the reference PDS and the AppView runtime on its real firehose): an artist publishes a
track; a listener posts an ``app.bsky.feed.post`` linking it (facet and card) and an ordinary post;
the share is served by "fresh" over HTTP, the ordinary post is stored nowhere (rows counted);
"artists-you-follow" with a JWT minted by the listener's PDS (``getServiceAuth``, as Bluesky's
AppView passes on) lists the artist's own share once the listener follows them; a deleted post
leaves the feed. Bluesky's own AppView (``@atproto/dev-env`` ``TestNetwork``) is not run here: see
``test_through_bluesky_appview`` for why."""

from __future__ import annotations

import contextlib
import shutil
import socket
import sqlite3
from datetime import UTC, datetime, timedelta

import aiosqlite
import dag_cbor
import httpx
import pytest
from starlette.applications import Starlette

from core.lexicons import FOLLOW, TRACK
from devkit import pgserver
from feedgen import skeleton
from feedgen.app import FOLLOWING, FRESH, FeedGenerator
from firehose.events import CommitEvent, decode_frame
from firehose.repo import Snapshot
from indexer import share
from indexer.core import wanted
from payments.auth import ServiceAuth
from tests import dbq
from tests.records import DID, LISTENER, commit_frame, track
from tests.test_auth_units import CALLER, DID_KEY, jwt
from tests.test_indexer_units import commit, create, env, rkey  # noqa: F401  (env: a fixture)

SITE = "https://music.example"
POST = "app.bsky.feed.post"
FEEDGEN = "did:web:music.example"
PUBLISHER = "did:plc:publisherpublisherpublis"
SONG = f"at://{DID}/{TRACK}/{rkey(1)}"
SONG_PAGE = f"{SITE}/track/{DID}/{rkey(1)}"
GET = "/xrpc/app.bsky.feed.getFeedSkeleton"


@pytest.fixture(autouse=True)
def our_site():
    share.configure([SITE])
    yield


def now_iso(delta_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def post(text: str = "Listening to this", *, link: str | None = None, card: str | None = None,
         age_s: float = 0, in_text: bool = False) -> dict:
    """An ``app.bsky.feed.post`` record: ``link`` as a link facet, ``card`` as an external embed."""
    record: dict = {"$type": POST, "text": text, "createdAt": now_iso(-age_s), "langs": ["en"]}
    if in_text and link:
        record["text"] = f"{text} {link}"
    elif link:
        record["text"] = f"{text} {link.split('://', 1)[-1][:20]}…"
        start = len(text.encode()) + 1
        record["facets"] = [{"index": {"byteStart": start, "byteEnd": len(record["text"].encode())},
                             "features": [{"$type": "app.bsky.richtext.facet#link", "uri": link}]}]
    if card:
        record["embed"] = {"$type": "app.bsky.embed.external",
                           "external": {"uri": card, "title": "Neon Harbor", "description": "by someone"}}
    return record


# --- the decoder ------------------------------------------------------------------------------------

def test_decoder_keeps_only_posts_that_share_our_pages():
    ordinary = ("create", f"{POST}/{rkey(20)}", post("good morning"))
    elsewhere = ("create", f"{POST}/{rkey(21)}", post("look", link="https://other.example/track/x/y"))
    sharing = ("create", f"{POST}/{rkey(22)}", post(link=SONG_PAGE))
    evt = decode_frame(commit_frame(1, LISTENER, rkey(100), [ordinary, elsewhere]), wanted)
    assert isinstance(evt, CommitEvent) and evt.ops == [] and evt.blocks is None  # never decoded
    named = ("create", f"{POST}/{rkey(23)}", post("I love music.example, but this links nowhere"))
    evt = decode_frame(commit_frame(2, LISTENER, rkey(101), [ordinary, sharing, elsewhere, named]), wanted)
    assert [(op.rkey, op.record["facets"][0]["features"][0]["uri"]) for op in evt.ops] == [(rkey(22), SONG_PAGE)]
    # deletes: kept for an account that shared (it may delete a share), dropped for the rest
    assert [op.action for op in decode_frame(commit_frame(3, LISTENER, rkey(102), [
        ("delete", f"{POST}/{rkey(22)}", None)]), wanted).ops] == ["delete"]
    stranger = "did:plc:strangerstrangerstranger"
    assert decode_frame(commit_frame(4, stranger, rkey(103), [("delete", f"{POST}/{rkey(22)}", None)]),
                        wanted).ops == []
    # our own collections are untouched by the filter
    evt = decode_frame(commit_frame(5, stranger, rkey(104), [("create", f"{TRACK}/{rkey(1)}", track()), ordinary]),
                       wanted)
    assert [op.collection for op in evt.ops] == [TRACK]


def test_subject_from_card_facet_or_text():
    assert share.find_subject(post(card=SONG_PAGE)) == SONG
    assert share.find_subject(post(link=SONG_PAGE + "?t=30")) == SONG
    assert share.find_subject(post(link=SONG_PAGE, in_text=True)) == SONG
    album = f"{SITE}/album/{DID}/{rkey(5)}"
    assert share.find_subject(post(card=album)) == f"at://{DID}/fm.openmusic.catalog.album/{rkey(5)}"
    playlist = f"{SITE}/playlist/{LISTENER}/{rkey(6)}"
    with_media = {"$type": "app.bsky.embed.recordWithMedia", "record": {"$type": "app.bsky.embed.record"},
                  "media": {"$type": "app.bsky.embed.external", "external": {"uri": playlist}}}
    assert share.find_subject({**post(), "embed": with_media}) == f"at://{LISTENER}/fm.openmusic.catalog.playlist/{rkey(6)}"
    for url in (f"{SITE}/artist/{DID}", f"{SITE}/track/{DID}", f"{SITE}.evil.example/track/{DID}/{rkey(1)}",
                f"https://evil.example/?u={SONG_PAGE}", f"{SITE}/track/not-a-did/{rkey(1)}"):
        assert share.find_subject(post(link=url)) is None, url
        assert share.find_subject(post(card=url)) is None, url


# --- the indexer ------------------------------------------------------------------------------------

def shares(path: str) -> list[tuple]:
    c = sqlite3.connect(path)
    try:
        return c.execute("SELECT uri, did, subject FROM share ORDER BY uri").fetchall()
    finally:
        c.close()


async def test_indexer_stores_shares_and_removes_them(env):  # noqa: F811
    ix, _views, path = env
    frames = [commit_frame(1, DID, rkey(100), [("create", f"{TRACK}/{rkey(1)}", track())]),
              commit_frame(2, LISTENER, rkey(100), [("create", f"{POST}/{rkey(20)}", post("hello")),
                                                    ("create", f"{POST}/{rkey(21)}", post(card=SONG_PAGE))])]
    await ix.apply([decode_frame(f, wanted) for f in frames], 2)
    share_uri = f"at://{LISTENER}/{POST}/{rkey(21)}"
    assert shares(path) == [(share_uri, LISTENER, SONG)]
    c = sqlite3.connect(path)
    assert c.execute("SELECT count(*) FROM record WHERE collection = ?", (POST,)).fetchone() == (1,)
    assert c.execute("SELECT count(*) FROM rejected_record").fetchone() == (0,)  # dropped, not rejected
    # A non-sharing post that reaches the indexer anyway is rejected and counted, not stored.
    await ix.apply([commit(3, LISTENER, 101, create(POST, rkey(22), post("plain")))], 3)
    assert ix.rejections["not_a_share"] == 1 and len(shares(path)) == 1
    # A post without createdAt is invalid.
    bad = post(card=SONG_PAGE)
    del bad["createdAt"]
    await ix.apply([commit(4, LISTENER, 102, create(POST, rkey(23), bad))], 4)
    assert ix.rejections["lexicon"] == 1 and len(shares(path)) == 1
    # Deleted: the share goes.
    await ix.apply([decode_frame(commit_frame(5, LISTENER, rkey(103), [("delete", f"{POST}/{rkey(21)}", None)]),
                                 wanted)], 5)
    assert shares(path) == []
    assert c.execute("SELECT count(*) FROM record WHERE collection = ?", (POST,)).fetchone() == (0,)
    c.close()


async def test_resync_snapshot_keeps_shares_and_skips_ordinary_posts(env):  # noqa: F811
    ix, _views, path = env
    earlier = f"at://{DID}/{POST}/{rkey(29)}"
    await ix.apply([commit(1, DID, 1, create(POST, rkey(29), post(card=SONG_PAGE)))], 1)
    # A snapshot holds our namespace only (firehose.repo.load_snapshot): the share indexed live stays.
    ix.begin_resync(DID)
    await ix.apply_snapshot(Snapshot(did=DID, rev=rkey(200), data=bytes(dag_cbor_cid()),
                                     records={f"{TRACK}/{rkey(1)}": ("bafyreitrack", track())}))
    assert shares(path) == [(earlier, DID, SONG)]
    # Were posts in a snapshot, only the sharing ones would be indexed, the rest skipped without a trace.
    records = {f"{TRACK}/{rkey(1)}": ("bafyreitrack", track()),
               f"{POST}/{rkey(30)}": ("bafyreipost1", post("ordinary")),
               f"{POST}/{rkey(31)}": ("bafyreipost2", post(link=SONG_PAGE))}
    ix.begin_resync(DID)
    await ix.apply_snapshot(Snapshot(did=DID, rev=rkey(201), data=bytes(dag_cbor_cid()), records=records))
    assert shares(path) == [(earlier, DID, SONG), (f"at://{DID}/{POST}/{rkey(31)}", DID, SONG)]
    c = sqlite3.connect(path)
    assert c.execute("SELECT count(*) FROM rejected_record").fetchone() == (0,)
    c.close()
    from indexer.core import OWN_COLLECTIONS
    assert POST not in OWN_COLLECTIONS and TRACK in OWN_COLLECTIONS  # backfill never lists every Bluesky account


def dag_cbor_cid():
    from tests.records import cid_of
    return cid_of(dag_cbor.encode({"x": 1}))


# --- the feed generator over ASGI -------------------------------------------------------------------

def generator(views, auth: ServiceAuth | None = None, base=lambda: None) -> tuple[FeedGenerator, httpx.AsyncClient]:
    fg = FeedGenerator(FEEDGEN, PUBLISHER, SITE, views.db.execute, auth, base_document=base)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=Starlette(routes=fg.routes())), base_url=SITE)
    return fg, client


async def index_shares(ix, n: int, did: str = LISTENER, age_s: float = 0, first: int = 0) -> list[str]:
    """``n`` sharing posts by ``did`` (one second apart, the last newest), and the track they share."""
    await ix.apply([commit(1, DID, 1, create(TRACK, rkey(1), track()))], None)
    ops = [create(POST, rkey(300 + first + i), post(f"#{i}", link=SONG_PAGE, age_s=age_s + n - i)) for i in range(n)]
    await ix.apply([commit(2 + first, did, 50 + first, *ops)], None)
    return [f"at://{did}/{POST}/{rkey(300 + first + i)}" for i in reversed(range(n))]


async def test_fresh_pages_newest_first_without_repeats(env):  # noqa: F811
    ix, views, _path = env
    expected = await index_shares(ix, 7)
    await ix.apply([commit(9, DID, 60, create(POST, rkey(400), post("old", card=SONG_PAGE, age_s=25 * 3600)))], None)
    fg, client = generator(views)
    feed = fg.feed_uri(FRESH)
    async with client:
        seen, cursor, pages = [], None, 0
        while True:
            params = {"feed": feed, "limit": 3} | ({"cursor": cursor} if cursor else {})
            resp = await client.get(GET, params=params)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            seen += [item["post"] for item in body["feed"]]
            pages += 1
            cursor = body.get("cursor")
            if not cursor:
                break
        assert seen == expected and pages == 3  # 3 + 3 + 1, newest first, the 25-hour-old post left out
        whole = (await client.get(GET, params={"feed": feed})).json()
        assert [i["post"] for i in whole["feed"]] == expected and "cursor" not in whole

        # Bad requests: XRPC error bodies.
        for params, error in (({"feed": feed, "limit": 0}, "InvalidRequest"), ({"feed": feed, "limit": 101}, "InvalidRequest"),
                              ({"feed": feed, "limit": "x"}, "InvalidRequest"), ({"feed": feed, "cursor": "%%%"}, "InvalidRequest"),
                              ({"feed": feed, "cursor": skeleton.encode_cursor("x", "y")}, "InvalidRequest"),
                              ({}, "InvalidRequest"), ({"feed": "https://x"}, "InvalidRequest"),
                              ({"feed": f"at://{PUBLISHER}/app.bsky.feed.generator/nope"}, "UnknownFeed"),
                              ({"feed": f"at://{LISTENER}/app.bsky.feed.generator/{FRESH}"}, "UnknownFeed"),
                              ({"feed": f"at://{PUBLISHER}/app.bsky.feed.post/{FRESH}"}, "UnknownFeed")):
            resp = await client.get(GET, params=params)
            assert (resp.status_code, resp.json()["error"]) == (400, error), params

        # A share of a record we do not index, or by a deactivated account, is not listed.
        ghost = post(link=f"{SITE}/track/{DID}/{rkey(99)}")
        await ix.apply([commit(20, DID, 70, create(POST, rkey(401), ghost))], None)
        assert [i["post"] for i in (await client.get(GET, params={"feed": feed})).json()["feed"]] == expected
        await views.db.execute("UPDATE actor SET active = 0 WHERE did = ?", (LISTENER,))
        await views.db.commit()
        assert (await client.get(GET, params={"feed": feed})).json()["feed"] == []


@pytest.mark.parametrize("many", [False, True], ids=["few follows", "many follows (the share_sort walk)"])
async def test_artists_you_follow_needs_the_viewers_token(env, monkeypatch, many):  # noqa: F811
    if many:  # the query for viewers who follow many accounts gives the same answers
        monkeypatch.setattr(skeleton, "MANY_FOLLOWS", 1)
    ix, views, _path = env
    conn = await aiosqlite.connect(_path)
    try:
        keys = {CALLER: DID_KEY}

        async def signing_key(did: str, refresh: bool) -> str | None:
            return keys.get(did)
        auth = ServiceAuth("did:web:placeholder", signing_key, conn)
        artist_posts = await index_shares(ix, 2, did=DID)
        await index_shares(ix, 2, did=LISTENER, first=10)
        await ix.apply([commit(30, CALLER, 1, create(FOLLOW, rkey(500), {"$type": FOLLOW, "subject": DID,
                                                                          "createdAt": now_iso()}))], None)
        fg, client = generator(views, auth, base=lambda: {"id": FEEDGEN, "service": [
            {"id": "#openmusic_appview", "type": "OpenMusicAppView", "serviceEndpoint": SITE}]})
        feed = fg.feed_uri(FOLLOWING)
        async with client:
            resp = await client.get(GET, params={"feed": feed})
            assert resp.status_code == 200 and resp.json() == {"feed": []}  # signed out: no one followed
            for n, (aud, lxm) in enumerate(((FEEDGEN, "app.bsky.feed.getFeedSkeleton"),
                                            (f"{FEEDGEN}#bsky_fg", "app.bsky.feed.getFeed"))):
                token = jwt(aud=aud, lxm=lxm, jti=f"feed-{n}")
                resp = await client.get(GET, params={"feed": feed}, headers={"Authorization": f"Bearer {token}"})
                assert resp.status_code == 200, resp.text
                assert [i["post"] for i in resp.json()["feed"]] == artist_posts
            for claims in ({"aud": "did:web:other.example", "jti": "bad-1"},
                           {"aud": f"{FEEDGEN}#openmusic_appview", "jti": "bad-2"},
                           {"aud": FEEDGEN, "lxm": "app.bsky.feed.getTimeline", "jti": "bad-3"},
                           {"aud": FEEDGEN, "lxm": "app.bsky.feed.getFeedSkeleton", "jti": "feed-0"}):  # replayed
                resp = await client.get(GET, params={"feed": feed},
                                        headers={"Authorization": f"Bearer {jwt(**claims)}"})
                assert resp.status_code == 401 and resp.json()["error"] == "InvalidToken", claims
            resp = await client.get(GET, params={"feed": feed}, headers={"Authorization": "Bearer nonsense"})
            assert resp.status_code == 401

            described = (await client.get("/xrpc/app.bsky.feed.describeFeedGenerator")).json()
            assert described == {"did": FEEDGEN, "feeds": [{"uri": f"at://{PUBLISHER}/app.bsky.feed.generator/{FRESH}"},
                                                           {"uri": f"at://{PUBLISHER}/app.bsky.feed.generator/{FOLLOWING}"}]}
            doc = (await client.get("/.well-known/did.json")).json()
            assert doc["id"] == FEEDGEN
            assert doc["service"] == [
                {"id": "#openmusic_appview", "type": "OpenMusicAppView", "serviceEndpoint": SITE},
                {"id": "#bsky_fg", "type": "BskyFeedGenerator", "serviceEndpoint": SITE}]
    finally:
        await conn.close()


# --- end to end on the reference PDS ----------------------------------------------------------------

def create_post(client, record: dict) -> str:
    return client._call("POST", "com.atproto.repo.createRecord",
                        json={"repo": client.did, "collection": POST, "record": record})["uri"]


@pytest.fixture(scope="module")
async def feed_appview(net, tmp_path_factory):
    """The AppView runtime on ``net`` whose public URL is ``http://localhost:<port>``: its did:web
    (``did:web:localhost%3A<port>``) is one the reference PDS mints service-auth JWTs for (it refuses
    IP addresses in did:web)."""
    from tests.conftest import devnet_settings, serving

    settings = devnet_settings(net, tmp_path_factory.mktemp("feedgen"))
    settings.public_url = f"http://localhost:{settings.port}"
    async with serving(settings) as rt:
        yield rt


@pytest.mark.network
async def test_shared_track_is_served_and_ordinary_posts_are_not_stored(net, make_client, feed_appview, tmp_path):
    from core.publish import publish_profile, publish_track
    from devkit.media import tune_wav
    from tests.conftest import eventually
    from tests.test_web_profile import indexed

    appview = feed_appview
    site = appview.settings.base_url
    feedgen_did = appview.settings.feedgen_did_resolved
    artist = make_client("fgartist")
    publish_profile(artist, "Feed Artist", roles=["artist"])
    wav = tmp_path / "song.wav"
    wav.write_bytes(tune_wav(3, seconds=2.0))
    ref = publish_track(artist, wav, title="Shared Song")
    await indexed(appview, "fm.openmusic.catalog.getTrack", "track", uri=ref.uri)
    page = f"{site}/track/{artist.did}/{ref.uri.rsplit('/', 1)[1]}"
    fan = make_client("fgfan")
    ordinary = create_post(fan, {"$type": POST, "text": "just a morning post", "createdAt": now_iso()})
    text = "Listening to Shared Song "
    shared = create_post(fan, {"$type": POST, "text": text + page, "createdAt": now_iso(),
                               "facets": [{"index": {"byteStart": len(text), "byteEnd": len(text) + len(page)},
                                           "features": [{"$type": "app.bsky.richtext.facet#link", "uri": page}]}],
                               "embed": {"$type": "app.bsky.embed.external",
                                         "external": {"uri": page, "title": "Shared Song", "description": "Feed Artist"}}})
    http = appview.http_client
    described = (await http.get("/xrpc/app.bsky.feed.describeFeedGenerator")).json()
    assert described["did"] == feedgen_did
    fresh = next(f["uri"] for f in described["feeds"] if f["uri"].endswith("/" + FRESH))
    following = next(f["uri"] for f in described["feeds"] if f["uri"].endswith("/" + FOLLOWING))

    async def fresh_posts():
        resp = await http.get(GET, params={"feed": fresh, "limit": 100})
        assert resp.status_code == 200, resp.text
        return [i["post"] for i in resp.json()["feed"]]
    await eventually(fresh_posts, timeout=30, until=lambda got: shared in got)

    def rows(sql: str, *args) -> list:
        return dbq.rows(appview.settings, sql, *args)
    assert rows("SELECT subject FROM share WHERE did = ?", fan.did) == [(ref.uri,)]
    assert rows("SELECT uri FROM record WHERE did = ? AND collection = ?", fan.did, POST) == [(shared,)]
    assert rows("SELECT count(*) FROM rejected_record WHERE uri = ?", ordinary) == [(0,)]
    assert ordinary not in await fresh_posts()

    # "Artists you follow", as Bluesky's AppView asks: a JWT minted by the viewer's PDS.
    artist_share = create_post(artist, {"$type": POST, "text": f"New song out: {page}", "createdAt": now_iso()})
    fan.create_record(FOLLOW, {"subject": artist.did, "createdAt": now_iso()})

    async def following_posts():
        token = fan.service_auth(feedgen_did, "app.bsky.feed.getFeedSkeleton")
        resp = await http.get(GET, params={"feed": following}, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.text
        return [i["post"] for i in resp.json()["feed"]]
    assert await eventually(following_posts, timeout=30, until=lambda got: artist_share in got) == [artist_share]
    assert (await http.get(GET, params={"feed": following})).json() == {"feed": []}

    # Deleted: the post leaves the feed.
    fan._call("POST", "com.atproto.repo.deleteRecord",
              json={"repo": fan.did, "collection": POST, "rkey": shared.rsplit("/", 1)[1]})
    await eventually(fresh_posts, timeout=30, until=lambda got: shared not in got and artist_share in got)
    assert rows("SELECT count(*) FROM share WHERE did = ?", fan.did) == [(0,)]

    doc = (await http.get("/.well-known/did.json")).json()
    assert doc["id"] == feedgen_did
    assert {"id": "#bsky_fg", "type": "BskyFeedGenerator", "serviceEndpoint": site} in doc["service"]


# --- through Bluesky's own AppView (@atproto/dev-env TestNetwork) ----------------------------------

#: The PostgreSQL server binaries' folder (``devkit.pgserver.bin_dir``), ``None`` without them.
PG_BIN = pgserver.bin_dir()
#: Started with ``node --input-type=module -e`` in ``devnet/`` (so ``@atproto/dev-env`` resolves from
#: there): the PLC, a PDS and Bluesky's AppView; prints their URLs as one JSON line, and runs until
#: its stdin closes.
TESTNETWORK_JS = """
import { TestNetwork } from '@atproto/dev-env'
const net = await TestNetwork.create({
  dbPostgresUrl: process.env.DB_POSTGRES_URL, dbPostgresSchema: process.env.DB_POSTGRES_SCHEMA,
  redisHost: process.env.REDIS_HOST, pds: { hostname: 'localhost' },
})
process.stdout.write(JSON.stringify({ pds: net.pds.url, plc: net.plc.url, bsky: net.bsky.url }) + '\\n')
const stop = async () => { try { await net.close() } finally { process.exit(0) } }
process.stdin.on('end', stop); process.stdin.on('error', stop); process.stdin.resume()
process.on('SIGTERM', stop)
"""


@contextlib.contextmanager
def postgres():
    """A throwaway PostgreSQL cluster (``devkit.pgserver.throwaway_cluster``: a fresh folder under the
    system temp dir, a free loopback port, run as ``postgres`` when we are root). Yields its URL;
    stops the server and removes the folder after."""
    with pgserver.throwaway_cluster() as url:
        yield url


@contextlib.contextmanager
def redis():
    """A throwaway redis-server (no persistence) on a free loopback port. Yields ``host:port``."""
    import subprocess
    import time

    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def bluesky_test_network(db_url: str, redis_host: str):
    """``@atproto/dev-env``'s TestNetwork (PLC, PDS, Bluesky's AppView). Yields its URLs."""
    import json
    import os
    import random
    import string
    import subprocess

    from devkit import devnet

    schema = "feedgen_" + "".join(random.choices(string.ascii_lowercase, k=8))  # letters and _ only
    environ = dict(os.environ, DB_POSTGRES_URL=db_url, DB_POSTGRES_SCHEMA=schema, REDIS_HOST=redis_host,
                   LOG_ENABLED="false", NODE_ENV="development")
    proc = subprocess.Popen([str(devnet.NODE), "--input-type=module", "-e", TESTNETWORK_JS], cwd=devnet.DEVNET_DIR,
                            env=environ, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"TestNetwork did not start: {proc.stderr.read()[-3000:]}")
        yield json.loads(line)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.mark.network
async def test_through_bluesky_appview(tmp_path):
    """Bluesky's own AppView (``@atproto/dev-env`` ``TestNetwork``) serves our feeds: a feed generator
    record names our did:web; ``app.bsky.feed.getFeed`` on Bluesky's AppView resolves its
    ``#bsky_fg`` service from our ``/.well-known/did.json``, calls our ``getFeedSkeleton`` (passing on
    the viewer's service-auth JWT) and answers hydrated posts."""
    from core.publish import PdsClient, publish_profile, publish_track
    from devkit import devnet
    from devkit.media import tune_wav
    from feedgen.publish import publish_feeds
    from tests.conftest import devnet_settings, eventually, serving
    from tests.test_web_profile import indexed

    missing = [] if shutil.which("redis-server") else ["redis-server (apt-get install redis-server)"]
    if not PG_BIN:
        missing.append("PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
    if not devnet.NODE.exists():
        missing.append(f"{devnet.NODE} (devnet/install.sh)")
    if missing:
        pytest.skip(f"needs {', '.join(missing)} for @atproto/dev-env's TestNetwork")

    with postgres() as db_url, redis() as redis_host, bluesky_test_network(db_url, redis_host) as tn:
        net = type("Net", (), {"firehose_url": tn["pds"].replace("http", "ws", 1), "plc_url": tn["plc"],
                               "pds_url": tn["pds"]})
        settings = devnet_settings(net, tmp_path / "appview")
        (tmp_path / "appview").mkdir(exist_ok=True)
        settings.public_url = f"http://localhost:{settings.port}"  # did:web:localhost%3A<port>

        def account(name: str) -> PdsClient:
            httpx.post(f"{tn['pds']}/xrpc/com.atproto.server.createAccount", json={
                "handle": f"{name}.test", "password": "test-password-1234", "email": f"{name}@example.com"},
                timeout=30).raise_for_status()
            return PdsClient(tn["pds"], f"{name}.test", "test-password-1234")

        async with serving(settings) as rt:
            feedgen_did = rt.settings.feedgen_did_resolved
            artist, fan = account("tnartist"), account("tnfan")
            publish_profile(artist, "TN Artist", roles=["artist"])
            wav = tmp_path / "song.wav"
            wav.write_bytes(tune_wav(4, seconds=2.0))
            ref = publish_track(artist, wav, title="Through Bluesky")
            await indexed(rt, "fm.openmusic.catalog.getTrack", "track", uri=ref.uri)
            page = f"{rt.settings.base_url}/track/{artist.did}/{ref.uri.rsplit('/', 1)[1]}"
            text = "Found this on Open Music "
            shared = create_post(fan, {"$type": POST, "text": text + page, "createdAt": now_iso(), "facets": [
                {"index": {"byteStart": len(text), "byteEnd": len(text) + len(page)},
                 "features": [{"$type": "app.bsky.richtext.facet#link", "uri": page}]}],
                "embed": {"$type": "app.bsky.embed.external",
                          "external": {"uri": page, "title": "Through Bluesky", "description": "TN Artist"}}})
            ordinary = create_post(fan, {"$type": POST, "text": "an ordinary post", "createdAt": now_iso()})
            artist_share = create_post(artist, {"$type": POST, "text": f"New: {page}", "createdAt": now_iso()})
            fan.create_record(FOLLOW, {"subject": artist.did, "createdAt": now_iso()})
            # The feeds published in the fan's repo (our feed generator serves any publisher when none is set).
            feeds = dict(zip((FRESH, FOLLOWING), publish_feeds(fan, feedgen_did, [FRESH, FOLLOWING]), strict=True))
            assert feeds[FRESH] == f"at://{fan.did}/app.bsky.feed.generator/{FRESH}"

            async def get_feed(name: str) -> list[dict]:
                # What the fan's PDS does when it proxies getFeed: a token for the feed generator.
                token = fan.service_auth(feedgen_did, "app.bsky.feed.getFeedSkeleton")
                async with httpx.AsyncClient(timeout=30) as http:
                    resp = await http.get(f"{tn['bsky']}/xrpc/app.bsky.feed.getFeed", params={"feed": feeds[name]},
                                          headers={"Authorization": f"Bearer {token}"})
                assert resp.status_code == 200, resp.text
                return resp.json()["feed"]

            items = await eventually(lambda: get_feed(FRESH), timeout=60,
                                     until=lambda got: {shared, artist_share} <= {i["post"]["uri"] for i in got})
            assert ordinary not in {i["post"]["uri"] for i in items}
            mine = next(i["post"] for i in items if i["post"]["uri"] == shared)
            assert mine["record"]["text"] == text + page  # hydrated by Bluesky's AppView
            assert mine["embed"]["$type"] == "app.bsky.embed.external#view"
            assert mine["embed"]["external"]["uri"] == page
            following = await eventually(lambda: get_feed(FOLLOWING), timeout=60,
                                         until=lambda got: [i["post"]["uri"] for i in got] == [artist_share])
            assert following[0]["post"]["author"]["did"] == artist.did
