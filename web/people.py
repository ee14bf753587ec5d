"""People named in forms by handle (or DID): the studio's featured artists and splits, the profile's
managers and managed artists. Names are parsed here and resolved to DIDs through the AppView's
identity service, which checks a handle both ways (the handle's DID, and that DID's document naming
the handle back)."""

from __future__ import annotations

import re

import httpx

from core.identity import IdentityError, IdentityService, valid_did

_HANDLES_SPLIT = re.compile(r"[\s,]+")
_HANDLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}\.[A-Za-z0-9-]+")


def names(text: str) -> list[str]:
    """Handles or DIDs typed in one field, separated by commas or spaces; ``@`` dropped; order kept, once each."""
    return list(dict.fromkeys(n.lstrip("@") for n in _HANDLES_SPLIT.split(text) if n.lstrip("@")))


def valid_person(name: str) -> bool:
    """Could ``name`` be a handle or a DID (before resolving it)?"""
    return valid_did(name) or bool(_HANDLE.fullmatch(name))


async def resolve_people(identity: IdentityService, people: list[str]) -> tuple[dict[str, str], list[str]]:
    """Handles or DIDs -> (name -> DID for those found, names not found, in order). A DID counts when
    its DID document resolves; a handle when it resolves to a DID whose document names it back."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in dict.fromkeys(people):
        did: str | None = None
        if valid_person(name):
            try:
                if valid_did(name):
                    await identity.resolver.resolve_did(name)
                    did = name
                else:
                    did = await identity.did_for_handle(name)
            except (IdentityError, httpx.HTTPError, ValueError):
                did = None
        if did:
            found[name] = did
        else:
            missing.append(name)
    return found, missing
