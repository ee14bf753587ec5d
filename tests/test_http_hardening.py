"""The AppView over real HTTP (uvicorn on loopback) against malformed and hostile requests (issue
10, items 12, 14 and 18): bounded request bodies (413 before the handler buffers them), forged
cursors (400, never a 500 or a traceback), procedure validation messages, JWTs with a list ``aud``,
and HEAD on queries."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time

import httpx
import pytest
import uvicorn

from appview.app import WEBHOOK_MAX_BODY, XRPC_MAX_BODY, create_app
from bench.queries import build
from core.config import Settings
from openmusic.runtime import Runtime
from payments.auth import ServiceAuth
from tests.conftest import free_port
from tests.test_auth_units import CALLER, DID_KEY, jwt

NS = "fm.openmusic."
CREDIT = NS + "payment.createCreditPurchase"
BALANCE = NS + "payment.getBalance"
EARNINGS = NS + "payment.getEarnings"
SEARCH = NS + "catalog.searchTracks"
MB = 1024 * 1024


class FakePayments:
    """Stands in for ``payments.service.Payments``: records what reached it."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def handle_webhook(self, payload: bytes, signature: str | None) -> dict:
        self.calls.append(("webhook", len(payload)))
        return {"received": True, "duplicate": False}

    async def create_credit_purchase(self, did: str, amount: int, currency: str | None,
                                     payment_method: str | None = None) -> dict:
        self.calls.append(("credit", did, amount))
        return {"clientSecret": "pi_secret"}

    async def balance(self, did: str) -> dict:
        return {"credit": 0, "earnings": 0}

    async def earnings(self, caller: str, artist: str, period: str | None, limit: int, cursor: str | None) -> dict:
        self.calls.append(("earnings", cursor))
        return {"artist": artist, "currency": "USD", "total": 0, "bySource": {}, "balance": 0, "lines": []}


class Counted:
    """ASGI wrapper counting the request-body bytes the app pulled from the server."""

    def __init__(self, app) -> None:
        self.app = app
        self.read = 0

    async def __call__(self, scope, receive, send) -> None:
        async def counting():
            message = await receive()
            if message["type"] == "http.request":
                self.read += len(message.get("body", b""))
            return message
        await self.app(scope, counting, send)


@pytest.fixture(scope="module")
async def web(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hardening")
    sample = build(str(tmp / "db.sqlite"), 60, 600)
    port = free_port()
    rt = Runtime(Settings(db_path=str(tmp / "db.sqlite"), blob_cache_dir=str(tmp / "blobs"), verify_commits=False,
                          port=port, log_level="WARNING"))
    await rt.start(firehose=False)
    payments = FakePayments()
    rt.payments = payments

    async def key(did: str, refresh: bool) -> str | None:
        return DID_KEY if did == CALLER else None

    rt.auth = ServiceAuth("did:web:music.example", key, await rt._connect())
    app = Counted(create_app(rt))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        yield http, app, payments, sample, port
    server.should_exit = True
    await task
    rt.payments = None
    await rt.stop()


def token(lxm: str, **claims) -> dict[str, str]:
    claims = {"aud": "did:web:music.example", "jti": str(time.monotonic_ns())} | claims
    return {"Authorization": f"Bearer {jwt(lxm=lxm, **claims)}"}


@pytest.fixture(autouse=True)
def no_errors_logged(caplog):
    """Nothing a client sends may produce an error (a traceback) in the log."""
    with caplog.at_level(logging.WARNING):
        yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


def xrpc_error(resp: httpx.Response, status: int, error: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == error and isinstance(body["message"], str)
    return body["message"]


# -- item 14: forged cursors --

def raw_cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


FORGED = [raw_cursor(t) for t in (
    '[{"a":1},"x"]', '["x",{"a":1}]', '[1000000000000000000000000000000,"x"]', '[-1000000000000000000000000000000,"x"]',
    '[1e300,"x"]', '[true,"x"]', '[null,"x"]', '[[1],"x"]', '["' + "a" * 600 + '","x"]', '["\\ud800","x"]',
    '[9223372036854775808,"x"]', '[1,2,3]', '[1]', '{"a":1}', '"x"', "[" * 600, '[NaN,"x"]', '[Infinity,"x"]',
)] + ["!!!", "%%%", "a" * 2000, "eyJ4Ijox", "é"]


def cursor_queries(sample: dict) -> list[tuple[str, dict]]:
    artist, track = sample["artists"][0], sample["tracks"][0]
    return [
        (SEARCH, {"q": "neon"}), (SEARCH, {}), (SEARCH, {"sort": "plays"}), (SEARCH, {"q": "neon", "sort": "plays"}),
        (NS + "catalog.getArtistTracks", {"actor": artist}),
        (NS + "listen.getPlays", {"actor": "did:plc:listener" + "0" * 18}),
        (NS + "payment.getTips", {"track": track}),
    ]


async def test_forged_cursors_are_invalid_requests(web):
    http, _, _, sample, _ = web
    for nsid, params in cursor_queries(sample):
        for cursor in FORGED:
            resp = await http.get(f"/xrpc/{nsid}", params={**params, "cursor": cursor})
            assert resp.status_code == 400, (nsid, params, cursor, resp.text)
            assert resp.json()["error"] == "InvalidRequest"


async def test_wrong_kind_of_cursor(web):
    """A cursor of one sort order given to another (a string where an integer is walked) is refused."""
    http, _, _, sample, _ = web
    by_date = (await http.get(f"/xrpc/{SEARCH}", params={"limit": 2})).json()["cursor"]
    by_key = (await http.get(f"/xrpc/{SEARCH}", params={"limit": 2, "q": "neon"})).json()["cursor"]
    xrpc_error(await http.get(f"/xrpc/{SEARCH}", params={"q": "neon", "cursor": by_date}), 400, "InvalidRequest")
    xrpc_error(await http.get(f"/xrpc/{SEARCH}", params={"sort": "plays", "cursor": by_date}), 400, "InvalidRequest")
    xrpc_error(await http.get(f"/xrpc/{SEARCH}", params={"cursor": by_key}), 400, "InvalidRequest")


async def test_real_cursors_still_page(web):
    http, _, _, sample, _ = web
    for nsid, params in cursor_queries(sample)[:6]:
        seen: list[str] = []
        cursor = None
        for _ in range(100):
            page = await http.get(f"/xrpc/{nsid}", params={**params, "limit": 7, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            body = page.json()
            seen += [item["uri"] for item in body.get("tracks", body.get("plays", []))]
            cursor = body.get("cursor")
            if not cursor:
                break
        assert seen and len(seen) == len(set(seen)), nsid


async def test_forged_earnings_cursors(web):
    http, _, payments, _, _ = web
    for cursor in ("1" * 30, "9223372036854775808", "²", "-1", "1.5", "abc", "１２"):
        resp = await http.get(f"/xrpc/{EARNINGS}", params={"cursor": cursor}, headers=token(EARNINGS))
        xrpc_error(resp, 400, "InvalidRequest")
    assert not [c for c in payments.calls if c[0] == "earnings"]
    resp = await http.get(f"/xrpc/{EARNINGS}", params={"cursor": "42"}, headers=token(EARNINGS))
    assert resp.status_code == 200 and payments.calls[-1] == ("earnings", "42")


# -- item 12: bounded request bodies --

async def chunks(total: int, size: int = 64 * 1024):
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


async def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, dict]:
    """Send ``head`` (and a first part of the body) on a raw socket; the status and JSON body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)  # the server closes after a 413
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body) if body.startswith(b"{") else body


async def test_declared_huge_bodies_are_refused_unread(web):
    http, app, payments, _, port = web
    calls, read = len(payments.calls), app.read
    for path, headers in ((f"/xrpc/{CREDIT}", token(CREDIT)), ("/stripe/webhook", {"Stripe-Signature": "t=1,v1=x"}),
                          (f"/xrpc/{SEARCH}", {})):
        auth = "".join(f"{k}: {v}\n" for k, v in headers.items())
        status, body = await raw_request(
            port, f"POST {path} HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: {200 * MB}\n{auth}",
            b"{" * 1000)
        assert status == 413 and body["error"] == "PayloadTooLarge", (path, body)
    assert len(payments.calls) == calls and app.read == read  # refused before anything was read
    status, body = await raw_request(port, "POST /stripe/webhook HTTP/1.1\nHost: x\nContent-Length: 1x\n")
    assert status == 400  # refused by the server itself


async def test_streamed_huge_bodies_are_cut_off(web):
    """A chunked 10 MB body (no Content-Length): counted while read, refused at the limit; the handler
    never buffers it, and the server serves on."""
    http, app, payments, _, _ = web
    calls = len(payments.calls)
    for path, headers, limit in ((f"/xrpc/{CREDIT}", token(CREDIT), XRPC_MAX_BODY),
                                 ("/stripe/webhook", {"Stripe-Signature": "t=1,v1=x"}, WEBHOOK_MAX_BODY)):
        before = app.read
        resp = await http.post(path, content=chunks(10 * MB), headers={**headers, "Content-Type": "application/json"})
        assert "content-length" not in resp.request.headers
        xrpc_error(resp, 413, "PayloadTooLarge")
        assert app.read - before < limit + MB, app.read - before  # at most the limit and what was in flight
    assert len(payments.calls) == calls
    assert (await http.get(f"/xrpc/{SEARCH}")).status_code == 200


async def test_bodies_within_the_limit_are_served(web):
    http, _, payments, _, _ = web
    resp = await http.post("/stripe/webhook", content=b"{" * (WEBHOOK_MAX_BODY - 10),
                           headers={"Stripe-Signature": "t=1,v1=x"})
    assert resp.status_code == 200 and payments.calls[-1] == ("webhook", WEBHOOK_MAX_BODY - 10)
    resp = await http.post(f"/xrpc/{CREDIT}", content=chunks(XRPC_MAX_BODY + 1),
                           headers={**token(CREDIT), "Content-Type": "application/json"})
    xrpc_error(resp, 413, "PayloadTooLarge")
    resp = await http.post(f"/xrpc/{CREDIT}", json={"amount": 500}, headers=token(CREDIT))
    assert resp.status_code == 200 and payments.calls[-1] == ("credit", CALLER, 500)


async def test_webhook_without_signature_is_refused_unread(web):
    http, app, payments, _, _ = web
    calls, read = len(payments.calls), app.read
    xrpc_error(await http.post("/stripe/webhook", content=b"{}"), 400, "InvalidRequest")
    assert len(payments.calls) == calls and app.read == read


# -- item 18: procedure validation messages, JWT aud lists, HEAD --

@pytest.mark.parametrize("body,says", [
    (b'{"amount": "x"}', "amount"),
    (b'{"amount": 1000000000000000000000000000000}', "maximum"),
    (b"{}", "missing required property amount"),
    (b"[1]", "unexpected type list"),
    (b'"x"', "unexpected type str"),
    (b"{", "not JSON"),
    (b'{"amount": 1', "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b'{"amount": 100, "currency": "\\ud800"}', "not JSON"),
    (b"[" * 60_000, "nested too deeply"),
    (b'{"amount": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "nested too deeply"),
    (b'{"amount": ' + b"[" * 500 + b"]" * 500 + b"}", "amount"),
])
async def test_procedure_validation_says_what_is_wrong(web, body, says):
    http, _, payments, _, _ = web
    calls = len(payments.calls)
    resp = await http.post(f"/xrpc/{CREDIT}", content=body, headers={**token(CREDIT), "Content-Type": "application/json"})
    message = xrpc_error(resp, 400, "InvalidRequest")
    assert says in message and len(message) < 400, message
    assert len(payments.calls) == calls


@pytest.mark.parametrize("claims", [{"aud": ["did:web:music.example"]}, {"jti": "j" * 20_000},
                                    {"iss": "did:plc:../../admin"}, {"jti": "j" * 129}])
async def test_bad_tokens_are_401s(web, claims):
    http, _, _, _, _ = web
    resp = await http.get(f"/xrpc/{BALANCE}", headers=token(BALANCE, **claims))
    assert "JWT" in xrpc_error(resp, 401, "InvalidToken")
    assert resp.headers["www-authenticate"].startswith("Bearer")


async def test_head_is_get_without_a_body(web):
    http, _, _, sample, _ = web
    for path, params, headers in ((f"/xrpc/{SEARCH}", {"q": "neon"}, {}),
                                  (f"/xrpc/{NS}catalog.getTrack", {"uri": sample["tracks"][0]}, {}),
                                  (f"/xrpc/{BALANCE}", {}, None)):
        get = await http.get(path, params=params, headers=headers or token(BALANCE))
        head = await http.head(path, params=params, headers=headers or token(BALANCE))
        assert get.status_code == head.status_code == 200, head.text
        assert head.content == b"" and int(head.headers["content-length"]) == len(get.content)
        assert head.headers["content-type"] == get.headers["content-type"]
    head = await http.head(f"/xrpc/{NS}catalog.getTrack", params={"uri": "nope"})
    assert head.status_code == 400 and head.content == b""
    assert (await http.head(f"/xrpc/{NS}nothing.here")).status_code == 501
    assert (await http.head(f"/xrpc/{CREDIT}")).status_code == 405


# -- item 19: a pool of readers --

SLOW_SQL = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) SELECT COUNT(*) FROM n"


async def test_reader_pool_serves_beside_a_slow_query(web, tmp_path_factory):
    """With two readers, a quick query is answered while a slow one runs; with one, it waits."""
    from core.db import ReaderPool

    path = str(next(tmp_path_factory.getbasetemp().glob("hardening*")) / "db.sqlite")
    for size, waits in ((2, False), (1, True)):
        pool = await ReaderPool.open(path, size)
        try:
            slow = asyncio.create_task(pool.execute(SLOW_SQL))
            await asyncio.sleep(0.05)
            rows = await pool.execute("SELECT COUNT(*) FROM track WHERE did = ?", ("did:plc:none",))
            assert (await rows.fetchone())[0] == 0 and await rows.fetchone() is None
            assert slow.done() is waits, size
            assert (await (await slow).fetchall())[0][0] == 3_000_000
            with pytest.raises(Exception, match="readonly|query_only|attempt to write"):
                await pool.execute("DELETE FROM track")
        finally:
            await pool.close()


def test_reader_count_setting():
    assert Settings.from_env({"OPENMUSIC_DB_READERS": "8"}).db_readers == 8
    assert 1 <= Settings.from_env({}).db_readers <= 4


GARBAGE = ["", " ", "0", "-1", "1e3", "99999999999999999999999", "NaN", "true", "[]", "{}", "null", "%00", "\x00",
           "\ud7ff", "did:plc:../../admin", "at://did:plc:x/fm.openmusic.catalog.track/../../x", "a" * 5000,
           "'; DROP TABLE track; --", '"*', "did:web:localhost%3A1", "@handle.invalid", "é" * 300]


async def test_no_query_parameter_gives_a_server_error(web):
    """Every parameter of every query and GET method, given garbage: an XRPC error or an answer, never a 5xx."""
    from appview.payment_methods import PAYMENT_METHODS
    from appview.payment_queries import PAYMENT_QUERIES
    from appview.queries import QUERIES
    from core.lexicons import validator

    http, _, _, _, _ = web
    nsids = list(QUERIES) + list(PAYMENT_QUERIES) + [n for n, (method, _, _) in PAYMENT_METHODS.items() if method == "GET"]
    for nsid in nsids:
        props = (validator().defs[nsid].get("parameters") or {}).get("properties", {})
        for name in props:
            for value in GARBAGE:
                headers = token(nsid) if nsid.startswith(NS + "payment.get") and nsid != NS + "payment.getTips" else {}
                resp = await http.get(f"/xrpc/{nsid}", params={name: value}, headers=headers)
                assert resp.status_code < 500, (nsid, name, value, resp.text)
                if resp.status_code >= 400:
                    assert set(resp.json()) == {"error", "message"}, resp.text
