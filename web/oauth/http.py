"""The one HTTP client the OAuth code uses, SSRF-guarded by ``core.netguard``.

Every request (there are no redirects: they are not followed) is checked with ``check_url``
against ``Settings.allow_private_hosts``: in production only https to public addresses; on a dev
network (the flag on) loopback and plain http too. The hosts it reaches are named by untrusted
input (a handle's DID document, a PDS's resource metadata), so the guard sits in the transport
rather than at each call. JSON bodies from those hosts are read up to ``MAX_JSON_BYTES``."""

from __future__ import annotations

import json

import httpx

from core.netguard import BlockedURL, check_url

#: Largest metadata / token response read, bytes.
MAX_JSON_BYTES = 256 * 1024
#: Seconds for any one request to an authorization server or PDS.
TIMEOUT_S = 10.0


class GuardedTransport(httpx.AsyncBaseTransport):
    """Checks each request's URL with ``check_url`` before ``inner`` sends it."""

    def __init__(self, allow_private: bool, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.allow_private = allow_private
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await check_url(str(request.url), self.allow_private)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def guarded_client(allow_private: bool, inner: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` behind ``GuardedTransport`` that follows no redirects."""
    return httpx.AsyncClient(transport=GuardedTransport(allow_private, inner), follow_redirects=False,
                             timeout=TIMEOUT_S, headers={"user-agent": "openmusic-web"})


class TooLarge(ValueError):
    """A JSON body over ``MAX_JSON_BYTES``."""


async def send_json(http: httpx.AsyncClient, method: str, url: str, **kwargs) -> tuple[httpx.Response, object]:
    """Send a request and read its body as JSON (None when it is not JSON), at most
    ``MAX_JSON_BYTES``. Raises ``httpx.HTTPError``, ``BlockedURL`` or ``TooLarge``."""
    async with http.stream(method, url, **kwargs) as resp:
        chunks, size = [], 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > MAX_JSON_BYTES:
                raise TooLarge(f"{url}: answer over {MAX_JSON_BYTES} bytes")
            chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks)) if chunks else None
    except ValueError:
        body = None
    return resp, body


__all__ = ["BlockedURL", "GuardedTransport", "TooLarge", "guarded_client", "send_json"]
