"""Inter-service auth (atproto XRPC spec, "Inter-Service Authentication"): the JWT a user's PDS
mints (``com.atproto.server.getServiceAuth``) when it proxies a call to us with ``atproto-proxy``.

``ServiceAuth.verify`` checks, in order: the header (``alg`` ES256K or ES256); the claims, before
anything is fetched: ``iss`` a valid did:plc or did:web (an optional ``#fragment`` aside), ``aud``
one string, our service DID (bare or with our service fragment; other fragments are refused),
``lxm`` the NSID being called, ``exp`` required, in the future and at most ``MAX_LIFETIME_S`` away,
``jti`` required and at most ``MAX_JTI_CHARS``; then the signature against the ``#atproto`` key of
the ``iss`` DID document (refreshed once on failure, via the atproto SDK's ``verify_jwt_async``);
and last that ``jti`` was not seen before while unexpired. A refused token is an ``AuthError``
(401), whatever its content.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import aiosqlite
from atproto_server.auth.jwt import decode_jwt_payload, parse_jwt, verify_jwt_async

from core.identity import valid_did

#: The fragment of our service entry in the did:web document (``did:web:host#openmusic_appview``).
SERVICE_ID = "openmusic_appview"
#: Longest token lifetime accepted (the spec recommends about 60 s).
MAX_LIFETIME_S = 300
ALGS = {"ES256K", "ES256"}
#: Longest ``jti`` accepted (it is stored until the token expires).
MAX_JTI_CHARS = 128
#: Longest token accepted, characters.
MAX_TOKEN_CHARS = 8192


class AuthError(Exception):
    """The request carries no usable service-auth JWT. ``error`` is the XRPC error name
    (``AuthRequired`` / ``InvalidToken`` / ``ExpiredToken``); HTTP status 401."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error


class ServiceAuth:
    """Verifies service-auth JWTs for ``service_did``. ``signing_key(did, refresh)`` gives an
    issuer's ``#atproto`` did:key (``IdentityService.signing_key``); ``db`` stores seen ``jti``s."""

    def __init__(self, service_did: str, signing_key: Callable[[str, bool], Awaitable[str | None]],
                 db: aiosqlite.Connection) -> None:
        self.service_did = service_did
        self.audiences = {service_did, f"{service_did}#{SERVICE_ID}"}
        self._signing_key = signing_key
        self.db = db

    async def _key(self, iss: str, refresh: bool) -> str:
        key = await self._signing_key(iss.split("#")[0], refresh)
        if not key:
            raise AuthError("InvalidToken", f"{iss} has no #atproto signing key")
        return key

    def _claims(self, token: str, lxm: str, now: float) -> tuple[str, str, int]:
        """(issuer DID, jti, exp) of ``token`` once its header and claims pass, before any key is
        fetched. Raises ``AuthError``."""
        try:
            payload_raw, _, header, _ = parse_jwt(token)
            payload = decode_jwt_payload(payload_raw)
        except Exception as exc:  # the SDK's TokenDecodeError, or anything odd in the token
            raise AuthError("InvalidToken", "malformed JWT") from exc
        if header.get("alg") not in ALGS:
            raise AuthError("InvalidToken", f"JWT alg must be one of {sorted(ALGS)}")
        if not isinstance(payload.aud, str):
            raise AuthError("InvalidToken", "JWT aud must be one string: this service's DID")
        if payload.aud not in self.audiences:
            raise AuthError("InvalidToken", f"JWT aud {payload.aud[:300]!r} is not this service ({self.service_did})")
        if getattr(payload, "lxm", None) != lxm:
            raise AuthError("InvalidToken", f"JWT lxm must be {lxm}")
        iss = (payload.iss or "").split("#")[0]
        if not valid_did(iss):
            raise AuthError("InvalidToken", "JWT iss is not a valid did:plc or did:web")
        if payload.exp is None or payload.exp <= now:
            raise AuthError("ExpiredToken", "JWT has no exp or has expired")
        if payload.exp > now + MAX_LIFETIME_S:
            raise AuthError("InvalidToken", f"JWT lifetime exceeds {MAX_LIFETIME_S} s")
        if not payload.jti:
            raise AuthError("InvalidToken", "JWT has no jti (needed against replay)")
        if len(payload.jti) > MAX_JTI_CHARS:
            raise AuthError("InvalidToken", f"JWT jti is longer than {MAX_JTI_CHARS} characters")
        return iss, payload.jti, payload.exp

    async def verify(self, authorization: str | None, lxm: str, now: float | None = None) -> str:
        """The caller's DID, from an ``Authorization: Bearer <jwt>`` header. Raises ``AuthError``."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError("AuthRequired", "this method needs a service-auth JWT (Authorization: Bearer ...)")
        token = authorization[7:].strip()
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("InvalidToken", f"JWT longer than {MAX_TOKEN_CHARS} characters")
        now = time.time() if now is None else now
        iss, jti, exp = self._claims(token, lxm, now)
        try:
            await verify_jwt_async(token, self._key)
        except AuthError:
            raise
        except Exception as exc:  # the SDK's TokenInvalidSignatureError / expiry errors, identity failures
            name = type(exc).__name__
            raise AuthError("ExpiredToken" if "Expired" in name else "InvalidToken", f"{name}: {exc}") from exc
        await self.db.execute("DELETE FROM auth_jti WHERE exp < ?", (int(now),))
        cur = await self.db.execute("INSERT INTO auth_jti (jti, exp) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                    (f"{iss} {jti}", int(exp)))
        if not cur.rowcount:
            raise AuthError("InvalidToken", "JWT replayed (jti already used)")
        return iss
