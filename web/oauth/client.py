"""The ATProto OAuth client of the web app (backend-for-frontend: tokens stay on the server).

Flow (atproto OAuth spec): resolve what the user typed (handle -> DID -> DID document -> PDS, or
a DID, or a PDS URL), find the PDS's authorization server (``/.well-known/oauth-protected-resource``)
and its metadata, send a pushed authorization request (PAR) with PKCE S256 and a DPoP proof, and
send the browser to the authorization page. On the callback: consume the pending request once,
check ``iss`` against the server we chose, exchange the code (DPoP, PKCE verifier), check that
``sub`` is the DID we resolved and that this DID's PDS is served by that same authorization
server (resolved again, uncached), and store the session. Tokens are refreshed before they expire;
sign-out revokes them. DPoP nonces are rotated as the servers ask (one retry per request).

Client kinds: on a loopback public URL without a configured key, the spec's loopback client
(``client_id=http://localhost?redirect_uri=...&scope=...``, redirect on 127.0.0.1, no client
authentication); otherwise a confidential web client (``private_key_jwt`` with an ES256 key,
metadata at ``/oauth/client-metadata.json``, keys at ``/oauth/jwks.json``).

Every outbound request goes through ``web.oauth.http.guarded_client`` (``core.netguard``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import secrets
import time
import weakref
from urllib.parse import quote, urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from core.config import Settings
from core.identity import IdentityError, IdentityResolver, valid_did
from core.netguard import BlockedURL, check_url
from web.oauth import dpop
from web.oauth.http import TooLarge, send_json
from web.oauth.store import PendingAuth, PendingError, SessionData, SessionStore, digest
from web.settings import WebSettings

log = logging.getLogger("openmusic.web.oauth")

#: atproto handle syntax (lower-cased before the check).
_HANDLE = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
#: Seconds authorization server metadata is reused.
METADATA_TTL_S = 300
_LOOPBACK_HOSTS = {"127.0.0.1", "[::1]", "localhost"}


class SignInError(Exception):
    """Signing in cannot go on. ``status`` (4xx), ``title`` and ``message`` are shown to the user."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(f"{title}: {message}")
        self.status, self.title, self.message = status, title, message


class SessionEnded(Exception):
    """The user's session is gone (signed out elsewhere, refresh refused, expired)."""


class PdsError(Exception):
    """The user's PDS answered an XRPC call with an error (``status``, ``error``, ``message``)."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status, self.error, self.message = status, error, message


class ClientConfigError(RuntimeError):
    """The OAuth client cannot be set up from the settings (missing or bad key, public URL)."""


def is_loopback_url(url: str) -> bool:
    """True for ``http://`` URLs on 127.0.0.1, [::1] or localhost."""
    parts = urlsplit(url)
    return parts.scheme == "http" and (parts.hostname or "") in {"127.0.0.1", "::1", "localhost"}


def load_client_key(text: str) -> ECKey:
    """The confidential client's ES256 key from a private JWK (JSON) or PEM. Raises ``ClientConfigError``."""
    text = (text or "").strip()
    try:
        key = ECKey.import_key(json.loads(text) if text.startswith("{") else text.encode())
    except Exception as exc:
        raise ClientConfigError(f"OPENMUSIC_OAUTH_PRIVATE_KEY is not an EC private key: {type(exc).__name__}") from exc
    if key.as_dict(private=False).get("crv") != "P-256" or not key.is_private:
        raise ClientConfigError("OPENMUSIC_OAUTH_PRIVATE_KEY must be a P-256 (ES256) private key")
    return key


def _now() -> int:
    return int(time.time())


class OAuthClient:
    """Signs users in and gives each a ``UserSession`` on their PDS.

    ``http`` must be a ``web.oauth.http.guarded_client``; ``identity`` an ``IdentityResolver`` on
    the same settings. Raises ``ClientConfigError`` when a confidential client has no key."""

    def __init__(self, settings: Settings, web: WebSettings, store: SessionStore, http: httpx.AsyncClient,
                 identity: IdentityResolver) -> None:
        self.settings, self.web, self.store, self.http, self.identity = settings, web, store, http, identity
        self.dev_mode = settings.allow_private_hosts
        base = settings.base_url
        self.key: ECKey | None = load_client_key(web.oauth_private_key) if web.oauth_private_key else None
        self.loopback = self.key is None and is_loopback_url(base)
        if self.loopback:
            # The spec's loopback client: redirect URIs on an IP, never the name localhost.
            parts = urlsplit(base)
            host = "127.0.0.1" if parts.hostname in ("localhost", "127.0.0.1") else "[::1]"
            self.base_url = f"http://{host}:{parts.port or 80}"
        else:
            if self.key is None:
                raise ClientConfigError(f"the public URL {base} is not loopback: a confidential OAuth client needs "
                                        "OPENMUSIC_OAUTH_PRIVATE_KEY (an ES256 private JWK or PEM)")
            if not base.startswith("https://") and not self.dev_mode:
                raise ClientConfigError(f"the public URL must be https for a confidential OAuth client: {base}")
            self.base_url = base
        self.redirect_uri = f"{self.base_url}/oauth/callback"
        self.kid = (self.key.kid or self.key.thumbprint()) if self.key else None
        self._meta_cache: dict[str, tuple[float, dict]] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # -- client identity ---------------------------------------------------------------------------
    def client_id(self, scope: str) -> str:
        """The client ID used with ``scope`` (loopback client IDs carry their scope)."""
        if self.loopback:
            return (f"http://localhost?redirect_uri={quote(self.redirect_uri, safe='')}"
                    f"&scope={quote(scope, safe='')}")
        return f"{self.base_url}/oauth/client-metadata.json"

    def all_scopes(self) -> str:
        """The union of the configured and fallback scopes, ``atproto`` first (client metadata)."""
        seen: list[str] = []
        for s in (self.web.oauth_scope + " " + self.web.oauth_fallback_scope).split():
            if s not in seen:
                seen.append(s)
        return " ".join(sorted(seen, key=lambda s: s != "atproto"))

    def client_metadata(self) -> dict | None:
        """The confidential client's metadata document (None for the loopback client, which has none)."""
        if self.loopback:
            return None
        return {
            "client_id": self.client_id(self.web.oauth_scope),
            "client_name": "Open Music",
            "client_uri": self.base_url,
            "application_type": "web",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [self.redirect_uri],
            "scope": self.all_scopes(),
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256",
            "jwks_uri": f"{self.base_url}/oauth/jwks.json",
            "dpop_bound_access_tokens": True,
        }

    def jwks(self) -> dict:
        """The public keys of the confidential client (``{"keys": []}`` for the loopback client)."""
        if self.key is None:
            return {"keys": []}
        pub = ECKey.import_key(self.key.as_dict(private=False))
        data = KeySet([pub]).as_dict()
        for k in data["keys"]:
            k.update({"kid": self.kid, "use": "sig", "alg": "ES256"})
        return data

    def _client_auth(self, client_id: str, issuer: str) -> dict[str, str]:
        """Client authentication fields for a token-endpoint request."""
        if self.key is None:
            return {"client_id": client_id}
        now = _now()
        assertion = jwt.encode({"alg": "ES256", "kid": self.kid, "typ": "JWT"},
                               {"iss": client_id, "sub": client_id, "aud": issuer, "jti": secrets.token_urlsafe(16),
                                "iat": now, "exp": now + 60}, self.key)
        return {"client_id": client_id, "client_assertion": assertion,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}

    # -- discovery ---------------------------------------------------------------------------------
    async def _get_json(self, url: str, what: str) -> dict:
        try:
            resp, body = await send_json(self.http, "GET", url)
        except BlockedURL as exc:
            raise SignInError(400, "Address not allowed", f"{what} is at an address we do not contact: {exc}") from exc
        except (httpx.HTTPError, TooLarge) as exc:
            raise SignInError(400, "Server unreachable", f"We could not reach {what} ({url}): "
                                                         f"{type(exc).__name__}") from exc
        if resp.status_code != 200 or not isinstance(body, dict):
            raise SignInError(400, "Not an atproto OAuth server",
                              f"{what} did not answer {url} as expected (HTTP {resp.status_code}).")
        return body

    async def authorization_server(self, pds_url: str) -> str:
        """The issuer of ``pds_url``'s authorization server (its protected-resource metadata)."""
        origin = pds_url.rstrip("/")
        body = await self._get_json(f"{origin}/.well-known/oauth-protected-resource", "the PDS")
        servers = body.get("authorization_servers")
        if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
            raise SignInError(400, "Not an atproto OAuth server", f"{origin} names no authorization server.")
        return servers[0].rstrip("/")

    async def server_metadata(self, issuer: str) -> dict:
        """``issuer``'s checked authorization server metadata (cached ``METADATA_TTL_S``)."""
        hit = self._meta_cache.get(issuer)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        meta = await self._get_json(f"{issuer}/.well-known/oauth-authorization-server", "the authorization server")
        problem = self._metadata_problem(meta, issuer)
        if problem:
            raise SignInError(400, "Unsupported authorization server", f"{issuer}: {problem}")
        self._meta_cache[issuer] = (time.monotonic() + METADATA_TTL_S, meta)
        return meta

    def _metadata_problem(self, meta: dict, issuer: str) -> str | None:
        """Why ``meta`` is not an atproto authorization server's metadata for ``issuer`` (None: fine)."""
        if meta.get("issuer") != issuer:
            return f"metadata names issuer {meta.get('issuer')!r}"
        parts = urlsplit(issuer)
        if parts.scheme != "https" and not (self.dev_mode and parts.scheme == "http"):
            return "the issuer must be https"
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            return "the issuer must be an origin"
        for field in ("authorization_endpoint", "token_endpoint", "pushed_authorization_request_endpoint"):
            if not isinstance(meta.get(field), str):
                return f"no {field}"
        checks = [("S256", "code_challenge_methods_supported"), ("ES256", "dpop_signing_alg_values_supported"),
                  ("atproto", "scopes_supported"), ("authorization_code", "grant_types_supported"),
                  ("refresh_token", "grant_types_supported"), ("code", "response_types_supported"),
                  ("private_key_jwt" if self.key else "none", "token_endpoint_auth_methods_supported")]
        for value, field in checks:
            if value not in (meta.get(field) or []):
                return f"{field} lacks {value}"
        if self.key and "ES256" not in (meta.get("token_endpoint_auth_signing_alg_values_supported") or []):
            return "token_endpoint_auth_signing_alg_values_supported lacks ES256"
        if meta.get("authorization_response_iss_parameter_supported") is not True:
            return "no iss in authorization responses"
        if meta.get("client_id_metadata_document_supported") is not True:
            return "no client ID metadata documents"
        return None

    async def _resolve_input(self, text: str) -> tuple[str | None, str | None, str]:
        """What the user typed -> (DID or None, handle or None, PDS URL). Raises ``SignInError``."""
        text = text.strip()
        if not text:
            raise SignInError(400, "Enter your handle", "Type your handle (like alice.bsky.social), DID or PDS address.")
        if len(text) > 512:
            raise SignInError(400, "That is too long", "A handle, DID or PDS address is shorter than that.")
        if text.startswith(("https://", "http://")):
            parts = urlsplit(text)
            if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
                raise SignInError(400, "Not a PDS address", "Give the PDS as an origin, like https://pds.example.com.")
            try:
                await check_url(text, self.dev_mode)
            except BlockedURL as exc:
                raise SignInError(400, "Address not allowed", str(exc)) from exc
            return None, None, f"{parts.scheme}://{parts.netloc}"
        if text.startswith("did:"):
            if not valid_did(text):
                raise SignInError(400, "Not a valid DID", "A DID looks like did:plc:… or did:web:….")
            did, handle = text, None
        else:
            handle = text.lstrip("@").lower()
            if not _HANDLE.fullmatch(handle):
                raise SignInError(400, "Not a valid handle",
                                  f"“{text[:80]}” is not a handle. A handle looks like alice.bsky.social.")
            did = await self.identity.resolve_handle(handle)
            if did is None:
                raise SignInError(404, "Handle not found", f"No account answers to @{handle}.")
        try:
            info = await self.identity.resolve_did(did)
        except IdentityError as exc:
            raise SignInError(404 if not exc.transient else 400, "Account not found",
                              f"We could not resolve {did}: {exc}") from exc
        if not info.pds:
            raise SignInError(400, "No PDS", f"{did} names no PDS.")
        if handle is None:
            # A DID was typed: show its handle only when the handle resolves back to it.
            if info.handle and await self.identity.resolve_handle(info.handle) == did:
                handle = info.handle
        elif info.handle != handle:
            handle = None  # the DID document does not claim it: not verified both ways
        return did, handle, info.pds.rstrip("/")

    # -- authorization -----------------------------------------------------------------------------
    async def authorize(self, text: str, binding: str, next_url: str = "/me") -> str:
        """Start signing in the account named by ``text`` (handle, DID or PDS URL) for the browser
        whose binding cookie is ``binding``. Returns the authorization page's URL. Raises ``SignInError``."""
        await self.store.purge()
        did, handle, pds_url = await self._resolve_input(text)
        issuer = await self.authorization_server(pds_url)
        meta = await self.server_metadata(issuer)
        verifier = secrets.token_urlsafe(64)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        key = dpop.new_key()
        state = secrets.token_urlsafe(32)
        scope = self.web.oauth_scope
        params = {"response_type": "code", "code_challenge": challenge, "code_challenge_method": "S256",
                  "state": state, "redirect_uri": self.redirect_uri}
        if did or handle:
            params["login_hint"] = handle or did
        resp, body, nonce = await self._post_as(meta["pushed_authorization_request_endpoint"], issuer, key, None,
                                                {**params, "scope": scope, **self._client_auth(self.client_id(scope), issuer)})
        if (resp.status_code == 400 and isinstance(body, dict) and body.get("error") == "invalid_scope"
                and scope != self.web.oauth_fallback_scope):
            log.info("%s refused scope %r (%s); asking for %r", issuer, scope, body.get("error_description"),
                     self.web.oauth_fallback_scope)
            scope = self.web.oauth_fallback_scope
            resp, body, nonce = await self._post_as(
                meta["pushed_authorization_request_endpoint"], issuer, key, nonce,
                {**params, "scope": scope, **self._client_auth(self.client_id(scope), issuer)})
        if resp.status_code not in (200, 201) or not isinstance(body, dict) or not isinstance(body.get("request_uri"), str):
            detail = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
            raise SignInError(400, "The authorization server refused to start",
                              f"{issuer} answered HTTP {resp.status_code}{': ' + str(detail) if detail else ''}.")
        await self.store.put_pending(PendingAuth(
            state=state, issuer=issuer, client_id=self.client_id(scope), scope=scope, pkce_verifier=verifier,
            dpop_key=dpop.key_to_jwk(key), dpop_nonce=nonce, did=did, handle=handle, pds_url=pds_url,
            binding=digest(binding), next_url=next_url), self.web.auth_request_ttl_s)
        url = f"{meta['authorization_endpoint']}?{urlencode({'client_id': self.client_id(scope), 'request_uri': body['request_uri']})}"
        if not url.startswith("https://") and not self.dev_mode:
            raise SignInError(400, "Unsupported authorization server", "its authorization page is not https")
        return url

    async def _post_as(self, url: str, issuer: str, key: ECKey, nonce: str | None, data: dict,
                       ) -> tuple[httpx.Response, object, str | None]:
        """POST a form to an authorization server endpoint with a DPoP proof, retrying once with a
        new nonce when asked. Returns (response, JSON body, latest nonce). Raises ``SignInError``
        when the server cannot be reached."""
        for attempt in range(2):
            try:
                resp, body = await send_json(self.http, "POST", url, data=data,
                                             headers={"DPoP": dpop.proof(key, "POST", url, nonce)})
            except BlockedURL as exc:
                raise SignInError(400, "Address not allowed", str(exc)) from exc
            except (httpx.HTTPError, TooLarge) as exc:
                raise SignInError(400, "Server unreachable", f"We could not reach {issuer}: {type(exc).__name__}") from exc
            nonce = resp.headers.get("dpop-nonce") or nonce
            if attempt == 0 and dpop.is_nonce_error(resp, body):
                if "client_assertion" in data:  # an assertion's jti is single use
                    data = {**data, **self._client_auth(data["client_id"], issuer)}
                continue
            break
        return resp, body, nonce

    async def callback(self, params: dict[str, str], binding: str | None) -> tuple[str, SessionData, str]:
        """Finish signing in from the callback's query ``params``. Returns (session cookie value,
        session, where to go next). Raises ``SignInError``."""
        state = params.get("state")
        if not state:
            raise SignInError(400, "Sign-in link incomplete", "This address lacks its state: start signing in again.")
        try:
            pending = await self.store.take_pending(state)
        except PendingError as exc:
            messages = {"used": ("Sign-in link already used", "This sign-in was already completed or cancelled. "
                                 "Links from the authorization page work once: start again."),
                        "expired": ("Sign-in took too long", "This sign-in expired. Start again."),
                        "unknown": ("Unknown sign-in", "We did not start this sign-in. Start again from our "
                                    "sign-in page.")}
            title, message = messages[exc.reason]
            raise SignInError(400, title, message) from exc
        if not binding or digest(binding) != pending.binding:
            raise SignInError(400, "Different browser", "This sign-in was started in another browser (or its cookie "
                              "was lost). Start again here.")
        if params.get("iss") != pending.issuer:
            raise SignInError(400, "Wrong authorization server",
                              f"The answer came from {params.get('iss')!r}, not {pending.issuer}.")
        if "error" in params:
            if params["error"] == "access_denied":
                raise SignInError(403, "Sign-in cancelled", "You did not allow Open Music to use your account. "
                                  "Nothing was changed.")
            raise SignInError(400, "Sign-in failed", f"The authorization server said: {params['error'][:100]} "
                              f"{params.get('error_description', '')[:300]}")
        code = params.get("code")
        if not code:
            raise SignInError(400, "Sign-in link incomplete", "The authorization server sent no code.")
        meta = await self.server_metadata(pending.issuer)
        key = dpop.key_from_jwk(pending.dpop_key)
        resp, body, nonce = await self._post_as(meta["token_endpoint"], pending.issuer, key, pending.dpop_nonce, {
            "grant_type": "authorization_code", "code": code, "code_verifier": pending.pkce_verifier,
            "redirect_uri": self.redirect_uri, **self._client_auth(pending.client_id, pending.issuer)})
        tokens = self._check_tokens(resp, body, pending.issuer)
        sub = tokens["sub"]
        if pending.did is not None and sub != pending.did:
            raise SignInError(400, "Wrong account", f"The authorization server signed in {sub}, not {pending.did}.")
        # The DID's PDS must be served by this authorization server (resolved again, uncached).
        try:
            info = await self.identity.resolve_did(sub)
        except IdentityError as exc:
            raise SignInError(400, "Account not found", f"We could not resolve {sub}: {exc}") from exc
        if not info.pds or await self.authorization_server(info.pds) != pending.issuer:
            raise SignInError(400, "Wrong authorization server", f"{pending.issuer} does not speak for {sub}.")
        handle = pending.handle if pending.did else None
        if handle is None and info.handle and await self.identity.resolve_handle(info.handle) == sub:
            handle = info.handle
        data = SessionData(did=sub, handle=handle, pds_url=info.pds.rstrip("/"), issuer=pending.issuer,
                           client_id=pending.client_id, scope=tokens["scope"], access_token=tokens["access_token"],
                           refresh_token=tokens.get("refresh_token"), token_expires_at=tokens.get("expires_at"),
                           dpop_key=pending.dpop_key, as_nonce=nonce)
        cookie = await self.store.create_session(data, self.web.session_ttl_s)
        next_url = pending.next_url if pending.next_url.startswith("/") and not pending.next_url.startswith("//") else "/me"
        return cookie, data, next_url

    def _check_tokens(self, resp: httpx.Response, body: object, issuer: str) -> dict:
        """A token response's fields, checked; ``expires_at`` added. Raises ``SignInError``."""
        if resp.status_code != 200 or not isinstance(body, dict):
            detail = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
            raise SignInError(400, "Token exchange failed",
                              f"{issuer} answered HTTP {resp.status_code}{': ' + str(detail) if detail else ''}.")
        if not isinstance(body.get("access_token"), str) or str(body.get("token_type", "")).lower() != "dpop":
            raise SignInError(400, "Token exchange failed", f"{issuer} sent no DPoP-bound access token.")
        if not valid_did(body.get("sub")):
            raise SignInError(400, "Token exchange failed", f"{issuer} named no valid account (sub).")
        scope = body.get("scope")
        if not isinstance(scope, str) or "atproto" not in scope.split():
            raise SignInError(400, "Token exchange failed", f"{issuer} did not grant the atproto scope.")
        out = dict(body)
        expires_in = body.get("expires_in")
        out["expires_at"] = _now() + int(expires_in) if isinstance(expires_in, int) and expires_in > 0 else None
        if not isinstance(body.get("refresh_token"), str):
            out["refresh_token"] = None
        return out

    # -- sessions ----------------------------------------------------------------------------------
    async def session(self, cookie: str | None) -> UserSession | None:
        """The live session of a session cookie, or None."""
        if not cookie or len(cookie) > 128:
            return None
        key = digest(cookie)
        data = await self.store.load(key)
        return UserSession(self, key, data) if data else None

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def refresh(self, user: UserSession) -> None:
        """New tokens for ``user`` (refresh grant). Raises ``SessionEnded`` when the server refuses
        (the session is deleted), ``SignInError`` when it cannot be reached (the session is kept)."""
        async with self._lock(user.key):
            # Another request (or process) may have refreshed while this one waited.
            current = await self.store.load(user.key)
            if current is None:
                raise SessionEnded("signed out")
            if current.access_token != user.data.access_token:
                user.data = current
                return
            data = current
            if not data.refresh_token:
                await self.store.delete(user.key)
                raise SessionEnded("no refresh token")
            meta = await self.server_metadata(data.issuer)
            key = dpop.key_from_jwk(data.dpop_key)
            resp, body, nonce = await self._post_as(meta["token_endpoint"], data.issuer, key, data.as_nonce, {
                "grant_type": "refresh_token", "refresh_token": data.refresh_token,
                **self._client_auth(data.client_id, data.issuer)})
            if resp.status_code in (400, 401) and isinstance(body, dict) and body.get("error") in (
                    "invalid_grant", "invalid_client", "unauthorized_client"):
                # A refresh token is single use: if another process used it, its new tokens are stored.
                again = await self.store.load(user.key)
                if again is not None and again.refresh_token != data.refresh_token:
                    user.data = again
                    return
                await self.store.delete(user.key)
                raise SessionEnded(f"refresh refused: {body.get('error')}")
            tokens = self._check_tokens(resp, body, data.issuer)
            if tokens["sub"] != data.did:
                await self.store.delete(user.key)
                raise SessionEnded("refresh answered for another account")
            data.access_token = tokens["access_token"]
            data.refresh_token = tokens.get("refresh_token") or data.refresh_token
            data.token_expires_at = tokens.get("expires_at")
            data.scope = tokens["scope"]
            data.as_nonce = nonce
            if not await self.store.save(user.key, data):
                raise SessionEnded("signed out meanwhile")
            user.data = data

    async def sign_out(self, cookie: str | None) -> bool:
        """Revoke the session's tokens at its authorization server (best effort) and forget it.
        Returns False when there was no such session."""
        user = await self.session(cookie)
        if user is None:
            return False
        await self._revoke(user.data)
        await self.store.delete(user.key)
        return True

    async def sign_out_everywhere(self, did: str) -> int:
        """Revoke and forget every session of ``did``; returns how many there were."""
        keys = await self.store.keys_for(did)
        for key in keys:
            data = await self.store.load(key)
            if data is not None:
                await self._revoke(data)
            await self.store.delete(key)
        return len(keys)

    async def _revoke(self, data: SessionData) -> None:
        try:
            meta = await self.server_metadata(data.issuer)
        except SignInError as exc:
            log.warning("cannot revoke tokens of %s: %s", data.did, exc)
            return
        url = meta.get("revocation_endpoint")
        if not isinstance(url, str):
            return
        key = dpop.key_from_jwk(data.dpop_key)
        nonce = data.as_nonce
        for hint, token in (("refresh_token", data.refresh_token), ("access_token", data.access_token)):
            if not token:
                continue
            try:
                resp, body, nonce = await self._post_as(url, data.issuer, key, nonce, {
                    "token": token, "token_type_hint": hint, **self._client_auth(data.client_id, data.issuer)})
            except SignInError as exc:
                log.warning("revoking a %s of %s failed: %s", hint, data.did, exc)
                continue
            if resp.status_code != 200:
                log.warning("revoking a %s of %s: HTTP %s %s", hint, data.did, resp.status_code, body)


class UserSession:
    """An authenticated, DPoP-bound XRPC session on the signed-in user's own PDS.

    Access tokens are refreshed ``refresh_margin_s`` before they expire (and once more when the PDS
    says a token is invalid); PDS DPoP nonces are rotated as asked and kept with the session."""

    def __init__(self, client: OAuthClient, key: str, data: SessionData) -> None:
        self.client, self.key, self.data = client, key, data

    @property
    def did(self) -> str:
        return self.data.did

    @property
    def handle(self) -> str | None:
        return self.data.handle

    @property
    def pds_url(self) -> str:
        return self.data.pds_url

    async def request(self, method: str, nsid: str, *, params: dict | None = None, json: object = None,
                      content: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        """Call ``/xrpc/<nsid>`` on the user's PDS as the user. Raises ``SessionEnded`` when the
        session cannot go on, ``httpx.HTTPError`` / ``BlockedURL`` on network trouble with the PDS,
        ``SignInError`` when a needed refresh cannot reach the authorization server."""
        url = f"{self.data.pds_url}/xrpc/{nsid}"
        margin = self.client.web.refresh_margin_s
        if self.data.token_expires_at is not None and self.data.token_expires_at - margin <= _now():
            await self.client.refresh(self)
        refreshed = False
        for _attempt in range(3):
            key = dpop.key_from_jwk(self.data.dpop_key)
            hdrs = dict(headers or {})
            hdrs["Authorization"] = f"DPoP {self.data.access_token}"
            sent_nonce = self.data.pds_nonce
            hdrs["DPoP"] = dpop.proof(key, method, url, sent_nonce, self.data.access_token)
            resp = await self.client.http.request(method, url, params=params, json=json, content=content,
                                                  headers=hdrs)
            new_nonce = resp.headers.get("dpop-nonce")
            if new_nonce and new_nonce != self.data.pds_nonce:
                self.data.pds_nonce = new_nonce
                await self.client.store.save(self.key, self.data)
            # retry with the fresh nonce, also when a concurrent request of this session stored it first
            if new_nonce and new_nonce != sent_nonce and dpop.is_nonce_error(resp):
                continue
            if resp.status_code == 401 and "invalid_token" in resp.headers.get("www-authenticate", "") and not refreshed:
                refreshed = True
                await self.client.refresh(self)
                continue
            return resp
        return resp

    async def call(self, method: str, nsid: str, **kwargs) -> dict:
        """``request`` that returns the JSON body and raises ``PdsError`` on an XRPC error."""
        resp = await self.request(method, nsid, **kwargs)
        try:
            body = resp.json() if resp.content else {}
        except ValueError:
            body = {}
        if resp.status_code >= 300:
            body = body if isinstance(body, dict) else {}
            raise PdsError(resp.status_code, str(body.get("error") or "Error"), str(body.get("message") or resp.text[:200]))
        return body if isinstance(body, dict) else {}

    async def describe_repo(self) -> dict:
        """``com.atproto.repo.describeRepo`` of the user's repo."""
        return await self.call("GET", "com.atproto.repo.describeRepo", params={"repo": self.did})

    async def create_record(self, collection: str, record: dict, rkey: str | None = None) -> dict:
        """``com.atproto.repo.createRecord`` in the user's repo; returns ``{uri, cid}``."""
        body = {"repo": self.did, "collection": collection, "record": record}
        if rkey:
            body["rkey"] = rkey
        return await self.call("POST", "com.atproto.repo.createRecord", json=body)

    async def create_record_once(self, collection: str, record: dict, rkey: str | None) -> dict:
        """``create_record`` under ``rkey`` (a form's record key). When the PDS refuses and a record
        already has that key (the same form sent twice: a double click, a resend after a lost answer),
        that record is the answer (its ``{uri, cid}``) and nothing is written again. Without ``rkey``, a
        plain create. Raises ``PdsError`` for any other refusal."""
        try:
            return await self.create_record(collection, record, rkey=rkey)
        except PdsError:
            existing = await self.get_record(collection, rkey) if rkey else None
            if existing is None:
                raise
            return {"uri": existing.get("uri") or f"at://{self.did}/{collection}/{rkey}", "cid": existing.get("cid")}

    async def delete_record(self, collection: str, rkey: str) -> None:
        """``com.atproto.repo.deleteRecord`` in the user's repo."""
        await self.call("POST", "com.atproto.repo.deleteRecord",
                        json={"repo": self.did, "collection": collection, "rkey": rkey})

    async def get_record(self, collection: str, rkey: str) -> dict | None:
        """``com.atproto.repo.getRecord`` in the user's repo: ``{uri, cid, value}``, or None when the
        PDS has no such record (``RecordNotFound``). Raises ``PdsError`` on any other refusal."""
        try:
            return await self.call("GET", "com.atproto.repo.getRecord",
                                   params={"repo": self.did, "collection": collection, "rkey": rkey})
        except PdsError as exc:
            if exc.error == "RecordNotFound":
                return None
            raise

    async def put_record(self, collection: str, rkey: str, record: dict, *, swap_record: str | None = None,
                         expect_new: bool = False) -> dict:
        """``com.atproto.repo.putRecord`` (create or replace) in the user's repo; returns ``{uri, cid}``.
        ``swap_record``: only replace the record at that CID; ``expect_new``: only create (both answered
        ``PdsError`` ``InvalidSwap`` by the PDS when the record is not as expected)."""
        body: dict = {"repo": self.did, "collection": collection, "rkey": rkey, "record": record}
        if swap_record is not None:
            body["swapRecord"] = swap_record
        elif expect_new:
            body["swapRecord"] = None  # null: the record must not exist yet
        return await self.call("POST", "com.atproto.repo.putRecord", json=body)

    async def upload_blob(self, data: bytes, mime_type: str) -> dict:
        """``com.atproto.repo.uploadBlob``: returns the blob ref in its JSON form
        (``{"$type": "blob", "ref": {"$link": cid}, "mimeType", "size"}``, the PDS's sniffed type)."""
        body = await self.call("POST", "com.atproto.repo.uploadBlob", content=data,
                               headers={"Content-Type": mime_type})
        blob = body.get("blob")
        if not isinstance(blob, dict):
            raise PdsError(502, "InvalidResponse", "uploadBlob answered without a blob")
        return blob

    async def service_auth(self, aud: str, lxm: str, exp: int | None = None) -> str:
        """A service-auth JWT for ``aud`` (our service DID) and method ``lxm``, minted by the user's
        PDS (``com.atproto.server.getServiceAuth``): how the web app calls our own procedures."""
        params: dict[str, object] = {"aud": aud, "lxm": lxm}
        if exp is not None:
            params["exp"] = exp
        return str((await self.call("GET", "com.atproto.server.getServiceAuth", params=params))["token"])
