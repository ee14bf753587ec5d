"""Service-auth JWTs and the identities they name (issue 10, items 13 and 18): claims are checked
before any DID is fetched, DIDs must have a strict syntax, identities learned from requests are
never stored, and failed lookups are remembered for a while, not retried on every request."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import time

import coincurve
import httpx
import pytest
from atproto_crypto.consts import SECP256K1_JWT_ALG
from atproto_crypto.did import format_did_key

from core import db, identity
from core.config import Settings
from core.identity import IdentityResolver, IdentityService, valid_did
from payments.auth import MAX_JTI_CHARS, AuthError, ServiceAuth

SERVICE = "did:web:music.example"
LXM = "fm.openmusic.payment.getBalance"
CALLER = "did:plc:" + "a" * 24
STRANGER = "did:plc:" + "b" * 24
KNOWN = "did:plc:" + "c" * 24
KEY = coincurve.PrivateKey()
DID_KEY = format_did_key(SECP256K1_JWT_ALG, KEY.public_key.format(compressed=True))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(key: coincurve.PrivateKey = KEY, **claims) -> str:
    payload = {"iss": CALLER, "aud": SERVICE, "lxm": LXM, "exp": int(time.time()) + 60, "jti": "j1"} | claims
    payload = {k: v for k, v in payload.items() if v is not None}
    signing_input = f"{b64(json.dumps({'alg': 'ES256K', 'typ': 'JWT'}).encode())}.{b64(json.dumps(payload).encode())}"
    sig = key.sign_recoverable(signing_input.encode(), hasher=lambda m: hashlib.sha256(m).digest())[:64]
    return f"{signing_input}.{b64(sig)}"


@pytest.mark.parametrize("did,ok", [
    (CALLER, True),
    ("did:web:music.example", True),
    ("did:web:localhost%3A2583", True),
    ("did:web:127.0.0.1%3A8080", True),
    ("did:plc:../../admin", False),
    ("did:plc:" + "a" * 23, False),
    ("did:plc:" + "a" * 25, False),
    ("did:plc:" + "A" * 24, False),
    ("did:plc:" + "a" * 23 + "1", False),  # 0, 1, 8, 9 are not base32
    ("did:web:music.example%3A8443", False),  # ports only on localhost
    ("did:web:music.example:path", False),
    ("did:web:music.example/admin", False),
    ("did:web:-bad.example", False),
    ("did:web:a..b", False),
    ("did:web:", False),
    ("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme", False),
    ("did:plc:" + "a" * 24 + "\n", False),
    (None, False),
    (["did:plc:" + "a" * 24], False),
])
def test_did_syntax(did, ok):
    assert valid_did(did) is ok


class Keys:
    """A signing-key source that records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, bool]] = []

    async def __call__(self, did: str, refresh: bool) -> str | None:
        self.asked.append((did, refresh))
        return DID_KEY if did == CALLER else None


@pytest.fixture
async def auth(tmp_path):
    path = str(tmp_path / "auth.sqlite")
    db.migrate(path)
    conn = await db.connect(path)
    keys = Keys()
    yield ServiceAuth(SERVICE, keys, conn), keys, conn
    await conn.close()


async def jtis(conn) -> int:
    cur = await conn.execute("SELECT COUNT(*) FROM auth_jti")
    return (await cur.fetchone())[0]


async def test_a_good_token_once(auth):
    sa, keys, conn = auth
    assert await sa.verify(f"Bearer {jwt()}", LXM) == CALLER
    assert await sa.verify(f"Bearer {jwt(jti='j2', iss=CALLER + '#atproto')}", LXM) == CALLER
    assert all(did == CALLER for did, _ in keys.asked)  # the key of the DID, not of the DID URL
    with pytest.raises(AuthError, match="replayed"):
        await sa.verify(f"Bearer {jwt()}", LXM)


@pytest.mark.parametrize("claims,message", [
    ({"aud": [SERVICE]}, "aud must be one string"),
    ({"aud": [SERVICE, "did:web:other.example"]}, "aud must be one string"),
    ({"aud": "did:web:other.example"}, "is not this service"),
    ({"iss": "did:plc:../../admin"}, "iss is not a valid"),
    ({"iss": "did:web:evil.example/admin"}, "iss is not a valid"),
    ({"iss": "x" * 5000}, "iss is not a valid"),
    ({"iss": None}, "iss is not a valid"),
    ({"jti": "j" * (MAX_JTI_CHARS + 1)}, "jti is longer"),
    ({"jti": "j" * 20_000}, "longer than"),  # the 20 kB jti of the report
    ({"jti": None}, "no jti"),
    ({"lxm": [LXM]}, "lxm must be"),
    ({"exp": None}, "no exp"),
    ({"exp": 10**30}, "lifetime exceeds"),
])
async def test_bad_claims_are_refused_before_any_key_lookup(auth, claims, message):
    sa, keys, conn = auth
    with pytest.raises(AuthError, match=message) as exc:
        await sa.verify(f"Bearer {jwt(**claims)}", LXM)
    assert exc.value.error in ("InvalidToken", "ExpiredToken")
    assert keys.asked == [] and await jtis(conn) == 0


@pytest.mark.parametrize("header", ["Bearer", "Bearer x", "Bearer a.b.c", "Bearer " + "a" * 10_000,
                                    "Bearer e30.e30.e30", "Basic abc", None])
async def test_garbage_is_an_auth_error(auth, header):
    sa, keys, conn = auth
    with pytest.raises(AuthError):
        await sa.verify(header, LXM)
    assert keys.asked == []


async def test_a_wrong_signature_is_refused_and_not_stored(auth):
    sa, keys, conn = auth
    with pytest.raises(AuthError, match="Signature"):
        await sa.verify(f"Bearer {jwt(key=coincurve.PrivateKey())}", LXM)
    assert await jtis(conn) == 0


# -- identities learned from requests: resolved into memory, never stored; failures remembered --

def did_doc(did: str, handle: str | None = None) -> dict:
    doc = {"id": did, "verificationMethod": [{"id": f"{did}#atproto", "type": "Multikey", "controller": did,
                                              "publicKeyMultibase": DID_KEY[len("did:key:"):]}],
           "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                        "serviceEndpoint": "https://pds.example"}]}
    if handle:
        doc["alsoKnownAs"] = [f"at://{handle}"]
    return doc


class Plc:
    """A fake PLC directory and handle resolver: ``docs`` by DID, ``handles`` to DIDs; ``status``
    to answer everything else; every request recorded."""

    def __init__(self) -> None:
        self.docs: dict[str, dict] = {}
        self.handles: dict[str, str] = {}
        self.status = 404
        self.requests: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(str(request.url))
        if request.url.path.endswith("resolveHandle"):
            did = self.handles.get(request.url.params["handle"])
            return httpx.Response(200, json={"did": did}) if did else httpx.Response(400, json={})
        did = request.url.path.lstrip("/")
        if did in self.docs:
            return httpx.Response(200, json=self.docs[did])
        return httpx.Response(self.status, json={"message": "no"})


@pytest.fixture
async def ids(tmp_path):
    path = str(tmp_path / "ids.sqlite")
    db.migrate(path)
    conn = await db.connect(path)
    settings = Settings(db_path=path, plc_url="https://plc.example", handle_resolver_url="https://pds.example")
    plc = Plc()
    async with httpx.AsyncClient(transport=httpx.MockTransport(plc)) as http:
        yield IdentityService(settings, conn, IdentityResolver(settings, http)), plc, conn
    await conn.close()


async def actors(conn) -> list[str]:
    cur = await conn.execute("SELECT did FROM actor ORDER BY did")
    return [r[0] for r in await cur.fetchall()]


async def test_a_jwt_issuer_is_resolved_but_not_stored(ids):
    svc, plc, conn = ids
    plc.docs[STRANGER] = did_doc(STRANGER, "stranger.example")
    plc.handles["stranger.example"] = STRANGER
    assert await svc.signing_key(STRANGER) == DID_KEY
    assert await svc.signing_key(STRANGER) == DID_KEY
    assert await svc.pds(STRANGER) == "https://pds.example"
    assert len([u for u in plc.requests if "bbbb" in u]) == 1  # kept in memory
    assert await actors(conn) == []
    assert await svc.refresh_stale() == 0  # nothing for the sweep to re-resolve forever


async def test_a_handle_looked_up_in_a_query_is_not_stored(ids):
    from appview import queries
    from appview.views import ViewContext
    from appview.xrpc import XrpcError

    svc, plc, conn = ids
    plc.docs[STRANGER] = did_doc(STRANGER, "stranger.example")
    plc.handles["stranger.example"] = STRANGER
    assert await svc.did_for_handle("stranger.example") == STRANGER
    ctx = ViewContext(conn, svc, "http://x")
    with pytest.raises(XrpcError) as exc:
        await queries.get_profile(ctx, {"actor": "stranger.example"})
    assert exc.value.error == "ActorNotFound"
    assert await actors(conn) == []
    requests = len(plc.requests)
    plc.handles.clear()
    assert await svc.did_for_handle("nobody.example") is None
    assert await svc.did_for_handle("nobody.example") is None  # remembered, not asked again
    assert len(plc.requests) == requests + 1


async def test_a_malformed_did_is_never_fetched(ids):
    svc, plc, conn = ids
    for bad in ("did:plc:../../admin", "did:plc:../admin?x=", "did:web:evil.example%2Fadmin", "did:web:a.b:c"):
        assert await svc.signing_key(bad) is None
        assert await svc.refresh(bad, force=True) is None
    assert plc.requests == [] and await actors(conn) == []


async def test_failed_lookups_expire(ids, monkeypatch):
    svc, plc, conn = ids
    clock = [1000.0]
    monkeypatch.setattr(identity.time, "monotonic", lambda: clock[0])
    assert await svc.signing_key(STRANGER) is None  # 404: unknown DID
    assert await svc.signing_key(STRANGER) is None
    assert await svc.signing_key(STRANGER, refresh=True) is None
    assert len(plc.requests) == 1  # remembered
    clock[0] += identity.FAILED_TTL_S + 1
    plc.docs[STRANGER] = did_doc(STRANGER)
    assert await svc.signing_key(STRANGER) == DID_KEY  # tried again once it expired
    assert len(plc.requests) == 2

    plc.status = 503  # transient: remembered briefly, then retried
    from firehose.verify import TransientIdentityError
    with pytest.raises(TransientIdentityError):
        await svc.signing_key(CALLER)
    with pytest.raises(TransientIdentityError):
        await svc.signing_key(CALLER)
    assert len(plc.requests) == 3
    clock[0] += identity.TRANSIENT_TTL_S + 1
    plc.docs[CALLER] = did_doc(CALLER)
    assert await svc.signing_key(CALLER) == DID_KEY
    assert await actors(conn) == []


async def test_known_dids_are_stored_and_permanent_failures_back_off(ids):
    svc, plc, conn = ids
    await conn.execute("INSERT INTO actor (did) VALUES (?), (?)", (KNOWN, STRANGER))  # as the indexer does
    plc.docs[KNOWN] = did_doc(KNOWN, "known.example")
    plc.handles["known.example"] = KNOWN
    assert await svc.refresh(KNOWN) == "known.example"
    cur = await conn.execute("SELECT handle, handle_verified, pds, signing_key FROM actor WHERE did = ?", (KNOWN,))
    assert tuple(await cur.fetchone()) == ("known.example", 1, "https://pds.example", DID_KEY)
    assert await svc.refresh(STRANGER) is None  # gone from the PLC
    assert await svc.refresh_stale() == 0  # not re-resolved by every sweep: after the TTL
    cur = await conn.execute("SELECT resolved_at FROM actor WHERE did = ?", (STRANGER,))
    assert (await cur.fetchone())[0] > time.time() - 5
    requests = len(plc.requests)
    svc.schedule(STRANGER)  # a firehose #identity event is still followed at once
    await svc.refresh(svc.queue.get_nowait(), force=True)
    assert len(plc.requests) == requests + 1


async def test_a_refresh_that_fails_on_the_database_is_queued_again(ids, monkeypatch):
    """A busy database (SQLite past its busy_timeout) must not leave a stored account without its
    handle until the next sweep: the worker queues the DID again, a bounded number of times."""
    import sqlite3

    svc, plc, conn = ids
    plc.docs[CALLER] = did_doc(CALLER, "caller.example")
    plc.handles["caller.example"] = CALLER
    await conn.execute("INSERT INTO actor (did) VALUES (?)", (CALLER,))
    await conn.commit()
    monkeypatch.setattr(identity, "BUSY_RETRY_S", (0.01, 0.01, 0.01))
    real, calls, failing = svc.refresh, [], [2]

    async def refresh(did, strict=False, force=False):
        calls.append(did)
        if failing[0] > 0:
            failing[0] -= 1
            raise sqlite3.OperationalError("database is locked")
        return await real(did, strict=strict, force=force)

    monkeypatch.setattr(svc, "refresh", refresh)
    task = asyncio.create_task(svc.run(concurrency=1))
    try:
        svc.schedule(CALLER)
        for _ in range(200):
            cur = await conn.execute("SELECT handle FROM actor WHERE did = ?", (CALLER,))
            if (await cur.fetchone())[0]:
                break
            await asyncio.sleep(0.01)
        assert len(calls) == 3  # two busy failures, then the refresh that stored the handle
        cur = await conn.execute("SELECT handle FROM actor WHERE did = ?", (CALLER,))
        assert (await cur.fetchone())[0] == "caller.example"

        calls.clear()
        failing[0] = 100  # always busy: tried 1 + len(BUSY_RETRY_S) times, then left to the sweep
        svc.schedule(CALLER)
        await asyncio.sleep(0.3)
        assert len(calls) == 1 + len(identity.BUSY_RETRY_S)
        assert svc._busy_tries == {}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
