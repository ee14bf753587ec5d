"""Inter-service auth (atproto XRPC spec, "Inter-Service Authentication"): the JWT a user's PDS
mints (``com.atproto.server.getServiceAuth``) when it proxies a call to us with ``atproto-proxy``.

``ServiceAuth.verify`` checks, in order: the header (``alg`` ES256K or ES256), the signature against
the ``#atproto`` key of the ``iss`` DID document (refreshed once on failure, via the atproto SDK's
``verify_jwt_async``), ``exp`` (required, in the future, at most ``MAX_LIFETIME_S`` away), ``aud``
(our service DID, bare or with our service fragment; other fragments are refused), ``lxm`` (the
NSID being called), and that ``jti`` (required) was not seen before while unexpired.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable

import aiosqlite
from atproto_server.auth.jwt import verify_jwt_async

#: The fragment of our service entry in the did:web document (``did:web:host#openmusic_appview``).
SERVICE_ID = "openmusic_appview"
#: Longest token lifetime accepted (the spec recommends about 60 s).
MAX_LIFETIME_S = 300
ALGS = {"ES256K", "ES256"}


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

    async def _key(self, did: str, refresh: bool) -> str:
        key = await self._signing_key(did, refresh)
        if not key:
            raise AuthError("InvalidToken", f"{did} has no #atproto signing key")
        return key

    async def verify(self, authorization: str | None, lxm: str, now: float | None = None) -> str:
        """The caller's DID, from an ``Authorization: Bearer <jwt>`` header. Raises ``AuthError``."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError("AuthRequired", "this method needs a service-auth JWT (Authorization: Bearer ...)")
        token = authorization[7:].strip()
        try:
            header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        except (ValueError, IndexError) as exc:
            raise AuthError("InvalidToken", "malformed JWT") from exc
        if not isinstance(header, dict) or header.get("alg") not in ALGS:
            raise AuthError("InvalidToken", f"JWT alg must be one of {sorted(ALGS)}")
        try:
            payload = await verify_jwt_async(token, self._key)
        except AuthError:
            raise
        except Exception as exc:  # the SDK's TokenDecodeError / TokenInvalidSignatureError / expiry errors
            name = type(exc).__name__
            raise AuthError("ExpiredToken" if "Expired" in name else "InvalidToken", f"{name}: {exc}") from exc
        now = time.time() if now is None else now
        if payload.exp is None or payload.exp <= now:
            raise AuthError("ExpiredToken", "JWT has no exp or has expired")
        if payload.exp > now + MAX_LIFETIME_S:
            raise AuthError("InvalidToken", f"JWT lifetime exceeds {MAX_LIFETIME_S} s")
        if payload.aud not in self.audiences:
            raise AuthError("InvalidToken", f"JWT aud {payload.aud!r} is not this service ({self.service_did})")
        if getattr(payload, "lxm", None) != lxm:
            raise AuthError("InvalidToken", f"JWT lxm must be {lxm}")
        iss = (payload.iss or "").split("#")[0]
        if not iss.startswith("did:"):
            raise AuthError("InvalidToken", "JWT iss is not a DID")
        if not payload.jti:
            raise AuthError("InvalidToken", "JWT has no jti (needed against replay)")
        await self.db.execute("DELETE FROM auth_jti WHERE exp < ?", (int(now),))
        cur = await self.db.execute("INSERT INTO auth_jti (jti, exp) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                    (f"{iss} {payload.jti}", int(payload.exp)))
        if not cur.rowcount:
            raise AuthError("InvalidToken", "JWT replayed (jti already used)")
        return iss
