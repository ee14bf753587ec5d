"""The listener's side of the web app: onboarding, /me and the public listener page.

Units (no network): ``fm.openmusic.social.getActorLikes`` on a real SQLite index fed with decoded
events (newest first, pagination covers every like once, albums and missing tracks left out, an
unknown account is ``ActorNotFound``, the output fits its lexicon); ``POST /welcome`` over a stand-in
PDS session (fields, files and an empty file input read through Starlette's ``request.form``;
unreadable, cut-short, too-many-field and oversized bodies refused with a clear 4xx page, nothing
written); the body cap while reading; the image check.

End to end (the reference PDS + the AppView runtime with the web app, Debian's Chromium): a fresh
account signs in and lands on /welcome, picks artist + listener, sets a display name and a small PNG
avatar; the profile record is in its repo with those roles and a blob avatar; /me shows it, and
after a play and a like (written straight into the repo) lists both; /listener/{handle} shows them
signed out, and /artist/{handle} links there. A second sign-in skips /welcome. Refused input (an
image too large, not an image, no role, a forged CSRF token, a profile changed meanwhile) shows the
form again or an error page and changes nothing. An account with a Bluesky profile gets its name
prefilled, and skipping writes nothing. Screenshots (1280 and 390 px) go to the test's tmp dir."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from multiformats import CID, multihash
from PIL import Image, PngImagePlugin
from starlette.applications import Starlette

from appview import queries
from appview.views import ViewContext
from appview.xrpc import XrpcError, validate_params
from core import db
from core.config import Settings
from core.identity import IdentityResolver, IdentityService
from core.lexicons import validator
from core.publish import StrongRef, like, publish_profile, publish_track, record_play
from devkit.media import tune_wav
from firehose.events import CommitEvent, RecordOp
from indexer.core import Indexer
from tests.conftest import eventually
from tests.records import DID, LISTENER, track
from tests.test_indexer_units import rkey
from tests.test_web_oauth_browser import CHROMIUM, FLAGS, PASSWORD, browser, pds_sign_in, start_sign_in  # noqa: F401  (browser: a fixture)
from web import WebSettings, csrf
from web.app import WebApp
from web.forms import DRAIN_LIMIT, image_type, read_capped
from web.profile import FORM_OVERHEAD, MAX_FIELDS, Profile, avatar_rules
from web.profile import routes as profile_routes
from web.sealing import new_key_text

LIKES = "fm.openmusic.social.getActorLikes"
TRACK = "fm.openmusic.catalog.track"
ALBUM = "fm.openmusic.catalog.album"
LIKE = "fm.openmusic.social.like"
PROFILE = "fm.openmusic.actor.profile"


# --- units: getActorLikes ----------------------------------------------------------------------------



@pytest.fixture
async def index(tmp_path):
    path = str(tmp_path / "t.sqlite")
    db.migrate(path)
    conn = await db.connect(path)
    for did in (DID, LISTENER):
        await conn.execute("INSERT INTO actor (did, handle, handle_verified, resolved_at) VALUES (?,?,1,?)",
                           (did, did.split(":")[-1][:8] + ".test", time.time()))
    settings = Settings(db_path=path)
    ix = Indexer(path, "test")
    await ix.open()
    await ix.load_state()
    yield ix, ViewContext(conn, IdentityService(settings, conn, IdentityResolver(settings, None)), "http://x")
    await ix.close()
    await conn.close()


async def likes_of(views, actor: str, limit: int, cursor: str | None = None) -> dict:
    pairs = [("actor", actor), ("limit", str(limit))] + ([("cursor", cursor)] if cursor else [])
    out = await queries.QUERIES[LIKES](views, validate_params(LIKES, pairs))
    validator().validate(LIKES, "output", out)
    return out


async def test_get_actor_likes_newest_first_paginated_and_only_tracks(index):
    ix, views = index
    tracks = [f"at://{DID}/{TRACK}/{rkey(i)}" for i in range(7)]
    ops = [RecordOp("create", TRACK, rkey(i), "bafyreia", track(f"Song {i}")) for i in range(7)]
    # Seven likes of tracks on distinct days (one claims the future: it sorts by when it was indexed),
    # one of an album and one of a track never indexed: those two are left out.
    likes = [RecordOp("create", LIKE, rkey(100 + i), "bafyreib", {
        "$type": LIKE, "subject": {"uri": tracks[i], "cid": "bafyreia"},
        "createdAt": f"2026-01-{10 + i:02d}T00:00:00.000Z" if i != 3 else "2099-01-01T00:00:00.000Z"})
        for i in range(7)]
    likes.append(RecordOp("create", LIKE, rkey(200), "bafyreib", {
        "$type": LIKE, "subject": {"uri": f"at://{DID}/{ALBUM}/{rkey(9)}", "cid": "bafyreia"},
        "createdAt": "2026-02-01T00:00:00.000Z"}))
    likes.append(RecordOp("create", LIKE, rkey(201), "bafyreib", {
        "$type": LIKE, "subject": {"uri": f"at://{DID}/{TRACK}/{rkey(50)}", "cid": "bafyreia"},
        "createdAt": "2026-02-02T00:00:00.000Z"}))
    await ix.apply([CommitEvent(seq=1, did=DID, rev=rkey(1), since=None, commit="bafy", time="", ops=ops),
                    CommitEvent(seq=2, did=LISTENER, rev=rkey(1), since=None, commit="bafy", time="", ops=likes)], 2)

    seen, cursor, pages = [], None, 0
    while True:
        page = await likes_of(views, LISTENER, 3, cursor)
        pages += 1
        assert len(page["likes"]) <= 3
        seen += [(like["track"]["title"], like["uri"]) for like in page["likes"]]
        cursor = page.get("cursor")
        if not cursor:
            break
    assert pages == 3
    # The future-dated like sorts by when it was indexed (now), so first; then newest createdAt first.
    assert [title for title, _ in seen] == ["Song 3", "Song 6", "Song 5", "Song 4", "Song 2", "Song 1", "Song 0"]
    assert len({uri for _, uri in seen}) == 7 and all(uri.startswith(f"at://{LISTENER}/{LIKE}/") for _, uri in seen)
    whole = await likes_of(views, LISTENER, 100)
    assert len(whole["likes"]) == 7 and "cursor" not in whole
    assert whole["likes"][1]["createdAt"] == "2026-01-16T00:00:00.000Z" and whole["likes"][1]["cid"] == "bafyreib"
    # A handle names the account too; an account that likes nothing has no likes.
    assert len((await likes_of(views, "listener.test", 100))["likes"]) == 7
    assert (await likes_of(views, DID, 10)) == {"likes": []}

    # A deleted track's like disappears from the list.
    await ix.apply([CommitEvent(seq=3, did=DID, rev=rkey(2), since=None, commit="bafy", time="",
                                ops=[RecordOp("delete", TRACK, rkey(6), None, None)])], 3)
    assert "Song 6" not in [x["track"]["title"] for x in (await likes_of(views, LISTENER, 100))["likes"]]


async def test_get_actor_likes_errors(index):
    _ix, views = index
    with pytest.raises(XrpcError) as exc:
        await likes_of(views, "did:plc:" + "z" * 24, 10)
    assert exc.value.error == "ActorNotFound" and exc.value.status == 400
    for pairs in ([("actor", LISTENER), ("limit", "0")], [("actor", "not a handle")], [("limit", "5")]):
        with pytest.raises(XrpcError) as exc:
            validate_params(LIKES, pairs)
        assert exc.value.error == "InvalidRequest"
    with pytest.raises(XrpcError) as exc:
        await likes_of(views, LISTENER, 10, "eyJ4IjoxfQ")  # a forged cursor
    assert exc.value.error == "InvalidRequest"


# --- units: the profile form -------------------------------------------------------------------------

def png(size: tuple[int, int] = (32, 32), color=(200, 40, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


class StandInUser:
    """A signed-in ``UserSession`` without a PDS: no records, and every write kept in ``writes``."""

    did, handle, key = LISTENER, "listener.test", "session-key"

    def __init__(self) -> None:
        self.writes: list[tuple] = []

    async def get_record(self, collection: str, rkey: str) -> None:
        return None

    async def upload_blob(self, data: bytes, mime_type: str) -> dict:
        self.writes.append(("uploadBlob", data, mime_type))
        cid = CID("base32", 1, "raw", multihash.digest(data, "sha2-256"))
        return {"$type": "blob", "ref": {"$link": str(cid)}, "mimeType": mime_type, "size": len(data)}

    async def put_record(self, collection: str, rkey: str, record: dict, **swap: object) -> dict:
        self.writes.append(("putRecord", collection, rkey, record))
        return {"uri": f"at://{self.did}/{collection}/{rkey}", "cid": "bafyreia"}


@pytest.fixture
async def welcome(tmp_path, monkeypatch):
    """``POST /welcome`` for a signed-in ``StandInUser``: (client, user, CSRF token)."""
    settings = Settings(db_path=str(tmp_path / "openmusic.sqlite"), allow_private_hosts=True,
                        host="127.0.0.1", port=8123)
    web = WebApp(settings, WebSettings(session_key=new_key_text()),
                 views=SimpleNamespace(image_url=lambda did, cid: f"/image/{did}/{cid}", identity=None))
    await web.start()
    user = StandInUser()

    async def user_session(cookie):
        return user

    async def indexed_at_once(self, did, record):
        pass
    monkeypatch.setattr(web, "user_session", user_session)
    monkeypatch.setattr(Profile, "until_indexed", indexed_at_once)
    app = Starlette(routes=profile_routes(web))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8123",
                                 cookies={"om_session": "x"}) as http:
        yield http, user, csrf.token(web.sealer.csrf_key, f"session:{user.key}")
    await web.stop()


def encoded(data: dict, files: dict | list) -> tuple[str, bytes]:
    """A multipart body, as a browser sends it (no file chosen: an empty file part)."""
    req = httpx.Request("POST", "http://x/welcome", data=data,
                        files=files or {"avatar": ("", b"", "application/octet-stream")})
    return req.headers["content-type"], req.read()


async def test_welcome_reads_fields_and_files_through_request_form(welcome):
    http, user, token = welcome
    # A PNG whose bytes look like multipart framing (a text chunk) survives as sent.
    info = PngImagePlugin.PngInfo()
    info.add_text("note", "\r\n--not-the-boundary\r\n\r\n--")
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, "PNG", pnginfo=info)
    image = buf.getvalue()
    assert b"\r\n--not-the-boundary" in image
    ctype, body = encoded({"csrf_token": token, "swap": "", "roles": ["artist", "listener"],
                           "displayName": "Zoë \"Z\" Ünïcode", "description": ""},
                          {"avatar": ("a b\".png", image, "application/octet-stream")})
    resp = await http.post("/welcome", content=body, headers={"content-type": ctype})
    assert resp.status_code == 303 and resp.headers["location"] == "/me?saved=1"
    (_, data, mime), (_, collection, rkey, record) = user.writes
    assert data == image and mime == "image/png"  # the type from the bytes, not the declared one
    assert (collection, rkey) == (PROFILE, "self") and record["roles"] == ["artist", "listener"]
    assert record["displayName"] == "Zoë \"Z\" Ünïcode" and "description" not in record
    assert record["avatar"]["size"] == len(image)

    # A file input left empty (Chromium sends an empty part with filename="") is no file.
    user.writes.clear()
    chromium = b"".join(b'------B\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (k, v) for k, v in (
        (b"csrf_token", token.encode()), (b"swap", b""), (b"roles", b"listener"), (b"displayName", b"Kim"))) + (
        b'------B\r\nContent-Disposition: form-data; name="avatar"; filename=""\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n\r\n------B--\r\n")
    resp = await http.post("/welcome", content=chromium, headers={"content-type": "multipart/form-data; boundary=----B"})
    assert resp.status_code == 303
    assert [w[0] for w in user.writes] == ["putRecord"] and "avatar" not in user.writes[0][3]


async def test_welcome_names_managers_both_ways_and_where_payouts_go(welcome, monkeypatch):
    """Managers, managed artists and ``payoutTo`` are typed as handles and written as DIDs; an unknown
    handle, yourself, or payouts to someone who is not your manager are refused and write nothing."""
    import web.profile as profile_module
    http, user, token = welcome
    known = {"max.test": "did:plc:" + "m" * 24, "ana.test": "did:plc:" + "n" * 24, "listener.test": user.did}

    async def resolve(identity, people):
        return {p: known[p] for p in people if p in known}, [p for p in people if p not in known]
    monkeypatch.setattr(profile_module, "resolve_people", resolve)
    base = {"csrf_token": token, "swap": "", "roles": ["artist", "manager"], "displayName": "Ana"}

    async def send(**fields):
        ctype, body = encoded({**base, **fields}, {})
        return await http.post("/welcome", content=body, headers={"content-type": ctype})
    resp = await send(managers="@max.test, max.test", payoutTo="@max.test", manages="ana.test")
    assert resp.status_code == 303
    record = user.writes[-1][3]
    assert record["managers"] == [known["max.test"]] and record["payoutTo"] == known["max.test"]
    assert record["manages"] == [known["ana.test"]]
    user.writes.clear()
    for fields, status, words in (({"managers": "nobody.test"}, 400, "@nobody.test"),
                                  ({"manages": "listener.test"}, 400, "cannot manage yourself"),
                                  ({"managers": "max.test", "payoutTo": "ana.test"}, 400, "only to one of your managers")):
        resp = await send(**fields)
        assert resp.status_code == status and words in resp.text, fields
    assert user.writes == []


async def test_welcome_refuses_unreadable_and_oversized_forms(welcome):
    """Each refusal is a page saying why (never a reset connection) and writes nothing."""
    http, user, token = welcome
    max_size, _accept = avatar_rules()
    fields = {"csrf_token": token, "swap": "", "roles": "listener", "displayName": "Should Not Save"}
    ctype, body = encoded(fields, {"avatar": ("a.png", png(), "image/png")})
    name_at = body.index(b"Should Not Save")
    unreadable = [(ctype, body[:-10]),                                   # cut short in the closing boundary
                  (ctype, body[:-200]),                                  # cut short inside the avatar
                  (ctype, body[:name_at + 6]),                           # cut short in a text field
                  ("multipart/form-data", body),                         # no boundary
                  (ctype, b"garbage"),
                  (ctype, body.replace(b"Content-Disposition: form-data", b"X: y")),
                  encoded({**fields, **{f"f{i}": "v" for i in range(MAX_FIELDS)}}, {}),          # too many fields
                  encoded(fields, [("avatar", ("a.png", png(), "image/png"))] * 2),                # two files
                  encoded({**fields, "description": "x" * (FORM_OVERHEAD + 1)}, {})]              # a field too big
    for i, (bad_type, bad_body) in enumerate(unreadable):
        resp = await http.post("/welcome", content=bad_body, headers={"content-type": bad_type})
        assert resp.status_code == 400 and "This form could not be read." in resp.text, i
    wrong = await http.post("/welcome", data=fields)  # urlencoded
    assert wrong.status_code == 415 and "Send this form from our page." in wrong.text
    forged = await http.post("/welcome", content=body.replace(token.encode(), b"forged"), headers={"content-type": ctype})
    assert forged.status_code == 403 and "Form expired" in forged.text

    async def stream(data: bytes, size: int = 64 * 1024):
        for at in range(0, len(data), size):
            yield data[at:at + size]
    big_type, big = encoded(fields, {"avatar": ("big.png", os.urandom(max_size + FORM_OVERHEAD), "image/png")})
    over_type, over = encoded(fields, {"avatar": ("over.png", os.urandom(max_size + 1), "image/png")})
    # Declared too long; streamed without a length; within the body cap but the avatar just over maxSize.
    for kind, content, content_type in (("declared", big, big_type), ("streamed", stream(big), big_type),
                                        ("just over", over, over_type)):
        resp = await http.post("/welcome", content=content, headers={"content-type": content_type})
        assert resp.status_code == 413, kind
        assert "Image too large" in resp.text and f"at most {max_size // 1000} KB" in resp.text
        assert 'name="displayName"' in resp.text  # the form again, to choose a smaller image
    assert user.writes == []


async def test_body_cap_is_enforced_while_reading():
    """Over the cap (declared, or streamed without a length) nothing past the cap is kept, and what
    follows is read and dropped only up to ``DRAIN_LIMIT``."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request):
        body = await read_capped(request, 1000)
        return JSONResponse({"size": None if body is None else len(body)})

    sent = []

    async def chunks(n: int, size: int):
        for _ in range(n):
            sent.append(size)
            yield b"x" * size

    app = Starlette(routes=[Route("/", echo, methods=["POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.post("/", content=b"a" * 1000)).json() == {"size": 1000}
        assert (await http.post("/", content=b"a" * 1001)).json() == {"size": None}
        assert (await http.post("/", content=chunks(3, 300))).json() == {"size": 900}
        assert (await http.post("/", content=chunks(5, 300))).json() == {"size": None}
        sent.clear()
        assert (await http.post("/", content=chunks(40, 1024 * 1024))).json() == {"size": None}
    assert DRAIN_LIMIT < sum(sent) <= DRAIN_LIMIT + 2 * 1024 * 1024, sum(sent)  # drained, then stopped


def test_image_type_sniffs_and_refuses():
    assert image_type(png()) == "image/png"
    for fmt, mime in (("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", None), ("BMP", None)):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, fmt)
        assert image_type(buf.getvalue()) == mime, fmt
    assert image_type(b"hello, not an image") is None
    assert image_type(png()[:40]) is None  # truncated
    assert image_type(png((5000, 5000), (0, 0, 0))) is None  # small file, too many pixels


# --- end to end in Chromium --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def published(make_client, tmp_path_factory):
    """An artist with a profile and one 3-second track."""
    artist = make_client("profileartist")
    publish_profile(artist, "Profile Artist", roles=["artist"])
    path = tmp_path_factory.mktemp("audio") / "song.wav"
    path.write_bytes(tune_wav(5, seconds=3.0))
    return artist, publish_track(artist, path, title="Harbour Lights", extra={"genre": "Ambient"})




async def sign_in(page, net, site, handle: str, shots: Path, prefix: str) -> None:
    """Sign in on the PDS's pages and authorize (the PDS may skip its consent page for a client it knows)."""
    resp = await start_sign_in(page, site, handle)
    assert resp.status == 303
    await pds_sign_in(page, net, PASSWORD, shots, prefix)
    authorize = page.get_by_role("button", name="Authorize")
    deadline = time.monotonic() + 30
    while not page.url.startswith(site.url):
        assert time.monotonic() < deadline, f"sign-in stuck at {page.url}"
        if await authorize.is_visible():
            await authorize.click()
            await page.wait_for_url(lambda u: u.startswith(site.url), timeout=30_000)
            break
        await asyncio.sleep(0.2)
    await page.wait_for_load_state()


def pds_record(net, did: str, collection: str = PROFILE, rkey: str = "self") -> dict | None:
    resp = httpx.get(f"{net.pds_url}/xrpc/com.atproto.repo.getRecord",
                     params={"repo": did, "collection": collection, "rkey": rkey}, timeout=30)
    if resp.status_code == 400 and resp.json().get("error") == "RecordNotFound":
        return None
    resp.raise_for_status()
    return resp.json()


async def indexed(appview, nsid: str, key: str, **params) -> list:
    async def check():
        resp = await appview.http_client.get(f"/xrpc/{nsid}", params=params)
        return resp.json().get(key) if resp.status_code == 200 else None
    return await eventually(check, timeout=30)


async def no_sideways_scroll(page, site, shots: Path, paths: list[tuple[str, str]]) -> None:
    await page.set_viewport_size({"width": 390, "height": 844})
    for name, path in paths:
        await page.goto(f"{site.url}{path}")
        await page.screenshot(path=str(shots / f"{name}-390.png"), full_page=True)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} scrolls sideways at 390 px ({width})"
    await page.set_viewport_size({"width": 1280, "height": 900})


@pytest.mark.network
async def test_onboard_me_and_listener_page_in_chromium(net, make_client, appview, published, browser, tmp_path):  # noqa: F811
    artist, song = published
    await indexed(appview, "fm.openmusic.catalog.getTrack", "track", uri=song.uri)
    fan = make_client("profilefan")
    site = type("Site", (), {"url": appview.settings.base_url})
    shots = tmp_path
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()

    # First sign-in: no profile in the repo, so /welcome, with "listener" ticked.
    await sign_in(page, net, site, fan.handle, shots, "00")
    assert page.url == f"{site.url}/welcome"
    assert "Welcome to Open Music" in await page.text_content("h1")
    assert await page.is_checked("#role-listener") and not await page.is_checked("#role-artist")
    await page.screenshot(path=str(shots / "01-welcome-1280.png"), full_page=True)

    # Refused input shows the form again, says why, and writes nothing.
    await page.uncheck("#role-listener")
    async with page.expect_response(lambda r: r.url == f"{site.url}/welcome" and r.request.method == "POST") as info:
        await page.get_by_role("button", name="Save profile").click()
    assert (await info.value).status == 400
    assert "Choose at least one" in await page.text_content("[role=alert]")
    noise = Image.frombytes("RGB", (700, 700), os.urandom(700 * 700 * 3))
    big = io.BytesIO()
    noise.save(big, "PNG")
    assert len(big.getvalue()) > 1_000_000
    for name, data, mime, status, words in (("big.png", big.getvalue(), "image/png", 413, "at most 1000 KB"),
                                            ("fake.png", b"GIF89a not really", "image/png", 415, "PNG, JPEG or WebP")):
        await page.check("#role-listener")
        await page.fill("#displayName", "Should Not Save")
        await page.set_input_files("#avatar", files=[{"name": name, "mimeType": mime, "buffer": data}])
        async with page.expect_response(lambda r: r.url == f"{site.url}/welcome" and r.request.method == "POST") as info:
            await page.get_by_role("button", name="Save profile").click()
        assert (await info.value).status == status, name
        assert words in await page.text_content("[role=alert]"), name
    await page.screenshot(path=str(shots / "02-welcome-refused.png"), full_page=True)
    forged = await context.request.post(f"{site.url}/welcome", multipart={
        "csrf_token": "forged", "roles": "listener", "displayName": "Forged", "swap": ""})
    assert forged.status == 403 and "Form expired" in await forged.text()
    assert pds_record(net, fan.did) is None

    # Artist + listener, a display name, a description and a small PNG avatar.
    avatar = png((48, 48))
    await page.goto(f"{site.url}/welcome")
    await page.check("#role-listener")
    await page.check("#role-artist")
    await page.fill("#displayName", "Fan <Tester>")
    await page.fill("#description", "I listen to <b>everything</b>.")
    await page.set_input_files("#avatar", files=[{"name": "me.png", "mimeType": "image/png", "buffer": avatar}])
    await page.get_by_role("button", name="Save profile").click()
    await page.wait_for_url(lambda u: u.startswith(f"{site.url}/me"), timeout=30_000)
    assert page.url == f"{site.url}/me?saved=1"
    got = pds_record(net, fan.did)
    value = got["value"]
    assert value["roles"] == ["listener", "artist"] and value["displayName"] == "Fan <Tester>"
    assert value["description"] == "I listen to <b>everything</b>."
    assert value["avatar"]["$type"] == "blob" and value["avatar"]["mimeType"] == "image/png"
    assert value["avatar"]["size"] == len(avatar) and value["avatar"]["ref"]["$link"].startswith("bafkrei")
    listed = httpx.get(f"{net.pds_url}/xrpc/com.atproto.repo.listRecords",
                       params={"repo": fan.did, "collection": PROFILE}, timeout=30).json()["records"]
    assert [r["uri"] for r in listed] == [f"at://{fan.did}/{PROFILE}/self"]

    # /me: the profile as indexed (name escaped, roles, avatar served by the AppView).
    async def me_name():
        await page.goto(f"{site.url}/me")
        return (await page.text_content("#display-name")).strip() == "Fan <Tester>"
    await eventually(me_name, timeout=30, interval=0.5)
    assert "&lt;b&gt;everything" in await page.content()
    roles = await page.locator(".roles li").all_text_contents()
    assert roles == ["Listener", "Artist"]
    avatar_src = await page.get_attribute("img.avatar", "src")
    assert avatar_src.endswith(f"/image/{fan.did}/{value['avatar']['ref']['$link']}")
    served = await appview.http_client.get(avatar_src.removeprefix(site.url))
    assert served.status_code == 200 and served.content == avatar
    assert "No plays yet." in await page.text_content("#plays")
    await page.goto(f"{site.url}/artist/{fan.did}")  # their own artist page, no tracks yet: how to publish
    assert "openmusic publish" in await page.text_content("#publish-hint")
    await page.goto(f"{site.url}/me")
    assert await page.get_attribute("#wallet", "href") == "/wallet"
    assert (await page.text_content("#did")).strip() == fan.did

    # A play and a like, written straight into the fan's repo; /me lists them once indexed.
    play = record_play(fan, StrongRef(song.uri, song.cid), 42_000, completed=False)
    liked = like(fan, StrongRef(song.uri, song.cid))
    await indexed(appview, "fm.openmusic.listen.getPlays", "plays", actor=fan.did)
    got_likes = await indexed(appview, LIKES, "likes", actor=fan.handle)
    assert [x["uri"] for x in got_likes] == [liked.uri] and got_likes[0]["track"]["uri"] == song.uri
    await page.goto(f"{site.url}/me")
    plays_text = await page.text_content("#plays")
    assert "Harbour Lights" in plays_text and "42 seconds heard" in plays_text and "Profile Artist" in plays_text
    assert "UTC" in plays_text
    assert "Harbour Lights" in await page.text_content("#likes")
    track_path = f"/track/{artist.did}/{song.uri.rsplit('/', 1)[1]}"
    assert await page.locator(f'#plays a[href="{track_path}"]').count() == 1
    assert await page.locator(f'#likes a[href="{track_path}"]').count() == 1
    await page.screenshot(path=str(shots / "03-me-1280.png"), full_page=True)

    # Signed out, anyone sees the listener page; the empty artist page points there.
    async with httpx.AsyncClient(base_url=site.url) as anon:
        public = await anon.get(f"/listener/{fan.handle}")
        assert public.status_code == 200 and "Fan &lt;Tester&gt;" in public.text
        assert "Harbour Lights" in public.text and "42 seconds heard" in public.text and play.uri not in public.text
        assert "1 play ·" in public.text and "1 like" in public.text and "Sign out" not in public.text
        assert (await anon.get(f"/listener/{fan.did}")).status_code == 200
        assert (await anon.get("/listener/nobody-here.test")).status_code == 404
        artist_page = await anon.get(f"/artist/{fan.handle}")
        assert artist_page.status_code == 200 and f'href="/listener/{fan.handle}"' in artist_page.text
        real_artist = await anon.get(f"/artist/{artist.handle}")
        assert "Harbour Lights" in real_artist.text and "/listener/" not in real_artist.text
        to_login = await anon.get("/welcome")
        assert to_login.status_code == 303 and to_login.headers["location"] == "/login"
        bad = await anon.get(f"/listener/{fan.handle}", params={"plays": "eyJ4IjoxfQ"})
        assert bad.status_code == 400
    spare = await browser.new_context(viewport={"width": 1280, "height": 900})
    anon_page = await spare.new_page()
    await anon_page.goto(f"{site.url}/listener/{fan.handle}")
    await anon_page.screenshot(path=str(shots / "04-listener-1280.png"), full_page=True)
    await spare.close()

    # Edit: the same form, prefilled from the record; the avatar is kept when no new one is chosen.
    await page.click("#edit-profile")
    await page.wait_for_url(f"{site.url}/welcome")
    assert "Edit your profile" in await page.text_content("h1")
    assert await page.input_value("#displayName") == "Fan <Tester>"
    assert await page.is_checked("#role-artist") and await page.is_checked("#role-listener")
    assert not await page.is_checked("#role-manager")
    await page.screenshot(path=str(shots / "05-edit-1280.png"), full_page=True)
    # Meanwhile, the profile is changed elsewhere: this form may not overwrite it.
    before = pds_record(net, fan.did)
    fan.put_record(PROFILE, "self", {**before["value"], "displayName": "Changed Elsewhere"})
    await page.fill("#displayName", "Fan Two")
    async with page.expect_response(lambda r: r.url == f"{site.url}/welcome" and r.request.method == "POST") as info:
        await page.get_by_role("button", name="Save profile").click()
    assert (await info.value).status == 409 and "changed elsewhere" in await page.text_content("[role=alert]")
    assert pds_record(net, fan.did)["value"]["displayName"] == "Changed Elsewhere"
    await page.goto(f"{site.url}/welcome")
    assert await page.input_value("#displayName") == "Changed Elsewhere"
    await page.fill("#displayName", "Fan Two")
    await page.uncheck("#role-artist")
    await page.get_by_role("button", name="Save profile").click()
    await page.wait_for_url(f"{site.url}/me?saved=1")
    after = pds_record(net, fan.did)["value"]
    assert after["displayName"] == "Fan Two" and after["roles"] == ["listener"]
    assert after["avatar"] == value["avatar"] and after["createdAt"] == value["createdAt"]

    await no_sideways_scroll(page, site, shots, [("06-welcome", "/welcome"), ("07-me", "/me"),
                                                 ("08-listener", f"/listener/{fan.handle}")])
    await context.close()

    # A second sign-in (another browser) goes straight to /me.
    again = await browser.new_context()
    page2 = await again.new_page()
    await sign_in(page2, net, site, fan.handle, shots, "09")
    assert page2.url == f"{site.url}/me"
    assert (await page2.text_content("#display-name")).strip() == "Fan Two"
    await again.close()


@pytest.mark.network
async def test_bluesky_name_prefilled_and_skip_writes_nothing(net, make_client, appview, browser, tmp_path):  # noqa: F811
    person = make_client("profilebsky")
    person._call("POST", "com.atproto.repo.putRecord", json={  # not ours: PdsClient.put_record checks our lexicons
        "repo": person.did, "collection": "app.bsky.actor.profile", "rkey": "self",
        "record": {"$type": "app.bsky.actor.profile", "displayName": "Sky Person"}})
    site = type("Site", (), {"url": appview.settings.base_url})
    context = await browser.new_context()
    page = await context.new_page()
    await sign_in(page, net, site, person.handle, tmp_path, "bsky")
    assert page.url == f"{site.url}/welcome"
    assert await page.input_value("#displayName") == "Sky Person"
    assert "Bluesky" in await page.text_content("main")
    await page.click("#skip")
    await page.wait_for_url(f"{site.url}/me")
    assert "Set up your profile" in await page.text_content("#edit-profile")
    assert (await page.text_content("#did")).strip() == person.did
    await page.screenshot(path=str(tmp_path / "skipped-me.png"), full_page=True)
    assert pds_record(net, person.did) is None
    await context.close()
