"""Units of the web app's sign-in: sealing (AES-GCM round trip, wrong key, other row), keys,
CSRF, the session store (single-use state, expiry), and the OAuth client against a fake
authorization server and PDS (httpx.MockTransport) that checks every DPoP proof: refresh before
expiry with nonce rotation, a refused refresh, a PDS that says the token is invalid, revocation on
sign-out with a confidential client's signed assertion, callback checks (iss, sub, browser), the
client metadata and JWKS, and the pages' answers to bad input."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from starlette.applications import Starlette

from core import db
from core.config import Settings
from web import WebSettings, csrf
from web.app import WebApp, create_web_app, routes
from web.oauth import SessionData, SessionEnded, SessionStore, SignInError, dpop
from web.oauth.client import ClientConfigError
from web.oauth.keys import new_client_key
from web.oauth.store import PendingAuth, PendingError, digest
from web.sealing import KeyConfigError, Sealer, SealError, load_keys, new_key_text, parse_key

ISS = "https://as.example"
PDS = "https://pds.example"
PLC = "https://plc.example"
DID = "did:plc:" + "a" * 24
OTHER = "did:plc:" + "b" * 24
HANDLE = "alice.example"


# --- sealing, keys, CSRF ---------------------------------------------------------------------------

def test_seal_round_trip_wrong_key_other_row_and_tampering():
    key = parse_key(new_key_text())
    sealer = Sealer([key])
    sealed = sealer.seal({"access_token": "secret-token", "n": 1}, "web_session:abc")
    assert b"secret-token" not in sealed
    assert sealer.open(sealed, "web_session:abc") == {"access_token": "secret-token", "n": 1}
    with pytest.raises(SealError):
        Sealer([parse_key(new_key_text())]).open(sealed, "web_session:abc")  # wrong key
    with pytest.raises(SealError):
        sealer.open(sealed, "web_session:other")  # copied into another row
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(SealError):
        sealer.open(bytes(tampered), "web_session:abc")
    # Rotation: a new first key seals, the old one still opens what it sealed.
    rotated = Sealer([parse_key(new_key_text()), key])
    assert rotated.open(sealed, "web_session:abc")["n"] == 1
    assert rotated.open(rotated.seal("x", "c"), "c") == "x"
    with pytest.raises(SealError):
        sealer.open(rotated.seal("x", "c"), "c")


def test_keys_from_env_or_dev_file_only(tmp_path):
    hex_key = os.urandom(32).hex()
    assert load_keys(hex_key, dev_mode=False, data_dir=tmp_path) == [bytes.fromhex(hex_key)]
    with pytest.raises(KeyConfigError):
        parse_key("too-short")
    with pytest.raises(KeyConfigError, match="OPENMUSIC_SESSION_KEY"):
        load_keys("", dev_mode=False, data_dir=tmp_path)
    assert not (tmp_path / "web-session.key").exists()
    first = load_keys("", dev_mode=True, data_dir=tmp_path)
    path = tmp_path / "web-session.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keys("", dev_mode=True, data_dir=tmp_path) == first  # kept across restarts


def test_csrf_tokens_are_bound_and_constant():
    key = os.urandom(32)
    tok = csrf.token(key, "session:abc")
    assert csrf.check(key, "session:abc", tok)
    assert not csrf.check(key, "session:other", tok)
    assert not csrf.check(os.urandom(32), "session:abc", tok)
    assert not csrf.check(key, "session:abc", None)
    assert not csrf.check(key, "session:abc", "")
    assert not csrf.check(key, None, tok)
    assert not csrf.check(key, "session:abc", ["list"])


# --- the store -------------------------------------------------------------------------------------

@pytest.fixture
async def store(tmp_path):
    path = str(tmp_path / "openmusic.sqlite")
    db.migrate(path)
    conn = await db.connect(path)
    yield SessionStore(conn, Sealer([parse_key(new_key_text())]))
    await conn.close()


def pending(state: str = "state-1") -> PendingAuth:
    return PendingAuth(state=state, issuer=ISS, client_id="cid", scope="atproto", pkce_verifier="v" * 64,
                       dpop_key=dpop.key_to_jwk(dpop.new_key()), dpop_nonce=None, did=DID, handle=HANDLE,
                       pds_url=PDS, binding=digest("b"))


def session_data(**kw) -> SessionData:
    values = dict(did=DID, handle=HANDLE, pds_url=PDS, issuer=ISS, client_id="cid", scope="atproto transition:generic",
                  access_token="at-0", refresh_token="rt-0", token_expires_at=int(time.time()) + 3600,
                  dpop_key=dpop.key_to_jwk(dpop.new_key()))
    values.update(kw)
    return SessionData(**values)


async def test_pending_state_is_single_use_and_expires(store):
    now = int(time.time())
    await store.put_pending(pending("s1"), ttl_s=600, now=now)
    got = await store.take_pending("s1", now=now + 1)
    assert got.pkce_verifier == "v" * 64 and got.did == DID
    with pytest.raises(PendingError) as used:
        await store.take_pending("s1", now=now + 2)
    assert used.value.reason == "used"
    with pytest.raises(PendingError) as unknown:
        await store.take_pending("never-issued", now=now)
    assert unknown.value.reason == "unknown"
    await store.put_pending(pending("s2"), ttl_s=600, now=now)
    with pytest.raises(PendingError) as expired:
        await store.take_pending("s2", now=now + 601)
    assert expired.value.reason == "expired"
    # Nothing secret in clear: the state is hashed, the verifier sealed.
    rows = await (await store.conn.execute("SELECT state_hash, sealed FROM web_oauth_request")).fetchall()
    assert all(r["state_hash"] != "s1" and b"vvvv" not in r["sealed"] for r in rows)
    await store.purge(now=now + 600 + 3601)
    assert not await (await store.conn.execute("SELECT 1 FROM web_oauth_request")).fetchall()


async def test_session_round_trip_expiry_and_wrong_key(store):
    now = int(time.time())
    cookie = await store.create_session(session_data(), ttl_s=100, now=now)
    key = digest(cookie)
    row = await (await store.conn.execute("SELECT * FROM web_session")).fetchone()
    assert row["id_hash"] == key and cookie not in json.dumps(dict(row), default=str)
    assert b"at-0" not in row["sealed"] and b"rt-0" not in row["sealed"]
    loaded = await store.load(key, now=now + 1)
    assert loaded.access_token == "at-0" and loaded.refresh_token == "rt-0" and loaded.expires_at == now + 100
    loaded.access_token = "at-1"
    assert await store.save(key, loaded)
    assert (await store.load(key)).access_token == "at-1"
    # Another key does not open it: the session is treated as gone (not crashed on).
    other = SessionStore(store.conn, Sealer([parse_key(new_key_text())]))
    assert await other.load(key) is None
    # Expiry: past expires_at the session is deleted.
    assert await store.load(key, now=now + 100) is None
    assert await store.load(key, now=now) is None
    assert not await store.save(key, loaded)


# --- a fake authorization server and PDS ------------------------------------------------------------

def b64json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class FakeNet:
    """An atproto authorization server + PDS + PLC + handle resolver that checks DPoP proofs,
    demands nonces, rotates refresh tokens and records revocations."""

    def __init__(self) -> None:
        self.as_nonce, self.pds_nonce = "as-nonce-1", "pds-nonce-1"
        self.sub = DID
        self.refresh_ok = True
        self.counter = 0
        self.valid_access: set[str] = set()
        self.valid_refresh: set[str] = set()
        self.revoked: list[tuple[str, str]] = []
        self.assertions: list[str] = []
        self.token_calls: list[dict] = []
        self.nonce_errors = 0
        self.pds_invalid_token_once = False
        self.client_jwks: dict | None = None

    def issue(self) -> dict:
        self.counter += 1
        access, refresh = f"at-{self.counter}", f"rt-{self.counter}"
        self.valid_access.add(access)
        self.valid_refresh.add(refresh)
        return {"access_token": access, "refresh_token": refresh, "token_type": "DPoP", "sub": self.sub,
                "scope": "atproto transition:generic", "expires_in": 3600}

    def check_proof(self, request: httpx.Request, nonce: str, access: str | None = None) -> str | None:
        """Why the DPoP proof is bad (None: good; "nonce": the nonce is stale)."""
        proof = request.headers.get("dpop")
        if not proof:
            return "no proof"
        header = b64json(proof.split(".")[0])
        claims = jwt.decode(proof, ECKey.import_key(header["jwk"])).claims
        parts = urlsplit(str(request.url))
        if claims["htm"] != request.method or claims["htu"] != f"{parts.scheme}://{parts.netloc}{parts.path}":
            return "htm/htu"
        if access is not None:
            ath = base64.urlsafe_b64encode(hashlib.sha256(access.encode()).digest()).decode().rstrip("=")
            if claims.get("ath") != ath:
                return "ath"
        if claims.get("nonce") != nonce:
            return "nonce"
        return None

    def check_assertion(self, form: dict) -> None:
        if self.client_jwks is None:
            assert "client_assertion" not in form
            return
        token = form["client_assertion"]
        assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        claims = jwt.decode(token, KeySet.import_key_set(self.client_jwks)).claims
        assert claims["iss"] == claims["sub"] == form["client_id"] and claims["aud"] == ISS
        assert token not in self.assertions, "an assertion is single use"
        self.assertions.append(token)

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = unquote(str(request.url).split("?")[0])
        if url == f"{PDS}/.well-known/oauth-protected-resource":
            return httpx.Response(200, json={"resource": PDS, "authorization_servers": [ISS]})
        if url == f"{ISS}/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={
                "issuer": ISS, "authorization_endpoint": f"{ISS}/oauth/authorize",
                "token_endpoint": f"{ISS}/oauth/token", "pushed_authorization_request_endpoint": f"{ISS}/oauth/par",
                "revocation_endpoint": f"{ISS}/oauth/revoke", "scopes_supported": ["atproto", "transition:generic"],
                "response_types_supported": ["code"], "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"], "dpop_signing_alg_values_supported": ["ES256"],
                "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
                "authorization_response_iss_parameter_supported": True,
                "require_pushed_authorization_requests": True, "client_id_metadata_document_supported": True})
        if url == f"{PDS}/xrpc/com.atproto.identity.resolveHandle":
            return httpx.Response(200, json={"did": DID})
        if url in (f"{PLC}/{DID}", f"{PLC}/{OTHER}"):
            did = url.rsplit("/", 1)[1]
            return httpx.Response(200, json={
                "id": did, "alsoKnownAs": [f"at://{HANDLE}"] if did == DID else [],
                "verificationMethod": [], "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                                                       "serviceEndpoint": PDS}]})
        if url.startswith(f"{ISS}/oauth/"):
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            problem = self.check_proof(request, self.as_nonce)
            if problem == "nonce":
                self.nonce_errors += 1
                return httpx.Response(400, json={"error": "use_dpop_nonce"}, headers={"DPoP-Nonce": self.as_nonce})
            assert problem is None, problem
            self.check_assertion(form)
            headers = {"DPoP-Nonce": self.as_nonce}
            if url.endswith("/par"):
                return httpx.Response(201, json={"request_uri": "urn:ietf:params:oauth:request_uri:x", "expires_in": 299},
                                      headers=headers)
            if url.endswith("/token"):
                self.token_calls.append(form)
                if form["grant_type"] == "authorization_code":
                    return httpx.Response(200, json=self.issue(), headers=headers)
                if not self.refresh_ok or form["refresh_token"] not in self.valid_refresh:
                    return httpx.Response(400, json={"error": "invalid_grant"}, headers=headers)
                self.valid_refresh.discard(form["refresh_token"])  # rotation: single use
                return httpx.Response(200, json=self.issue(), headers=headers)
            if url.endswith("/revoke"):
                self.revoked.append((form["token_type_hint"], form["token"]))
                self.valid_access.discard(form["token"])
                self.valid_refresh.discard(form["token"])
                return httpx.Response(200, headers=headers)
        if url.startswith(f"{PDS}/xrpc/"):
            auth = request.headers.get("authorization", "")
            access = auth.removeprefix("DPoP ")
            if not auth.startswith("DPoP ") or access not in self.valid_access or self.pds_invalid_token_once:
                self.pds_invalid_token_once = False
                return httpx.Response(401, json={"error": "InvalidToken"},
                                      headers={"WWW-Authenticate": 'DPoP error="invalid_token"'})
            problem = self.check_proof(request, self.pds_nonce, access)
            if problem == "nonce":
                self.nonce_errors += 1
                return httpx.Response(401, json={"error": "use_dpop_nonce"}, headers={
                    "DPoP-Nonce": self.pds_nonce, "WWW-Authenticate": 'DPoP error="use_dpop_nonce"'})
            assert problem is None, problem
            return httpx.Response(200, json={"did": DID, "handle": HANDLE})
        return httpx.Response(404, json={"error": "NotFound"})


def fake_settings(tmp_path: Path, **kw) -> Settings:
    values = dict(plc_url=PLC, handle_resolver_url=PDS, allow_private_hosts=True,
                  db_path=str(tmp_path / "openmusic.sqlite"), host="127.0.0.1", port=8123)
    values.update(kw)
    return Settings(**values)


@pytest.fixture
async def fake(tmp_path):
    net = FakeNet()
    web = WebApp(fake_settings(tmp_path), WebSettings(session_key=new_key_text()),
                 transport=httpx.MockTransport(net.handler))
    await web.start()
    yield net, web
    await web.stop()


async def signed_in(net: FakeNet, web: WebApp) -> str:
    """Sign in through authorize + callback on the fake network; returns the session cookie."""
    url = await web.oauth.authorize(HANDLE, "binding")
    assert url.startswith(f"{ISS}/oauth/authorize?client_id=http%3A%2F%2Flocalhost")
    row = await (await web.conn.execute("SELECT state_hash, sealed FROM web_oauth_request WHERE used_at IS NULL"
                                        )).fetchone()
    # The state only reaches the browser; read it back from the sealed row for the test.
    state = web.sealer.open(row["sealed"], f"web_oauth_request:{row['state_hash']}")["state"]
    cookie, data, next_url = await web.oauth.callback({"state": state, "iss": ISS, "code": "c0de"}, "binding")
    assert data.did == DID and next_url == "/me"
    return cookie


async def test_refresh_before_expiry_with_dpop_nonce_rotation(fake):
    net, web = fake
    cookie = await signed_in(net, web)
    assert net.nonce_errors == 1  # the PAR learned the AS nonce; the token request reused it
    user = await web.oauth.session(cookie)
    assert (await user.describe_repo())["did"] == DID
    assert net.nonce_errors == 2  # the PDS's nonce, learned once
    # Both servers rotate their nonces, and the token is about to expire.
    net.as_nonce, net.pds_nonce = "as-nonce-2", "pds-nonce-2"
    await web.conn.execute("UPDATE web_session SET token_expires_at = ?", (int(time.time()) + 30,))
    user = await web.oauth.session(cookie)
    assert (await user.describe_repo())["did"] == DID
    assert net.token_calls[-1]["grant_type"] == "refresh_token" and net.token_calls[-1]["refresh_token"] == "rt-1"
    assert user.data.access_token == "at-2" and user.data.refresh_token == "rt-2"
    stored = await web.oauth.session(cookie)
    assert stored.data.access_token == "at-2" and stored.data.pds_nonce == "pds-nonce-2"
    assert stored.data.as_nonce == "as-nonce-2"
    # A second object of the same session with the old tokens does not refresh again (rt-1 is spent).
    user.data.access_token = "at-1"
    await web.oauth.refresh(user)
    assert user.data.access_token == "at-2" and len(net.token_calls) == 2


async def test_pds_saying_invalid_token_refreshes_once(fake):
    net, web = fake
    user = await web.oauth.session(await signed_in(net, web))
    net.pds_invalid_token_once = True
    assert (await user.describe_repo())["did"] == DID
    assert user.data.access_token == "at-2"


async def test_refused_refresh_ends_the_session(fake):
    net, web = fake
    cookie = await signed_in(net, web)
    net.refresh_ok = False
    await web.conn.execute("UPDATE web_session SET token_expires_at = 0")
    user = await web.oauth.session(cookie)
    with pytest.raises(SessionEnded):
        await user.describe_repo()
    assert await web.oauth.session(cookie) is None


async def test_callback_checks_iss_sub_and_browser(fake):
    net, web = fake

    async def start() -> str:
        await web.oauth.authorize(HANDLE, "binding")
        row = await (await web.conn.execute("SELECT state_hash, sealed FROM web_oauth_request WHERE used_at IS NULL"
                                            )).fetchone()
        return web.sealer.open(row["sealed"], f"web_oauth_request:{row['state_hash']}")["state"]

    cases = [({"iss": "https://evil.example", "code": "c"}, "binding", "Wrong authorization server"),
             ({"iss": ISS, "code": "c"}, "another-browser", "Different browser"),
             ({"iss": ISS, "code": "c"}, None, "Different browser"),
             ({"iss": ISS, "error": "access_denied"}, "binding", "Sign-in cancelled"),
             ({"iss": ISS}, "binding", "incomplete")]
    for params, binding, title in cases:
        state = await start()
        with pytest.raises(SignInError) as err:
            await web.oauth.callback({"state": state, **params}, binding)
        assert title in err.value.title, (params, err.value)
        assert err.value.status in (400, 403)
    net.sub = OTHER  # the server signs in someone else than the handle we resolved
    state = await start()
    with pytest.raises(SignInError, match="Wrong account"):
        await web.oauth.callback({"state": state, "iss": ISS, "code": "c"}, "binding")
    assert not await (await web.conn.execute("SELECT 1 FROM web_session")).fetchall()


async def test_confidential_client_metadata_assertion_and_revocation(tmp_path):
    net = FakeNet()
    jwk = new_client_key()
    settings = fake_settings(tmp_path, public_url="https://music.example")
    app = create_web_app(settings, WebSettings(session_key=new_key_text(), oauth_private_key=json.dumps(jwk)),
                         transport=httpx.MockTransport(net.handler))
    web: WebApp = app.state.web
    await web.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="https://music.example") as http:
            meta = (await http.get("/oauth/client-metadata.json")).json()
            jwks = (await http.get("/oauth/jwks.json")).json()
        assert meta["client_id"] == "https://music.example/oauth/client-metadata.json"
        assert meta["redirect_uris"] == ["https://music.example/oauth/callback"]
        assert meta["token_endpoint_auth_method"] == "private_key_jwt" and meta["dpop_bound_access_tokens"] is True
        assert meta["jwks_uri"] == "https://music.example/oauth/jwks.json" and meta["scope"].split()[0] == "atproto"
        assert [k["kid"] for k in jwks["keys"]] == [jwk["kid"]] and "d" not in jwks["keys"][0]
        net.client_jwks = jwks  # the fake server verifies every assertion against the served keys
        cookie = await signed_in_confidential(net, web)
        user = await web.oauth.session(cookie)
        tokens = (user.data.refresh_token, user.data.access_token)
        assert await web.oauth.sign_out(cookie)
        assert net.revoked == [("refresh_token", tokens[0]), ("access_token", tokens[1])]
        assert await web.oauth.session(cookie) is None
        assert len(net.assertions) >= 4  # PAR, token, two revocations
    finally:
        await web.stop()


async def signed_in_confidential(net: FakeNet, web: WebApp) -> str:
    url = await web.oauth.authorize(HANDLE, "binding")
    assert "client_id=https%3A%2F%2Fmusic.example%2Foauth%2Fclient-metadata.json" in url
    row = await (await web.conn.execute("SELECT state_hash, sealed FROM web_oauth_request")).fetchone()
    state = web.sealer.open(row["sealed"], f"web_oauth_request:{row['state_hash']}")["state"]
    cookie, _data, _next = await web.oauth.callback({"state": state, "iss": ISS, "code": "c"}, "binding")
    return cookie


async def test_production_needs_its_secrets_and_guards_addresses(tmp_path):
    prod = fake_settings(tmp_path, allow_private_hosts=False, public_url="https://music.example")
    with pytest.raises(KeyConfigError):
        await WebApp(prod, WebSettings()).start()
    with pytest.raises(ClientConfigError, match="OPENMUSIC_OAUTH_PRIVATE_KEY"):
        await WebApp(prod, WebSettings(session_key=new_key_text())).start()
    web = WebApp(prod, WebSettings(session_key=new_key_text(), oauth_private_key=json.dumps(new_client_key())))
    await web.start()
    try:
        for typed in ("http://127.0.0.1:2583", "https://127.0.0.1", "https://10.0.0.1", "https://[::1]"):
            with pytest.raises(SignInError) as err:
                await web.oauth.authorize(typed, "b")
            assert err.value.title == "Address not allowed", typed
    finally:
        await web.stop()


async def test_pages_answer_bad_input_with_clear_4xx(fake):
    net, web = fake
    app = Starlette(routes=routes(web))
    cookie = await signed_in(net, web)
    def client(**cookies) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1:8123", cookies=cookies)

    async with client() as http:
        assert (await http.get("/me")).status_code == 303
        assert (await http.post("/login", data={"identifier": HANDLE})).status_code == 403
        login = await http.get("/login")
        assert login.status_code == 200 and "om_csrf=" in login.headers["set-cookie"]
        assert "HttpOnly" in login.headers["set-cookie"] and "SameSite=lax" in login.headers["set-cookie"]
        loopback = await http.get("/oauth/client-metadata.json")
        assert loopback.status_code == 404 and (await http.get("/oauth/jwks.json")).json() == {"keys": []}
    async with client(om_session="forged-value") as http:
        forged = await http.get("/me")
        assert forged.status_code == 401 and "Not signed in" in forged.text
        assert 'om_session=""' in forged.headers["set-cookie"]  # the bad cookie is dropped
    async with client(om_session=cookie) as http:
        me = await http.get("/me")
        assert me.status_code == 200 and DID in me.text
        assert me.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in me.headers["content-security-policy"]
        for form in ({"x": "1"}, {"csrf_token": "forged"}):
            refused = await http.post("/logout", data=form)
            assert refused.status_code == 403 and "still signed in" in refused.text
        assert await web.oauth.session(cookie) is not None  # nothing changed
        big = await http.post("/logout", content=b"csrf_token=" + b"x" * 20_000,
                              headers={"content-type": "application/x-www-form-urlencoded"})
        assert big.status_code == 413
        assert (await http.post("/logout", json={"a": 1})).status_code == 415
        assert await web.oauth.session(cookie) is not None and not net.revoked
        token = csrf.token(web.sealer.csrf_key, f"session:{digest(cookie)}")
        out = await http.post("/logout", data={"csrf_token": token})
        assert out.status_code == 303 and out.headers["location"] == "/login?signed_out=1"
        assert await web.oauth.session(cookie) is None
        assert [hint for hint, _ in net.revoked] == ["refresh_token", "access_token"]


async def test_sessions_survive_a_restart_and_sign_out_everywhere(tmp_path):
    """Dev mode: the generated key is kept beside the database, so a restarted app opens its
    sessions; "sign out everywhere" revokes and forgets every session of the account."""
    net = FakeNet()
    settings = fake_settings(tmp_path)

    async def started() -> WebApp:
        web = WebApp(settings, WebSettings(), transport=httpx.MockTransport(net.handler))
        await web.start()
        return web

    web = await started()
    first, second = await signed_in(net, web), await signed_in(net, web)
    await web.stop()
    assert (tmp_path / "web-session.key").exists()
    web = await started()
    try:
        user = await web.oauth.session(first)
        assert user.did == DID and (await user.describe_repo())["did"] == DID
        app = Starlette(routes=routes(web))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1:8123",
                                     cookies={"om_session": first}) as http:
            token = csrf.token(web.sealer.csrf_key, f"session:{digest(first)}")
            out = await http.post("/logout", data={"csrf_token": token, "everywhere": "1"})
        assert out.status_code == 303
        assert await web.oauth.session(first) is None and await web.oauth.session(second) is None
        assert len(net.revoked) == 4
    finally:
        await web.stop()


def test_language_negotiation_and_catalogs():
    from babel.messages.pofile import read_po

    from web.i18n import LANGUAGES, LOCALES, negotiate
    assert negotiate("es-MX,es;q=0.9,en;q=0.8") == "es"
    assert negotiate("fr-FR, en;q=0.5, es;q=0.7") == "es"
    assert negotiate("en-GB,es;q=0.1") == "en"
    assert negotiate("fr, de") is None and negotiate("es;q=0") is None and negotiate("es;q=x, en") == "en"
    # Every string of the templates and code (the .pot) is translated in every language's catalog.
    with (LOCALES / "messages.pot").open("rb") as f:
        wanted = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(f) if m.id}
    for lang in LANGUAGES:
        if lang == "en":
            continue
        with (LOCALES / lang / "LC_MESSAGES" / "messages.po").open("rb") as f:
            catalog = read_po(f, locale=lang)
        done = {m.id if isinstance(m.id, str) else m.id[0] for m in catalog
                if m.id and (all(m.string) if isinstance(m.string, tuple) else m.string)}
        assert wanted <= done, f"{lang}: untranslated {sorted(wanted - done)}"


def test_counts_follow_the_locale():
    from web.app import format_number
    from web.i18n import current_locale

    assert format_number(1234567) == "1,234,567" and format_number(None) == ""
    token = current_locale.set("es")
    try:
        assert format_number(1234567) == "1.234.567"
    finally:
        current_locale.reset(token)


def test_language_links_keep_the_query():
    from web.i18n import current_query, lang_href

    token = current_query.set(b"q=neon+harbor&sort=plays&lang=en")
    try:
        assert lang_href("es") == "?q=neon+harbor&sort=plays&lang=es"
    finally:
        current_query.reset(token)
    assert lang_href("en") == "?lang=en"


def test_labelled_content_waits_behind_a_warning(tmp_path):
    """``web.pages.content_warning`` picks the most severe label to warn about (negated ones never
    count); a labelled track's artwork is not shown in lists, and on its page it waits behind a
    "Show the artwork" disclosure with a notice naming the label."""
    from appview.views import ViewContext
    from core.config import Settings
    from web.app import WebApp
    from web.i18n import current_locale
    from web.label_prefs import hidden_for, warning_for
    from web.pages import Pages

    assert warning_for({"labels": [{"val": "!warn"}, {"val": "nudity"}]}) == "nudity"
    assert warning_for({"labels": [{"val": "porn", "neg": True}, {"val": "ai-undisclosed"}]}) == "ai-undisclosed"
    assert warning_for({"labels": [{"val": "!hide"}]}) is None and warning_for({}) is None
    # the viewer's preferences: shown labels do not warn, !warn always does, gore follows graphic-media
    assert warning_for({"labels": [{"val": "!warn"}, {"val": "nudity"}]}, {"nudity": "show"}) == "!warn"
    assert warning_for({"labels": [{"val": "gore"}]}, {"graphic-media": "show"}) is None
    assert hidden_for({"labels": [{"val": "porn"}]}, {"porn": "hide"})
    assert not hidden_for({"labels": [{"val": "porn", "neg": True}]}, {"porn": "hide"})
    assert not hidden_for({"labels": [{"val": "!warn"}]}, {"porn": "hide"})
    web = WebApp(Settings(db_path=str(tmp_path / "t.sqlite")), views=ViewContext(None, None, "http://x"))  # type: ignore[arg-type]
    Pages(web)
    track = {"uri": "at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/fm.openmusic.catalog.track/3kabcdefghijk", "cid": "bafy",
             "title": "Bare", "durationMs": 1000, "audioUrl": "http://x/a", "artworkUrl": "http://x/art.png",
             "artist": {"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "handle": "a.test"}, "plays": 0, "likes": 0,
             "record": {}, "indexedAt": "2026-11-30T00:00:00.000Z", "labels": [{"val": "nudity"}]}
    token = current_locale.set("en")
    try:
        listed = web.templates.environment().get_template("_tracks.html").render(tracks=[track])
        assert "art.png" not in listed.split("data-artwork")[0] and "Labelled: Nudity" in listed
        clean = web.templates.environment().get_template("_tracks.html").render(tracks=[{**track, "labels": []}])
        assert '<img class="art" src="http://x/art.png"' in clean
        env = web.templates.environment()
        shown = env.get_template("_tracks.html").render(tracks=[track], label_prefs={"nudity": "show"})
        assert '<img class="art" src="http://x/art.png"' in shown and "Labelled" not in shown
        gone = env.get_template("_tracks.html").render(tracks=[track, {**track, "title": "Plain", "labels": []}],
                                                       label_prefs={"nudity": "hide"})
        assert ">Bare<" not in gone and ">Plain<" in gone
    finally:
        current_locale.reset(token)
