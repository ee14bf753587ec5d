"""SSRF guard for outbound fetches to hosts named by untrusted data (DID documents, did:web).

``check_url`` rejects non-HTTP(S) URLs and hosts that resolve to loopback, private, link-local,
multicast or reserved addresses, unless the operator allowed private hosts (local dev network).
Known limit: the check resolves DNS before the request, so a host that changes its answer between
the check and the connection (DNS rebinding) is not caught.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class BlockedURL(ValueError):
    """The URL points somewhere outbound fetches may not go."""


async def check_url(url: str, allow_private: bool) -> None:
    """Raise ``BlockedURL`` if ``url`` may not be fetched."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlockedURL(f"not an http(s) URL: {url!r}")
    if allow_private:
        return
    if parts.scheme != "https":
        raise BlockedURL(f"plain http is only allowed for local development: {url!r}")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port or 443,
                                                             type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BlockedURL(f"cannot resolve {parts.hostname}: {exc}") from exc
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if not addr.is_global or addr.is_multicast:
            raise BlockedURL(f"{parts.hostname} resolves to a non-public address {addr}")
