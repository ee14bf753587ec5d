"""DPoP (RFC 9449) proofs and the ES256 keys behind them, on ``joserfc``.

A session's DPoP key is a fresh P-256 key made for one sign-in; its private JWK is sealed at rest
(``web.sealing``). Servers hand out nonces (``DPoP-Nonce``) and answer ``use_dpop_nonce`` when a
proof lacks the current one: ``is_nonce_error`` recognises that answer, and the callers retry once
with the new nonce (authorization server and PDS nonces are kept apart, as the spec asks)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey


def new_key() -> ECKey:
    """A fresh ES256 (P-256) private key."""
    return ECKey.generate_key("P-256", private=True)


def key_to_jwk(key: ECKey) -> dict:
    """The private JWK of ``key`` (to be sealed, never served)."""
    return key.as_dict(private=True)


def key_from_jwk(jwk: dict) -> ECKey:
    """The key of a private JWK made by ``key_to_jwk``."""
    return ECKey.import_key(jwk)


def _htu(url: str) -> str:
    """The ``htu`` claim: the request URL without query and fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def proof(key: ECKey, method: str, url: str, nonce: str | None = None, access_token: str | None = None) -> str:
    """A DPoP proof JWT for one request (``ath`` when ``access_token`` is given: resource requests)."""
    claims: dict[str, object] = {"jti": secrets.token_urlsafe(16), "htm": method.upper(), "htu": _htu(url),
                                 "iat": int(time.time())}
    if nonce:
        claims["nonce"] = nonce
    if access_token:
        digest = hashlib.sha256(access_token.encode()).digest()
        claims["ath"] = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    return jwt.encode(header, claims, key)


def is_nonce_error(resp: httpx.Response, body: object = None) -> bool:
    """True when ``resp`` asks for a (new) DPoP nonce: a 400 from an authorization server with
    ``{"error": "use_dpop_nonce"}`` or a 401 from a resource server with
    ``WWW-Authenticate: DPoP error="use_dpop_nonce"``. ``body``: the parsed JSON body, when the
    response was streamed (otherwise it is read from ``resp``)."""
    if resp.status_code not in (400, 401):
        return False
    if "use_dpop_nonce" in resp.headers.get("www-authenticate", ""):
        return True
    if body is None:
        try:
            body = resp.json()
        except (ValueError, httpx.ResponseNotRead):
            return False
    return isinstance(body, dict) and body.get("error") == "use_dpop_nonce"
