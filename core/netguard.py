"""SSRF guard for outbound fetches to hosts named by untrusted data (DID documents, did:web).

``check_url`` rejects non-HTTP(S) URLs and hosts that resolve to loopback, private, link-local,
multicast or reserved addresses, unless the operator allowed private hosts (local dev network).
IPv6 addresses that carry an IPv4 address (IPv4-mapped, NAT64 ``64:ff9b::/96``, 6to4) are judged by
the IPv4 address they lead to; the other transition ranges (Teredo, local-use NAT64, IPv4-compatible
and -translated, discard-only) are refused outright.
Known limit: the check resolves DNS before the request, so a host that changes its answer between
the check and the connection (DNS rebinding) is not caught.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: IPv6 ranges whose last 32 bits are the IPv4 address the traffic ends up at.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
#: IPv6 transition ranges refused whatever they embed: where they lead cannot be told from the address
#: alone (Teredo's client address is obfuscated, local-use NAT64 prefixes vary), or they are deprecated.
BLOCKED_V6 = tuple(ipaddress.ip_network(n) for n in (
    "::/96",            # IPv4-compatible (deprecated, RFC 4291); also holds :: and ::1
    "::ffff:0:0:0/96",  # IPv4-translated (RFC 2765)
    "64:ff9b:1::/48",   # local-use NAT64 (RFC 8215)
    "100::/64",         # discard-only (RFC 6666)
    "2001::/32",        # Teredo (RFC 4380)
))


class BlockedURL(ValueError):
    """The URL points somewhere outbound fetches may not go."""


def public_address(addr: IPAddress) -> bool:
    """True when ``addr`` is a global unicast address that leads to a global unicast address: an IPv6
    address embedding IPv4 (``::ffff:a.b.c.d``, ``64:ff9b::a.b.c.d``, 6to4 ``2002:aabb:ccdd::``) is
    judged by its IPv4 address; the ranges in ``BLOCKED_V6`` are never public."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return public_address(addr.ipv4_mapped)
        if addr in _NAT64:
            return public_address(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
        if addr.sixtofour is not None:
            return public_address(addr.sixtofour)
        if any(addr in net for net in BLOCKED_V6):
            return False
    return addr.is_global and not addr.is_multicast


async def check_url(url: str, allow_private: bool) -> None:
    """Raise ``BlockedURL`` if ``url`` may not be fetched: not http(s), plain http outside local
    development, a host that does not resolve, or one resolving to any non-public address
    (``public_address``). With ``allow_private`` only the scheme is checked."""
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
        if not public_address(addr):
            raise BlockedURL(f"{parts.hostname} resolves to a non-public address {addr}")
